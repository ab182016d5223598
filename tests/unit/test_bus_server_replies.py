"""Every request gets exactly one reply from our BusServer (real ZeroMQ on loopback):
a handler that overruns, a full pool, a stop that cuts running handlers and a result that
arrives later (``Later``) all end in a reply, and failures of ours are logged once."""

from __future__ import annotations

import json
import time

import gevent
import gevent.event
import pytest
import structlog
import zmq
from console_common.net.bus import BusServer
from console_common.proto.bus import ConnectInfo
from console_common.net.bus.server import Deferred, Later
from console_common.net.throttle import Throttle


def _dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _send(sock: zmq.Socket, method: str, rid: str, **args) -> None:
    sock.send_multipart([rid.encode(), b"", json.dumps(
        {"v": 1, "id": rid, "method": method, "args": args}).encode()])


def _replies(sock: zmq.Socket, count: int, timeout: float = 5.0) -> dict[str, dict]:
    """Wait (green) for ``count`` replies; {request id: reply}."""
    out: dict[str, dict] = {}
    with gevent.Timeout(timeout, AssertionError(f"only {len(out)} of {count} replies")):
        while len(out) < count:
            if sock.poll(0):
                rid, _, body = sock.recv_multipart()
                out[rid.decode()] = json.loads(body)
            else:
                gevent.sleep(0.005)
    return out


def _server(handlers, **kw) -> BusServer:
    srv = BusServer("tcp://127.0.0.1:*", handlers, **kw)
    srv.start()
    return srv


def test_overrunning_handler_is_answered_unavailable_and_logged() -> None:
    def slow(args):
        gevent.sleep(5)
        return {"service": "late"}

    srv = _server({"ping": slow}, handler_timeout=0.2)
    sock = _dealer(srv.bound)
    try:
        with structlog.testing.capture_logs() as logs:
            for i in range(3):
                _send(sock, "ping", f"r{i}")
            replies = _replies(sock, 3)
        assert {r["error"]["type"] for r in replies.values()} == {"Unavailable"}
        assert "not served in 0.2s" in replies["r0"]["error"]["message"]
        warned = [e for e in logs if e["event"] == "bus.request_failed"]
        assert len(warned) == 1  # rate-limited: one line for the three
        assert warned[0]["method"] == "ping" and warned[0]["error_type"] == "Unavailable"
    finally:
        sock.close()
        srv.stop(grace=0.1)


def test_full_pool_answers_busy_at_once() -> None:
    release = gevent.event.Event()

    def held(args):
        release.wait(5)
        return {"service": "held"}

    srv = _server({"ping": held}, pool_size=2)
    sock = _dealer(srv.bound)
    try:
        for i in range(5):
            _send(sock, "ping", f"r{i}")
        busy = _replies(sock, 3, timeout=2)  # three over the pool's two: answered now
        assert all("server busy" in r["error"]["message"] for r in busy.values())
        release.set()
        done = _replies(sock, 2)
        assert all(r["ok"] for r in done.values())
        assert set(busy) | set(done) == {f"r{i}" for i in range(5)}
    finally:
        sock.close()
        srv.stop(grace=0.1)


def test_stop_answers_the_requests_it_cuts() -> None:
    srv = _server({"ping": lambda args: gevent.sleep(30)})
    sock = _dealer(srv.bound)
    try:
        for i in range(4):
            _send(sock, "ping", f"r{i}")
        gevent.sleep(0.3)  # received and running
        stopper = gevent.spawn(srv.stop, grace=0.2)
        replies = _replies(sock, 4)
        stopper.join(5)
        assert {r["error"]["message"] for r in replies.values()} == {"server stopping"}
    finally:
        sock.close()


