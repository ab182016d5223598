"""Fuzzing the bus message decoders (proto/bus/protocol.py, proto/bus/events.py).

A server decodes any bytes to a ``Request`` or raises a ``RemoteError`` (the error reply
it sends: BadRequest, UnknownMethod); a client decodes any reply to a result or raises
``BusProtocolError``/``RemoteError``; a subscriber decodes any published message to
``Published`` or ``BusProtocolError``. Nothing else escapes, and ``request_id`` (the id
echoed on an error reply) never raises.
"""

from __future__ import annotations

import json

from console_common.proto.bus.errors import BusProtocolError, RemoteError
from console_common.proto.bus.events import Published, decode_published, encode_published
from console_common.proto.bus.messages import METHODS
from console_common.proto.bus.protocol import (
    MAX_MESSAGE,
    Request,
    decode_reply,
    decode_request,
    encode_error,
    encode_request,
    request_id,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import inputs

TOKEN = "0123456789abcdef0123456789abcdef-_x"
INFO = {"console_type": "novnc", "host": "127.0.0.1", "port": 5900,
        "internal_access_path": None, "instance_uuid": "vm-1", "expires_at": 1.7e9}
REQUESTS = [
    encode_request("check_token", {"token": TOKEN}, id="r1", budget_ms=900),
    encode_request("check_token", {"token": TOKEN}),
    encode_request("check_tokens", {"tokens": [TOKEN, TOKEN[::-1]]}, id="r2"),
    encode_request("authorize_console", {"token": TOKEN, "console_type": "novnc",
                                         "host": "10.0.0.1", "port": 5901,
                                         "instance_uuid": "vm-1",
                                         "internal_access_path": "/x"}),
    encode_request("delete_tokens_for_instance", {"instance_uuid": "vm-1"}),
    encode_request("ping"),
    encode_request("events_since", {"epoch": "e1", "seq": 3}),
]
REPLIES = [
    json.dumps({"v": 1, "id": "r1", "ok": True, "result": INFO}).encode(),
    json.dumps({"v": 1, "id": None, "ok": True, "result": {"token": TOKEN,
                                                            "expires_at": 1.7e9}}).encode(),
    encode_error("InvalidToken", "invalid or expired token", id="r1"),
    json.dumps({"v": 1, "ok": True, "result": {"results": [INFO, {"error": {
        "type": "InvalidToken", "message": "x"}}]}}).encode(),
]
PUBLISHED = [
    encode_published("9f2c", 42),
    encode_published("9f2c", 43, {"seq": 43, "kind": "revoke", "token_id": "abc"}),
]

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=5),
    max_leaves=12,
)
_KEYS = st.sampled_from(["v", "id", "method", "args", "budget_ms", "ok", "result", "error",
                         "token", "tokens", "epoch", "head", "event", "seq", "kind"])


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """Structurally plausible JSON: known keys, wrong or odd values."""
    obj = {k: draw(_JSON) for k in draw(st.lists(_KEYS, max_size=6, unique=True))}
    if draw(st.booleans()):
        obj["v"] = 1
    if draw(st.booleans()):
        obj["method"] = draw(st.sampled_from(sorted(METHODS)))
        obj["args"] = {k: draw(_JSON) for k in draw(st.lists(
            st.sampled_from(["token", "tokens", "host", "port", "console_type", "instance_uuid",
                             "internal_access_path", "epoch", "seq"]), max_size=4, unique=True))}
    return json.dumps(obj).encode()


def _bytes(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(inputs(seeds), envelopes(),
                     st.just(b'{"a":' * 5000), st.just(b"[" * 60_000),  # deep nesting
                     st.just(b'{"v":1,"pad":"' + b"x" * MAX_MESSAGE + b'"}'),
                     st.binary(max_size=64).map(lambda b: b"\xff\xfe" + b))


@given(_bytes(REQUESTS))
def test_request_decoder(data: bytes) -> None:
    try:
        request = decode_request(data)
    except RemoteError as exc:
        assert exc.type in ("BadRequest", "UnknownMethod") and str(exc)
        assert len(str(exc)) < 4 * MAX_MESSAGE
    else:
        assert isinstance(request, Request) and request.method in METHODS
    rid = request_id(data)
    assert rid is None or isinstance(rid, str)


@given(st.sampled_from(sorted(METHODS)), st.booleans(), st.data())
def test_reply_and_published_decoders(method: str, published: bool,
                                      data: st.DataObject) -> None:
    if published:
        raw = data.draw(_bytes(PUBLISHED))
        try:
            assert isinstance(decode_published(raw), Published)
        except BusProtocolError as exc:
            assert str(exc)
        return
    raw = data.draw(_bytes(REPLIES))
    try:
        decode_reply(raw, method, data.draw(st.sampled_from([None, "r1"])))
    except (BusProtocolError, RemoteError) as exc:
        assert str(exc)
