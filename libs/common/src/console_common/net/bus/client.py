"""Bus client: the Lazy Pirate pattern over one multiplexed connection per endpoint.

Every call has one deadline (``timeout``) covering all its attempts; attempts fail over
along the endpoint list. Concurrent calls from many greenlets to one endpoint share one
DEALER socket (a channel): each request carries its id in a routing frame before the
empty delimiter (``[id, b"", body]``), which a ROUTER server echoes back untouched, so a
reply finds its caller whatever the order; REQ clients talk to the same server unchanged.
Sharing lets libzmq put many requests in one TCP write and wake its I/O threads once for
them: about twice the checks per second of a REQ socket per call, measured.

Lazy Pirate still holds: when a call's attempt gets no reply in its share of the deadline
and nothing at all came back on that channel since the request went out, the connection
is taken for dead: the socket is closed (LINGER 0) and rebuilt for the next attempt, and
the other calls waiting on it move on to their next attempt at once. A late reply to a
call that gave up is dropped.

Waiting is done without zmq.green's per-socket machinery: sockets come from a plain
context of our own, every zmq call is non-blocking, and one reader greenlet per channel
sleeps on the socket's fd through the hub. The fd is edge-style: whoever checks ZMQ_EVENTS
(a send does, inside libzmq) drains what is queued.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.event
import zmq
from gevent import get_hub
from gevent.hub import Waiter

from console_common.net.addresses import ip_family
from console_common.net.bus.zsock import readable, recv_frames, send_frames
from console_common.proto.bus.errors import (
    BadRequest,
    BusProtocolError,
    BusUnavailable,
    UnknownMethod,
    remote_error,
)
from console_common.proto.bus.messages import MAX_BATCH, ConnectInfo
from console_common.proto.bus.protocol import decode_reply, encode_request

_CONTEXT: zmq.Context | None = None
# Check senders kept parked between turns, per client: one covers the usual case (one
# turn in flight at a time); more would only hold greenlets after a burst.
IDLE_SENDERS = 1
_STOP = object()  # wakes a parked sender to end it (the client closed)


def _context() -> zmq.Context:
    """One plain context per process for every client (see module docstring)."""
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT.closed:
        _CONTEXT = zmq.Context()
    return _CONTEXT


def expand_endpoints(endpoints: Sequence[str]) -> tuple[str, ...]:
    """Resolve every host name to all its addresses: ZeroMQ resolves a name once at
    connect, so a scaled service behind one DNS name would otherwise get one replica."""
    out: list[str] = []
    for ep in endpoints:
        parts = urlsplit(ep)
        host = parts.hostname
        if parts.scheme != "tcp" or not host or ip_family(host) is not None or host == "*":
            out.append(ep)
            continue
        try:
            infos = socket.getaddrinfo(host, parts.port, type=socket.SOCK_STREAM)
        except OSError:
            out.append(ep)  # let ZeroMQ try (and fail clearly) later
            continue
        addrs = sorted({info[4][0] for info in infos})
        out += [f"tcp://[{a}]:{parts.port}" if ":" in a else f"tcp://{a}:{parts.port}"
                for a in addrs]
    return tuple(dict.fromkeys(out))


def _fresh(exc: Exception) -> Exception:
    """A copy of ``exc`` for one more greenlet to raise (its own traceback), made without
    calling ``__init__`` (whose arguments differ from ``args`` for some errors)."""
    new = exc.__class__.__new__(exc.__class__)
    new.__dict__.update(exc.__dict__)
    new.args = exc.args
    return new


class _Slot:
    """Where one greenlet waits for one value, settled once from any greenlet: a coalesced
    check's caller for its answer, a parked sender for its next turn. A hub Waiter, not an
    AsyncResult: half the cost per check (1.3 against 2.6 us, measured), and a greenlet
    that gave up (a Timeout, a kill) gets nothing switched in."""

    __slots__ = ("_waiter", "_settled")

    def __init__(self) -> None:
        self._waiter = Waiter()
        self._settled = False

    def ready(self) -> bool:
        return self._settled

    def get(self) -> Any:
        return self._waiter.get()

    def set(self, value: Any) -> None:
        if not self._settled:
            self._settled = True
            self._waiter.hub.loop.run_callback(self._waiter.switch, value)

    def set_exception(self, exc: BaseException) -> None:
        if not self._settled:
            self._settled = True
            self._waiter.hub.loop.run_callback(self._waiter.throw, exc)


def _fail_all(chunk: list[tuple[str, _Slot]], exc: Exception) -> None:
    for _, waiter in chunk:
        waiter.set_exception(_fresh(exc))  # one instance per raising greenlet


class _ChannelReset(Exception):
    """The channel a call waited on was taken for dead and rebuilt: try the next one."""


class _Channel:
    """One DEALER connection to one endpoint, shared by every call to it."""

    def __init__(self, ctx: zmq.Context, endpoint: str, curve: Any = None) -> None:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        self.endpoint = endpoint
        self.sock = sock
        self.waiting: dict[bytes, gevent.event.AsyncResult] = {}
        self.last_reply = 0.0  # monotonic time of the last reply that came in
        self.closed = False
        self._ready = get_hub().loop.io(sock.getsockopt(zmq.FD), 1)
        self._reader = gevent.spawn(self._read_loop)

    def send(self, rid: bytes, payload: bytes) -> gevent.event.AsyncResult:
        """Queue a request; raises zmq.ZMQError when it cannot (the queue is full)."""
        waiter = gevent.event.AsyncResult()
        self.waiting[rid] = waiter
        try:
            send_frames(self.sock, (rid, b"", payload))
        except zmq.ZMQError:
            del self.waiting[rid]
            raise
        self._dispatch()  # the send may have taken the fd's edge: read what is queued
        return waiter

    def _dispatch(self) -> None:
        sock, waiting = self.sock, self.waiting
        while readable(sock):
            frames = recv_frames(sock)
            self.last_reply = time.monotonic()
            if len(frames) == 3 and not frames[1]:
                waiter = waiting.pop(frames[0], None)
                if waiter is not None:
                    waiter.set(frames[2])
            # else: not shaped like our reply (or its caller gave up): dropped

    def _read_loop(self) -> None:
        hub = get_hub()
        while not self.closed:
            try:
                self._dispatch()
            except zmq.ZMQError:
                if self.closed:
                    return
                raise
            hub.wait(self._ready)

    def close(self) -> None:
        """Close at once; every call still waiting here moves on to its next attempt."""
        if self.closed:
            return
        self.closed = True
        if self._reader is not gevent.getcurrent():
            self._reader.kill(block=True, timeout=1)  # before its watcher goes
        self._ready.close()
        self.sock.close(linger=0)
        waiting, self.waiting = self.waiting, {}
        for waiter in waiting.values():
            waiter.set_exception(_ChannelReset(self.endpoint))


class BusClient:
    def __init__(self, endpoints: Sequence[str], timeout: float, attempts: int = 3,
                 context: zmq.Context | None = None, curve: Any = None) -> None:
        if not endpoints:
            raise ValueError("BusClient needs at least one endpoint")
        self._names = tuple(endpoints)
        self._endpoints = expand_endpoints(endpoints)
        self._timeout = float(timeout)
        self._attempts = max(1, attempts)
        self._ctx = context or _context()
        self.curve = curve  # net.bus.curve.CurveClient: encrypted, authenticated
        self._channels: dict[str, _Channel] = {}
        self._turn = itertools.count()
        self._ids = itertools.count()
        self._prefix = os.urandom(4).hex()
        self._closed = False
        self._checks: list[tuple[str, _Slot]] | None = None
        self._idle: list[_Slot] = []  # where parked check senders wait for a turn
        self._batches = True  # False once a server said it has no check_tokens
        self._budgets = True  # False once a server refused budget_ms (it predates it)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._names

    @property
    def timeout(self) -> float:
        return self._timeout

    def call(self, method: str, **args: Any) -> Any:
        """Call ``method``; returns its result or raises RemoteError / BusUnavailable."""
        return self.request(method, args)

    def request(self, method: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        """``call`` with the arguments as a dict, within ``timeout`` seconds (default: the
        client's): one deadline for every attempt. Each attempt tells the server its share
        of what is left (``budget_ms``), so the server spends no longer on it than the
        caller will wait for it, and a slow downstream (a compute host) is not asked again
        by a retry the caller sent because the first answer was late."""
        rid = f"{self._prefix}-{next(self._ids)}"
        key = rid.encode()
        budget = self._timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + budget
        first = next(self._turn)
        count = len(self._endpoints)
        detail = ""
        for attempt in range(self._attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            endpoint = self._endpoints[(first + attempt) % count]
            share = remaining / (self._attempts - attempt)
            payload = encode_request(method, args, rid, budget_ms=int(share * 1000)
                                     if self._budgets else None)
            channel = self._channel(endpoint)
            sent_at = time.monotonic()
            try:
                waiter = channel.send(key, payload)
            except zmq.ZMQError as exc:
                detail = f"last try {endpoint}: {exc}"
                self._reset(channel)
                continue
            try:
                data = waiter.get(timeout=share)
            except gevent.Timeout:
                channel.waiting.pop(key, None)
                detail = f"last try {endpoint}: no reply in {share:.2g}s"
                if channel.last_reply < sent_at:
                    self._reset(channel)  # silent since we sent: a fresh socket next time
                continue
            except _ChannelReset:
                detail = f"last try {endpoint}: connection reset after a timeout"
                continue
            try:
                return decode_reply(data, method, rid)
            except BadRequest as exc:
                if not (self._budgets and "budget_ms" in exc.message):
                    raise
                # A server from before budgets refuses the key: go on without it, as an
                # older consoleauth expects (rolling upgrades in any order).
                self._budgets = False
                return self.request(method, args, deadline - time.monotonic())
        if self.curve is not None:  # a refused key gets no answer at all (ZAP)
            detail = f"{detail}; authentication may have been refused" if detail else \
                "authentication may have been refused"
        raise BusUnavailable(self._names, budget, detail)

    def check_token(self, token: str) -> ConnectInfo:
        """``call("check_token", token=token)``, coalesced: the checks this process's
        greenlets start in the same loop turn go out as one ``check_tokens`` message (up to
        MAX_BATCH each), each caller getting its own result or error. A lone check is sent
        as a plain check_token; a server without check_tokens gets plain ones too."""
        waiter = _Slot()
        if self._checks is None:
            self._checks = []
            self._wake_sender()  # it runs after the greenlets runnable now
        self._checks.append((token, waiter))
        # Bounded without a timer per check (a tenth of a check's cost, measured): the
        # sender settles every waiter within its call's deadline, whatever happens to it.
        return waiter.get()

    def _wake_sender(self) -> None:
        if self._idle:
            self._idle.pop().set(None)
        else:
            gevent.spawn(self._sender)

    def _sender(self) -> None:
        """Send what check_token gathered, then park for the next turn rather than end: a
        new greenlet per turn cost ~12 us, waking a parked one ~1 (measured). Several run
        at once when turns overlap (each waits for its own reply); IDLE_SENDERS stay."""
        while True:
            self._send_checks()
            if self._closed or len(self._idle) >= IDLE_SENDERS:
                return
            parked = _Slot()
            self._idle.append(parked)
            try:
                if parked.get() is _STOP:
                    return
            except BaseException:  # killed while parked
                if parked in self._idle:
                    self._idle.remove(parked)
                elif self._checks is not None:  # woken for these: someone must send them
                    gevent.spawn(self._sender)
                raise

    def _send_checks(self) -> None:
        checks, self._checks = self._checks or [], None
        try:
            self._send_chunks(checks)
        except BaseException:
            self._settle_left(checks)
            raise

    def _send_chunks(self, checks: list[tuple[str, _Slot]]) -> None:
        if len(checks) == 1:  # a lone check (the usual case): sent by this greenlet
            self._check_one(*checks[0])
            return
        for i in range(0, len(checks), MAX_BATCH):
            chunk = checks[i:i + MAX_BATCH]
            if len(chunk) == 1 or not self._batches:
                for token, waiter in chunk:
                    gevent.spawn(self._check_one, token, waiter)
            elif i + MAX_BATCH >= len(checks):
                self._check_many(chunk)  # the last chunk in this greenlet
            else:
                gevent.spawn(self._check_many, chunk)

    def _check_one(self, token: str, waiter: _Slot) -> None:
        try:
            waiter.set(self.call("check_token", token=token))
        except Exception as exc:  # handed to the caller, raised there
            waiter.set_exception(exc)
        finally:
            self._settle_left([(token, waiter)])

    def _settle_left(self, chunk: list[tuple[str, _Slot]]) -> None:
        """Whatever stopped the sender (killed, a bug), no caller waits for ever."""
        left = [(t, w) for t, w in chunk if not w.ready()]
        if left:
            _fail_all(left, BusUnavailable(self._names, self._timeout, "check not sent"))

    def _check_many(self, chunk: list[tuple[str, _Slot]]) -> None:
        handed_over = False
        try:
            handed_over = self._check_chunk(chunk)
        finally:
            if not handed_over:
                self._settle_left(chunk)

    def _check_chunk(self, chunk: list[tuple[str, _Slot]]) -> bool:
        """Settle the chunk's waiters; True when they were handed to other senders."""
        try:
            items = self.call("check_tokens", tokens=[token for token, _ in chunk])
        except UnknownMethod:  # an older consoleauth: one check per message from now on
            self._batches = False
            for token, waiter in chunk:  # each settled by its own sender
                gevent.spawn(self._check_one, token, waiter)
            return True
        except Exception as exc:
            _fail_all(chunk, exc)
            return False
        if len(items) != len(chunk):
            _fail_all(chunk, BusProtocolError(
                f"check_tokens answered {len(items)} of {len(chunk)}"))
            return False
        for (_, waiter), item in zip(chunk, items, strict=True):
            if item["ok"]:
                waiter.set(item["result"])
            else:
                waiter.set_exception(remote_error(item["error"]["type"], item["error"]["message"]))
        return False

    def _channel(self, endpoint: str) -> _Channel:
        channel = self._channels.get(endpoint)
        if channel is None or channel.closed:
            if self._closed:
                raise BusUnavailable(self._names, self._timeout, "client closed")
            channel = self._channels[endpoint] = _Channel(self._ctx, endpoint, self.curve)
        return channel

    def _reset(self, channel: _Channel) -> None:
        if self._channels.get(channel.endpoint) is channel:
            del self._channels[channel.endpoint]
        channel.close()

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for parked in idle:
            parked.set(_STOP)
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            channel.close()

    def __enter__(self) -> BusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
