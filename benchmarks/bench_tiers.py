"""Service tiers under load: priority time to first token, golive vs llama_cpp.server.

    python benchmarks/bench_tiers.py [--quick] [--model PATH.gguf] [--threads N]

A trickle of short `priority` requests is timed twice per server: alone (idle)
and on top of a saturating background of `default` and `flex` streams (more
streams than golive has slots, kept topped up). golive schedules by tier and
preempts the lowest running tier for priority; llama_cpp.server serves first
come, first served and ignores `service_tier`. Every request's send time, tier
and time to first token (TTFT) is kept; writes benchmarks/results/tiers.json,
the plot docs/img/tiers_ttft.png and the `tiers` table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
# benchmarks/ is a folder of scripts, not a package: import its helpers by path.
from bench_serving import server_commands as serving_commands  # noqa: E402
from bench_serving import verdict  # noqa: E402
from common import (  # noqa: E402
    RESULTS_DIR,
    ROOT,
    Results,
    Server,
    cpu_busy,
    default_gguf,
    fmt,
    make_client,
    markdown_table,
    median,
    percentile,
    ratio,
    running_server,
    update_doc_section,
)

console = Console(stderr=True)

NAME = "tiers"
PLOT_PATH = ROOT / "docs" / "img" / "tiers_ttft.png"
SLOTS = 8  # golive --slots; the background has more streams than this
BACKGROUND = {"default": 6, "flex": 6}  # concurrent streams per tier, kept topped up
BACKGROUND_MAX_TOKENS = 128
PRIORITY_MAX_TOKENS = 16  # a short interactive answer; TTFT is what is measured
PRIORITY_EVERY_S = 1.5  # the trickle: one priority request sent every this many seconds
IDLE_GAP_S = 0.3  # pause between idle priority requests (sent one after another)
RAMP_S = 4.0  # background runs this long before the first priority request
FLEX_TIMEOUT_S = 30.0  # golive --flex-timeout: a flex request's queue budget
RETRY_PAUSE_S = 1.0  # a refused (429) flex stream retries after this, to keep the load up
TARGET_LOAD_OVER_IDLE_P95 = 1.5
MODES = {
    "quick": {"rounds": 2, "window_s": 20.0, "idle_requests": 8, "drain_s": 240.0},
    "full": {"rounds": 3, "window_s": 60.0, "idle_requests": 20, "drain_s": 600.0},
}
PEER_NOTE = (
    "llama_cpp.server runs one request at a time, first come first served (started with "
    "`--interrupt_requests False`, so queued requests wait instead of ending the running "
    "stream); it accepts `service_tier` and ignores it, so a priority request waits for "
    "every request queued before it."
)

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What colour is the sky on a clear day?",
    "What is two plus two?",
    "Name a planet in the solar system.",
    "What language is spoken in Brazil?",
    "What is the boiling point of water?",
    "Who wrote Romeo and Juliet?",
    "What is the largest ocean?",
    "How many days are in a week?",
]
TOPICS = [
    "volcanoes",
    "the history of bread",
    "honeybees",
    "the printing press",
    "glaciers",
    "chess openings",
    "the Roman roads",
    "coral reefs",
    "bicycles",
    "windmills",
    "paper making",
    "deep sea fish",
]
ESSAY = "Write a detailed essay about {}. Cover its history, how it works, and why it matters."


@dataclass
class TierSample:
    """One request: when it was sent, which tier it asked for, and how long to first token.

    Filled in while the stream runs, so a stream cut off at the end of a round
    still has its first-token time (or, with none, how long it had waited)."""

    round: int
    phase: str  # "idle" (no background) or "load"
    tier: str  # the service_tier sent
    sent_s: float  # seconds since this round's background started (idle: negative)
    served_tier: str | None = None  # the service_tier echoed (None: not echoed)
    ttft_s: float | None = None  # None: no content yet, refused or failed
    e2e_s: float = 0.0  # until the stream closed, was refused, or was cut off
    completion_tokens: int = 0  # usage when reported, else content chunks so far
    status: str = "running"  # "ok", "429" (flex refused), "cut off", "error: ..."


def chat(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


async def timed(
    client: AsyncOpenAI,
    model: str,
    messages: list[ChatCompletionMessageParam],
    max_tokens: int,
    sample: TierSample,
) -> TierSample:
    """Stream one request at `sample.tier`, recording into `sample` as chunks arrive.

    API errors become the sample's status; cancellation marks it "cut off"."""
    sent = time.monotonic()
    usage_seen = False
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
            service_tier=sample.tier,  # type: ignore[arg-type]
        )
        async for chunk in stream:
            sample.served_tier = getattr(chunk, "service_tier", None) or sample.served_tier
            if chunk.usage is not None:
                usage_seen = True
                sample.completion_tokens = int(chunk.usage.completion_tokens)
            for choice in chunk.choices:
                if choice.delta.content:
                    if sample.ttft_s is None:
                        sample.ttft_s = time.monotonic() - sent
                    if not usage_seen:
                        sample.completion_tokens += 1
        sample.status = "ok"
    except openai.APIStatusError as exc:
        refused = exc.status_code == 429 and getattr(exc, "code", None) == "resource_unavailable"
        sample.status = "429" if refused else f"error: {exc.status_code} {exc.message}"[:200]
    except openai.APIError as exc:  # connection dropped, timeout, ...
        sample.status = f"error: {type(exc).__name__}: {exc}"[:200]
    except asyncio.CancelledError:
        sample.status = "cut off"
        raise
    finally:
        sample.e2e_s = time.monotonic() - sent
    return sample


