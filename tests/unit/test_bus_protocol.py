"""Bus envelope and schemas, pure: encode/decode both ways, every refusal typed."""

from __future__ import annotations

import json

import orjson
import pytest
from marshmallow import ValidationError

from console_common.proto.bus.errors import (BadRequest, BusProtocolError, InvalidToken, RemoteError,
                                       UnknownMethod)
from console_common.proto.bus.messages import CheckTokenArgs, ConnectInfo
from console_common.proto.bus.protocol import (MAX_MESSAGE, decode_reply, decode_request, encode_error,
                                         encode_request, encode_result, request_id)

TOKEN = "t" * 43


def test_request_round_trip():
    raw = encode_request("check_token", {"token": TOKEN}, "id-1")
    req = decode_request(raw)
    assert req.method == "check_token" and req.id == "id-1"
    assert req.args == CheckTokenArgs(TOKEN)


def test_reply_round_trip_result_and_error():
    info = ConnectInfo("novnc", "10.0.0.1", 5900, "u-1", 1.5, None)
    raw = encode_result("check_token", info, "id-2")
    assert decode_reply(raw, "check_token", "id-2") == info
    raw = encode_error("InvalidToken", "invalid or expired token", "id-3")
    with pytest.raises(InvalidToken, match="invalid or expired"):
        decode_reply(raw, "check_token", "id-3")
    with pytest.raises(RemoteError) as err:
        decode_reply(encode_error("Weird", "x"), "ping")
    assert err.value.type == "Weird"


@pytest.mark.parametrize(("payload", "error", "needle"), [
    (b"not json", BadRequest, "not JSON"),
    (b"[1, 2]", BadRequest, "not a JSON object"),
    (b'{"v": 2, "method": "ping"}', BadRequest, "unsupported version"),
    (b'{"v": "1", "method": "ping"}', BadRequest, "v"),
    (b'{"v": 1}', BadRequest, "method"),
    (b'{"v": 1, "method": "nope"}', UnknownMethod, "unknown method"),
    (b'{"v": 1, "method": "check_token", "args": {}}', BadRequest, "token"),
    (b'{"v": 1, "method": "check_token", "args": {"token": "x", "extra": 1}}', BadRequest, "extra"),
    (b'{"v": 1, "method": "authorize_console", "args": {"console_type": "spice", "host": "h", '
     b'"port": 5900, "instance_uuid": "u"}}', BadRequest, "console_type"),
    (b'{"v": 1, "method": "authorize_console", "args": {"console_type": "novnc", "host": "h", '
     b'"port": "5900", "instance_uuid": "u"}}', BadRequest, "port"),
    (b'{"v": 1, "method": "ping", "x": 1}', BadRequest, "x"),
    (b"\xff\xfe", BadRequest, "not JSON"),
])
def test_bad_requests_are_typed(payload, error, needle):
    with pytest.raises(error) as err:
        decode_request(payload)
    assert needle in err.value.message


def test_oversized_request_refused_before_parsing():
    big = json.dumps({"v": 1, "method": "ping", "args": {}, "pad": "x" * MAX_MESSAGE}).encode()
    with pytest.raises(BadRequest, match="exceeds"):
        decode_request(big)


def test_encode_request_validates_args():
    with pytest.raises(BadRequest):
        encode_request("check_token", {})
    with pytest.raises(UnknownMethod):
        encode_request("drop_tables", {})


def test_bad_replies_are_protocol_errors():
    with pytest.raises(BusProtocolError):
        decode_reply(b"garbage", "ping")
    with pytest.raises(BusProtocolError):
        decode_reply(b'{"v": 1, "ok": true, "error": {"type": "x", "message": "y"}}', "ping")
    with pytest.raises(BusProtocolError, match="expected"):
        decode_reply(encode_result("ping", {"service": "s", "version": "1"}, "a"), "ping", "b")


def test_result_dump_drops_nothing_secret():
    raw = encode_result("ping", {"service": "s", "version": "1", "store": "memory", "tokens": 3})
    assert json.loads(raw)["result"]["tokens"] == 3


