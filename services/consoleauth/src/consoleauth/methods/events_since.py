"""events_since: the control log after a proxy's last applied event (its catch-up)."""

from __future__ import annotations

from typing import Any

from console_common.proto.bus import Unavailable
from console_common.proto.bus.messages import EVENTS_PAGE
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable


def handle(state: State, args: dict[str, Any]) -> dict[str, Any]:
    try:
        return state.log.since(args["epoch"], args["seq"], EVENTS_PAGE)
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
