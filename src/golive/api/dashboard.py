"""The live dashboard: `GET /dashboard` serves the page, `GET /dashboard/data` what it polls.

The data is read from what the server already keeps in memory: the engine's
counters (queue, cache, speculation), the Prometheus counters (totals since
start, so the page agrees with /metrics) and the observer's window of recent
requests (percentiles). Batch jobs come from the batch store when the server
has one. Nothing here touches the request-log database: a page left open must
not cost a query per second.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response

from golive.api.errors import error_response
from golive.api.state import AppState, app_state
from golive.engine.types import EngineStats, Tier
from golive.observe.record import RequestRecord
from golive.observe.requestlog import percentile

log = logging.getLogger(__name__)

router = APIRouter()

WINDOW_S = 60.0  # default span of the live percentiles
MAX_WINDOW_S = 3600.0  # the observer keeps a bounded number of requests anyway
BATCH_JOBS = 10  # newest batch jobs shown
TIER_ORDER = [t.wire for t in Tier]  # priority, default, flex, batch
# The page's own files; anything else under /dashboard/static is a 404.
ASSETS = {"dashboard.js": "text/javascript; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8"}


def _static(name: str) -> bytes:
    return (resources.files("golive.api") / "static" / name).read_bytes()


@router.get("/dashboard", include_in_schema=False)
def dashboard_page() -> HTMLResponse:
    return HTMLResponse(_static("dashboard.html"), headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/static/{name}", include_in_schema=False)
def dashboard_asset(name: str) -> Response:
    if name not in ASSETS:
        return error_response(404, f"No dashboard file named '{name}'.", param="name")
    return Response(_static(name), media_type=ASSETS[name],
                    headers={"Cache-Control": "no-cache"})


@router.get("/dashboard/data", response_model=None)
def dashboard_data(window: str | None = Query(None, description="seconds of recent requests "
                                              f"for percentiles (default {WINDOW_S:g}, at "
                                              f"most {MAX_WINDOW_S:g})"),
                   model: str | None = Query(None, description="the model to show (default: "
                                             "the server's first model)"),
                   state: AppState = Depends(app_state)) -> dict[str, Any] | Response:
    """Everything the page shows, as one JSON object (sync: the batch store is SQLite)."""
    span = _window(window)
    if span is None:
        return error_response(400, f"Invalid value for 'window': expected a number of seconds "
                              f"greater than 0 and at most {MAX_WINDOW_S:g}, got {window!r}.",
                              param="window")
    backend = state.models.default if model is None else state.models.get(model)
    if backend is None:
        return error_response(404, f"The model '{model}' does not exist. Available: "
                              f"{', '.join(state.models.ids())}.", param="model",
                              code="model_not_found")
    mid = backend.info.id
    now = time.time()
    st = backend.stats()
    # a C-level copy: safe against the appending loop
    recent = [r for r in list(state.observer.recent) if r[0].model == mid]
    windowed = window_stats(recent, now - span)
    totals = metric_totals(state.metrics, mid)
    tiers = _tier_names(st, windowed, totals)
    return {
        "object": "dashboard.stats",
        "time": now,
        "uptime_s": round(now - state.started, 1),
        "model": mid,
        "models": state.models.ids(),
        "window_s": span,
        "engine": _engine(st),
        "tiers": [{
            "tier": t,
            "running": st.running_by_tier.get(t, 0) if st else 0,
            "waiting": st.waiting.get(t, 0) if st else 0,
            "window": windowed.get(t, _Acc()).summary(),
            "total": totals.get(t, _Totals()).as_dict(),
        } for t in tiers],
        "window": _merge(windowed.values()).summary(),
        "total": _Totals.merged(totals.values()).as_dict(),
        "batches": _batches(state),
    }


# ---- the window of recent requests ------------------------------------------


def _window(raw: str | None) -> float | None:
    """The window in seconds, or None when the value is not a usable number."""
    if raw is None:
        return WINDOW_S
    try:
        span = float(raw)
    except ValueError:
        return None
    return span if 0 < span <= MAX_WINDOW_S else None  # also refuses nan


@dataclass
class _Acc:
    """Sums and samples of one tier's requests in the window."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0
    cost_usd: float = 0.0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)

    def add(self, rec: RequestRecord, choices: int) -> None:
        self.requests += 1
        if rec.status >= 400:
            # Refusals return at once; their timings would flatter the tier.
            self.errors += 1
            return
        self.prompt_tokens += rec.prompt_tokens
        self.cached_tokens += rec.cached_tokens
        self.completion_tokens += rec.completion_tokens
        self.accepted_prediction_tokens += rec.accepted_prediction_tokens
        self.rejected_prediction_tokens += rec.rejected_prediction_tokens
        self.cost_usd += rec.cost_usd
        if rec.ttft_s is not None:
            self.ttft.append(rec.ttft_s)
            gap = mean_token_gap(rec, choices)
            if gap is not None:
                self.itl.append(gap)

    def extend(self, other: _Acc) -> None:
        for name in ("requests", "errors", "prompt_tokens", "cached_tokens",
                     "completion_tokens", "accepted_prediction_tokens",
                     "rejected_prediction_tokens", "cost_usd"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.ttft += other.ttft
        self.itl += other.itl

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_hit_rate": _ratio(self.cached_tokens, self.prompt_tokens),
            "accepted_prediction_tokens": self.accepted_prediction_tokens,
            "rejected_prediction_tokens": self.rejected_prediction_tokens,
            "cost_usd": self.cost_usd,
            "ttft_p50": percentile(self.ttft, 0.5),
            "ttft_p95": percentile(self.ttft, 0.95),
            "itl_p50": percentile(self.itl, 0.5),
            "itl_p95": percentile(self.itl, 0.95),
        }


