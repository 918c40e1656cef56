"""The batch runner: validates batches, runs their lines, writes their results.

One asyncio task in the server's lifespan. It keeps `concurrency` lines in
flight across batches (oldest batch first), enough to keep the engine's
batch full; the engine admits them at the batch tier, below flex, so they
only take capacity interactive traffic leaves free.

Every state it acts on lives in the store, so a restarted runner picks up
where a killed one stopped: validating batches are validated again,
in_progress ones run their pending lines, finalizing, cancelling and
expiring ones write their files from the stored rows.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from golive.batch import store as st
from golive.batch.execute import error_result, expired_line
from golive.batch.files import BATCH_FILE_TTL, OUTPUT_PURPOSE, FileBytes, derived_file_id
from golive.batch.store import BatchRow, BatchStore, FileRow, Line, LineResult
from golive.batch.validation import check_file

log = logging.getLogger("golive.batch")

Executor = Callable[[str, str, Line], Awaitable[LineResult]]


@dataclass
class Limits:
    max_requests: int = 50_000  # OpenAI's limit per batch
    max_file_bytes: int = 200 * 1024 * 1024  # OpenAI's limit for a batch input file


class BatchRunner:
    def __init__(self, store: BatchStore, files: FileBytes, execute: Executor,
                 resolve_model: Callable[[str], str | None], concurrency: int,
                 limits: Limits | None = None, poll_s: float = 0.5,
                 sweep_every_s: float = 60.0) -> None:
        self.store = store
        self.files = files
        self.execute = execute
        self.resolve_model = resolve_model
        self.concurrency = max(1, concurrency)
        self.limits = limits or Limits()
        self.poll_s = poll_s
        self.sweep_every_s = sweep_every_s
        self._inflight: dict[tuple[str, int], asyncio.Task] = {}
        self._cursor: dict[str, int] = {}  # last line dispatched, per batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._last_sweep = 0.0

    # ---- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="golive-batch-runner")

    async def stop(self) -> None:
        """Stop dispatching; lines in flight are abandoned (still pending) and rerun later."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        tasks = list(self._inflight.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        await asyncio.to_thread(self.files.sweep_partials)
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad row must not stop every other batch
                log.exception("batch runner step failed; retrying")
                await asyncio.sleep(1.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    # ---- one pass over the active batches --------------------------------------

    async def tick(self) -> None:
        now = time.time()
        if now - self._last_sweep >= self.sweep_every_s:
            self._last_sweep = now
            await asyncio.to_thread(self.sweep_expired_files)
        free = self.concurrency - len(self._inflight)
        for b in await asyncio.to_thread(self.store.active_batches):
            if b.status == st.VALIDATING:
                await asyncio.to_thread(self.validate, b)
            elif b.status == st.FINALIZING:
                await asyncio.to_thread(self.finalize, b.id, st.COMPLETED)
            elif b.status == st.CANCELLING:
                if self._stop_lines(b.id):
                    await asyncio.to_thread(self.finalize, b.id, st.CANCELLED)
            elif now >= b.expires_at:
                if self._stop_lines(b.id):
                    await asyncio.to_thread(self.finalize, b.id, st.EXPIRED)
            else:
                free -= await self._fill(b, free)

    async def _fill(self, b: BatchRow, free: int) -> int:
        """Dispatch up to `free` pending lines of one batch; finalize it when none remain."""
        dispatched = 0
        if free > 0:
            lines = await asyncio.to_thread(self.store.pending_lines, b.id,
                                            self._cursor.get(b.id, 0), free)
            for ln in lines:
                self._dispatch(b, ln)
                self._cursor[b.id] = ln.line
            dispatched = len(lines)
            if dispatched:
                return dispatched
        if self._has_lines(b.id):
            return 0
        if await asyncio.to_thread(self.store.count_pending, b.id) == 0:
            await asyncio.to_thread(self.finalize, b.id, st.COMPLETED)
        else:
            self._cursor[b.id] = 0  # pending lines behind the cursor: go round again
        return 0

    def _dispatch(self, b: BatchRow, ln: Line) -> None:
        key = (b.id, ln.line)
        task = asyncio.create_task(self._run_line(b.id, b.endpoint, ln))
        self._inflight[key] = task

        def done(_: asyncio.Task) -> None:
            self._inflight.pop(key, None)
            self._wake.set()

        task.add_done_callback(done)

    def _has_lines(self, batch_id: str) -> bool:
        return any(k[0] == batch_id for k in self._inflight)

    def _stop_lines(self, batch_id: str) -> bool:
        """Cancel a batch's lines in flight; True once none is left."""
        for (bid, _), task in list(self._inflight.items()):
            if bid == batch_id:
                task.cancel()
        return not self._has_lines(batch_id)

    async def _run_line(self, batch_id: str, endpoint: str, ln: Line) -> None:
        try:
            result = await self.execute(batch_id, endpoint, ln)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled while in the app, which answered (499) instead of raising:
                # that answer is no result, the line stays pending.
                raise asyncio.CancelledError
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave a line hanging on an unexpected failure
            log.exception("batch %s line %d failed", batch_id, ln.line)
            result = error_result(ln, "server_error", f"{type(exc).__name__}: {exc}")
        # Once the answer exists it is stored whole, even if we are being
        # cancelled meanwhile: otherwise the engine's work would be lost.
        write = asyncio.ensure_future(
            asyncio.to_thread(self.store.complete_line, batch_id, ln.line, result))
        cancelled = False
        while not write.done():
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                cancelled = True
        write.result()
        if cancelled:
            raise asyncio.CancelledError

    # ---- blocking steps, run in a worker thread ------------------------------------

    def validate(self, b: BatchRow) -> None:
        f = self.store.get_file(b.input_file_id)
        if f is None or not self.files.exists(b.input_file_id):
            self.store.fail_validation(b.id, [{
                "code": "invalid_request", "line": None, "param": "input_file_id",
                "message": f"Cannot find file {b.input_file_id}."}])
            return
        if f.purpose != "batch":
            self.store.fail_validation(b.id, [{
                "code": "invalid_request", "line": None, "param": "input_file_id",
                "message": f"The input file {f.id} has purpose '{f.purpose}'; a batch needs "
                           "a file uploaded with purpose 'batch'."}])
            return
        if f.bytes > self.limits.max_file_bytes:
            self.store.fail_validation(b.id, [{
                "code": "file_too_large", "line": None, "param": "input_file_id",
                "message": f"The batch input file is larger than the "
                           f"{self.limits.max_file_bytes} maximum. Please try again with a "
                           "smaller batch."}])
            return
        checked = check_file(self.files.read(b.input_file_id), b.endpoint, self.resolve_model,
                             self.limits.max_requests)
        if checked.errors:
            self.store.fail_validation(b.id, checked.errors)
            return
        self.store.start(b.id, checked.lines, checked.model)
        log.info("batch %s: %d lines in progress", b.id, len(checked.lines))

    def finalize(self, batch_id: str, final: str) -> None:
        """Write output and error files from the stored rows, then set the final status."""
        b = self.store.get_batch(batch_id)
        if b is None or b.status not in st.ACTIVE:
            return
        now = st.now_s()
        if final == st.COMPLETED and b.status == st.IN_PROGRESS:
            self.store.set_status(b.id, st.FINALIZING, only_from=(st.IN_PROGRESS,),
                                  finalizing_at=now)
            b.status, b.finalizing_at = st.FINALIZING, now
        expired = 0
        errors = self.store.results(b.id, is_error=True)
        if final == st.EXPIRED:
            expired_ids = list(self.store.unfinished(b.id))
            expired = len(expired_ids)
            errors = itertools.chain(errors, (json.dumps(expired_line(c)) for c in expired_ids))
        ttl = b.output_expires_after or BATCH_FILE_TTL
        files = [f for f in (
            self._write(b.id, "output", self.store.results(b.id, is_error=False), now, ttl),
            self._write(b.id, "error", errors, now, ttl)) if f is not None]
        ids = {f.filename: f.id for f in files}
        values = {f"{final}_at": now, "output_file_id": ids.get(f"{b.id}_output.jsonl"),
                  "error_file_id": ids.get(f"{b.id}_error.jsonl"), "failed": b.failed + expired}
        self.store.finish(b.id, final, (b.status,), files, **values)
        log.info("batch %s %s: %d completed, %d failed", b.id, final, b.completed,
                 b.failed + expired)

    def _write(self, batch_id: str, kind: str, lines, now: int, ttl: int) -> FileRow | None:
        file_id = derived_file_id(batch_id, kind)
        count = 0

        def counted():
            nonlocal count
            for line in lines:
                count += 1
                yield line

        size = self.files.save_lines(file_id, counted())
        if count == 0:
            self.files.delete(file_id)
            return None
        return FileRow(id=file_id, created=time.time(), bytes=size,
                       filename=f"{batch_id}_{kind}.jsonl", purpose=OUTPUT_PURPOSE,
                       expires_at=now + ttl, status="processed")

    def sweep_expired_files(self) -> None:
        for file_id in self.store.expired_files(st.now_s()):
            if self.store.delete_file(file_id):
                self.files.delete(file_id)

