"""`consolectl vnc-bridge URL`: a local port any VNC viewer can use to open a console link.

Each local connection is forwarded through the console URL the user was given:

- xvp (``http://host:6081/console?token=T``): TCP to the proxy, the xvp preamble
  (``CONNECT /console?token=T HTTP/1.1``), expect ``200``, then raw RFB;
- novnc (``http(s)://host:6080/vnc_auto.html?path=%3Ftoken%3DT&token=T``): a WebSocket
  client to ``ws(s)://host:6080/websockify?token=T`` (masked binary frames), RFB inside.

At start one preflight request checks the link (xvp: preamble and close; novnc: a plain GET
of the WebSocket path, which novncproxy answers with a JSON verdict), so a refused token
ends the command at once with exit code 1 instead of failing on the viewer's first connect.
The token itself is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import gevent
import gevent.lock
import gevent.pool
from console_common.proto.httphead import NEED_DATA, HeadError, Response, StatusReader
from console_common.net.relay import RelayResult, TcpStream, relay
from console_common.runtime.service import EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, Shutdown
from console_common.net.wsstream import WsStream
from console_common.proto.websocket import (
    HandshakeError,
    check_client_response,
    client_key,
    client_request,
)
from gevent import socket
from gevent.server import StreamServer

HEAD_MAX = 8192
BODY_MAX = 64 * 1024
READ = 64 * 1024
MAX_CONNECTIONS = 64
REFUSED = "the console link was refused: invalid or expired token"
UNREACHABLE = "machine unreachable: the proxy cannot reach the console's VNC server"


class BridgeError(Exception):
    """A console link that cannot be used now; ``exit_code`` follows DESIGN's exit codes."""

    def __init__(self, message: str, exit_code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL",
                        help="console URL from get-vnc-console: an xvpvnc URL "
                             "(http://host:6081/console?token=T) or a novnc URL "
                             "(http(s)://host:6080/vnc_auto.html?path=...&token=T); "
                             "- reads it from stdin (keeps the token out of `ps`)")
    parser.add_argument("--listen", default="127.0.0.1:5999", metavar="HOST:PORT",
                        help="local address VNC viewers connect to (port 0: any free port) "
                             "[default: %(default)s]")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="deadline to reach the proxy and get its answer "
                             "[default: %(default)s]")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the proxy's TLS certificate (https links)")


# --- the console link ----------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    kind: str  # "xvp" or "novnc"
    host: str
    port: int
    tls: bool
    token: str
    path: str  # xvp: the preamble's target; novnc: the WebSocket path

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        return self.address if self.port != default else self.address.rsplit(":", 1)[0]


def parse_link(url: str) -> Link:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise BridgeError(f"not a console URL: expected http(s)://HOST:PORT/...?token=..., "
                          f"got scheme {parts.scheme!r}", EXIT_USAGE)
    try:
        port = parts.port
    except ValueError as exc:
        raise BridgeError("the console URL has a bad port", EXIT_USAGE) from exc
    tls = parts.scheme in ("https", "wss")
    novnc = (parts.scheme.startswith("ws") or parts.path.endswith(".html") or "path" in query
             or parts.path.rstrip("/").endswith("websockify"))
    token = (query.get("token") or [""])[0] or _token_in_path(query)
    if not token:
        raise BridgeError("the console URL carries no token (…?token=…)", EXIT_USAGE)
    if novnc:
        return Link("novnc", parts.hostname, port or (443 if tls else 80), tls, token,
                    f"/websockify?token={quote(token, safe='')}")
    if tls:
        raise BridgeError("xvp console links are plain http://", EXIT_USAGE)
    target = f"{parts.path or '/console'}?{parts.query}"
    return Link("xvp", parts.hostname, port or 6081, False, token, target)


def _token_in_path(query: dict[str, list[str]]) -> str:
    inner = (query.get("path") or [""])[0]  # "?token=T" or "websockify?token=T"
    return (parse_qs(urlsplit(inner).query).get("token") or [""])[0]


# --- talking to the proxy ------------------------------------------------------------------


