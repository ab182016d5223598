"""Bus server: a ROUTER socket, one receiving greenlet, each request handled in a greenlet
from a bounded Pool, replies sent without blocking. Compatible with REQ clients.

A REP loop would stall every caller while one handler waits (check_token asks a compute
host); with ROUTER each request carries its routing envelope and replies go out in any
order. Malformed input gets an error reply (or is dropped when it has no envelope) and
the server keeps serving.

Speed: zmq.green costs ~80 us of hub switching per recv/send, more than a whole
check_token. So the loop drains every queued message with non-blocking calls on the plain
socket and sleeps on the ZeroMQ fd only when the queue is empty (the fd is edge-triggered:
after every send we re-check EVENTS and wake the loop ourselves, as zmq.green does).
Methods named in ``inline`` never block and run in the loop; the rest, and any handler
that returns ``Deferred``, run in a greenlet from the bounded Pool.

A request may carry its caller's remaining budget (``budget_ms``): one already spent is
answered ``DeadlineExceeded`` at once, a pooled handler is cut (and answered
``DeadlineExceeded``) when it runs out, and a ``Deferred`` is handed the deadline so that
what it waits on downstream (a compute host) gets no more than is left.

Every request gets exactly one reply: a pooled handler that runs past ``handler_timeout``
is answered ``Unavailable`` (and interrupted); when the pool is full the request is
answered ``Unavailable`` at once instead of stalling the loop; requests still running when
the server stops past its grace are answered ``Unavailable`` too. Failures a caller sees
as ``Unavailable`` or ``InternalError`` are logged as warnings with their cause,
rate-limited per method and type.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import gevent.event
import gevent.pool
import structlog
from gevent.hub import Waiter
import zmq

from console_common.proto.bus.errors import (DeadlineExceeded, Forbidden, InternalError,
                                             RemoteError, Unavailable)
from console_common.proto.bus.protocol import (MAX_MESSAGE, Request, decode_request, encode_error,
                                         encode_result, request_id)
from console_common.net.bus.zsock import readable, recv_frames, send_frames
from console_common.net.throttle import Throttle

Handler = Callable[[Any], Any]
log = structlog.get_logger("bus")
DRAIN_BATCH = 256  # messages handled per wake-up before yielding to other greenlets
REPLY_MARGIN = 0.05  # seconds of a caller's budget kept for our answer to travel back


class Deferred:
    """Returned by an inline handler that found it must wait (e.g. ask a compute host):
    the server runs ``fn(deadline)`` in a pooled greenlet and replies with its result.
    ``deadline`` (time.monotonic) is when the caller stops waiting: spend no longer."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


class Later:
    """Returned by a handler whose answer waits on an asynchronous result (a Redis lookup
    batched with others') without holding a greenlet. ``result`` is anything with
    ``rawlink(callback)`` and ``wait()`` (a gevent AsyncResult, a store's Pending): once it
    is settled the server calls ``then(result)`` where the callback runs, and replies with
    what that returns (a value, a ``Deferred``, or a RemoteError raised). ``then`` must not
    block. Whoever settles ``result`` must do so in bounded time: the server keeps no timer
    per request."""

    __slots__ = ("result", "then")

    def __init__(self, result: Any, then: Callable[[Any], Any]) -> None:
        self.result, self.then = result, then


class _Call:
    """A request being served: where its reply goes, and when its caller gives up."""

    __slots__ = ("envelope", "request", "deadline")

    def __init__(self, envelope: list[bytes], request: Request, deadline: float) -> None:
        self.envelope, self.request, self.deadline = envelope, request, deadline


class _Overrun(BaseException):
    """A pooled handler ran past handler_timeout. A BaseException, like gevent.Timeout, so
    no ``except Exception`` on the way (ours or a library's) swallows it."""


