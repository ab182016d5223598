"""What consoleauth's methods share: the store, the TTL, compute-host clients, counters."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from console_common.net.bus import BusClient
from consoleauth.stores import TokenStore


@dataclass
class State:
    store: TokenStore
    ttl: int
    compute_timeout: float
    clock: Callable[[], float] = time.time
    counters: Counter[str] = field(default_factory=Counter)
    _computes: dict[str, BusClient] = field(default_factory=dict)

    def compute(self, url: str) -> BusClient:
        """A client for a compute host's control endpoint (cached: sockets are pooled).
        One attempt: a check asks its compute host once, within the caller's budget."""
        client = self._computes.get(url)
        if client is None:
            client = self._computes[url] = BusClient([url], self.compute_timeout, attempts=1)
        return client

    def close(self) -> None:
        for client in self._computes.values():
            client.close()
        self.store.close()
