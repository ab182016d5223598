"""Encoding and decoding of bus messages (pure): bytes <-> validated requests and replies.

Requests and replies are one JSON object each, at most MAX_MESSAGE bytes, checked against
the shared schemas in messages.py before anything acts on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson
from marshmallow import ValidationError

from console_common.proto.bus.errors import (
    BadRequest,
    BusProtocolError,
    RemoteError,
    UnknownMethod,
    remote_error,
)
from console_common.proto.bus.messages import (
    FAST_RESULTS,
    MAX_BATCH,
    MAX_BUDGET_MS,
    CheckTokensArgs,
    CheckTokensResult,
    CheckTokenArgs,
    CONNECT_INFO_FIELDS,
    ConnectInfo,
    connect_info_values,
    METHODS,
    VERSION,
    ReplySchema,
    RequestSchema,
)

MAX_MESSAGE = 64 * 1024

_REQUEST = RequestSchema()
_REPLY = ReplySchema()
# orjson: compact UTF-8 bytes, and strict (no NaN, UTF-8 only) both ways. It took the
# encoding of a 10-token check_tokens reply from 21 to 1.2 us and its decoding from 12.5 to
# 4.4 us (measured): on the bus's hot path, where each check pays both once.
_dumps = orjson.dumps


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    args: Any  # the method's args object (a frozen dataclass or a dict)
    id: str | None = None
    budget_ms: int | None = None  # what the caller had left when it sent the request


def _to_plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _errors(exc: ValidationError) -> str:
    msgs = exc.messages
    if isinstance(msgs, dict):
        return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                         for k, v in msgs.items())
    return "; ".join(map(str, msgs))


def load_object(data: bytes, what: str) -> dict[str, Any]:
    """One JSON object of at most MAX_MESSAGE bytes (UTF-8), or BadRequest saying why."""
    if len(data) > MAX_MESSAGE:
        raise BadRequest(f"{what} of {len(data)} bytes exceeds {MAX_MESSAGE}")
    try:
        obj = orjson.loads(data)  # UTF-8 by contract; nesting is bounded by orjson (1024)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{what} is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} is not a JSON object")
    return obj


def _arg_names(method: str) -> tuple[frozenset[str], frozenset[str]] | None:
    """(required, allowed) argument names of ``method``, from its args schema (cached)."""
    names = _ARG_NAMES.get(method)
    if names is None:
        schemas = METHODS.get(method)
        if schemas is None:
            return None
        fields = schemas[0].fields
        names = (frozenset(k for k, f in fields.items() if f.required), frozenset(fields))
        _ARG_NAMES[method] = names
    return names


_ARG_NAMES: dict[str, tuple[frozenset[str], frozenset[str]]] = {}


def encode_request(method: str, args: dict[str, Any] | None = None, id: str | None = None,
                   budget_ms: int | None = None) -> bytes:
    """Check the method exists and the argument names fit its schema, and encode.

    Values are not loaded through the schema here (a third of a check_token call's
    time): the server loads every request through it and answers BadRequest, which the
    caller gets as the same exception.
    """
    names = _arg_names(method)
    if names is None:
        raise UnknownMethod(f"unknown method {method!r}")
    plain = {k: v for k, v in (args or {}).items() if v is not None}
    required, allowed = names
    if not required <= plain.keys() or not plain.keys() <= allowed:
        missing = ", ".join(sorted(required - plain.keys()))
        unknown = ", ".join(sorted(plain.keys() - allowed))
        raise BadRequest(f"{method}: " + "; ".join(
            ([f"missing: {missing}"] if missing else [])
            + ([f"unknown: {unknown}"] if unknown else [])))
    envelope = {"v": VERSION, "id": id, "method": method, "args": plain}
    if budget_ms is not None:
        envelope["budget_ms"] = max(0, min(MAX_BUDGET_MS, int(budget_ms)))
    payload = _dumps(envelope)
    if len(payload) > MAX_MESSAGE:
        raise BadRequest(f"{method}: request exceeds {MAX_MESSAGE} bytes")
    return payload


_CHECK_KEYS = ({"v", "method", "args"}, {"v", "id", "method", "args"},
               {"v", "method", "args", "budget_ms"}, {"v", "id", "method", "args", "budget_ms"})


def _plain_args(obj: dict[str, Any], method: str, arg: str,
                known: frozenset[str] | None) -> tuple[Any, str | None, int | None] | None:
    """(the one argument's value, the id, the budget) of a request for ``method`` whose
    envelope the schemas surely accept unchanged, else None: the hot requests skip
    marshmallow only when plainly valid; anything else (even valid) takes the schema path."""
    if obj.keys() not in _CHECK_KEYS or obj["method"] != method:
        return None
    if known is not None and method not in known:
        return None
    v, rid, args, budget = obj["v"], obj.get("id"), obj["args"], obj.get("budget_ms")
    if type(v) is not int or v != VERSION or type(args) is not dict or args.keys() != {arg}:
        return None
    if rid is not None and (type(rid) is not str or len(rid) > 64):
        return None
    if budget is not None and (type(budget) is not int or not 0 <= budget <= MAX_BUDGET_MS):
        return None
    return args[arg], rid, budget


def _is_token(value: Any) -> bool:
    return type(value) is str and 1 <= len(value) <= 256


def _plain_check_token(obj: dict[str, Any], known: frozenset[str] | None) -> Request | None:
    """check_token, accepted by hand only when it is exactly what the schemas accept."""
    plain = _plain_args(obj, "check_token", "token", known)
    if plain is None or not _is_token(plain[0]):
        return None
    return Request("check_token", CheckTokenArgs(plain[0]), plain[1], plain[2])


def _plain_check_tokens(obj: dict[str, Any], known: frozenset[str] | None) -> Request | None:
    """check_tokens, by hand under the same rule as ``_plain_check_token``."""
    plain = _plain_args(obj, "check_tokens", "tokens", known)
    if plain is None:
        return None
    tokens, rid, budget = plain
    if type(tokens) is not list or not 1 <= len(tokens) <= MAX_BATCH:
        return None
    if not all(_is_token(token) for token in tokens):
        return None
    return Request("check_tokens", CheckTokensArgs(tuple(tokens)), rid, budget)


def decode_request(data: bytes, known: frozenset[str] | None = None) -> Request:
    """Bytes from a client -> Request with loaded args; raises a RemoteError to reply with."""
    obj = load_object(data, "request")
    if (fast := _plain_check_token(obj, known)) is not None:
        return fast
    if (fast := _plain_check_tokens(obj, known)) is not None:
        return fast
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
    return Request(method, args, env["id"], env["budget_ms"])


def request_id(data: bytes) -> str | None:
    """Best effort: the id of a request that failed to decode, so the error reply matches."""
    try:
        obj = orjson.loads(data) if len(data) <= MAX_MESSAGE else None
    except orjson.JSONDecodeError:
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, str) and len(rid) <= 64 else None


def _connect_info_dict(info: ConnectInfo) -> dict[str, Any]:
    dumped = dict(zip(CONNECT_INFO_FIELDS, connect_info_values(info)))
    if dumped["password"] is None:
        # Left out rather than null: replies stay as small as before, and proxies older
        # than console passwords (schemas refuse unknown fields) read them as before.
        del dumped["password"]
    return dumped


def _batch_item(item: Any) -> dict[str, Any]:
    if isinstance(item, ConnectInfo):
        return {"ok": True, "result": _connect_info_dict(item)}
    if isinstance(item, RemoteError):
        return {"ok": False, "error": {"type": item.type, "message": item.message[:2000]}}
    raise TypeError(f"check_tokens item of type {type(item).__name__}")


def encode_result(method: str, result: Any, id: str | None = None) -> bytes:
    # The hot reply: a ConnectInfo, or anything extending it (consoleauth's TokenRecord),
    # of which only the connect-info fields are written.
    if isinstance(result, ConnectInfo):
        dumped = _connect_info_dict(result)
        return _dumps({"v": VERSION, "id": id, "ok": True, "result": dumped})
    if type(result) is CheckTokensResult:
        dumped = {"results": [_batch_item(item) for item in result.items]}
        return _dumps({"v": VERSION, "id": id, "ok": True, "result": dumped})
    plain = _to_plain(result)
    # Results are dumped through the schema so a handler cannot leak extra fields.
    dumped = METHODS[method][1].dump(plain)
    return _dumps({"v": VERSION, "id": id, "ok": True, "result": dumped})


def encode_error(type_: str, message: str, id: str | None = None) -> bytes:
    return _dumps({"v": VERSION, "id": id, "ok": False,
                   "error": {"type": type_, "message": message[:2000]}})


_REPLY_KEYS = frozenset(("v", "id", "ok", "result", "error"))
_ERROR_KEYS = frozenset(("type", "message"))


def _plain_envelope(obj: dict[str, Any]) -> bool:
    """Whether ``obj`` is a reply envelope ``ReplySchema`` surely accepts unchanged (exact
    JSON types, lengths, no unknown key): then its load (~2/3 of a check_token call's
    decoding) is skipped. Anything else goes through the schema, which decides."""
    if not obj.keys() <= _REPLY_KEYS:
        return False
    v, rid, ok, error = obj.get("v"), obj.get("id"), obj.get("ok"), obj.get("error")
    if type(v) is not int or v != VERSION or (
            rid is not None and (type(rid) is not str or len(rid) > 64)):
        return False
    if ok is True:
        return error is None
    if ok is not False or type(error) is not dict or error.keys() != _ERROR_KEYS:
        return False
    etype, message = error["type"], error["message"]
    return (type(etype) is str and len(etype) <= 64
            and type(message) is str and len(message) <= 2000)


def decode_reply(data: bytes, method: str, id: str | None = None) -> Any:
    """Bytes from a server -> the method's loaded result, or raise its RemoteError."""
    try:
        obj = load_object(data, "reply")
    except BadRequest as exc:
        raise BusProtocolError(f"bad reply to {method}: {exc}") from exc
    if _plain_envelope(obj):
        env = obj
    else:
        try:
            env = _REPLY.load(obj)
        except ValidationError as exc:
            raise BusProtocolError(f"bad reply to {method}: {exc}") from exc
    rid = env.get("id")
    if id is not None and rid not in (None, id):
        raise BusProtocolError(f"reply to {method} has id {rid!r}, expected {id!r}")
    if not env["ok"]:
        error = env["error"]
        raise remote_error(error["type"], error["message"])
    result = env.get("result")
    if result is None:
        result = {}
    fast = FAST_RESULTS.get(method)
    if fast is not None and (loaded := fast(result)) is not None:
        return loaded
    try:
        return METHODS[method][1].load(result)
    except ValidationError as exc:
        raise BusProtocolError(f"bad result of {method}: {_errors(exc)}") from exc