def test_request_id_best_effort():
    assert request_id(b'{"id": "abc", "v": 9}') == "abc"
    assert request_id(b"nope") is None


# --- the hand-written fast paths agree with the schemas -----------------------------------

_INFO = {"console_type": "novnc", "host": "10.0.0.1", "port": 5900, "instance_uuid": "u-1",
         "expires_at": 1.5, "internal_access_path": None}
_INFO_VARIANTS = [
    {}, _INFO, {**_INFO, "internal_access_path": "/p"}, {**_INFO, "extra": 1},
    {k: v for k, v in _INFO.items() if k != "internal_access_path"},
    *({k: v for k, v in _INFO.items() if k != drop} for drop in _INFO if drop != "internal_access_path"),
    *({**_INFO, key: bad} for key, bads in {
        "console_type": ["spice", 1, None, "xvpvnc"],
        "host": ["", "h" * 255, "h" * 256, 1, None, ["h"]],
        "port": [0, 1, 65535, 65536, -1, "5900", 5900.0, True, None],
        "instance_uuid": ["", "u" * 64, "u" * 65, 3, None],
        "expires_at": [0, 2, float("inf"), float("nan"), "1.5", None, True, 10 ** 400],
        "internal_access_path": ["", "p" * 1024, "p" * 1025, 1, False],
    }.items() for bad in bads),
    None, [], "x", 1,
]


def _not_bus_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return True
    return False


def _schema_load(schema, obj):
    try:
        return ("ok", schema.load(obj))
    except ValidationError as exc:
        return ("error", exc)


@pytest.mark.parametrize("obj", _INFO_VARIANTS, ids=range(len(_INFO_VARIANTS)))
def test_fast_connect_info_accepts_only_what_the_schema_accepts(obj):
    from console_common.proto.bus.messages import ConnectInfoSchema, fast_connect_info

    fast = fast_connect_info(obj)
    if fast is not None:  # the fast path may pass (None) but never disagree
        kind, loaded = _schema_load(ConnectInfoSchema(), obj)
        assert kind == "ok" and loaded == fast
        assert type(loaded.expires_at) is type(fast.expires_at)
    # and decode_reply gives the schema's verdict either way
    raw = json.dumps({"v": 1, "id": "a", "ok": True, "result": obj}).encode()
    kind, loaded = _schema_load(ConnectInfoSchema(), obj if obj is not None else {})
    if _not_bus_json(raw):
        # Python's json writes NaN, Infinity and 400-digit numbers; the bus's JSON refuses
        with pytest.raises(BusProtocolError, match="reply is not JSON"):
            decode_reply(raw, "check_token", "a")
    elif kind == "ok":
        assert decode_reply(raw, "check_token", "a") == loaded
    else:
        with pytest.raises(BusProtocolError, match="bad result of check_token"):
            decode_reply(raw, "check_token", "a")


def test_fast_connect_info_takes_the_plain_result():
    from console_common.proto.bus.messages import fast_connect_info

    assert fast_connect_info(_INFO) == ConnectInfo("novnc", "10.0.0.1", 5900, "u-1", 1.5, None)


