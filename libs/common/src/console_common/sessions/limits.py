"""Limits both proxies apply, as pure rules with a clock (no sockets): new connections per
client, the ban after repeated invalid tokens, open sessions per client, token and
instance (this process's), and the per-session idle and age limits.

    gate = ClientGate(policy)
    if (limited := gate.arrive(client)) is not None:        # before the token check
        answer 429 (limited.retry_after -> Retry-After)
    ...check the token...
    if invalid: gate.invalid_token(client)                  # may start a ban (logged once)
    if (limited := concurrency(policy, registry, client, token, instance)):
        answer 429

Every option is 0 (off) by default, so deployments and benchmarks keep working; the
README's hardened deployment shows values to set.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from console_common.proto.tokens import token_hash

log = structlog.get_logger("limits")

MAX_CLIENTS = 100_000  # client addresses remembered (rate and ban state); oldest dropped


@dataclass(frozen=True)
class LimitPolicy:
    idle_timeout: float = 0.0       # s without payload either way (pings do not count)
    max_age: float = 0.0            # s a session may last
    per_token: int = 0              # open sessions, 0: unlimited
    per_instance: int = 0
    per_client: int = 0
    rate_per_client: float = 0.0    # new connections/s per client address; bursts to 2x
    ban_after: int = 0              # the Nth invalid token within ban_window bans
    ban_window: float = 60.0
    ban_seconds: float = 300.0

    @classmethod
    def from_config(cls, config: Any) -> LimitPolicy:
        get = lambda name, default: config.get(name, default)  # noqa: E731
        return cls(idle_timeout=get("session_idle_timeout", 0.0),
                   max_age=get("session_max_age", 0.0),
                   per_token=get("max_sessions_per_token", 0),
                   per_instance=get("max_sessions_per_instance", 0),
                   per_client=get("max_sessions_per_client", 0),
                   rate_per_client=get("handshake_rate_per_client", 0.0),
                   ban_after=get("invalid_token_ban_after", 0),
                   ban_window=get("invalid_token_ban_window", 60.0),
                   ban_seconds=get("invalid_token_ban_seconds", 300.0))


@dataclass(frozen=True)
class Limited:
    reason: str              # limit_rate, banned, limit_client, limit_token, limit_instance
    message: str             # for the client (plain words)
    retry_after: int | None = None


class _Client:
    __slots__ = ("tokens", "stamp", "invalid", "banned_until")

    def __init__(self, burst: float, now: float) -> None:
        self.tokens, self.stamp = burst, now
        self.invalid: deque[float] = deque()
        self.banned_until = 0.0


class ClientGate:
    """Per client address: a token bucket of new connections and the invalid-token ban.
    Memory is bounded: at most MAX_CLIENTS addresses, least recently seen dropped."""

    def __init__(self, policy: LimitPolicy, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.policy, self._clock, self._max = policy, clock, max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self.active = policy.rate_per_client > 0 or policy.ban_after > 0

    def _get(self, client: str, now: float) -> _Client:
        state = self._clients.get(client)
        if state is None:
            state = self._clients[client] = _Client(2 * self.policy.rate_per_client, now)
            if len(self._clients) > self._max:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        return state

    def arrive(self, client: str) -> Limited | None:
        """A new connection (an upgrade, a probe, an xvp preamble) from ``client``."""
        if not self.active:
            return None
        now = self._clock()
        state = self._get(client, now)
        if state.banned_until > now:
            return Limited("banned", "too many invalid console tokens from this address",
                           max(1, math.ceil(state.banned_until - now)))
        rate = self.policy.rate_per_client
        if rate > 0:
            state.tokens = min(2 * rate, state.tokens + (now - state.stamp) * rate)
            state.stamp = now
            if state.tokens < 1:
                return Limited("limit_rate", "too many new console connections from this "
                               "address", max(1, math.ceil((1 - state.tokens) / rate)))
            state.tokens -= 1
        return None

    def invalid_token(self, client: str) -> bool:
        """An invalid token from ``client`` (it still gets its 403); True when this one
        started a ban (logged ``client.banned`` once)."""
        policy = self.policy
        if policy.ban_after <= 0:
            return False
        now = self._clock()
        state = self._get(client, now)
        seen = state.invalid
        seen.append(now)
        while seen and seen[0] <= now - policy.ban_window:
            seen.popleft()
        if len(seen) >= policy.ban_after and state.banned_until <= now:
            state.banned_until = now + policy.ban_seconds
            seen.clear()
            log.warning("client.banned", client=client, invalid_tokens=policy.ban_after,
                        window_s=policy.ban_window, ban_s=policy.ban_seconds)
            return True
        return False


def concurrency(policy: LimitPolicy, sessions: Iterable[Any], client: str, token: str,
                instance_uuid: str) -> Limited | None:
    """Whether one more session would pass this process's open-session limits (nothing
    computed when none is set: this runs on every admission)."""
    if not (policy.per_client or policy.per_token or policy.per_instance):
        return None
    hashed = token_hash(token) if policy.per_token else None
    by_client = by_token = by_instance = 0
    for session in sessions:
        by_client += session.client == client
        by_token += session.token_hash == hashed
        by_instance += session.instance_uuid == instance_uuid
    if policy.per_token and by_token >= policy.per_token:
        return Limited("limit_token", "too many console sessions for this token")
    if policy.per_instance and by_instance >= policy.per_instance:
        return Limited("limit_instance", "too many console sessions for this instance")
    if policy.per_client and by_client >= policy.per_client:
        return Limited("limit_client", "too many console sessions from this address")
    return None


class SessionClock:
    """One greenlet per proxy process ends sessions idle for ``idle_timeout`` or older than
    ``max_age`` (checked every second, or a quarter of the shorter limit)."""

    IDLE, MAX_AGE = "idle_timeout", "max_age"

    def __init__(self, policy: LimitPolicy, sessions: Any,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy, self.sessions, self._clock = policy, sessions, clock
        self._seen: dict[str, tuple[int, float]] = {}  # session id -> (bytes, last change)
        limits = [x for x in (policy.idle_timeout, policy.max_age) if x > 0]
        self.tick = min([1.0, *(x / 4 for x in limits)]) if limits else 0.0

    @property
    def active(self) -> bool:
        return self.tick > 0

    def check(self) -> list[tuple[Any, str]]:
        """The sessions to cut now, with why; remembers activity."""
        now, policy = self._clock(), self.policy
        seen, cut = {}, []
        for session in self.sessions:
            moved = session.bytes_up + session.bytes_down
            last_bytes, last_change = self._seen.get(session.session_id, (moved, now))
            if moved != last_bytes:
                last_change = now
            seen[session.session_id] = (moved, last_change)
            if policy.max_age and session.age() >= policy.max_age:
                cut.append((session, self.MAX_AGE))
            elif policy.idle_timeout and now - last_change >= policy.idle_timeout:
                cut.append((session, self.IDLE))
        self._seen = seen
        return cut

    def start(self) -> Any:
        """The checking greenlet (None when no limit is set)."""
        if not self.active:
            return None
        import gevent

        def run() -> None:
            while True:
                gevent.sleep(self.tick)
                for session, why in self.check():
                    session.cut(why)

        greenlet = gevent.spawn(run)
        greenlet.link_exception(lambda g: log.error("limits.clock_died", exc_info=g.exc_info))
        return greenlet
