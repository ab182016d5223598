"""One pipelined connection to Redis, driven from the hub's own callbacks.

Callers queue operations (``submit``) and get a Pending (the operation itself). An
operation submitted while at most one batch is in flight is written at once, so Redis
answers it while the bus server decodes the rest of its drain batch (plain REQ callers
arrive in waves of about 8-10: always queueing gave 15-17k checks/s, writing the first of a
wave at once 18-19k, the first two 20k, measured). Everything queued after them, while the
hub runs other work, goes out as one write when the hub next turns (a ``run_callback``),
the lookups among it merged into one ``MGET``. Replies are read when the socket is
readable (an I/O watcher), parsed with the sans-I/O RESP parser and handed to each
operation in order, whose callbacks (the bus server's replies) run right there.
No greenlet switch and no thread hand-off on the way: on two cores a check's Redis round
trip costs about what the wake-ups cost, so every hop saved shows in checks/s.

Only connecting (and AUTH / SELECT) runs in a greenlet, bounded by ``timeout``. A batch
whose replies are not all in ``timeout`` after it was sent fails, with everything in
flight or queued behind it (they would meet the same Redis): callers hear StoreUnavailable
within their budget, the socket is closed, and the next operation connects again.
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import gevent
import gevent.socket
import structlog
from gevent import monkey

from console_common.net.throttle import Throttle
from consoleauth.stores.base import Pending, StoreUnavailable
from consoleauth.stores.resp import NEED, RespError, RespParser, RespProtocolError, encode, mget

log = structlog.get_logger("consoleauth")

_socket = monkey.get_original("socket", "socket")  # a plain one: we wait through watchers
BATCH_OPS = 1024  # operations per write
BATCH_KEYS = 4096  # keys per MGET
READ_SIZE = 256 * 1024
# An operation is written at once while fewer batches than this are in flight, else
# queued for the hub's next turn (see the module docstring; 1 -> 2: plain REQ callers
# 18.6k -> 20.1k checks/s, four alternating 6 s runs each).
EAGER_BATCHES = 2
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


@dataclass(frozen=True)
class RedisAddress:
    host: str | None
    port: int
    path: str | None  # a unix socket
    db: int
    username: str | None
    password: str | None
    tls: bool

    def where(self) -> str:
        """For logs: no password."""
        return f"redis {self.path or f'{self.host}:{self.port}'}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """redis://[[user]:password@]host[:port][/db], rediss://... (TLS), unix:///path[?db=N]."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"expected redis://, rediss:// or unix://, got {url.split(':')[0]!r}")
    try:
        db_text = (query.get("db") or [parts.path.strip("/") if parts.scheme != "unix" else ""])[0]
        db = int(db_text or 0)
        port = parts.port or 6379
    except ValueError as exc:
        raise ValueError(f"bad redis URL: {exc}") from None
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("unix:// needs a socket path")
        host, path = None, parts.path
    else:
        if not parts.hostname:
            raise ValueError("no host in redis URL")
        host, path = parts.hostname, None
    return RedisAddress(host=host, port=port, path=path, db=db,
                        username=unquote(parts.username) if parts.username else None,
                        password=unquote(parts.password) if parts.password else None,
                        tls=parts.scheme == "rediss")


class Op(Pending):
    """One operation, and its result: keys to look up (merged into the batch's MGET), or
    one command. ``parse`` turns Redis's reply into the value callers get (``arg`` is
    handed to it too: a lookup's clock, so no closure is made per check)."""

    __slots__ = ("keys", "command", "parse", "arg")

    def __init__(self, keys: list[bytes] | None = None, command: tuple | None = None,
                 parse: Callable[[Any, Any], Any] | None = None, arg: Any = None) -> None:
        Pending.__init__(self)
        self.keys, self.command, self.parse, self.arg = keys, command, parse, arg

    def settle(self, value: Any) -> None:
        if isinstance(value, RespError):
            self.set_exception(StoreUnavailable(f"redis store: {value}"))
            return
        if self.parse is not None:
            try:
                value = self.parse(value, self.arg)
            except Exception as exc:  # noqa: BLE001 - a record we cannot read: this caller fails
                self.set_exception(StoreUnavailable(f"redis store: unreadable reply: {exc}"))
                return
        self.set(value)


