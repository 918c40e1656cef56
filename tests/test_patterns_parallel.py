"""golive.patterns.parallel: the step graph's logic, and real concurrency on the server."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from conftest import MODEL

from golive.patterns import (
    GraphError,
    PartialText,
    PipelineDone,
    StepError,
    StepFinished,
    StepGraph,
    StepSkipped,
    StepStarted,
    parallel,
    stream_chat,
)

# ---- pure logic (no model) --------------------------------------------------------


def test_results_flow_along_dependencies_and_order_is_respected():
    g = StepGraph()
    log: list[str] = []

    @g.step()
    async def a(ctx):
        log.append("a")
        return ctx["x"] * 2

    @g.step(after=["a"])
    async def b(ctx):
        log.append("b")
        return ctx["a"] + 1

    @g.step(after=["a"])
    def c(ctx):  # a sync step runs in a worker thread
        log.append("c")
        return ctx["a"] * 10

    @g.step(after=["b", "c", "x"])
    async def d(ctx):
        log.append("d")
        return (ctx["b"], ctx["c"], ctx["x"])

    out = asyncio.run(g.run(inputs={"x": 3}))
    assert out == {"a": 6, "b": 7, "c": 60, "d": (7, 60, 3)}
    assert log[0] == "a" and log[-1] == "d"


def test_independent_steps_start_together_and_limit_caps_them():
    """Count how many steps are inside their body at once (a barrier-free gauge)."""

    def build(n: int, gauge: dict) -> StepGraph:
        g = StepGraph()
        for i in range(n):
            async def step(ctx, i=i):
                gauge["now"] += 1
                gauge["max"] = max(gauge["max"], gauge["now"])
                await asyncio.sleep(0.05)  # yield so the others can start
                gauge["now"] -= 1
                return i
            g.add(f"s{i}", step)
        return g

    free = {"now": 0, "max": 0}
    asyncio.run(build(6, free).run())
    assert free["max"] == 6
    capped = {"now": 0, "max": 0}
    asyncio.run(build(6, capped).run(limit=2))
    assert capped["max"] == 2


def test_sync_steps_are_not_capped_by_the_default_thread_pool():
    n = 12
    barrier = threading.Barrier(n, timeout=10)  # every step must be running at once
    g = StepGraph()
    for i in range(n):
        g.add(f"s{i}", lambda ctx, i=i: barrier.wait() is not None and i)
    out = asyncio.run(g.run())
    assert sorted(out.values()) == list(range(n))


def test_event_stream_order_and_skips_on_failure():
    g = StepGraph()

    @g.step()
    async def fetch(ctx):
        ctx.tool("search", {"q": "bridge"}, result="3 hits")
        ctx.text("par")
        ctx.text("tial")
        return "page"

    @g.step()
    async def broken(ctx):
        raise ValueError("boom")

    @g.step(after=["broken"])
    async def needs_broken(ctx):
        raise AssertionError("must not run")

    @g.step(after=["fetch"])
    async def summarize(ctx):
        return ctx["fetch"].upper()

    async def collect():
        results, errors, events = {}, {}, []
        async for ev in g.stream(results=results, errors=errors):
            events.append(ev)
        return results, errors, events

    results, errors, events = asyncio.run(collect())
    assert results == {"fetch": "page", "summarize": "PAGE"}
    assert isinstance(errors["broken"], ValueError)
    kinds = [(e.kind, e.step) for e in events]
    assert kinds.index(("step.started", "fetch")) < kinds.index(("tool.call", "fetch")) \
        < kinds.index(("step.finished", "fetch")) < kinds.index(("step.started", "summarize"))
    assert ("step.failed", "broken") in kinds
    assert ("step.skipped", "needs_broken") in kinds
    assert ("step.started", "needs_broken") not in kinds
    assert "".join(e.text for e in events if isinstance(e, PartialText)) == "partial"
    assert isinstance(events[-1], PipelineDone) and events[-1].ok is False

    with pytest.raises(StepError) as exc:
        asyncio.run(g.run())
    assert set(exc.value.failed) == {"broken"} and exc.value.results["summarize"] == "PAGE"


def test_malformed_graphs_are_rejected():
    g = StepGraph()
    g.add("a", lambda ctx: 1, after=["b"])
    g.add("b", lambda ctx: 2, after=["a"])
    with pytest.raises(GraphError, match="cycle"):
        g.validate()
    g2 = StepGraph().add("a", lambda ctx: 1, after=["missing"])
    with pytest.raises(GraphError, match="unknown"):
        asyncio.run(g2.run())
    with pytest.raises(GraphError, match="duplicate"):
        StepGraph().add("a", lambda ctx: 1).add("a", lambda ctx: 2)
    with pytest.raises(GraphError, match="clash"):
        StepGraph().add("a", lambda ctx: 1).validate(inputs=["a"])


def test_closing_the_stream_early_cancels_running_steps():
    cancelled = []
    g = StepGraph()

    @g.step()
    async def slow(ctx):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append("slow")
            raise

    async def first_event_only():
        agen = g.stream()
        ev = await agen.__anext__()
        await asyncio.sleep(0)  # let the step start
        await agen.aclose()
        return ev

    ev = asyncio.run(first_event_only())
    assert isinstance(ev, StepStarted) and cancelled == ["slow"]


# ---- real server: how many requests run at once -------------------------------------


async def _max_running(base: str, work) -> tuple[object, int]:
    """Run `work` while polling the server's /health; returns (result, max running)."""
    peak = 0
    done = asyncio.Event()

    async def poll() -> None:
        nonlocal peak
        async with httpx.AsyncClient(base_url=base, timeout=5) as h:
            while not done.is_set():
                peak = max(peak, (await h.get("/health")).json()["running"])
                await asyncio.sleep(0.005)

    poller = asyncio.create_task(poll())
    try:
        result = await work
    finally:
        done.set()
        await poller
    return result, peak


