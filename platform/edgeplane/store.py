"""The local store: one SQLite database (WAL) per site, for what must survive a restart.

It holds the append-only command audit log and small named states (e.g. a last-good config).
SQLite calls run on one dedicated thread, never on the event loop.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from edgeplane.dbthread import DatabaseThread

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    device TEXT NOT NULL,
    point TEXT NOT NULL,
    value TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    readback TEXT,
    reason TEXT NOT NULL DEFAULT ''
);
-- the audit log is append-only: the database itself refuses edits and deletions
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated REAL NOT NULL
);
"""


class LocalStore:
    """The site's SQLite database. ``await open()`` before use, ``await close()`` after."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / "edgeplane.db"
        self._thread = DatabaseThread(f"local store {str(self.path)!r}", thread_name="edgeplane-store")
        self._db: sqlite3.Connection | None = None

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        return await self._thread.run(func, *args)

    async def open(self) -> None:
        if self._thread.running:
            return
        self._thread.start()
        await self._call(self._open)

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    async def close(self) -> None:
        if not self._thread.running:
            return
        await self._call(self._close)
        self._thread.stop(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        # every caller runs on the database thread, which exists only while the store is open
        assert self._db is not None, "LocalStore used before open() or after close()"
        return self._db

    async def append_audit(self, record: dict[str, Any]) -> None:
        await self._call(self._append_audit, record)

    def _append_audit(self, r: dict[str, Any]) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT INTO audit (ts, device, point, value, source, status, message, readback, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r["ts"], r["device"], r["point"], json.dumps(r["value"]), r["source"], r["status"], r["message"],
             None if r.get("readback") is None else json.dumps(r["readback"]), r.get("reason", "")),
        )

    async def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` audit records, oldest first."""
        return await self._call(self._audit, limit)

    def _audit(self, limit: int) -> list[dict[str, Any]]:
        assert self._db is not None
        rows = self._db.execute(
            "SELECT id, ts, device, point, value, source, status, message, readback, reason "
            "FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        keys = ("id", "ts", "device", "point", "value", "source", "status", "message", "readback", "reason")
        out = []
        for row in reversed(rows):
            item = dict(zip(keys, row, strict=True))
            item["value"] = json.loads(item["value"])
            item["readback"] = None if item["readback"] is None else json.loads(item["readback"])
            out.append(item)
        return out

    async def put_state(self, key: str, value: Any) -> None:
        import time

        await self._call(lambda: self._connection().execute(
            "INSERT INTO state (key, value, updated) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated=excluded.updated",
            (key, json.dumps(value), time.time())))

    async def get_state(self, key: str, default: Any = None) -> Any:
        row = await self._call(lambda: self._connection().execute(
            "SELECT value FROM state WHERE key = ?", (key,)).fetchone())
        return default if row is None else json.loads(row[0])
