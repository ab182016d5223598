"""Live control of one proxy process's sessions: the control log applied (revocations,
operator disconnects) and the open sessions reported to consoleauth.

    control = Control(registry, bus, config.consoleauth_events_url, service="novncproxy")
    control.start()
    mark = control.mark()            # before the token check of a new session
    ...Session(..., mark=mark)       # registry.add() cuts it at once if an event applied
                                     # since the mark names it

Which sessions an event cuts:
  - ``revoke`` with ``token_hash``: every session opened with that token;
  - ``revoke`` of an ``instance_uuid``: that instance's sessions admitted before the event
    (their mark precedes it); a session admitted after it used a token authorized after
    the revocation, and stays;
  - ``disconnect``: the sessions named by id, and/or of an instance, and/or of a client
    (all given filters must match), admitted before the event.
A mark "precedes" an event when it is of another epoch or an earlier seq: a session
admitted before the proxy ever heard the log is treated as older (fail closed).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import gevent
import structlog

from console_common.net.bus import BusClient
from console_common.net.bus.events import EventFollower, Mark
from console_common.net.throttle import Throttle
from console_common.proto.bus.errors import BusError
from console_common.proto.bus.messages import SESSIONS_PAGE
from console_common.sessions.limits import LimitPolicy, Limited, limited
from console_common.sessions.runner import DISCONNECTED, REVOKED, Session, SessionRegistry

log = structlog.get_logger("control")

RECENT = 1000        # events remembered to cut sessions admitted while they were applied
REPORT_S = 0.25      # new and ended sessions reach consoleauth within this
REFRESH_S = 10.0     # every open session (and its byte counts) re-reported this often
PENDING_MAX = 10_000


def precedes(mark: Mark, epoch: str, seq: int) -> bool:
    return mark[0] != epoch or mark[1] < seq


def hits(session: Session, epoch: str, event: dict[str, Any]) -> str | None:
    """The close reason if ``event`` cuts ``session``, else None."""
    if event["kind"] == "revoke":
        if event.get("token_hash"):
            return REVOKED if session.token_hash == event["token_hash"] else None
        if (session.instance_uuid == event.get("instance_uuid")
                and precedes(session.mark, epoch, event["seq"])):
            return REVOKED
        return None
    if event["kind"] == "disconnect":
        ids = event.get("session_ids")
        if ids and session.session_id not in ids:
            return None
        if event.get("instance_uuid") and session.instance_uuid != event["instance_uuid"]:
            return None
        if event.get("client") and session.client != event["client"]:
            return None
        if not ids and not precedes(session.mark, epoch, event["seq"]):
            return None
        return DISCONNECTED
    return None


class Control:
    def __init__(self, registry: SessionRegistry, bus: BusClient, events_urls: Iterable[str],
                 service: str) -> None:
        self.registry = registry
        metrics = registry.metrics
        self.follower = EventFollower(
            tuple(events_urls), bus, self.apply,
            on_link=(lambda up: metrics.events_link.set(1 if up else 0)) if metrics else None)
        self.bus = bus
        self.reporter = SessionReporter(registry, bus, service)
        self._recent: deque[tuple[str, dict[str, Any]]] = deque(maxlen=RECENT)
        self._throttle = Throttle(10.0)
        registry.on_add.append(self._admitted)

    def start(self) -> None:
        self.follower.start()
        self.reporter.start()

    def stop(self) -> None:
        self.follower.stop()
        self.reporter.stop()

    def mark(self) -> Mark:
        return self.follower.mark()

    def claim(self, session: Session, policy: LimitPolicy) -> Limited | None:
        """The cluster-wide per-token and per-instance limits for a session about to open
        (its target not yet connected): consoleauth's session book counts every proxy's
        sessions and records this one in the same step. None: it may open. When
        consoleauth cannot answer, the count this process made at admission is all that
        holds, and the log says so (throttled)."""
        if not (policy.per_token or policy.per_instance):
            return None
        try:
            reply = self.bus.call("claim_session", proxy=self.reporter.proxy,
                                  session=session.row(), per_token=policy.per_token,
                                  per_instance=policy.per_instance)
        except BusError as exc:
            if (held := self._throttle.allow("limits.cluster_unavailable")) is not None:
                log.warning("limits.cluster_unavailable", error=str(exc), suppressed=held,
                            detail="enforcing this process's own sessions only")
            return None
        if reply["granted"]:
            self.reporter.claimed(session)
            return None
        return limited(reply["limit"])

    def release(self, session: Session) -> None:
        """A claimed session that never opened (its target unreachable): its place back."""
        self.reporter.released(session)

    def apply(self, epoch: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._recent.append((epoch, event))
            cut = 0
            for session in self.registry:
                reason = hits(session, epoch, event)
                if reason is not None:
                    session.cut(reason)
                    cut += 1
            if cut or event["kind"] == "disconnect":
                log.info("control.applied", kind=event["kind"], seq=event["seq"], cut=cut,
                         instance_uuid=event.get("instance_uuid"))

    def _admitted(self, session: Session) -> None:
        """A session registered now: cut it if an event applied since its mark names it
        (its token check raced a revocation)."""
        for epoch, event in self._recent:
            if precedes(session.mark, epoch, event["seq"]):
                reason = hits(session, epoch, event)
                if reason is not None:
                    session.cut(reason)
                    return


class SessionReporter:
    """Tells consoleauth which sessions this process holds: new and ended ones within
    REPORT_S, all of them (with byte counts) every REFRESH_S. consoleauth forgets the
    sessions of a proxy that stops reporting (30 s)."""

    def __init__(self, registry: SessionRegistry, bus: BusClient, service: str) -> None:
        self.registry, self.bus = registry, bus
        self.proxy = {"service": service, "host": socket.gethostname()[:255],
                      "pid": os.getpid(), "id": os.urandom(8).hex()}
        self._new: dict[str, Session] = {}
        self._sent: set[str] = set()  # ids consoleauth may have heard of (a report went out)
        self._ended: deque[str] = deque(maxlen=PENDING_MAX)
        self._greenlet: gevent.Greenlet | None = None
        self._throttle = Throttle(10.0)
        registry.on_add.append(self._added)
        registry.on_remove.append(self._removed)

    def _added(self, session: Session) -> None:
        if len(self._new) < PENDING_MAX:
            self._new[session.session_id] = session

    def claimed(self, session: Session) -> None:
        """consoleauth recorded it (claim_session): its end must be reported."""
        self._sent.add(session.session_id)

    def released(self, session: Session) -> None:
        self._removed(session)

    def _removed(self, session: Session) -> None:
        self._new.pop(session.session_id, None)
        if session.session_id in self._sent:  # a report named it (maybe still in flight):
            self._sent.discard(session.session_id)  # consoleauth must hear that it ended
            self._ended.append(session.session_id)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.link_exception(
            lambda g: log.error("control.reporter_died", exc_info=g.exc_info))

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()

    def _run(self) -> None:
        refreshed = time.monotonic()
        while True:
            gevent.sleep(REPORT_S)
            if time.monotonic() - refreshed >= REFRESH_S:
                refreshed = time.monotonic()
                self._new.clear()
                self._send(list(self.registry), list(self._ended))
            elif self._new or self._ended:
                self._send(list(self._new.values()), list(self._ended))

    def _send(self, sessions: list[Session], ended: list[str]) -> None:
        try:
            while sessions or ended:
                page, sessions = sessions[:SESSIONS_PAGE], sessions[SESSIONS_PAGE:]
                gone, ended = ended[:SESSIONS_PAGE], ended[SESSIONS_PAGE:]
                # only sessions still open (an earlier page's call yielded); marked sent
                # before the call: one that ends while it is in flight is reported as
                # ended next time, even if this report lands after its end
                page = [s for s in page if s.session_id in self.registry]
                self._sent.update(s.session_id for s in page)
                self.bus.call("report_sessions", proxy=self.proxy,
                              open=[s.row() for s in page], ended=gone)
                for session in page:
                    self._new.pop(session.session_id, None)
                for _ in gone:
                    self._ended.popleft()
        except BusError as exc:
            if (held := self._throttle.allow("control.report_failed")) is not None:
                log.warning("control.report_failed", error=str(exc), suppressed=held)
