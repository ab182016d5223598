"""revoke_token: one token is dead now, and so are the sessions opened with it."""

from __future__ import annotations

from typing import Any

import structlog

from console_common.proto.bus import Unavailable
from console_common.proto.tokens import token_hash, token_id
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable

log = structlog.get_logger("consoleauth")


def handle(state: State, args: dict[str, Any]) -> dict[str, int]:
    hashed = token_hash(args["token"])
    try:
        record = state.store.get(hashed, state.clock())
        state.store.delete(hashed)
        # logged even for a token the store does not hold (expired, or a consoleauth that
        # restarted with the memory store): sessions opened with it must still end
        state.emit({"kind": "revoke", "token_hash": hashed,
                    "instance_uuid": record.instance_uuid if record else None})
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    deleted = int(record is not None)
    state.counters["revoked"] += deleted
    log.info("token.revoked", token_id=token_id(args["token"]), deleted=deleted)
    return {"deleted": deleted}
