"""Live control with several consoleauth replicas on one Redis (token_store=redis).

Two consoleauth replicas share a Redis; two novncproxy and two xvpvncproxy subscribe to
both replicas' events sockets and send their bus calls to both. A revocation or a
disconnect handled by either replica reaches every proxy, `consolectl sessions` shows
every session whichever replica it asks, and a Redis that lost its data (a new epoch of the
control log) still leaves nothing missed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from console_common.net.bus import BusClient

from tests.integration.test_novnc_protocol import TcpServer, WsClient, echo, frame
from tests.integration.test_xvp_protocol import OK, read_exactly
from tests.support import (VENV_BIN, RedisServer, ServiceProcess, free_port, remember_secret,
                           wait_bus, wait_tcp)

WAIT = 10.0


@dataclass
class Cluster:
    buses: list[str]
    events: list[str]
    novnc: list[int] = field(default_factory=list)
    xvp: list[int] = field(default_factory=list)
    procs: list[ServiceProcess] = field(default_factory=list)

    def call(self, replica: int, method: str, **args: object) -> dict:
        with BusClient([self.buses[replica]], timeout=5) as bus:
            return bus.call(method, **args)

    def token(self, kind: str, port: int, instance: str) -> str:
        result = self.call(0, "authorize_console", console_type=kind, host="127.0.0.1",
                           port=port, instance_uuid=instance)
        return remember_secret(result["token"])

    def ctl(self, replica: int, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(VENV_BIN / "consolectl"), *args, "--consoleauth-url",
                               self.buses[replica]], capture_output=True, text=True,
                              timeout=30, check=False)


@pytest.fixture(scope="module")
def echo_target() -> Iterator[TcpServer]:
    target = TcpServer(echo)
    yield target
    target.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("live-redis")
    with RedisServer(tmp / "redis") as redis:
        buses = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
        events = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
        c = Cluster(buses, events)
        try:
            for bus, ev in zip(buses, events):
                c.procs.append(ServiceProcess.start("consoleauth", [
                    "--consoleauth-listen", bus, "--consoleauth-events-listen", ev,
                    "--token-store", "redis", "--redis-url", redis.url], tmp))
                wait_bus(bus)
            common = ["--consoleauth-url", ",".join(buses),
                      "--consoleauth-events-url", ",".join(events)]
            for _ in range(2):
                port = free_port()
                c.procs.append(ServiceProcess.start("novncproxy", [
                    "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(port),
                    *common], tmp))
                c.novnc.append(port)
                port = free_port()
                c.procs.append(ServiceProcess.start("xvpvncproxy", [
                    "--xvpvncproxy-host", "127.0.0.1", "--xvpvncproxy-port", str(port),
                    "--xvpvncproxy-metrics-port", "0", *common], tmp))
                c.xvp.append(port)
            for port in c.novnc + c.xvp:
                wait_tcp("127.0.0.1", port)
            for proc in c.procs[2:]:
                proc.wait_for_log("events.link_up", timeout=WAIT)
            c.redis = redis  # type: ignore[attr-defined]
            yield c
        finally:
            for proc in reversed(c.procs):
                proc.stop()


def open_xvp(port: int, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode())
    assert read_exactly(sock, len(OK)) == OK
    return sock


def open_all(c: Cluster, target: int, instance: str) -> tuple[list[WsClient], list[socket.socket]]:
    ws = []
    for port in c.novnc:
        client = WsClient(port, f"/websockify?token={c.token('novnc', target, instance)}")
        assert client.reply.status == 101
        ws.append(client)
    tcp = [open_xvp(port, c.token("xvpvnc", target, instance)) for port in c.xvp]
    return ws, tcp


def listed(c: Cluster, replica: int, instance: str, count: int) -> list[dict]:
    deadline = time.monotonic() + WAIT
    while True:
        rows = json.loads(c.ctl(replica, "sessions", "--json", "--instance", instance).stdout)
        if len(rows) == count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def closed_within(ws: list[WsClient], tcp: list[socket.socket], seconds: float,
                  code: int, reason: bytes) -> None:
    for client in ws:
        client.sock.settimeout(seconds)
        while (frame_ := client.recv_frame())[0] != 0x8:
            pass  # data frames still in flight before the close
        payload = frame_[1]
        assert (int.from_bytes(payload[:2], "big"), payload[2:]) == (code, reason)
    for sock in tcp:
        sock.settimeout(seconds)
        assert sock.recv(16) == b""


def still_relays(ws: list[WsClient], tcp: list[socket.socket]) -> None:
    for client in ws:
        client.send(frame(0x2, b"alive"))
        assert client.recv_bytes(5) == b"alive"
    for sock in tcp:
        sock.sendall(b"alive")
        assert read_exactly(sock, 5) == b"alive"


def test_either_replica_revokes_and_lists_every_session(cluster: Cluster,
                                                         echo_target: TcpServer) -> None:
    ws, tcp = open_all(cluster, echo_target.port, "vm-r1")
    other_ws, other_tcp = open_all(cluster, echo_target.port, "vm-r2")
    try:
        for replica in (0, 1):  # every session, whichever replica answers
            rows = listed(cluster, replica, "vm-r1", 4)
            assert sorted(r["kind"] for r in rows) == ["novnc", "novnc", "xvpvnc", "xvpvnc"]
            assert len({r["proxy"]["pid"] for r in rows}) == 4
        started = time.monotonic()
        out = cluster.ctl(1, "revoke", "vm-r1")  # the second replica handles it
        assert out.returncode == 0, out.stderr
        closed_within(ws, tcp, 2.0, 1008, b"console revoked")
        elapsed = time.monotonic() - started
        assert elapsed < 1.5, f"revocation took {elapsed:.3f}s"
        still_relays(other_ws, other_tcp)
        assert listed(cluster, 0, "vm-r1", 0) == []
        # a disconnect through the first replica reaches the sessions held everywhere
        out = cluster.ctl(0, "disconnect", "--instance", "vm-r2")
        assert out.returncode == 0 and "Disconnecting 4 sessions" in out.stdout, out
        closed_within(other_ws, other_tcp, 2.0, 1008, b"console disconnected by operator")
    finally:
        for client in ws + other_ws:
            client.close()
        for sock in tcp + other_tcp:
            sock.close()


def test_a_redis_that_lost_its_log_starts_a_new_epoch_and_nothing_is_missed(
        cluster: Cluster, echo_target: TcpServer) -> None:
    ws, tcp = open_all(cluster, echo_target.port, "vm-r3")
    try:
        with BusClient([cluster.buses[0]], timeout=5) as bus:
            before = bus.call("events_since", epoch=None, seq=0)["epoch"]
        # FLUSHALL: the tokens, the sessions and the control log are gone (a new Redis)
        subprocess.run(["redis-cli", "-p", str(cluster.redis.port), "FLUSHALL"],  # type: ignore[attr-defined]
                       check=True, capture_output=True, timeout=10)
        assert cluster.call(0, "delete_tokens_for_instance",
                            instance_uuid="vm-r3")["deleted"] == 0
        closed_within(ws, tcp, 2.0, 1008, b"console revoked")
        after = cluster.call(1, "events_since", epoch=None, seq=0)["epoch"]
        assert after != before
    finally:
        for client in ws:
            client.close()
        for sock in tcp:
            sock.close()
