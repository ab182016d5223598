"""Token stores under load, against a real consoleauth process on every store (memory,
sqlite, and a real redis-server): every request is answered, none fails, and a Redis that
is paused, stopped or restarted under load costs clear Unavailable answers within the
budget, never silence, and consoleauth recovers by itself."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import gevent
import pytest
import zmq
from console_common.net.bus import BusClient
from console_common.proto.bus import BusUnavailable, Unavailable

from tests.integration._consoles import start_consoleauth
from tests.support import (REPO, RedisServer, ServiceProcess, free_port, remember_secret,
                           wait_bus)

STORES = ["memory", "sqlite", "redis"]
LOAD = REPO / "tests" / "tools" / "bus_load.py"


@pytest.fixture
def consoleauth(request, tmp_path):
    """consoleauth on the store named by the test's parameter (its own redis-server)."""
    store = request.param
    extra: list[str] = ["--state-dir", str(tmp_path / "state")]
    redis = None
    if store == "redis":
        redis = RedisServer(tmp_path / "redis").start()
        extra += ["--redis-url", redis.url]
    ca, ep = start_consoleauth(tmp_path, *extra, store=store)
    try:
        yield ca, ep, redis
    finally:
        ca.stop()
        if redis is not None:
            redis.stop()


def _dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _burst(sock: zmq.Socket, requests: list[tuple[str, dict]], timeout: float = 10.0) -> list:
    """Send every request at once on one connection; the replies in request order."""
    for i, (method, args) in enumerate(requests):
        sock.send_multipart([str(i).encode(), b"", json.dumps(
            {"v": 1, "id": str(i), "method": method, "args": args}).encode()])
    replies: dict[int, dict] = {}
    deadline = time.monotonic() + timeout
    while len(replies) < len(requests) and sock.poll(max(0, deadline - time.monotonic()) * 1000):
        rid, _, body = sock.recv_multipart()
        replies[int(rid)] = json.loads(body)
    missing = sorted(set(range(len(requests))) - set(replies))
    assert not missing, f"{len(missing)} of {len(requests)} requests never answered"
    return [replies[i] for i in range(len(requests))]


def _authorize_args(i: int) -> dict:
    return {"console_type": "novnc", "host": "127.0.0.1", "port": 5900 + i % 50,
            "instance_uuid": f"burst-{i}"}


@pytest.mark.parametrize("consoleauth", STORES, indirect=True)
def test_first_burst_of_every_method_is_answered(consoleauth) -> None:
    """The bug this guards: a sqlite consoleauth, idle a few seconds after start, lost 9 of
    a first burst of 50 authorizations (no reply, no log, not stored)."""
    ca, ep, _ = consoleauth
    time.sleep(1.5)  # started seconds before, idle
    sock = _dealer(ep)
    try:
        replies = _burst(sock, [("authorize_console", _authorize_args(i)) for i in range(50)])
        assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3]
        tokens = [remember_secret(r["result"]["token"]) for r in replies]
        assert _burst(sock, [("ping", {})])[0]["result"]["tokens"] == 50

        checks = _burst(sock, [("check_token", {"token": t}) for t in tokens])
        assert [r["result"]["instance_uuid"] for r in checks] == [f"burst-{i}" for i in range(50)]
        many = _burst(sock, [("check_tokens", {"tokens": tokens[i:i + 8] + ["x" * 40]})
                             for i in range(50)])
        for i, reply in enumerate(many):
            items = reply["result"]["results"]
            assert [item["ok"] for item in items] == [True] * len(tokens[i:i + 8]) + [False]
            assert items[-1]["error"]["type"] == "InvalidToken"
        pings = _burst(sock, [("ping", {}) for _ in range(50)])
        assert {r["result"]["tokens"] for r in pings} == {50}

        revoked = _burst(sock, [("delete_tokens_for_instance", {"instance_uuid": f"burst-{i}"})
                                for i in range(50)])
        assert [r["result"]["deleted"] for r in revoked] == [1] * 50
        assert _burst(sock, [("ping", {})])[0]["result"]["tokens"] == 0
        after = _burst(sock, [("check_token", {"token": t}) for t in tokens])
        assert {r["error"]["type"] for r in after} == {"InvalidToken"}
    finally:
        sock.close()
    assert not [line for line in ca.lines() if line["level"] in ("warning", "error")]


