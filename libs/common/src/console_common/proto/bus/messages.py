"""Schemas of the bus: the envelope and each method's arguments and result (pure).

Every method is declared once in METHODS: (args schema, result schema). Both ends load
what they receive through these schemas; unknown fields are refused (marshmallow RAISE).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from dataclasses import fields as dataclass_fields
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


# --- declared once: a field's wire rule ------------------------------------------------
@dataclass(frozen=True)
class Wire:
    """One field's rule on the wire, declared once on the dataclass field: it gives the
    marshmallow field the schema loads with, and the same rule as a plain check for the hot
    path (exact JSON types, no conversions), so both accept exactly the same values."""

    kind: type
    optional: bool = False
    min_len: int = 0
    max_len: int = 255
    choices: tuple[str, ...] | None = None
    span: tuple[int, int] | None = None
    secret: bool = False  # left out of repr(): a record printed never shows it

    def schema_field(self) -> fields.Field:
        kw: dict[str, Any] = ({"load_default": None, "allow_none": True} if self.optional
                              else {"required": True})
        if self.choices is not None:
            return fields.String(validate=validate.OneOf(self.choices), **kw)
        if self.kind is str:
            return fields.String(validate=validate.Length(self.min_len, self.max_len), **kw)
        if self.kind is int:
            span = validate.Range(*self.span) if self.span else None
            return fields.Integer(strict=True, validate=span, **kw)
        if self.kind is float:
            return fields.Float(**kw)  # marshmallow refuses nan and inf, as check_source() does
        raise TypeError(f"no wire rule for {self.kind.__name__}")

    def check_source(self, v: str) -> str:
        """A Python expression, true when the value named ``v`` is what schema_field()
        loads unchanged (exact JSON types, no conversions): compiled into the hot path's
        loaders (``fast_loader``), which need ``_isfinite`` (math.isfinite) in scope."""
        kind = {str: "str", int: "int", float: "float"}[self.kind]
        if self.choices is not None:
            rule = f"{v} in {self.choices!r}"
        elif self.kind is str:
            rule = f"{self.min_len} <= len({v}) <= {self.max_len}"
        elif self.kind is int:
            lo, hi = self.span or (-(1 << 63), 1 << 63)
            rule = f"{lo} <= {v} <= {hi}"
        else:
            rule = f"_isfinite({v})"
        typed = f"type({v}) is {kind} and {rule}"
        return f"({v} is None or {typed})" if self.optional else f"({typed})"


def wire(kind: type, **rule: Any) -> Any:
    """A dataclass field with its wire rule; optional fields default to None."""
    return _field(Wire(kind, **rule))


def _field(spec: Wire) -> Any:
    if spec.optional:
        return field(default=None, metadata={"wire": spec}, repr=not spec.secret)
    return field(metadata={"wire": spec}, repr=not spec.secret)


def _wire_fields(cls: type, drop: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """cls's fields as make_dataclass specs (fresh Field objects, same rules)."""
    return [(f.name, f.type, _field(f.metadata["wire"]))
            for f in dataclass_fields(cls) if f.name not in drop]


def derive(name: str, base: type | None = None, drop: tuple[str, ...] = (),
           add: tuple[tuple[str, Any, Any], ...] = (), **namespace: Any) -> type:
    """A frozen dataclass made of ``base``'s fields (less ``drop``) and ``add``'s: subclass
    of ``base`` when nothing is dropped, so a TokenRecord is a ConnectInfo."""
    specs = _wire_fields(base, drop) if base is not None and drop else []
    specs += [(name, kind, _field(spec)) for name, kind, spec in add]
    bases = (base,) if base is not None and not drop else ()
    return make_dataclass(name, specs, bases=bases, frozen=True, slots=True,
                          namespace=namespace)


class _Loads(_Strict):
    target: type

    @post_load
    def _make(self, data: dict[str, Any], **kw: Any) -> Any:
        return self.target(**data)


def schema_for(cls: type) -> type[Schema]:
    """The strict marshmallow schema that loads a ``cls`` from its wire fields."""
    declared = {f.name: f.metadata["wire"].schema_field() for f in dataclass_fields(cls)}
    return type(f"{cls.__name__}Schema", (_Loads,), {**declared, "target": cls})


