"""Redis token store, shared by several consoleauth replicas (a cluster).

Keys: ``console:token:<sha256>`` holds the record as JSON and expires with the token;
``console:instance:<uuid>`` is the set of an instance's token hashes (for revocation);
``console:expiry`` is a sorted set of live hashes by expiry, so counting live tokens is one
``ZCOUNT`` (no scan; ``ping`` stays under a millisecond with 100 000 tokens). Writes that
touch several keys run as Lua scripts, so each is atomic and the index stays consistent.
These scripts touch keys they do not declare: a standalone Redis (or a replica set), not
Redis Cluster.

One connection and one I/O greenlet serve every request (auto-pipelining): callers queue
their commands; the I/O greenlet sends everything queued as one pipeline, reads the
replies and hands each back. The lookups of a whole bus drain batch (check_token and
check_tokens alike) become one ``MGET``: one round trip per batch, no thread hand-off, no
connection pool to run out of. (The store used to take a pooled connection per request:
redis-py's pool stops at 100 and answered the 101st in flight with "Too many connections",
which callers saw as Unavailable under load with a healthy Redis.)

Every round trip is bounded by ``timeout``: a Redis that is down, slow or paused fails the
batch and everything queued behind it with StoreUnavailable (the proxies answer 503), the
connection is dropped, and the next batch connects again. consoleauth runs monkey-patched,
so the socket waits yield to the hub.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import astuple, fields
from typing import Any

import gevent
import gevent.event
import structlog

from console_common.logging import Throttle
from consoleauth.stores.base import Pending, StoreUnavailable, TokenRecord

try:
    import redis
    import redis.exceptions
except ImportError:  # pragma: no cover - optional dependency
    redis = None

log = structlog.get_logger("consoleauth")

_T, _I, _EXPIRY = "console:token:", "console:instance:", "console:expiry"
BATCH_MAX = 1024  # commands per pipeline
MAX_INFLIGHT = 2

# KEYS: token, instance set, expiry index. ARGV: record JSON, ttl ms, hash, expires_at.
_AUTHORIZE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return 1
"""
# KEYS: instance set, expiry index. ARGV: token key prefix. Returns tokens deleted.
_DELETE_INSTANCE = """
local hashes = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, h in ipairs(hashes) do
  n = n + redis.call('DEL', ARGV[1] .. h)
  redis.call('ZREM', KEYS[2], h)
end
redis.call('DEL', KEYS[1])
return n
"""
# KEYS: token, expiry index. ARGV: hash, instance key prefix. A record is a JSON array of
# TokenRecord's fields in order (older ones an object: both are read).
_FIELDS = tuple(f.name for f in fields(TokenRecord))
_DELETE_TOKEN = """
local raw = redis.call('GET', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not raw then return 0 end
redis.call('DEL', KEYS[1])
local rec = cjson.decode(raw)
redis.call('SREM', ARGV[2] .. (rec['instance_uuid'] or rec[%d]), ARGV[1])
return 1
""" % (_FIELDS.index("instance_uuid") + 1)


def _encode_record(record: TokenRecord) -> str:
    # An array, not an object: about half the cost to read back, on every check.
    return json.dumps(astuple(record), separators=(",", ":"))


def _decode_record(raw: bytes) -> TokenRecord:
    value = json.loads(raw)
    return TokenRecord(*value) if type(value) is list else TokenRecord(**value)


class _Op:
    """Queued work for the connection: keys to look up, or one command; its result."""

    __slots__ = ("keys", "command", "parse", "result")

    def __init__(self, keys: list[str] | None = None, command: tuple | None = None,
                 parse: Callable[[Any], Any] | None = None) -> None:
        self.keys, self.command, self.parse = keys, command, parse
        self.result = Pending()


class _Batch:
    """Ops sent together: one MGET for all their lookups, then their commands in order."""

    __slots__ = ("reads", "writes", "commands", "conn", "deadline")

    def __init__(self, ops: list[_Op], conn: Any, deadline: float) -> None:
        self.reads = [op for op in ops if op.keys is not None]
        self.writes = [op for op in ops if op.command is not None]
        keys = [k for op in self.reads for k in op.keys]
        self.commands = ([("MGET", *keys)] if keys else []) + [op.command for op in self.writes]
        self.conn, self.deadline = conn, deadline

    def ops(self) -> list[_Op]:
        return self.reads + self.writes

    def settle(self, replies: list[Any]) -> None:
        if self.reads:
            values, replies = replies[0], replies[1:]
            at = 0
            for op in self.reads:
                _set(op, values[at:at + len(op.keys)])
                at += len(op.keys)
        for op, reply in zip(self.writes, replies, strict=True):
            if isinstance(reply, Exception):
                op.result.set_exception(StoreUnavailable(f"redis store: {reply}"))
            else:
                _set(op, reply)


