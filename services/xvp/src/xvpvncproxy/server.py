"""The xvp proxy: bounded preamble, token check, target connect, raw RFB relay.

One greenlet per client (spawned from a bounded Pool by the StreamServer)::

    CONNECT /console?token=T HTTP/1.0\\r\\n\\r\\n   ->  HTTP/1.1 200 OK\\r\\n\\r\\n, then RFB

Every refusal is one status line and a close, decided before any RFB byte is relayed:
400 (no token, bad preamble), 401 (invalid or expired token), 503 (consoleauth
unreachable), 502 (VNC server unreachable). Nothing is logged per chunk.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable

import gevent
import structlog
from console_common.net.bus import BusClient
from console_common.sessions.admission import Denial, Denied, check_console_token
from console_common.sessions.control import Control
from console_common.sessions.limits import ClientGate, Limited, LimitPolicy, concurrency
from console_common.proto.bus.messages import ConnectInfo
from console_common.proto.httphead import NEED_DATA, HeadError, HeadReader, Request, query_param
from console_common.sessions.metrics import CONTENT_TYPE, REASON_OF_STATUS, ProxyMetrics
from console_common.net.relay import Stream, TcpStream
from console_common.net.rfbsecurity import Negotiated, SecurityPolicy, negotiate
from console_common.runtime.service import live_greenlets
from console_common.sessions.runner import Session, SessionRegistry
from console_common.net.target import TargetUnreachable, connect_target

CONSOLE_TYPE = "xvpvnc"
READ = 4096  # preamble reads: a head is small, RFB bytes after it are kept

log = structlog.get_logger("xvpvncproxy")

# The answers, spelled as Nova's xvp proxy spells them.
OK = b"HTTP/1.1 200 OK\r\n\r\n"
ANSWERS = {
    400: b"HTTP/1.1 400 Invalid Request\r\n\r\n",
    401: b"HTTP/1.1 401 Not Authorized\r\n\r\n",
    408: b"HTTP/1.1 408 Request Timeout\r\n\r\n",
    429: b"HTTP/1.1 429 Too Many Requests\r\n\r\n",
    431: b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n",
    502: b"HTTP/1.1 502 Bad Gateway\r\n\r\n",
    503: b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
}


class Refused(Exception):
    """The client gets ``status`` (if it can still be told) and the connection closes."""

    def __init__(self, status: int | None, reason: str, metric: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.metric, self.retry_after = metric, retry_after

    @classmethod
    def limited(cls, limited: Limited) -> Refused:
        return cls(429, limited.message, limited.reason, limited.retry_after)


def read_preamble(sock: socket.socket, max_size: int, timeout: float) -> tuple[Request, bytes]:
    """The client's request head and the bytes it already sent after it (RFB)."""
    reader = HeadReader(max_size=max_size)
    try:
        with gevent.Timeout(timeout, TimeoutError):
            while (event := reader.next_event()) is NEED_DATA:
                reader.receive_data(sock.recv(READ))
    except TimeoutError as exc:
        raise Refused(408, f"no complete preamble within {timeout:g}s") from exc
    except HeadError as exc:
        # A client that already left (EOF) cannot be answered.
        raise Refused(None if reader.eof else exc.status, exc.reason) from exc
    except OSError as exc:
        raise Refused(None, f"client error while reading the preamble: {exc}") from exc
    return event, reader.trailing_data


def admit(bus: BusClient, request: Request, metrics: ProxyMetrics | None = None,
          on_invalid: Callable[[], object] | None = None) -> tuple[str, ConnectInfo]:
    """The token from the request target and its connect info, or ``Refused``."""
    token = query_param(request.target, "token")
    if not token:
        raise Refused(400, "no token in the request")
    checked = check_console_token(bus, token, CONSOLE_TYPE, metrics)
    if isinstance(checked, Denied):
        if checked.kind is Denial.UNAVAILABLE:
            raise Refused(503, checked.reason)
        if on_invalid is not None:
            on_invalid()  # the ban counts it; this one still gets its 401
        raise Refused(401, checked.reason)
    return token, checked


def answer(sock: socket.socket, status: int, retry_after: int | None = None) -> None:
    """Best effort: a client that already left is not an error of ours."""
    data = ANSWERS[status]
    if retry_after:
        data = data[:-2] + f"Retry-After: {retry_after}\r\n\r\n".encode()
    try:
        with gevent.Timeout(2, TimeoutError):
            sock.sendall(data)
    except (OSError, TimeoutError):
        pass


