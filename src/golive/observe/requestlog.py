"""Durable request log: one row per finished request, SQLite or PostgreSQL.

SQLAlchemy Core with portable column types only, so the same code serves the
zero-setup SQLite file and a PostgreSQL shared by several gateway replicas.
Aggregates that SQL dialects disagree on (percentiles, UTC dates) are computed
in Python.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import queue
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from golive.sqlstore import make_sql_engine

from golive.observe.record import RequestRecord

log = logging.getLogger(__name__)

DATA_DIR_ENV = "GOLIVE_DATA_DIR"
LOG_URL_ENV = "GOLIVE_LOG_URL"
_FIELDS = tuple(f.name for f in dataclasses.fields(RequestRecord))
_BATCH = 256  # rows per background transaction: one fsync for many requests

# Free text is Text, not String(n): PostgreSQL enforces VARCHAR lengths, and a
# long model path or client id must not cost us the row there.
metadata = sa.MetaData()
requests_table = sa.Table(
    "requests",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),  # may be a GGUF path
    sa.Column("tier_requested", sa.Text, nullable=False),
    sa.Column("tier_served", sa.Text, nullable=False, index=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("queued_s", sa.Float, nullable=False),
    sa.Column("ttft_s", sa.Float, nullable=True),
    sa.Column("total_s", sa.Float, nullable=False),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("accepted_prediction_tokens", sa.Integer, nullable=False),
    sa.Column("rejected_prediction_tokens", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("finish_reason", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("client_id", sa.Text, nullable=True),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("request_body", sa.Text, nullable=True),
    sa.Column("response_body", sa.Text, nullable=True),
    sa.Column("extra", sa.JSON, nullable=False),
)
# The table must mirror the record: fail at import, not on the first write.
if tuple(requests_table.c.keys()) != _FIELDS:
    raise RuntimeError("requests table is out of sync with RequestRecord's fields")


def data_dir() -> Path:
    """golive's data directory ($GOLIVE_DATA_DIR or ~/.local/share/golive), created."""
    path = Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".local" / "share" / "golive")
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_url() -> str:
    """$GOLIVE_LOG_URL (e.g. a PostgreSQL URL), else requests.db in the data dir."""
    return os.environ.get(LOG_URL_ENV) or f"sqlite:///{data_dir() / 'requests.db'}"


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default method).

    Position (n-1)*q in the sorted values; None for no values.
    """
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


class RequestLog:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = _make_engine(self.url)
        metadata.create_all(self.engine)
        self._queue: queue.Queue[RequestRecord | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self.failed_writes = 0  # rows the background writer could not store

    # -- writing ---------------------------------------------------------

    def write(self, record: RequestRecord) -> None:
        """Insert one record now (blocking; use write_async from event loops)."""
        with self.engine.begin() as conn:
            conn.execute(requests_table.insert(), [_row(record)])

    def write_async(self, record: RequestRecord) -> None:
        """Queue a record for the background writer thread; never blocks."""
        self._ensure_writer()
        self._queue.put(record)

    def flush(self) -> None:
        """Block until every queued record has been written (or failed)."""
        if self._writer is not None:
            self._queue.join()

    def close(self) -> None:
        """Drain the queue, stop the writer and release connections."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()
            atexit.unregister(self.close)
        self.engine.dispose()

    def __enter__(self) -> RequestLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writer_lock:
            if self._writer is None:
                # One thread: SQLite allows one writer anyway, and batching
                # many rows per transaction is what makes logging cheap.
                self._writer = threading.Thread(target=self._drain, name="golive-requestlog",
                                                daemon=True)
                self._writer.start()
                atexit.register(self.close)  # don't lose queued rows at exit

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            batch: list[RequestRecord] = []
            stop = item is None
            if item is not None:
                batch.append(item)
            while not stop and len(batch) < _BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            try:
                if batch:
                    self._store(batch)
            finally:
                for _ in range(len(batch) + (1 if stop else 0)):
                    self._queue.task_done()
            if stop:
                return

    def _store(self, batch: list[RequestRecord]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(requests_table.insert(), [_row(r) for r in batch])
            return
        except Exception:
            log.warning("request log batch insert failed; retrying row by row", exc_info=True)
        # One bad row (e.g. a duplicate id) must not cost the rest of the batch.
        for record in batch:
            try:
                self.write(record)
            except Exception:
                self.failed_writes += 1
                log.exception("request log: could not store request %s", record.id)

    # -- reading ---------------------------------------------------------

    def query(
        self,
        since: float | None = None,
        until: float | None = None,
        tier: str | None = None,
        model: str | None = None,
        endpoint: str | None = None,
        client_id: str | None = None,
        status: int | None = None,
        limit: int | None = 100,
    ) -> list[RequestRecord]:
        """Matching records, newest first. `tier` filters tier_served; until is exclusive."""
        where = _where(since, until, tier, model, endpoint, client_id, status)
        stmt = (sa.select(requests_table).where(*where)
                .order_by(requests_table.c.created.desc(), requests_table.c.id.desc()))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [_record(row._mapping) for row in conn.execute(stmt)]

    def summary(
        self,
        since: float | None = None,
        until: float | None = None,
        tier: str | None = None,
        model: str | None = None,
        endpoint: str | None = None,
        client_id: str | None = None,
        status: int | None = None,
    ) -> dict[str, Any]:
        """Aggregates over matching records.

        Latency percentiles use successful requests only (status < 400): a
        refused 429 returns in microseconds and would flatter every tier.
        """
        c = requests_table.c
        cols = [c.created, c.tier_served, c.status, c.ttft_s, c.total_s, c.cost_usd,
                c.prompt_tokens, c.cached_tokens, c.completion_tokens,
                c.accepted_prediction_tokens, c.rejected_prediction_tokens]
        stmt = sa.select(*cols).where(*_where(since, until, tier, model, endpoint, client_id,
                                               status))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return summarize(row._mapping for row in rows)


def summarize(rows: Iterable[Any]) -> dict[str, Any]:
    """Summary of row mappings (or RequestRecord-like dicts); see RequestLog.summary."""
    token_keys = ("prompt_tokens", "cached_tokens", "completion_tokens",
                  "accepted_prediction_tokens", "rejected_prediction_tokens")
    tokens = dict.fromkeys(token_keys, 0)
    total_by_tier: dict[str, list[float]] = defaultdict(list)
    ttft_by_tier: dict[str, list[float]] = defaultdict(list)
    count_by_tier: dict[str, int] = defaultdict(int)
    cost_by_day: dict[str, float] = defaultdict(float)
    count = errors = 0
    cost = 0.0
    for r in rows:
        count += 1
        count_by_tier[r["tier_served"]] += 1
        for k in token_keys:
            tokens[k] += r[k]
        cost += r["cost_usd"]
        day = dt.datetime.fromtimestamp(r["created"], dt.UTC).date().isoformat()
        cost_by_day[day] += r["cost_usd"]
        if r["status"] >= 400:
            errors += 1
            continue
        total_by_tier[r["tier_served"]].append(r["total_s"])
        if r["ttft_s"] is not None:
            ttft_by_tier[r["tier_served"]].append(r["ttft_s"])
    latency = {
        t: {
            "count": count_by_tier[t],
            "ok": len(total_by_tier[t]),
            "total_p50": percentile(total_by_tier[t], 0.5),
            "total_p95": percentile(total_by_tier[t], 0.95),
            "ttft_p50": percentile(ttft_by_tier[t], 0.5),
            "ttft_p95": percentile(ttft_by_tier[t], 0.95),
        }
        for t in sorted(count_by_tier)
    }
    prompt = tokens["prompt_tokens"]
    return {
        "count": count,
        "errors": errors,
        "cost_usd": cost,
        "cost_per_day": dict(sorted(cost_by_day.items())),
        "cache_hit_rate": tokens["cached_tokens"] / prompt if prompt else None,
        "tokens": tokens,
        "latency": latency,
    }


def _where(since: float | None, until: float | None, tier: str | None, model: str | None,
           endpoint: str | None, client_id: str | None, status: int | None) -> list[Any]:
    c = requests_table.c
    conds: list[Any] = []
    if since is not None:
        conds.append(c.created >= since)
    if until is not None:
        conds.append(c.created < until)
    for col, value in ((c.tier_served, tier), (c.model, model), (c.endpoint, endpoint),
                       (c.client_id, client_id), (c.status, status)):
        if value is not None:
            conds.append(col == value)
    return conds


def _row(record: RequestRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _FIELDS}


def _record(row: Any) -> RequestRecord:
    values = {name: row[name] for name in _FIELDS}
    values["extra"] = values["extra"] or {}
    values["stream"] = bool(values["stream"])
    return RequestRecord(**values)


def _make_engine(url: str) -> sa.Engine:
    # extra may hold anything a handler put there; a non-JSON value must not
    # cost us the whole row, so it is stored as its str().
    return make_sql_engine(url, "NORMAL", 5000,
                           json_serializer=lambda o: json.dumps(o, default=str))