async def background_stream(
    client: AsyncOpenAI,
    model: str,
    tier: str,
    worker: int,
    rnd: int,
    t0: float,
    out: list[TierSample],
) -> None:
    """Keep one stream of `tier` busy: a new essay as soon as the last one ends."""
    k = 0
    while True:
        topic = TOPICS[(worker * 5 + k) % len(TOPICS)]
        sample = TierSample(rnd, "load", tier, time.monotonic() - t0)
        out.append(sample)
        await timed(client, model, chat(ESSAY.format(topic)), BACKGROUND_MAX_TOKENS, sample)
        k += 1
        if sample.status != "ok":
            await asyncio.sleep(RETRY_PAUSE_S)


async def measure_round(server: Server, rnd: int, mode: dict[str, Any]) -> dict[str, Any]:
    """Idle priority requests, then the same trickle on top of the background."""
    client = make_client(server)
    model = server.model_id
    warm = TierSample(rnd, "warm-up", "default", 0.0)
    await timed(client, model, chat("Hello!"), 8, warm)  # not measured
    question = iter(range(10**6))

    def priority_msgs() -> list[ChatCompletionMessageParam]:
        k = next(question)
        return chat(f"Question {rnd}.{k}: {QUESTIONS[k % len(QUESTIONS)]}")

    # Idle: one priority request at a time. Their send times are placed before the
    # background's start (t0) so the plot shows idle, then load, on one time axis.
    idle: list[TierSample] = []
    idle_start = time.monotonic()
    for _ in range(mode["idle_requests"]):
        sample = TierSample(rnd, "idle", "priority", time.monotonic())
        idle.append(await timed(client, model, priority_msgs(), PRIORITY_MAX_TOKENS, sample))
        await asyncio.sleep(IDLE_GAP_S)
    t0 = time.monotonic()
    for s in idle:
        s.sent_s -= t0
    say(f"  {server.name}: idle done in {t0 - idle_start:.1f}s; background starts")

    background: list[TierSample] = []
    workers = [
        asyncio.create_task(background_stream(client, model, tier, i, rnd, t0, background))
        for tier, n in BACKGROUND.items()
        for i in range(n)
    ]
    stop_watch = asyncio.Event()
    watch = (
        asyncio.create_task(watch_queues(server, t0, stop_watch))
        if server.name == "golive"
        else None
    )
    # Open loop: priority requests go out on a fixed schedule whether or not the
    # earlier ones have finished, as independent users' requests would.
    priority: list[TierSample] = []
    tasks: list[asyncio.Task[TierSample]] = []
    n_pri = int(mode["window_s"] / PRIORITY_EVERY_S)
    for k in range(n_pri):
        await asyncio.sleep(max(0.0, t0 + RAMP_S + k * PRIORITY_EVERY_S - time.monotonic()))
        sample = TierSample(rnd, "load", "priority", time.monotonic() - t0)
        priority.append(sample)
        tasks.append(
            asyncio.create_task(timed(client, model, priority_msgs(), PRIORITY_MAX_TOKENS, sample))
        )
    say(f"  {server.name}: {n_pri} priority requests sent; waiting for the last ones")
    # The background keeps running until every priority request has finished, so
    # each one is measured under the same load; past the drain limit the rest are
    # cut off and count with their wait so far (a lower bound).
    _, pending = await asyncio.wait(tasks, timeout=mode["drain_s"])
    load_s = time.monotonic() - t0
    for task in [*pending, *workers]:
        task.cancel()
    await asyncio.gather(*pending, *workers, return_exceptions=True)
    stop_watch.set()
    timeline = await watch if watch else None
    metrics = await scrape_metrics(server) if server.name == "golive" else None
    await client.close()
    return {
        "samples": [*idle, *priority, *background],
        "load_s": load_s,
        "priority_unfinished": len(pending),
        "server_metrics": metrics,
        "queue_timeline": timeline,
    }


