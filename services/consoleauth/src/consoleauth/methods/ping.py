"""ping: who answers, which store, how many live tokens."""

from __future__ import annotations

from typing import Any

from console_common import __version__
from console_common.proto.bus import Unavailable
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable


def handle(state: State, args: dict[str, Any]) -> dict[str, Any]:
    try:
        tokens = state.store.count()
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    return {"service": "consoleauth", "version": __version__, "store": state.store.name,
            "tokens": tokens}
