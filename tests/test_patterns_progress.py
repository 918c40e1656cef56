"""golive.patterns.progress: a pipeline as progress events, over SSE and in the terminal."""

from __future__ import annotations

import asyncio

import httpx
from conftest import MODEL
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from rich.console import Console

from golive.patterns import (
    PartialText,
    PipelineDone,
    StepFailed,
    StepFinished,
    StepGraph,
    StepSkipped,
    StepStarted,
    ToolCall,
    render_rich,
    sse_decode,
    sse_encode,
    sse_stream,
    stream_chat,
)
from golive.patterns.progress import SSE_MEDIA_TYPE, RichRenderer


def test_every_event_survives_the_sse_round_trip():
    events = [StepStarted("a"), PartialText("a", text="he said \"hi\"\nthen left"),
              ToolCall("a", name="search", arguments={"q": "bridges", "k": 3}, result="2 hits"),
              StepFinished("a", elapsed_s=0.25, summary="ok"), StepFailed("b", error="boom"),
              StepSkipped("c", reason="depends on failed ['b']"), PipelineDone(elapsed_s=1.0,
                                                                                ok=False)]
    wire = b"".join(sse_encode(e) for e in events).decode()
    assert wire.startswith("event: step.started\ndata: {")
    assert wire.count("\n\n") == len(events)  # one message each; the newline stays escaped
    assert list(sse_decode(wire.splitlines(keepends=True))) == events


def pipeline(client) -> StepGraph:
    g = StepGraph()

    @g.step()
    async def lookup(ctx):
        ctx.tool("search", {"q": "Varnholt bridge"}, result="built 1887")
        return "The Varnholt bridge was built in 1887."

    @g.step(after=["lookup"])
    async def answer(ctx):
        r = await stream_chat(client, ctx.emit, ctx.name, model=MODEL, max_tokens=16,
                              temperature=0, seed=2,
                              messages=[{"role": "user",
                                         "content": f"{ctx['lookup']} When was it built?"}])
        assert r.usage is not None and r.usage.completion_tokens <= 16
        return r.text

    return g


def test_pipeline_streams_to_a_web_client_as_sse(server):
    app = FastAPI()

    @app.get("/ask")
    async def ask():
        return StreamingResponse(sse_stream(pipeline(server.aclient()).stream()),
                                 media_type=SSE_MEDIA_TYPE)

    async def fetch():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as h:
            async with h.stream("GET", "/ask") as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                return [ln async for ln in r.aiter_lines()]

    events = list(sse_decode(asyncio.run(fetch())))
    kinds = [(e.kind, e.step) for e in events]
    assert kinds[:4] == [("step.started", "lookup"), ("tool.call", "lookup"),
                         ("step.finished", "lookup"), ("step.started", "answer")]
    assert kinds[-2:] == [("step.finished", "answer"), ("pipeline.done", "*")]
    deltas = [e for e in events if isinstance(e, PartialText)]
    assert len(deltas) >= 2 and all(d.step == "answer" for d in deltas)
    finished = next(e for e in events if isinstance(e, StepFinished) and e.step == "answer")
    # the partial texts add up to the step's result
    assert finished.summary == " ".join("".join(d.text for d in deltas).split())[:120]
    assert events[-1].ok


def test_rich_renderer_shows_steps_tools_and_failures():
    g = StepGraph()

    @g.step()
    async def fetch(ctx):
        ctx.tool("http_get", {"url": "https://example.org"}, result="200 OK")
        return "page"

    @g.step(after=["fetch"])
    async def write(ctx):
        ctx.text("Hello ")
        ctx.text("world")
        return "Hello world"

    @g.step()
    async def flaky(ctx):
        raise RuntimeError("upstream timed out")

    @g.step(after=["flaky"])
    async def after_flaky(ctx):
        return 1

    console = Console(record=True, width=140, force_terminal=False)
    seen = asyncio.run(render_rich(g.stream(), console, title="demo pipeline"))
    out = console.export_text()
    assert isinstance(seen[-1], PipelineDone)
    assert "demo pipeline" in out and "failed in" in out
    for text in ("✓", "fetch", "write", "Hello world", "✗", "RuntimeError: upstream timed out",
                 "after_flaky", "depends on failed"):
        assert text in out, text
    r = RichRenderer(Console(record=True, width=140))
    r.update(ToolCall("s", name="calc", arguments={"x": 2}, result="4"))
    assert r.steps["s"]["detail"] == "calc(x=2) → 4"
