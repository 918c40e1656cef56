"""Stream UX: a multi-step pipeline as a stream of progress events.

Users wait less when they see what is happening: which step runs, which tool
was called, the answer as it is written. The step graph in
`golive.patterns.parallel` emits these events; this module gives them a wire
form (Server-Sent Events, for web clients) and a terminal form (a live rich
table).

    graph = StepGraph()
    ...
    async for ev in graph.stream():          # StepStarted, PartialText, ...
        ...
    # web: StreamingResponse(sse_stream(graph.stream()), media_type=SSE_MEDIA_TYPE)
    # terminal: await render_rich(graph.stream())
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from rich.console import Console

SSE_MEDIA_TYPE = "text/event-stream"


@dataclass(slots=True)
class ProgressEvent:
    """Base of every event; `kind` is the SSE event name."""

    kind: ClassVar[str] = "event"
    step: str
    at: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **asdict(self)}


@dataclass(slots=True)
class StepStarted(ProgressEvent):
    kind: ClassVar[str] = "step.started"


@dataclass(slots=True)
class StepFinished(ProgressEvent):
    kind: ClassVar[str] = "step.finished"
    elapsed_s: float = 0.0
    # a short, JSON-safe view of the result (the full result stays in Python)
    summary: str = ""


@dataclass(slots=True)
class StepFailed(ProgressEvent):
    kind: ClassVar[str] = "step.failed"
    error: str = ""
    elapsed_s: float = 0.0


@dataclass(slots=True)
class StepSkipped(ProgressEvent):
    """A step that never ran because a step it depends on failed."""

    kind: ClassVar[str] = "step.skipped"
    reason: str = ""


@dataclass(slots=True)
class PartialText(ProgressEvent):
    kind: ClassVar[str] = "text.delta"
    text: str = ""


@dataclass(slots=True)
class ToolCall(ProgressEvent):
    """A tool call shown to the user (arguments, and the result once known)."""

    kind: ClassVar[str] = "tool.call"
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    result: str | None = None


@dataclass(slots=True)
class PipelineDone(ProgressEvent):
    kind: ClassVar[str] = "pipeline.done"
    step: str = "*"
    elapsed_s: float = 0.0
    ok: bool = True


EVENT_TYPES: dict[str, type[ProgressEvent]] = {
    cls.kind: cls for cls in (StepStarted, StepFinished, StepFailed, StepSkipped, PartialText,
                              ToolCall, PipelineDone)}


def summarize(value: Any, limit: int = 120) -> str:
    """A one-line view of a step's result for events and the terminal."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- SSE ------------------------------------------------------------------------


def sse_encode(event: ProgressEvent) -> bytes:
    """One event as an SSE message: `event:` carries the kind, `data:` the JSON."""
    data = json.dumps(event.to_dict(), ensure_ascii=False, default=str)
    return f"event: {event.kind}\ndata: {data}\n\n".encode()


async def sse_stream(events: AsyncIterable[ProgressEvent]) -> AsyncIterator[bytes]:
    """Bytes for a `text/event-stream` response, e.g. Starlette's StreamingResponse."""
    async for ev in events:
        yield sse_encode(ev)


def sse_decode(lines: Iterable[str]) -> Iterator[ProgressEvent]:
    """Parse SSE text lines back into events (for Python clients and tests)."""
    kind, data = None, []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield event_from_dict(json.loads("\n".join(data)), kind)
            kind, data = None, []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield event_from_dict(json.loads("\n".join(data)), kind)


def event_from_dict(d: dict[str, Any], kind: str | None = None) -> ProgressEvent:
    d = dict(d)
    kind = d.pop("type", None) or kind
    cls = EVENT_TYPES.get(kind or "")
    if cls is None:
        raise ValueError(f"unknown progress event type {kind!r}")
    return cls(**d)


# ---- model calls that report partial text -----------------------------------------


@dataclass(slots=True)
class StreamedChat:
    """What a streamed chat completion produced."""

    text: str
    usage: Any | None
    ttft_s: float | None
    finish_reason: str | None


