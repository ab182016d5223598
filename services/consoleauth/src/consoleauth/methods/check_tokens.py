"""check_tokens: check_token for many tokens in one message, each answered on its own.

A proxy's bus client coalesces the checks its sessions make at the same moment; each
token gets exactly what check_token would give it (connect info or its error). A token
whose check must ask a compute host makes the whole batch wait in a pooled greenlet.
"""

from __future__ import annotations

from typing import Any

from console_common.bus import RemoteError
from console_common.bus.messages import CheckTokenArgs, CheckTokensArgs, CheckTokensResult
from console_common.bus.server import Deferred

from consoleauth.methods import check_token
from consoleauth.state import State


def handle(state: State, args: CheckTokensArgs) -> CheckTokensResult | Deferred:
    items: list[Any] = []
    for token in args.tokens:
        try:
            items.append(check_token.handle(state, CheckTokenArgs(token)))
        except RemoteError as exc:
            items.append(exc)
    if not any(isinstance(item, Deferred) for item in items):
        return CheckTokensResult(tuple(items))
    return Deferred(lambda: CheckTokensResult(tuple(_settled(item) for item in items)))


def _settled(item: Any) -> Any:
    if not isinstance(item, Deferred):
        return item
    try:
        return item.fn()
    except RemoteError as exc:
        return exc