@pytest.mark.parametrize("consoleauth", STORES, indirect=True)
def test_compute_hosts_as_plain_req_clients_get_every_answer(consoleauth) -> None:
    """20 REQ clients (as compute hosts talk), each 20 authorizations one after another,
    waiting 3 s for each reply: every one answered and stored."""
    ca, ep, _ = consoleauth
    time.sleep(1.0)
    lost: list[str] = []
    tokens: list[str] = []

    def host(n: int) -> None:
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(ep)
        try:
            for i in range(20):
                sock.send(json.dumps({"v": 1, "method": "authorize_console",
                                      "args": _authorize_args(n * 100 + i)}).encode())
                if not sock.poll(3000):
                    lost.append(f"host {n} request {i}")
                    return
                reply = json.loads(sock.recv())
                assert reply["ok"], reply
                tokens.append(reply["result"]["token"])
        finally:
            sock.close()

    threads = [threading.Thread(target=host, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for token in tokens:
        remember_secret(token)
    assert not lost
    assert len(tokens) == 400
    with BusClient([ep], timeout=5) as client:
        assert client.call("ping")["tokens"] == 400


def _load(endpoint: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(LOAD), endpoint, *args],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _results(procs: list[subprocess.Popen], timeout: float = 120) -> list[dict]:
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0
        out.append(json.loads(stdout))
    return out


@pytest.mark.parametrize("consoleauth", STORES, indirect=True)
def test_thousand_requests_in_flight_all_answered_none_failed(consoleauth) -> None:
    """4 client processes x 250 in flight (authorize, check, check_tokens, revoke, ping
    mixed), plus plain REQ clients: zero errors, zero unanswered."""
    ca, ep, _ = consoleauth
    procs = [_load(ep, "--requests", "4000", "--inflight", "250", "--req-clients", "3",
                   "--mix", "authorize,check,checks,revoke,check,ping") for _ in range(4)]
    for result in _results(procs):
        assert result["unanswered"] == 0, result
        assert result["answered"] == result["sent"] == 4000, result
        assert not {k: v for k, v in result.items() if k.startswith("error.")}, result
    assert not [line for line in ca.lines() if line["level"] in ("warning", "error")]


def _probe(ep: str, until: float, budget: float) -> list[tuple[float, str]]:
    """Authorize-and-check calls one after another until ``until``: (elapsed, outcome)."""
    out: list[tuple[float, str]] = []
    with BusClient([ep], timeout=budget, attempts=1) as client:
        while time.monotonic() < until:
            t0 = time.monotonic()
            try:
                token = client.call("authorize_console", **_authorize_args(7))["token"]
                remember_secret(token)
                client.call("check_token", token=token)
                outcome = "ok"
            except Unavailable:
                outcome = "unavailable"
            except BusUnavailable:
                outcome = "no reply"
            out.append((time.monotonic() - t0, outcome))
            gevent.sleep(0.02)
    return out


def test_redis_paused_stopped_and_restarted_under_load(tmp_path: Path) -> None:
    redis_timeout = 0.3
    with RedisServer(tmp_path / "redis") as redis:
        ca, ep = start_consoleauth(tmp_path, "--redis-url", redis.url, "--redis-timeout",
                                   str(redis_timeout), store="redis")
        with ca:
            load = [_load(ep, "--seconds", "9", "--requests", "10000000", "--inflight", "200",
                          "--req-clients", "2", "--mix", "authorize,check,checks,revoke,ping",
                          "--timeout", "10") for _ in range(2)]
            start = time.monotonic()
            phases: dict[str, list[tuple[float, str]]] = {}
            budget = 2.0
            phases["healthy"] = _probe(ep, start + 1.0, budget)
            redis.pause()
            phases["paused"] = _probe(ep, start + 2.5, budget)
            redis.resume()
            phases["resumed"] = _probe(ep, start + 4.0, budget)
            redis.stop()
            phases["stopped"] = _probe(ep, start + 5.5, budget)
            redis.start()
            phases["restarted"] = _probe(ep, start + 8.0, budget)
            results = _results(load)

        every = [p for probes in phases.values() for p in probes]
        # Never silence, and every answer well inside the caller's budget: a round trip
        # that fails plus the one queued behind it.
        assert "no reply" not in {outcome for _, outcome in every}
        assert max(elapsed for elapsed, _ in every) < 2 * redis_timeout + 0.5
        for name in ("healthy", "resumed", "restarted"):
            assert phases[name][-1][1] == "ok", (name, phases[name][-5:])
        for name in ("paused", "stopped"):
            assert "unavailable" in {o for _, o in phases[name]}, (name, phases[name][:5])
        for result in results:
            assert result["unanswered"] == 0, result
            errors = {k for k in result if k.startswith("error.")}
            assert errors <= {"error.Unavailable"}, result
            assert result["ok"] > 0
        lines = ca.lines()
        warnings = [line for line in lines if line["event"] == "store.unavailable"]
        assert warnings and all(line["level"] == "warning" and line["error"] for line in warnings)
        assert len(warnings) < 40  # rate-limited, not one per request
        assert [line for line in lines if line["event"] == "store.reconnected"]
        assert not [line for line in lines if line["level"] == "error"]


def test_redis_ping_counts_live_tokens_only(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as redis:
        ca, ep = start_consoleauth(tmp_path, "--redis-url", redis.url, "--console-token-ttl",
                                   "1", store="redis")
        with ca, BusClient([ep], timeout=2) as client:
            for i in range(5):
                remember_secret(client.call("authorize_console", **_authorize_args(i))["token"])
            assert client.call("ping")["tokens"] == 5
            time.sleep(1.2)
            assert client.call("ping")["tokens"] == 0


def test_redis_password_database_and_unix_socket(tmp_path: Path) -> None:
    password = remember_secret("pw-" + "7" * 30)
    sock_path = tmp_path / "redis" / "redis.sock"
    with RedisServer(tmp_path / "redis", "--requirepass", password, "--unixsocket",
                     str(sock_path), "--unixsocketperm", "700") as redis:
        urls = [f"redis://:{password}@127.0.0.1:{redis.port}/2",
                f"unix://:{password}@{sock_path}?db=2"]
        for url in urls:
            ca, ep = start_consoleauth(tmp_path, "--redis-url", url, store="redis")
            with ca, BusClient([ep], timeout=2) as client:
                token = remember_secret(client.call("authorize_console",
                                                    **_authorize_args(1))["token"])
                assert client.call("check_token", token=token).instance_uuid == "burst-1"
                assert client.call("ping")["tokens"] == 1
                assert client.call("delete_tokens_for_instance",
                                   instance_uuid="burst-1")["deleted"] == 1
        ca, ep = start_consoleauth(tmp_path, "--redis-url", urls[0], store="redis")
        with ca, BusClient([ep], timeout=2) as client:
            remember_secret(client.call("authorize_console", **_authorize_args(2))["token"])

        def dbsize(db: int) -> str:
            return subprocess.run(["redis-cli", "-p", str(redis.port), "-a", password,
                                   "--no-auth-warning", "-n", str(db), "dbsize"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()

        # token, instance set, expiry index; and the control log (epoch, seq, events: the
        # revocations above): everything in db 2, nothing in db 0
        assert (dbsize(2), dbsize(0)) == ("6", "0")

        wrong = f"redis://:nope-{'x' * 20}@127.0.0.1:{redis.port}/2"
        ep = f"tcp://127.0.0.1:{free_port()}"
        ca = ServiceProcess.start("consoleauth", ["--consoleauth-listen", ep, "--token-store",
                                                  "redis", "--redis-url", wrong], tmp_path)
        with ca:
            with pytest.raises(Unavailable, match="AUTH refused"):
                wait_bus(ep)  # up, and answering: the store is what fails
        warned = [line for line in ca.lines() if line["event"] == "store.unavailable"]
        assert warned and "AUTH refused" in warned[0]["error"]
        assert "nope-" not in ca.log_path.read_text()
