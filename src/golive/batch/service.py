"""The batch API's parts in one server: store, file bytes, runner, in-process executor.

The app creates one BatchService, its lifespan starts and stops it, and the
files and batches routers reach the store through it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from golive.batch.execute import AppExecutor, new_secret
from golive.batch.files import FileBytes
from golive.batch.runner import BatchRunner, Limits
from golive.batch.store import BatchStore

# How many lines the runner keeps in flight beyond the engine's slots: a queued
# line takes a slot as soon as one frees, instead of after a round trip.
HEADROOM = 2


@dataclass
class BatchSettings:
    enabled: bool = True  # False: no store (an in-process app for `golive batch run`)
    db: str | None = None  # store URL; None = SQLite in the data directory
    runner: bool = True  # run batches here (one gateway per shared store should)
    concurrency: int = 0  # lines in flight; 0 = the engine's slots + HEADROOM
    window_s: float = 24 * 3600  # what completion_window "24h" means, in seconds
    max_upload_bytes: int = 512 * 1024 * 1024  # OpenAI's per-file limit
    max_requests: int = 50_000
    max_file_bytes: int = 200 * 1024 * 1024


class BatchService:
    """`resolve_model` maps a line's `model` to the served id (None: unknown);
    `slots` is how many sequences the served models decode at once."""

    def __init__(self, app: Any, settings: BatchSettings,
                 resolve_model: Callable[[str], str | None], slots: int = 8) -> None:
        self.app = app
        self.settings = settings
        self.resolve_model = resolve_model
        self.slots = slots
        self.secret = new_secret()  # marks the runner's own requests (batch tier)
        self.store: BatchStore | None = None
        self.files: FileBytes | None = None
        self.runner: BatchRunner | None = None
        self._executor: AppExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def concurrency(self) -> int:
        if self.settings.concurrency > 0:
            return self.settings.concurrency
        return self.slots + HEADROOM

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self.settings.enabled:
            return
        self.store = await asyncio.to_thread(BatchStore, self.settings.db)
        self.files = FileBytes()
        if self.settings.runner:
            self._executor = AppExecutor(self.app, self.secret)
            self.runner = BatchRunner(
                self.store, self.files, self._executor, self.resolve_model, self.concurrency(),
                Limits(self.settings.max_requests, self.settings.max_file_bytes))
            self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None
        if self._executor is not None:
            await self._executor.aclose()
            self._executor = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def wake(self) -> None:
        """Tell the runner there is work; callable from any thread (sync routes run in one)."""
        runner, loop = self.runner, self._loop
        if runner is not None and loop is not None:
            loop.call_soon_threadsafe(runner.wake)
