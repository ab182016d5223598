"""One time budget per token check, seen from outside: real consoleauth, novncproxy and
xvpvncproxy processes, compute hosts that answer slowly or not at all, and a consoleauth
that answers garbage (bus_peer.py, real processes on real ZeroMQ sockets).

A check costs at most 2 validate_console_port calls; the proxy answers within
consoleauth_timeout + 0.5 s; sessions for other hosts opened at the same moment are
admitted within 1 s; every bus failure is a 503, never a 500 or a dropped socket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from console_common.net.bus import BusClient

from tests.integration.test_novnc_protocol import TcpServer, WsClient, http_get, start_proxy
from tests.integration.test_xvp_protocol import start_xvp
from tests.support import REPO, ServiceProcess, free_port, remember_secret, wait_bus

PEER = REPO / "tests" / "tools" / "bus_peer.py"
TIMEOUT = 2.0  # consoleauth_timeout of the proxies


class Peer:
    """bus_peer.py as a process; ``lines()`` is what it printed (one line per call)."""

    def __init__(self, mode: str, *extra: str) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen([sys.executable, str(PEER), self.endpoint, mode, *extra],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.out: list[str] = []
        assert self.proc.stdout.readline().strip() == "ready"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.out.append(line.strip())

    def calls(self) -> int:
        return sum(1 for line in self.out if line.startswith("validate "))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


def greet(conn: socket.socket) -> None:
    conn.sendall(b"RFB 003.008\n")
    while conn.recv(65536):
        pass


@pytest.fixture
def peers():
    made: list[Peer] = []

    def make(mode: str, *extra: str) -> Peer:
        made.append(Peer(mode, *extra))
        return made[-1]

    yield make
    for peer in made:
        peer.stop()


def _consoleauth(tmp: Path) -> tuple[ServiceProcess, str]:
    bus = f"tcp://127.0.0.1:{free_port()}"
    ca = ServiceProcess.start("consoleauth", ["--consoleauth-listen", bus, "--token-store",
                                              "memory"], tmp)
    wait_bus(bus)
    return ca, bus


def _authorize(bus: str, console_type: str, compute_url: str, port: int, uuid: str) -> str:
    with BusClient([bus], timeout=5) as client:
        return remember_secret(client.call(
            "authorize_console", console_type=console_type, host="127.0.0.1", port=port,
            instance_uuid=uuid, compute_url=compute_url)["token"])


def _novnc_status(port: int, token: str) -> tuple[int, float]:
    started = time.monotonic()
    ws = WsClient(port, f"/websockify?token={token}")
    status = ws.reply.status
    ws.close()
    return status, time.monotonic() - started


def _xvp_status(port: int, token: str) -> tuple[bytes, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"CONNECT /console?token={token} HTTP/1.1\r\n\r\n".encode())
        line = sock.recv(4096).split(b"\r\n")[0]
    return line, time.monotonic() - started


def _at_once(*calls) -> list:
    results: list = [None] * len(calls)

    def run(i: int, fn, *args) -> None:
        results[i] = fn(*args)

    threads = [threading.Thread(target=run, args=(i, *call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("compute", ["slow", "dead"])
def test_slow_or_dead_compute_host_costs_one_budget_and_delays_no_one_else(
        tmp_path: Path, peers, compute: str) -> None:
    target = TcpServer(greet)
    slow = peers("slow-compute", "--delay", "30")
    fast = peers("slow-compute", "--delay", "0")
    bad_url = slow.endpoint if compute == "slow" else f"tcp://127.0.0.1:{free_port()}"
    ca, bus = _consoleauth(tmp_path)
    common = ("--consoleauth-timeout", str(TIMEOUT))
    with ca:
        novnc_port, novnc = start_proxy(tmp_path, bus, *common)
        xvp, xvp_port, _ = start_xvp(tmp_path, bus, *common)
        with novnc, xvp:
            stuck = _authorize(bus, "novnc", bad_url, target.port, "vm-stuck")
            stuck_xvp = _authorize(bus, "xvpvnc", bad_url, target.port, "vm-stuck")
            others = [_authorize(bus, "novnc", fast.endpoint, target.port, f"vm-{i}")
                      for i in range(3)]
            others_xvp = [_authorize(bus, "xvpvnc", fast.endpoint, target.port, f"vm-x{i}")
                          for i in range(3)]
            results = _at_once((_novnc_status, novnc_port, stuck),
                               (_xvp_status, xvp_port, stuck_xvp),
                               *[(_novnc_status, novnc_port, t) for t in others],
                               *[(_xvp_status, xvp_port, t) for t in others_xvp])
    target.stop()
    (stuck_status, stuck_s), (xvp_line, xvp_s) = results[0], results[1]
    assert stuck_status == 503 and stuck_s < TIMEOUT + 0.5, results[0]
    assert xvp_line == b"HTTP/1.1 503 Service Unavailable" and xvp_s < TIMEOUT + 0.5, results[1]
    for status, seconds in results[2:5]:
        assert status == 101 and seconds < 1.0, results[2:5]
    for line, seconds in results[5:]:
        assert line == b"HTTP/1.1 200 OK" and seconds < 1.0, results[5:]
    if compute == "slow":
        time.sleep(0.2)
        assert 1 <= slow.calls() <= 2 * 2  # at most 2 per check, two checks (novnc, xvp)
    assert fast.calls() == 6


def test_consoleauth_answering_garbage_is_503_on_both_proxies(tmp_path: Path, peers) -> None:
    garbage = peers("garbage")
    novnc_port, novnc = start_proxy(tmp_path, garbage.endpoint)
    xvp, xvp_port, _ = start_xvp(tmp_path, garbage.endpoint)
    token = "t" * 43
    with novnc, xvp:
        ws = WsClient(novnc_port, f"/websockify?token={token}")
        assert ws.reply.status == 503
        assert json.loads(ws.reply.body)["error"] == "consoleauth_unavailable"
        ws.close()
        line, _ = _xvp_status(xvp_port, token)
        assert line == b"HTTP/1.1 503 Service Unavailable"
        assert http_get(novnc_port, "/healthz").status == 503
        novnc.wait_for_log("session.refused", status=503)
        xvp.wait_for_log("session.refused", status=503)
    for proc in (novnc, xvp):
        assert not [line for line in proc.lines() if line["level"] == "error"], proc.name
