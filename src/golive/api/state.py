"""The server's state, typed: one dataclass that routes reach through a dependency."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from golive.api.tier_policy import TierPolicy
from golive.backends.registry import Registry
from golive.batch.service import BatchService, BatchSettings
from golive.observe.metrics import Metrics
from golive.observe.observer import Observer


@dataclass
class ServerSettings:
    flex_queue_timeout: float = 30.0  # seconds a flex request may wait for capacity
    priority_tokens_per_min: float | None = None  # ramp protection; None = off
    log_db: str | None = None  # request-log URL; None = SQLite in the data directory
    request_log: bool = True
    log_bodies: bool = False
    prices: str | None = None  # price table path; None = built-in
    batch: BatchSettings = field(default_factory=BatchSettings)  # files and batches API


@dataclass
class AppState:
    models: Registry
    settings: ServerSettings
    metrics: Metrics
    observer: Observer
    tier_policy: TierPolicy
    batch: BatchService
    started: float


def app_state(request: Request) -> AppState:
    """FastAPI dependency: `state: AppState = Depends(app_state)`."""
    return request.app.state.golive
