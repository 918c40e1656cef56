"""One way to open golive's SQL stores: SQLite by default, any SQLAlchemy URL (PostgreSQL) too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool


def make_sql_engine(url: str, synchronous: str, busy_timeout_ms: int, **kwargs: Any) -> sa.Engine:
    """An engine for `url`. For SQLite: the parent folder is created, WAL so readers
    never block the writer, and `synchronous` (NORMAL survives app crashes, FULL
    also power cuts). In-memory SQLite shares one connection across threads."""
    u = sa.make_url(url)
    is_sqlite = u.get_backend_name() == "sqlite"
    if is_sqlite and u.database not in (None, "", ":memory:"):
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif is_sqlite:
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = sa.create_engine(url, **kwargs)
    if is_sqlite:
        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _conn_record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.close()
    return engine
