"""The FastAPI application: wiring of backend, observer and routes."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI
from fastapi.responses import Response

from golive.api import errors
from golive.api.batches import router as batches_router
from golive.api.dashboard import router as dashboard_router
from golive.api.files import router as files_router
from golive.api.routes import router
from golive.api.tier_policy import TierPolicy
from golive.batch.execute import BatchTierMiddleware
from golive.batch.service import BatchService, BatchSettings
from golive.observe.cost import PriceTable
from golive.observe.metrics import Metrics
from golive.observe.observer import Observer
from golive.observe.requestlog import RequestLog


@dataclass
class ServerSettings:
    flex_queue_timeout: float = 30.0  # seconds a flex request may wait for capacity
    priority_tokens_per_min: float | None = None  # ramp protection; None = off
    log_db: str | None = None  # request-log URL; None = SQLite in the data directory
    request_log: bool = True
    log_bodies: bool = False
    prices: str | None = None  # price table path; None = built-in
    batch: BatchSettings = field(default_factory=BatchSettings)  # files and batches API


def create_app(backend, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.start()
        await app.state.batch.start()
        try:
            yield
        finally:
            await app.state.batch.stop()  # before the engine: lines in flight stay pending
            app.state.observer.close()
            backend.close()

    app = FastAPI(title="golive", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    app.state.backend = backend
    app.state.settings = settings
    app.state.started = time.time()
    app.state.metrics = Metrics(backend.engine)
    app.state.tier_policy = TierPolicy(settings.priority_tokens_per_min)
    app.state.observer = Observer(
        app.state.metrics,
        PriceTable.load(settings.prices),
        RequestLog(settings.log_db) if settings.request_log else None,
        settings.log_bodies,
        app.state.tier_policy,
    )
    app.include_router(router)
    app.state.batch = BatchService(app, settings.batch)
    app.add_middleware(BatchTierMiddleware, secret=app.state.batch.secret)
    app.include_router(files_router)
    app.include_router(batches_router)
    app.include_router(dashboard_router)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(app.state.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
