"""Run an eval: every variant on every case (times repeats), graded, stored, summarised.

Work is one task per (case, repeat): it asks every variant concurrently (the
ModelCaller's semaphore bounds the calls in flight), then grades each output.
Pairwise graders need the other variant's output for the same case, which is
why a task covers all variants of a case. Each finished (variant, case,
repeat) is stored at once, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from golive.evals.client import Completion, JudgeCallError, ModelCaller
from golive.evals.dataset import Example, load_examples
from golive.evals.errors import EvalError
from golive.evals.graders import Grade, GradeInput, Grader, build_grader
from golive.evals.prompts import build_messages, expected_text
from golive.evals.spec import (EvalSpec, PairwiseGrader, ResolvedVariant, load_spec,
                               resolve_variants)
from golive.evals.stats import mean, p, std
from golive.evals.store import EvalStore, cache_key


@dataclass
class RunOptions:
    base_url: str | None = None  # overrides every variant's backend (and the default judge)
    model: str | None = None
    repeats: int | None = None
    concurrency: int | None = None
    limit: int | None = None  # first N cases only
    max_tokens: int | None = None  # cap every variant's max_tokens (quick smoke runs)
    variants: list[str] | None = None  # run only these
    use_cache: bool = True
    resume: str | None = None  # run id to continue
    progress: bool = True


@dataclass
class RunResult:
    run_id: str
    summary: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gate_passed(self) -> bool:
        return self.summary["gate"]["passed"]


class Evaluation:
    """A loaded eval file: spec, cases, resolved variants and graders."""

    def __init__(self, path: str | Path, opts: RunOptions):
        self.path = Path(path).resolve()
        self.base_dir = self.path.parent
        self.spec: EvalSpec = load_spec(self.path)
        self.cases: list[Example] = load_examples(self.base_dir / self.spec.dataset.path,
                                                  opts.limit or self.spec.dataset.limit)
        variants = resolve_variants(self.spec, self.base_dir, opts.base_url, opts.model)
        if opts.max_tokens:
            for v in variants:
                v.parameters.max_tokens = min(v.parameters.max_tokens or opts.max_tokens,
                                              opts.max_tokens)
        if opts.variants:
            unknown = set(opts.variants) - {v.name for v in variants}
            if unknown:
                raise EvalError(f"no variant named {', '.join(sorted(unknown))}", str(self.path),
                                "variants")
            needed = set(opts.variants) | {g.against for g in self.spec.graders
                                           if isinstance(g, PairwiseGrader)}
            variants = [v for v in variants if v.name in needed]
        self.variants: list[ResolvedVariant] = variants
        first = variants[0]
        self.graders: list[Grader] = [
            build_grader(g, self.base_dir, opts.base_url or first.base_url, first.model)
            for g in self.spec.graders]
        for g in self.graders:
            if hasattr(g, "prepare"):
                g.prepare(self.cases)
        self.repeats = opts.repeats or self.spec.repeats
        self.concurrency = opts.concurrency or self.spec.concurrency
        # Render every prompt now: a template error stops the run before any model call.
        self.messages = {(v.name, c.id): build_messages(v, c) for v in variants
                         for c in self.cases}

    def config(self) -> dict[str, Any]:
        return {"eval_file": str(self.path), "spec": self.spec.model_dump(mode="json",
                                                                          by_alias=True),
                "variants": [v.model_dump(mode="json") for v in self.variants],
                "cases": [c.id for c in self.cases], "repeats": self.repeats}


async def run_eval(path: str | Path, opts: RunOptions | None = None,
                   store: EvalStore | None = None) -> RunResult:
    opts = opts or RunOptions()
    ev = Evaluation(path, opts)
    own_store = store is None
    store = store or EvalStore()
    caller = ModelCaller(store, ev.concurrency, opts.use_cache)
    try:
        return await _run(ev, opts, store, caller)
    finally:
        await caller.aclose()
        if own_store:
            store.close()


async def check_backends(urls: set[str]) -> None:
    """Fail fast, before any run is stored, when a backend is not even listening."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as http:
        for url in sorted(urls):
            try:
                await http.get(url + "/models")
            except httpx.TransportError as e:
                raise EvalError(f"cannot reach the backend at {url} ({type(e).__name__}): start "
                                "it (`golive serve`) or point --base-url at a running one"
                                ) from None


