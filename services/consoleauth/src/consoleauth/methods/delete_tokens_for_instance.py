"""delete_tokens_for_instance: revoke every token of an instance (it was deleted), and cut
its open sessions on every proxy (a revoke event in the control log)."""

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
        # logged whatever the store held: a consoleauth restarted with the memory store
        # holds no token, and the instance's open sessions must end all the same
        state.emit({"kind": "revoke", "instance_uuid": uuid})
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    state.counters["revoked"] += deleted
    log.info("token.revoked", instance_uuid=uuid, deleted=deleted)
    return {"deleted": deleted}
