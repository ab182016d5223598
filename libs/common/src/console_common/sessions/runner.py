"""One console session, for either proxy: log context, RFB observation, close reason.

    session = Session(client="10.0.0.5", client_port=51234, token=token,
                      instance_uuid=info.instance_uuid,
                      target=f"{info.host}:{info.port}", kind="novnc")
    with session.bound():                        # structlog contextvars for this greenlet
        try:
            target = connect_target(...)
        except TargetUnreachable as exc:
            session.connect_failed(exc.reason)   # session.end close_reason=connect_failed
            return
        registry.add(session)                    # so shutdown/revocation can cut it
        session.on_cut = lambda reason: ...      # how the proxy closes its client side
        try:
            session.run(client_stream, target)   # session.start, relay, session.end
        finally:
            registry.remove(session)

Logged once per session, never per frame or chunk: ``session.start`` and ``session.end``
with ``session_id``, ``token_id`` (never the token), ``instance_uuid``, ``client`` (the
address only, the same field in both proxies), ``client_port`` (when the client is the
peer itself, not a forwarded address), ``target``; the end adds ``bytes_up``, ``bytes_down``, ``duration_s``, ``close_reason`` and
what the passive ``RFBObserver`` learnt (``rfb_version``, ``security_type``,
``desktop_name``). The observer is fed through the relay's observe hooks only until the
RFB handshake is done (or it gave up); afterwards the relay stops calling them.

With a ``security`` step (the RFB security proxy, ``net.rfbsecurity``) the session first
authenticates to the VNC server and greets the client itself; the end line then names the
scheme used (``security_scheme``), and a failure ends the session with
``close_reason=security_failed`` and its cause in ``close_detail`` (never a password).

``close_reason`` is short and stable (for logs and metrics): ``client_closed``,
``target_closed``, ``client_error``, ``target_error``, ``connect_failed``,
``security_failed``, ``shutdown``,
``revoked``, ``killed``, or what the client stream (or its error) names in a
``close_reason`` attribute (novncproxy: ``protocol_error``, ``message_too_big``, ...).
Details of an error (the stream's ``error`` attribute, or the relay's) go to
``close_detail``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import structlog

from console_common.sessions.metrics import ProxyMetrics
from console_common.sessions.recorder import Recorder, RecordingPolicy
from console_common.net.relay import RelayResult, Stream, relay
from console_common.net.rfbsecurity import Negotiated, SecurityFailed
from console_common.proto.rfb.observer import RFBObserver
from console_common.proto.tokens import token_hash, token_id

log = structlog.get_logger("session")

# A session cut from outside: the reason is also what the client is told, in the proxy's words.
SHUTDOWN, REVOKED, DISCONNECTED = "shutdown", "revoked", "disconnected"
# ... and by the session clock (sessions.limits): time limits, and clients that read nothing
IDLE_TIMEOUT, MAX_AGE = "idle_timeout", "max_age"
PEER_DEAD, CLIENT_STALLED = "peer_dead", "client_stalled"


class Session:
    def __init__(self, *, client: str, token: str, instance_uuid: str, target: str,
                 kind: str = "console", observe_rfb: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 client_port: int | None = None,
                 mark: tuple[str | None, int] = (None, 0)) -> None:
        self.session_id = os.urandom(8).hex()
        self.kind = kind
        self.token_id = token_id(token)
        self.token_hash = token_hash(token)  # what a revocation of one token names
        self.instance_uuid = instance_uuid
        self.client = client
        self.mark = mark  # the control log applied when it was admitted (sessions.control)
        self.started_at = time.time()
        self.context: dict[str, Any] = {
            "session_id": self.session_id,
            "token_id": self.token_id,
            "instance_uuid": instance_uuid,
            "client": client,
            "target": target,
        }
        if client_port is not None:
            self.context["client_port"] = client_port
        self.observer = RFBObserver() if observe_rfb else None
        # Takes the relayed bytes when recording is on (SessionRegistry.run sets it; a
        # security proxy feeds it what the client sees): sessions.recorder.Recorder.
        self.recorder: Recorder | None = None
        self.on_cut: Callable[[str], None] | None = None
        self.cut_reason: str | None = None
        self.result: RelayResult | None = None
        self.client_stream: Stream | None = None  # while relaying (the clock pings it)
        self.close_reason: str | None = None
        self._clock = clock
        self._started = clock()

    @contextlib.contextmanager
    def bound(self) -> Iterator[Session]:
        """Bind the session's fields to every log line of this greenlet (and the pumps it
        spawns through the relay, which copy the context)."""
        with structlog.contextvars.bound_contextvars(**self.context):
            yield self

    def connect_failed(self, reason: str) -> None:
        self.close_reason = "connect_failed"
        log.warning("session.end", close_reason="connect_failed", close_detail=reason,
                    bytes_up=0, bytes_down=0, duration_s=self._duration(), kind=self.kind)

    def run(self, client: Stream, target: Stream, drain: float = 2.0,
            security: Callable[[Stream, Stream], Negotiated] | None = None) -> RelayResult:
        """Relay until both directions end; log ``session.start`` and ``session.end``.
        ``security(client, target)``: the security proxy's handshake, before the relay."""
        log.info("session.start", kind=self.kind)
        end_fields: dict[str, Any] = {}
        if security is not None:
            try:
                done = security(client, target)
            except SecurityFailed as exc:
                return self._security_failed(exc, client, target)
            target = done.target
            end_fields["security_scheme"] = done.scheme
            if self.observer is not None:  # the handshake the client saw
                self.observer.server_data(done.to_client)
                self.observer.client_data(done.from_client)
            if self.recorder is not None:  # recorded as the client saw it: no password
                self.recorder.server_data(done.to_client)
                self.recorder.client_data(done.from_client)
        observer = self.observer
        up = down = None
        recorder = self.recorder
        if observer is not None or recorder is not None:
            # Each returns whether it still wants chunks: once neither the handshake
            # observer nor the recorder does, the relay stops calling (and may splice).
            def up(data: bytes) -> bool:
                watching = False
                if observer is not None and observer.active:
                    observer.client_data(data)
                    watching = observer.active
                if recorder is not None and recorder.client_data(data):
                    watching = True
                return watching

            def down(data: bytes) -> bool:
                watching = False
                if observer is not None and observer.active:
                    observer.server_data(data)
                    watching = observer.active
                if recorder is not None and recorder.server_data(data):
                    watching = True
                return watching

        result = RelayResult()
        self.result = result
        self.client_stream = client
        try:
            relay(client, target, drain, observe_up=up, observe_down=down, result=result)
        finally:
            self.close_reason = self._close_reason(result, client)
            fields: dict[str, Any] = {
                "close_reason": self.close_reason,
                "bytes_up": result.totals["bytes_up"],
                "bytes_down": result.totals["bytes_down"],
                "duration_s": self._duration(),
                "kind": self.kind,
            }
            detail = getattr(client, "error", "") or (result.reason if result.error else "")
            if detail and self.cut_reason is None:
                fields["close_detail"] = detail
            if recorder is not None:
                recorder.close({k: fields[k] for k in ("close_reason", "bytes_up",
                                                       "bytes_down", "duration_s")})
                fields["recording"] = recorder.path
            if observer is not None:
                info = observer.info()
                fields.update(rfb_version=info["rfb_version"],
                              security_type=info["security_type"],
                              desktop_name=info["desktop_name"])
            log.info("session.end", **fields, **end_fields)
        return result

    def _security_failed(self, exc: SecurityFailed, client: Stream,
                         target: Stream) -> RelayResult:
        result = RelayResult()
        result.reason = exc.close_reason
        self.result = result
        self.close_reason = self.cut_reason or exc.close_reason
        client.close()
        target.close()
        level = log.warning if exc.close_reason == "security_failed" else log.info
        level("session.end", close_reason=self.close_reason, close_detail=exc.cause,
              bytes_up=0, bytes_down=0, duration_s=self._duration(), kind=self.kind)
        return result

    def age(self) -> float:
        return self._clock() - self._started

    def row(self) -> dict[str, Any]:
        """What consoleauth's session list shows of it."""
        return {"session_id": self.session_id, "kind": self.kind,
                "instance_uuid": self.instance_uuid, "client": self.client,
                "started": self.started_at, "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down, "token_id": self.token_id}

    def cut(self, reason: str) -> gevent.Greenlet | None:
        """End the session from outside (shutdown, revocation, disconnect): marked at
        once; the proxy's ``on_cut`` (tell the client why, make the relay end) runs in a
        greenlet of its own, returned, since telling a client that reads nothing can take
        a second (novncproxy's close frame): one stuck client must not delay the others."""
        if self.cut_reason is not None:
            return None
        self.cut_reason = reason
        if self.on_cut is None:
            return None
        return gevent.spawn(self._run_cut, self.on_cut, reason)

    def _run_cut(self, on_cut: Callable[[str], None], reason: str) -> None:
        with self.bound():
            try:
                on_cut(reason)
            except Exception:  # the relay ends anyway; never a silent greenlet death
                log.warning("session.cut_failed", reason=reason, exc_info=True)

    @property
    def bytes_up(self) -> int:
        return self.result.totals["bytes_up"] if self.result else 0

    @property
    def bytes_down(self) -> int:
        return self.result.totals["bytes_down"] if self.result else 0

    @property
    def sending_down(self) -> bool:
        """A send to the client is under way (it waits while the client reads nothing)."""
        return self.result.sending["bytes_down"] if self.result else False

    def _duration(self) -> float:
        return round(self._clock() - self._started, 3)

    def _close_reason(self, result: RelayResult, client: Stream) -> str:
        if self.cut_reason is not None:
            return self.cut_reason
        for named in (getattr(client, "close_reason", None),
                      getattr(result.error, "close_reason", None)):
            if isinstance(named, str):
                return named
        reason = result.reason
        for short in ("client_closed", "target_closed", "client_error", "target_error"):
            if reason.startswith(short):
                return short
        return reason


class SessionRegistry:
    """The open sessions of one proxy process, so they can be cut from outside, and the
    one way both proxies run a session: registered, counted, relayed, unregistered."""

    def __init__(self, metrics: ProxyMetrics | None = None) -> None:
        self._sessions: dict[str, Session] = {}
        self.metrics = metrics
        self.recording: RecordingPolicy | None = None  # record_dir set: one file a session
        # hooks of live control (sessions.control): run as a session joins or leaves
        self.on_add: list[Callable[[Session], None]] = []
        self.on_remove: list[Callable[[Session], None]] = []

    def run(self, session: Session, client: Stream, target: Stream, **run: Any) -> None:
        """Relay until either side ends or the session is cut (``session.on_cut`` set by
        the proxy: how it closes its client side). Counted once, at the end."""
        self.add(session)
        if self.recording is not None and session.recorder is None:
            session.recorder = self.recording.open(session)
        if self.metrics is not None:
            self.metrics.relaying()
        try:
            session.run(client, target, **run)
        finally:
            if session.recorder is not None:  # whatever way run() ended (no-op if it closed)
                session.recorder.close({"close_reason": session.close_reason})
            self.remove(session)
            if self.metrics is not None:
                self.metrics.ended(session, relayed=True)

    def connect_failed(self, session: Session, reason: str) -> None:
        """The target could not be reached: logged and counted as a session that ended."""
        session.connect_failed(reason)
        if self.metrics is not None:
            self.metrics.ended(session, relayed=False)

    def add(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        for hook in self.on_add:
            hook(session)

    def remove(self, session: Session) -> None:
        if self._sessions.pop(session.session_id, None) is not None:
            for hook in self.on_remove:
                hook(session)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def cut_all(self, reason: str = SHUTDOWN, wait: float = 2.0) -> int:
        """Cut every session, all at once; wait up to ``wait`` s for their clients to be
        told (a shutdown kills what is left right after)."""
        sessions = list(self._sessions.values())
        cuts = [g for g in (session.cut(reason) for session in sessions) if g is not None]
        gevent.joinall(cuts, timeout=wait)
        return len(sessions)