async def _run(ev: Evaluation, opts: RunOptions, store: EvalStore,
               caller: ModelCaller) -> RunResult:
    await check_backends({v.base_url for v in ev.variants} |
                         {g.base_url for g in ev.graders if hasattr(g, "base_url")})
    done: set[tuple[str, str, int]] = set()
    if opts.resume:
        run = store.find_run(opts.resume)
        if run is None:
            raise EvalError(f"no run {opts.resume!r} to resume")
        if run["config"]["cases"] != ev.config()["cases"] or \
                run["config"]["variants"] != ev.config()["variants"]:
            raise EvalError(f"run {run['id']} was made from a different eval file, dataset or "
                            "variants; start a new run instead")
        run_id = run["id"]
        done = {(r["variant"], r["case_id"], r["repeat"]) for r in store.results(run_id)}
        store.set_status(run_id, "running")
    else:
        run_id = store.new_run(ev.spec.name, str(ev.path), ev.config())

    total = len(ev.cases) * ev.repeats * len(ev.variants)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                        disable=not opts.progress, transient=False)
    with progress:
        bar = progress.add_task(f"eval {ev.spec.name}", total=total, completed=len(done),
                                info="")

        async def one(case: Example, repeat: int) -> None:
            todo = [v for v in ev.variants if (v.name, case.id, repeat) not in done]
            if not todo:
                return
            outputs = dict(zip([v.name for v in ev.variants], await asyncio.gather(*(
                caller.complete(v.base_url, v.api_key_env, v.model,
                                ev.messages[(v.name, case.id)],
                                v.parameters.request_kwargs(), v.tier, repeat)
                for v in ev.variants))))
            for v in todo:
                result = await _grade_one(ev, v, case, repeat, outputs, caller, store)
                store.save_result(run_id, result)
                progress.update(bar, advance=1,
                                info=f"calls {caller.calls}, cached {caller.cache_hits}")

        try:
            await asyncio.gather(*(one(c, r) for r in range(ev.repeats) for c in ev.cases))
        except BaseException:
            store.set_status(run_id, "interrupted")
            raise

    results = store.results(run_id)
    summary = summarize(ev, run_id, results, caller)
    store.finish_run(run_id, summary)
    return RunResult(run_id, summary, results)


async def _grade_one(ev: Evaluation, v: ResolvedVariant, case: Example, repeat: int,
                     outputs: dict[str, Completion], caller: ModelCaller,
                     store: EvalStore) -> dict[str, Any]:
    c = outputs[v.name]
    grades: dict[str, dict[str, Any]] = {}
    if c.error is None:
        for g in ev.graders:
            grades[g.name] = (await _grade(g, ev, v, case, repeat, outputs, caller,
                                           store)).to_dict()
    score, passed = combine(ev, grades, c.error)
    msgs = ev.messages[(v.name, case.id)]
    return {"variant": v.name, "case_id": case.id, "repeat": repeat, "inputs": case.inputs,
            "expected": case.expected, "metadata": case.metadata, "prompt": msgs[-1]["content"],
            "output": c.text, "error": c.error, "completion": c.to_dict(), "grades": grades,
            "score": score, "passed": passed}


async def _grade(g: Grader, ev: Evaluation, v: ResolvedVariant, case: Example, repeat: int,
                 outputs: dict[str, Completion], caller: ModelCaller,
                 store: EvalStore) -> Grade:
    other = None
    if isinstance(g.spec, PairwiseGrader):
        if g.spec.against == "expected":
            other = expected_text(case.expected)
        elif g.spec.against != v.name:
            o = outputs[g.spec.against]
            if o.error is not None:
                return Grade(None, f"the {g.spec.against} output failed: {o.error}")
            other = o.text
    x = GradeInput(c_text(outputs[v.name]), case.expected, case.inputs, case.metadata,
                   ev.messages[(v.name, case.id)], other)
    key = None
    if g.cacheable and caller.use_cache:
        key = cache_key({"grader": g.cache_identity(), "output": x.output,
                         "expected": x.expected, "inputs": x.inputs, "other": other,
                         "task": x.messages[-1]["content"], "repeat": repeat})
        hit = store.get_cached("grades", key)
        if hit is not None:
            return Grade.from_dict(hit)
    try:
        grade = await g.grade(x, caller.judge)
    except JudgeCallError as e:
        return Grade(None, f"judge call failed: {e}")  # not cached: retried next run
    if key is not None:
        store.put_cached("grades", key, grade.to_dict())
    return grade


def c_text(c: Completion) -> str:
    return c.text or ""


def combine(ev: Evaluation, grades: dict[str, dict[str, Any]],
            error: str | None) -> tuple[float | None, bool]:
    """Weighted mean of the measured grades; a case passes when every weighted grader
    that measured it reached its threshold. A failed model call scores 0 and fails."""
    if error is not None:
        return 0.0, False
    total = weight = 0.0
    passed = True
    for g in ev.graders:
        s = grades[g.name]["score"]
        if s is None or g.spec.weight == 0:
            continue
        total += g.spec.weight * s
        weight += g.spec.weight
        passed = passed and s >= g.spec.threshold
    return (total / weight if weight else None), passed