class _Batch:
    """Ops written together: one MGET for all their lookups, then their commands."""

    __slots__ = ("reads", "writes", "expected", "replies", "deadline")

    def __init__(self, ops: list[Op], deadline: float) -> None:
        self.reads = [op for op in ops if op.keys is not None]
        self.writes = [op for op in ops if op.command is not None]
        self.expected = (1 if self.reads else 0) + len(self.writes)
        self.replies: list[Any] = []
        self.deadline = deadline

    def payload(self) -> bytes:
        head = [mget([k for op in self.reads for k in op.keys])] if self.reads else []
        return b"".join(head + [encode(*op.command) for op in self.writes])

    def ops(self) -> list[Op]:
        return self.reads + self.writes

    def settle(self) -> None:
        replies = self.replies
        if self.reads:
            values, replies = replies[0], replies[1:]
            if isinstance(values, RespError):
                for op in self.reads:
                    op.settle(values)
            else:
                at = 0
                for op in self.reads:
                    op.settle(values[at:at + len(op.keys)])
                    at += len(op.keys)
        for op, reply in zip(self.writes, replies, strict=True):
            op.settle(reply)


class RedisLink:
    def __init__(self, url: str, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("the Redis timeout must be positive")
        self.address = parse_redis_url(url)  # ValueError for a bad URL
        self.timeout = timeout
        self._loop = gevent.get_hub().loop
        self._sock: Any = None
        self._parser = RespParser()
        self._queue: list[Op] = []  # not written yet
        self._inflight: deque[_Batch] = deque()  # written, replies not all read
        self._out = b""  # written in part: the rest waits for the socket
        self._flush_scheduled = False
        self._connecting: gevent.Greenlet | None = None
        self._reading = self._writing = None  # I/O watchers of the open socket
        self._timer = None
        self._closed = False
        self._down = False  # the last connection failed (log the recovery once)
        self._throttle = Throttle(10.0)

    # -- submitting -------------------------------------------------------------------------

    def submit(self, op: Op) -> Pending:
        if self._closed:
            raise StoreUnavailable("redis store: closed")
        self._queue.append(op)
        if self._sock is None:
            if self._connecting is None:
                self._connecting = gevent.spawn(self._connect)
        elif len(self._inflight) < EAGER_BATCHES and not self._out:
            self._flush()  # a quiet link: Redis works while we decode what comes next
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)
        return op

    def _flush(self) -> None:
        """Write what is queued (hub callback: never blocks)."""
        self._flush_scheduled = False
        if self._sock is None:
            return
        queue, self._queue = self._queue, []
        start = 0
        while start < len(queue):
            end, keys = start, 0
            while end < len(queue) and end - start < BATCH_OPS and keys < BATCH_KEYS:
                keys += len(queue[end].keys or ())
                end += 1
            batch = _Batch(queue[start:end], time.monotonic() + self.timeout)
            self._inflight.append(batch)
            self._out += batch.payload()
            start = end
        self._write()

    def _write(self, _events: Any = None) -> None:
        try:
            while self._out:
                sent = self._sock.send(self._out)
                self._out = self._out[sent:]
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError as exc:
            self._reset(f"write failed: {exc}")
            return
        if self._out and self._writing is not None and not self._writing.active:
            self._writing.start(self._write)
        elif not self._out and self._writing is not None and self._writing.active:
            self._writing.stop()

    # -- reading ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as exc:
                self._reset(f"read failed: {exc}")
                return
            if not data:
                self._reset("connection closed by Redis")
                return
            self._parser.feed(data)
            if not self._dispatch():
                return
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()) and len(data) < READ_SIZE:
                break

    def _dispatch(self) -> bool:
        """Hand every complete reply to its batch; False when the link was reset."""
        while True:
            try:
                reply = self._parser.next()
            except RespProtocolError as exc:
                self._reset(f"not RESP: {exc}")
                return False
            if reply is NEED:
                return True
            if not self._inflight:
                self._reset("a reply nobody asked for")
                return False
            batch = self._inflight[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                self._inflight.popleft()
                batch.settle()
                if self._sock is None:  # a callback closed the store
                    return False

    # -- time bound -------------------------------------------------------------------------
    # One repeating timer per connection, a quarter of the timeout apart, looks at the
    # oldest batch in flight: cheaper than a timer per batch, and a late batch fails at
    # most a quarter of the timeout after its deadline.

    def _check_deadline(self) -> None:
        if self._inflight and self._inflight[0].deadline <= time.monotonic():
            self._reset(f"no reply in {self.timeout:g}s")

    # -- connecting -------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            with gevent.Timeout(self.timeout, _ConnectTimeout):
                sock = self._open()
        except (_ConnectTimeout, OSError, ssl.SSLError, StoreUnavailable) as exc:
            cause = (f"cannot connect in {self.timeout:g}s" if isinstance(exc, _ConnectTimeout)
                     else f"cannot connect: {exc}")
            self._connecting = None
            self._fail(self._queue, cause)
            self._queue = []
            return
        finally:
            self._connecting = None
        if self._closed:
            sock.close()
            return
        self._sock = sock
        self._parser = RespParser()
        fd = sock.fileno()
        self._reading = self._loop.io(fd, 1)
        self._writing = self._loop.io(fd, 2)
        self._reading.start(self._on_readable)
        self._timer = self._loop.timer(self.timeout / 4, self.timeout / 4)
        self._timer.start(self._check_deadline)
        if self._down:
            self._down = False
            log.info("store.reconnected", store="redis", url=self.address.where())
        if self._queue and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.run_callback(self._flush)

    def _open(self) -> Any:
        """A connected, authenticated, non-blocking socket (waits cooperatively)."""
        a = self.address
        if a.path:
            sock = _socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = a.path
        else:
            info = socket.getaddrinfo(a.host, a.port, type=socket.SOCK_STREAM)[0]
            sock = _socket(info[0], socket.SOCK_STREAM)
            target = info[4]
        try:
            sock.setblocking(False)
            err = sock.connect_ex(target)
            if err not in (0, errno.EINPROGRESS, *_AGAIN):
                raise OSError(err, f"{a.where()}: {errno.errorcode.get(err, err)}")
            gevent.socket.wait_write(sock.fileno())
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"{a.where()}: {errno.errorcode.get(err, err)}")
            if not a.path:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if a.tls:
                sock = ssl.create_default_context().wrap_socket(
                    sock, server_hostname=a.host, do_handshake_on_connect=False)
                _handshake(sock)
            hello = []
            if a.password is not None:
                hello.append(("AUTH", a.username, a.password) if a.username
                             else ("AUTH", a.password))
            if a.db:
                hello.append(("SELECT", a.db))
            for command in hello:
                reply = _ask(sock, command)
                if isinstance(reply, RespError):
                    raise StoreUnavailable(f"{command[0]} refused: {reply}")
            return sock
        except BaseException:
            sock.close()
            raise

    # -- failing ----------------------------------------------------------------------------

    def _reset(self, cause: str) -> None:
        """Drop the socket; fail what was written on it or waits behind it."""
        for watcher in (self._reading, self._writing, self._timer):
            if watcher is not None:
                watcher.stop()
        self._reading = self._writing = self._timer = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        failed = [op for batch in self._inflight for op in batch.ops()] + self._queue
        self._inflight.clear()
        self._queue = []
        self._out = b""
        self._fail(failed, cause)

    def _fail(self, ops: list[Op], cause: str) -> None:
        if not ops and self._closed:
            return
        self._down = True
        held = self._throttle.allow(cause)
        if held is not None:
            log.warning("store.unavailable", store="redis", url=self.address.where(),
                        error=cause, requests=len(ops), suppressed=held)
        failure = StoreUnavailable(f"redis store {self.address.where()}: {cause}")
        for op in ops:
            op.set_exception(failure)

    def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.kill(block=True, timeout=1)
        self._reset("store closed")


class _ConnectTimeout(BaseException):
    """Connecting ran past the timeout (BaseException: not caught on the way)."""


def _handshake(sock: ssl.SSLSocket) -> None:
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            gevent.socket.wait_read(sock.fileno())
        except ssl.SSLWantWriteError:
            gevent.socket.wait_write(sock.fileno())


def _ask(sock: Any, command: tuple) -> Any:
    """One command and its reply, waiting cooperatively (connection set-up only)."""
    data = encode(*command)
    while data:
        try:
            data = data[sock.send(data):]
        except (BlockingIOError, ssl.SSLWantWriteError):
            gevent.socket.wait_write(sock.fileno())
    parser = RespParser()
    while True:
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            gevent.socket.wait_read(sock.fileno())
            continue
        if not chunk:
            raise OSError("connection closed by Redis")
        parser.feed(chunk)
        reply = parser.next()
        if reply is not NEED:
            return reply
