"""What consoleauth publishes on its events socket (pure): control-log events and heartbeats.

    {"v": 1, "epoch": "9f2c...", "head": 42}                       a heartbeat: the log's head
    {"v": 1, "epoch": "9f2c...", "head": 43, "event": {"seq": 43, "kind": "revoke", ...}}

``epoch`` names one control log (a consoleauth process with a memory or sqlite store, or a
Redis store shared by replicas); ``seq`` numbers its events from 1. A subscriber that sees
``head`` beyond what it applied, or another epoch, asks ``events_since`` on the bus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from console_common.proto.bus.errors import BadRequest, BusProtocolError
from console_common.proto.bus.messages import VERSION, EventSchema
from console_common.proto.bus.protocol import load_object
_EVENT = EventSchema()


@dataclass(frozen=True, slots=True)
class Published:
    epoch: str
    head: int
    event: dict[str, Any] | None  # None: a heartbeat


def encode_published(epoch: str, head: int, event: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"v": VERSION, "epoch": epoch, "head": head}
    if event is not None:
        message["event"] = event
    return json.dumps(message, separators=(",", ":")).encode()


def decode_published(data: bytes) -> Published:
    """Bytes from an events socket -> Published, or BusProtocolError naming what is wrong."""
    try:
        obj = load_object(data, "event message")
    except BadRequest as exc:
        raise BusProtocolError(exc.message) from exc
    if obj.get("v") != VERSION:
        raise BusProtocolError("event message is not a version 1 object")
    epoch, head = obj.get("epoch"), obj.get("head")
    if type(epoch) is not str or not 0 < len(epoch) <= 32 or type(head) is not int or head < 0:
        raise BusProtocolError("event message lacks epoch or head")
    event = obj.get("event")
    if event is not None:
        try:
            event = _EVENT.load(event)
        except ValidationError as exc:
            raise BusProtocolError(f"bad event: {exc.messages}") from exc
    return Published(epoch, head, event)