class BusServer:
    def __init__(self, endpoint: str, handlers: Mapping[str, Handler], pool_size: int = 4096,
                 context: zmq.Context | None = None, inline: frozenset[str] = frozenset(),
                 handler_timeout: float = 10.0, curve: Any = None,
                 roles: Mapping[str, frozenset[str]] | None = None,
                 role_aware: frozenset[str] = frozenset()) -> None:
        # CURVE (net.bus.curve.CurveServer): encrypted, and each request checked against
        # the methods its key's role may call (``roles``: role -> methods; "admin": all).
        # Handlers of ``role_aware`` methods are called ``handler(args, role)`` (role None
        # without CURVE): what they answer may depend on who asks.
        self._curve, self._roles = curve, roles or {}
        self._role_aware = role_aware
        self._inline = inline
        self._handler_timeout = handler_timeout
        self._throttle = Throttle(10.0)
        self.endpoint = endpoint
        self._handlers = dict(handlers)
        self._known = frozenset(self._handlers)
        self._ok = {method: f"{method}.ok" for method in self._handlers}  # counter keys
        self._pool = gevent.pool.Pool(pool_size)
        # A plain (non-green) context of our own: the loop only makes non-blocking calls and
        # waits on the fd through the hub itself (see module docstring).
        self._ctx = context or zmq.Context()
        self._own_ctx = context is None  # a shared one (events socket, ZAP) is not ours to end
        self._sock: zmq.Socket | None = None
        self._loop: gevent.Greenlet | None = None
        self._stopping = gevent.event.Event()
        self._held: list[list[bytes]] | None = None  # replies of the running drain batch
        self._outbox: list[list[bytes]] = []  # other replies, sent together at the loop's turn
        self._asleep: Waiter | None = None  # where the receive loop waits for input
        self.counters: Counter[str] = Counter()
        self.bound: str | None = None

    def start(self) -> str:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # Hard bound: a peer sending more than 1 MiB in one message is disconnected by
        # libzmq before we buffer it; 64 KiB..1 MiB gets an error reply.
        sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        try:
            if self._curve is not None:
                self._curve.apply(sock, domain="bus")
            sock.bind(self.endpoint)
        except BaseException:
            sock.close(linger=0)  # or stop()'s term of our context would wait on it
            raise
        self.bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._watcher = gevent.get_hub().loop.io(sock.getsockopt(zmq.FD), 1)
        self._loop = gevent.spawn(self._receive_loop)
        self._loop.link_exception(self._loop_died)
        return self.bound

    def _loop_died(self, greenlet: gevent.Greenlet) -> None:
        log.error("bus.loop_died", endpoint=self.endpoint, exc_info=greenlet.exc_info)
        self._stopping.set()

    def _receive_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        curve = self._curve is not None
        # with CURVE, frames keep their properties: the role the ZAP handler gave the key
        recv = partial(recv_frames, sock, copy=not curve)
        ready = partial(readable, sock)
        empty = False  # the queue was found empty, and nothing was called on the socket since
        while not self._stopping.is_set():
            if empty or not ready():
                empty = False
                # Watch the fd only while asleep: a level-triggered watcher left running
                # fires on every loop turn while input is queued and starves the hub. A hub
                # Waiter: the watcher switches straight here (an Event took one more
                # callback round and its own wait machinery, per wake-up).
                self._asleep = asleep = Waiter()
                self._watcher.start(asleep.switch, None)
                try:
                    asleep.get()
                finally:
                    self._watcher.stop()
                    self._asleep = None
                continue
            self._held = held = []
            full = True  # the batch stopped at DRAIN_BATCH, with more queued
            try:
                for _ in range(DRAIN_BATCH):
                    try:
                        frames = recv()  # a message is queued: asked just before
                    except zmq.Again:
                        break
                    except zmq.ZMQError as exc:
                        if self._stopping.is_set() or exc.errno == zmq.ETERM:
                            return
                        log.warning("bus.recv_failed", error=str(exc))
                        break
                    if curve:
                        role = frames[-1].get("User-Id")
                        self._handle([f.bytes for f in frames], role)
                    else:
                        self._handle(frames)
                    # asked, not tried: an Again raised at the end of every batch cost ~6 %
                    # of consoleauth's CPU under load (the exception and its ZMQError)
                    if not ready():
                        full = False
                        break
            finally:
                self._held = None
                for reply in held:
                    self._send(reply)
            # No _wake_if_pending here: the loop asks ZMQ_EVENTS itself at its top, and
            # waits there (letting every other greenlet run) unless more is queued. It need
            # not ask when the batch ended on an empty queue and sent nothing since (a send
            # may take the fd's edge; an answer just given stands): one syscall pair less
            # per batch: consoleauth CPU per plain REQ check 40.3 -> 38.3 us (4-5 runs each).
            empty = not full and not held
            if full:
                gevent.sleep(0)  # let pooled handlers and other greenlets run between batches

    def _handle(self, frames: list[bytes], role: str | None = None) -> None:
        try:
            split = frames.index(b"", 1)  # REQ clients: [identity..., b"", body]
        except ValueError:
            self.counters["dropped"] += 1  # no envelope: nowhere to reply
            return
        envelope, body = frames[: split + 1], frames[split + 1:]
        if len(body) != 1:
            self.counters["bad_request"] += 1
            self._reply(envelope, encode_error("BadRequest", f"expected 1 body frame, got {len(body)}"))
            return
        data = body[0]
        try:
            request = decode_request(data, self._known)
        except RemoteError as exc:
            self.counters["bad_request"] += 1
            self._reply(envelope, encode_error(exc.type, exc.message, request_id(data)))
            return
        if role is not None and role != "admin" and \
                request.method not in self._roles.get(role, frozenset()):
            self.counters["forbidden"] += 1
            self._reply(envelope, self._failed(request, Forbidden(
                f"{request.method} is not allowed for role {role}")))
            return
        budget = request.budget_ms
        if budget == 0:
            self._reply(envelope, self._failed(request, DeadlineExceeded(
                f"{request.method}: the caller's budget was spent before it arrived")))
            return
        call = _Call(envelope, request, time.monotonic() + (
            budget / 1000 if budget is not None else self._handler_timeout))
        handler = self._handlers[request.method]
        # (fn, args) pairs rather than closures: no function object made per request
        args = (request.args, role) if request.method in self._role_aware else (request.args,)
        if request.method in self._inline:
            reply = self._run(call, handler, args)
            if reply is not None:
                self._reply(envelope, reply)
            return  # None: the reply comes later (a pooled greenlet, a settled Later)
        self._spawn(call, handler, args)

    def _spawn(self, call: _Call, fn: Callable[..., Any], args: tuple = ()) -> None:
        if self._pool.full():  # answer now rather than stall every other caller
            self._reply(call.envelope, self._failed(call.request, Unavailable(
                f"server busy: {self._pool.size} requests in progress")))
            return
        self._pool.spawn(self._handle_pooled, call, fn, args)

    def _handle_pooled(self, call: _Call, fn: Callable[..., Any], args: tuple) -> None:
        request, reply = call.request, None
        left = call.deadline - time.monotonic()
        if request.budget_ms is not None:  # answer a little early: it must reach the caller
            left -= min(REPLY_MARGIN, request.budget_ms / 10000)
        limit = min(self._handler_timeout, left)
        try:
            if limit <= 0:
                raise _Overrun
            with gevent.Timeout(limit, _Overrun):
                reply = self._run(call, fn, args, pooled=True)
        except _Overrun:
            if request.budget_ms is not None and left <= self._handler_timeout:  # the budget
                error: RemoteError = DeadlineExceeded(
                    f"{request.method}: the caller's budget of {request.budget_ms} ms was spent")
            else:
                error = Unavailable(f"{request.method} not served in {self._handler_timeout:g}s")
            reply = self._failed(request, error)
        except gevent.GreenletExit:  # killed by stop() after the grace period
            reply = self._failed(request, Unavailable("server stopping"))
            raise
        finally:
            if reply is not None:
                self._reply(call.envelope, reply)

    def _run(self, call: _Call, fn: Callable[..., Any], args: tuple,
             pooled: bool = False) -> bytes | None:
        """Run ``fn(*args)`` (a handler, a Later's ``then``); the encoded reply, or None
        when it comes later."""
        request = call.request
        try:
            result = fn(*args)
            if isinstance(result, Later) and not pooled:
                later = result
                later.result.rawlink(lambda settled: self._settle(call, later))
                return None
            if isinstance(result, Deferred):
                if not pooled:
                    self._spawn(call, result.fn, (call.deadline,))
                    return None
                result = result.fn(call.deadline)
            if isinstance(result, Later):  # in a pooled greenlet: wait for it here
                result.result.wait()
                result = result.then(result.result)
            reply = encode_result(request.method, result, request.id)
        except RemoteError as exc:
            return self._failed(request, exc)
        except Exception:
            self.counters["internal_error"] += 1
            log.error("bus.handler_failed", method=request.method, exc_info=True)
            return encode_error(InternalError.type, f"internal error in {request.method}", request.id)
        self.counters[self._ok[request.method]] += 1
        if len(reply) > MAX_MESSAGE:
            return self._failed(request, InternalError("reply too large"))
        return reply

    def _settle(self, call: _Call, later: Later) -> None:
        reply = self._run(call, later.then, (later.result,))
        if reply is not None:
            self._reply(call.envelope, reply)

    def _failed(self, request: Request, exc: RemoteError) -> bytes:
        """The error reply for ``exc``; a failure of ours (not the caller's) is logged."""
        self.counters[f"{request.method}.{exc.type}"] += 1
        if exc.type in (Unavailable.type, DeadlineExceeded.type, InternalError.type):
            key = f"{request.method}.{exc.type}"
            held = self._throttle.allow(key)
            if held is not None:
                log.warning("bus.request_failed", method=request.method, error_type=exc.type,
                            error=exc.message, suppressed=held)
        return encode_error(exc.type, exc.message, request.id)

    def _reply(self, envelope: list[bytes], payload: bytes) -> None:
        if self._held is not None:
            # Inline replies of a drain batch go out together after it: libzmq wakes its
            # I/O thread once for the lot instead of once per reply (a syscall and a
            # thread switch each, a quarter of a check's cost when measured).
            self._held.append([*envelope, payload])
            return
        # Replies made elsewhere (pooled greenlets, settled Laters) are gathered the same
        # way and sent when the hub next runs its callbacks.
        if not self._outbox:
            gevent.get_hub().loop.run_callback(self._flush)
        self._outbox.append([*envelope, payload])

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        for frames in outbox:
            self._send(frames)
        self._wake_if_pending()

    def _send(self, frames: list[bytes]) -> None:
        """Send one reply; callers send a batch, then call _wake_if_pending once."""
        if self._sock is None:
            return
        try:
            send_frames(self._sock, frames)
        except zmq.ZMQError as exc:  # peer gone or its queue full: it will retry
            self.counters["reply_dropped"] += 1
            log.debug("bus.reply_dropped", error=str(exc))

    def _wake_if_pending(self) -> None:
        # Sending may consume the fd's edge for pending input: wake the loop if so.
        asleep = self._asleep
        if asleep is not None and self._sock is not None and readable(self._sock):
            asleep.hub.loop.run_callback(asleep.switch, None)  # (switched from the hub only)

    def stop(self, grace: float = 5.0) -> None:
        """Stop receiving, let running handlers finish (up to ``grace``), close."""
        self._stopping.set()
        if self._loop is not None:
            self._loop.kill(block=True, timeout=1)
            self._watcher.stop()
        self._pool.join(timeout=grace)
        self._pool.kill(block=True, timeout=1)
        self._flush()  # the answers of what was killed ("server stopping")
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._own_ctx and not self._ctx.closed:  # also when start() never ran or failed
            self._ctx.term()

    def wait(self) -> None:
        self._stopping.wait()
