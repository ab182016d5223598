"""Encoding and decoding of bus messages (pure): bytes <-> validated requests and replies.

Requests and replies are one JSON object each, at most MAX_MESSAGE bytes, checked against
the shared schemas in messages.py before anything acts on them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from console_common.bus.errors import BadRequest, BusProtocolError, UnknownMethod, remote_error
from console_common.bus.messages import METHODS, VERSION, ReplySchema, RequestSchema

MAX_MESSAGE = 64 * 1024

_REQUEST = RequestSchema()
_REPLY = ReplySchema()
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    args: Any  # the method's args object (a frozen dataclass or a dict)
    id: str | None = None


def _to_plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _errors(exc: ValidationError) -> str:
    msgs = exc.messages
    if isinstance(msgs, dict):
        return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                         for k, v in msgs.items())
    return "; ".join(map(str, msgs))


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE:
        raise BadRequest(f"{what} of {len(data)} bytes exceeds {MAX_MESSAGE}")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"{what} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} is not a JSON object")
    return obj


def encode_request(method: str, args: dict[str, Any] | None = None, id: str | None = None) -> bytes:
    """Validate args against the method's schema (so bad calls fail here) and encode."""
    schemas = METHODS.get(method)
    if schemas is None:
        raise UnknownMethod(f"unknown method {method!r}")
    plain = {k: v for k, v in (args or {}).items() if v is not None}
    try:
        schemas[0].load(plain)
    except ValidationError as exc:
        raise BadRequest(f"{method}: {_errors(exc)}") from exc
    payload = _dumps({"v": VERSION, "id": id, "method": method, "args": plain}).encode()
    if len(payload) > MAX_MESSAGE:
        raise BadRequest(f"{method}: request exceeds {MAX_MESSAGE} bytes")
    return payload


def decode_request(data: bytes, known: frozenset[str] | None = None) -> Request:
    """Bytes from a client -> Request with loaded args; raises a RemoteError to reply with."""
    obj = _load_json(data, "request")
    try:
        env = _REQUEST.load(obj)
    except ValidationError as exc:
        raise BadRequest(f"bad request envelope: {_errors(exc)}") from exc
    method = env["method"]
    schemas = METHODS.get(method)
    if schemas is None or (known is not None and method not in known):
        raise UnknownMethod(f"unknown method {method!r}")
    try:
        args = schemas[0].load(env["args"])
    except ValidationError as exc:
        raise BadRequest(f"{method}: {_errors(exc)}") from exc
    return Request(method, args, env["id"])


def request_id(data: bytes) -> str | None:
    """Best effort: the id of a request that failed to decode, so the error reply matches."""
    try:
        obj = json.loads(data) if len(data) <= MAX_MESSAGE else None
    except (ValueError, UnicodeDecodeError):
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, str) and len(rid) <= 64 else None


def encode_result(method: str, result: Any, id: str | None = None) -> bytes:
    plain = _to_plain(result)
    # Results are dumped through the schema so a handler cannot leak extra fields.
    dumped = METHODS[method][1].dump(plain)
    return _dumps({"v": VERSION, "id": id, "ok": True, "result": dumped}).encode()


def encode_error(type_: str, message: str, id: str | None = None) -> bytes:
    return _dumps({"v": VERSION, "id": id, "ok": False,
                   "error": {"type": type_, "message": message[:2000]}}).encode()


def decode_reply(data: bytes, method: str, id: str | None = None) -> Any:
    """Bytes from a server -> the method's loaded result, or raise its RemoteError."""
    try:
        obj = _load_json(data, "reply")
        env = _REPLY.load(obj)
    except (BadRequest, ValidationError) as exc:
        raise BusProtocolError(f"bad reply to {method}: {exc}") from exc
    if id is not None and env["id"] not in (None, id):
        raise BusProtocolError(f"reply to {method} has id {env['id']!r}, expected {id!r}")
    if not env["ok"]:
        raise remote_error(env["error"]["type"], env["error"]["message"])
    try:
        return METHODS[method][1].load(env["result"] if env["result"] is not None else {})
    except ValidationError as exc:
        raise BusProtocolError(f"bad result of {method}: {_errors(exc)}") from exc
