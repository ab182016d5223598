"""Limits on real proxies: per-session idle and age limits, open sessions per instance,
new connections per client, and the ban after repeated invalid tokens (both proxies).

Every limit is off by default (other tests run without them); each test here starts its
own proxies with the options it exercises.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_novnc_protocol import (WAIT, Stack, TcpServer, WsClient, echo,
                                                   frame, http_get, start_consoleauth,
                                                   start_proxy)
from tests.integration.test_xvp_protocol import OK, read_exactly, start_xvp


@pytest.fixture(scope="module")
def echo_server() -> Iterator[TcpServer]:
    server = TcpServer(echo)
    yield server
    server.stop()


def close_frame(ws: WsClient, timeout: float) -> tuple[int, bytes]:
    ws.sock.settimeout(timeout)
    while (got := ws.recv_frame())[0] != 0x8:
        pass
    return int.from_bytes(got[1][:2], "big"), got[1][2:]


def xvp_open(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode())
    return sock


def xvp_token(stack: Stack, port: int, instance: str) -> str:
    from console_common.net.bus import BusClient

    from tests.support import remember_secret

    with BusClient([stack.bus], timeout=5) as client:
        return remember_secret(client.call("authorize_console", console_type="xvpvnc",
                                           host="127.0.0.1", port=port,
                                           instance_uuid=instance)["token"])


def test_idle_and_age_limits_end_sessions_with_a_reason(tmp_path: Path,
                                                         echo_server: TcpServer) -> None:
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--session-idle-timeout", "1")
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            idle = WsClient(port, f"/websockify?token={stack.authorize(port=echo_server.port)}")
            busy = WsClient(port, f"/websockify?token={stack.authorize(port=echo_server.port)}")
            started = time.monotonic()
            for _ in range(8):  # 2.4 s of payload every 0.3 s keeps a session alive
                busy.send(frame(0x2, b"ping"))
                assert busy.recv_bytes(4) == b"ping"
                time.sleep(0.3)
            assert close_frame(idle, WAIT) == (1000, b"console idle timeout")
            assert 1.0 <= time.monotonic() - started
            busy.send(frame(0x2, b"still"))
            assert busy.recv_bytes(5) == b"still"
            proxy.wait_for_log("session.end", close_reason="idle_timeout")
        port, proxy = start_proxy(tmp_path, bus, "--session-max-age", "1.5")
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            ws = WsClient(port, f"/websockify?token={stack.authorize(port=echo_server.port)}")
            opened = time.monotonic()
            for _ in range(3):
                ws.send(frame(0x2, b"x"))
                assert ws.recv_bytes(1) == b"x"
                time.sleep(0.2)
            assert close_frame(ws, WAIT) == (1000, b"console session expired")
            assert 1.5 <= time.monotonic() - opened < 3.5
            proxy.wait_for_log("session.end", close_reason="max_age")
        xvp, xport, _ = start_xvp(tmp_path, bus, "--session-idle-timeout", "1")
        with xvp:
            sock = xvp_open(xport, xvp_token(Stack(bus, ca, xvp, xport), echo_server.port,
                                             "vm-idle"))
            with sock:
                assert read_exactly(sock, len(OK)) == OK
                sock.settimeout(WAIT)
                assert sock.recv(16) == b""  # closed after a second of silence
            xvp.wait_for_log("session.end", close_reason="idle_timeout")


def test_open_sessions_per_instance_are_limited(tmp_path: Path,
                                                echo_server: TcpServer) -> None:
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--max-sessions-per-instance", "1")
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            first = WsClient(port, f"/websockify?token="
                                   f"{stack.authorize(port=echo_server.port, instance='vm-1')}")
            assert first.reply.status == 101
            first.send(frame(0x2, b"up"))
            assert first.recv_bytes(2) == b"up"  # registered: counted
            second = WsClient(port, f"/websockify?token="
                                    f"{stack.authorize(port=echo_server.port, instance='vm-1')}")
            assert second.reply.status == 429
            body = json.loads(second.reply.body)
            assert body["error"] == "limit_instance"
            assert body["message"] == "too many console sessions for this instance"
            other = WsClient(port, f"/websockify?token="
                                   f"{stack.authorize(port=echo_server.port, instance='vm-2')}")
            assert other.reply.status == 101  # another instance is not limited
            proxy.wait_for_log("session.refused", reason="limit_instance")
            first.close()
            deadline = time.monotonic() + WAIT
            while True:  # its slot comes back when it ends
                again = WsClient(port, f"/websockify?token="
                                       f"{stack.authorize(port=echo_server.port, instance='vm-1')}")
                if again.reply.status == 101 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert again.reply.status == 101
        xvp, xport, mport = start_xvp(tmp_path, bus, "--max-sessions-per-instance", "1")
        with xvp:
            stack = Stack(bus, ca, xvp, xport)
            with xvp_open(xport, xvp_token(stack, echo_server.port, "vm-x")) as held:
                assert read_exactly(held, len(OK)) == OK
                held.sendall(b"hi")
                assert read_exactly(held, 2) == b"hi"
                with xvp_open(xport, xvp_token(stack, echo_server.port, "vm-x")) as extra:
                    extra.settimeout(WAIT)
                    assert extra.recv(100) == b"HTTP/1.1 429 Too Many Requests\r\n\r\n"
            metrics = http_get(mport, "/metrics").body.decode()
            assert 'console_refused_total{reason="limit_instance"} 1.0' in metrics


def test_handshake_rate_and_the_invalid_token_ban(tmp_path: Path,
                                                  echo_server: TcpServer) -> None:
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--handshake-rate-per-client", "2",
                                  "--invalid-token-ban-after", "3",
                                  "--invalid-token-ban-window", "30",
                                  "--invalid-token-ban-seconds", "2")
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            bogus = "/websockify?token=" + "b" * 43
            statuses = [http_get(port, bogus).status for _ in range(5)]
            # a burst of 4 (twice the rate); the 3rd invalid token bans (it still gets 403)
            assert statuses[:3] == [403, 403, 403] and statuses[3:] == [429, 429], statuses
            banned = http_get(port, f"/websockify?token={stack.authorize()}")
            assert banned.status == 429  # a valid token changes nothing while banned
            assert json.loads(banned.body)["error"] == "banned"
            assert 1 <= int(banned.headers["retry-after"]) <= 2
            time.sleep(2.2)
            ok = WsClient(port, f"/websockify?token={stack.authorize(port=echo_server.port)}")
            assert ok.reply.status == 101
            lines = [line for line in proxy.lines() if line["event"] == "client.banned"]
            assert len(lines) == 1 and lines[0]["client"] == "127.0.0.1"
            # now the rate: valid probes in a burst; the bucket (4) runs out within 5
            token = stack.authorize(port=echo_server.port)
            probes = [http_get(port, f"/websockify?token={token}") for _ in range(5)]
            assert [r.status for r in probes][:3] == [200, 200, 200]
            limited = next(r for r in probes if r.status == 429)
            assert json.loads(limited.body)["error"] == "limit_rate"
            assert int(limited.headers["retry-after"]) >= 1
        xvp, xport, _ = start_xvp(tmp_path, bus, "--invalid-token-ban-after", "2",
                                  "--invalid-token-ban-seconds", "5")
        with xvp:
            for expected in (b"HTTP/1.1 401 Not Authorized\r\n\r\n",) * 2:
                with xvp_open(xport, "c" * 43) as sock:
                    sock.settimeout(WAIT)
                    assert sock.recv(100) == expected
            good = xvp_token(Stack(bus, ca, xvp, xport), echo_server.port, "vm-b")
            with xvp_open(xport, good) as sock:
                sock.settimeout(WAIT)
                answer = sock.recv(100)
            assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: ")
            xvp.wait_for_log("client.banned", client="127.0.0.1")


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_token_and_instance_limits_hold_across_the_cluster(tmp_path: Path, store: str,
                                                          echo_server: TcpServer) -> None:
    """Two novncproxy and an xvpvncproxy, each talking to its own consoleauth replica (one
    Redis) or all to one consoleauth (sqlite): the N+1th session of a token or an instance
    is refused wherever it arrives, and its place comes back when a session ends."""
    from tests.support import RedisServer, ServiceProcess, free_port, wait_bus, wait_tcp

    limits = ["--max-sessions-per-token", "1", "--max-sessions-per-instance", "2"]
    with contextlib.ExitStack() as stack:
        if store == "redis":
            redis = stack.enter_context(RedisServer(tmp_path / "redis"))
            extra = ["--token-store", "redis", "--redis-url", redis.url]
            replicas = 3
        else:
            extra, replicas = ["--token-store", "sqlite", "--state-dir", str(tmp_path)], 1
        buses = [f"tcp://127.0.0.1:{free_port()}" for _ in range(replicas)]
        for bus in buses:
            stack.enter_context(ServiceProcess.start("consoleauth", [
                "--consoleauth-listen", bus, *extra], tmp_path))
            wait_bus(bus)
        proxies = []
        for i in range(2):
            port = free_port()
            stack.enter_context(ServiceProcess.start("novncproxy", [
                "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(port),
                "--consoleauth-url", buses[i % replicas], *limits], tmp_path))
            proxies.append(port)
        xvp, xport, _ = start_xvp(tmp_path, buses[-1], *limits)
        stack.enter_context(xvp)
        for port in proxies:
            wait_tcp("127.0.0.1", port)
        ca = Stack(buses[0], None, None, 0)  # type: ignore[arg-type]

        def ws(port: int, token: str) -> WsClient:
            client = WsClient(port, f"/websockify?token={token}")
            stack.callback(client.close)
            return client

        first_token = ca.authorize(port=echo_server.port, instance="vm-c")
        first = ws(proxies[0], first_token)
        assert first.reply.status == 101
        again = ws(proxies[1], first_token)  # the same token on the other proxy
        assert again.reply.status == 429, again.reply
        assert json.loads(again.reply.body)["error"] == "limit_token"
        with xvp_open(xport, xvp_token(ca, echo_server.port, "vm-c")) as second:
            assert read_exactly(second, len(OK)) == OK  # the instance's second session
            third = ws(proxies[1], ca.authorize(port=echo_server.port, instance="vm-c"))
            assert third.reply.status == 429
            body = json.loads(third.reply.body)
            assert body == {"ok": False, "error": "limit_instance",
                            "message": "too many console sessions for this instance"}
            with xvp_open(xport, xvp_token(ca, echo_server.port, "vm-c")) as fourth:
                fourth.settimeout(WAIT)
                assert fourth.recv(100) == b"HTTP/1.1 429 Too Many Requests\r\n\r\n"
            other = ws(proxies[1], ca.authorize(port=echo_server.port, instance="vm-d"))
            assert other.reply.status == 101  # other instances are not limited
        def opens(port: int, instance: str) -> WsClient:
            """A session of ``instance`` once its place is free (retried until WAIT)."""
            deadline = time.monotonic() + WAIT
            while True:
                client = ws(port, ca.authorize(port=echo_server.port, instance=instance))
                if client.reply.status == 101 or time.monotonic() > deadline:
                    return client
                time.sleep(0.1)

        # the xvp session ended: its place comes back (reported within a second)
        back = opens(proxies[1], "vm-c")
        assert back.reply.status == 101
        back.send(frame(0x2, b"ok"))
        assert back.recv_bytes(2) == b"ok"
        # a target that cannot be reached gives its claimed place back at once
        first.close()
        unreachable = ca.authorize(port=free_port(), instance="vm-e")
        for _ in range(3):
            ws(proxies[0], unreachable).close()  # 101, then 1011: not held
        assert opens(proxies[0], "vm-e").reply.status == 101
