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
from console_common.sessions.runner import CLIENT_STALLED, IDLE_TIMEOUT, MAX_AGE, PEER_DEAD

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
    ping_interval: float = 0.0      # s between WebSocket pings to the client, 0: none
    ping_timeout: float = 0.0       # s a ping may stay unanswered (peer_dead), 0: never
    send_timeout: float = 0.0       # s a send to the client may make no progress

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
                   ban_seconds=get("invalid_token_ban_seconds", 300.0),
                   ping_interval=get("websocket_ping_interval", 0.0),
                   ping_timeout=get("websocket_ping_timeout", 0.0),
                   send_timeout=get("client_send_timeout", 0.0))


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
        return limited("limit_token")
    if policy.per_instance and by_instance >= policy.per_instance:
        return limited("limit_instance")
    if policy.per_client and by_client >= policy.per_client:
        return limited("limit_client")
    return None


LIMIT_MESSAGES = {"limit_token": "too many console sessions for this token",
                  "limit_instance": "too many console sessions for this instance",
                  "limit_client": "too many console sessions from this address"}


def limited(reason: str) -> Limited:
    """An open-session limit, in the words the client is told."""
    return Limited(reason, LIMIT_MESSAGES[reason])


class _Seen:
    __slots__ = ("moved", "changed", "stalled_since", "pinged")

    def __init__(self, moved: int, now: float) -> None:
        self.moved, self.changed = moved, now
        self.stalled_since: float | None = None
        self.pinged = now


class SessionClock:
    """One greenlet per proxy process watches every session's time (checked every second,
    or a quarter of the shortest limit): ends sessions idle for ``idle_timeout`` or older
    than ``max_age``; pings WebSocket clients every ``ping_interval`` and ends those whose
    ping stays unanswered for ``ping_timeout`` (``peer_dead``); ends those whose console
    has data for them that they have not taken for ``send_timeout`` (``client_stalled``).
    One greenlet, not a timer per session: 10 000 idle sessions cost one loop a second."""

    def __init__(self, policy: LimitPolicy, sessions: Any,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy, self.sessions, self._clock = policy, sessions, clock
        self._seen: dict[str, _Seen] = {}
        limits = [x for x in (policy.idle_timeout, policy.max_age, policy.ping_interval,
                              policy.ping_timeout, policy.send_timeout) if x > 0]
        self.tick = min([1.0, *(x / 4 for x in limits)]) if limits else 0.0

    @property
    def active(self) -> bool:
        return self.tick > 0

    def check(self) -> list[tuple[Any, str]]:
        """The sessions to cut now, with why; remembers activity and sends due pings."""
        now, policy = self._clock(), self.policy
        seen: dict[str, _Seen] = {}
        cut = []
        for session in self.sessions:
            moved = session.bytes_up + session.bytes_down
            state = self._seen.get(session.session_id)
            if state is None:
                state = _Seen(moved, now)
            elif moved != state.moved:
                state.moved, state.changed = moved, now
                state.stalled_since = None
            seen[session.session_id] = state
            why = self._why(session, state, now, policy)
            if why is not None:
                cut.append((session, why))
        self._seen = seen
        return cut

    def _why(self, session: Any, state: _Seen, now: float, policy: LimitPolicy) -> str | None:
        if policy.max_age and session.age() >= policy.max_age:
            return MAX_AGE
        if policy.idle_timeout and now - state.changed >= policy.idle_timeout:
            return IDLE_TIMEOUT
        if policy.send_timeout:
            if not session.sending_down:
                state.stalled_since = None
            elif state.stalled_since is None:
                state.stalled_since = now
            elif now - state.stalled_since >= policy.send_timeout:
                return CLIENT_STALLED
        stream = getattr(session, "client_stream", None)
        ping = getattr(stream, "ping", None)
        if ping is None:
            return None  # not a WebSocket (xvp): TCP keepalive instead
        since = stream.ping_unanswered_since
        if policy.ping_timeout and since is not None and now - since >= policy.ping_timeout:
            return PEER_DEAD
        if policy.ping_interval and now - state.pinged >= policy.ping_interval:
            state.pinged = now
            ping(now)
        return None

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
