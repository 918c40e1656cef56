"""Parallelize: run independent steps at the same time.

If step 2 does not need step 1's output, waiting for step 1 before sending
step 2 only adds latency. A `StepGraph` runs every step as soon as the steps
it depends on are done, passes their results along, and reports each step's
progress as events (see `golive.patterns.progress`).

    from openai import AsyncOpenAI
    from golive.patterns import StepGraph

    client = AsyncOpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
    g = StepGraph()

    @g.step()
    async def summary(ctx):
        return await ask(client, "Summarize: " + ctx["doc"])

    @g.step()
    async def keywords(ctx):               # runs at the same time as summary
        return await ask(client, "Keywords of: " + ctx["doc"])

    @g.step(after=["summary", "keywords"])  # runs when both are done
    async def title(ctx):
        return await ask(client, f"Title for {ctx['summary']} ({ctx['keywords']})")

    results = await g.run(inputs={"doc": text})

Steps are async functions (or plain functions, which run in a worker thread)
taking a `StepContext`. `limit` caps how many steps run at once.
"""

from __future__ import annotations

import asyncio
import graphlib
import inspect
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from golive.patterns.progress import (
    PartialText,
    PipelineDone,
    ProgressEvent,
    StepFailed,
    StepFinished,
    StepSkipped,
    StepStarted,
    ToolCall,
    summarize,
)

T = TypeVar("T")
StepFn = Callable[["StepContext"], Any]  # returns a value or an awaitable of one


class GraphError(ValueError):
    """The graph is malformed: unknown dependency, duplicate name or a cycle."""


class StepError(RuntimeError):
    """One or more steps failed; `results` holds what did finish."""

    def __init__(self, failed: dict[str, BaseException], results: dict[str, Any]):
        names = ", ".join(f"{k}: {type(v).__name__}: {v}" for k, v in failed.items())
        super().__init__(f"step(s) failed: {names}")
        self.failed = failed
        self.results = results


@dataclass(slots=True)
class Step:
    name: str
    fn: StepFn
    after: tuple[str, ...] = ()


@dataclass
class StepContext:
    """What a step sees: the run's inputs, its dependencies' results, and a way
    to report progress."""

    name: str
    inputs: Mapping[str, Any]
    _emit: Callable[[ProgressEvent], None] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.inputs[key]

    def emit(self, event: ProgressEvent) -> None:
        self._emit(event)

    def text(self, delta: str) -> None:
        """Report partial output (e.g. streamed model text)."""
        self._emit(PartialText(self.name, text=delta))

    def tool(self, name: str, arguments: Mapping[str, Any] | None = None,
             result: Any = None) -> None:
        """Show a tool call to the user."""
        self._emit(ToolCall(self.name, name=name, arguments=dict(arguments or {}),
                            result=None if result is None else summarize(result)))


