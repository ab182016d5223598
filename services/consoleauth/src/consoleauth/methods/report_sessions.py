"""report_sessions: a proxy's open sessions (new, refreshed) and the ones that ended."""

from __future__ import annotations

from typing import Any

from console_common.proto.bus import Unavailable
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable


def handle(state: State, args: dict[str, Any]) -> dict[str, Any]:
    try:
        state.sessions.report(args["proxy"], args["open"], args["ended"], state.clock())
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    return {}
