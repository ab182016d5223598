"""End to end through the compose cluster: host -> HAProxy edge -> scaled proxies ->
the fake compute host's built-in console, with consoleauth (two replicas, redis store)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.compose.conftest import ADMIN_KEY, Cluster
from tests.support import REPO

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


def test_prometheus_scrapes_every_replica_through_docker_dns(cluster: Cluster) -> None:
    """The `monitoring` profile: Prometheus finds every replica of consoleauth and both
    proxies by their service names (one A record each) and scrapes them, with the suite's
    alert rules loaded."""
    base = f"http://127.0.0.1:{cluster.prometheus_port}/api/v1"

    def get(path: str) -> dict:
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            return json.loads(resp.read())["data"]

    want = {"consoleauth": 2, "novncproxy": 2, "xvpvncproxy": 2}
    deadline = time.monotonic() + 90  # discovery every 10 s, first scrape within 15 s
    seen: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        try:
            targets = get("/targets?state=active")["activeTargets"]
        except OSError:
            targets = []
        seen = {}
        for target in targets:
            if target["health"] == "up":
                seen.setdefault(target["labels"]["job"], []).append(
                    target["labels"]["instance"])
        if all(len(seen.get(job, [])) == n for job, n in want.items()):
            break
        time.sleep(1)
    assert {job: len(v) for job, v in seen.items()} == want, seen
    # two distinct addresses per job: the replicas, not one name scraped twice
    assert all(len(set(v)) == 2 for v in seen.values()), seen
    up = get("/query?query=sum(up{job=~%22novncproxy|xvpvncproxy|consoleauth%22})")
    assert float(up["result"][0]["value"][1]) == 6
    rules = [r["name"] for g in get("/rules")["groups"] for r in g["rules"]]
    assert {"ConsoleauthDown", "ConsoleProxyNearMaxSessions"} <= set(rules), rules


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


def test_the_image_builds_itself_from_the_source_tree(cluster: Cluster) -> None:
    """What `docker compose up --build` does on a normal Docker host (WHEELS=source, the
    default): uv builds our wheels in the image, pip fetches the locked dependencies, the
    pinned noVNC comes from npm. Here containers reach no registry by themselves, so the
    build runs on the host network with the host's extra CA certificates (this machine's
    egress proxy); the base image is the local one (no Docker Hub)."""
    extra_ca = "".join(p.read_text() for p in sorted(
        Path("/usr/local/share/ca-certificates").glob("*.crt")))
    env = {**cluster.env, "WHEELS": "source", "BUILD_NETWORK": "host", "EXTRA_CA": extra_ca,
           "SUITE_IMAGE": "consoleproxy/suite:source",
           "BASE_IMAGE": cluster.env.get("BASE_IMAGE", "local/console-base:latest")}
    cmd = ["docker", "compose", "-p", "srcbuild", "-f", str(REPO / "compose.yaml"),
           "build", "consoleauth"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    try:
        out = cluster.docker("run", "--rm", "consoleproxy/suite:source", "sh", "-c",
                             "novncproxy --version && xvpvncproxy --version && consolectl "
                             "--version && test -f /opt/novnc/core/rfb.js && id -u && "
                             "python3 -m pip list --format=freeze", timeout=60)
        lines = out.splitlines()
        assert lines[:3] == ["novncproxy 0.1.0", "xvpvncproxy 0.1.0", "consolectl 0.1.0"]
        assert lines[3] == "10001"  # not root
        def norm(name: str) -> str:
            return name.lower().replace("_", "-")

        installed = {norm(n): v for n, v in (line.split("==") for line in lines[4:]
                                            if "==" in line)}
        lock = tomllib.loads((REPO / "uv.lock").read_text())
        locked = {norm(p["name"]): p["version"] for p in lock["package"]}
        for name in ("gevent", "pyzmq", "marshmallow", "structlog", "prometheus-client"):
            assert installed[name] == locked[name], (name, installed[name], locked[name])
    finally:
        cluster.docker("image", "rm", "-f", "consoleproxy/suite:source")


def test_revocation_and_sessions_across_replicas(cluster: Cluster) -> None:
    """Live control in the cluster: the session is listed (whichever consoleauth replica
    answers), and a revocation handled by any replica closes it (1008) within a second,
    through the edge, whichever novncproxy replica holds it."""
    from websockets.exceptions import ConnectionClosed

    console = cluster.get_console("novnc", "vm-2")
    url = f"ws://127.0.0.1:{cluster.novnc_port}/websockify?token={console['token']}"
    ctl = ("exec", "-T", "fake-compute", "consolectl", "--consoleauth-url",
           "tcp://consoleauth:6085", "--bus-secret-key-file", ADMIN_KEY)
    with connect(url, open_timeout=10, close_timeout=2) as ws:
        assert ws.recv(timeout=10) == RFB_GREETING
        deadline = time.monotonic() + 10
        while True:
            rows = json.loads(cluster.compose(*ctl, "sessions", "--json", "--instance",
                                              console["instance_uuid"]))
            if rows or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert [r["kind"] for r in rows] == ["novnc"] and rows[0]["proxy"]["service"] == \
            "novncproxy"
        started = time.monotonic()
        cluster.compose(*ctl, "revoke", console["instance_uuid"])
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        elapsed = time.monotonic() - started
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "console revoked")
    assert elapsed < 3.0, f"revocation took {elapsed:.2f}s (docker exec included)"


def test_the_bus_runs_with_curve_and_refuses_unknown_keys(cluster: Cluster) -> None:
    """Keys were made on the first `up` into a volume (not in the image); a plain client
    inside the network gets no answer, a known key with the wrong role gets Forbidden."""
    image_keys = cluster.docker("run", "--rm", "--entrypoint", "sh", "consoleproxy/suite:latest",
                                "-c", "ls /keys 2>/dev/null | wc -l").strip()
    assert image_keys == "0"
    plain = subprocess.run(
        ["docker", "compose", "-p", "consoleproxy", "-f", str(REPO / "compose.yaml"), "exec",
         "-T", "fake-compute", "consolectl", "status", "--no-compute", "--consoleauth-url",
         "tcp://consoleauth:6085", "--consoleauth-timeout", "1", "--bus-secret-key-file", "",
         "--bus-server-key-file", ""], env=cluster.env, capture_output=True, text=True,
        timeout=60, check=False)
    assert plain.returncode == 3, plain.stdout + plain.stderr
    wrong_role = subprocess.run(
        ["docker", "compose", "-p", "consoleproxy", "-f", str(REPO / "compose.yaml"), "exec",
         "-T", "fake-compute", "consolectl", "sessions", "--consoleauth-url",
         "tcp://consoleauth:6085"], env=cluster.env, capture_output=True, text=True,
        timeout=60, check=False)  # fake-compute's own key: role compute
    assert wrong_role.returncode == 1 and "not allowed for role compute" in wrong_role.stderr
