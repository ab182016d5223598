"""RFC 6455 opening handshake: console_common.proto.websocket.handshake (sans-I/O, no sockets)."""

from __future__ import annotations

import pytest
from console_common.proto.httphead import NEED_DATA as HEAD_NEED_DATA
from console_common.proto.httphead import HeadReader, StatusReader, render_head
from console_common.proto.websocket import (
    NEED_DATA,
    Accept,
    Data,
    FrameReader,
    HandshakeError,
    Refusal,
    accept_key,
    check_client_response,
    client_key,
    client_request,
    encode_binary,
    server_handshake,
)
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.frames import Opcode as WsOpcode
from websockets.http11 import Response as WsResponse
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def request_headers(**overrides: str | None) -> list[tuple[str, str]]:
    """A valid noVNC-like upgrade request's headers; ``name=None`` drops one."""
    base = {
        "Host": "proxy.example.com:6080",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": RFC_KEY,
        "Sec-WebSocket-Version": "13",
        "Origin": "http://proxy.example.com:6080",
    }
    for name, value in overrides.items():
        base[name.replace("_", "-")] = value  # type: ignore[assignment]
    return [(name, value) for name, value in base.items() if value is not None]


def test_rfc_accept_key() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_accepts_a_client_offering_no_subprotocol() -> None:
    verdict = server_handshake("GET", "/websockify?token=abc", request_headers())
    assert verdict == Accept(
        (("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", RFC_ACCEPT)),
        None,
    )


@pytest.mark.parametrize("offer", ["binary", "base64, binary", "binary,base64", " binary "])
def test_accepts_binary_when_offered(offer: str) -> None:
    verdict = server_handshake("GET", "/", request_headers(Sec_WebSocket_Protocol=offer))
    assert isinstance(verdict, Accept)
    assert verdict.subprotocol == "binary"
    assert ("Sec-WebSocket-Protocol", "binary") in verdict.headers


@pytest.mark.parametrize("offer", ["base64", "binaryx", "xbinary", "Binary", "chat, superchat"])
def test_refuses_offers_without_binary_exactly(offer: str) -> None:
    verdict = server_handshake("GET", "/", request_headers(Sec_WebSocket_Protocol=offer))
    assert isinstance(verdict, Refusal)
    assert verdict.status == 400
    assert "subprotocol" in verdict.reason


def test_offer_split_over_several_header_lines() -> None:
    headers = request_headers() + [
        ("Sec-WebSocket-Protocol", "base64"),
        ("sec-websocket-protocol", "binary"),
    ]
    verdict = server_handshake("GET", "/", headers)
    assert isinstance(verdict, Accept) and verdict.subprotocol == "binary"


def test_rfc_example_request_with_our_own_subprotocol_table() -> None:
    headers = {
        "Host": "server.example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": RFC_KEY,
        "Origin": "http://example.com",
        "Sec-WebSocket-Protocol": "chat, superchat",
        "Sec-WebSocket-Version": "13",
    }
    verdict = server_handshake("GET", "/chat", headers, supported=("superchat", "chat"))
    assert isinstance(verdict, Accept)
    assert verdict.subprotocol == "superchat"  # the server's preference order
    assert ("Sec-WebSocket-Accept", RFC_ACCEPT) in verdict.headers


def test_header_names_and_tokens_are_case_insensitive() -> None:
    headers = [
        ("HOST", "h"),
        ("upgrade", "WebSocket"),
        ("CONNECTION", "keep-alive, UPGRADE"),
        ("sec-websocket-key", RFC_KEY),
        ("Sec-Websocket-Version", "13"),
    ]
    assert isinstance(server_handshake("GET", "/", headers), Accept)


def test_method_other_than_get_is_405() -> None:
    for method in ("POST", "HEAD", "CONNECT", "get"):
        verdict = server_handshake(method, "/", request_headers())
        assert verdict == Refusal(405, "WebSocket upgrade needs GET", (("Allow", "GET"),))


@pytest.mark.parametrize(
    "overrides",
    [
        {"Upgrade": None},
        {"Upgrade": "h2c"},
        {"Upgrade": "websocketx"},
        {"Connection": None},
        {"Connection": "keep-alive"},
        {"Connection": "upgraded"},
        {"Host": None},
        {"Sec_WebSocket_Key": None},
        {"Sec_WebSocket_Key": "not base64!"},
        {"Sec_WebSocket_Key": "AAAAAAAAAAAAAAAAAAAA"},  # decodes to 15 bytes
        {"Sec_WebSocket_Key": "AAAAAAAAAAAAAAAAAAAAAAAAAA=="},  # decodes to 19 bytes
        {"Sec_WebSocket_Key": "é"},
    ],
)
def test_malformed_upgrades_are_400(overrides: dict[str, str | None]) -> None:
    verdict = server_handshake("GET", "/", request_headers(**overrides))
    assert isinstance(verdict, Refusal)
    assert verdict.status == 400


def test_duplicate_key_is_400() -> None:
    headers = request_headers() + [("Sec-WebSocket-Key", RFC_KEY)]
    verdict = server_handshake("GET", "/", headers)
    assert isinstance(verdict, Refusal) and verdict.status == 400


