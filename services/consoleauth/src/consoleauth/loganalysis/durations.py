"""Session durations: p50/p95/max in bounded memory, and the report's histogram."""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections import Counter

# Duration histogram edges (seconds) for the report: <1s, 1-10s, ... >4h.
DURATION_EDGES = (1, 10, 60, 300, 900, 3600, 14400)
DURATION_LABELS = ("<1s", "1-10s", "10s-1m", "1-5m", "5-15m", "15m-1h", "1-4h", ">4h")


class Durations:
    """Session durations for p50/p95/max: exact up to ``cap`` values, then folded into
    log-spaced buckets 1% wide (so memory stays bounded on any input)."""

    STEP = math.log(1.01)
    FLOOR = 0.001

    def __init__(self, cap: int = 200_000) -> None:
        self.cap = cap
        self.values: array[float] | None = array("d")
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.max = 0.0
        self.histogram = [0] * len(DURATION_LABELS)

    def add(self, value: float) -> None:
        self.count += 1
        if value > self.max:
            self.max = value
        self.histogram[bisect_right(DURATION_EDGES, value)] += 1
        if self.values is not None:
            self.values.append(value)
            if len(self.values) > self.cap:
                for v in self.values:
                    self.buckets[self._key(v)] += 1
                self.values = None
        else:
            self.buckets[self._key(value)] += 1

    def _key(self, value: float) -> int:
        return 0 if value <= self.FLOOR else int(math.log(value / self.FLOOR) / self.STEP) + 1

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile (exact, or within 1% once folded)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        if self.values is not None:
            return sorted(self.values)[rank - 1]
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                if key == 0:
                    return self.FLOOR
                return round(min(self.max, self.FLOOR * math.exp((key - 0.5) * self.STEP)), 3)
        return self.max
