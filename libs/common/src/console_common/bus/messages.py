"""Schemas of the bus: the envelope and each method's arguments and result (pure).

Every method is declared once in METHODS: (args schema, result schema). Both ends load
what they receive through these schemas; unknown fields are refused (marshmallow RAISE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

VERSION = 1
CONSOLE_TYPES = ("novnc", "xvpvnc")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


_Int = lambda **kw: fields.Integer(strict=True, **kw)  # noqa: E731
_Port = lambda **kw: _Int(validate=validate.Range(1, 65535), **kw)  # noqa: E731
def _Str(n: int = 255, min: int = 0, **kw: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=validate.Length(min=min, max=n), **kw)
_Bool = lambda **kw: fields.Boolean(truthy={True}, falsy={False}, **kw)  # noqa: E731
_Token = lambda **kw: fields.String(validate=validate.Length(min=1, max=256), **kw)  # noqa: E731


# --- envelope --------------------------------------------------------------------------
MAX_BUDGET_MS = 600_000  # a caller's budget for one request (10 minutes at most)


class RequestSchema(_Strict):
    v = _Int(required=True, validate=validate.Equal(VERSION, error="unsupported version {input}"))
    id = _Str(64, load_default=None, allow_none=True)
    method = fields.String(required=True, validate=validate.Length(min=1, max=64))
    args = fields.Dict(keys=fields.String(), load_default=dict)
    # What is left of the caller's deadline when it sent the request, in ms: the server
    # spends no more than that (absent: the server's default; 0: answered DeadlineExceeded).
    budget_ms = _Int(load_default=None, allow_none=True,
                     validate=validate.Range(min=0, max=MAX_BUDGET_MS))


class ErrorSchema(_Strict):
    type = _Str(64, required=True)
    message = _Str(2000, required=True)


class ReplySchema(_Strict):
    v = _Int(required=True, validate=validate.Equal(VERSION))
    id = _Str(64, load_default=None, allow_none=True)
    ok = _Bool(required=True)
    result = fields.Raw(load_default=None, allow_none=True)
    error = fields.Nested(ErrorSchema, load_default=None, allow_none=True)

    @validates_schema
    def _one_of(self, data: dict[str, Any], **kw: Any) -> None:
        if data["ok"] and data.get("error") is not None:
            raise ValidationError("an ok reply carries no error")
        if not data["ok"] and data.get("error") is None:
            raise ValidationError("an error reply needs error")


# --- consoleauth ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AuthorizeArgs:
    console_type: str
    host: str
    port: int
    instance_uuid: str
    token: str | None = None
    internal_access_path: str | None = None
    compute_url: str | None = None
    access_url: str | None = None


class AuthorizeArgsSchema(_Strict):
    token = _Token(load_default=None, allow_none=True)
    console_type = fields.String(required=True, validate=validate.OneOf(CONSOLE_TYPES))
    host = _Str(255, min=1, required=True)
    port = _Port(required=True)
    instance_uuid = _Str(64, min=1, required=True)
    internal_access_path = _Str(1024, load_default=None, allow_none=True)
    compute_url = _Str(255, load_default=None, allow_none=True)
    access_url = _Str(2048, load_default=None, allow_none=True)

    @post_load
    def _make(self, data: dict[str, Any], **kw: Any) -> AuthorizeArgs:
        return AuthorizeArgs(**data)


class AuthorizeResultSchema(_Strict):
    token = _Token(required=True)
    expires_at = fields.Float(required=True)


@dataclass(frozen=True, slots=True)
class CheckTokenArgs:
    token: str


class CheckTokenArgsSchema(_Strict):
    token = _Token(required=True)

    @post_load
    def _make(self, data: dict[str, Any], **kw: Any) -> CheckTokenArgs:
        return CheckTokenArgs(**data)


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    console_type: str
    host: str
    port: int
    instance_uuid: str
    expires_at: float
    internal_access_path: str | None = None


class ConnectInfoSchema(_Strict):
    console_type = fields.String(required=True, validate=validate.OneOf(CONSOLE_TYPES))
    host = _Str(required=True)
    port = _Port(required=True)
    instance_uuid = _Str(64, required=True)
    expires_at = fields.Float(required=True)
    internal_access_path = _Str(1024, load_default=None, allow_none=True)

    @post_load
    def _make(self, data: dict[str, Any], **kw: Any) -> ConnectInfo:
        return ConnectInfo(**data)


_CONNECT_INFO_REQUIRED = frozenset(("console_type", "host", "port", "instance_uuid", "expires_at"))
_CONNECT_INFO_KEYS = _CONNECT_INFO_REQUIRED | {"internal_access_path"}


def fast_connect_info(obj: Any) -> ConnectInfo | None:
    """``ConnectInfoSchema().load(obj)`` for a result that is plainly valid, else None.

    check_token's result is loaded once per console session; the schema costs ~30 µs, this
    ~1 µs. It accepts only what the schema accepts, with the same result (exact JSON
    types, no conversions); anything else (an error or an unusual but valid form such as
    an integer ``expires_at``) returns None and goes through the schema.
    """
    if type(obj) is not dict or not _CONNECT_INFO_REQUIRED <= obj.keys() <= _CONNECT_INFO_KEYS:
        return None
    console_type, host, port = obj["console_type"], obj["host"], obj["port"]
    uuid, expires_at = obj["instance_uuid"], obj["expires_at"]
    path = obj.get("internal_access_path")
    if (console_type not in CONSOLE_TYPES or type(host) is not str or len(host) > 255
            or type(port) is not int or not 1 <= port <= 65535
            or type(uuid) is not str or len(uuid) > 64
            or type(expires_at) is not float or not math.isfinite(expires_at)
            or (path is not None and (type(path) is not str or len(path) > 1024))):
        return None
    return ConnectInfo(console_type, host, port, uuid, expires_at, path)


# --- check_tokens: many checks in one message ------------------------------------------
# A client coalesces the checks its greenlets make in the same loop turn: one message and
# one reply for the lot, where per-message costs (libzmq hand-offs, hub switches) dominate.
MAX_BATCH = 64


@dataclass(frozen=True, slots=True)
class CheckTokensArgs:
    tokens: tuple[str, ...]


class CheckTokensArgsSchema(_Strict):
    tokens = fields.List(_Token(), required=True, validate=validate.Length(min=1, max=MAX_BATCH))

    @post_load
    def _make(self, data: dict[str, Any], **kw: Any) -> CheckTokensArgs:
        return CheckTokensArgs(tuple(data["tokens"]))


@dataclass(frozen=True, slots=True)
class CheckTokensResult:
    """One entry per token, in order: its ConnectInfo, or the error a check_token call
    would have raised (an exception instance with ``type`` and ``message``)."""

    items: tuple[Any, ...]


class _BatchItemSchema(_Strict):
    ok = _Bool(required=True)
    result = fields.Nested(ConnectInfoSchema, load_default=None, allow_none=True)
    error = fields.Nested(ErrorSchema, load_default=None, allow_none=True)

    @validates_schema
    def _one_of(self, data: dict[str, Any], **kw: Any) -> None:
        if data["ok"] != (data.get("result") is not None) or data["ok"] == (
                data.get("error") is not None):
            raise ValidationError("an item carries a result when ok, an error when not")


class CheckTokensResultSchema(_Strict):
    results = fields.List(fields.Nested(_BatchItemSchema), required=True,
                          validate=validate.Length(max=MAX_BATCH))

    @post_load
    def _make(self, data: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
        return data["results"]


def fast_check_tokens(obj: Any) -> list[dict[str, Any]] | None:
    """``CheckTokensResultSchema().load(obj)`` for a plainly valid result, else None."""
    if type(obj) is not dict or obj.keys() != {"results"}:
        return None
    results = obj["results"]
    if type(results) is not list or len(results) > MAX_BATCH:
        return None
    out = []
    for item in results:
        if type(item) is not dict:
            return None
        if item.get("ok") is True and item.keys() == {"ok", "result"}:
            info = fast_connect_info(item["result"])
            if info is None:
                return None
            out.append({"ok": True, "result": info, "error": None})
        elif item.get("ok") is False and item.keys() == {"ok", "error"}:
            error = item["error"]
            if (type(error) is not dict or error.keys() != {"type", "message"}
                    or type(error["type"]) is not str or len(error["type"]) > 64
                    or type(error["message"]) is not str or len(error["message"]) > 2000):
                return None
            out.append({"ok": False, "result": None, "error": error})
        else:
            return None
    return out


class InstanceArgsSchema(_Strict):
    instance_uuid = _Str(64, min=1, required=True)


class DeletedSchema(_Strict):
    deleted = _Int(required=True, validate=validate.Range(min=0))


class EmptySchema(_Strict):
    pass


class PingResultSchema(_Strict):
    service = _Str(64, required=True)
    version = _Str(64, required=True)
    store = _Str(64, load_default=None, allow_none=True)
    tokens = _Int(load_default=None, allow_none=True)
    instances = _Int(load_default=None, allow_none=True)
    host = _Str(255, load_default=None, allow_none=True)


# --- fake compute host control endpoint ---------------------------------------------
class ValidatePortArgsSchema(_Strict):
    instance_uuid = _Str(64, required=True)
    port = _Port(required=True)
    console_type = fields.String(required=True, validate=validate.OneOf(CONSOLE_TYPES))


class ValidResultSchema(_Strict):
    valid = _Bool(required=True)


class GetConsoleArgsSchema(_Strict):
    instance_id = _Str(255, min=1, required=True)
    console_type = fields.String(required=True, validate=validate.OneOf(CONSOLE_TYPES))


class ConsoleSchema(_Strict):
    token = _Token(required=True)
    access_url = _Str(4096, required=True)
    host = _Str(required=True)
    port = _Port(required=True)
    internal_access_path = _Str(1024, load_default=None, allow_none=True)
    instance_uuid = _Str(64, load_default=None, allow_none=True)
    console_type = fields.String(load_default=None, allow_none=True)
    expires_at = fields.Float(load_default=None, allow_none=True)


class InstanceSchema(_Strict):
    name = _Str(required=True)
    uuid = _Str(64, required=True)
    host = _Str(required=True)
    port = _Port(required=True)
    kind = _Str(32, required=True)
    password = _Bool(load_default=False)


class InstanceListSchema(_Strict):
    instances = fields.List(fields.Nested(InstanceSchema), required=True)


class DeleteInstanceArgsSchema(_Strict):
    instance_id = _Str(255, min=1, required=True)


# method -> (args schema, result schema). One instance each: schemas are stateless.
METHODS: dict[str, tuple[Schema, Schema]] = {
    "authorize_console": (AuthorizeArgsSchema(), AuthorizeResultSchema()),
    "check_token": (CheckTokenArgsSchema(), ConnectInfoSchema()),
    "check_tokens": (CheckTokensArgsSchema(), CheckTokensResultSchema()),
    "delete_tokens_for_instance": (InstanceArgsSchema(), DeletedSchema()),
    "ping": (EmptySchema(), PingResultSchema()),
    "validate_console_port": (ValidatePortArgsSchema(), ValidResultSchema()),
    "get_vnc_console": (GetConsoleArgsSchema(), ConsoleSchema()),
    "list_instances": (EmptySchema(), InstanceListSchema()),
    "delete_instance": (DeleteInstanceArgsSchema(), DeletedSchema()),
}

# method -> a hand-written loader for its result on the hot path: the loaded result when
# the input is plainly valid, None to let the schema decide (and word the error).
FAST_RESULTS: dict[str, Callable[[Any], Any]] = {"check_token": fast_connect_info,
                                                  "check_tokens": fast_check_tokens}
