"""The limit rules (console_common.sessions.limits), pure, with a clock the test moves."""

from __future__ import annotations

from dataclasses import dataclass, field

from console_common.proto.tokens import token_hash
from console_common.sessions.limits import (ClientGate, LimitPolicy, SessionClock,
                                            concurrency)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_allows_bursts_of_twice_the_rate_then_refills() -> None:
    clock = Clock()
    gate = ClientGate(LimitPolicy(rate_per_client=2), clock)
    assert [gate.arrive("10.0.0.1") for _ in range(4)] == [None] * 4  # burst: 2 x 2
    limited = gate.arrive("10.0.0.1")
    assert limited is not None and limited.reason == "limit_rate"
    assert limited.retry_after == 1
    assert gate.arrive("10.0.0.2") is None  # per address
    clock.now += 0.5  # one token back
    assert gate.arrive("10.0.0.1") is None
    assert gate.arrive("10.0.0.1") is not None


def test_the_nth_invalid_token_bans_for_the_ban_time() -> None:
    clock = Clock()
    gate = ClientGate(LimitPolicy(ban_after=3, ban_window=10, ban_seconds=30), clock)
    assert [gate.invalid_token("c") for _ in range(2)] == [False, False]
    assert gate.arrive("c") is None
    clock.now += 11  # the window slides: the first two no longer count
    assert gate.invalid_token("c") is False
    assert gate.invalid_token("c") is False
    assert gate.invalid_token("c") is True  # the third within 10 s: banned from now
    banned = gate.arrive("c")
    assert banned is not None and banned.reason == "banned" and banned.retry_after == 30
    clock.now += 29.5
    assert gate.arrive("c").retry_after == 1
    clock.now += 0.6
    assert gate.arrive("c") is None


def test_off_by_default_and_memory_is_bounded() -> None:
    gate = ClientGate(LimitPolicy())
    assert not gate.active and gate.arrive("x") is None and gate.invalid_token("x") is False
    small = ClientGate(LimitPolicy(rate_per_client=1), Clock(), max_clients=100)
    for n in range(1000):
        small.arrive(f"10.0.{n // 256}.{n % 256}")
    assert len(small._clients) == 100


@dataclass
class FakeSession:
    client: str = "c"
    token_hash: str = "t"
    instance_uuid: str = "i"
    session_id: str = "s"
    bytes_up: int = 0
    bytes_down: int = 0
    started_age: list[float] = field(default_factory=lambda: [0.0])

    def age(self) -> float:
        return self.started_age[0]


def test_concurrency_limits_per_token_instance_and_client() -> None:
    open_ = [FakeSession(client="a", token_hash=token_hash("t1"), instance_uuid="vm")]
    assert concurrency(LimitPolicy(), open_, "a", "t1", "vm") is None
    assert concurrency(LimitPolicy(per_token=1), open_, "b", "t1", "x").reason == "limit_token"
    assert concurrency(LimitPolicy(per_token=1), open_, "a", "t2", "vm") is None
    limited = concurrency(LimitPolicy(per_instance=1), open_, "b", "t2", "vm")
    assert limited.reason == "limit_instance"
    assert limited.message == "too many console sessions for this instance"
    assert concurrency(LimitPolicy(per_client=2), open_, "a", "t2", "x") is None
    assert concurrency(LimitPolicy(per_client=1), open_, "a", "t2", "x").reason == "limit_client"


def test_session_clock_cuts_idle_and_old_sessions() -> None:
    clock = Clock()
    busy, idle, old = FakeSession(session_id="busy"), FakeSession(session_id="idle"), \
        FakeSession(session_id="old")
    sessions = [busy, idle, old]
    watch = SessionClock(LimitPolicy(idle_timeout=10, max_age=60), sessions, clock)
    assert watch.tick == 1.0
    assert watch.check() == []
    for _ in range(3):
        clock.now += 4
        busy.bytes_down += 100  # payload keeps it alive
        old.bytes_up += 1
        old.started_age[0] += 30  # 90 s old by the last check
        cut = watch.check()
    assert (idle, "idle_timeout") in cut and (old, "max_age") in cut
    assert all(s is not busy for s, _ in cut)
    assert SessionClock(LimitPolicy(), sessions).active is False


