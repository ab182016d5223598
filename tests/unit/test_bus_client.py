"""The bus client over real ZeroMQ TCP sockets on loopback, against our BusServer in this
process: concurrent calls share one connection and get their own replies in any order,
REQ clients still work, a silent server means BusUnavailable in time and a rebuilt socket,
a slow call does not reset a connection that answers others."""

from __future__ import annotations

import json
import time

import gevent
import pytest
import zmq
from console_common.net.bus import BusClient, BusServer
from console_common.proto.bus import BusUnavailable, DeadlineExceeded, InvalidToken
from console_common.proto.bus.messages import CheckTokenArgs, CheckTokensResult, ConnectInfo
from console_common.net.bus.server import Deferred


def info(port: int) -> ConnectInfo:
    return ConnectInfo(console_type="novnc", host="127.0.0.1", port=port,
                       instance_uuid="vm", expires_at=time.time() + 60)


def check_token(args) -> ConnectInfo | Deferred:
    """Tokens "fast-N" answer at once with port N; "slow-N-MS" after MS milliseconds."""
    kind, n, *rest = args.token.split("-")
    if kind == "fast":
        return info(int(n))
    if kind == "slow":
        return Deferred(lambda deadline: (gevent.sleep(int(rest[0]) / 1000), info(int(n)))[1])
    raise InvalidToken("invalid or expired token")


def ping(args) -> dict:
    return {"service": "test", "version": "0"}


HANDLERS = {"check_token": check_token, "ping": ping}
INLINE = frozenset(HANDLERS)


@pytest.fixture
def server():
    srv = BusServer("tcp://127.0.0.1:*", HANDLERS, inline=INLINE)
    srv.start()
    yield srv
    srv.stop(grace=1)


def test_concurrent_calls_share_one_connection_and_get_their_own_replies(server) -> None:
    with BusClient([server.bound], timeout=5) as client:
        # slow ones are answered after fast ones sent later: replies come out of order
        tokens = [f"slow-{5000 + i}-{(i % 5) * 20}" if i % 2 else f"fast-{5000 + i}"
                  for i in range(200)]
        calls = [gevent.spawn(client.call, "check_token", token=t) for t in tokens]
        gevent.joinall(calls, timeout=10, raise_error=True)
        assert [c.value.port for c in calls] == [5000 + i for i in range(200)]
        assert len(client._channels) == 1  # one DEALER for the endpoint
        with pytest.raises(InvalidToken):
            client.call("check_token", token="nope-1")


def test_req_clients_still_work(server) -> None:
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    try:
        req.connect(server.bound)
        req.send(b'{"v": 1, "id": "r1", "method": "check_token", "args": {"token": "fast-6000"}}')
        deadline = time.monotonic() + 5
        while not req.poll(0):  # the server runs in this process's hub: never block it
            assert time.monotonic() < deadline
            gevent.sleep(0.01)
        reply = json.loads(req.recv())
        assert reply["id"] == "r1" and reply["result"]["port"] == 6000
    finally:
        req.close()
        ctx.term()


def test_silent_server_times_out_and_the_socket_is_rebuilt() -> None:
    ctx = zmq.Context()
    sink = ctx.socket(zmq.ROUTER)  # takes requests, never answers
    sink.setsockopt(zmq.LINGER, 0)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    try:
        with BusClient([f"tcp://127.0.0.1:{port}"], timeout=0.6, attempts=2) as client:
            started = time.monotonic()
            with pytest.raises(BusUnavailable, match="no reply"):
                client.call("ping")
            assert time.monotonic() - started < 1.2  # the deadline bounds every attempt
            first = client._channels.get(f"tcp://127.0.0.1:{port}")
            assert first is None  # reset after the silent attempt
            # concurrent callers waiting on a dead channel all fail in time too
            calls = [gevent.spawn(client.call, "ping") for _ in range(20)]
            gevent.joinall(calls, timeout=3)
            assert all(isinstance(c.exception, BusUnavailable) for c in calls)
    finally:
        sink.close()
        ctx.term()


