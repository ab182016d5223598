"""The relay (console_common.net.relay) over in-memory streams: who ended first, half-close,
drain, errors attributed to a side, a killed session, both streams closed."""

from __future__ import annotations

import gevent
import gevent.queue
import pytest
from console_common.net.relay import RelayResult, relay

DRAIN = 0.3


class FakeStream:
    """recv() takes what the test feeds: bytes, b"" (EOF) or an exception to raise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inbox: gevent.queue.Queue = gevent.queue.Queue()
        self.sent: list[bytes] = []
        self.half_closed = False
        self.closed = False

    def feed(self, *items: object) -> None:
        for item in items:
            self.inbox.put(item)

    def recv(self, size: int) -> bytes:
        item = self.inbox.get()
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, bytes) and len(item) <= size
        return item

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def shutdown_write(self) -> None:
        self.half_closed = True

    def close(self) -> None:
        self.closed = True


def run(client: FakeStream, target: FakeStream, **kw: object) -> RelayResult:
    glet = gevent.spawn(relay, client, target, DRAIN, **kw)
    result = glet.get(timeout=5)
    assert client.closed and target.closed
    return result


def test_client_ends_first_and_target_finishes_within_drain() -> None:
    client, target = FakeStream("client"), FakeStream("target")
    client.feed(b"hello", b"")
    gevent.spawn_later(0.05, target.feed, b"bye", b"")
    res = run(client, target)
    assert res.reason == "client_closed" and res.error is None
    assert target.sent == [b"hello"] and target.half_closed  # the EOF is passed on
    assert client.sent == [b"bye"] and client.half_closed
    assert res.totals == {"bytes_up": 5, "bytes_down": 3}


def test_target_ends_first_and_client_finishes_within_drain() -> None:
    client, target = FakeStream("client"), FakeStream("target")
    target.feed(b"RFB 003.008\n", b"")
    gevent.spawn_later(0.05, client.feed, b"more", b"")
    res = run(client, target)
    assert res.reason == "target_closed" and res.error is None
    assert client.sent == [b"RFB 003.008\n"] and client.half_closed
    assert target.sent == [b"more"] and target.half_closed
    assert res.totals == {"bytes_up": 4, "bytes_down": 12}


@pytest.mark.parametrize(("first", "reason"), [("client", "client_closed_drain_timeout"),
                                               ("target", "target_closed_drain_timeout")])
def test_the_other_direction_gets_drain_seconds(first: str, reason: str) -> None:
    client, target = FakeStream("client"), FakeStream("target")
    (client if first == "client" else target).feed(b"x", b"")
    started = gevent.get_hub().loop.now()
    res = run(client, target)
    assert res.reason == reason
    assert DRAIN * 0.8 <= gevent.get_hub().loop.now() - started < DRAIN + 1.5


@pytest.mark.parametrize(("failing", "reason"), [("client", "client_error"),
                                                 ("target", "target_error")])
def test_a_failure_ends_the_relay_at_once_and_names_its_side(failing: str, reason: str) -> None:
    client, target = FakeStream("client"), FakeStream("target")
    (client if failing == "client" else target).feed(b"x", ConnectionResetError(104, "reset"))
    started = gevent.get_hub().loop.now()
    res = run(client, target)
    assert res.reason == f"{reason}: reset"
    assert isinstance(res.error, ConnectionResetError)
    assert gevent.get_hub().loop.now() - started < DRAIN  # no drain wait after a failure


def test_a_failure_after_the_other_side_ended_cleanly() -> None:
    client, target = FakeStream("client"), FakeStream("target")
    target.feed(b"")
    gevent.spawn_later(0.05, client.feed, ValueError("bad frame"))
    res = run(client, target)
    assert res.reason == "client_error: ValueError: bad frame"
    client, target = FakeStream("client"), FakeStream("target")
    client.feed(b"")
    gevent.spawn_later(0.05, target.feed, OSError(32, "Broken pipe"))
    res = run(client, target)
    assert res.reason == "target_error: Broken pipe"


def test_observers_see_each_direction() -> None:
    client, target = FakeStream("client"), FakeStream("target")
    seen: list[tuple[str, bytes]] = []
    client.feed(b"up", b"")
    target.feed(b"down", b"")
    run(client, target, observe_up=lambda d: not seen.append(("up", d)),
        observe_down=lambda d: not seen.append(("down", d)))
    assert sorted(seen) == [("down", b"down"), ("up", b"up")]


def test_a_killed_session_says_so_and_closes_both_streams() -> None:
    client, target = FakeStream("client"), FakeStream("target")
    result = RelayResult()
    glet = gevent.spawn(relay, client, target, DRAIN, result=result)
    gevent.sleep(0.05)
    glet.kill(block=True, timeout=2)
    assert glet.dead and result.reason == "killed"
    assert client.closed and target.closed


def test_a_session_killed_while_draining_says_so() -> None:
    client, target = FakeStream("client"), FakeStream("target")
    target.feed(b"")  # the down direction ends: the up one drains
    result = RelayResult()
    glet = gevent.spawn(relay, client, target, 10.0, result=result)
    gevent.sleep(0.05)
    glet.kill(block=True, timeout=2)
    assert result.reason == "killed" and client.closed and target.closed


def test_no_greenlet_is_left_behind() -> None:
    import gc

    from gevent import Greenlet

    before = sum(1 for o in gc.get_objects() if isinstance(o, Greenlet) and not o.dead)
    for _ in range(5):
        client, target = FakeStream("client"), FakeStream("target")
        target.feed(b"")
        run(client, target)  # drain timeout: the up direction is stopped
        client, target = FakeStream("client"), FakeStream("target")
        client.feed(b"")
        run(client, target)  # drain timeout: the down greenlet is killed
    gevent.sleep(0)
    after = sum(1 for o in gc.get_objects() if isinstance(o, Greenlet) and not o.dead)
    assert after <= before