def fast_loader(cls: type) -> Callable[[Any], Any]:
    """``schema_for(cls)().load(obj)`` for an ``obj`` that is plainly valid, else None.

    A check_token result is loaded once per console session and 64 at a time in batches;
    the schema costs ~30 µs, this ~2 µs. It accepts only what the schema accepts, with the
    same result; anything else (an error, or an unusual but valid form such as an integer
    float) returns None and goes through the schema, which decides and words the error.
    """
    specs = [(f.name, f.metadata["wire"]) for f in dataclass_fields(cls)]
    # Compiled from the fields' rules (as dataclasses builds __init__): one flat function,
    # 1.7 us a ConnectInfo against 2.3 for a loop over a predicate per field (measured).
    lines = ["def load(obj):",
             "    if type(obj) is not dict or not _required <= obj.keys() <= _allowed:",
             "        return None",
             "    get = obj.get"]
    for i, (name, spec) in enumerate(specs):
        lines += [f"    v{i} = get({name!r})",
                  f"    if not {spec.check_source(f'v{i}')}:",
                  "        return None"]
    lines.append("    return _cls(**obj)")
    namespace = {"_cls": cls, "_isfinite": math.isfinite,
                 "_allowed": frozenset(name for name, _ in specs),
                 "_required": frozenset(name for name, spec in specs if not spec.optional)}
    exec("\n".join(lines), namespace)
    return namespace["load"]


def field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclass_fields(cls))


# --- consoleauth ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConnectInfo:
    """What a token grants: the console's target and the token's expiry. Every other
    spelling of these fields (AuthorizeArgs, consoleauth's TokenRecord and store columns,
    the schemas, the hot-path loader and encoder) derives from this declaration."""

    console_type: str = wire(str, choices=CONSOLE_TYPES)
    host: str = wire(str, min_len=1)
    port: int = wire(int, span=(1, 65535))
    instance_uuid: str = wire(str, min_len=1, max_len=64)
    expires_at: float = wire(float)
    internal_access_path: str | None = wire(str, optional=True, max_len=1024)
    # The console's VNC password (a one-time password the compute host set on its VNC
    # server), for the proxies' RFB security proxy. consoleauth stores it sealed with a
    # key derived from the token (a TokenRecord holds that form) and answers it only to
    # the proxy role; never logged.
    password: str | None = wire(str, optional=True, min_len=1, max_len=256, secret=True)


# Where an authorized console came from, kept with its token (consoleauth's TokenRecord).
ORIGIN_FIELDS: tuple[tuple[str, Any, Wire], ...] = (
    ("compute_url", str | None, Wire(str, optional=True)),
    ("access_url", str | None, Wire(str, optional=True, max_len=2048)),
)

# authorize_console's arguments: the connect info less its expiry (consoleauth sets it),
# an optional token of the caller's choosing, and the origin fields.
AuthorizeArgs = derive(
    "AuthorizeArgs", ConnectInfo, drop=("expires_at",),
    add=(("token", str | None, Wire(str, optional=True, min_len=1, max_len=256)),)
    + ORIGIN_FIELDS)
AuthorizeArgsSchema = schema_for(AuthorizeArgs)
ConnectInfoSchema = schema_for(ConnectInfo)
fast_connect_info = fast_loader(ConnectInfo)
CONNECT_INFO_FIELDS = field_names(ConnectInfo)
# ConnectInfo's values in field order, from a ConnectInfo or anything extending it
connect_info_values = operator.attrgetter(*CONNECT_INFO_FIELDS)


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


# --- live control: the control log, sessions across proxies ----------------------------
# The control log: revocations and operator disconnects, numbered (seq) within an epoch
# (one per log: a memory or sqlite consoleauth process, or a Redis store). consoleauth
# publishes each event on its events socket, and a heartbeat with the log's head; a proxy
# that sees a gap (or a new epoch) asks events_since and applies what it missed.
EVENT_KINDS = ("revoke", "disconnect")
EVENTS_PAGE = 200
SESSIONS_PAGE = 200
_SessionId = lambda **kw: _Str(32, min=1, **kw)  # noqa: E731


class EventSchema(_Strict):
    seq = _Int(required=True, validate=validate.Range(min=1))
    kind = fields.String(required=True, validate=validate.OneOf(EVENT_KINDS))
    at = fields.Float(required=True)
    instance_uuid = _Str(64, load_default=None, allow_none=True)
    token_hash = _Str(64, load_default=None, allow_none=True)
    session_ids = fields.List(_SessionId(), load_default=None, allow_none=True,
                              validate=validate.Length(max=SESSIONS_PAGE))
    client = _Str(64, load_default=None, allow_none=True)


