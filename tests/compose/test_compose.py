"""End to end through the compose cluster: host -> HAProxy edge -> scaled proxies ->
the fake compute host's built-in console, with consoleauth (two replicas, redis store)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest
from websockets.sync.client import connect

from tests.compose.conftest import Cluster

pytestmark = [pytest.mark.compose, pytest.mark.timeout(600)]
RFB_GREETING = b"RFB 003.008\n"


def novnc_greeting(cluster: Cluster, token: str, timeout: float = 10.0) -> bytes:
    url = f"ws://127.0.0.1:{cluster.novnc_port}/websockify?token={token}"
    with connect(url, open_timeout=timeout, close_timeout=2) as ws:
        data = ws.recv(timeout=timeout)
    return data if isinstance(data, bytes) else data.encode()


def recv_until(sock: socket.socket, marker: bytes, limit: int = 8192) -> bytes:
    buf = b""
    while marker not in buf and len(buf) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def test_novnc_websocket_through_edge(cluster: Cluster) -> None:
    console = cluster.get_console("novnc")
    assert console["access_url"].startswith(
        f"http://127.0.0.1:{cluster.novnc_port}/vnc_auto.html?path=%3Ftoken%3D")
    assert novnc_greeting(cluster, console["token"]) == RFB_GREETING


def xvp_greeting(cluster: Cluster, token: str, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", cluster.xvp_port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(f"CONNECT /console?token={token} HTTP/1.1\r\n\r\n".encode())
        reply = recv_until(sock, b"\r\n\r\n")
        head, _, rest = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), reply[:200]
        while len(rest) < len(RFB_GREETING):
            chunk = sock.recv(64)
            assert chunk, "connection closed before the RFB greeting"
            rest += chunk
    return rest[:len(RFB_GREETING)]


def test_xvp_through_edge(cluster: Cluster) -> None:
    console = cluster.get_console("xvpvnc")
    assert console["access_url"].startswith(f"http://127.0.0.1:{cluster.xvp_port}/console?token=")
    assert xvp_greeting(cluster, console["token"]) == RFB_GREETING


def test_healthz_and_page_through_edge(cluster: Cluster) -> None:
    base = f"http://127.0.0.1:{cluster.novnc_port}"
    for path in ("/healthz", "/vnc_auto.html", "/novnc/core/rfb.js"):
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            assert resp.status == 200, path


def test_failover_after_a_replica_dies(cluster: Cluster) -> None:
    novnc_token = cluster.get_console("novnc")["token"]
    xvp_token = cluster.get_console("xvpvnc")["token"]
    victims = []
    for service in ("novncproxy", "xvpvncproxy"):
        ids = cluster.compose("ps", "-q", service).split()
        assert len(ids) >= 2, f"expected two {service} replicas, got {ids}"
        victims.append(ids[0])
    cluster.docker("kill", *victims)
    # At once, before HAProxy's checks or DNS notice: the dead replica's slot gets its
    # round-robin turn, its connect times out (no RST) and HAProxy redispatches.
    started = time.monotonic()
    for _ in range(4):
        assert novnc_greeting(cluster, novnc_token) == RFB_GREETING
        assert xvp_greeting(cluster, xvp_token) == RFB_GREETING
    assert time.monotonic() - started < 20


def test_session_logs_are_json(cluster: Cluster) -> None:
    token = cluster.get_console("novnc")["token"]
    assert novnc_greeting(cluster, token) == RFB_GREETING
    deadline = time.monotonic() + 15
    while True:
        out = cluster.compose("logs", "--no-color", "--no-log-prefix", "novncproxy")
        lines = [line for line in out.splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        events = {r["event"] for r in records}
        if {"session.start", "session.end"} <= events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {"session.start", "session.end"} <= events, sorted(events)
    for record in records:
        assert {"timestamp", "level", "service", "event"} <= record.keys(), record
    end = next(r for r in records if r["event"] == "session.end")
    assert {"session_id", "token_id", "instance_uuid", "bytes_down"} <= end.keys()
    assert token not in out
