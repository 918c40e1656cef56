"""SQLite under golive's data dir: the completion and grade cache, runs and their results.

One file (evals.db) so a run, its results and the cache that made it cheap to
repeat live together. WAL mode: `golive eval list` can read while a run writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from golive.observe.requestlog import data_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT NULL,
                                        created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS grades (key TEXT PRIMARY KEY, value TEXT NOT NULL,
                                   created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, eval_file TEXT NOT NULL, created REAL NOT NULL,
    finished REAL, status TEXT NOT NULL, config TEXT NOT NULL, summary TEXT);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL, variant TEXT NOT NULL, case_id TEXT NOT NULL, repeat INTEGER NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (run_id, variant, case_id, repeat));
"""


def cache_key(obj: Any) -> str:
    """A stable hash of a JSON-able description (sorted keys, so dict order never matters)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def default_db_path() -> Path:
    return data_dir() / "evals.db"


class EvalStore:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The runner is one event loop; a lock covers graders writing from threads.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EvalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cache -------------------------------------------------------------

    def get_cached(self, table: str, key: str) -> dict[str, Any] | None:
        assert table in ("completions", "grades")
        with self._lock:
            row = self._db.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put_cached(self, table: str, key: str, value: dict[str, Any]) -> None:
        assert table in ("completions", "grades")
        with self._lock:
            self._db.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)",
                             (key, json.dumps(value, ensure_ascii=False), time.time()))

    def clear_cache(self) -> int:
        with self._lock:
            n = sum(self._db.execute(f"DELETE FROM {t}").rowcount
                    for t in ("completions", "grades"))
        return n

    # -- runs --------------------------------------------------------------

    def new_run(self, name: str, eval_file: str, config: dict[str, Any]) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        with self._lock:
            self._db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, NULL, 'running', ?, NULL)",
                             (run_id, name, eval_file, time.time(), json.dumps(config)))
        return run_id

    def finish_run(self, run_id: str, summary: dict[str, Any], status: str = "completed") -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET finished = ?, status = ?, summary = ? WHERE id = ?",
                             (time.time(), status, json.dumps(summary), run_id))

    def set_status(self, run_id: str, status: str) -> None:
        with self._lock:
            self._db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT id, name, eval_file, created, finished, status, "
                                   "config, summary FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def find_run(self, ref: str) -> dict[str, Any] | None:
        """A run by id, unique id prefix, or "latest"."""
        with self._lock:
            if ref == "latest":
                rows = self._db.execute("SELECT id FROM runs ORDER BY created DESC LIMIT 1"
                                        ).fetchall()
            else:
                rows = self._db.execute("SELECT id FROM runs WHERE id LIKE ? ORDER BY created",
                                        (ref.replace("%", "") + "%",)).fetchall()
        if len(rows) == 1:
            return self.get_run(rows[0][0])
        exact = [r for r in rows if r[0] == ref]
        return self.get_run(exact[0][0]) if exact else None

    def list_runs(self, limit: int = 50, name: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT id, name, eval_file, created, finished, status, config, summary FROM runs"
               + (" WHERE name = ?" if name else "") + " ORDER BY created DESC LIMIT ?")
        args: tuple[Any, ...] = (name, limit) if name else (limit,)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_run_row(r) for r in rows]

    def save_result(self, run_id: str, result: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
                             (run_id, result["variant"], result["case_id"], result["repeat"],
                              json.dumps(result, ensure_ascii=False)))

    def results(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM results WHERE run_id = ? "
                                    "ORDER BY rowid", (run_id,)).fetchall()
        return [json.loads(r[0]) for r in rows]


def _run_row(row: tuple) -> dict[str, Any]:
    return {"id": row[0], "name": row[1], "eval_file": row[2], "created": row[3],
            "finished": row[4], "status": row[5], "config": json.loads(row[6]),
            "summary": json.loads(row[7]) if row[7] else None}