class EventsSinceArgsSchema(_Strict):
    # No epoch: only the head is wanted (a proxy starting has nothing to catch up on).
    epoch = _Str(32, load_default=None, allow_none=True)
    seq = _Int(load_default=0, validate=validate.Range(min=0))


class EventsResultSchema(_Strict):
    epoch = _Str(32, required=True)
    seq = _Int(required=True, validate=validate.Range(min=0))  # the log's head
    events = fields.List(fields.Nested(EventSchema), required=True,
                         validate=validate.Length(max=EVENTS_PAGE))
    more = _Bool(load_default=False)
    truncated = _Bool(load_default=False)  # events after ``seq`` asked for are gone


class RevokeTokenArgsSchema(_Strict):
    token = _Token(required=True)


class DisconnectArgsSchema(_Strict):
    session_ids = fields.List(_SessionId(), load_default=None, allow_none=True,
                              validate=validate.Length(min=1, max=SESSIONS_PAGE))
    instance_uuid = _Str(64, min=1, load_default=None, allow_none=True)
    client = _Str(64, min=1, load_default=None, allow_none=True)

    @validates_schema
    def _something(self, data: dict[str, Any], **kw: Any) -> None:
        if not any(data.get(k) for k in ("session_ids", "instance_uuid", "client")):
            raise ValidationError("name session_ids, instance_uuid or client")


class MatchedSchema(_Strict):
    matched = _Int(required=True, validate=validate.Range(min=0))


class ProxySchema(_Strict):
    service = _Str(64, min=1, required=True)
    host = _Str(255, min=1, required=True)
    pid = _Int(required=True, validate=validate.Range(min=1))
    id = _Str(32, min=1, required=True)  # one per proxy process start


class SessionSchema(_Strict):
    session_id = _SessionId(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(CONSOLE_TYPES))
    instance_uuid = _Str(64, required=True)
    client = _Str(64, required=True)
    started = fields.Float(required=True)
    bytes_up = _Int(required=True, validate=validate.Range(min=0))
    bytes_down = _Int(required=True, validate=validate.Range(min=0))
    token_id = _Str(16, load_default=None, allow_none=True)  # what per-token limits count


class ReportSessionsArgsSchema(_Strict):
    proxy = fields.Nested(ProxySchema, required=True)
    open = fields.List(fields.Nested(SessionSchema), load_default=list,
                       validate=validate.Length(max=SESSIONS_PAGE))
    ended = fields.List(_SessionId(), load_default=list,
                        validate=validate.Length(max=SESSIONS_PAGE))


class ClaimSessionArgsSchema(_Strict):
    """A proxy about to open a session asks whether the cluster's limits allow it; granted,
    the session is in the book at once (as if reported open)."""
    proxy = fields.Nested(ProxySchema, required=True)
    session = fields.Nested(SessionSchema, required=True)
    per_token = _Int(load_default=0, validate=validate.Range(min=0))
    per_instance = _Int(load_default=0, validate=validate.Range(min=0))


class ClaimResultSchema(_Strict):
    granted = _Bool(required=True)
    limit = fields.String(load_default=None, allow_none=True,
                          validate=validate.OneOf(["limit_token", "limit_instance"]))
    open = _Int(required=True, validate=validate.Range(min=0))  # what the limit counted


class ListSessionsArgsSchema(_Strict):
    instance_uuid = _Str(64, min=1, load_default=None, allow_none=True)
    client = _Str(64, min=1, load_default=None, allow_none=True)
    after = _SessionId(load_default=None, allow_none=True)  # the page after this session id


class SessionRowSchema(SessionSchema):
    proxy = fields.Nested(ProxySchema, required=True)
    duration_s = fields.Float(required=True)


class SessionListSchema(_Strict):
    sessions = fields.List(fields.Nested(SessionRowSchema), required=True,
                           validate=validate.Length(max=SESSIONS_PAGE))
    more = _Bool(load_default=False)


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
    "revoke_token": (RevokeTokenArgsSchema(), DeletedSchema()),
    "events_since": (EventsSinceArgsSchema(), EventsResultSchema()),
    "disconnect": (DisconnectArgsSchema(), MatchedSchema()),
    "report_sessions": (ReportSessionsArgsSchema(), EmptySchema()),
    "claim_session": (ClaimSessionArgsSchema(), ClaimResultSchema()),
    "list_sessions": (ListSessionsArgsSchema(), SessionListSchema()),
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
