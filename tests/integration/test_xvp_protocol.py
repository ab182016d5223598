"""xvpvncproxy's wire protocol with raw sockets, against real consoleauth and xvpvncproxy.

Targets are small TCP servers run by the test (threads; the helpers of the novncproxy
protocol tests): an echo server, one that answers only after the client's half-close, and
an HTTP CONNECT gateway for internal_access_path.
"""

from __future__ import annotations

import hashlib
import random
import signal
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from console_common.net.bus import BusClient

from tests.integration.test_novnc_protocol import TcpServer, connect_endpoint, echo
from tests.support import ServiceProcess, free_port, remember_secret, wait_bus, wait_tcp

HEAD_TIMEOUT = 1.0


# --- targets run by the test ---------------------------------------------------------------


def answer_after_eof(conn: socket.socket) -> None:
    """Reads until the client's half-close, then still writes its answer."""
    total = 0
    while data := conn.recv(65536):
        total += len(data)
    time.sleep(0.2)
    conn.sendall(f"got {total} bytes".encode())


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    bus_url: str
    proxy: ServiceProcess
    port: int
    metrics_port: int

    def authorize(self, host: str, port: int, internal_access_path: str | None = None) -> str:
        with BusClient([self.bus_url], timeout=5) as bus:
            token = bus.call("authorize_console", console_type="xvpvnc", host=host, port=port,
                             instance_uuid=str(uuid.uuid4()),
                             internal_access_path=internal_access_path)["token"]
        return remember_secret(token)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def start_xvp(tmp: Path, bus_url: str, *extra: str) -> tuple[ServiceProcess, int, int]:
    port, metrics_port = free_port(), free_port()
    proc = ServiceProcess.start("xvpvncproxy", [
        "--xvpvncproxy-host", "127.0.0.1", "--xvpvncproxy-port", str(port),
        "--xvpvncproxy-metrics-port", str(metrics_port), "--consoleauth-url", bus_url,
        "--request-head-timeout", str(HEAD_TIMEOUT), "--target-connect-timeout", "2", *extra,
    ], log_dir=tmp)
    wait_tcp("127.0.0.1", port)
    return proc, port, metrics_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("xvp")
    bus_url = f"tcp://127.0.0.1:{free_port()}"
    with ServiceProcess.start("consoleauth", ["--consoleauth-listen", bus_url,
                                              "--token-store", "memory"], log_dir=tmp):
        wait_bus(bus_url)
        proxy, port, metrics_port = start_xvp(tmp, bus_url)
        with proxy:
            yield Stack(bus_url, proxy, port, metrics_port)


@pytest.fixture(scope="module")
def echo_target() -> Iterator[TcpServer]:
    target = TcpServer(echo)
    yield target
    target.stop()


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    out = b""
    while len(out) < limit:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        out += data
    return out


def read_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        assert data, f"connection closed after {len(out)} of {n} bytes"
        out += data
    return out


OK = b"HTTP/1.1 200 OK\r\n\r\n"


def open_console(stack: Stack, token: str, early: bytes = b"") -> socket.socket:
    sock = stack.connect()
    sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode() + early)
    assert read_exactly(sock, len(OK)) == OK
    return sock


# --- refusals --------------------------------------------------------------------------------


