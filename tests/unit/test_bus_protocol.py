"""Bus envelope and schemas, pure: encode/decode both ways, every refusal typed."""

from __future__ import annotations

import json

import pytest

from console_common.bus.errors import (BadRequest, BusProtocolError, InvalidToken, RemoteError,
                                       UnknownMethod)
from console_common.bus.messages import CheckTokenArgs, ConnectInfo
from console_common.bus.protocol import (MAX_MESSAGE, decode_reply, decode_request, encode_error,
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
