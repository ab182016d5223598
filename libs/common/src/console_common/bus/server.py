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
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import gevent.event
import gevent.pool
import structlog
import zmq

from console_common.bus.errors import InternalError, RemoteError
from console_common.bus.protocol import (MAX_MESSAGE, Request, decode_request, encode_error,
                                         encode_result, request_id)

Handler = Callable[[Any], Any]
log = structlog.get_logger("bus")
DRAIN_BATCH = 256  # messages handled per wake-up before yielding to other greenlets


class Deferred:
    """Returned by an inline handler that found it must wait (e.g. ask a compute host):
    the server runs ``fn()`` in a pooled greenlet and replies with its result."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


class BusServer:
    def __init__(self, endpoint: str, handlers: Mapping[str, Handler], pool_size: int = 1024,
                 context: zmq.Context | None = None, inline: frozenset[str] = frozenset()) -> None:
        self._inline = inline
        self.endpoint = endpoint
        self._handlers = dict(handlers)
        self._known = frozenset(self._handlers)
        self._pool = gevent.pool.Pool(pool_size)
        # A plain (non-green) context of our own: the loop only makes non-blocking calls and
        # waits on the fd through the hub itself (see module docstring).
        self._ctx = context or zmq.Context()
        self._sock: zmq.Socket | None = None
        self._loop: gevent.Greenlet | None = None
        self._stopping = gevent.event.Event()
        self._held: list[list[bytes]] | None = None  # replies of the running drain batch
        self.counters: Counter[str] = Counter()
        self.bound: str | None = None

    def start(self) -> str:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # Hard bound: a peer sending more than 1 MiB in one message is disconnected by
        # libzmq before we buffer it; 64 KiB..1 MiB gets an error reply.
        sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        sock.bind(self.endpoint)
        self.bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._sock = sock
        self._wake = gevent.event.Event()
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
        recv = partial(sock.recv_multipart, zmq.NOBLOCK)
        events = partial(sock.getsockopt, zmq.EVENTS)
        while not self._stopping.is_set():
            self._wake.clear()
            if not events() & zmq.POLLIN:
                # Watch the fd only while asleep: a level-triggered watcher left running
                # fires on every loop turn while input is queued and starves the hub.
                self._watcher.start(self._wake.set)
                try:
                    self._wake.wait()
                finally:
                    self._watcher.stop()
                continue
            self._held = held = []
            try:
                for _ in range(DRAIN_BATCH):
                    try:
                        frames = recv()
                    except zmq.Again:
                        break
                    except zmq.ZMQError as exc:
                        if self._stopping.is_set() or exc.errno == zmq.ETERM:
                            return
                        log.warning("bus.recv_failed", error=str(exc))
                        break
                    self._handle(frames)
            finally:
                self._held = None
                for reply in held:
                    self._send(reply, wake=False)
                if held:
                    self._wake_if_pending()
            gevent.sleep(0)  # let pooled handlers and other greenlets run between batches

    def _handle(self, frames: list[bytes]) -> None:
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
        if request.method in self._inline:
            reply = self._run(request, lambda: self._handlers[request.method](request.args),
                              envelope=envelope)
            if reply is not None:
                self._reply(envelope, reply)
            return  # None: the handler deferred to a pooled greenlet
        self._pool.spawn(self._handle_pooled, envelope, request)  # waits while the pool is full

    def _handle_pooled(self, envelope: list[bytes], request: Request) -> None:
        self._reply(envelope, self._run(request, lambda: self._handlers[request.method](request.args),
                                        deferred_ok=False))

    def _handle_deferred(self, envelope: list[bytes], request: Request, deferred: Deferred) -> None:
        self._reply(envelope, self._run(request, deferred.fn, deferred_ok=False))

    def _run(self, request: Request, call: Callable[[], Any], deferred_ok: bool = True,
             envelope: list[bytes] | None = None) -> bytes | None:
        """Run a handler; the encoded reply, or None when it deferred to a greenlet."""
        try:
            result = call()
            if isinstance(result, Deferred):
                if deferred_ok:
                    self._pool.spawn(self._handle_deferred, envelope, request, result)
                    return None
                result = result.fn()
            reply = encode_result(request.method, result, request.id)
        except RemoteError as exc:
            self.counters[f"{request.method}.{exc.type}"] += 1
            return encode_error(exc.type, exc.message, request.id)
        except Exception:
            self.counters["internal_error"] += 1
            log.error("bus.handler_failed", method=request.method, exc_info=True)
            return encode_error(InternalError.type, f"internal error in {request.method}", request.id)
        self.counters[f"{request.method}.ok"] += 1
        if len(reply) > MAX_MESSAGE:
            return encode_error(InternalError.type, "reply too large", request.id)
        return reply

    def _reply(self, envelope: list[bytes], payload: bytes) -> None:
        if self._held is not None:
            # Inline replies of a drain batch go out together after it: libzmq wakes its
            # I/O thread once for the lot instead of once per reply (a syscall and a
            # thread switch each, a quarter of a check's cost when measured).
            self._held.append([*envelope, payload])
        else:
            self._send([*envelope, payload])

    def _send(self, frames: list[bytes], wake: bool = True) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: it will retry
            self.counters["reply_dropped"] += 1
            log.debug("bus.reply_dropped", error=str(exc))
        if wake:
            self._wake_if_pending()

    def _wake_if_pending(self) -> None:
        # Sending may consume the fd's edge for pending input: wake the loop if so.
        if self._sock is not None and self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._wake.set()

    def stop(self, grace: float = 5.0) -> None:
        """Stop receiving, let running handlers finish (up to ``grace``), close."""
        self._stopping.set()
        if self._loop is not None:
            self._loop.kill(block=True, timeout=1)
            self._watcher.stop()
        self._pool.join(timeout=grace)
        self._pool.kill(block=True, timeout=1)
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
            self._ctx.term()

    def wait(self) -> None:
        self._stopping.wait()
