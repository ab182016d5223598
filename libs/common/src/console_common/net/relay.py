"""The relay shared by both proxies: a pump per direction over two Streams.

A Stream is anything with recv(n) -> bytes (b"" at EOF), sendall(data), shutdown_write()
and close(): a TCP socket (TcpStream) or novncproxy's WebSocket adapter. Back-pressure is
natural: a direction holds at most one read (CHUNK) in hand and sendall blocks while the
other side is slow. EOF on one side is passed on as a half-close; the other direction may
still finish within ``drain`` seconds.

Bulk directions go zero-copy: once a read fills BULK bytes (a framebuffer stream, a file
upload) and the session observer has seen the handshake, a direction whose source offers a
raw descriptor (``splice_fd``, ``fill_pipe``) and whose destination can send from a pipe
(``splice_fd``, ``send_pipe``) moves on through splice(2) (``console_common.net.splice``).
Interactive traffic (keys, small updates) never gets there and keeps its two syscalls per
message.
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from contextvars import copy_context
from typing import Protocol

import gevent

from console_common.net import splice

CHUNK = 256 * 1024
BULK = 64 * 1024  # a read this large means a bulk stream: worth a pipe (two descriptors)
_SPLICE = splice.available()
# TCP keepalive on client (xvp) and target sockets: a peer that vanished without a FIN or
# RST (a powered-off host, a NAT that forgot the flow) is found within IDLE + INTVL * CNT
# seconds instead of never, and idle-cutting middleboxes see traffic.
KEEPALIVE_IDLE, KEEPALIVE_INTVL, KEEPALIVE_CNT = 30, 10, 3


def tune_tcp(sock: socket.socket) -> None:
    """TCP_NODELAY (VNC is interactive) and keepalive; nothing on a non-TCP socket."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTVL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_CNT)
    except OSError:
        pass  # not TCP (a unix socket in tests): nothing to tune


