"""authorize_console: store connect info under a token for console_token_ttl seconds.

A caller may bring its own token (Nova's compute hosts send a UUID4): it must be 32-256
URL-safe characters. Otherwise a 256-bit token is generated. Returns token and expiry.
An optional ``password`` (the console's one-time VNC password) is stored sealed with a key
derived from the token (consoleauth.sealing); it is never logged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import structlog

from console_common.proto.bus import BadRequest, Unavailable
from console_common.proto.tokens import generate_token, is_acceptable_token, token_hash, token_id
from consoleauth.sealing import seal
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable, TokenRecord

log = structlog.get_logger("consoleauth")


def handle(state: State, args: Any) -> dict[str, Any]:
    if args.token is not None and not is_acceptable_token(args.token):
        raise BadRequest("token must be 32-256 URL-safe characters (A-Z a-z 0-9 - _ . ~)")
    token = args.token or generate_token()
    expires_at = state.clock() + state.ttl
    record = TokenRecord.authorized(args, expires_at)
    hashed = token_hash(token)
    if args.password is not None:
        record = dataclasses.replace(record, password=seal(token, hashed, args.password))
    try:
        state.store.add(hashed, record)
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    state.counters["authorized"] += 1
    log.info("token.authorized", token_id=token_id(token), instance_uuid=args.instance_uuid,
             console_type=args.console_type, target=f"{args.host}:{args.port}", ttl_s=state.ttl,
             with_password=args.password is not None)
    return {"token": token, "expires_at": expires_at}
