"""A proxy's side of consoleauth's events socket: follow the control log, miss nothing.

    follower = EventFollower(config.consoleauth_events_url, bus, apply=control.apply)
    follower.start()        # SUB to every address; catch-up calls over ``bus``
    mark = follower.mark()  # (epoch, seq) applied so far: taken before a token check

Events arrive on a ZeroMQ SUB socket as consoleauth logs them; heartbeats (every 0.25 s)
carry the log's head. When an event does not follow the last one applied, when a
heartbeat's head is ahead, or when the epoch changes (consoleauth restarted with a store
of its own, or a new Redis), the follower asks ``events_since`` on the bus and applies what
it missed, in order. So a proxy that was paused, whose link dropped, or that subscribed
late applies every event within one heartbeat (plus one bus call) of hearing consoleauth
again. ``apply(epoch, events)`` runs in the follower's greenlet.

The link is watched: no message for LINK_DOWN_S logs ``events.link_down`` once, the next
one ``events.link_up``. Host names are resolved to every address (replicas), again every
RESOLVE_S so scaled-up replicas are heard too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import structlog
import zmq.green as zmq

from console_common.net.bus.client import BusClient, expand_endpoints
from console_common.net.throttle import Throttle
from console_common.proto.bus.errors import BusError, BusProtocolError
from console_common.proto.bus.events import Published, decode_published

log = structlog.get_logger("events")

LINK_DOWN_S = 1.0   # four heartbeats
RESOLVE_S = 10.0
CATCH_UP_PAGES = 100  # 20 000 events at most per catch-up; the rest at the next heartbeat

Mark = tuple[str | None, int]
Apply = Callable[[str, list[dict[str, Any]]], None]


class EventFollower:
    def __init__(self, urls: Sequence[str], bus: BusClient, apply: Apply,
                 on_link: Callable[[bool], None] | None = None) -> None:
        self.urls, self.bus, self._apply = tuple(urls), bus, apply
        self._on_link = on_link
        self.epoch: str | None = None
        self.seq = 0
        self.link_up = False
        self._sock: Any = None
        self._connected: set[str] = set()
        self._greenlet: gevent.Greenlet | None = None
        self._throttle = Throttle(10.0)
        self._behind = True  # catch up at the first chance (start-up)

    def mark(self) -> Mark:
        return self.epoch, self.seq

    def start(self) -> None:
        self._sock = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        if self.bus.curve is not None:  # the events socket is consoleauth's: the same key
            self.bus.curve.apply(self._sock)
        self._resolve()
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.link_exception(
            lambda g: log.error("events.follower_died", exc_info=g.exc_info))

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    # --- the loop --------------------------------------------------------------------------

    def _resolve(self) -> None:
        wanted = set(expand_endpoints(self.urls))
        for endpoint in sorted(wanted - self._connected):
            try:
                self._sock.connect(endpoint)
            except zmq.ZMQError as exc:
                log.warning("events.connect_failed", endpoint=endpoint, error=str(exc))
                continue
            self._connected.add(endpoint)
        for endpoint in sorted(self._connected - wanted):
            try:
                self._sock.disconnect(endpoint)
            except zmq.ZMQError:
                pass
            self._connected.discard(endpoint)

    def _run(self) -> None:
        heard = time.monotonic()
        resolved = heard
        while True:
            if self._behind:
                self._catch_up()
            if self._sock.poll(int(LINK_DOWN_S * 1000 / 2)):
                data = self._sock.recv()
                heard = time.monotonic()
                self._link(True)
                try:
                    self._receive(decode_published(data))
                except BusProtocolError as exc:
                    if (held := self._throttle.allow("events.bad_message")) is not None:
                        log.warning("events.bad_message", error=str(exc), suppressed=held)
            elif time.monotonic() - heard > LINK_DOWN_S:
                self._link(False)
            if time.monotonic() - resolved > RESOLVE_S:
                resolved = time.monotonic()
                self._resolve()

    def _link(self, up: bool) -> None:
        if up == self.link_up:
            return
        self.link_up = up
        if up:
            log.info("events.link_up", endpoints=sorted(self._connected))
        else:
            log.warning("events.link_down", endpoints=sorted(self._connected),
                        silent_s=LINK_DOWN_S)
        if self._on_link is not None:
            self._on_link(up)

    def _receive(self, published: Published) -> None:
        event = published.event
        if published.epoch == self.epoch and event is not None and event["seq"] == self.seq + 1:
            self.seq = event["seq"]
            self._apply(self.epoch, [event])
        elif published.epoch != self.epoch or published.head > self.seq:
            self._behind = True
            self._catch_up()

    def _catch_up(self) -> None:
        """Ask the log for what follows the last event applied; apply it in order."""
        try:
            for _ in range(CATCH_UP_PAGES):
                first = self.epoch is None  # at start-up there is nothing to catch up on
                result = self.bus.call("events_since", epoch=self.epoch, seq=self.seq)
                if result["truncated"] and not first:
                    log.warning("events.lost", epoch=result["epoch"], after=self.seq,
                                hint="the control log no longer holds every event missed")
                if result["epoch"] != self.epoch:
                    if self.epoch is not None:
                        log.info("events.new_epoch", old=self.epoch, new=result["epoch"])
                    self.epoch, self.seq = result["epoch"], 0
                    if first:
                        self.seq = result["seq"]
                if result["events"]:
                    self.seq = result["events"][-1]["seq"]
                    self._apply(self.epoch, result["events"])
                if not result["more"]:
                    self._behind = False
                    return
        except BusError as exc:
            if (held := self._throttle.allow("events.catch_up_failed")) is not None:
                log.warning("events.catch_up_failed", error=str(exc), suppressed=held)
