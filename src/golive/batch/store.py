"""The durable batch store: files, batches and batch lines, SQLite or PostgreSQL.

One row per input line holds its status and, once done, its finished output
line. A line is marked done in the same transaction that stores its result
and adds it to the batch's counters, so a crash (kill -9, power loss) either
keeps a result whole or leaves the line pending to be run again: never half,
never twice. Output and error files are written only from these rows.

SQLAlchemy Core with portable types only, as the request log does, so the
zero-setup SQLite file and a PostgreSQL shared by several gateways run the
same code.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from golive.sqlstore import make_sql_engine

from golive.observe.requestlog import data_dir

BATCH_URL_ENV = "GOLIVE_BATCH_URL"

# Statuses, as OpenAI names them.
VALIDATING = "validating"
FAILED = "failed"
IN_PROGRESS = "in_progress"
FINALIZING = "finalizing"
COMPLETED = "completed"
EXPIRED = "expired"
CANCELLING = "cancelling"
CANCELLED = "cancelled"
ACTIVE = (VALIDATING, IN_PROGRESS, FINALIZING, CANCELLING)  # the runner owns these
FINAL = (FAILED, COMPLETED, EXPIRED, CANCELLED)

# Line statuses.
PENDING = "pending"
DONE = "done"

metadata = sa.MetaData()

files_table = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created", sa.Float, nullable=False, index=True),  # unix time, for ordering
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False, index=True),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
)

batches_table = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created", sa.Float, nullable=False, index=True),
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("input_file_id", sa.String(64), nullable=False),
    sa.Column("completion_window", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("output_file_id", sa.String(64), nullable=True),
    sa.Column("error_file_id", sa.String(64), nullable=True),
    sa.Column("errors", sa.JSON, nullable=True),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("model", sa.Text, nullable=True),
    sa.Column("output_expires_after", sa.Integer, nullable=True),  # seconds
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("in_progress_at", sa.BigInteger, nullable=True),
    sa.Column("finalizing_at", sa.BigInteger, nullable=True),
    sa.Column("completed_at", sa.BigInteger, nullable=True),
    sa.Column("failed_at", sa.BigInteger, nullable=True),
    sa.Column("expired_at", sa.BigInteger, nullable=True),
    sa.Column("cancelling_at", sa.BigInteger, nullable=True),
    sa.Column("cancelled_at", sa.BigInteger, nullable=True),
    sa.Column("total", sa.Integer, nullable=False, default=0),
    sa.Column("completed", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, default=0),
)

lines_table = sa.Table(
    "batch_lines",
    metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("line", sa.Integer, primary_key=True),  # 1-based line number in the input
    sa.Column("custom_id", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the request body, JSON
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("is_error", sa.Boolean, nullable=False, default=False),
    sa.Column("result", sa.Text, nullable=True),  # the finished output line, JSON
    sa.Column("finished", sa.Float, nullable=True),
    # custom_ids are unique per batch: the store itself refuses a second result line.
    sa.UniqueConstraint("batch_id", "custom_id", name="uq_batch_custom_id"),
    sa.Index("ix_batch_lines_pending", "batch_id", "status", "line"),
)


def default_url() -> str:
    """$GOLIVE_BATCH_URL (e.g. a PostgreSQL URL), else batches.db in the data dir."""
    return os.environ.get(BATCH_URL_ENV) or f"sqlite:///{data_dir() / 'batches.db'}"


@dataclass(slots=True)
class Line:
    """One input line, validated, ready to run."""

    line: int
    custom_id: str
    body: dict[str, Any]


@dataclass(slots=True)
class LineResult:
    """What running one line produced: its output line and the tokens it used."""

    output: dict[str, Any]  # the whole output/error file line
    is_error: bool
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class FileRow:
    id: str
    created: float
    bytes: int
    filename: str
    purpose: str
    expires_at: int | None
    status: str


@dataclass(slots=True)
class BatchRow:
    id: str
    created: float
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    created_at: int
    expires_at: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict] | None = None
    metadata: dict[str, str] | None = None
    model: str | None = None
    output_expires_after: int | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0


_FILE_FIELDS = tuple(c.name for c in files_table.columns)
_BATCH_FIELDS = tuple(c.name for c in batches_table.columns)


def now_s() -> int:
    return int(time.time())


class BatchStore:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = _make_engine(self.url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # ---- files -------------------------------------------------------------

    def add_file(self, row: FileRow) -> None:
        with self.engine.begin() as conn:
            conn.execute(files_table.insert(), [_asdict(row, _FILE_FIELDS)])

    def get_file(self, file_id: str) -> FileRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(files_table).where(files_table.c.id == file_id)).first()
        return FileRow(**r._mapping) if r else None

    def list_files(self, purpose: str | None, limit: int, order: str,
                   after: FileRow | None) -> tuple[list[FileRow], bool]:
        c = files_table.c
        stmt = sa.select(files_table)
        if purpose:
            stmt = stmt.where(c.purpose == purpose)
        desc = order == "desc"
        if after is not None:
            key = sa.tuple_(c.created, c.id)
            bound = sa.tuple_(sa.literal(after.created), sa.literal(after.id))
            stmt = stmt.where(key < bound if desc else key > bound)
        ordering = (c.created.desc(), c.id.desc()) if desc else (c.created.asc(), c.id.asc())
        stmt = stmt.order_by(*ordering).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = [FileRow(**r._mapping) for r in conn.execute(stmt)]
        return rows[:limit], len(rows) > limit

    def delete_file(self, file_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(files_table.delete().where(files_table.c.id == file_id)).rowcount > 0

    def expired_files(self, now: int) -> list[str]:
        c = files_table.c
        with self.engine.connect() as conn:
            return [r.id for r in conn.execute(
                sa.select(c.id).where(c.expires_at.is_not(None), c.expires_at <= now))]

    # ---- batches -----------------------------------------------------------

    def add_batch(self, row: BatchRow) -> None:
        with self.engine.begin() as conn:
            conn.execute(batches_table.insert(), [_asdict(row, _BATCH_FIELDS)])

    def get_batch(self, batch_id: str) -> BatchRow | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(batches_table).where(batches_table.c.id == batch_id)).first()
        return _batch(r._mapping) if r else None

    def list_batches(self, limit: int, after: BatchRow | None) -> tuple[list[BatchRow], bool]:
        """Newest first; `after` is the last batch of the previous page."""
        c = batches_table.c
        stmt = sa.select(batches_table)
        if after is not None:
            stmt = stmt.where(sa.tuple_(c.created, c.id)
                              < sa.tuple_(sa.literal(after.created), sa.literal(after.id)))
        stmt = stmt.order_by(c.created.desc(), c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = [_batch(r._mapping) for r in conn.execute(stmt)]
        return rows[:limit], len(rows) > limit

    def active_batches(self) -> list[BatchRow]:
        """Batches the runner still owes work, oldest first (FIFO across batches)."""
        c = batches_table.c
        stmt = (sa.select(batches_table).where(c.status.in_(ACTIVE))
                .order_by(c.created.asc(), c.id.asc()))
        with self.engine.connect() as conn:
            return [_batch(r._mapping) for r in conn.execute(stmt)]

    def set_status(self, batch_id: str, status: str, *, only_from: tuple[str, ...] | None = None,
                   **values: Any) -> bool:
        """Move a batch to `status` (with e.g. its timestamp); False if it was not in only_from."""
        c = batches_table.c
        stmt = batches_table.update().where(c.id == batch_id).values(status=status, **values)
        if only_from is not None:
            stmt = stmt.where(c.status.in_(only_from))
        with self.engine.begin() as conn:
            return conn.execute(stmt).rowcount > 0

    def fail_validation(self, batch_id: str, errors: list[dict]) -> None:
        self.set_status(batch_id, FAILED, only_from=(VALIDATING,), errors=errors,
                        failed_at=now_s())

    def start(self, batch_id: str, lines: list[Line], model: str | None) -> bool:
        """Store every line and move validating -> in_progress, in one transaction.

        A crash before the commit leaves the batch validating with no lines, so
        validation simply runs again.
        """
        c = batches_table.c
        with self.engine.begin() as conn:
            moved = conn.execute(
                batches_table.update()
                .where(c.id == batch_id, c.status == VALIDATING)
                .values(status=IN_PROGRESS, in_progress_at=now_s(), model=model,
                        total=len(lines))
            ).rowcount
            if not moved:
                return False  # cancelled meanwhile
            for chunk in _chunks(lines, 1000):
                conn.execute(lines_table.insert(), [
                    {"batch_id": batch_id, "line": ln.line, "custom_id": ln.custom_id,
                     "body": json.dumps(ln.body), "status": PENDING, "is_error": False}
                    for ln in chunk])
        return True

    def pending_lines(self, batch_id: str, after_line: int, limit: int) -> list[Line]:
        c = lines_table.c
        stmt = (sa.select(c.line, c.custom_id, c.body)
                .where(c.batch_id == batch_id, c.status == PENDING, c.line > after_line)
                .order_by(c.line).limit(limit))
        with self.engine.connect() as conn:
            return [Line(r.line, r.custom_id, json.loads(r.body)) for r in conn.execute(stmt)]

    def complete_line(self, batch_id: str, line: int, result: LineResult) -> bool:
        """Store one line's result and count it, atomically. False if it was already done."""
        lc, bc = lines_table.c, batches_table.c
        with self.engine.begin() as conn:
            stored = conn.execute(
                lines_table.update()
                .where(lc.batch_id == batch_id, lc.line == line, lc.status == PENDING)
                .values(status=DONE, is_error=result.is_error,
                        result=json.dumps(result.output), finished=time.time())
            ).rowcount
            if not stored:
                return False
            conn.execute(
                batches_table.update().where(bc.id == batch_id).values(
                    completed=bc.completed + (0 if result.is_error else 1),
                    failed=bc.failed + (1 if result.is_error else 0),
                    input_tokens=bc.input_tokens + result.input_tokens,
                    cached_tokens=bc.cached_tokens + result.cached_tokens,
                    output_tokens=bc.output_tokens + result.output_tokens,
                ))
        return True

    def count_pending(self, batch_id: str) -> int:
        c = lines_table.c
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(lines_table)
                                    .where(c.batch_id == batch_id, c.status == PENDING))
                       .scalar_one())

    def results(self, batch_id: str, is_error: bool) -> Iterator[str]:
        """Finished output lines (JSON text) of one kind, in input order."""
        c = lines_table.c
        stmt = (sa.select(c.result)
                .where(c.batch_id == batch_id, c.status == DONE, c.is_error == is_error)
                .order_by(c.line))
        with self.engine.connect() as conn:
            for r in conn.execution_options(yield_per=1000).execute(stmt):
                yield r.result

    def unfinished(self, batch_id: str) -> Iterator[str]:
        """custom_ids of lines that never ran, in input order."""
        c = lines_table.c
        stmt = (sa.select(c.custom_id).where(c.batch_id == batch_id, c.status == PENDING)
                .order_by(c.line))
        with self.engine.connect() as conn:
            for r in conn.execution_options(yield_per=1000).execute(stmt):
                yield r.custom_id

    def finish(self, batch_id: str, status: str, from_statuses: tuple[str, ...],
               files: list[FileRow], **values: Any) -> bool:
        """Register the output/error files and move the batch to its final status, atomically.

        The file ids are derived from the batch id, so a finish retried after a
        crash finds its own rows and writes nothing twice.
        """
        c = batches_table.c
        with self.engine.begin() as conn:
            for f in files:
                if conn.execute(sa.select(files_table.c.id)
                                .where(files_table.c.id == f.id)).first() is None:
                    conn.execute(files_table.insert(), [_asdict(f, _FILE_FIELDS)])
            return conn.execute(
                batches_table.update()
                .where(c.id == batch_id, c.status.in_(from_statuses))
                .values(status=status, **values)
            ).rowcount > 0


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _asdict(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(row, name) for name in fields}


def _batch(m: Any) -> BatchRow:
    return BatchRow(**{name: m[name] for name in _BATCH_FIELDS})


def _make_engine(url: str) -> sa.Engine:
    # FULL, not the request log's NORMAL: a finished line must survive a power
    # cut too, and one fsync per line is small next to generating it.
    return make_sql_engine(url, "FULL", 10000)
