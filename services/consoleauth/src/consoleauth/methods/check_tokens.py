"""check_tokens: check_token for many tokens in one message, each answered on its own.

A proxy's bus client coalesces the checks its sessions make at the same moment; each
token gets exactly what check_token would give it (connect info or its error). A token
whose check must ask a compute host makes the whole batch wait in a pooled greenlet.
"""

from __future__ import annotations

from typing import Any

import gevent

from console_common.proto.bus import RemoteError, Unavailable
from console_common.proto.bus.messages import CheckTokenArgs, CheckTokensArgs, CheckTokensResult
from console_common.net.bus.server import Deferred, Later

from console_common.proto.tokens import token_hash
from consoleauth.methods import check_token
from consoleauth.state import State


def handle(state: State, args: CheckTokensArgs, reveal: bool = True
           ) -> CheckTokensResult | Deferred | Later:
    hashes = [token_hash(token) for token in args.tokens]
    try:  # one lookup for the lot (one Redis round trip)
        found = check_token.lookup(state, hashes)
    except Unavailable as exc:
        return CheckTokensResult(tuple(exc for _ in hashes))
    if isinstance(found, list):
        return _answers(state, args, hashes, found, reveal)
    return Later(found, lambda settled: _answers(state, args, hashes, _records(settled, hashes),
                                                 reveal))


def _records(settled: Any, hashes: list[str]) -> list[Any]:
    try:
        return check_token.records(settled)
    except Unavailable as exc:  # every token gets the store's failure
        return [exc for _ in hashes]


def _answers(state: State, args: CheckTokensArgs, hashes: list[str],
             found: list[Any], reveal: bool) -> CheckTokensResult | Deferred:
    items: list[Any] = []
    for token, hashed, record in zip(args.tokens, hashes, found, strict=True):
        if isinstance(record, RemoteError):
            items.append(record)
            continue
        try:
            items.append(check_token.answer(state, CheckTokenArgs(token), hashed, record,
                                            reveal))
        except RemoteError as exc:
            items.append(exc)
    if not any(isinstance(item, Deferred) for item in items):
        return CheckTokensResult(tuple(items))
    return Deferred(lambda deadline: CheckTokensResult(_settled(items, deadline)))


def _settled(items: list[Any], deadline: float) -> tuple[Any, ...]:
    """Every token that must ask its compute host does so at once, each within the
    caller's budget: a slow host delays the batch by that budget at most, never by one
    host's wait after another's."""
    waits = {i: gevent.spawn(_settle_one, item, deadline)
             for i, item in enumerate(items) if isinstance(item, Deferred)}
    gevent.joinall(list(waits.values()))
    return tuple(waits[i].value if i in waits else item for i, item in enumerate(items))


def _settle_one(item: Deferred, deadline: float) -> Any:
    try:
        return item.fn(deadline)
    except RemoteError as exc:
        return exc