def test_target_must_be_a_path() -> None:
    verdict = server_handshake("GET", "*", request_headers())
    assert isinstance(verdict, Refusal) and verdict.status == 400


@pytest.mark.parametrize("version", [None, "8", "12", "14", "13, 8", "thirteen"])
def test_unsupported_version_is_426_with_our_version(version: str | None) -> None:
    verdict = server_handshake("GET", "/", request_headers(Sec_WebSocket_Version=version))
    assert isinstance(verdict, Refusal)
    assert verdict.status == 426
    assert verdict.headers == (("Sec-WebSocket-Version", "13"),)


# --- client role ----------------------------------------------------------------------


def parsed(request: bytes) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    reader = HeadReader()
    reader.receive_data(request)
    head = reader.next_event()
    assert head is not HEAD_NEED_DATA
    assert reader.trailing_data == b""
    return head.method, head.target, head.headers


def test_client_request_is_accepted_by_our_server() -> None:
    key = client_key(bytes(range(16)))
    request = client_request(
        "proxy:6080",
        "/websockify?token=T",
        key,
        subprotocols=["binary"],
        origin="http://proxy:6080",
        extra_headers=[("Cookie", "token=T")],
    )
    method, target, headers = parsed(request)
    assert (method, target) == ("GET", "/websockify?token=T")
    assert ("cookie", "token=T") in headers and ("origin", "http://proxy:6080") in headers
    verdict = server_handshake(method, target, headers)
    assert isinstance(verdict, Accept)
    assert check_client_response(101, verdict.headers, key, offered=["binary"]) == "binary"


def test_client_request_without_subprotocol() -> None:
    key = client_key(b"k" * 16)
    verdict = server_handshake(*parsed(client_request("h", "/", key)))
    assert isinstance(verdict, Accept)
    assert check_client_response(101, dict(verdict.headers), key) is None


def test_client_request_refuses_header_injection() -> None:
    key = client_key(bytes(16))
    with pytest.raises(ValueError):
        client_request("h", "/", key, extra_headers=[("X-A", "1\r\nX-B: 2")])
    with pytest.raises(ValueError):
        client_request("h\r\n", "/", key)
    with pytest.raises(ValueError):
        client_key(bytes(15))


def test_client_rejects_bad_answers() -> None:
    key = client_key(bytes(16))
    good = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(key)),
    ]
    assert check_client_response(101, good, key) is None
    bad_answers = [
        (403, good),
        (101, good[1:]),
        (101, [good[0], ("Connection", "close"), good[2]]),
        (101, good[:2] + [("Sec-WebSocket-Accept", RFC_ACCEPT)]),
        (101, good[:2]),
        (101, good + [("Sec-WebSocket-Protocol", "base64")]),
        (101, good + [("Sec-WebSocket-Extensions", "permessage-deflate")]),
    ]
    for status, headers in bad_answers:
        with pytest.raises(HandshakeError):
            check_client_response(status, headers, key, offered=["binary"])


# --- interoperability with an independent implementation (websockets, sans-I/O) -------


def test_websockets_client_against_our_server_core() -> None:
    client = ClientProtocol(
        parse_uri("ws://proxy:6080/websockify?token=T"), subprotocols=[Subprotocol("binary")]
    )
    request = client.connect()
    client.send_request(request)
    method, target, headers = parsed(client.data_to_send()[0])
    verdict = server_handshake(method, target, headers)
    assert isinstance(verdict, Accept) and verdict.subprotocol == "binary"
    client.receive_data(render_head(verdict.status, verdict.reason, verdict.headers))
    (response,) = client.events_received()
    assert isinstance(response, WsResponse) and response.status_code == 101
    assert client.handshake_exc is None and client.subprotocol == "binary"

    client.send_binary(b"\x03\x00\x00\x0a" * 1000)  # masked, by websockets
    client.send_text("héllo".encode(), fin=False)
    client.send_continuation(" wörld".encode(), fin=True)
    reader, chunks = FrameReader("server"), []
    for data in client.data_to_send():
        reader.receive_data(data)
        while (event := reader.next_event()) is not NEED_DATA:
            assert isinstance(event, Data)
            chunks.append(event)
    assert b"".join(c.payload for c in chunks if not c.is_text) == b"\x03\x00\x00\x0a" * 1000
    assert b"".join(c.payload for c in chunks if c.is_text) == "héllo wörld".encode()

    client.receive_data(encode_binary(b"RFB 003.008\n"))
    (frame,) = client.events_received()
    assert isinstance(frame, Frame)
    assert (frame.opcode, frame.data) == (WsOpcode.BINARY, b"RFB 003.008\n")


def test_our_client_against_websockets_server() -> None:
    server = ServerProtocol(subprotocols=[Subprotocol("binary")])
    key = client_key(bytes(range(100, 116)))
    server.receive_data(client_request("h", "/x", key, subprotocols=["binary"]))
    (request,) = server.events_received()
    server.send_response(server.accept(request))
    reader = StatusReader()
    reader.receive_data(server.data_to_send()[0])
    response = reader.next_event()
    assert response is not HEAD_NEED_DATA
    assert check_client_response(response.status, response.headers, key, ["binary"]) == "binary"
