"""consoleauth's events socket: a ZeroMQ PUB that sends each control-log event as it is
logged, and a heartbeat with the log's head every HEARTBEAT_S.

A subscriber that missed an event (it was not connected yet, its link dropped, the PUB's
high-water mark dropped it) sees the gap in the next heartbeat and asks events_since: the
socket is the fast path, the log is what makes delivery certain.
"""

from __future__ import annotations

from typing import Any

import gevent
import structlog
import zmq

from console_common.net.throttle import Throttle
from console_common.proto.bus.events import encode_published
from consoleauth.stores import StoreUnavailable

log = structlog.get_logger("consoleauth")

HEARTBEAT_S = 0.25
SNDHWM = 10_000


class Publisher:
    def __init__(self, endpoint: str, control_log: Any, interval: float = HEARTBEAT_S,
                 context: zmq.Context | None = None, curve: Any = None) -> None:
        self._curve = curve
        self.endpoint, self._log, self.interval = endpoint, control_log, interval
        self._context = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._beat: gevent.Greenlet | None = None
        self._throttle = Throttle(10.0)
        self.bound = endpoint

    def start(self) -> str:
        sock = self._context.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        if self._curve is not None:
            self._curve.apply(sock, domain="events")
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError:
            sock.close()
            raise
        self._sock = sock
        self.bound = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._beat = gevent.spawn(self._heartbeats)
        return self.bound

    def publish(self, epoch: str, event: dict[str, Any]) -> None:
        self._send(encode_published(epoch, event["seq"], event))

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            return
        try:
            self._sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            pass  # a slow subscriber: it catches up from the log
        except zmq.ZMQError as exc:
            if (held := self._throttle.allow("events.send_failed")) is not None:
                log.warning("events.send_failed", error=str(exc), suppressed=held)

    def _heartbeats(self) -> None:
        while True:
            try:
                epoch, head = self._log.head()
            except StoreUnavailable as exc:
                if (held := self._throttle.allow("events.head_failed")) is not None:
                    log.warning("events.head_failed", error=str(exc), suppressed=held)
            else:
                self._send(encode_published(epoch, head))
            gevent.sleep(self.interval)

    def stop(self) -> None:
        if self._beat is not None:
            self._beat.kill()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
