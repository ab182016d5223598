"""Bus server: a ROUTER socket, one receiving greenlet, each request handled in a greenlet
from a bounded Pool, replies sent without blocking. Compatible with REQ clients.

A REP loop would stall every caller while one handler waits (check_token asks a compute
host); with ROUTER each request carries its routing envelope and replies go out in any
order. Malformed input gets an error reply (or is dropped when it has no envelope) and
the server keeps serving.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import gevent.event
import gevent.pool
import structlog
import zmq.green as zmq

from console_common.bus.errors import InternalError, RemoteError
from console_common.bus.protocol import (MAX_MESSAGE, decode_request, encode_error, encode_result,
                                         request_id)

Handler = Callable[[Any], Any]
log = structlog.get_logger("bus")


class BusServer:
    def __init__(self, endpoint: str, handlers: Mapping[str, Handler], pool_size: int = 1024,
                 context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self._handlers = dict(handlers)
        self._known = frozenset(self._handlers)
        self._pool = gevent.pool.Pool(pool_size)
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._loop: gevent.Greenlet | None = None
        self._stopping = gevent.event.Event()
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
        self._loop = gevent.spawn(self._receive_loop)
        self._loop.link_exception(self._loop_died)
        return self.bound

    def _loop_died(self, greenlet: gevent.Greenlet) -> None:
        log.error("bus.loop_died", endpoint=self.endpoint, exc_info=greenlet.exc_info)
        self._stopping.set()

    def _receive_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._stopping.is_set():
            try:
                frames = sock.recv_multipart()
            except zmq.ZMQError as exc:
                if self._stopping.is_set() or exc.errno == zmq.ETERM:
                    return
                log.warning("bus.recv_failed", error=str(exc))
                gevent.sleep(0.01)
                continue
            self._pool.spawn(self._handle, frames)  # blocks while the pool is full

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
        reply = self._dispatch(body[0])
        self._reply(envelope, reply)

    def _dispatch(self, data: bytes) -> bytes:
        try:
            request = decode_request(data, self._known)
        except RemoteError as exc:
            self.counters["bad_request"] += 1
            return encode_error(exc.type, exc.message, request_id(data))
        try:
            result = self._handlers[request.method](request.args)
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
        if self._sock is None:
            return
        try:
            self._sock.send_multipart([*envelope, payload], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone or its queue full: it will retry
            self.counters["reply_dropped"] += 1
            log.debug("bus.reply_dropped", error=str(exc))

    def stop(self, grace: float = 5.0) -> None:
        """Stop receiving, let running handlers finish (up to ``grace``), close."""
        self._stopping.set()
        if self._loop is not None:
            self._loop.kill(block=True, timeout=1)
        self._pool.join(timeout=grace)
        self._pool.kill(block=True, timeout=1)
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def wait(self) -> None:
        self._stopping.wait()