class XvpProxy:
    """The StreamServer handler: ``StreamServer(listener, XvpProxy(...).handle, spawn=pool)``."""

    def __init__(self, bus: BusClient, metrics: ProxyMetrics, sessions: SessionRegistry, *,
                 head_max: int, head_timeout: float, connect_timeout: float,
                 limits: LimitPolicy = LimitPolicy(),
                 security: SecurityPolicy | None = None) -> None:
        self._bus, self._metrics, self.sessions = bus, metrics, sessions
        # the RFB security proxy (auth_schemes other than none), else None: relay as is
        self.security = security if security is not None and security.active else None
        self.limits, self.gate = limits, ClientGate(limits)
        self._head_max, self._head_timeout = head_max, head_timeout
        self._connect_timeout = connect_timeout
        self.control: Control | None = None  # live control, set by the service (cli)

    def handle(self, sock: socket.socket, address: tuple) -> None:
        client, client_port = address[0], address[1]
        stream = TcpStream(sock)  # TCP_NODELAY from the first byte
        self._metrics.connections.inc()
        try:
            if (limited := self.gate.arrive(client)) is not None:
                raise Refused.limited(limited)
            request, early = read_preamble(sock, self._head_max, self._head_timeout)
            mark = self.control.mark() if self.control is not None else (None, 0)
            token, info = admit(self._bus, request, self._metrics,
                                on_invalid=lambda: self.gate.invalid_token(client))
            if (limited := concurrency(self.limits, self.sessions, client, token,
                                       info.instance_uuid)) is not None:
                raise Refused.limited(limited)
        except Refused as exc:
            self._refuse(exc, stream, client, client_port)
            return
        session = Session(client=client, client_port=client_port, token=token,
                          instance_uuid=info.instance_uuid, target=f"{info.host}:{info.port}",
                          kind=CONSOLE_TYPE, mark=mark)
        control = self.control
        if control is not None and (limit := control.claim(session, self.limits)):
            self._refuse(Refused.limited(limit), stream, client, client_port)
            return
        self._metrics.sessions.inc()
        with session.bound():
            self._run(session, stream, info, early)

    def _refuse(self, exc: Refused, stream: TcpStream, client: str, client_port: int) -> None:
        reason = exc.metric or REASON_OF_STATUS.get(exc.status, "bad_request")
        self._metrics.refused(reason)
        if exc.status is None:  # it left before a whole preamble (a probe): not a refusal
            log.info("xvp.closed", client=client, client_port=client_port, detail=exc.reason)
        else:  # the same line as novncproxy's: reason a short name, detail the words
            log.info("session.refused", client=client, client_port=client_port,
                     status=exc.status, reason=reason, detail=exc.reason)
        if exc.status is not None:
            answer(stream.sock, exc.status, exc.retry_after)
        stream.close()

    def _run(self, session: Session, stream: TcpStream, info: ConnectInfo, early: bytes) -> None:
        try:
            target = connect_target(info.host, info.port, self._connect_timeout,
                                    info.internal_access_path)
        except TargetUnreachable as exc:
            if self.control is not None:
                self.control.release(session)
            answer(stream.sock, 502)
            stream.close()
            self.sessions.connect_failed(session, exc.reason)
            return
        try:
            stream.sock.sendall(OK)
        except OSError as exc:
            stream.close()
            target.close()
            log.info("xvp.client_gone", reason=exc.strerror or str(exc))
            return
        if early:
            stream.prepend(early)  # RFB bytes the client sent with its preamble go first
        session.on_cut = lambda _reason: _shutdown(stream.sock)
        self.sessions.run(session, stream, target,
                          security=self._security_step(target, info.password))

    def _security_step(self, target: TcpStream, password: str | None
                       ) -> Callable[[Stream, Stream], Negotiated] | None:
        """The security proxy's handshake (None: relay the server's own). On failure the
        viewer gets an RFB failure reason ("console security negotiation failed")."""
        policy = self.security
        if policy is None:
            return None
        return lambda client, _target: negotiate(policy, client, target, password,
                                                 refuse_client=True)


def _shutdown(sock: socket.socket) -> None:
    """Make both relay directions end (a cut session: shutdown, revocation)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def metrics_route(metrics: ProxyMetrics, pool_size: Callable[[], int]
                  ) -> Callable[[str, str], tuple[int, str, bytes]]:
    """The metrics port's pages (net.plainhttp): ``/metrics`` (Prometheus text) and
    ``/healthz`` (``?greenlets=1`` adds the live greenlets: a heap walk, on request)."""

    def route(path: str, query: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE, metrics.render()
        if path == "/healthz":
            health = {"ok": True, "service": "xvpvncproxy", "pid": os.getpid(),
                      "sessions": pool_size()}  # this worker's
            if query == "greenlets=1":
                health["greenlets"] = live_greenlets()
            return 200, "application/json", json.dumps(health).encode()
        return 404, "text/plain", b"not found\n"

    return route
