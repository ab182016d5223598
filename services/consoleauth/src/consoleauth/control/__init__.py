"""Live control in consoleauth: the control log (revocations, disconnects), the sessions
the proxies report, and the events socket that publishes the log.

Kept where the tokens are: in this process for the memory and sqlite stores (``local``),
in Redis for the redis store (``redis``), so every replica answers the same.
"""

from __future__ import annotations

from typing import Any, Protocol

EVENTS_KEPT = 10_000   # the log keeps this many events for catch-up
SESSION_TTL = 30.0     # a proxy that stops reporting: its sessions leave within this


class ControlLog(Protocol):
    def append(self, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Number ``event`` (adds ``seq``); (epoch, the event as published)."""

    def head(self) -> tuple[str, int]:
        """(epoch, seq of the last event; 0 when none)."""

    def since(self, epoch: str | None, seq: int, limit: int) -> dict[str, Any]:
        """events_since's result: epoch, head, events after ``seq`` (all of this epoch's
        when ``epoch`` is another one), more, truncated."""


class SessionBook(Protocol):
    def report(self, proxy: dict[str, Any], open_: list[dict[str, Any]],
               ended: list[str], now: float) -> None: ...

    def rows(self, now: float) -> list[dict[str, Any]]:
        """Every live session, with its proxy (unsorted)."""

    def claim(self, proxy: dict[str, Any], session: dict[str, Any], per_token: int,
              per_instance: int, now: float) -> tuple[bool, str | None, int]:
        """Record ``session`` as open if its token and instance have fewer open sessions
        than the limits (0: none), atomically; (granted, the limit hit, the count)."""


def open_control(store: Any) -> tuple[ControlLog, SessionBook]:
    if store.name == "redis":
        from consoleauth.control.redis import RedisControlLog, RedisSessionBook

        return RedisControlLog(store), RedisSessionBook(store)
    from consoleauth.control.local import LocalControlLog, LocalSessionBook

    return LocalControlLog(), LocalSessionBook()
