"""Pre-fork workers (``--workers N``): real processes sharing ports through SO_REUSEPORT.

Checked here: every worker listens and serves sessions, ``/metrics`` sums the workers,
``/healthz`` names the answering worker, a worker that dies is replaced, SIGTERM and a
Ctrl-C to the process group drain every worker and exit 0, a port in use fails at once
with one clear error, and nothing is left behind (processes, the metrics directory).
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_novnc_protocol import (WAIT, Stack, TcpServer, WsClient, echo,
                                                   frame, start_consoleauth, start_proxy)
from tests.integration.test_xvp_protocol import OK, read_exactly, start_xvp
from tests.support import VENV_BIN, ServiceProcess, free_port, remember_secret, wait_tcp


@pytest.fixture(scope="module")
def echo_server():
    server = TcpServer(echo)
    yield server
    server.stop()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait_children(pid: int, count: int, timeout: float = WAIT) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(pid)
        if len(kids) == count:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"{pid} has children {children(pid)}, expected {count}")


def get_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=WAIT) as r:
        return json.loads(r.read())


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as r:
        text = r.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics:\n{text}"
    return float(match.group(1))


def metrics_dirs(service: str) -> set[str]:
    return set(glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"{service}-metrics-*")))


def test_novncproxy_workers_share_the_port_and_sum_their_metrics(
        tmp_path: Path, echo_server: TcpServer) -> None:
    before = metrics_dirs("novncproxy")
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--workers", "2")
        with proxy:
            workers = wait_children(proxy.popen.pid, 2)
            for pid in workers:  # each worker listens on the port itself
                proxy.wait_for_log("service.start", worker=workers.index(pid))
            answered = {get_json(port, "/healthz")["pid"] for _ in range(40)}
            assert answered == set(workers), "SO_REUSEPORT spreads connections to both"
            stack = Stack(bus, ca, proxy, port)
            sessions = []
            for n in range(6):
                ws = WsClient(port, f"/websockify?token={stack.authorize(port=echo_server.port)}")
                assert ws.reply.status == 101
                ws.send(frame(0x2, b"hello %d" % n))
                assert ws.recv_bytes(7) == b"hello %d" % n
                sessions.append(ws)
            assert metric(port, "console_sessions_open") == 6  # live sum over workers
            deadline = time.monotonic() + WAIT  # every worker hears the events heartbeats
            while metric(port, "console_events_link_up") != 1:  # (the lowest of them)
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert metric(port, "console_sessions_total") == 6
            for ws in sessions:
                ws.close()
            deadline = time.monotonic() + WAIT
            while metric(port, "console_sessions_open") != 0:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert metric(port, "console_connections_total") >= 40 + 6
            assert proxy.stop(signal.SIGTERM) == 0
            for pid in workers:
                assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        stops = [line for line in proxy.lines() if line["event"] == "service.stop"]
        assert sorted(line["worker"] for line in stops) == [0, 1]
        proxy.wait_for_log("workers.stop")
    assert metrics_dirs("novncproxy") == before  # removed at exit


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_xvpvncproxy_replaces_a_dead_worker(tmp_path: Path, echo_server: TcpServer) -> None:
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        proxy, port, metrics_port = start_xvp(tmp_path, bus, "--workers", "2")
        with proxy:
            first = wait_children(proxy.popen.pid, 2)
            for index in (0, 1):  # both serving: a worker that dies at boot stops them all
                proxy.wait_for_log("service.start", worker=index)
            time.sleep(0.3)
            os.kill(first[1], signal.SIGKILL)
            proxy.wait_for_log("worker.died", pid=first[1], exit_code=-9)
            now = wait_children(proxy.popen.pid, 2)
            assert first[0] in now and first[1] not in now
            proxy.wait_for_log("service.start", worker=1)
            for _ in range(8):  # whichever worker takes it, sessions work
                token = _xvp_token(bus, echo_server.port)
                with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
                    sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode())
                    assert read_exactly(sock, len(OK)) == OK
                    sock.sendall(b"ping")
                    assert read_exactly(sock, 4) == b"ping"
            pids = {get_json(metrics_port, "/healthz")["pid"] for _ in range(40)}
            assert pids == set(now)
            assert proxy.stop(signal.SIGTERM) == 0


def _xvp_token(bus: str, port: int) -> str:
    from console_common.net.bus import BusClient

    with BusClient([bus], timeout=5) as client:
        return remember_secret(client.call("authorize_console", console_type="xvpvnc",
                                           host="127.0.0.1", port=port,
                                           instance_uuid="vm-w")["token"])


def _ctrl_c_to_group(log: Path, bus: str, port: int, workers: int,
                     before: Callable[[subprocess.Popen], None]) -> None:
    """novncproxy with ``workers`` in a process group of its own, logging to ``log``; once
    ``before(proc)`` returns, a terminal's Ctrl-C to the group: it must exit 0."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(VENV_BIN / "novncproxy"), "--log-format", "json", "--novncproxy-host",
             "127.0.0.1", "--novncproxy-port", str(port), "--consoleauth-url", bus,
             "--workers", str(workers)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    try:
        before(proc)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ctrl_c_to_the_process_group_is_a_clean_stop(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the parent and every worker at once."""
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port = free_port()
        log = tmp_path / "novnc.log"

        def ready(proc: subprocess.Popen) -> None:
            wait_tcp("127.0.0.1", port)
            wait_children(proc.pid, 3)

        _ctrl_c_to_group(log, bus, port, 3, ready)
        events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        assert [e for e in events if e["level"] in ("error", "critical")] == []
        assert sum(e["event"] == "service.stop" for e in events) == 3
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_port_in_use_fails_at_once_with_one_clear_error(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        proc = ServiceProcess.start("xvpvncproxy", [
            "--xvpvncproxy-host", "127.0.0.1", "--xvpvncproxy-port", str(port),
            "--xvpvncproxy-metrics-port", "0", "--workers", "2"], log_dir=tmp_path)
        assert proc.popen.wait(WAIT) == 1
        lines = proc.log_path.read_text().splitlines()
        # one JSON line for the log, one plain line on stderr for the operator
        events = [json.loads(line) for line in lines if line.startswith("{")]
        assert [e["event"] for e in events] == ["service.bind_failed"]
        assert "in use" in events[0]["error"]
        assert [line for line in lines if not line.startswith("{")] == [
            "xvpvncproxy: error: cannot listen: [Errno 98] Address already in use"]
    finally:
        taken.close()


@pytest.mark.parametrize("delay", [0.3, 0.6, 1.0])
def test_ctrl_c_while_starting_is_a_clean_stop(tmp_path: Path, delay: float) -> None:
    """A Ctrl-C that lands while the parent or its workers are still starting (before their
    handlers are installed) is remembered and honoured once they are: exit 0, no traceback."""
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        log = tmp_path / "novnc.log"
        _ctrl_c_to_group(log, bus, free_port(), 2, lambda _proc: time.sleep(delay))
        text = log.read_text()
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-2000:]
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert [e for e in events if e["level"] in ("error", "critical")] == []