_ERR = {"type": "InvalidToken", "message": "nope"}
_ENVELOPES = [
    {"v": 1, "id": "a", "ok": True, "result": {}},
    {"v": 1, "ok": True},
    {"v": 1, "id": None, "ok": True, "result": None, "error": None},
    {"v": 1, "id": "a", "ok": False, "error": _ERR},
    {"v": 1, "id": "a", "ok": False, "result": {"x": 1}, "error": _ERR},
    {"v": 1, "id": "a" * 64, "ok": True},
    {"v": 1, "id": "a" * 65, "ok": True},
    {"v": 1, "id": 5, "ok": True},
    {"v": 2, "ok": True}, {"v": "1", "ok": True}, {"v": 1.0, "ok": True}, {"v": True, "ok": True},
    {"ok": True}, {"v": 1}, {"v": 1, "ok": 1}, {"v": 1, "ok": "true"}, {"v": 1, "ok": None},
    {"v": 1, "ok": True, "extra": 1},
    {"v": 1, "ok": True, "error": _ERR},
    {"v": 1, "ok": False}, {"v": 1, "ok": False, "error": None},
    {"v": 1, "ok": False, "error": "boom"},
    {"v": 1, "ok": False, "error": {"type": "x"}},
    {"v": 1, "ok": False, "error": {**_ERR, "extra": 1}},
    {"v": 1, "ok": False, "error": {"type": "t" * 64, "message": "m" * 2000}},
    {"v": 1, "ok": False, "error": {"type": "t" * 65, "message": "m"}},
    {"v": 1, "ok": False, "error": {"type": "t", "message": "m" * 2001}},
    {"v": 1, "ok": False, "error": {"type": 1, "message": "m"}},
    {"v": 1, "ok": False, "error": {"type": "t", "message": None}},
]


@pytest.mark.parametrize("env", _ENVELOPES, ids=range(len(_ENVELOPES)))
def test_reply_envelope_fast_path_agrees_with_the_schema(env):
    from console_common.proto.bus.messages import ReplySchema
    from console_common.proto.bus.protocol import _plain_envelope

    kind, loaded = _schema_load(ReplySchema(), env)
    if _plain_envelope(env):  # accepted by hand: the schema accepts it, unchanged
        assert kind == "ok"
        assert {k: v for k, v in loaded.items() if v is not None} == \
            {k: v for k, v in env.items() if v is not None}
    raw = json.dumps(env).encode()
    if kind == "error":
        with pytest.raises(BusProtocolError, match="bad reply to ping"):
            decode_reply(raw, "ping")
    elif not loaded["ok"]:
        with pytest.raises(RemoteError) as err:
            decode_reply(raw, "ping")
        assert err.value.type == loaded["error"]["type"]
    else:
        with pytest.raises(BusProtocolError, match="bad result of ping"):
            decode_reply(raw, "ping")  # {} is not a ping result: the schema still runs


def test_encode_request_checks_argument_names():
    with pytest.raises(BadRequest, match="missing: token"):
        encode_request("check_token", {})
    with pytest.raises(BadRequest, match="unknown: extra"):
        encode_request("check_token", {"token": TOKEN, "extra": 1})
    with pytest.raises(BadRequest, match="missing: console_type"):
        encode_request("authorize_console", {"host": "h", "port": 1, "instance_uuid": "u"})
    # optional arguments left None are dropped, not sent
    raw = encode_request("authorize_console", {"console_type": "novnc", "host": "h", "port": 1,
                                               "instance_uuid": "u", "token": None})
    assert "token" not in json.loads(raw)["args"]
    # values are the server's to check: it loads every request through the schema
    raw = encode_request("check_token", {"token": ""})
    with pytest.raises(BadRequest, match="token"):
        decode_request(raw)


@pytest.mark.parametrize("obj", [
    {"v": 1, "method": "check_token", "args": {"token": TOKEN}},
    {"v": 1, "id": "x", "method": "check_token", "args": {"token": TOKEN}},
    {"v": 1, "id": None, "method": "check_token", "args": {"token": "t"}},
    {"v": True, "method": "check_token", "args": {"token": TOKEN}},
    {"v": 1, "method": "check_token", "args": {"token": ""}},
    {"v": 1, "method": "check_token", "args": {"token": "x" * 257}},
    {"v": 1, "method": "check_token", "args": {"token": 5}},
    {"v": 1, "method": "check_token", "args": {"token": TOKEN, "x": 1}},
    {"v": 1, "id": 7, "method": "check_token", "args": {"token": TOKEN}},
    {"v": 1, "id": "i" * 65, "method": "check_token", "args": {"token": TOKEN}},
    {"v": 1, "method": "check_token", "args": [TOKEN]},
    {"v": 1, "method": "check_token", "args": {"token": TOKEN}, "extra": 1},
])
def test_check_token_fast_path_agrees_with_schema(obj):
    """The hand-checked hot path accepts exactly what the schemas accept."""
    from console_common.proto.bus import protocol

    assert_fast_request_agrees(obj, "check_token", protocol._plain_check_token)


