"""The FastAPI application: wiring of the model registry, observer and routes."""

from __future__ import annotations

import dataclasses
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response

from golive.api import errors
from golive.api.batches import router as batches_router
from golive.api.dashboard import router as dashboard_router
from golive.api.files import router as files_router
from golive.api.routes import router
from golive.api.state import AppState, ServerSettings
from golive.api.tier_policy import TierPolicy
from golive.backends.base import Backend
from golive.backends.registry import Registry
from golive.batch.execute import BatchTierMiddleware
from golive.batch.service import BatchService
from golive.observe.cost import CACHED_INPUT_RATIO, ModelPrice, PriceTable
from golive.observe.metrics import Metrics
from golive.observe.observer import Observer
from golive.observe.requestlog import RequestLog

__all__ = ["ServerSettings", "create_app"]


def create_app(models: Registry | Backend, settings: ServerSettings | None = None) -> FastAPI:
    """The server for `models` (one backend is a registry of one)."""
    settings = settings or ServerSettings()
    registry = models if isinstance(models, Registry) else Registry([models])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        registry.start()
        await state.batch.start()
        try:
            yield
        finally:
            await state.batch.stop()  # before the engines: lines in flight stay pending
            state.observer.close()
            registry.close()

    app = FastAPI(title="golive", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    metrics = Metrics({b.info.id: b.stats for b in registry})
    tier_policy = TierPolicy(settings.priority_tokens_per_min)
    observer = Observer(
        metrics,
        _prices(settings.prices, registry),
        RequestLog(settings.log_db) if settings.request_log else None,
        settings.log_bodies,
        tier_policy,
    )

    def resolve_model(name: str) -> str | None:
        b = registry.get(name)
        return b.info.id if b is not None else None

    slots = sum(st.slots for b in registry if (st := b.stats()) is not None) or 8
    batch = BatchService(app, settings.batch, resolve_model, slots)
    state = AppState(models=registry, settings=settings, metrics=metrics, observer=observer,
                     tier_policy=tier_policy, batch=batch, started=time.time())
    app.state.golive = state
    app.include_router(router)
    app.add_middleware(BatchTierMiddleware, secret=batch.secret)
    app.include_router(files_router)
    app.include_router(batches_router)
    app.include_router(dashboard_router)

    @app.get("/metrics")
    async def metrics_page() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app


def _prices(path: str | None, registry: Registry) -> PriceTable:
    """The price table, with the prices a registry entry states for its own model."""
    table = PriceTable.load(path)
    if not registry.prices:
        return table
    extra = {mid: ModelPrice(p["input"], p.get("cached_input", p["input"] * CACHED_INPUT_RATIO), p["output"])
             for mid, p in registry.prices.items()}
    return dataclasses.replace(table, models={**table.models, **extra})
