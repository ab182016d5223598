"""One log line's text: the ``docker compose logs`` prefix, times in the services'
spelling, what a warning was about. Pure functions, no state."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

# A sources.py marker for a line longer than its cap: counted, never decoded.
TOO_LONG_LINE = b"\x00line too long\x00"

# Fields whose value says what a warning or error was about, most telling first.
MESSAGE_FIELDS = ("error", "reason", "close_detail", "detail", "message", "msg", "close_reason")
MAX_MESSAGE = 200

_ANSI = re.compile(rb"\x1b\[[0-9;]*m")


def parse_time(ts: str) -> datetime:
    """An ISO-8601 timestamp as an aware UTC datetime (naive means UTC)."""
    value = datetime.fromisoformat(ts)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime) -> str:
    """The services' spelling: 2026-12-03T06:33:46.360596Z."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical(ts: str | None) -> str | None:
    """The services' spelling (``...:46.360596Z``) as is; other ISO spellings rewritten to
    it, so that these strings sort and compare as the times they are. None if not a time."""
    if ts is None:
        return None
    if len(ts) == 27 and ts[19] == "." and ts[26] == "Z" and ts[10] == "T":
        return ts
    try:
        return iso(parse_time(ts))
    except (ValueError, TypeError):
        return None


def split_prefix(raw: bytes) -> tuple[str | None, bytes]:
    """A line as ``docker compose logs`` prints it (``novncproxy-1  | {...}``, maybe coloured,
    maybe with ``-t`` timestamps) -> (replica, the JSON part). Other lines come back
    stripped, replica None."""
    line = raw.strip()
    if line[:1] == b"\x1b":
        line = _ANSI.sub(b"", line)
    replica = None
    bar = line.find(b" | ") if line[:1] != b"{" else -1
    if 0 < bar < 128 and b"{" not in line[:bar]:
        replica = line[:bar].strip().decode("utf-8", "replace")
        line = line[bar + 3:].lstrip()
    elif line.endswith(b" |") and 0 < len(line) < 130:  # an empty line of a replica
        return line[:-2].strip().decode("utf-8", "replace"), b""
    if line[:1] != b"{" and line[:2].isdigit():  # `docker compose logs -t`: a timestamp first
        space = line.find(b" {")
        if 0 < space < 40:
            line = line[space + 1:]
    return replica, line


def message_of(rec: dict[str, Any]) -> str:
    """What a warning or error line was about, in one short string."""
    for field in MESSAGE_FIELDS:
        value = rec.get(field)
        if value not in (None, ""):
            return str(value)[:MAX_MESSAGE]
    exc = rec.get("exception")
    if isinstance(exc, list) and exc and isinstance(exc[-1], dict):  # structlog dict traceback
        last = exc[-1]
        return f"{last.get('exc_type', '')}: {last.get('exc_value', '')}"[:MAX_MESSAGE]
    if isinstance(exc, str) and exc:
        return exc.strip().splitlines()[-1][:MAX_MESSAGE]
    return ""