def test_missing_token_is_400(stack: Stack) -> None:
    with stack.connect() as sock:
        sock.sendall(b"CONNECT /console HTTP/1.0\r\n\r\n")
        assert read_until_closed(sock) == b"HTTP/1.1 400 Invalid Request\r\n\r\n"
    with stack.connect() as sock:
        sock.sendall(b"GET /console?token= HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_until_closed(sock) == b"HTTP/1.1 400 Invalid Request\r\n\r\n"


def test_bad_token_is_401(stack: Stack, echo_target: TcpServer) -> None:
    bogus = remember_secret("x" * 40)
    with stack.connect() as sock:
        sock.sendall(f"CONNECT /console?token={bogus} HTTP/1.0\r\n\r\n".encode())
        assert read_until_closed(sock) == b"HTTP/1.1 401 Not Authorized\r\n\r\n"
    line = stack.proxy.wait_for_log("session.refused", status=401)
    assert line["reason"] == "invalid_token"  # both proxies say the same
    assert line["detail"] == "invalid or expired console token"


def test_preamble_too_long_is_closed(stack: Stack) -> None:
    with stack.connect() as sock:
        sock.sendall(b"CONNECT /console?token=t HTTP/1.0\r\nX-Pad: " + b"a" * 9000)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    line = stack.proxy.wait_for_log("session.refused", status=431)
    assert "too large" in line["detail"]


def test_too_slow_preamble_is_closed(stack: Stack) -> None:
    with stack.connect() as sock:
        started = time.monotonic()
        sock.sendall(b"CONNECT /console?tok")
        answer = read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert answer == b"HTTP/1.1 408 Request Timeout\r\n\r\n"
    assert HEAD_TIMEOUT - 0.1 < elapsed < HEAD_TIMEOUT + 2
    stack.proxy.wait_for_log("session.refused", status=408)


@pytest.mark.parametrize("garbage", [b"\x00\xff\xfe\x01binary\r\n\r\n",
                                     b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                                     b"RFB 003.008\n", b"hello world\r\n\r\n"])
def test_garbage_is_400(stack: Stack, garbage: bytes) -> None:
    with stack.connect() as sock:
        sock.sendall(garbage)
        if garbage == b"RFB 003.008\n":  # looks like a start line that never ends
            sock.shutdown(socket.SHUT_WR)
            assert read_until_closed(sock) == b""  # a client that left cannot be answered
        else:
            assert read_until_closed(sock) == b"HTTP/1.1 400 Invalid Request\r\n\r\n"


def test_consoleauth_down_is_503_in_time(tmp_path: Path) -> None:
    dead = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    proc, port, _ = start_xvp(tmp_path, dead, "--consoleauth-timeout", "1")
    with proc, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        token = remember_secret("d" * 40)
        started = time.monotonic()
        sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode())
        answer = read_until_closed(sock)
        elapsed = time.monotonic() - started
        assert answer == b"HTTP/1.1 503 Service Unavailable\r\n\r\n"
        assert elapsed < 1 + 1
        assert "127.0.0.1" in proc.wait_for_log("session.refused", status=503)["detail"]


def test_target_down_is_502_and_logged(stack: Stack) -> None:
    dead_port = free_port()
    token = stack.authorize("127.0.0.1", dead_port)
    with stack.connect() as sock:
        sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode())
        assert read_until_closed(sock) == b"HTTP/1.1 502 Bad Gateway\r\n\r\n"
    line = stack.proxy.wait_for_log("session.end", target=f"127.0.0.1:{dead_port}")
    assert line["close_reason"] == "connect_failed"
    assert line["close_detail"]
    assert line["token_id"] and line["session_id"]


# --- relaying --------------------------------------------------------------------------------


def test_early_bytes_are_forwarded_first(stack: Stack, echo_target: TcpServer) -> None:
    token = stack.authorize("127.0.0.1", echo_target.port)
    with open_console(stack, token, early=b"RFB 003.008\n") as sock:
        assert read_exactly(sock, 12) == b"RFB 003.008\n"
        sock.sendall(b"more")
        assert read_exactly(sock, 4) == b"more"


def test_half_close_keeps_target_output(stack: Stack) -> None:
    target = TcpServer(answer_after_eof)
    try:
        token = stack.authorize("127.0.0.1", target.port)
        with open_console(stack, token) as sock:
            sock.sendall(b"x" * 100_000)
            sock.shutdown(socket.SHUT_WR)  # our EOF reaches the target as a half-close
            assert read_until_closed(sock) == b"got 100000 bytes"
    finally:
        target.stop()
    line = stack.proxy.wait_for_log("session.end", target=f"127.0.0.1:{target.port}")
    assert line["bytes_up"] == 100_000
    assert line["bytes_down"] == len(b"got 100000 bytes")