def summarize(ev: Evaluation, run_id: str, results: list[dict[str, Any]],
              caller: ModelCaller | None = None) -> dict[str, Any]:
    by_variant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_variant[r["variant"]].append(r)
    variants = [_variant_summary(v, by_variant[v.name], ev) for v in ev.variants]
    summary = {
        "run_id": run_id, "name": ev.spec.name, "eval_file": str(ev.path),
        "cases": len(ev.cases), "repeats": ev.repeats,
        "graders": [{"name": g.name, "type": g.spec.type, "weight": g.spec.weight,
                     "threshold": g.spec.threshold, "min_mean": g.spec.min_mean}
                    for g in ev.graders],
        "variants": variants,
        "calls": {"model_calls": caller.calls if caller else 0,
                  "cache_hits": caller.cache_hits if caller else 0,
                  "judge_calls": caller.judge_calls if caller else 0,
                  "judge_cost_usd": caller.judge_cost_usd if caller else 0.0},
    }
    summary["gate"] = gate(ev, variants)
    return summary


def _variant_summary(v: ResolvedVariant, rows: list[dict[str, Any]],
                     ev: Evaluation) -> dict[str, Any]:
    per_repeat_score: list[float] = []
    per_repeat_pass: list[float] = []
    for rep in range(ev.repeats):
        rr = [r for r in rows if r["repeat"] == rep]
        scores = [r["score"] for r in rr if r["score"] is not None]
        if scores:
            per_repeat_score.append(sum(scores) / len(scores))
        if rr:
            per_repeat_pass.append(sum(1 for r in rr if r["passed"]) / len(rr))
    graders = {}
    for g in ev.graders:
        reps = []
        not_measured = 0
        for rep in range(ev.repeats):
            vals = []
            for r in rows:
                if r["repeat"] != rep or r["error"] is not None:
                    continue
                s = r["grades"][g.name]["score"]
                if s is None:
                    not_measured += 1
                else:
                    vals.append(s)
            if vals:
                reps.append(sum(vals) / len(vals))
        graders[g.name] = {"mean": mean(reps), "std": std(reps), "not_measured": not_measured}
    ok = [r for r in rows if r["error"] is None]
    lat = [r["completion"]["latency_s"] for r in ok]
    cost = sum(r["completion"]["cost_usd"] for r in ok)
    n_cases = len({r["case_id"] for r in rows}) or 1
    return {
        "name": v.name, "model": v.model, "base_url": v.base_url, "tier": v.tier,
        "results": len(rows),
        "score": {"mean": mean(per_repeat_score), "std": std(per_repeat_score),
                  "per_repeat": per_repeat_score},
        "pass_rate": {"mean": mean(per_repeat_pass), "std": std(per_repeat_pass)},
        "graders": graders,
        "errors": sum(1 for r in rows if r["error"] is not None),
        "latency_s": {"mean": mean(lat), "p50": p(lat, 0.5), "p95": p(lat, 0.95)},
        "cost_usd": {"total": cost, "per_case": cost / (n_cases * ev.repeats),
                     "source": sorted({r["completion"]["cost_source"] for r in ok})},
        "tokens": {"prompt": sum(r["completion"]["prompt_tokens"] for r in ok),
                   "cached": sum(r["completion"]["cached_tokens"] for r in ok),
                   "completion": sum(r["completion"]["completion_tokens"] for r in ok)},
        "from_cache": sum(1 for r in ok if r["completion"]["from_cache"]),
    }


def gate(ev: Evaluation, variants: list[dict[str, Any]]) -> dict[str, Any]:
    """Which thresholds failed; `golive eval run` exits 1 if any did."""
    failures: list[str] = []
    g = ev.spec.gate
    names = set(g.variants) if g and g.variants else {v["name"] for v in variants}
    for v in variants:
        if v["name"] not in names:
            continue
        score, rate = v["score"]["mean"], v["pass_rate"]["mean"]
        if g and g.min_score is not None and (score is None or score < g.min_score):
            failures.append(f"{v['name']}: score {_fmt(score)} < min_score {g.min_score}")
        if g and g.min_pass_rate is not None and (rate is None or rate < g.min_pass_rate):
            failures.append(f"{v['name']}: pass rate {_fmt(rate)} < min_pass_rate "
                            f"{g.min_pass_rate}")
        for gr in ev.graders:
            if gr.spec.min_mean is None:
                continue
            m = v["graders"][gr.name]["mean"]
            if m is None or m < gr.spec.min_mean:
                failures.append(f"{v['name']}: {gr.name} mean {_fmt(m)} < min_mean "
                                f"{gr.spec.min_mean}")
    return {"passed": not failures, "failures": failures}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"