class Stream(Protocol):
    def recv(self, size: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def close(self) -> None: ...


class TcpStream:
    """A connected gevent TCP socket as a Stream (TCP_NODELAY and keepalive: tune_tcp)."""

    __slots__ = ("sock", "recv", "sendall", "_pending")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        tune_tcp(sock)
        self.recv = sock.recv
        self.sendall = sock.sendall
        self._pending: list[bytes] = []

    def prepend(self, data: bytes) -> None:
        """Yield ``data`` before anything else read from the socket (bytes that arrived
        with a CONNECT answer or an xvp preamble)."""
        sock_recv, pending = self.sock.recv, self._pending
        pending.append(data)

        def recv(size: int) -> bytes:
            # Callers may hold on to this bound function (pump does), so it must keep
            # working after the prefix is gone.
            if pending:
                return pending.pop()
            return sock_recv(size)

        self.recv = recv

    @property
    def splice_fd(self) -> int | None:
        """The raw descriptor for splice(2), once no prepended bytes are left to read."""
        return None if self._pending else self.sock.fileno()

    def fill_pipe(self, pipe: splice.Pipe, size: int) -> int:
        return pipe.fill(size)

    def send_pipe(self, pipe: splice.Pipe) -> None:
        pipe.drain()

    def shutdown_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # peer already gone: the other direction will see it

    def close(self) -> None:
        self.sock.close()


class RelayResult:
    __slots__ = ("totals", "sending", "reason", "error")

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        # per direction: a send is under way (the session clock tells a stalled client
        # from an idle one: a send that stays under way while no bytes move)
        self.sending: dict[str, bool] = {"bytes_up": False, "bytes_down": False}
        self.reason = "closed"
        self.error: BaseException | None = None


# Fed each chunk of one direction; returns False once it wants no more (handshake seen).
Observer = Callable[[bytes], bool]


def pump(src: Stream, dst: Stream, totals: Counter[str], key: str,
         observe: Observer | None = None, chunk: int = CHUNK,
         sending: dict[str, bool] | None = None) -> None:
    """Copy ``src`` to ``dst`` until EOF; ``totals[key]`` counts the bytes as they go (the
    idle limit and the session list read it while the session runs); ``sending[key]`` is
    true while a send waits on ``dst``."""
    recv, sendall = src.recv, dst.sendall
    if sending is None:
        sending = {}
    while data := recv(chunk):
        if observe is not None and not observe(data):
            observe = None
        sending[key] = True
        sendall(data)  # blocks while dst is slow: back-pressure, no queue
        sending[key] = False
        totals[key] += len(data)
        if (len(data) >= BULK and observe is None and _SPLICE
                and hasattr(src, "fill_pipe") and hasattr(dst, "send_pipe")):
            # only a stream whose bytes pass unchanged can fill a pipe (not a
            # WebSocket reader: its bytes need unmasking)
            src_fd = src.splice_fd  # type: ignore[attr-defined]
            dst_fd = dst.splice_fd  # type: ignore[attr-defined]
            if src_fd is not None and dst_fd is not None:
                _splice_pump(src_fd, dst_fd, src, dst, totals, key, sending)
                break
    dst.shutdown_write()  # pass the EOF on, keep the other direction open


def _splice_pump(src_fd: int, dst_fd: int, src: Stream, dst: Stream,
                 totals: Counter[str], key: str, sending: dict[str, bool]) -> None:
    """The rest of a direction through a pipe, until EOF; counted in ``totals[key]``."""
    pipe = splice.Pipe(src_fd, dst_fd)
    fill_pipe = src.fill_pipe  # type: ignore[attr-defined]
    send_pipe = dst.send_pipe  # type: ignore[attr-defined]
    try:
        while n := fill_pipe(pipe, splice.PIPE_SIZE):
            sending[key] = True
            send_pipe(pipe)  # waits while dst is slow: the pipe is the only buffer
            sending[key] = False
            totals[key] += n
    finally:
        pipe.close()


def _pump_quietly(*args: object) -> BaseException | None:
    """pump(), returning its error instead of raising it: a peer's reset is an ordinary way
    for a session to end, decided on by relay(), not a crash for the hub to print."""
    try:
        pump(*args)  # type: ignore[arg-type]
    except Exception as exc:  # every failure is handed to relay() and logged once there
        return exc
    return None


class _DownEnded(BaseException):
    """Thrown into the relaying greenlet when the target-to-client direction ended first and
    the client-to-target one must stop: at once if it failed, after ``drain`` if not."""


class _DownWatch:
    """The down direction's link: arms the throw that ends the up direction."""

    __slots__ = ("_drain", "_glet", "_timer", "active", "ended_first")

    def __init__(self, glet: object, drain: float) -> None:
        self._glet, self._drain = glet, drain
        self._timer: object | None = None
        self.active = True
        self.ended_first = False

    def __call__(self, down: gevent.Greenlet) -> None:  # runs in the hub
        if not self.active:
            return
        self.ended_first = True
        timer = gevent.get_hub().loop.timer(self._drain if _ok(down) else 0.0)
        timer.start(self._glet.throw, _DownEnded())  # type: ignore[attr-defined]
        self._timer = timer

    def cancel(self) -> None:
        """No throw after this (called as soon as the up direction is over)."""
        self.active = False
        if self._timer is not None:
            self._timer.close()  # type: ignore[attr-defined]
            self._timer = None


def relay(client: Stream, target: Stream, drain: float = 5.0,
          observe_up: Observer | None = None, observe_down: Observer | None = None,
          result: RelayResult | None = None) -> RelayResult:
    """Copy both ways until both directions end (or one fails); close both streams.

    The client-to-target direction runs in the calling greenlet (one greenlet and its
    stack less per session), the other in a greenlet of its own. Whichever ends first
    decides, as if both were greenlets: after a clean end (passed on as a half-close) the
    other direction may finish within ``drain``; a failure ends the relay at once.

    ``result.reason``: "client_closed", "target_closed", "client_error: ...",
    "target_error: ..." or "killed" (the session greenlet was killed, e.g. revocation).
    """
    res = result or RelayResult()
    down = gevent.spawn(copy_context().run, _pump_quietly, target, client, res.totals,
                        "bytes_down", observe_down, CHUNK, res.sending)
    watch = _DownWatch(gevent.getcurrent(), drain)
    down.rawlink(watch)
    try:
        try:
            up_error = _pump_quietly(client, target, res.totals, "bytes_up", observe_up,
                                     CHUNK, res.sending)
            up_done = True
        except _DownEnded:
            up_error, up_done = None, False
        finally:
            watch.cancel()
        if watch.ended_first:
            if not _ok(down):
                res.reason, res.error = _failure(down, False)
            elif not up_done:
                res.reason = "target_closed_drain_timeout"
            elif up_error is not None:
                res.reason, res.error = _failure_of(up_error, True)
            else:
                res.reason = "target_closed"
        elif up_error is not None:
            res.reason, res.error = _failure_of(up_error, True)
        else:
            res.reason = "client_closed"
            down.join(timeout=drain)
            if not down.ready():
                res.reason += "_drain_timeout"
            elif not _ok(down):
                res.reason, res.error = _failure(down, False)
    except gevent.GreenletExit:
        res.reason = "killed"
        raise
    finally:
        watch.cancel()
        down.kill(block=True, timeout=1)
        client.close()
        target.close()
    return res


def _ok(greenlet: gevent.Greenlet) -> bool:
    return greenlet.successful() and greenlet.value is None


def _failure(greenlet: gevent.Greenlet, is_up: bool) -> tuple[str, BaseException | None]:
    exc = greenlet.value if greenlet.successful() else greenlet.exception
    return _failure_of(exc, is_up)


def _failure_of(exc: BaseException | None, is_up: bool) -> tuple[str, BaseException | None]:
    # A reset is the usual way a peer leaves; which side read or wrote tells who.
    side = "client" if is_up else "target"
    if isinstance(exc, OSError):
        return f"{side}_error: {exc.strerror or exc}", exc
    return f"{side}_error: {type(exc).__name__}: {exc}", exc