def mean_token_gap(rec: RequestRecord, choices: int = 1) -> float | None:
    """Seconds between output tokens after the first, for one request.

    The record has no per-token times, so this is the request's mean gap
    (time per output token after the first): (total - ttft) / (tokens - 1)
    per choice. Rejected prediction tokens are billed as completion tokens but
    were never streamed, so they do not count. None below two tokens.
    """
    if rec.ttft_s is None:
        return None
    tokens = (rec.completion_tokens - rec.rejected_prediction_tokens) / max(choices, 1)
    if tokens < 2:
        return None
    return max(rec.total_s - rec.ttft_s, 0.0) / (tokens - 1)


def window_stats(recent: Iterable[tuple[RequestRecord, int]], since: float) -> dict[str, _Acc]:
    """Per served tier, the requests that finished at or after `since` (unix time)."""
    out: dict[str, _Acc] = defaultdict(_Acc)
    for rec, choices in recent:
        if rec.created + rec.total_s >= since:
            out[rec.tier_served].add(rec, choices)
    return dict(out)


def _merge(accs: Iterable[_Acc]) -> _Acc:
    total = _Acc()
    for a in accs:
        total.extend(a)
    return total


# ---- totals since start, from the Prometheus counters ------------------------


@dataclass
class _Totals:
    requests: float = 0
    errors: float = 0
    prompt_tokens: float = 0
    cached_tokens: float = 0
    completion_tokens: float = 0
    cost_usd: float = 0.0

    @classmethod
    def merged(cls, items: Iterable[_Totals]) -> _Totals:
        out = cls()
        for t in items:
            for k, v in vars(t).items():
                setattr(out, k, getattr(out, k) + v)
        return out

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: (v if k == "cost_usd" else int(v)) for k, v in vars(self).items()}
        d["cache_hit_rate"] = _ratio(self.cached_tokens, self.prompt_tokens)
        return d


def _samples(counter) -> Iterable[tuple[dict[str, str], float]]:
    for family in counter.collect():
        for s in family.samples:
            if s.name.endswith("_total"):  # not the _created timestamps
                yield s.labels, s.value


def metric_totals(metrics, model: str | None = None) -> dict[str, _Totals]:
    """Per tier (of one model, or all), the same counters /metrics exposes, so the two
    always agree."""
    out: dict[str, _Totals] = defaultdict(_Totals)
    for labels, v in _samples(metrics.requests):
        if model is not None and labels["model"] != model:
            continue
        t = out[labels["tier"]]
        t.requests += v
        if not labels["status"].startswith("2"):
            t.errors += v
    for attr, counter in (("prompt_tokens", metrics.prompt_tokens),
                          ("cached_tokens", metrics.cached_tokens),
                          ("completion_tokens", metrics.completion_tokens),
                          ("cost_usd", metrics.cost)):
        for labels, v in _samples(counter):
            if model is not None and labels["model"] != model:
                continue
            t = out[labels["tier"]]
            setattr(t, attr, getattr(t, attr) + v)
    return dict(out)


# ---- engine and batches -------------------------------------------------------


def _engine(st: EngineStats | None) -> dict[str, Any] | None:
    if st is None:
        return None
    return {
        "running": st.running,
        "waiting": sum(st.waiting.values()),
        "slots": st.slots,
        "kv_used": st.kv_used,
        "kv_size": st.kv_size,
        "cache_entries": st.cache_entries,
        "prompt_tokens": st.prompt_tokens,
        "cached_tokens": st.cached_tokens,
        "cache_hit_rate": _ratio(st.cached_tokens, st.prompt_tokens),
        "generated_tokens": st.generated_tokens,
        "steps": st.steps,
        "preemptions": st.preemptions,
        "draft_proposed": st.draft_proposed,
        "draft_accepted": st.draft_accepted,
        "draft_acceptance": _ratio(st.draft_accepted, st.draft_proposed),
    }


def _batches(state: AppState) -> dict[str, Any] | None:
    """Newest batch jobs, or None when this server has no batch store."""
    store = state.batch.store
    if store is None:
        return None
    try:
        rows, _ = store.list_batches(BATCH_JOBS, None)
        active = len(store.active_batches())
    except Exception:  # a store that went away mid-shutdown must not break the page
        log.warning("dashboard: could not read the batch store", exc_info=True)
        return None
    return {
        "active": active,
        "jobs": [{
            "id": b.id,
            "status": b.status,
            "endpoint": b.endpoint,
            "model": b.model,
            "created_at": b.created_at,
            "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
            "input_tokens": b.input_tokens,
            "output_tokens": b.output_tokens,
        } for b in rows],
    }


def _tier_names(st, windowed: dict, totals: dict) -> list[str]:
    seen = set(windowed) | set(totals) | (set(st.waiting) if st else set())
    known = [t for t in TIER_ORDER if t in seen]
    return known + sorted(seen - set(known))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None