async def stream_chat(client: AsyncOpenAI, emit: Any = None, step: str = "",
                      **params: Any) -> StreamedChat:
    """Stream a chat completion, emitting PartialText as the text arrives.

    `emit` is a StepContext's `emit` (or any callable taking an event); the
    usage comes back with `stream_options.include_usage`.
    """
    params = dict(params, stream=True)
    params.setdefault("stream_options", {"include_usage": True})
    t0 = time.monotonic()
    ttft = None
    parts: list[str] = []
    usage = finish = None
    stream = await client.chat.completions.create(**params)
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.finish_reason:
                finish = c.finish_reason
            text = c.delta.content if c.delta else None
            if text:
                if ttft is None:
                    ttft = time.monotonic() - t0
                parts.append(text)
                if emit is not None:
                    emit(PartialText(step, text=text))
    return StreamedChat("".join(parts), usage, ttft, finish)


# ---- terminal -------------------------------------------------------------------


class RichRenderer:
    """A live rich table of steps: status, time, and what each is doing.

    Feed it events with `update(ev)` inside `with renderer:`, or let
    `render_rich` drive it from an async event stream.
    """

    _ICON = {"waiting": "·", "running": "…", "done": "✓", "failed": "✗", "skipped": "-"}

    def __init__(self, console: Console | None = None, title: str = "pipeline",
                 detail_width: int = 60):
        from rich.console import Console as _Console

        self.console = console or _Console()
        self.title = title
        self.detail_width = detail_width
        self.steps: dict[str, dict[str, Any]] = {}
        self.done: PipelineDone | None = None
        self._live = None

    def update(self, ev: ProgressEvent) -> None:
        if isinstance(ev, PipelineDone):
            self.done = ev
        else:
            s = self.steps.setdefault(ev.step, {"status": "waiting", "detail": "", "elapsed": None,
                                                "text": ""})
            if isinstance(ev, StepStarted):
                s.update(status="running", started=ev.at)
            elif isinstance(ev, StepFinished):
                s.update(status="done", elapsed=ev.elapsed_s, detail=s["text"] or ev.summary)
            elif isinstance(ev, StepFailed):
                s.update(status="failed", elapsed=ev.elapsed_s, detail=ev.error)
            elif isinstance(ev, StepSkipped):
                s.update(status="skipped", detail=ev.reason)
            elif isinstance(ev, PartialText):
                s["text"] += ev.text
                s["detail"] = s["text"]
            elif isinstance(ev, ToolCall):
                args = ", ".join(f"{k}={v!r}" for k, v in ev.arguments.items())
                s["detail"] = f"{ev.name}({args})" + (f" → {ev.result}" if ev.result else "")
        if self._live is not None:
            self._live.update(self.table())

    def table(self):
        from rich.table import Table

        caption = None
        if self.done is not None:
            caption = f"{'done' if self.done.ok else 'failed'} in {self.done.elapsed_s:.2f}s"
        t = Table(title=self.title, caption=caption)
        t.add_column("", width=1)
        t.add_column("step")
        t.add_column("time", justify="right")
        t.add_column("detail", max_width=self.detail_width, overflow="ellipsis", no_wrap=True)
        now = time.time()
        for name, s in self.steps.items():
            if s["elapsed"] is not None:
                el = f"{s['elapsed']:.2f}s"
            elif s["status"] == "running":
                el = f"{now - s['started']:.1f}s"
            else:
                el = ""
            # the tail of streamed text is what the user is reading right now
            detail = " ".join(s["detail"].split())
            if len(detail) > self.detail_width:
                detail = "…" + detail[-(self.detail_width - 1):]
            t.add_row(self._ICON[s["status"]], name, el, detail)
        return t

    def __enter__(self) -> RichRenderer:
        from rich.live import Live

        self._live = Live(self.table(), console=self.console, refresh_per_second=8,
                          transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.table())
            self._live.__exit__(*exc)
            self._live = None


async def render_rich(events: AsyncIterable[ProgressEvent], console: Console | None = None,
                      title: str = "pipeline") -> list[ProgressEvent]:
    """Show `events` as a live table until the stream ends; returns the events seen."""
    seen: list[ProgressEvent] = []
    with RichRenderer(console, title) as r:
        async for ev in events:
            seen.append(ev)
            r.update(ev)
    return seen

