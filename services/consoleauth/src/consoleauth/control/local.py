"""The control log and session book in this process (memory and sqlite stores).

The log's epoch is new at every start: a proxy that hears a restarted consoleauth catches
up on everything the new process logged, even before its subscription reconnected.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from consoleauth.control import EVENTS_KEPT, SESSION_TTL


class LocalControlLog:
    def __init__(self, kept: int = EVENTS_KEPT) -> None:
        self.epoch = os.urandom(8).hex()
        self._seq = 0
        self._events: deque[dict[str, Any]] = deque(maxlen=kept)

    def append(self, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        self._seq += 1
        numbered = {**event, "seq": self._seq}
        self._events.append(numbered)
        return self.epoch, numbered

    def head(self) -> tuple[str, int]:
        return self.epoch, self._seq

    def since(self, epoch: str | None, seq: int, limit: int) -> dict[str, Any]:
        result: dict[str, Any] = {"epoch": self.epoch, "seq": self._seq, "events": [],
                                  "more": False, "truncated": False}
        if epoch is None:
            return result
        after = seq if epoch == self.epoch else 0
        oldest = self._events[0]["seq"] if self._events else self._seq + 1
        result["truncated"] = after + 1 < oldest and after < self._seq
        newer = [e for e in self._events if e["seq"] > after] if after < self._seq else []
        result["events"], result["more"] = newer[:limit], len(newer) > limit
        return result


class LocalSessionBook:
    def __init__(self, ttl: float = SESSION_TTL) -> None:
        self.ttl = ttl
        self._rows: dict[str, tuple[float, dict[str, Any]]] = {}

    def report(self, proxy: dict[str, Any], open_: list[dict[str, Any]],
               ended: list[str], now: float) -> None:
        for session in open_:
            self._rows[session["session_id"]] = (now + self.ttl, {**session, "proxy": proxy})
        for session_id in ended:
            self._rows.pop(session_id, None)

    def rows(self, now: float) -> list[dict[str, Any]]:
        dead = [sid for sid, (expires, _) in self._rows.items() if expires <= now]
        for sid in dead:
            del self._rows[sid]
        return [row for _, row in self._rows.values()]

    def claim(self, proxy: dict[str, Any], session: dict[str, Any], per_token: int,
              per_instance: int, now: float) -> tuple[bool, str | None, int]:
        # One pass over the open sessions: claims come only with a limit set, and this
        # process's book holds what its proxies hold (thousands, not millions).
        tid, instance = session.get("token_id"), session["instance_uuid"]  # a public id
        by_token = by_instance = 0
        for row in self.rows(now):
            if row["session_id"] == session["session_id"]:
                continue
            by_token += tid is not None and row.get("token_id") == tid
            by_instance += row["instance_uuid"] == instance
        if per_token and tid is not None and by_token >= per_token:
            return False, "limit_token", by_token
        if per_instance and by_instance >= per_instance:
            return False, "limit_instance", by_instance
        self.report(proxy, [session], [], now)
        return True, None, by_instance
