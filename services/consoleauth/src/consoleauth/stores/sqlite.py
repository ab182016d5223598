"""sqlite token store: a file in state_dir that survives restarts.

Reads are served from an in-memory copy (a check_token must not wait on disk); every write
goes to the file first, in gevent's threadpool so the hub never blocks on sqlite. Only one
consoleauth process may use a file (clusters use redis).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import gevent

from consoleauth.stores.base import StoreUnavailable, TokenRecord
from consoleauth.stores.memory import MemoryStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    instance_uuid TEXT NOT NULL,
    console_type TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    internal_access_path TEXT,
    compute_url TEXT,
    access_url TEXT,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tokens_instance ON tokens (instance_uuid);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at);
"""
_COLUMNS = ("token_hash", "instance_uuid", "console_type", "host", "port",
            "internal_access_path", "compute_url", "access_url", "expires_at")


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self._lock = threading.Lock()  # one sqlite connection, used from the threadpool
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;" + _SCHEMA)
            os.chmod(path, 0o600)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open sqlite store {path}: {exc}") from exc
        self._cache = MemoryStore()
        now = time.time()
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM tokens WHERE expires_at > ?",
                                (now,)).fetchall()
        for row in rows:
            values = dict(zip(_COLUMNS, row, strict=True))
            token_hash = values.pop("token_hash")
            self._cache.add(token_hash, TokenRecord(**values))
        self._db.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))

    def _write(self, sql: str, params: tuple) -> int:
        def run() -> int:
            with self._lock:
                return self._db.execute(sql, params).rowcount

        try:
            return gevent.get_hub().threadpool.apply(run)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

    def add(self, token_hash: str, record: TokenRecord) -> None:
        self._write(
            f"INSERT OR REPLACE INTO tokens ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 9)})",
            (token_hash, record.instance_uuid, record.console_type, record.host, record.port,
             record.internal_access_path, record.compute_url, record.access_url, record.expires_at))
        self._cache.add(token_hash, record)

    def get(self, token_hash: str, now: float) -> TokenRecord | None:
        return self._cache.get(token_hash, now)

    def delete(self, token_hash: str) -> None:
        self._write("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))
        self._cache.delete(token_hash)

    def delete_instance(self, instance_uuid: str) -> int:
        self._write("DELETE FROM tokens WHERE instance_uuid = ?", (instance_uuid,))
        return self._cache.delete_instance(instance_uuid)

    def purge(self, now: float) -> int:
        self._write("DELETE FROM tokens WHERE expires_at <= ?", (now,))
        return self._cache.purge(now)

    def count(self) -> int:
        return self._cache.count()

    def close(self) -> None:
        with self._lock:
            self._db.close()
