"""list_sessions: every open session across the proxies, a page at a time (by session id)."""

from __future__ import annotations

from typing import Any

from console_common.proto.bus import Unavailable
from console_common.proto.bus.messages import SESSIONS_PAGE
from consoleauth.methods.disconnect import matches
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable


def handle(state: State, args: dict[str, Any]) -> dict[str, Any]:
    now = state.clock()
    try:
        rows = state.sessions.rows(now)
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    after = args.get("after") or ""
    wanted = sorted((r for r in rows if r["session_id"] > after and matches(r, args)),
                    key=lambda r: r["session_id"])
    page = [{**r, "duration_s": round(max(0.0, now - r["started"]), 3)}
            for r in wanted[:SESSIONS_PAGE]]
    return {"sessions": page, "more": len(wanted) > SESSIONS_PAGE}