class StepGraph:
    """A small DAG of steps; independent steps run concurrently."""

    def __init__(self) -> None:
        self.steps: dict[str, Step] = {}

    def add(self, name: str, fn: StepFn, after: Iterable[str] = ()) -> StepGraph:
        if name in self.steps:
            raise GraphError(f"duplicate step name {name!r}")
        deps = tuple(after)
        if name in deps:
            raise GraphError(f"step {name!r} depends on itself")
        self.steps[name] = Step(name, fn, deps)
        return self

    def step(self, name: str | None = None, after: Iterable[str] = ()) -> Callable[[StepFn], StepFn]:
        """Decorator form of `add`; the step is named after the function by default."""
        def deco(fn: StepFn) -> StepFn:
            self.add(name or fn.__name__, fn, after)
            return fn
        return deco

    def validate(self, inputs: Iterable[str] = ()) -> list[str]:
        """Check the graph; returns one valid execution order."""
        known = set(self.steps) | set(inputs)
        for s in self.steps.values():
            missing = [d for d in s.after if d not in known]
            if missing:
                raise GraphError(f"step {s.name!r} depends on unknown step(s) or input(s) "
                                 f"{missing}")
        clash = set(self.steps) & set(inputs)
        if clash:
            raise GraphError(f"input name(s) {sorted(clash)} clash with step names")
        try:
            order = list(graphlib.TopologicalSorter(
                {n: s.after for n, s in self.steps.items()}).static_order())
        except graphlib.CycleError as exc:
            raise GraphError(f"steps form a cycle: {' -> '.join(exc.args[1])}") from None
        return [n for n in order if n in self.steps]

    async def stream(self, inputs: Mapping[str, Any] | None = None,
                     limit: int | None = None,
                     results: dict[str, Any] | None = None,
                     errors: dict[str, BaseException] | None = None,
                     ) -> AsyncIterator[ProgressEvent]:
        """Run the graph, yielding progress events; ends with PipelineDone.

        Pass dicts as `results` and `errors` to receive the step results and
        the exceptions of failed steps. A failed step's
        dependants are skipped; independent steps still run. Closing the
        iterator early cancels the running steps.
        """
        if limit is not None and limit < 1:
            raise ValueError("limit must be >= 1")
        inputs = dict(inputs or {})
        self.validate(inputs)
        out = results if results is not None else {}
        errs = errors if errors is not None else {}
        q: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def emit(ev: ProgressEvent) -> None:
            if threading.get_ident() == loop_thread:
                q.put_nowait(ev)
            else:  # a sync step running in a worker thread
                loop.call_soon_threadsafe(q.put_nowait, ev)

        driver = asyncio.create_task(self._drive(inputs, limit, out, errs, emit))
        driver.add_done_callback(lambda _t: q.put_nowait(None))
        try:
            while (ev := await q.get()) is not None:
                yield ev
            await driver  # surface unexpected driver errors
        finally:
            if not driver.done():
                driver.cancel()
                try:
                    await driver
                except asyncio.CancelledError:
                    pass

    async def run(self, inputs: Mapping[str, Any] | None = None, limit: int | None = None,
                  on_event: Callable[[ProgressEvent], None] | None = None) -> dict[str, Any]:
        """Run to the end and return {step: result}; raises StepError if any step failed."""
        results: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        async for ev in self.stream(inputs, limit, results, errors):
            if on_event is not None:
                on_event(ev)
        if errors:
            raise StepError(errors, results) from next(iter(errors.values()))
        return results

    async def _drive(self, inputs: dict[str, Any], limit: int | None, out: dict[str, Any],
                     errs: dict[str, BaseException],
                     emit: Callable[[ProgressEvent], None]) -> None:
        t_start = time.monotonic()
        sem = asyncio.Semaphore(limit) if limit else None
        ts = graphlib.TopologicalSorter({n: s.after for n, s in self.steps.items()})
        for name in inputs:
            ts.add(name)
        ts.prepare()
        values: dict[str, Any] = dict(inputs)
        bad: set[str] = set()
        running: dict[asyncio.Task, str] = {}
        loop = asyncio.get_running_loop()
        executor: list[ThreadPoolExecutor] = []

        def pool() -> ThreadPoolExecutor:
            # Own pool, sized to the graph: the loop's default pool has only
            # cpu+4 threads and would cap how many sync steps run at once.
            if not executor:
                executor.append(ThreadPoolExecutor(min(limit or len(self.steps), 64),
                                                   thread_name_prefix="golive-step"))
            return executor[0]

        async def run_one(step: Step) -> Any:
            if sem is not None:
                await sem.acquire()
            try:
                emit(StepStarted(step.name))
                ctx = StepContext(step.name, {**inputs, **{d: values[d] for d in step.after}},
                                  emit)
                t0 = time.monotonic()
                try:
                    if inspect.iscoroutinefunction(step.fn):
                        value = await step.fn(ctx)
                    else:
                        value = await loop.run_in_executor(pool(), step.fn, ctx)
                    if inspect.isawaitable(value):
                        value = await value
                except Exception as exc:
                    emit(StepFailed(step.name, error=f"{type(exc).__name__}: {exc}",
                                    elapsed_s=time.monotonic() - t0))
                    return _Failure(exc)
                emit(StepFinished(step.name, elapsed_s=time.monotonic() - t0,
                                  summary=summarize(value)))
                return value
            finally:
                if sem is not None:
                    sem.release()

        try:
            while ts.is_active():
                for name in ts.get_ready():
                    if name in inputs:
                        ts.done(name)
                        continue
                    step = self.steps[name]
                    failed_deps = [d for d in step.after if d in bad]
                    if failed_deps:
                        bad.add(name)
                        emit(StepSkipped(name, reason=f"depends on failed {failed_deps}"))
                        ts.done(name)
                        continue
                    running[asyncio.create_task(run_one(step), name=f"step:{name}")] = name
                if not running:
                    continue  # inputs or skips made more steps ready
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    name = running.pop(task)
                    value = task.result()
                    if isinstance(value, _Failure):
                        bad.add(name)
                        errs[name] = value.exc
                    else:
                        values[name] = out[name] = value
                    ts.done(name)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            if executor:
                executor[0].shutdown(wait=False)
        emit(PipelineDone(elapsed_s=time.monotonic() - t_start, ok=not bad))


def _no_context(fn: Callable[[], Awaitable[T]]) -> StepFn:
    async def step(_ctx: StepContext) -> T:
        return await fn()
    return step


@dataclass(slots=True)
class _Failure:
    exc: BaseException


async def parallel(calls: Mapping[str, Callable[[], Awaitable[T]]]
                   | Sequence[Callable[[], Awaitable[T]]],
                   limit: int | None = None) -> Any:
    """Run independent async calls concurrently (at most `limit` at once).

    A mapping gives back {name: result}; a sequence gives a list in order.

        answers = await parallel([lambda q=q: ask(client, q) for q in questions], limit=8)
    """
    named = dict(calls) if isinstance(calls, Mapping) else {
        f"call{i}": c for i, c in enumerate(calls)}
    g = StepGraph()
    for name, fn in named.items():
        g.add(name, _no_context(fn))
    results = await g.run(limit=limit)
    if isinstance(calls, Mapping):
        return results
    return [results[f"call{i}"] for i in range(len(named))]