QUESTIONS = ["Name a fruit.", "Name a color.", "Name an animal.", "Name a city."]


def _ask(client, q: str):
    async def call():
        r = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": q}], max_tokens=40,
            temperature=0, seed=1)
        return r.choices[0].message.content
    return call


def test_parallel_runs_requests_concurrently_on_the_server(server):
    server.wait_idle()
    client = server.aclient()

    async def both():
        par, peak_par = await _max_running(
            server.base, parallel([_ask(client, q) for q in QUESTIONS]))
        server.wait_idle()
        seq, peak_seq = await _max_running(
            server.base, parallel([_ask(client, q) for q in QUESTIONS], limit=1))
        return par, peak_par, seq, peak_seq

    par, peak_par, seq, peak_seq = asyncio.run(both())
    assert len(par) == len(seq) == 4 and all(isinstance(t, str) and t for t in par)
    assert peak_seq == 1
    assert peak_par >= 3  # all four submitted at once; the fastest may finish first


def test_step_graph_streams_model_text_and_passes_results(server):
    server.wait_idle()
    client = server.aclient()
    g = StepGraph()

    @g.step()
    async def fact(ctx):
        r = await stream_chat(client, ctx.emit, "fact", model=MODEL, max_tokens=24,
                              temperature=0, seed=3,
                              messages=[{"role": "user", "content": "Say one fact about rivers."}])
        return r.text

    @g.step()
    async def word(ctx):
        r = await stream_chat(client, ctx.emit, "word", model=MODEL, max_tokens=8,
                              temperature=0, seed=3,
                              messages=[{"role": "user", "content": "Say one word."}])
        return r.text

    @g.step(after=["fact", "word"])
    async def combine(ctx):
        return f"{ctx['word']} / {ctx['fact']}"

    async def run():
        events, results = [], {}
        async for ev in g.stream(results=results):
            events.append(ev)
        return events, results

    events, results = asyncio.run(run())
    texts = {s: "".join(e.text for e in events if isinstance(e, PartialText) and e.step == s)
             for s in ("fact", "word")}
    assert texts["fact"] == results["fact"] and texts["word"] == results["word"]
    assert results["combine"] == f"{results['word']} / {results['fact']}"
    # both model steps started before either finished: they ran side by side
    order = [(type(e), e.step) for e in events if isinstance(e, (StepStarted, StepFinished))]
    assert order.index((StepStarted, "word")) < order.index((StepFinished, "fact"))
    assert order.index((StepStarted, "fact")) < order.index((StepFinished, "word"))
    assert not any(isinstance(e, StepSkipped) for e in events)