def test_a_slow_call_does_not_reset_a_connection_that_answers(server) -> None:
    with BusClient([server.bound], timeout=0.5, attempts=1) as client:
        client.call("ping")
        channel = client._channels[server.bound]
        slow = gevent.spawn(client.call, "check_token", token="slow-1-2000")
        for _ in range(20):  # other calls keep getting answers meanwhile
            assert client.call("check_token", token="fast-7000").port == 7000
            gevent.sleep(0.03)
        slow.join(timeout=3)
        # consoleauth's answer (its budget spent) or our own timeout, whichever comes first
        assert isinstance(slow.exception, (DeadlineExceeded, BusUnavailable))
        assert client._channels[server.bound] is channel  # still the same connection
        assert client.call("check_token", token="fast-7001").port == 7001


def test_recovers_when_the_server_comes_back() -> None:
    srv = BusServer("tcp://127.0.0.1:*", HANDLERS, inline=INLINE)
    endpoint = srv.start()
    with BusClient([endpoint], timeout=0.5) as client:
        assert client.call("check_token", token="fast-1").port == 1
        srv.stop(grace=0.1)
        with pytest.raises(BusUnavailable):
            client.call("check_token", token="fast-2")
        srv = BusServer(endpoint, HANDLERS, inline=INLINE)
        srv.start()
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    assert client.call("check_token", token="fast-3").port == 3
                    break
                except BusUnavailable:
                    assert time.monotonic() < deadline
        finally:
            srv.stop(grace=0.1)


# --- check_token coalescing (check_tokens) ------------------------------------------------


def check_tokens(args) -> CheckTokensResult:
    items = []
    for token in args.tokens:
        try:
            items.append(check_token(CheckTokenArgs(token)))
        except InvalidToken as exc:
            items.append(exc)
    return CheckTokensResult(tuple(items))


@pytest.fixture
def batching_server():
    handlers = {**HANDLERS, "check_tokens": check_tokens}
    srv = BusServer("tcp://127.0.0.1:*", handlers, inline=frozenset(handlers))
    srv.start()
    yield srv
    srv.stop(grace=1)


def test_concurrent_checks_are_coalesced_and_each_gets_its_own_answer(batching_server) -> None:
    with BusClient([batching_server.bound], timeout=5) as client:
        tokens = [f"fast-{100 + i}" if i % 3 else f"bad-{i}" for i in range(150)]
        calls = [gevent.spawn(client.check_token, t) for t in tokens]
        gevent.joinall(calls, timeout=10)
        for i, call in enumerate(calls):
            if i % 3:
                assert call.value.port == 100 + i
            else:
                assert isinstance(call.exception, InvalidToken)
        counters = batching_server.counters
        # 150 checks in a few messages of at most 64 (MAX_BATCH), no plain check_token
        assert 3 <= counters["check_tokens.ok"] <= 6 and counters["check_token.ok"] == 0
        assert client.check_token("fast-9").port == 9  # alone: a plain check_token
        assert counters["check_token.ok"] == 1


def test_check_senders_are_parked_between_turns_and_ended_by_close(batching_server) -> None:
    """A sender greenlet is reused from turn to turn (a new one per turn cost ~12 us); a
    few stay parked, close() ends them, and one killed while parked loses no check."""
    from console_common.net.bus.client import IDLE_SENDERS

    client = BusClient([batching_server.bound], timeout=5)
    senders: list[gevent.Greenlet] = []  # every sender greenlet started
    sender = client._sender

    def spy() -> None:
        senders.append(gevent.getcurrent())
        sender()

    client._sender = spy
    for turn in range(5):
        calls = [gevent.spawn(client.check_token, f"fast-{turn * 10 + i + 1}") for i in range(10)]
        gevent.joinall(calls, timeout=5)
        assert [c.value.port for c in calls] == [turn * 10 + i + 1 for i in range(10)]
        assert 1 <= len(client._idle) <= IDLE_SENDERS
    parked = [g for g in senders if not g.dead]
    assert len(parked) == len(client._idle)
    parked[0].kill()  # killed while parked: dropped from the idle list
    assert len(client._idle) == len(parked) - 1
    calls = [gevent.spawn(client.check_token, f"fast-{i}") for i in range(1, 4)]
    gevent.joinall(calls, timeout=5)
    assert [c.value.port for c in calls] == [1, 2, 3]
    client.close()
    gevent.sleep(0.01)
    assert client._idle == [] and all(g.dead for g in senders)


