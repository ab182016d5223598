"""What consoleauth's methods share: the store, the TTL, compute-host clients, counters."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from console_common.net.bus import BusClient
from consoleauth.stores import TokenStore


@dataclass
class State:
    store: TokenStore
    ttl: int
    compute_timeout: float
    clock: Callable[[], float] = time.time
    counters: Counter[str] = field(default_factory=Counter)
    log: Any = None        # the control log (consoleauth.control)
    sessions: Any = None   # the session book
    publisher: Any = None  # the events socket (None: events are logged, not published)
    compute_curve: Any = None  # CURVE keys for the compute hosts' endpoints (None: plain)
    _computes: dict[str, BusClient] = field(default_factory=dict)

    def compute(self, url: str) -> BusClient:
        """A client for a compute host's control endpoint (cached: sockets are pooled).
        One attempt: a check asks its compute host once, within the caller's budget."""
        client = self._computes.get(url)
        if client is None:
            client = self._computes[url] = BusClient([url], self.compute_timeout, attempts=1,
                                                          curve=self.compute_curve)
        return client

    def emit(self, event: dict[str, Any]) -> dict[str, Any]:
        """Log a control event (revocation, disconnect) and publish it; the numbered event.
        StoreUnavailable when the log cannot be written."""
        epoch, numbered = self.log.append({**event, "at": self.clock()})
        if self.publisher is not None:
            self.publisher.publish(epoch, numbered)
        return numbered

    def close(self) -> None:
        for client in self._computes.values():
            client.close()
        self.store.close()
