"""consoleauth's bus methods: one small module each, in an explicit table."""

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
        "check_token": lambda args: check_token.handle(state, args),
        "check_tokens": lambda args: check_tokens.handle(state, args),
        "delete_tokens_for_instance": lambda args: delete_tokens_for_instance.handle(state, args),
        "ping": lambda args: ping.handle(state, args),
        "revoke_token": lambda args: revoke_token.handle(state, args),
        "events_since": lambda args: events_since.handle(state, args),
        "disconnect": lambda args: disconnect.handle(state, args),
        "report_sessions": lambda args: report_sessions.handle(state, args),
        "claim_session": lambda args: claim_session.handle(state, args),
        "list_sessions": lambda args: list_sessions.handle(state, args),
    }
