"""claim_session: the cluster-wide per-token and per-instance session limits.

A proxy about to open a session asks here (only when a limit is set); the session book
counts the open sessions of that token and instance across every proxy and, when one more
fits, records the new one at once, in the same atomic step: two proxies racing for the last
place cannot both get it.
"""

from __future__ import annotations

from typing import Any

from console_common.proto.bus import Unavailable
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable


def handle(state: State, args: dict[str, Any]) -> dict[str, Any]:
    try:
        granted, limit, count = state.sessions.claim(
            args["proxy"], args["session"], args["per_token"], args["per_instance"],
            state.clock())
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    return {"granted": granted, "limit": limit, "open": count}