class FakeWs:
    """What the clock sees of a WebSocket client stream."""

    def __init__(self) -> None:
        self.ping_unanswered_since: float | None = None
        self.pings: list[float] = []

    def ping(self, now: float) -> None:
        self.pings.append(now)
        if self.ping_unanswered_since is None:
            self.ping_unanswered_since = now


@dataclass
class StreamSession(FakeSession):
    client_stream: object = None
    sending_down: bool = False


def test_session_clock_pings_and_finds_dead_peers() -> None:
    clock = Clock()
    alive, dead = FakeWs(), FakeWs()
    sessions = [StreamSession(session_id="alive", client_stream=alive),
                StreamSession(session_id="dead", client_stream=dead),
                StreamSession(session_id="xvp", client_stream=object())]  # no ping: TCP
    watch = SessionClock(LimitPolicy(ping_interval=20, ping_timeout=30), sessions, clock)
    assert watch.tick == 1.0
    assert watch.check() == []
    cut: list = []
    for _ in range(60):  # a minute, a check a second
        clock.now += 1
        cut = watch.check()
        alive.ping_unanswered_since = None  # its pong came back
        if cut:
            break
    assert len(alive.pings) == 2 and alive.pings[1] - alive.pings[0] == 20
    assert cut == [(sessions[1], "peer_dead")]
    assert clock.now - dead.pings[0] == 30  # cut when its first ping was 30 s unanswered
    # pings alone do not make a session busy: the idle limit still applies
    idle = SessionClock(LimitPolicy(ping_interval=1, idle_timeout=5), sessions[:1], clock)
    assert idle.check() == []  # first seen now
    for _ in range(5):
        clock.now += 1
        cut = idle.check()
    assert cut == [(sessions[0], "idle_timeout")]


def test_session_clock_cuts_a_client_that_takes_nothing() -> None:
    clock = Clock()
    stalled = StreamSession(session_id="stalled")
    slow = StreamSession(session_id="slow")
    quiet = StreamSession(session_id="quiet")  # nothing to send: idle, not stalled
    watch = SessionClock(LimitPolicy(send_timeout=3), [stalled, slow, quiet], clock)
    assert watch.tick == 0.75
    stalled.sending_down = slow.sending_down = True
    first_cut = None
    for _ in range(8):
        clock.now += 0.5
        slow.bytes_down += 1000  # a slow reader, but a reader
        cut = watch.check()
        assert all(s is stalled for s, _ in cut)
        if cut and first_cut is None:
            first_cut = clock.now
            assert cut == [(stalled, "client_stalled")]
    assert first_cut == 1003.5  # stalled seen at 1000.5, cut 3 s later


def test_cluster_claim_without_consoleauth_falls_back_and_says_so() -> None:
    import socket as socket_

    from console_common.net.bus import BusClient
    from console_common.sessions.control import Control
    from console_common.sessions.runner import Session, SessionRegistry
    from structlog.testing import capture_logs

    with socket_.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    registry = SessionRegistry()
    with BusClient([dead], timeout=0.3) as bus:
        control = Control(registry, bus, (), "novncproxy")
        session = Session(client="c", token="t" * 43, instance_uuid="vm", target="h:1")
        policy = LimitPolicy(per_instance=1)
        with capture_logs() as logs:
            assert control.claim(session, policy) is None  # admitted on the local count
            assert control.claim(session, policy) is None
        assert [e["event"] for e in logs] == ["limits.cluster_unavailable"]  # throttled
        assert control.claim(session, LimitPolicy(per_client=1)) is None  # no call made