def _set(op: _Op, value: Any) -> None:
    try:
        op.result.set(op.parse(value) if op.parse else value)
    except Exception as exc:  # noqa: BLE001 - a record we cannot read: that caller fails
        op.result.set_exception(StoreUnavailable(f"redis store: unreadable reply: {exc}"))


class RedisStore:
    name = "redis"
    reads_wait = True  # get/count wait for a round trip (lookup never waits)

    def __init__(self, url: str, timeout: float = 0.5) -> None:
        if redis is None:
            raise StoreUnavailable("token_store=redis needs the 'redis' package (pip install redis)")
        self.url = url
        self.timeout = timeout
        try:
            self._pool = redis.ConnectionPool.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout)
        except ValueError as exc:
            raise StoreUnavailable(f"redis store: bad redis_url: {exc}") from exc
        self._conn: Any = None
        self._queue: list[_Op] = []  # not sent yet
        self._inflight: deque[_Batch] = deque()  # sent, replies not read yet (in order)
        self._wake = gevent.event.Event()  # the sender: something was queued
        self._sent = gevent.event.Event()  # the reader: something is in flight
        self._closed = False
        self._down = False  # the last round trip failed (log the recovery once)
        self._throttle = Throttle(10.0)
        self._sender = gevent.spawn(self._send_loop)
        self._reader = gevent.spawn(self._read_loop)

    # -- the connection: one sender and one reader greenlet ---------------------------------
    # The sender writes whatever is queued as soon as the hub lets it, without waiting for
    # the replies of what went before (Redis answers in order on a connection); the reader
    # takes the replies batch by batch. A batch whose replies are not all read by its
    # deadline (sent + timeout) fails, with everything in flight or queued behind it.

    def _enqueue(self, op: _Op) -> Pending:
        if self._closed:
            raise StoreUnavailable("redis store: closed")
        self._queue.append(op)
        self._wake.set()
        return op.result

    def _wait(self, op: _Op) -> Any:
        # Bounded twice over: the reader fails a late batch, and a caller never waits longer
        # than a connect plus a round trip.
        try:
            return self._enqueue(op).get(timeout=2 * self.timeout + 0.1)
        except gevent.Timeout:
            raise StoreUnavailable(f"redis store: no answer in {2 * self.timeout:g}s") from None

    def _send_loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            while self._queue and not self._closed:
                if len(self._inflight) >= MAX_INFLIGHT:
                    break
                ops, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
                try:
                    with gevent.Timeout(self.timeout, _RoundTripTimeout):
                        conn = self._connection()
                        batch = _Batch(ops, conn, time.monotonic() + self.timeout)
                        conn.send_packed_command(conn.pack_commands(batch.commands),
                                                 check_health=False)
                except (_RoundTripTimeout, redis.exceptions.RedisError, OSError) as exc:
                    self._reset(_cause(exc, self.timeout), ops)
                    continue
                if conn is not self._conn:  # reset while we were sending: it failed
                    self._fail(ops, "connection reset")
                    continue
                self._inflight.append(batch)
                self._sent.set()

    def _read_loop(self) -> None:
        while not self._closed:
            if not self._inflight:
                self._sent.clear()
                self._sent.wait()
                continue
            batch = self._inflight[0]
            conn = batch.conn
            replies: list[Any] = []
            try:
                with gevent.Timeout(max(0.0, batch.deadline - time.monotonic()),
                                    _RoundTripTimeout):
                    for _ in batch.commands:
                        try:
                            replies.append(conn.read_response())
                        except redis.exceptions.ResponseError as exc:  # that command only
                            replies.append(exc)
            except (_RoundTripTimeout, redis.exceptions.RedisError, OSError) as exc:
                if conn is self._conn:
                    self._reset(_cause(exc, self.timeout), [])
                elif self._inflight and self._inflight[0] is batch:  # sent on a dropped link
                    self._fail(self._inflight.popleft().ops(), "connection reset")
                continue
            if self._inflight and self._inflight[0] is batch:
                self._inflight.popleft()
                if self._queue:
                    self._wake.set()
                batch.settle(replies)
            if self._down:
                self._down = False
                log.info("store.reconnected", store=self.name, url=self._where())

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self._pool.make_connection()
            conn.connect()
            self._conn = conn
        return self._conn

    def _reset(self, cause: str, ops: list[_Op]) -> None:
        """The connection failed: drop it and fail what was sent on it or waits behind it
        (it would meet the same Redis): callers hear now, within their budget."""
        conn, self._conn = self._conn, None
        failed = ops + [op for batch in self._inflight for op in batch.ops()] + self._queue
        self._inflight.clear()
        self._queue = []
        if conn is not None:
            try:
                conn.disconnect()
            except Exception:  # noqa: BLE001 - a broken socket may fail to close; it is gone
                pass
        self._down = True
        self._fail(failed, cause)

    def _fail(self, ops: list[_Op], cause: str) -> None:
        self._warn(cause, requests=len(ops))
        failure = StoreUnavailable(f"redis store {self._where()}: {cause}")
        for op in ops:
            op.result.set_exception(failure)

    def _warn(self, cause: str, **fields: object) -> None:
        held = self._throttle.allow(cause)
        if held is not None:
            log.warning("store.unavailable", store=self.name, url=self._where(), error=cause,
                        suppressed=held, **fields)

    def _where(self) -> str:
        """Where Redis is, without the URL's password (redis://:secret@host)."""
        kwargs = self._pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"redis {where}/{kwargs.get('db', 0)}"

    # -- the store interface ----------------------------------------------------------------

    def _command(self, *command: object) -> Any:
        return self._wait(_Op(command=command))

    def add(self, token_hash: str, record: TokenRecord) -> None:
        ttl_ms = max(1, math.ceil((record.expires_at - time.time()) * 1000))
        self._command("EVAL", _AUTHORIZE, 3, _T + token_hash, _I + record.instance_uuid, _EXPIRY,
                      _encode_record(record), ttl_ms, token_hash, repr(record.expires_at))

    def get(self, token_hash: str, now: float) -> TokenRecord | None:
        return self.get_many([token_hash], now)[0]

    def get_many(self, token_hashes: list[str], now: float) -> list[TokenRecord | None]:
        return self._wait(self._lookup_op(token_hashes, now))

    def lookup(self, token_hashes: list[str], now: float) -> Pending:
        return self._enqueue(self._lookup_op(token_hashes, now))

    @staticmethod
    def _lookup_op(token_hashes: list[str], now: float) -> _Op:
        def parse(raws: list[bytes | None]) -> list[TokenRecord | None]:
            records = [_decode_record(raw) if raw is not None else None
                       for raw in raws]
            return [r if r is not None and r.live(now) else None for r in records]

        return _Op(keys=[_T + h for h in token_hashes], parse=parse)

    def delete(self, token_hash: str) -> None:
        self._command("EVAL", _DELETE_TOKEN, 2, _T + token_hash, _EXPIRY, token_hash, _I)

    def delete_instance(self, instance_uuid: str) -> int:
        return int(self._command("EVAL", _DELETE_INSTANCE, 2, _I + instance_uuid, _EXPIRY, _T))

    def purge(self, now: float) -> int:
        # Redis expires the token keys itself; this trims the expiry index.
        return int(self._command("ZREMRANGEBYSCORE", _EXPIRY, "-inf", repr(now)))

    def count(self) -> int:
        return int(self._command("ZCOUNT", _EXPIRY, f"({time.time()!r}", "+inf"))

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._sent.set()
        gevent.joinall([self._sender, self._reader], timeout=self.timeout + 1)
        gevent.killall([self._sender, self._reader], block=True, timeout=1)
        if self._queue or self._inflight:
            self._reset("store closed", [])
        self._pool.disconnect()


class _RoundTripTimeout(BaseException):
    """A round trip ran past the store's timeout (BaseException: not caught on the way)."""


def _cause(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, _RoundTripTimeout):
        return f"no reply in {timeout:g}s"
    return f"{type(exc).__name__}: {exc}"
