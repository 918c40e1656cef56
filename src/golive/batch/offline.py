"""OpenAI batch files, offline: what `golive batch run input.jsonl -o output.jsonl` does.

No server: the app is built in this process on the embedded engine and each
line is sent to it as the server's batch runner sends it, so the output and
error lines are exactly the Batch API's, validated the same way, and logged
in the request log at the batch price. Results are appended as lines finish
(order is completion order, as on OpenAI: match them by custom_id); run the
same command again after an interruption and the lines already written are
kept and skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from golive.batch.store import Line, LineResult
from golive.batch.validation import check_file

if TYPE_CHECKING:
    from golive.engine.engine import EngineConfig

console = Console(stderr=True)
FSYNC_EVERY = 64  # lines between fsyncs of the result files


@dataclass
class Done:
    """What earlier runs already wrote: kept, and skipped by this run."""

    ids: set[str]
    completed: int = 0
    failed: int = 0


def errors_path_for(output: Path) -> Path:
    return output.with_name(output.stem + ".errors" + (output.suffix or ".jsonl"))


def read_done(path: Path) -> set[str]:
    """custom_ids already in a result file; a torn last line (a crash mid-write) is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    ids: set[str] = set()
    good = 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        try:
            ids.add(json.loads(raw)["custom_id"])
        except (ValueError, KeyError, TypeError):
            break
        good += len(raw)
    if good < len(data):
        with path.open("r+b") as f:
            f.truncate(good)
    return ids


def endpoint_of(data: bytes) -> str | None:
    """The url of the first line that names one: every line must share it."""
    for raw in data.splitlines():
        try:
            url = json.loads(raw).get("url")
        except (ValueError, AttributeError):
            continue
        if isinstance(url, str):
            return url
    return None


class ResultWriter:
    """Appends finished lines to the output or error file, flushed at once."""

    def __init__(self, output: Path, errors: Path) -> None:
        self.paths = {False: output, True: errors}
        self.files: dict[bool, object] = {}
        self.unsynced = 0

    def write(self, result: LineResult) -> None:
        f = self.files.get(result.is_error)
        if f is None:
            f = self.files[result.is_error] = self.paths[result.is_error].open("ab")
        # One write per line, flushed: a killed process leaves whole lines behind.
        f.write(json.dumps(result.output).encode() + b"\n")
        f.flush()
        self.unsynced += 1
        if self.unsynced >= FSYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        for f in self.files.values():
            os.fsync(f.fileno())
        self.unsynced = 0

    def close(self) -> None:
        self.sync()
        for f in self.files.values():
            f.close()


async def run_lines(app, lines: list[Line], endpoint: str, concurrency: int,
                    writer: ResultWriter, progress: Progress, task) -> tuple[int, int, int]:
    """Run every line through the in-process app; returns (completed, failed, output tokens)."""
    from golive.batch.execute import AppExecutor

    executor = AppExecutor(app, app.state.golive.batch.secret)
    todo = iter(lines)
    counts = [0, 0, 0]

    async def worker() -> None:
        for ln in todo:
            result = await executor("offline", endpoint, ln)
            writer.write(result)
            counts[1 if result.is_error else 0] += 1
            counts[2] += result.output_tokens
            elapsed = progress.tasks[0].elapsed or 0.0
            progress.update(task, advance=1,
                            tps=f"{counts[2] / elapsed:.0f}" if elapsed > 0 else "-")

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await executor.aclose()
    return counts[0], counts[1], counts[2]


def show_errors(errors: list[dict]) -> None:
    t = Table("line", "code", "param", "message", title="the input file is not a valid batch")
    t.columns[1].no_wrap = True
    for e in errors[:50]:
        t.add_row(str(e.get("line") or ""), e["code"], e.get("param") or "", e["message"])
    console.print(t)
    if len(errors) > 50:
        console.print(f"... and {len(errors) - 50} more")


def run_file(input: Path, output: Path, errors: Path | None = None, model: str | None = None,
             engine: EngineConfig | None = None, concurrency: int = 0, restart: bool = False,
             request_log: bool = True) -> int:
    """Run a batch file offline on the embedded engine, with progress and ETA.

    Returns the exit status: 0 when the file ran (failed lines are in the error
    file), 1 when the file is not a batch golive can run (the reasons printed)."""
    from golive.api.app import ServerSettings, create_app
    from golive.api.batches import served_endpoints
    from golive.backends.embedded import EmbeddedBackend
    from golive.batch.service import HEADROOM, BatchSettings
    from golive.engine.engine import EngineConfig

    engine = engine or EngineConfig()
    errors = errors or errors_path_for(output)
    data = input.read_bytes()
    endpoint = endpoint_of(data) or "/v1/chat/completions"

    backend = EmbeddedBackend(model, engine)
    app = create_app(backend, ServerSettings(request_log=request_log,
                                             batch=BatchSettings(enabled=False)))
    if endpoint not in served_endpoints(app):
        backend.close()
        console.print(f"[red]the lines' url {endpoint!r} is not an endpoint golive serves "
                      f"({', '.join(served_endpoints(app))})[/]")
        return 1
    checked = check_file(data, endpoint,
                         lambda name: backend.info.id if name in backend.info.names() else None,
                         max_requests=sys.maxsize)
    if checked.errors:
        backend.close()
        show_errors(checked.errors)
        return 1
    if restart:
        output.unlink(missing_ok=True)
        errors.unlink(missing_ok=True)
    done = read_done(output) | read_done(errors)
    lines = [ln for ln in checked.lines if ln.custom_id not in done]
    if done:
        console.print(f"{len(done)} lines already in {output} / {errors}: kept and skipped "
                      "(--restart to run them again)")
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = ResultWriter(output, errors)
    n = concurrency or engine.slots + HEADROOM

    async def main() -> tuple[int, int, int]:
        async with app.router.lifespan_context(app):
            with Progress(TextColumn("[bold]batch[/]"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[tps]} tok/s"), TimeElapsedColumn(),
                          TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
                task = progress.add_task("batch", total=len(lines), tps="-")
                return await run_lines(app, lines, endpoint, n, writer, progress, task)

    try:
        completed, failed, tokens = asyncio.run(main())
    finally:
        writer.close()
    console.print(f"{completed} completed, {failed} failed, {tokens} completion tokens; "
                  f"results in {output}" + (f", failures in {errors}" if failed else ""))
    return 0
