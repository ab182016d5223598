"""novncproxy's HTTP side: routes, admission with I/O (bus, target), session running.

Routes (GET/HEAD; other methods 405):
  ``/``, ``/vnc_auto.html``, ``/vnc_lite.html``  our console page (static/console.html)
  ``/static/<file>``                            our static dir (the page's JS and CSS)
  ``/novnc/<file>``                             the noVNC client library (``web``)
  ``/healthz``                                  200 when consoleauth answers a ping, else 503
                                                (``?greenlets=1``: also the live greenlets)
  ``/metrics``                                  Prometheus text
  ``/websockify`` (or any path with a token)    plain GET: the admission verdict as JSON,
                                                for the page to explain a refused upgrade
  anything else                                 404; a target starting with ``//`` is 400

WebSocket upgrades (any path, as Nova) are decided by the connection (handler.py) with
``admit``/``prepare_session`` below, before the 101; after the 101 ``run_session`` relays.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import structlog
from console_common.net.bus import BusClient
from console_common.proto.bus import BusError, ConnectInfo
from console_common.proto.httphead import Request, query_param
from console_common.runtime.service import live_greenlets
from console_common.sessions.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from console_common.sessions.metrics import ProxyMetrics
from console_common.net.relay import Stream, TcpStream
from console_common.net.rfbsecurity import (FAILED_REASON, Negotiated, SecurityFailed,
                                            SecurityPolicy, negotiate)
from console_common.sessions.limits import ClientGate, Limited, LimitPolicy, concurrency
from console_common.sessions.runner import (CLIENT_STALLED, DISCONNECTED, IDLE_TIMEOUT,
                                            MAX_AGE, PEER_DEAD, REVOKED, SHUTDOWN,
                                            Session, SessionRegistry)
from console_common.net.target import TargetUnreachable, connect_target
from console_common.runtime.novnc import file_under
from console_common.sessions.admission import Denial, Denied, check_console_token
from console_common.sessions.control import Control
from console_common.net.wsstream import WsStream
from console_common.proto.websocket import Accept, Refusal, server_handshake

from novncproxy import admission
from novncproxy.admission import (
    BAD_REQUEST,
    CONSOLEAUTH_UNAVAILABLE,
    INVALID_TOKEN,
    ORIGIN_REFUSED,
    OriginPolicy,
)

log = structlog.get_logger("novncproxy")

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
PAGE_PATHS = frozenset({"/", "/vnc_auto.html", "/vnc_lite.html"})
WEBSOCKET_PATH = "/websockify"
SESSION_DRAIN = 2.0  # after one side ended, how long the other may still finish

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}
MAX_STATIC_FILE = 8 << 20
STATIC_CACHE_BYTES = 32 << 20

CUT_CLOSES = {SHUTDOWN: (1001, "server shutting down"), REVOKED: (1008, "console revoked"),
              DISCONNECTED: (1008, "console disconnected by operator"),
              IDLE_TIMEOUT: (1000, "console idle timeout"),
              MAX_AGE: (1000, "console session expired")}
# a client that reads nothing cannot be told: its connection is cut without a close frame
UNHEARD_CUTS = frozenset((PEER_DEAD, CLIENT_STALLED))



@dataclass(frozen=True, slots=True)
class Refused:
    """A request we answer with an error before any 101 (JSON body the page understands)."""

    status: int
    error: str  # invalid_token | consoleauth_unavailable | origin_refused | bad_request
    message: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Admitted:
    accept: Accept | None  # None for the plain-GET probe
    token: str
    info: ConnectInfo
    client: str  # an address: the peer's, or the one a trusted proxy forwarded
    client_port: int | None = None  # the peer's port, when the client is the peer
    mark: tuple[str | None, int] = (None, 0)  # the control log before the check (control.py)


@dataclass(slots=True)
class Prepared:
    """An admitted upgrade with its target connected (or the reason it is not)."""

    session: Session
    target: TcpStream | None
    error: str = ""
    password: str | None = field(default=None, repr=False)  # for the security proxy


class StaticFiles:
    """Files under one root, safely joined (no traversal, no dotfiles), cached in memory."""

    def __init__(self, root: Path | None, cache: dict[Path, tuple[bytes, str]]) -> None:
        self.root = root.resolve() if root else None
        self._cache = cache

    def lookup(self, rel: str) -> Path | None:
        return None if self.root is None else file_under(self.root, rel)

    def read(self, path: Path) -> tuple[bytes, str] | None:
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        try:
            if path.stat().st_size > MAX_STATIC_FILE:
                return None
            body = path.read_bytes()  # small files, read once, then served from memory
        except OSError:
            return None
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        if sum(len(b) for b, _ in self._cache.values()) + len(body) <= STATIC_CACHE_BYTES:
            self._cache[path] = (body, etag)
        return body, etag


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def json_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


class ConsoleApp:
    """Routes for plain requests, and the admission decisions the connection asks for."""

    def __init__(self, *, bus: BusClient, metrics: ProxyMetrics, policy: OriginPolicy,
                 novnc_dir: Path | None, static_dir: Path = STATIC_DIR,
                 max_message: int = 1 << 20, connect_timeout: float = 5.0,
                 limits: LimitPolicy = LimitPolicy(),
                 security: SecurityPolicy | None = None) -> None:
        self.bus = bus
        # the RFB security proxy (auth_schemes other than none), else None: relay as is
        self.security = security if security is not None and security.active else None
        self.limits = limits
        self.gate = ClientGate(limits)
        self.metrics = metrics
        self.policy = policy
        self.sessions = SessionRegistry(metrics)
        self.control: Control | None = None  # live control, set by the service (cli)
        self.max_message = max_message
        self.connect_timeout = connect_timeout
        cache: dict[Path, tuple[bytes, str]] = {}
        self.static = StaticFiles(static_dir, cache)
        self.novnc = StaticFiles(novnc_dir, cache)
        self.novnc_dir = novnc_dir

    # --- admission (before any 101) --------------------------------------------------------

    def admit(self, head: Request, peer: str, tls: bool, upgrade: bool,
              peer_port: int | None = None) -> Admitted | Refused:
        """The checks of an upgrade (``upgrade=True``) or of the plain-GET probe, in order:
        target shape, WebSocket handshake, Origin, token."""
        if admission.refused_target(head.target):
            return self._refuse(400, BAD_REQUEST, "request path must not start with //")
        accept = None
        if upgrade:
            verdict = server_handshake(head.method, head.target, head.headers)
            if isinstance(verdict, Refusal):
                return self._refuse(verdict.status, BAD_REQUEST, verdict.reason,
                                    verdict.headers, metric="bad_handshake")
            accept = verdict
        client = admission.client_address(peer, head.header("x-forwarded-for"), self.policy)
        if (limited := self.gate.arrive(client)) is not None:  # before any work for it
            return self._limited(limited)
        scheme = admission.effective_scheme(tls, peer, head.header("x-forwarded-proto"),
                                            self.policy)
        origin = admission.check_origin(head.header("origin"), head.header("host"), scheme,
                                        self.policy)
        if not origin.allowed:
            return self._refuse(403, ORIGIN_REFUSED, origin.reason)
        token = admission.token_from_request(head.target, head.header("cookie"))
        if token is None:
            return self._refuse(403, INVALID_TOKEN, "no console token in the request")
        if not admission.token_is_plausible(token):
            self.metrics.token_checked("invalid")
            self.gate.invalid_token(client)
            return self._refuse(403, INVALID_TOKEN, "invalid or expired console token")
        mark = self.control.mark() if self.control is not None else (None, 0)
        checked = self.check_token(token)
        if isinstance(checked, Refused):
            if checked.status == 403:
                self.gate.invalid_token(client)  # the ban counts; this one still gets 403
            return checked
        if (limited := concurrency(self.limits, self.sessions, client, token,
                                   checked.instance_uuid)) is not None:
            return self._limited(limited)
        return Admitted(accept, token, checked, client, peer_port if client == peer else None,
                        mark)

    def check_token(self, token: str) -> ConnectInfo | Refused:
        checked = check_console_token(self.bus, token, "novnc", self.metrics)
        if not isinstance(checked, Denied):
            return checked
        if checked.kind is Denial.UNAVAILABLE:
            return self._refuse(503, CONSOLEAUTH_UNAVAILABLE, checked.reason)
        return self._refuse(403, INVALID_TOKEN, checked.reason)

    def _limited(self, limited: Limited) -> Refused:
        headers = [("Retry-After", str(limited.retry_after))] if limited.retry_after else []
        return self._refuse(429, limited.reason, limited.message, headers)

    def _refuse(self, status: int, error: str, message: str,
                headers: Iterable[tuple[str, str]] = (), metric: str | None = None) -> Refused:
        self.metrics.refused(metric or error)
        return Refused(status, error, message, tuple(headers))

    def refusal_response(self, refused: Refused, origin: str | None = None
                         ) -> tuple[str, list[tuple[str, str]], bytes]:
        body = json_body({"ok": False, "error": refused.error, "message": refused.message})
        headers = [*refused.headers, ("Content-Type", "application/json"),
                   ("Cache-Control", "no-store"), *_cors(origin)]
        return _status(refused.status), headers, body

    def prepare_session(self, admitted: Admitted) -> Prepared | Refused:
        """The cluster's limits, then connect to the console target (before the 101; a
        refusal is a 429, a target failure is told after the 101)."""
        info = admitted.info
        session = Session(client=admitted.client, client_port=admitted.client_port,
                          token=admitted.token,
                          instance_uuid=info.instance_uuid, target=f"{info.host}:{info.port}",
                          kind="novnc", mark=admitted.mark)
        control = self.control
        if control is not None and (limit := control.claim(session, self.limits)):
            return self._limited(limit)
        with session.bound():
            try:
                target = connect_target(info.host, info.port, self.connect_timeout,
                                        info.internal_access_path)
            except TargetUnreachable as exc:
                if control is not None:
                    control.release(session)
                return Prepared(session, None, exc.reason)
        return Prepared(session, target, password=info.password)

    # --- after the 101 ---------------------------------------------------------------------

    def run_session(self, ws: WsStream, prepared: Prepared) -> None:
        session = prepared.session
        self.metrics.sessions.inc()
        with session.bound():
            if prepared.target is None:
                self.sessions.connect_failed(session, prepared.error)
                ws.close(1011, "console unreachable")
                return

            def on_cut(reason: str) -> None:
                if reason in UNHEARD_CUTS:
                    ws.abort()
                else:
                    ws.cut(*CUT_CLOSES.get(reason, (1008, reason)))

            session.on_cut = on_cut
            self.sessions.run(session, ws, _GuardedTarget(prepared.target, ws),
                              drain=SESSION_DRAIN, security=self._security_step(ws, prepared))

    def _security_step(self, ws: WsStream, prepared: Prepared
                       ) -> Callable[[Stream, Stream], Negotiated] | None:
        """The security proxy's handshake for this session (None: relay the server's own).
        A failure closes the WebSocket 1011 with the documented reason."""
        policy, target, password = self.security, prepared.target, prepared.password
        if policy is None or target is None:
            return None

        def step(client: Stream, _guarded: Stream) -> Negotiated:
            try:
                done = negotiate(policy, client, target, password)
            except SecurityFailed as exc:
                if exc.close_reason == "security_failed":
                    ws.close(1011, FAILED_REASON)
                raise
            done.target = _GuardedTarget(done.target, ws)
            return done

        return step

    # --- plain requests -------------------------------------------------------------------

    def route(self, head: Request, path: str, peer: str, tls: bool
              ) -> tuple[str, list[tuple[str, str]], bytes]:
        """A plain request (``path``: the target's path, percent-decoded): status line,
        headers and body. HEAD and Content-Length are the connection's business."""
        method = head.method
        if admission.refused_target(head.target):
            return self.refusal_response(
                self._refuse(400, BAD_REQUEST, "request path must not start with //"))
        if method not in ("GET", "HEAD"):
            return (_status(405), [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")],
                    b"method not allowed\n")
        if path in PAGE_PATHS:
            return self._file(self.static, "console.html", head, page=True)
        if path.startswith("/static/"):
            return self._file(self.static, path[len("/static/"):], head)
        if path.startswith("/novnc/"):
            return self._file(self.novnc, path[len("/novnc/"):], head)
        if path == "/healthz":
            return self._healthz(query_param(head.target, "greenlets") == "1")
        if path == "/metrics":
            return _status(200), [("Content-Type", METRICS_CONTENT_TYPE),
                                  ("Cache-Control", "no-store")], self.metrics.render()
        if path == WEBSOCKET_PATH or admission.token_from_request(head.target) is not None:
            return self._probe(head, peer, tls)
        return _status(404), [("Content-Type", "text/plain")], b"not found\n"

    def _probe(self, head: Request, peer: str, tls: bool
               ) -> tuple[str, list[tuple[str, str]], bytes]:
        """A plain GET on the WebSocket path: the same checks as an upgrade, as JSON."""
        origin = head.header("origin")
        verdict = self.admit(head, peer, tls,
                             upgrade=False)
        if isinstance(verdict, Refused):
            return self.refusal_response(verdict, origin)
        return (_status(200), [("Content-Type", "application/json"),
                               ("Cache-Control", "no-store"), *_cors(origin)],
                json_body({"ok": True}))

    def _healthz(self, greenlets: bool = False) -> tuple[str, list[tuple[str, str]], bytes]:
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        counts = {"greenlets": live_greenlets()} if greenlets else {}  # a heap walk: on request
        try:
            pong = self.bus.call("ping")
        except BusError as exc:  # unreachable, garbage, or consoleauth's store is down
            body = {"ok": False, "error": CONSOLEAUTH_UNAVAILABLE,
                    "message": getattr(exc, "type", None) or str(exc), **counts}
            return _status(503), headers, json_body(body)
        body = {"ok": True, "consoleauth": {k: pong.get(k) for k in ("service", "version", "store")}
                if isinstance(pong, dict) else {},
                "sessions": len(self.sessions), "pid": os.getpid(), **counts}  # this worker's
        return _status(200), headers, json_body(body)

    def _file(self, files: StaticFiles, rel: str, head: Request, page: bool = False
              ) -> tuple[str, list[tuple[str, str]], bytes]:
        path = files.lookup(rel)
        found = files.read(path) if path is not None else None
        if found is None:
            return _status(404), [("Content-Type", "text/plain")], b"not found\n"
        body, etag = found
        headers = [
            ("Content-Type", CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")),
            ("Cache-Control", "no-cache" if page else "public, max-age=300"),
            ("ETag", etag),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if page:
            headers.append(("Referrer-Policy", "no-referrer"))  # the URL holds the token
        if head.header("if-none-match") == etag:
            return _status(304), headers, b""
        return _status(200), headers, body


def _cors(origin: str | None) -> list[tuple[str, str]]:
    """Let a page on another origin read the JSON verdict (it says nothing about a token
    to an origin we refuse, because Origin is checked before the token)."""
    if not origin:
        return []
    return [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]


class _GuardedTarget:
    """The target stream; when it fails, the client is told 1011 rather than 1000."""

    __slots__ = ("_recv", "_send", "_stream", "_ws")

    def __init__(self, stream: Stream, ws: WsStream) -> None:
        self._stream, self._ws = stream, ws
        self._recv, self._send = stream.recv, stream.sendall

    def _guarded(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError:
            self._ws.cut_target_lost()
            raise

    def recv(self, size: int) -> bytes:
        return self._guarded(self._recv, size)

    def sendall(self, data: bytes) -> None:
        self._guarded(self._send, data)

    # the relay's zero-copy path (console_common.net.splice), guarded the same way
    @property
    def splice_fd(self) -> int | None:
        return getattr(self._stream, "splice_fd", None)

    def fill_pipe(self, pipe: Any, size: int) -> int:
        return self._guarded(self._stream.fill_pipe, pipe, size)  # type: ignore[attr-defined]

    def send_pipe(self, pipe: Any) -> None:
        self._guarded(self._stream.send_pipe, pipe)  # type: ignore[attr-defined]

    def shutdown_write(self) -> None:
        self._stream.shutdown_write()

    def close(self) -> None:
        self._stream.close()