def test_a_server_without_check_tokens_gets_plain_checks(server) -> None:
    with BusClient([server.bound], timeout=5) as client:
        calls = [gevent.spawn(client.check_token, f"fast-{i}") for i in range(1, 21)]
        gevent.joinall(calls, timeout=10, raise_error=True)
        assert [c.value.port for c in calls] == list(range(1, 21))
        assert client._batches is False  # remembered: no more UnknownMethod round trips


def test_coalesced_checks_all_fail_in_time_when_nobody_answers() -> None:
    ctx = zmq.Context()
    sink = ctx.socket(zmq.ROUTER)
    sink.setsockopt(zmq.LINGER, 0)
    port = sink.bind_to_random_port("tcp://127.0.0.1")
    try:
        with BusClient([f"tcp://127.0.0.1:{port}"], timeout=0.5) as client:
            started = time.monotonic()
            calls = [gevent.spawn(client.check_token, f"fast-{i}") for i in range(10)]
            gevent.joinall(calls, timeout=3)
            assert all(isinstance(c.exception, BusUnavailable) for c in calls)
            assert len({id(c.exception) for c in calls}) == 10  # each raised its own
            assert time.monotonic() - started < 1.5
    finally:
        sink.close()
        ctx.term()


@pytest.mark.parametrize("concurrent", [1, 5])
def test_coalesced_checks_never_wait_for_ever_when_the_sender_dies(concurrent: int) -> None:
    """No timer per check: the sender settles every waiter whatever stops it."""
    client = BusClient(["tcp://127.0.0.1:9"], timeout=1)

    def dies(*args, **kwargs):
        raise gevent.GreenletExit  # not an Exception: skips every `except Exception`

    client.call = dies
    calls = [gevent.spawn(client.check_token, f"fast-{i}") for i in range(concurrent)]
    gevent.joinall(calls, timeout=5)
    assert all(c.ready() for c in calls)
    assert all(isinstance(c.exception, BusUnavailable) for c in calls)
    assert "check not sent" in str(calls[0].exception)
    client.close()


def test_a_server_from_before_budgets_is_asked_again_without_one() -> None:
    """An older consoleauth refuses the budget_ms key (strict envelope): the client goes on
    without it, so proxies and consoleauth can be upgraded in any order."""
    import zmq.green as zgreen

    sock = zgreen.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    seen: list[bool] = []

    def old_server() -> None:
        while True:
            *env, body = sock.recv_multipart()
            req = json.loads(body)
            seen.append("budget_ms" in req)
            reply = ({"v": 1, "id": req["id"], "ok": False, "error": {
                "type": "BadRequest", "message": "bad request envelope: budget_ms: Unknown field."}}
                if "budget_ms" in req else
                {"v": 1, "id": req["id"], "ok": True, "result": {"service": "old", "version": "0"}})
            sock.send_multipart([*env, json.dumps(reply).encode()])

    server = gevent.spawn(old_server)
    try:
        with BusClient([f"tcp://127.0.0.1:{port}"], timeout=3) as client:
            assert client.call("ping")["service"] == "old"
            assert client.call("ping")["service"] == "old"
        assert seen == [True, False, False]  # asked once with, then without for good
    finally:
        server.kill()
        sock.close(linger=0)
