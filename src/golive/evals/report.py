"""Reports of a run: a terminal table (rich), JSON results, a self-contained HTML page."""

from __future__ import annotations

import difflib
import json
import re
from collections import defaultdict
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape
from markupsafe import Markup
from rich import box
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from golive.evals.charts import color, scatter
from golive.evals.prompts import expected_text


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pm(d: dict[str, Any], repeats: int) -> str:
    if d["mean"] is None:
        return "-"
    return f"{d['mean']:.3f}" + (f" ± {d['std']:.3f}" if repeats > 1 else "")


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f}"


def terminal_table(summary: dict[str, Any], console: Console | None = None) -> None:
    """Two tables so each fits an 80-column terminal: outcome, cost and latency per variant;
    then each grader's mean per variant."""
    console = console or Console()
    reps = summary["repeats"]
    t = Table(title=f"eval {rich_escape(summary['name'])} · run {summary['run_id']} · "
                    f"{summary['cases']} cases" + (f" × {reps} repeats" if reps > 1 else ""),
              box=box.SIMPLE_HEAD, caption="score: weighted grader mean (0..1)",
              show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    name_w = min(16, max(len(v["name"]) for v in summary["variants"]))
    for c in ("variant", "score", "pass", "err", "p50 ms", "p95 ms", "tok out", "cost $",
              "$/case"):
        t.add_column(c, justify="left" if c == "variant" else "right", overflow="fold",
                     no_wrap=c != "variant", min_width=name_w if c == "variant" else None)
    for v in summary["variants"]:
        t.add_row(rich_escape(v["name"]), _pm(v["score"], reps), _pm(v["pass_rate"], reps),
                  str(v["errors"]) if not v["errors"] else f"[red]{v['errors']}",
                  _ms(v["latency_s"]["p50"]), _ms(v["latency_s"]["p95"]),
                  str(v["tokens"]["completion"]), f"{v['cost_usd']['total']:.2e}",
                  f"{v['cost_usd']['per_case']:.1e}")
    console.print(t)
    g_table = Table(title="grader means (n/m: not measured)", box=box.SIMPLE_HEAD)
    g_table.add_column("variant", overflow="fold")
    for g in summary["graders"]:
        g_table.add_column(rich_escape(g["name"]), justify="right", overflow="fold")
    for v in summary["variants"]:
        cells = []
        for g in summary["graders"]:
            gs = v["graders"][g["name"]]
            cells.append(_pm(gs, reps) + (f" ({gs['not_measured']} n/m)"
                                          if gs["not_measured"] else ""))
        g_table.add_row(rich_escape(v["name"]), *cells)
    console.print(g_table)
    calls = summary["calls"]
    console.print(f"model calls: {calls['model_calls']} · served from cache: "
                  f"{calls['cache_hits']} · judge calls: {calls['judge_calls']}")
    g = summary["gate"]
    if g["passed"]:
        console.print("[green]gate: passed[/green]")
    else:
        console.print("[red]gate: FAILED[/red]")
        for f in g["failures"]:
            console.print(f"  [red]✗[/red] {rich_escape(f)}")


def results_json(run: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": 1, "run": {k: run[k] for k in ("id", "name", "eval_file", "created",
                                                      "finished", "status")},
            "summary": run["summary"], "results": results}


def write_json(path: str | Path, run: dict[str, Any], results: list[dict[str, Any]]) -> None:
    Path(path).write_text(json.dumps(results_json(run, results), indent=2, ensure_ascii=False),
                          "utf-8")


# ---- HTML -----------------------------------------------------------------------------

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)


def word_diff(expected: str, output: str) -> Markup:
    """The output with what differs from the expected answer marked (<del> expected, <ins>
    output); both escaped."""
    a, b = _TOKEN.findall(expected), _TOKEN.findall(output)
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    parts = []
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op == "equal":
            parts.append(escape("".join(b[j1:j2])))
            continue
        if i2 > i1 and "".join(a[i1:i2]).strip():
            parts.append(f"<del>{escape(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            parts.append(f"<ins>{escape(''.join(b[j1:j2]))}</ins>")
    return Markup("".join(parts))


def _charts(summary: dict[str, Any]) -> list[Markup]:
    variants = summary["variants"]
    costs = [v["cost_usd"]["per_case"] for v in variants]
    cmax = max(costs, default=0) or 1.0
    pts_lat, pts_cost = [], []
    for i, v in enumerate(variants):
        base = {"label": v["name"], "y": v["score"]["mean"], "y_err": v["score"]["std"],
                "color": color(i)}
        pts_lat.append({**base, "x": v["latency_s"]["p50"],
                        "size": v["cost_usd"]["per_case"] / cmax})
        pts_cost.append({**base, "x": v["cost_usd"]["per_case"], "size": None})
    return [Markup(scatter(pts_lat, "median latency (s)", "score",
                           "Accuracy vs latency (circle size: cost)", "chart-latency")),
            Markup(scatter(pts_cost, "cost per case (USD)", "score",
                           "Accuracy vs cost", "chart-cost"))]


def html_report(run: dict[str, Any], results: list[dict[str, Any]]) -> str:
    summary = run["summary"]
    variants = [v["name"] for v in summary["variants"]]
    by_case: dict[str, dict[str, Any]] = {}
    per_case: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        if r["repeat"] != 0:
            continue  # one repeat shown per case; the summary covers all repeats
        by_case.setdefault(r["case_id"], r)
        per_case[r["case_id"]][r["variant"]] = r
    cases = []
    for cid, first in by_case.items():
        exp = expected_text(first["expected"])
        cells = []
        for name in variants:
            r = per_case[cid].get(name)
            if r is None:
                cells.append(None)
                continue
            out = r["output"] or ""
            cells.append({
                "output": out, "diff": word_diff(exp, out) if exp else Markup(escape(out)),
                "error": r["error"], "score": r["score"], "passed": r["passed"],
                "grades": r["grades"], "latency_ms": r["completion"]["latency_s"] * 1000,
                "tokens": r["completion"]["completion_tokens"]})
        inputs = {k: v for k, v in first["inputs"].items()}
        cases.append({"id": cid, "inputs": inputs, "prompt": first["prompt"], "expected": exp,
                      "cells": cells,
                      "all_passed": all(c is not None and c["passed"] for c in cells)})
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["f3"] = lambda x: "-" if x is None else f"{x:.3f}"
    template = env.from_string(resources.files("golive.evals").joinpath(
        "templates/report.html.j2").read_text("utf-8"))
    return template.render(run=run, summary=summary, variants=variants, cases=cases,
                           charts=_charts(summary), colors=[color(i) for i in
                                                            range(len(variants))])


def write_html(path: str | Path, run: dict[str, Any], results: list[dict[str, Any]]) -> None:
    Path(path).write_text(html_report(run, results), "utf-8")
