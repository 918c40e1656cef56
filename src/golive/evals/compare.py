"""`golive eval compare RUN1 RUN2`: paired bootstrap of case scores between two runs/variants.

A side is `RUN` or `RUN:VARIANT`. Without variants, every variant name present
in both runs is compared with itself (before/after a change); with one run and
two variants (`RUN:a RUN:b`) it compares variants within a run.
Cases pair up by id; a case's score is its mean over repeats.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

from golive.evals.errors import EvalError
from golive.evals.stats import BootstrapResult, paired_bootstrap
from golive.evals.store import EvalStore


def parse_side(ref: str) -> tuple[str, str | None]:
    run, _, variant = ref.partition(":")
    return run, variant or None


def case_scores(results: list[dict[str, Any]], variant: str) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r["variant"] == variant:
            acc[r["case_id"]].append(r["score"] if r["score"] is not None else 0.0)
    return {cid: sum(v) / len(v) for cid, v in acc.items()}


def compare_runs(store: EvalStore, ref_a: str, ref_b: str, samples: int = 10_000,
                 seed: int = 0) -> dict[str, Any]:
    sides = []
    for ref in (ref_a, ref_b):
        run_ref, variant = parse_side(ref)
        run = store.find_run(run_ref)
        if run is None:
            raise EvalError(f"no run {run_ref!r} (see `golive eval list`)")
        sides.append((run, variant, store.results(run["id"])))
    (run_a, var_a, res_a), (run_b, var_b, res_b) = sides
    names_a = list(dict.fromkeys(r["variant"] for r in res_a))
    names_b = list(dict.fromkeys(r["variant"] for r in res_b))
    if var_a or var_b:
        pairs = [(var_a or _only(names_a, run_a["id"]), var_b or _only(names_b, run_b["id"]))]
    else:
        pairs = [(n, n) for n in names_a if n in names_b]
        if not pairs:
            raise EvalError("the runs share no variant name; compare RUN1:VARIANT RUN2:VARIANT")
    rows = []
    for va, vb in pairs:
        for name, names, run in ((va, names_a, run_a), (vb, names_b, run_b)):
            if name not in names:
                raise EvalError(f"run {run['id']} has no variant {name!r} "
                                f"(it has {', '.join(names)})")
        sa, sb = case_scores(res_a, va), case_scores(res_b, vb)
        common = [c for c in sa if c in sb]
        if not common:
            raise EvalError(f"{va} and {vb} share no case ids")
        bs = paired_bootstrap([sa[c] for c in common], [sb[c] for c in common], samples,
                              seed=seed)
        rows.append({"a": f"{run_a['id']}:{va}", "b": f"{run_b['id']}:{vb}",
                     "only_in_a": len(sa) - len(common), "only_in_b": len(sb) - len(common),
                     **asdict(bs), "verdict": bs.verdict})
    return {"a": run_a["id"], "b": run_b["id"], "comparisons": rows}


def _only(names: list[str], run_id: str) -> str:
    if len(names) != 1:
        raise EvalError(f"run {run_id} has several variants ({', '.join(names)}); "
                        f"name one as {run_id}:VARIANT")
    return names[0]


__all__ = ["BootstrapResult", "compare_runs", "parse_side", "case_scores"]
