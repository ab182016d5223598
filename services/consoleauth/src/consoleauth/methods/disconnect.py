"""disconnect: an operator cuts sessions, by id, instance or client, wherever they are."""

from __future__ import annotations

from typing import Any

import structlog

from console_common.proto.bus import Unavailable
from consoleauth.state import State
from consoleauth.stores import StoreUnavailable

log = structlog.get_logger("consoleauth")


def matches(row: dict[str, Any], args: dict[str, Any]) -> bool:
    ids, instance, client = args.get("session_ids"), args.get("instance_uuid"), args.get("client")
    return ((not ids or row["session_id"] in ids)
            and (instance is None or row["instance_uuid"] == instance)
            and (client is None or row["client"] == client))


def handle(state: State, args: dict[str, Any]) -> dict[str, int]:
    try:
        matched = sum(matches(row, args) for row in state.sessions.rows(state.clock()))
        # Published whatever the book says: a session a few ms old may not be reported yet.
        state.emit({"kind": "disconnect", "session_ids": args.get("session_ids"),
                    "instance_uuid": args.get("instance_uuid"), "client": args.get("client")})
    except StoreUnavailable as exc:
        raise Unavailable(str(exc)) from exc
    state.counters["disconnects"] += 1
    log.info("sessions.disconnect", matched=matched, instance_uuid=args.get("instance_uuid"),
             client=args.get("client"), session_ids=args.get("session_ids"))
    return {"matched": matched}
