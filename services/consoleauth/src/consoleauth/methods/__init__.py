"""consoleauth's bus methods: one small module each, in an explicit table.

Token checks are told the caller's CURVE role (``BusServer(role_aware=...)``): a console
password goes only to the proxy role, or to anyone on a bus without CURVE (where every
caller is trusted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consoleauth.methods import (
    authorize_console,
    check_token,
    check_tokens,
    claim_session,
    delete_tokens_for_instance,
    disconnect,
    events_since,
    list_sessions,
    ping,
    report_sessions,
    revoke_token,
)
from consoleauth.state import State


def handlers(state: State) -> dict[str, Callable[[Any], Any]]:
    return {
        "authorize_console": lambda args: authorize_console.handle(state, args),
        "check_token": lambda args, role=None: check_token.handle(state, args, _reveal(role)),
        "check_tokens": lambda args, role=None: check_tokens.handle(state, args,
                                                                    _reveal(role)),
        "delete_tokens_for_instance": lambda args: delete_tokens_for_instance.handle(state, args),
        "ping": lambda args: ping.handle(state, args),
        "revoke_token": lambda args: revoke_token.handle(state, args),
        "events_since": lambda args: events_since.handle(state, args),
        "disconnect": lambda args: disconnect.handle(state, args),
        "report_sessions": lambda args: report_sessions.handle(state, args),
        "claim_session": lambda args: claim_session.handle(state, args),
        "list_sessions": lambda args: list_sessions.handle(state, args),
    }


ROLE_AWARE = frozenset({"check_token", "check_tokens"})  # handlers called with (args, role)


def _reveal(role: str | None) -> bool:
    """Whether a check's answer may carry the console password: only to the proxies (no
    role: no CURVE on this bus, so no caller can be told apart)."""
    return role is None or role == "proxy"
