"""Rate-limited warnings for I/O that fails in bursts (a store or peer going away)."""

from __future__ import annotations

from typing import Any


class Throttle:
    """At most one log line per key every ``interval`` seconds; counts what it held back.

        if (held := throttle.allow("store.unavailable")) is not None:
            log.warning("store.unavailable", error=..., suppressed=held)
    """

    def __init__(self, interval: float = 10.0, clock: Any = None) -> None:
        import time

        self.interval = interval
        self._clock = clock or time.monotonic
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None to stay quiet; else how many lines of this key were held back since."""
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._held.pop(key, 0)