class Connector:
    """Opens sockets to the proxy and reads its answers, each within ``timeout``."""

    def __init__(self, link: Link, timeout: float, insecure: bool) -> None:
        self.link, self.timeout = link, timeout
        self._tls: ssl.SSLContext | None = None
        if link.tls:
            self._tls = ssl.create_default_context()
            if insecure:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    def open(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.link.host, self.link.port), self.timeout)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.link.host)
        except (OSError, ssl.SSLError) as exc:
            raise BridgeError(f"cannot reach the console proxy at {self.link.address}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return sock

    def exchange(self, sock: socket.socket, request: bytes) -> tuple[Response, bytes]:
        """Send ``request``; the proxy's response head and the bytes that came after it."""
        reader = StatusReader(max_size=HEAD_MAX)
        try:
            with gevent.Timeout(self.timeout, TimeoutError):
                sock.sendall(request)
                while (event := reader.next_event()) is NEED_DATA:
                    reader.receive_data(sock.recv(READ))
        except TimeoutError as exc:
            raise BridgeError(f"no answer from the console proxy at {self.link.address} "
                              f"within {self.timeout:g}s") from exc
        except HeadError as exc:
            raise BridgeError(f"the console proxy at {self.link.address} answered with "
                              f"something else than HTTP ({exc.reason})") from exc
        except OSError as exc:
            raise BridgeError(f"the console proxy at {self.link.address} dropped the "
                              f"connection: {exc.strerror or exc}") from exc
        return event, reader.trailing_data

    def read_body(self, sock: socket.socket, head: Response, early: bytes) -> bytes:
        length = min(int(head.header("content-length") or BODY_MAX), BODY_MAX)
        body = bytearray(early)
        with gevent.Timeout(self.timeout, False):
            while len(body) < length and (data := sock.recv(READ)):
                body += data
        return bytes(body[:length])


def refusal(status: int, reason: str, detail: str = "") -> BridgeError:
    """The user-facing error for a proxy's non-success answer."""
    if status in (401, 403):
        return BridgeError(REFUSED, EXIT_REFUSED)
    if status == 502:
        return BridgeError(UNREACHABLE)
    if status == 503:
        return BridgeError("the console service is unavailable right now (503); try again")
    extra = f": {detail}" if detail else ""
    return BridgeError(f"the console proxy refused the connection: {status} {reason}{extra}")


def preflight(conn: Connector) -> None:
    """Check the link once before listening; raises ``BridgeError`` with a clear message."""
    link = conn.link
    sock = conn.open()
    try:
        if link.kind == "xvp":
            xvp_handshake(conn, sock)
            return
        request = (f"GET {link.path} HTTP/1.1\r\nHost: {link.host_header}\r\n"
                   "Accept: application/json\r\nConnection: close\r\n\r\n").encode("ascii")
        head, early = conn.exchange(sock, request)
        verdict = _json(conn.read_body(sock, head, early))
        if head.status >= 300 or verdict.get("ok") is False:
            raise refusal(head.status, head.reason, str(verdict.get("error") or ""))
    finally:
        sock.close()


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def xvp_handshake(conn: Connector, sock: socket.socket) -> bytes:
    """Send the xvp preamble and require ``200``; the bytes that came after the answer."""
    link = conn.link
    preamble = f"CONNECT {link.path} HTTP/1.1\r\nHost: {link.host_header}\r\n\r\n"
    head, early = conn.exchange(sock, preamble.encode("ascii"))
    if head.status != 200:
        raise refusal(head.status, head.reason)
    return early


def open_remote(conn: Connector) -> TcpStream | WsStream:
    """A Stream to the console through the proxy, ready for RFB, or ``BridgeError``."""
    link = conn.link
    sock = conn.open()
    try:
        if link.kind == "xvp":
            early = xvp_handshake(conn, sock)
            stream = TcpStream(sock)
            if early:
                stream.prepend(early)  # RFB bytes that came with the 200
            return stream
        key = client_key(os.urandom(16))
        head, early = conn.exchange(sock, client_request(link.host_header, link.path, key,
                                                         subprotocols=["binary"]))
        if head.status != 101:
            raise refusal(head.status, head.reason)
        try:
            check_client_response(head.status, head.headers, key, offered=["binary"])
        except HandshakeError as exc:
            raise BridgeError(f"bad WebSocket answer from {link.address}: {exc}") from exc
        return WsStream(sock, max_message=1 << 30, early=early, role="client",
                        owns_socket=True)
    except BaseException:
        sock.close()
        raise


# --- WebSocket client role as a relay Stream ------------------------------------------------


# --- the local listener --------------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BridgeError(f"--listen {value!r}: expected HOST:PORT", EXIT_USAGE)
    return host.strip("[]") or "127.0.0.1", int(port)


class Bridge:
    def __init__(self, conn: Connector, say: Callable[[str], None]) -> None:
        self._conn, self._say = conn, say

    def handle(self, sock: socket.socket, address: tuple) -> None:
        local = TcpStream(sock)
        peer = f"{address[0]}:{address[1]}"
        try:
            remote = open_remote(self._conn)
        except BridgeError as exc:
            self._say(f"connection from {peer}: {exc}")
            local.close()
            return
        started = time.monotonic()
        result = relay(local, remote, drain=5.0, result=RelayResult())
        message = f"connection from {peer} ended after {time.monotonic() - started:.1f}s " \
                  f"({result.totals['bytes_up']} bytes up, {result.totals['bytes_down']} down)"
        if isinstance(remote, WsStream) and remote.close_received == 1011:
            message += f": {UNREACHABLE}"
        elif isinstance(remote, WsStream) and remote.close_received == 1008:
            message += ": the console was revoked"
        self._say(message)


def run(config: Any, args: argparse.Namespace) -> int:
    def say(message: str) -> None:
        print(f"vnc-bridge: {message}", file=sys.stderr, flush=True)

    try:
        link = parse_link(sys.stdin.readline().strip() if args.url == "-" else args.url)
        listen = parse_listen(args.listen)
        conn = Connector(link, args.connect_timeout, args.insecure)
        preflight(conn)
    except BridgeError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    pool = gevent.pool.Pool(MAX_CONNECTIONS)
    server = StreamServer(listen, Bridge(conn, say).handle, spawn=pool)
    try:
        server.start()
    except OSError as exc:
        say(f"error: cannot listen on {args.listen}: {exc.strerror or exc}")
        return EXIT_UNAVAILABLE
    host = listen[0]
    shown = f"[{host}]" if ":" in host else host
    print(f"Forwarding VNC connections on {shown}:{server.server_port} to the {link.kind} "
          f"console at {link.address}.\nConnect a VNC viewer to {shown}::{server.server_port} "
          f"(Ctrl-C to stop).", flush=True)
    shutdown = Shutdown().install()
    shutdown.wait()
    server.close()
    pool.join(timeout=1)
    pool.kill(block=True, timeout=2)
    return EXIT_OK