def assert_fast_request_agrees(obj, method, fast_decode):
    from console_common.proto.bus import protocol

    raw = json.dumps(obj).encode()
    fast = fast_decode(json.loads(raw), None)
    try:
        env = protocol._REQUEST.load(json.loads(raw))
        args = protocol.METHODS[method][0].load(env["args"])
        slow = protocol.Request(method, args, env["id"])
    except Exception:
        slow = None
    if fast is not None:
        assert fast == slow
    assert decode_or_none(raw) == slow


def decode_or_none(raw: bytes):
    try:
        return decode_request(raw)
    except RemoteError:
        return None


def test_connect_info_fast_encoding_matches_schema_dump():
    from console_common.proto.bus.messages import METHODS as M

    info = ConnectInfo("xvpvnc", "h", 5901, "u", 2.5, "/p")
    fast = json.loads(encode_result("check_token", info, "i"))["result"]
    assert fast == M["check_token"][1].dump(info.__dict__ if hasattr(info, "__dict__") else
                                            {f: getattr(info, f) for f in fast})


# --- check_tokens (many checks in one message) ----------------------------------------------

@pytest.mark.parametrize("obj", [
    {"v": 1, "method": "check_tokens", "args": {"tokens": [TOKEN]}},
    {"v": 1, "id": "x", "method": "check_tokens", "args": {"tokens": [TOKEN, "t" * 256]}},
    {"v": 1, "method": "check_tokens", "args": {"tokens": [TOKEN] * 64}},
    {"v": 1, "method": "check_tokens", "args": {"tokens": [TOKEN] * 65}},
    {"v": 1, "method": "check_tokens", "args": {"tokens": []}},
    {"v": 1, "method": "check_tokens", "args": {"tokens": [TOKEN, ""]}},
    {"v": 1, "method": "check_tokens", "args": {"tokens": [TOKEN, 5]}},
    {"v": 1, "method": "check_tokens", "args": {"tokens": TOKEN}},
    {"v": 1, "method": "check_tokens", "args": {"tokens": [TOKEN], "x": 1}},
    {"v": 2, "method": "check_tokens", "args": {"tokens": [TOKEN]}},
])
def test_check_tokens_fast_path_agrees_with_schema(obj):
    from console_common.proto.bus import protocol

    assert_fast_request_agrees(obj, "check_tokens", protocol._plain_check_tokens)


_ITEM_OK = {"ok": True, "result": _INFO}
_ITEM_ERR = {"ok": False, "error": {"type": "InvalidToken", "message": "invalid or expired"}}


@pytest.mark.parametrize("obj", [
    {"results": [_ITEM_OK, _ITEM_ERR]},
    {"results": []},
    {"results": [_ITEM_OK] * 65},
    {"results": [{"ok": True, "result": None}]},
    {"results": [{"ok": True, "result": _INFO, "error": None}]},
    {"results": [{"ok": False, "error": {"type": "X"}}]},
    {"results": [{"ok": False, "result": _INFO}]},
    {"results": [{"ok": 1, "result": _INFO}]},
    {"results": [{"ok": True, "result": {**_INFO, "port": "5900"}}]},
    {"results": _ITEM_OK},
    {"results": [_ITEM_OK], "more": 1},
])
def test_fast_check_tokens_result_accepts_only_what_the_schema_accepts(obj):
    from console_common.proto.bus.messages import METHODS as M
    from console_common.proto.bus.messages import fast_check_tokens

    fast = fast_check_tokens(obj)
    try:
        slow = M["check_tokens"][1].load(obj)
    except ValidationError:
        slow = None
    if fast is not None:  # the fast path may pass (None) but never disagree
        assert fast == slow