async def _metrics_text(server: Server) -> str | None:
    url = server.base_url.removesuffix("/v1") + "/metrics"
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(url, timeout=10.0)).text
    except httpx.HTTPError:
        return None


async def watch_queues(
    server: Server, t0: float, stop: asyncio.Event, every_s: float = 2.0
) -> list[dict[str, Any]]:
    """golive's running and waiting sequences per tier, every `every_s`, until `stop`:
    shows whether priority requests waited for a slot (and behind whom)."""
    from prometheus_client.parser import text_string_to_metric_families

    timeline: list[dict[str, Any]] = []
    while not stop.is_set():
        text = await _metrics_text(server)
        if text is not None:
            point: dict[str, Any] = {"t_s": round(time.monotonic() - t0, 2)}
            for family in text_string_to_metric_families(text):
                if family.name in ("golive_queue_depth", "golive_running_sequences"):
                    kind = "waiting" if family.name == "golive_queue_depth" else "running"
                    point[kind] = {s.labels["tier"]: s.value for s in family.samples}
            timeline.append(point)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
    return timeline


async def scrape_metrics(server: Server) -> dict[str, Any] | None:
    """golive's own per-tier TTFT histogram sums and preemptions (a server-side cross-check)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = await _metrics_text(server)
    if text is None:
        return None
    out: dict[str, Any] = {"ttft_count": {}, "ttft_sum_s": {}, "preemptions": None}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "golive_time_to_first_token_seconds_count":
                out["ttft_count"][s.labels["tier"]] = s.value
            elif s.name == "golive_time_to_first_token_seconds_sum":
                out["ttft_sum_s"][s.labels["tier"]] = s.value
            elif s.name in ("golive_preemptions_total", "golive_preemptions"):
                out["preemptions"] = s.value
    return out


def say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


# --- summary -------------------------------------------------------------------


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def summarize(samples: Sequence[TierSample], rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    def of(phase: str, tier: str) -> list[TierSample]:
        return [s for s in samples if s.phase == phase and s.tier == tier]

    out: dict[str, Any] = {}
    for phase, tier in (
        ("idle", "priority"),
        ("load", "priority"),
        ("load", "default"),
        ("load", "flex"),
    ):
        group = of(phase, tier)
        if tier == "priority":
            # A priority request cut off without a first token counts with its wait
            # so far: leaving it out would flatter whoever made it wait longest.
            xs = [
                s.ttft_s if s.ttft_s is not None else s.e2e_s
                for s in group
                if s.ttft_s is not None or s.status == "cut off"
            ]
        else:
            xs = [s.ttft_s for s in group if s.ttft_s is not None]
        key = f"{tier}_{phase}"
        out[f"{key}_ttft_median_ms"] = _ms(median(xs))
        out[f"{key}_ttft_p95_ms"] = _ms(percentile(xs, 95))
        out[f"{key}_n"] = len(xs)
    pri = [s for s in samples if s.tier == "priority"]
    out["priority_sent"] = len(pri)
    out["priority_no_first_token"] = sum(s.ttft_s is None for s in pri)
    out["priority_served_as_priority"] = sum(s.served_tier == "priority" for s in pri)
    flex = of("load", "flex")
    out["flex_sent"] = len(flex)
    out["flex_refused_429"] = sum(s.status == "429" for s in flex)
    bg = [s for s in samples if s.phase == "load" and s.tier != "priority"]
    out["background_errors"] = sum(s.status.startswith("error") for s in bg)
    out["background_waiting_at_end"] = sum(s.status == "cut off" and s.ttft_s is None for s in bg)
    # Every token streamed under load, including from streams cut off at the end.
    load_s = sum(r["load_s"] for r in rounds)
    tokens = sum(s.completion_tokens for s in samples if s.phase == "load")
    out["load_tokens_per_s"] = tokens / load_s if load_s else None
    out["priority_load_over_idle_p95"] = ratio(
        out["priority_load_ttft_p95_ms"], out["priority_idle_ttft_p95_ms"]
    )
    out["priority_load_over_idle_median"] = ratio(
        out["priority_load_ttft_median_ms"], out["priority_idle_ttft_median_ms"]
    )
    # From golive's queue snapshots: how often priority waited for a slot while a
    # lower tier held one (preemption should make that rare), and how often the
    # priority requests alone filled every slot (then nothing can be preempted).
    points = [pt for r in rounds for pt in (r.get("queue_timeline") or [])]
    if points:
        waiting = [pt["waiting"].get("priority", 0) > 0 for pt in points]
        lower = [any(n > 0 for t, n in pt["running"].items() if t != "priority") for pt in points]
        full = [pt["running"].get("priority", 0) >= SLOTS for pt in points]
        out["priority_waiting_behind_lower_share"] = sum(
            w and lo for w, lo in zip(waiting, lower, strict=True)
        ) / len(points)
        out["priority_filled_all_slots_share"] = sum(full) / len(points)
        out["priority_waiting_max"] = max(pt["waiting"].get("priority", 0) for pt in points)
    metrics = [r["server_metrics"] for r in rounds if r.get("server_metrics")]
    if metrics:
        for tier in ("priority", "default", "flex"):
            n = sum(m["ttft_count"].get(tier, 0) for m in metrics)
            total = sum(m["ttft_sum_s"].get(tier, 0) for m in metrics)
            out[f"server_{tier}_ttft_mean_ms"] = _ms(total / n) if n else None
        out["preemptions"] = sum(m["preemptions"] or 0 for m in metrics)
    return out


def compute_ratios(g: dict[str, Any], p: dict[str, Any]) -> dict[str, float | None]:
    return {
        "golive_load_over_idle_p95": g.get("priority_load_over_idle_p95"),
        "golive_load_over_idle_median": g.get("priority_load_over_idle_median"),
        "peer_load_over_idle_p95": p.get("priority_load_over_idle_p95"),
        "priority_load_p95": ratio(
            g.get("priority_load_ttft_p95_ms"), p.get("priority_load_ttft_p95_ms")
        ),
        "priority_load_median": ratio(
            g.get("priority_load_ttft_median_ms"), p.get("priority_load_ttft_median_ms")
        ),
        "priority_idle_median": ratio(
            g.get("priority_idle_ttft_median_ms"), p.get("priority_idle_ttft_median_ms")
        ),
        "load_tokens_per_s": ratio(g.get("load_tokens_per_s"), p.get("load_tokens_per_s")),
    }


# --- report --------------------------------------------------------------------


def table(g: dict[str, Any], p: dict[str, Any], r: dict[str, Any], meta: dict[str, Any]) -> str:
    def row(label: str, key: str, rkey: str | None = None, digits: int = 0) -> list[str]:
        return [
            label,
            fmt(g.get(key), digits),
            fmt(p.get(key), digits),
            fmt(r.get(rkey) if rkey else None, 2, "x"),
            "",
            "",
        ]

    def pair(label: str, a: str, b: str, digits: int = 0) -> list[str]:
        return [
            label,
            f"{fmt(g.get(a), digits)} / {fmt(g.get(b), digits)}",
            f"{fmt(p.get(a), digits)} / {fmt(p.get(b), digits)}",
            "—",
            "",
            "",
        ]

    target = verdict(r["golive_load_over_idle_p95"], TARGET_LOAD_OVER_IDLE_P95, False)
    rows = [
        row(
            "priority TTFT idle, median (ms)",
            "priority_idle_ttft_median_ms",
            "priority_idle_median",
        ),
        row("priority TTFT idle, p95 (ms)", "priority_idle_ttft_p95_ms"),
        row(
            "priority TTFT under load, median (ms)",
            "priority_load_ttft_median_ms",
            "priority_load_median",
        ),
        row("priority TTFT under load, p95 (ms)", "priority_load_ttft_p95_ms", "priority_load_p95"),
        [
            *row("priority p95 under load / idle", "priority_load_over_idle_p95", None, 2)[:4],
            f"golive ≤ {TARGET_LOAD_OVER_IDLE_P95}x",
            target,
        ],
        pair("priority requests timed under load / idle", "priority_load_n", "priority_idle_n"),
        row(
            "priority requests with no first token (cut off at the drain limit: counted "
            "above with their wait so far, a lower bound)",
            "priority_no_first_token",
        ),
        pair(
            "priority requests echoed `priority` / sent",
            "priority_served_as_priority",
            "priority_sent",
        ),
        pair(
            "default TTFT under load, median / p95 (ms)",
            "default_load_ttft_median_ms",
            "default_load_ttft_p95_ms",
        ),
        pair(
            "flex TTFT under load, median / p95 (ms)",
            "flex_load_ttft_median_ms",
            "flex_load_ttft_p95_ms",
        ),
        pair("flex refused with 429 / sent", "flex_refused_429", "flex_sent"),
        row(
            "background streams still waiting for a first token at the end",
            "background_waiting_at_end",
        ),
        row("tok/s streamed under load, all tiers", "load_tokens_per_s", "load_tokens_per_s", 1),
        pair(
            "server-side mean TTFT priority / default (ms, `/metrics`)",
            "server_priority_ttft_mean_ms",
            "server_default_ttft_mean_ms",
        ),
        row("preemptions (`/metrics`)", "preemptions"),
        row(
            "share of load time priority waited while a lower tier held a slot",
            "priority_waiting_behind_lower_share",
            None,
            2,
        ),
        row(
            "share of load time priority requests alone held every slot",
            "priority_filled_all_slots_share",
            None,
            2,
        ),
        row("most priority requests waiting at once", "priority_waiting_max"),
    ]
    header = ["metric", "golive serve", "llama_cpp.server", "golive / peer", "target", "met"]
    v, machine, cfg = meta["versions"], meta["machine"], meta["config"]
    busiest = {
        k: max((x for x in xs if x is not None), default=None)
        for k, xs in cfg["cpu_busy_before"].items()
    }
    busy = ", ".join(f"{k} {fmt(x and x * 100, 0)}%" for k, x in busiest.items())
    mode = cfg["mode"]
    run = (
        f"Run {meta['timestamp']} (commit {meta['git_commit'] or '—'}, "
        f"{'`--quick`' if cfg['quick'] else 'full'}) on {machine['cpu']} "
        f"({machine['cpu_count']} cores), {cfg['threads']} threads for both servers, model "
        f"`{Path(cfg['model']).name}`; golive {v.get('golive') or '—'} with `--slots {SLOTS}`, "
        f"llama-cpp-python {v.get('llama-cpp-python')}, openai {v.get('openai')}; "
        f"{mode['rounds']} rounds per server, alternating and restarting the servers; "
        f"per round {mode['idle_requests']} idle priority requests, then "
        f"{sum(BACKGROUND.values())} background streams "
        f"({', '.join(f'{n} {t}' for t, n in BACKGROUND.items())}, `max_tokens` "
        f"{BACKGROUND_MAX_TOKENS}) and a priority request every {PRIORITY_EVERY_S:g} s for "
        f"{mode['window_s']:g} s (`max_tokens` {PRIORITY_MAX_TOKENS}); highest CPU use by "
        f"other work before a server started: {busy}. "
        f"Raw samples: `benchmarks/results/{meta['name']}.json`."
    )
    legend = (
        "golive / peer: below 1x is better for times, above 1x for tok/s. llama_cpp.server "
        "echoes no `service_tier`, hence its 0 in the echo row; it has no `/metrics`."
    )
    plot = (
        "![Time to first token per tier over time, golive and llama_cpp.server](img/tiers_ttft.png)"
    )
    notes = "\n".join(f"- {n}" for n in meta["notes"])
    return "\n\n".join([markdown_table(header, rows), legend, plot, run, notes])


def plot(
    samples: dict[str, list[TierSample]],
    summary: dict[str, dict[str, Any]],
    title: str,
    path: Path = PLOT_PATH,
) -> None:
    """TTFT per tier against send time, one panel per server, every round overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "golive": "golive serve (tiers, preemption)",
        "peer": "llama_cpp.server (first come, first served)",
    }
    style = {
        "priority": dict(color="#d62728", marker="o", s=22, zorder=4),
        "default": dict(color="#1f77b4", marker="s", s=12, alpha=0.55, zorder=3),
        "flex": dict(color="#2ca02c", marker="^", s=14, alpha=0.55, zorder=2),
    }
    names = list(samples)
    fig, axes = plt.subplots(
        len(names), 1, figsize=(10, 3.6 * len(names)), sharey=True, squeeze=False
    )
    for ax, name in zip(axes[:, 0], names, strict=True):
        ss = samples[name]
        for tier in ("flex", "default", "priority"):
            for phase in ("idle", "load"):
                pts = [s for s in ss if s.tier == tier and s.phase == phase and s.ttft_s]
                if not pts:
                    continue
                kw = dict(style[tier])
                if phase == "idle":
                    kw.update(facecolors="none", edgecolors=kw.pop("color"))
                ax.scatter(
                    [s.sent_s for s in pts],
                    [s.ttft_s for s in pts],
                    label=f"{tier} ({'idle' if phase == 'idle' else 'under load'})",
                    **kw,
                )
        censored = [s for s in ss if s.tier == "priority" and s.ttft_s is None]
        if censored:
            ax.scatter(
                [s.sent_s for s in censored],
                [s.e2e_s for s in censored],
                marker="^",
                facecolors="none",
                edgecolors="#d62728",
                s=30,
                label="priority, no first token when cut off (wait so far)",
            )
        refused = [s for s in ss if s.status == "429"]
        if refused:
            ax.scatter(
                [s.sent_s for s in refused],
                [s.e2e_s for s in refused],
                marker="x",
                color="#2ca02c",
                s=20,
                label="flex refused (429), time to refusal",
            )
        idle_p95 = summary[name].get("priority_idle_ttft_p95_ms")
        if name == "golive" and idle_p95:
            ax.axhline(
                idle_p95 / 1000 * TARGET_LOAD_OVER_IDLE_P95,
                color="#d62728",
                ls="--",
                lw=1,
                label=f"target: {TARGET_LOAD_OVER_IDLE_P95}x idle priority p95",
            )
        ax.axvspan(min((s.sent_s for s in ss), default=0.0), 0.0, color="0.92", zorder=0)
        ax.axvline(0.0, color="0.5", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(labels.get(name, name), fontsize=10, loc="left")
        ax.set_ylabel("time to first token (s)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncols=2)
    axes[-1, 0].set_xlabel(
        "request sent (s since the background started; grey: idle phase, no background)"
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ------------------------------------------------------------------------


def server_commands(model: Path, threads: int) -> dict[str, Callable[[int], Sequence[str]]]:
    """The peer exactly as in bench_serving; golive with fewer slots than streams."""
    golive_bin = Path(sys.executable).parent / "golive"

    def golive(port: int) -> list[str]:
        return [
            str(golive_bin),
            "serve",
            "--model",
            str(model),
            "--threads",
            str(threads),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--slots",
            str(SLOTS),
            "--flex-timeout",
            f"{FLEX_TIMEOUT_S:g}",
        ]

    return {"golive": golive, "peer": serving_commands(model, threads, None)["peer"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows, fewer rounds")
    ap.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--servers", default="golive,peer", help="comma list: golive,peer")
    ap.add_argument(
        "--no-docs", action="store_true", help="don't touch docs/benchmarks.md or the plot"
    )
    ap.add_argument(
        "--render",
        action="store_true",
        help="no run: redraw the plot and docs table from benchmarks/results/tiers.json",
    )
    args = ap.parse_args()
    if args.render:
        render(RESULTS_DIR / f"{NAME}.json")
        return

    model = (args.model or default_gguf()).resolve()
    mode = MODES["quick" if args.quick else "full"]
    commands = server_commands(model, args.threads)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    # Benchmark traffic goes to a scratch request log, not the user's.
    scratch = tempfile.TemporaryDirectory(prefix="golive-bench-")
    envs: dict[str, dict[str, str]] = {"golive": {"GOLIVE_DATA_DIR": scratch.name}, "peer": {}}
    samples: dict[str, list[TierSample]] = {n: [] for n in wanted}
    rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in wanted}
    busy_before: dict[str, list[float | None]] = {n: [] for n in wanted}
    # Rounds alternate the servers (A B, B A, ...) and restart them, so a slow spell
    # of a shared machine lands on both sides; only one server runs at a time.
    for r in range(mode["rounds"]):
        for name in wanted if r % 2 == 0 else wanted[::-1]:
            console.print(f"[bold]round {r + 1}/{mode['rounds']}, {name}[/]")
            busy_before[name].append(busy := cpu_busy())
            if busy is not None and busy > 0.15:
                console.print(f"[yellow]CPU {busy:.0%} busy before start: other work runs[/]")
            with running_server(name, commands[name], envs[name]) as server:
                out = asyncio.run(measure_round(server, r, mode))
            samples[name] += out.pop("samples")
            rounds[name].append(out)
    scratch.cleanup()

    summary = {n: summarize(samples[n], rounds[n]) for n in wanted}
    for n in wanted:
        console.print(n, summary[n])
    g, p = summary.get("golive", {}), summary.get("peer", {})
    results = Results(
        name=NAME,
        config={
            "model": str(model),
            "threads": args.threads,
            "quick": args.quick,
            "mode": mode,
            "golive_slots": SLOTS,
            "background_streams": BACKGROUND,
            "background_max_tokens": BACKGROUND_MAX_TOKENS,
            "priority_max_tokens": PRIORITY_MAX_TOKENS,
            "priority_every_s": PRIORITY_EVERY_S,
            "idle_gap_s": IDLE_GAP_S,
            "ramp_s": RAMP_S,
            "flex_timeout_s": FLEX_TIMEOUT_S,
            "target_load_over_idle_p95": TARGET_LOAD_OVER_IDLE_P95,
            "cpu_busy_before": busy_before,
            "commands": {n: list(commands[n](0)) for n in wanted},
        },
        medians=summary,
        ratios=compute_ratios(g, p),
        samples={
            n: {"requests": [asdict(s) for s in samples[n]], "rounds": rounds[n]} for n in wanted
        },
        notes=run_notes(args.quick, busy_before),
    )
    path = results.write()
    console.print(f"results: {path}")
    if not args.no_docs:
        render(path)


def run_notes(quick: bool, busy_before: dict[str, list[float | None]]) -> list[str]:
    notes = [PEER_NOTE]
    if quick:
        notes.append("`--quick` run: short windows and few samples; p95s are rough.")
    busiest = max((b for bs in busy_before.values() for b in bs if b is not None), default=0.0)
    if busiest > 0.5:
        notes.append(
            f"Other work kept the CPU up to {busiest:.0%} busy before the servers started: "
            "each engine step ran many times slower than on a quiet machine, so these "
            "numbers describe the machine more than the servers. Re-run on a quiet machine."
        )
    return notes


def render(path: Path) -> None:
    """Recompute the summary from a results file's raw samples, then rewrite its
    medians and ratios, the plot and the docs table (no servers are started)."""
    meta = json.loads(path.read_text())
    samples = {n: [TierSample(**x) for x in v["requests"]] for n, v in meta["samples"].items()}
    summary = {n: summarize(samples[n], meta["samples"][n]["rounds"]) for n in samples}
    g, p = summary.get("golive", {}), summary.get("peer", {})
    meta["medians"], meta["ratios"] = summary, compute_ratios(g, p)
    meta["notes"] = run_notes(bool(meta["config"].get("quick")), meta["config"]["cpu_busy_before"])
    path.write_text(json.dumps(meta, indent=2) + "\n")
    quick = bool(meta["config"].get("quick"))
    plot(
        samples, summary, "Time to first token per tier over time" + (" (--quick)" if quick else "")
    )
    console.print(f"plot: {PLOT_PATH}")
    update_doc_section(NAME, table(g, p, meta["ratios"], meta))
    console.print("docs/benchmarks.md updated")


if __name__ == "__main__":
    main()
