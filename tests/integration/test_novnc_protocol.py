"""novncproxy as a real process, against real consoleauth, a TCP echo target, a CONNECT
endpoint and a real Xvnc, driven by a raw-socket WebSocket client written here (frames
built and masked by hand, server frames parsed by hand)."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import require
from tests.support import ServiceProcess, free_port, remember_secret, wait_bus, wait_tcp

XVNC = "/usr/bin/Xvnc"
WAIT = 15.0


# ---- a WebSocket client by hand -------------------------------------------------------------


def mask_payload(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    stream = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ stream).to_bytes(n, "little")


def frame(opcode: int, payload: bytes = b"", fin: bool = True, masked: bool = True,
          declared: int | None = None) -> bytes:
    n = len(payload) if declared is None else declared
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if masked else 0
    if n < 126:
        head = bytes((b0, mbit | n))
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_payload(payload, key)


OPEN_CLIENTS: list[WsClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class WsClient:
    def __init__(self, port: int, path: str = "/websockify", *, host: str | None = None,
                 origin: str | None = None, subprotocols: tuple[str, ...] = (),
                 headers: tuple[tuple[str, str], ...] = (), tls: bool = False,
                 version: str = "13") -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            raw = ctx.wrap_socket(raw, server_hostname="localhost")
        self.sock = raw
        self.buf = b""
        self.data = bytearray()  # binary payload received beyond what recv_bytes returned
        OPEN_CLIENTS.append(self)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
                 "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 f"Sec-WebSocket-Version: {version}"]
        if subprotocols:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
        if origin:
            lines.append(f"Origin: {origin}")
        lines += [f"{k}: {v}" for k, v in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.reply = self._read_head()

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 18)
        self.buf += data
        return bool(data)

    def _read_head(self) -> Reply:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a response head: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        body = b""
        if status != 101:
            length = int(headers.get("content-length", "0"))
            while len(self.buf) < length:
                if not self._fill():
                    break
            body, self.buf = self.buf[:length], self.buf[length:]
        return Reply(status, headers, body)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("closed mid-frame")

    def recv_frame(self) -> tuple[int, bytes]:
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert not b1 & 0x80, "server frames must not be masked"
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(pos + n)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        assert b0 & 0x80, "the proxy sends unfragmented frames"
        return b0 & 0x0F, payload

    def recv_close(self) -> int | None:
        """Skip data frames until a close; its code (None for a close without one)."""
        while True:
            op, payload = self.recv_frame()
            if op == 0x8:
                return struct.unpack("!H", payload[:2])[0] if payload else None

    def recv_bytes(self, count: int) -> bytes:
        """Exactly ``count`` bytes of binary data (frames may split or join them)."""
        out = self.data
        while len(out) < count:
            op, payload = self.recv_frame()
            assert op == 0x2, f"expected binary data, got opcode {op}"
            out += payload
        self.data = out[count:]
        return bytes(out[:count])

    def at_eof(self, timeout: float = WAIT) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()


# ---- real peers: TCP echo, CONNECT endpoint ---------------------------------------------------


class TcpServer:
    """A threaded TCP server in the test process; ``serve(conn)`` per connection."""

    def __init__(self, serve) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.serve = serve
        self.connections = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.serve(conn)
            except OSError:
                pass

    def stop(self) -> None:
        self.stopped = True
        self.listener.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 16):
        conn.sendall(data)


def pipe(a: socket.socket, b: socket.socket) -> None:
    socks = [a, b]
    while True:
        ready, _, _ = select.select(socks, [], [], 30)
        if not ready:
            return
        for s in ready:
            data = s.recv(1 << 16)
            if not data:
                return
            (b if s is a else a).sendall(data)


def connect_endpoint(target_port: int, answer: bytes, seen: list[bytes]):
    """A CONNECT gateway: reads ``CONNECT <path> HTTP/1.1`` + blank line, answers, pipes."""

    def serve(conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(4096)
            if not data:
                return
            head += data
        seen.append(head.split(b"\r\n", 1)[0])
        conn.sendall(answer)
        if not answer.startswith(b"HTTP/1.1 200"):
            return
        with socket.create_connection(("127.0.0.1", target_port)) as upstream:
            pipe(conn, upstream)

    return serve


# ---- processes ------------------------------------------------------------------------------


@dataclass
class Stack:
    bus: str
    consoleauth: ServiceProcess
    proxy: ServiceProcess
    port: int

    def authorize(self, host: str = "127.0.0.1", port: int = 5900,
                  internal_access_path: str | None = None, instance: str = "vm-test") -> str:
        from console_common.net.bus import BusClient

        args = {"console_type": "novnc", "host": host, "port": port, "instance_uuid": instance}
        if internal_access_path:
            args["internal_access_path"] = internal_access_path
        with BusClient([self.bus], timeout=5) as client:
            return remember_secret(client.call("authorize_console", **args)["token"])


def start_consoleauth(log_dir: Path, ttl: int = 600) -> tuple[str, ServiceProcess]:
    bus = f"tcp://127.0.0.1:{free_port()}"
    ca = ServiceProcess.start("consoleauth", ["--consoleauth-listen", bus, "--token-store",
                                              "memory", "--console-token-ttl", str(ttl)], log_dir)
    wait_bus(bus)
    return bus, ca


def start_proxy(log_dir: Path, bus: str, *extra: str) -> tuple[int, ServiceProcess]:
    port = free_port()
    proxy = ServiceProcess.start("novncproxy", ["--novncproxy-host", "127.0.0.1",
                                                "--novncproxy-port", str(port),
                                                "--consoleauth-url", bus,
                                                "--consoleauth-timeout", "1",
                                                "--request-head-timeout", "2",
                                                "--target-connect-timeout", "2", *extra], log_dir)
    proxy.wait_for_log("service.start", timeout=WAIT)
    wait_tcp("127.0.0.1", port)
    return port, proxy


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("novnc-stack")
    bus, ca = start_consoleauth(logs)
    try:
        port, proxy = start_proxy(logs, bus)
        try:
            yield Stack(bus, ca, proxy, port)
        finally:
            proxy.stop()
    finally:
        ca.stop()


@pytest.fixture(scope="module")
def echo_server() -> Iterator[TcpServer]:
    server = TcpServer(echo)
    yield server
    server.stop()


def http_get(port: int, path: str, headers: dict[str, str] | None = None,
             scheme: str = "http", ctx: ssl.SSLContext | None = None) -> Reply:
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=WAIT, context=ctx) as resp:
            return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def raw_http(port: int, data: bytes, timeout: float = WAIT) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ---- relaying -------------------------------------------------------------------------------


def test_binary_echo_of_megabytes_is_exact(stack: Stack, echo_server: TcpServer) -> None:
    token = stack.authorize(port=echo_server.port)
    ws = WsClient(stack.port, f"/websockify?token={token}")
    assert ws.reply.status == 101
    assert "sec-websocket-protocol" not in ws.reply.headers  # none offered, none chosen
    blob = os.urandom(4 << 20)
    chunks = [blob[i:i + 100_000] for i in range(0, len(blob), 100_000)]

    def sender() -> None:
        for chunk in chunks:
            ws.send(frame(0x2, chunk))

    t = threading.Thread(target=sender)
    t.start()
    got = ws.recv_bytes(len(blob))
    t.join(WAIT)
    assert got == blob
    ws.send(frame(0x8, struct.pack("!H", 1000)))
    assert ws.recv_close() == 1000
    end = stack.proxy.wait_for_log("session.end", bytes_up=len(blob))
    assert end["bytes_down"] == len(blob)
    assert end["close_reason"] == "client_closed"
    assert end["token_id"] and end["instance_uuid"] == "vm-test"
    assert {"session_id", "client", "target", "duration_s"} <= end.keys()
    ws.close()
    time.sleep(0.2)  # the handler's own end, after session.end
    errors = [x for x in stack.proxy.lines() if x.get("level") in ("error", "critical")]
    assert errors == []  # an ordinary session ends without an error line


def test_text_frames_are_relayed_and_pings_answered(stack: Stack, echo_server: TcpServer) -> None:
    token = stack.authorize(port=echo_server.port)
    ws = WsClient(stack.port, f"/websockify?token={token}", subprotocols=("binary",))
    assert ws.reply.status == 101
    assert ws.reply.headers["sec-websocket-protocol"] == "binary"
    ws.send(frame(0x9, b"are you there"))
    assert ws.recv_frame() == (0xA, b"are you there")
    text = "héllo wörld".encode()
    ws.send(frame(0x1, text[:5], fin=False) + frame(0x0, text[5:]))
    assert ws.recv_bytes(len(text)) == text
    ws.send(frame(0x8, struct.pack("!H", 4001) + b"bye"))
    assert ws.recv_close() == 4001  # the close is echoed with the same code
    assert ws.at_eof()
    ws.close()


def test_unmasked_frame_is_closed_1002(stack: Stack, echo_server: TcpServer) -> None:
    token = stack.authorize(port=echo_server.port)
    ws = WsClient(stack.port, f"/websockify?token={token}")
    assert ws.reply.status == 101
    ws.send(frame(0x2, b"plain", masked=False))
    assert ws.recv_close() == 1002
    stack.proxy.wait_for_log("session.end", close_reason="protocol_error")
    ws.close()


def test_oversized_ping_is_closed_1002(stack: Stack, echo_server: TcpServer) -> None:
    token = stack.authorize(port=echo_server.port)
    ws = WsClient(stack.port, f"/websockify?token={token}")
    ws.send(frame(0x9, b"p" * 126))
    assert ws.recv_close() == 1002
    ws.close()


def test_declared_terabyte_is_closed_1009_without_growing(stack: Stack,
                                                           echo_server: TcpServer) -> None:
    token = stack.authorize(port=echo_server.port)
    before = rss_kib(stack.proxy.popen.pid)
    ws = WsClient(stack.port, f"/websockify?token={token}")
    ws.send(frame(0x2, os.urandom(1000), declared=1 << 40)[:1014])
    assert ws.recv_close() == 1009
    stack.proxy.wait_for_log("session.end", close_reason="message_too_big")
    after = rss_kib(stack.proxy.popen.pid)
    assert after - before < 8 * 1024, f"RSS grew from {before} to {after} KiB"
    ws.close()


def test_subprotocols(stack: Stack, echo_server: TcpServer) -> None:
    token = stack.authorize(port=echo_server.port)
    refused = WsClient(stack.port, f"/websockify?token={token}", subprotocols=("base64",))
    assert refused.reply.status == 400
    assert echo_server.connections >= 0
    refused.close()
    both = WsClient(stack.port, f"/websockify?token={token}", subprotocols=("base64", "binary"))
    assert both.reply.status == 101 and both.reply.headers["sec-websocket-protocol"] == "binary"
    both.close()
    old = WsClient(stack.port, f"/websockify?token={token}", version="8")
    assert old.reply.status == 426
    old.close()


def test_token_from_cookie_and_from_path(stack: Stack, echo_server: TcpServer) -> None:
    token = stack.authorize(port=echo_server.port)
    ws = WsClient(stack.port, "/websockify", headers=(("Cookie", f"lang=en; token={token}"),))
    assert ws.reply.status == 101
    ws.send(frame(0x2, b"cookie"))
    assert ws.recv_bytes(6) == b"cookie"
    ws.close()
    ws = WsClient(stack.port, f"/?path=%3Ftoken%3D{token}")
    assert ws.reply.status == 101
    ws.send(frame(0x2, b"path"))
    assert ws.recv_bytes(4) == b"path"
    ws.close()


# ---- admission before the 101 ---------------------------------------------------------------


def test_bad_token_is_403_before_any_101(stack: Stack) -> None:
    bad = remember_secret("x" * 40)
    ws = WsClient(stack.port, f"/websockify?token={bad}")
    assert ws.reply.status == 403
    assert json.loads(ws.reply.body)["error"] == "invalid_token"
    ws.close()
    ws = WsClient(stack.port, "/websockify")
    assert ws.reply.status == 403
    ws.close()
    probe = http_get(stack.port, f"/websockify?token={bad}")
    assert probe.status == 403
    assert json.loads(probe.body) == {"ok": False, "error": "invalid_token",
                                      "message": "invalid or expired console token"}
    assert bad not in stack.proxy.log_path.read_text()


def test_origin_rules(stack: Stack, echo_server: TcpServer) -> None:
    token = stack.authorize(port=echo_server.port)
    same = WsClient(stack.port, f"/websockify?token={token}",
                    origin=f"http://127.0.0.1:{stack.port}")
    assert same.reply.status == 101
    same.close()
    for origin in ("http://evil.example", f"https://127.0.0.1:{stack.port}", "null"):
        ws = WsClient(stack.port, f"/websockify?token={token}", origin=origin)
        assert ws.reply.status == 403, origin
        assert json.loads(ws.reply.body)["error"] == "origin_refused"
        ws.close()
    # X-Forwarded-Proto from a peer that is not a trusted proxy changes nothing
    ws = WsClient(stack.port, f"/websockify?token={token}",
                  origin=f"https://127.0.0.1:{stack.port}",
                  headers=(("X-Forwarded-Proto", "https"),))
    assert ws.reply.status == 403
    ws.close()
    # the probe from another origin: refused, and readable by that page (CORS)
    probe = http_get(stack.port, f"/websockify?token={token}",
                     {"Origin": "http://evil.example"})
    assert probe.status == 403 and json.loads(probe.body)["error"] == "origin_refused"
    assert probe.headers["access-control-allow-origin"] == "http://evil.example"
    ok = http_get(stack.port, f"/websockify?token={token}")
    assert ok.status == 200 and json.loads(ok.body) == {"ok": True}


def test_allowed_origins_and_trusted_proxy(tmp_path: Path, echo_server: TcpServer) -> None:
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--console-allowed-origins", "console.example",
                                  "--trusted-proxies", "127.0.0.1")
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            token = stack.authorize(port=echo_server.port)
            ws = WsClient(port, f"/websockify?token={token}", origin="http://console.example")
            assert ws.reply.status == 101
            ws.close()
            ws = WsClient(port, f"/websockify?token={token}", origin="https://console.example",
                          headers=(("X-Forwarded-Proto", "https"),))
            assert ws.reply.status == 101  # the trusted proxy says the client used TLS
            ws.close()
            ws = WsClient(port, f"/websockify?token={token}", origin="http://other.example")
            assert ws.reply.status == 403
            ws.close()


def test_double_slash_is_400_never_a_redirect(stack: Stack) -> None:
    for path in ("//evil.com", "//evil.com/%2e%2e", "/%2F/evil.com"):
        out = raw_http(stack.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       .encode())
        assert out.startswith(b"HTTP/1.1 400 "), (path, out[:100])
        assert b"\r\nlocation:" not in out.lower()
    ws = WsClient(stack.port, "//evil.com/websockify?token=abc")
    assert ws.reply.status == 400
    ws.close()


# ---- targets --------------------------------------------------------------------------------


def test_target_down_is_101_then_close_1011(stack: Stack) -> None:
    token = stack.authorize(port=free_port())
    ws = WsClient(stack.port, f"/websockify?token={token}")
    assert ws.reply.status == 101
    assert ws.recv_close() == 1011
    end = stack.proxy.wait_for_log("session.end", close_reason="connect_failed")
    assert end["target"].startswith("127.0.0.1:")
    ws.close()


def test_internal_access_path_is_honoured(stack: Stack, echo_server: TcpServer) -> None:
    seen: list[bytes] = []
    gateway = TcpServer(connect_endpoint(echo_server.port, b"HTTP/1.1 200 OK\r\n\r\n", seen))
    refusing = TcpServer(connect_endpoint(echo_server.port, b"HTTP/1.1 403 Forbidden\r\n\r\n",
                                          seen))
    try:
        token = stack.authorize(port=gateway.port, internal_access_path="/console/vm-7")
        ws = WsClient(stack.port, f"/websockify?token={token}")
        assert ws.reply.status == 101
        ws.send(frame(0x2, b"through CONNECT"))
        assert ws.recv_bytes(15) == b"through CONNECT"
        assert seen[-1] == b"CONNECT /console/vm-7 HTTP/1.1"
        ws.close()
        token = stack.authorize(port=refusing.port, internal_access_path="/console/vm-8")
        ws = WsClient(stack.port, f"/websockify?token={token}")
        assert ws.reply.status == 101
        assert ws.recv_close() == 1011
        assert seen[-1] == b"CONNECT /console/vm-8 HTTP/1.1"
        ws.close()
    finally:
        gateway.stop()
        refusing.stop()


@pytest.fixture(scope="module")
def xvnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    require(os.access(XVNC, os.X_OK), f"{XVNC} is absent: run scripts/install-system.sh")
    port = free_port()
    display = 50 + port % 40
    log = tmp_path_factory.mktemp("xvnc") / "xvnc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([XVNC, f":{display}", "-geometry", "400x300", "-depth", "24",
                                 "-SecurityTypes", "None", "-rfbport", str(port), "-localhost",
                                 "-desktop", "novnc-it"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_tcp("127.0.0.1", port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_rfb_handshake_through_the_proxy(stack: Stack, xvnc: int) -> None:
    token = stack.authorize(port=xvnc, instance="vm-xvnc")
    ws = WsClient(stack.port, f"/websockify?token={token}", subprotocols=("binary",))
    assert ws.reply.status == 101
    assert ws.recv_bytes(12) == b"RFB 003.008\n"
    ws.send(frame(0x2, b"RFB 003.008\n"))
    count = ws.recv_bytes(1)[0]
    types = ws.recv_bytes(count)
    assert 1 in types
    ws.send(frame(0x2, b"\x01"))
    assert ws.recv_bytes(4) == b"\0\0\0\0"
    ws.send(frame(0x2, b"\x01"))  # ClientInit, shared
    init = ws.recv_bytes(24)
    width, height = struct.unpack("!HH", init[:4])
    name_len = struct.unpack("!I", init[20:24])[0]
    assert (width, height) == (400, 300)
    assert ws.recv_bytes(name_len) == b"novnc-it"
    ws.send(frame(0x8, struct.pack("!H", 1000)))
    assert ws.recv_close() == 1000
    end = stack.proxy.wait_for_log("session.end", instance_uuid="vm-xvnc")
    assert end["rfb_version"] == "3.8"
    assert end["security_type"] == "None"
    assert end["desktop_name"] == "novnc-it"
    start = stack.proxy.wait_for_log("session.start", instance_uuid="vm-xvnc")
    assert start["session_id"] == end["session_id"]
    ws.close()


# ---- HTTP side ------------------------------------------------------------------------------


def test_pages_and_static_files(stack: Stack) -> None:
    for page in ("/", "/vnc_auto.html", "/vnc_lite.html"):
        r = http_get(stack.port, page)
        assert r.status == 200 and r.headers["content-type"].startswith("text/html")
        assert b"/static/console.js" in r.body
    js = http_get(stack.port, "/static/console.js")
    assert js.headers["content-type"].startswith("text/javascript")
    rfb = http_get(stack.port, "/novnc/core/rfb.js")
    assert rfb.status == 200 and rfb.headers["content-type"].startswith("text/javascript")
    for bad in ("/static/../pyproject.toml", "/novnc/../../package.json", "/static/%2e%2e/x",
                "/static/", "/nothing-here"):
        out = raw_http(stack.port, f"GET {bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       .encode())
        assert out.startswith(b"HTTP/1.1 404 "), (bad, out[:80])
    out = raw_http(stack.port, b"DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405 ")


def test_request_head_bounds(stack: Stack) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 9000 + b"\r\n\r\n"
    out = raw_http(stack.port, big)
    assert out.split(b" ", 2)[1] in (b"431", b"400"), out[:80]
    # a slowloris: part of a head, then silence; closed after --request-head-timeout (2 s)
    with socket.create_connection(("127.0.0.1", stack.port), timeout=WAIT) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        assert time.monotonic() - started < 2 + 3
    assert out.startswith(b"HTTP/1.1 408 ") or out == b""


def test_metrics_count_what_happened(stack: Stack) -> None:
    text = http_get(stack.port, "/metrics").body.decode()
    # The same names and labels as xvpvncproxy's (console_common.sessions.metrics).
    for name in ("console_sessions_open ", "console_sessions_total ",
                 'console_bytes_total{direction="up"}', 'console_bytes_total{direction="down"}',
                 'console_token_checks_total{result="ok"}',
                 'console_token_checks_total{result="invalid"}',
                 'console_token_checks_total{result="unavailable"}',
                 "console_token_check_seconds_bucket", "console_token_check_seconds_count",
                 'console_refused_total{reason="origin_refused"}', "console_connections_total"):
        assert name in text, name
    assert "_created" not in text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values["console_sessions_total"] >= 1
    assert values['console_token_checks_total{result="ok"}'] >= 1


def test_consoleauth_down_gives_503_in_time(tmp_path: Path, echo_server: TcpServer) -> None:
    bus, ca = start_consoleauth(tmp_path)
    try:
        port, proxy = start_proxy(tmp_path, bus)
    except BaseException:
        ca.stop()
        raise
    with ca, proxy:
        stack = Stack(bus, ca, proxy, port)
        token = stack.authorize(port=echo_server.port)
        assert http_get(port, "/healthz").status == 200
        open_ws = WsClient(port, f"/websockify?token={token}")
        assert open_ws.reply.status == 101
        ca.stop()
        started = time.monotonic()
        ws = WsClient(port, f"/websockify?token={token}")
        assert ws.reply.status == 503
        assert time.monotonic() - started < 1 + 1
        assert json.loads(ws.reply.body)["error"] == "consoleauth_unavailable"
        ws.close()
        health = http_get(port, "/healthz")
        assert health.status == 503 and json.loads(health.body)["ok"] is False
        # open sessions keep running while consoleauth is down
        open_ws.send(frame(0x2, b"still here"))
        assert open_ws.recv_bytes(10) == b"still here"
        open_ws.close()


def test_sigterm_drains_open_sessions(tmp_path: Path, echo_server: TcpServer) -> None:
    grace = 3.0
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--graceful-timeout", str(grace))
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            ws = WsClient(port, f"/websockify?token={stack.authorize(port=echo_server.port)}")
            leaving = WsClient(port, f"/websockify?token="
                                     f"{stack.authorize(port=echo_server.port, instance='vm-2')}")
            assert ws.reply.status == leaving.reply.status == 101
            signalled = time.monotonic()
            proxy.popen.send_signal(15)
            proxy.wait_for_log("service.stopping")
            ws.send(frame(0x2, b"during drain"))
            assert ws.recv_bytes(12) == b"during drain"  # the session keeps working
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            leaving.send(frame(0x8, struct.pack("!H", 1000)))  # one ends by itself meanwhile
            assert leaving.recv_close() == 1000
            proxy.wait_for_log("session.end", instance_uuid="vm-2", close_reason="client_closed")
            time.sleep(grace / 2)
            ws.send(frame(0x2, b"late in drain"))
            assert ws.recv_bytes(13) == b"late in drain"
            ws.sock.settimeout(grace + WAIT)
            while (got := ws.recv_frame())[0] != 0x8:
                pass
            closed = time.monotonic() - signalled
            # the grace expired: going away, with a reason
            assert got[1] == struct.pack("!H", 1001) + b"server shutting down"
            assert grace - 0.2 <= closed < grace + 2, closed
            assert proxy.popen.wait(WAIT) == 0
            exited = time.monotonic() - signalled
            print(f"\n  SIGTERM, grace {grace:g} s: close 1001 after {closed:.2f} s, exit 0 "
                  f"after {exited:.2f} s")
            assert exited < grace + 5
            proxy.wait_for_log("session.end", instance_uuid="vm-test", close_reason="shutdown")


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_tls_only(tmp_path: Path, echo_server: TcpServer, cert_files: tuple[Path, Path]) -> None:
    cert, key = cert_files
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--ssl-only", "--cert", str(cert),
                                  "--key", str(key))
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            token = stack.authorize(port=echo_server.port)
            ws = WsClient(port, f"/websockify?token={token}", tls=True,
                          origin=f"https://127.0.0.1:{port}")
            assert ws.reply.status == 101
            ws.send(frame(0x2, b"over tls" * 5000))
            assert ws.recv_bytes(40000) == b"over tls" * 5000
            bulk = os.urandom(1 << 20)  # bulk both ways: TLS never takes the splice path
            for i in range(0, len(bulk), 256 << 10):
                ws.send(frame(0x2, bulk[i:i + (256 << 10)]))
            assert ws.recv_bytes(len(bulk)) == bulk
            ws.close()
            ws = WsClient(port, f"/websockify?token={token}", tls=True,
                          origin=f"http://127.0.0.1:{port}")
            assert ws.reply.status == 403  # an http:// page may not use our wss://
            ws.close()
            ctx = ssl.create_default_context(cafile=str(cert))
            ctx.check_hostname = False
            assert http_get(port, "/vnc_lite.html", scheme="https", ctx=ctx).status == 200
            out = b""
            try:
                out = raw_http(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
            except ConnectionResetError:
                pass
            assert not out.startswith(b"HTTP/1.1 200")


def test_tls_and_plain_on_one_port(tmp_path: Path, cert_files: tuple[Path, Path]) -> None:
    cert, key = cert_files
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--cert", str(cert), "--key", str(key))
        with proxy:
            assert http_get(port, "/vnc_auto.html").status == 200
            ctx = ssl.create_default_context(cafile=str(cert))
            ctx.check_hostname = False
            assert http_get(port, "/vnc_auto.html", scheme="https", ctx=ctx).status == 200
