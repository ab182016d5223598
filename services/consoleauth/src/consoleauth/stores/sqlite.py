"""sqlite token store: a file in state_dir that survives restarts.

Reads are served from an in-memory copy (a check_token must not wait on disk). Writes go
through one writer greenlet: it takes every write queued since its last turn and commits
them as one transaction in gevent's threadpool (one thread hand-off and one fsync per
batch, not per call), then applies them to the in-memory copy, so a token is readable
exactly when it is on disk. Only one consoleauth process may use a file (clusters use
redis).

Why one writer and no lock: the store used to guard its connection with
``threading.Lock()``. consoleauth runs monkey-patched, so that was gevent's lock, and
acquiring it contended from the threadpool's native threads left some acquirers asleep for
ever: a burst of 50 authorizations lost 9 of them without a reply or a log line. With one
writer greenlet there is at most one thread in sqlite at any time and nothing to lock.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import fields

import gevent
import gevent.event
import structlog

from console_common.net.throttle import Throttle
from consoleauth.stores.base import StoreUnavailable, TokenRecord
from consoleauth.stores.memory import MemoryStore

log = structlog.get_logger("consoleauth")

_RECORD_COLUMNS = tuple(f.name for f in fields(TokenRecord))
_COLUMNS = ("token_hash", *_RECORD_COLUMNS)
_SQL_TYPES = {int: "INTEGER NOT NULL", float: "REAL NOT NULL", str: "TEXT NOT NULL",
              "int": "INTEGER NOT NULL", "float": "REAL NOT NULL", "str": "TEXT NOT NULL"}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tokens (token_hash TEXT PRIMARY KEY, "
    + ", ".join(f"{f.name} {_SQL_TYPES.get(f.type, 'TEXT')}" for f in fields(TokenRecord))
    + ");\n"
    "CREATE INDEX IF NOT EXISTS tokens_instance ON tokens (instance_uuid);\n"
    "CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at);\n"
)
_INSERT = (f"INSERT OR REPLACE INTO tokens ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_COLUMNS))})")
WRITE_TIMEOUT = 5.0  # a disk that stalls longer than this fails the write (Unavailable)
BATCH_MAX = 512  # writes per transaction


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """A file made by an older version lacks the newer optional columns (``password``):
    add them (NULL in the old rows) rather than fail every write."""
    have = {row[1] for row in db.execute("PRAGMA table_info(tokens)")}
    for name in _RECORD_COLUMNS:
        if name not in have:
            db.execute(f"ALTER TABLE tokens ADD COLUMN {name} TEXT")


class _Write:
    """One queued statement, what to do to the cache once it is committed, its result."""

    __slots__ = ("sql", "params", "apply", "result")

    def __init__(self, sql: str, params: tuple, apply: Callable[[], int]) -> None:
        self.sql, self.params, self.apply = sql, params, apply
        self.result = gevent.event.AsyncResult()


class SqliteStore:
    name = "sqlite"
    reads_wait = False  # reads come from memory: safe to answer in the bus receive loop

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;" + _SCHEMA)
            _add_missing_columns(self._db)
            os.chmod(path, 0o600)
            now = time.time()
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM tokens WHERE expires_at > ?", (now,)).fetchall()
            self._db.execute("DELETE FROM tokens WHERE expires_at <= ?", (now,))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open sqlite store {path}: {exc}") from exc
        self._cache = MemoryStore()
        for row in rows:
            self._cache.add(row[0], TokenRecord(*row[1:]))
        self._queue: list[_Write] = []
        self._throttle = Throttle(10.0)
        self._wake = gevent.event.Event()
        self._closing = False
        self._writer = gevent.spawn(self._write_loop)

    # -- the writer ------------------------------------------------------------------------

    def _write(self, sql: str, params: tuple, apply: Callable[[], int]) -> int:
        if self._closing:
            raise StoreUnavailable(f"sqlite store {self.path}: closing")
        write = _Write(sql, params, apply)
        self._queue.append(write)
        self._wake.set()
        try:
            return write.result.get(timeout=WRITE_TIMEOUT)
        except gevent.Timeout:
            raise StoreUnavailable(
                f"sqlite store {self.path}: write not done in {WRITE_TIMEOUT:g}s") from None

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
                self._commit(batch)
            if self._closing:
                return

    def _commit(self, batch: list[_Write]) -> None:
        def run() -> list[int]:
            db = self._db
            db.execute("BEGIN")
            try:
                counts = [db.execute(w.sql, w.params).rowcount for w in batch]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return counts

        try:
            counts = gevent.get_hub().threadpool.apply(run)
        except Exception as exc:  # sqlite's errors, or anything else: the writer goes on
            held = self._throttle.allow(type(exc).__name__)
            if held is not None:
                log.warning("store.write_failed", store=self.name, path=self.path,
                            writes=len(batch), error=f"{type(exc).__name__}: {exc}",
                            suppressed=held)
            failure = StoreUnavailable(f"sqlite store {self.path}: {exc}")
            for w in batch:
                w.result.set_exception(failure)
            return
        for w, count in zip(batch, counts, strict=True):
            applied = w.apply()  # the cache follows the file, in commit order
            w.result.set(max(count, applied))

    # -- the store interface ---------------------------------------------------------------

    def add(self, token_hash: str, record: TokenRecord) -> None:
        params = (token_hash, *(getattr(record, c) for c in _RECORD_COLUMNS))
        self._write(_INSERT, params, lambda: self._cache.add(token_hash, record) or 0)

    def get(self, token_hash: str, now: float) -> TokenRecord | None:
        return self._cache.get(token_hash, now)  # drops an expired one from memory; the purge
        # removes it from the file

    def get_many(self, token_hashes: list[str], now: float) -> list[TokenRecord | None]:
        return [self.get(h, now) for h in token_hashes]

    lookup = get_many  # ready at once: never a result to wait on

    def delete(self, token_hash: str) -> None:
        self._write("DELETE FROM tokens WHERE token_hash = ?", (token_hash,),
                    lambda: self._cache.delete(token_hash) or 0)

    def delete_instance(self, instance_uuid: str) -> int:
        return self._write("DELETE FROM tokens WHERE instance_uuid = ?", (instance_uuid,),
                           lambda: self._cache.delete_instance(instance_uuid))

    def purge(self, now: float) -> int:
        return self._write("DELETE FROM tokens WHERE expires_at <= ?", (now,),
                           lambda: self._cache.purge(now))

    def count(self) -> int:
        return self._cache.count()

    def close(self) -> None:
        """Finish the queued writes (bounded), then close the file."""
        self._closing = True
        self._wake.set()
        self._writer.join(timeout=WRITE_TIMEOUT)
        self._writer.kill(block=True, timeout=1)
        self._db.close()