def test_check_tokens_result_encoding_round_trips():
    from console_common.proto.bus.errors import InvalidToken
    from console_common.proto.bus.messages import CheckTokensResult

    info = ConnectInfo("novnc", "10.0.0.1", 5900, "u-1", 1.5, None)
    raw = encode_result("check_tokens", CheckTokensResult((info, InvalidToken("gone"))), "i")
    items = decode_reply(raw, "check_tokens", "i")
    assert items == [{"ok": True, "result": info, "error": None},
                     {"ok": False, "result": None,
                      "error": {"type": "InvalidToken", "message": "gone"}}]


def test_connect_info_fields_are_declared_once_and_derived():
    from dataclasses import fields

    from console_common.proto.bus.messages import (ORIGIN_FIELDS, AuthorizeArgs,
                                                   AuthorizeArgsSchema, ConnectInfoSchema)
    from consoleauth.stores import TokenRecord

    info = [f.name for f in fields(ConnectInfo)]
    origin = [name for name, *_ in ORIGIN_FIELDS]
    assert list(ConnectInfoSchema().fields) == info
    authorize = [name for name in info if name != "expires_at"] + ["token", *origin]
    assert [f.name for f in fields(AuthorizeArgs)] == authorize
    assert list(AuthorizeArgsSchema().fields) == authorize
    assert [f.name for f in fields(TokenRecord)] == info + origin
    # the rules travel with the fields: AuthorizeArgs refuses what ConnectInfo refuses
    args = AuthorizeArgsSchema().load({"console_type": "novnc", "host": "h", "port": 5900,
                                       "instance_uuid": "u", "compute_url": "tcp://c:1"})
    assert args == AuthorizeArgs(console_type="novnc", host="h", port=5900, instance_uuid="u",
                                 compute_url="tcp://c:1")
    with pytest.raises(ValidationError, match="port"):
        AuthorizeArgsSchema().load({"console_type": "novnc", "host": "h", "port": 0,
                                    "instance_uuid": "u"})
    with pytest.raises(ValidationError, match="expires_at"):
        AuthorizeArgsSchema().load({"console_type": "novnc", "host": "h", "port": 1,
                                    "instance_uuid": "u", "expires_at": 1.0})
    record = TokenRecord.authorized(args, 2.5)
    assert isinstance(record, ConnectInfo) and record.compute_url == "tcp://c:1"
    assert record.connect_info() == ConnectInfo("novnc", "h", 5900, "u", 2.5, None)


@pytest.mark.parametrize("data, message", [
    (b"xx", "not JSON"), (b"[1]", "not a JSON object"), (b'{"v": 2}', "version 1"),
    (b'{"v": 1, "epoch": "", "head": 1}', "lacks epoch"),
    (b'{"v": 1, "epoch": "e", "head": -1}', "lacks epoch"),
    (b'{"v": 1, "epoch": "e", "head": 1, "event": {"seq": 0, "kind": "revoke", "at": 1.0}}',
     "bad event"),
    (b'{"v": 1, "epoch": "e", "head": 1, "event": {"seq": 1, "kind": "nuke", "at": 1.0}}',
     "bad event"),
    (b"{" + b" " * 70000 + b"}", "exceeds"),
])
def test_published_events_refuse_garbage_with_a_clear_error(data: bytes, message: str) -> None:
    from console_common.proto.bus.events import decode_published

    with pytest.raises(BusProtocolError, match=message):
        decode_published(data)


def test_published_events_round_trip() -> None:
    from console_common.proto.bus.events import decode_published, encode_published

    event = {"seq": 4, "kind": "disconnect", "at": 2.5, "instance_uuid": None,
             "token_hash": None, "session_ids": ["abc"], "client": "10.0.0.1"}
    got = decode_published(encode_published("ep", 4, event))
    assert (got.epoch, got.head, got.event) == ("ep", 4, event)
    assert decode_published(encode_published("ep", 9)).event is None