def test_echo_is_exact_over_100_mib(stack: Stack, echo_target: TcpServer) -> None:
    total, chunk = 100 << 20, 1 << 20
    token = stack.authorize("127.0.0.1", echo_target.port)
    sent_hash, received_hash = hashlib.sha256(), hashlib.sha256()
    errors: list[BaseException] = []
    with open_console(stack, token) as sock:
        sock.settimeout(30)

        def send() -> None:
            try:
                for i in range(total // chunk):
                    block = random.Random(i).randbytes(chunk)
                    sent_hash.update(block)
                    sock.sendall(block)
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:  # reported by the main thread
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        received = 0
        while data := sock.recv(1 << 18):
            received_hash.update(data)
            received += len(data)
        sender.join(30)
    assert not errors, errors
    assert received == total
    assert received_hash.hexdigest() == sent_hash.hexdigest()
    line = stack.proxy.wait_for_log("session.end", target=f"127.0.0.1:{echo_target.port}",
                                    bytes_up=total)
    assert line["bytes_down"] == total
    assert line["close_reason"] in ("client_closed", "target_closed")


def test_internal_access_path(stack: Stack, echo_target: TcpServer) -> None:
    seen: list[bytes] = []
    gateway = TcpServer(connect_endpoint(
        echo_target.port, b"HTTP/1.1 200 Connection established\r\n\r\nhello from inside", seen))
    refusing = TcpServer(connect_endpoint(echo_target.port, b"HTTP/1.1 404 Not Found\r\n\r\n",
                                          seen))
    try:
        token = stack.authorize("127.0.0.1", gateway.port, internal_access_path="/vm/42?x=1")
        with open_console(stack, token) as sock:
            assert read_exactly(sock, 17) == b"hello from inside"  # sent with the 200
            sock.sendall(b"ping")
            assert read_exactly(sock, 4) == b"ping"
        assert seen == [b"CONNECT /vm/42?x=1 HTTP/1.1"]
        wrong = stack.authorize("127.0.0.1", refusing.port, internal_access_path="/vm/43")
        with stack.connect() as sock:
            sock.sendall(f"GET /console?token={wrong} HTTP/1.1\r\n\r\n".encode())
            assert read_until_closed(sock) == b"HTTP/1.1 502 Bad Gateway\r\n\r\n"
    finally:
        gateway.stop()
        refusing.stop()
    line = stack.proxy.wait_for_log("session.end", close_reason="connect_failed",
                                    target=f"127.0.0.1:{refusing.port}")
    assert "404" in line["close_detail"]


def test_metrics_and_healthz(stack: Stack, echo_target: TcpServer) -> None:
    token = stack.authorize("127.0.0.1", echo_target.port)
    with open_console(stack, token) as sock:
        sock.sendall(b"abc")
        assert read_exactly(sock, 3) == b"abc"
        base = f"http://127.0.0.1:{stack.metrics_port}"
        with urllib.request.urlopen(base + "/healthz", timeout=5) as resp:
            assert resp.status == 200
            assert b'"ok": true' in resp.read()
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
    assert resp.headers["Content-Type"].startswith("text/plain")
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    # The same names and labels as novncproxy's (console_common.sessions.metrics).
    assert float(values["console_sessions_open"]) >= 1
    assert float(values["console_connections_total"]) >= 1
    assert float(values['console_token_check_seconds_count']) >= 1
    assert float(values['console_token_checks_total{result="ok"}']) >= 1


def test_sigterm_drains_then_cuts(tmp_path: Path, stack: Stack, echo_target: TcpServer) -> None:
    proc, port, _ = start_xvp(tmp_path, stack.bus_url, "--graceful-timeout", "1.5")
    token = stack.authorize("127.0.0.1", echo_target.port)
    with proc, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode())
        assert read_exactly(sock, len(OK)) == OK
        signalled = time.monotonic()
        proc.popen.send_signal(signal.SIGTERM)
        proc.wait_for_log("service.stopping")
        sock.sendall(b"still here")  # open sessions keep running during the grace period
        assert read_exactly(sock, 10) == b"still here"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert read_until_closed(sock) == b""  # cut after the grace period
        closed = time.monotonic() - signalled
        assert proc.popen.wait(10) == 0
        exited = time.monotonic() - signalled
        print(f"\n  SIGTERM, grace 1.5 s: closed after {closed:.2f} s, exit 0 after "
              f"{exited:.2f} s")
        assert 1.5 - 0.2 <= closed < 1.5 + 2
        assert exited < 1.5 + 5
    line = proc.wait_for_log("session.end")
    assert line["close_reason"] == "shutdown"
