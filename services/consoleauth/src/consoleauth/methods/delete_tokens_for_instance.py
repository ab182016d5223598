"""delete_tokens_for_instance: revoke every token of an instance (it was deleted)."""

from __future__ import annotations

from typing import Any

import structlog

from console_common.proto.bus import Unavailable
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable

log = structlog.get_logger("consoleauth")


def handle(state: State, args: dict[str, Any]) -> dict[str, int]:
    uuid = args["instance_uuid"]
    try:
        deleted = state.store.delete_instance(uuid)
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    state.counters["revoked"] += deleted
    log.info("token.revoked", instance_uuid=uuid, deleted=deleted)
    return {"deleted": deleted}
