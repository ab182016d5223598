"""The rows of ``consolectl logs sessions`` (DESIGN "Log analysis") and which are kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from consoleauth.loganalysis.lines import iso


@dataclass(frozen=True)
class SessionFilter:
    """Which sessions ``sessions`` shows; None means any. Times are aware datetimes."""

    instance: str | None = None
    client: str | None = None
    service: str | None = None
    reason: str | None = None  # close_reason, or "open"/"unknown" for sessions with no end
    since: datetime | None = None
    until: datetime | None = None
    min_duration: float | None = None

    @cached_property
    def _since(self) -> str | None:
        return None if self.since is None else iso(self.since)

    @cached_property
    def _until(self) -> str | None:
        return None if self.until is None else iso(self.until)

    def __call__(self, row: dict[str, Any], started: str | None) -> bool:
        """``started``: the canonical start (``canonical``), None when unknown."""
        if self.instance is not None and row["instance_uuid"] != self.instance:
            return False
        if self.client is not None and row["client"] != self.client:
            return False
        if self.service is not None and row["service"] != self.service:
            return False
        if self.reason is not None and self.reason not in (row["close_reason"], row["state"]):
            return False
        if self._since is not None and (started is None or started < self._since):
            return False
        if self._until is not None and (started is None or started > self._until):
            return False
        return self.min_duration is None or (row["duration_s"] or 0) >= self.min_duration


def KEEP_ALL(row: dict[str, Any], started: str | None) -> bool:  # noqa: N802 - a constant
    """Keep every session (``sessions`` with no filter): the row path skips the call."""
    return True


ROW_KEYS = ("session_id", "service", "kind", "instance_uuid", "client", "started", "ended",
            "duration_s", "bytes_up", "bytes_down", "close_reason", "state")