@pytest.mark.parametrize("inline", [True, False])
def test_later_replies_when_its_result_is_settled(inline: bool) -> None:
    results: list[gevent.event.AsyncResult] = []

    def deferred(args):
        result = gevent.event.AsyncResult()
        results.append(result)
        return Later(result, lambda settled: {"service": settled.get(block=False)})

    srv = _server({"ping": deferred}, inline=frozenset({"ping"}) if inline else frozenset())
    sock = _dealer(srv.bound)
    try:
        for i in range(3):
            _send(sock, "ping", f"r{i}")
        with gevent.Timeout(5):
            while len(results) < 3:
                gevent.sleep(0.01)
        assert not sock.poll(100)  # nothing before the results are there
        for i, result in enumerate(results):
            result.set(f"s{i}")
        replies = _replies(sock, 3)
        assert sorted(r["result"]["service"] for r in replies.values()) == ["s0", "s1", "s2"]
    finally:
        sock.close()
        srv.stop(grace=0.1)


def test_throttle_counts_what_it_held_back() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.allow("a") == 0
    assert throttle.allow("a") is None
    assert throttle.allow("b") == 0  # keys are independent
    assert throttle.allow("a") is None
    now[0] = 10.0
    assert throttle.allow("a") == 2


def _send_budget(sock: zmq.Socket, method: str, rid: str, budget_ms, **args) -> None:
    sock.send_multipart([rid.encode(), b"", json.dumps(
        {"v": 1, "id": rid, "method": method, "args": args, "budget_ms": budget_ms}).encode()])


def test_budget_travels_a_spent_one_is_answered_at_once_an_overrun_one_in_its_budget() -> None:
    seen: list[float] = []

    def slow(args):
        gevent.sleep(5)
        return {"service": "late"}

    def check(args):  # inline handler that must wait: learns the caller's deadline
        def later(deadline: float) -> ConnectInfo:
            seen.append(deadline - time.monotonic())
            return ConnectInfo(console_type="novnc", host="h", port=5999, instance_uuid="vm",
                               expires_at=time.time() + 60)

        return Deferred(later)

    srv = _server({"ping": slow, "check_token": check}, inline=frozenset({"check_token"}),
                  handler_timeout=10)
    sock = _dealer(srv.bound)
    try:
        _send_budget(sock, "ping", "spent", 0)
        _send_budget(sock, "ping", "short", 300)
        _send_budget(sock, "check_token", "deferred", 800, token="t" * 40)
        t0 = time.monotonic()
        replies = _replies(sock, 3, timeout=3)
        took = time.monotonic() - t0
        assert replies["spent"]["error"]["type"] == "DeadlineExceeded"
        assert replies["short"]["error"]["type"] == "DeadlineExceeded"
        assert "300 ms" in replies["short"]["error"]["message"]
        assert took < 1.5  # the 300 ms budget bounded the 5 s handler
        assert replies["deferred"]["result"]["port"] == 5999
        assert 0.5 < seen[0] <= 0.8  # the Deferred was handed the caller's deadline
    finally:
        sock.close()
        srv.stop(grace=0.1)


def test_budget_in_the_envelope_is_checked() -> None:
    from console_common.proto.bus import BadRequest
    from console_common.proto.bus.protocol import decode_request, encode_request

    req = decode_request(encode_request("check_token", {"token": "t" * 40}, "r1", budget_ms=1500))
    assert (req.method, req.id, req.budget_ms) == ("check_token", "r1", 1500)
    assert decode_request(encode_request("ping", {}, "r2", budget_ms=10**9)).budget_ms == 600_000
    assert decode_request(encode_request("ping", {}, "r3")).budget_ms is None
    for bad in (-1, "100", 1.5):
        body = json.dumps({"v": 1, "method": "check_token", "args": {"token": "t" * 40},
                           "budget_ms": bad}).encode()
        with pytest.raises(BadRequest):
            decode_request(body)


def test_a_server_never_started_or_failed_to_bind_stops_cleanly() -> None:
    server = BusServer("tcp://127.0.0.1:*", {"ping": lambda args: {}})
    server.stop(grace=0)  # e.g. a service whose start failed further on
    assert server.counters == {}
    taken = BusServer("tcp://127.0.0.1:*", {"ping": lambda args: {}})
    bound = taken.start()
    try:
        clash = BusServer(bound, {"ping": lambda args: {}})
        with pytest.raises(zmq.ZMQError):
            clash.start()
        stopper = gevent.spawn(clash.stop, grace=0)
        stopper.join(5)
        assert stopper.successful()  # its context ended: no socket left open in it
    finally:
        taken.stop(grace=0)
