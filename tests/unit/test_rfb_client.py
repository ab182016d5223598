"""RFB client role: handshakes, security choice, and server messages.

Every input is fed whole, byte by byte and with trailing bytes (h11's ``tr`` style).
"""

from __future__ import annotations

import struct

import pytest
from console_common.proto.rfb import (
    BGRX32,
    ENCODING_COPY_RECT,
    ENCODING_CURSOR,
    ENCODING_DESKTOP_SIZE,
    ENCODING_EXTENDED_DESKTOP_SIZE,
    ENCODING_LAST_RECT,
    ENCODING_RAW,
    NEED_DATA,
    RGB565,
    AuthResult,
    Bell,
    ClientCutText,
    ClientState,
    ConnectionClosed,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    KeyEvent,
    PointerEvent,
    ProtocolVersion,
    Rectangle,
    RFBAuthError,
    RFBClientConnection,
    RFBLocalError,
    RFBProtocolError,
    SecurityTypes,
    ServerCutText,
    ServerInit,
    SetColourMapEntries,
    SetEncodings,
    SetPixelFormat,
    vnc_des_response,
)

CHALLENGE = bytes(range(16))
PASSWORD = b"secret"
RESPONSE = vnc_des_response(PASSWORD, CHALLENGE)
OK, FAILED = b"\0\0\0\0", b"\0\0\0\x01"
V38, V37, V33 = b"RFB 003.008\n", b"RFB 003.007\n", b"RFB 003.003\n"
SERVER_INIT_BYTES = struct.pack(">HH", 8, 4) + BGRX32.pack() + b"\0\0\0\x04desk"
SERVER_INIT = ServerInit(8, 4, BGRX32, "desk")


def run(conn: RFBClientConnection, chunks: list[bytes]) -> tuple[list, bytes]:
    events, out = [], bytearray()
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                break
        out += conn.data_to_send()
    return events, bytes(out)


def tr(make, data: bytes, expected_events: list, expected_out: bytes, trailing: bytes | None):
    conn = make()
    assert run(conn, [data]) == (expected_events, expected_out)
    conn = make()
    assert run(conn, [data[i : i + 1] for i in range(len(data))]) == (expected_events, expected_out)
    if trailing is not None:
        conn = make()
        assert run(conn, [data + trailing]) == (expected_events, expected_out)
        assert conn.trailing_data == (trailing, False)
    return conn


@pytest.mark.parametrize(
    ("server_bytes", "password", "events", "out"),
    [
        pytest.param(
            V38 + b"\x01\x01" + OK + SERVER_INIT_BYTES,
            None,
            [ProtocolVersion(3, 8), SecurityTypes((1,)), AuthResult(True), SERVER_INIT],
            V38 + b"\x01\x01",
            id="3.8-none",
        ),
        pytest.param(
            V37 + b"\x01\x01" + SERVER_INIT_BYTES,
            None,
            [ProtocolVersion(3, 7), SecurityTypes((1,)), AuthResult(True), SERVER_INIT],
            V37 + b"\x01\x01",
            id="3.7-none",
        ),
        pytest.param(
            V33 + b"\0\0\0\x01" + SERVER_INIT_BYTES,
            None,
            [ProtocolVersion(3, 3), SecurityTypes((1,)), AuthResult(True), SERVER_INIT],
            V33 + b"\x01",
            id="3.3-none",
        ),
        pytest.param(
            b"RFB 003.889\n" + b"\0\0\0\x01" + SERVER_INIT_BYTES,
            None,
            [ProtocolVersion(3, 889), SecurityTypes((1,)), AuthResult(True), SERVER_INIT],
            V33 + b"\x01",
            id="apple-3.889-as-3.3",
        ),
        pytest.param(
            V38 + b"\x01\x02" + CHALLENGE + OK + SERVER_INIT_BYTES,
            PASSWORD,
            [ProtocolVersion(3, 8), SecurityTypes((2,)), AuthResult(True), SERVER_INIT],
            V38 + b"\x02" + RESPONSE + b"\x01",
            id="3.8-vncauth",
        ),
        pytest.param(
            V37 + b"\x01\x02" + CHALLENGE + OK + SERVER_INIT_BYTES,
            PASSWORD,
            [ProtocolVersion(3, 7), SecurityTypes((2,)), AuthResult(True), SERVER_INIT],
            V37 + b"\x02" + RESPONSE + b"\x01",
            id="3.7-vncauth",
        ),
        pytest.param(
            V33 + b"\0\0\0\x02" + CHALLENGE + OK + SERVER_INIT_BYTES,
            PASSWORD,
            [ProtocolVersion(3, 3), SecurityTypes((2,)), AuthResult(True), SERVER_INIT],
            V33 + RESPONSE + b"\x01",
            id="3.3-vncauth",
        ),
        pytest.param(
            V38 + b"\x03\x10\x02\x01" + CHALLENGE + OK + SERVER_INIT_BYTES,
            PASSWORD,
            [ProtocolVersion(3, 8), SecurityTypes((16, 2, 1)), AuthResult(True), SERVER_INIT],
            V38 + b"\x02" + RESPONSE + b"\x01",
            id="first-possible-in-server-order-with-password",
        ),
        pytest.param(
            V38 + b"\x03\x10\x02\x01" + OK + SERVER_INIT_BYTES,
            None,
            [ProtocolVersion(3, 8), SecurityTypes((16, 2, 1)), AuthResult(True), SERVER_INIT],
            V38 + b"\x01\x01",
            id="first-possible-in-server-order-without-password",
        ),
        pytest.param(
            b"RFB 004.001\n" + b"\0\0\0\x01" + SERVER_INIT_BYTES,
            None,
            [ProtocolVersion(4, 1), SecurityTypes((1,)), AuthResult(True), SERVER_INIT],
            V33 + b"\x01",
            id="unknown-4.1-as-3.3",
        ),
    ],
)
def test_handshake(server_bytes: bytes, password: bytes | None, events: list, out: bytes) -> None:
    conn = tr(lambda: RFBClientConnection(password), server_bytes, events, out, b"\x00\x00\x00")
    assert conn.state is ClientState.NORMAL
    assert (conn.width, conn.height, conn.name, conn.pixel_format) == (8, 4, "desk", BGRX32)


def test_shared_flag_is_sent() -> None:
    conn = RFBClientConnection(shared=False)
    assert run(conn, [V38 + b"\x01\x01" + OK])[1] == V38 + b"\x01\x00"


@pytest.mark.parametrize(
    ("server_bytes", "password", "reason"),
    [
        (
            V38 + b"\x01\x02" + CHALLENGE + FAILED + b"\0\0\0\x0bbad passwd!",
            b"wrong",
            "bad passwd!",
        ),
        (V37 + b"\x01\x02" + CHALLENGE + FAILED, b"wrong", "authentication failed"),
        (V33 + b"\0\0\0\x02" + CHALLENGE + FAILED, b"wrong", "authentication failed"),
        (V38 + b"\x00" + b"\0\0\0\x0etoo many tries", None, "too many tries"),
        (V33 + b"\0\0\0\x00" + b"\0\0\0\x04busy", None, "busy"),
    ],
    ids=[
        "3.8-wrong-password",
        "3.7-wrong-password",
        "3.3-wrong-password",
        "3.8-refused",
        "3.3-refused",
    ],
)
def test_refusals(server_bytes: bytes, password: bytes | None, reason: str) -> None:
    def make() -> RFBClientConnection:
        return RFBClientConnection(password)

    conn = make()
    events, _ = run(conn, [server_bytes])
    assert events[-1] == AuthResult(False, reason)
    assert conn.state is ClientState.CLOSED
    conn = make()
    bytewise, _ = run(conn, [server_bytes[i : i + 1] for i in range(len(server_bytes))])
    assert bytewise == events
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()


def test_no_password_for_vnc_auth_is_an_auth_error() -> None:
    conn = RFBClientConnection()
    conn.receive_data(V38 + b"\x01\x02")
    assert conn.next_event() == ProtocolVersion(3, 8)
    with pytest.raises(RFBAuthError, match="no password"):
        conn.next_event()
    conn = RFBClientConnection()
    conn.receive_data(V33 + b"\0\0\0\x02" + CHALLENGE)
    assert conn.next_event() == ProtocolVersion(3, 3)
    with pytest.raises(RFBAuthError, match="no password"):
        conn.next_event()


def test_unsupported_security_types_only() -> None:
    conn = RFBClientConnection(PASSWORD)
    conn.receive_data(V38 + b"\x02\x10\x13")
    conn.next_event()
    with pytest.raises(RFBAuthError, match="Tight, VeNCrypt"):
        conn.next_event()


def test_garbage_from_the_server() -> None:
    conn = RFBClientConnection()
    conn.receive_data(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(RFBProtocolError, match="not an RFB peer"):
        conn.next_event()
    with pytest.raises(RFBProtocolError, match="error state"):
        conn.next_event()


def normal(password: bytes | None = None, **kw) -> RFBClientConnection:
    conn = RFBClientConnection(password, **kw)
    run(conn, [V38 + b"\x01\x01" + OK + SERVER_INIT_BYTES])
    assert conn.state is ClientState.NORMAL
    return conn


def rect(x: int, y: int, w: int, h: int, encoding: int, data: bytes = b"") -> bytes:
    return struct.pack(">HHHHi", x, y, w, h, encoding) + data


RAW = bytes(range(2 * 3 * 4))
CURSOR = bytes(2 * 2 * 4) + b"\xc0\x80"
SERVER_MESSAGES = (
    b"\x00\x00\x00\x04"
    + rect(1, 1, 2, 3, ENCODING_RAW, RAW)
    + rect(0, 0, 2, 2, ENCODING_COPY_RECT, b"\x00\x04\x00\x01")
    + rect(0, 0, 2, 2, ENCODING_CURSOR, CURSOR)
    + rect(0, 0, 10, 6, ENCODING_DESKTOP_SIZE)
    + b"\x02"
    + b"\x01\x00\x00\x05\x00\x02"
    + b"\xff\xff\x00\x00\x00\x00"
    + b"\x00\x00\x00\x00\xff\xff"
    + b"\x03\x00\x00\x00\x00\x00\x00\x03abc"
    + b"\x00\x00\x00\x00"  # an empty update
)
SERVER_EVENTS = [
    FramebufferUpdate(
        (
            Rectangle(1, 1, 2, 3, ENCODING_RAW, RAW),
            Rectangle(0, 0, 2, 2, ENCODING_COPY_RECT, b"\x00\x04\x00\x01"),
            Rectangle(0, 0, 2, 2, ENCODING_CURSOR, CURSOR),
            Rectangle(0, 0, 10, 6, ENCODING_DESKTOP_SIZE),
        )
    ),
    Bell(),
    SetColourMapEntries(5, ((0xFFFF, 0, 0), (0, 0, 0xFFFF))),
    ServerCutText(b"abc"),
    FramebufferUpdate(()),
]


def test_server_messages_whole_byte_by_byte_and_trailing() -> None:
    conn = tr(normal, SERVER_MESSAGES, SERVER_EVENTS, b"", trailing=b"\x03\x00\x00\x00\x00")
    assert (conn.width, conn.height) == (10, 6)  # DesktopSize resized the framebuffer
    assert SERVER_EVENTS[0].rects[1].copy_source == (4, 1)


def test_set_pixel_format_changes_the_raw_size() -> None:
    conn = normal()
    assert conn.send(SetPixelFormat(RGB565)) == b"\x00\x00\x00\x00" + RGB565.pack()
    data = b"\x00\x00\x00\x01" + rect(0, 0, 2, 2, ENCODING_RAW, b"\x01" * 8)
    assert run(conn, [data])[0] == [FramebufferUpdate((Rectangle(0, 0, 2, 2, 0, b"\x01" * 8),))]


def test_last_rect_ends_an_update_of_unknown_length() -> None:
    data = b"\x00\x00\xff\xff" + rect(0, 0, 1, 1, ENCODING_RAW, b"\x01\x02\x03\x00")
    data += rect(0, 0, 0, 0, ENCODING_LAST_RECT) + b"\x02"
    events = tr(
        normal,
        data,
        [FramebufferUpdate((Rectangle(0, 0, 1, 1, 0, b"\x01\x02\x03\x00"),)), Bell()],
        b"",
        trailing=b"\x00",
    )
    assert events.state is ClientState.NORMAL


def test_extended_desktop_size() -> None:
    screen = struct.pack(">IHHHHI", 1, 0, 0, 16, 8, 0)
    payload = b"\x01\x00\x00\x00" + screen
    data = b"\x00\x00\x00\x01" + rect(0, 0, 16, 8, ENCODING_EXTENDED_DESKTOP_SIZE, payload)
    conn = tr(
        normal,
        data,
        [FramebufferUpdate((Rectangle(0, 0, 16, 8, ENCODING_EXTENDED_DESKTOP_SIZE, payload),))],
        b"",
        trailing=b"\x00",
    )
    assert (conn.width, conn.height) == (16, 8)


def test_unknown_encoding_is_a_clear_error() -> None:
    conn = normal()
    conn.receive_data(b"\x00\x00\x00\x01" + rect(0, 0, 2, 2, 5))  # Hextile, never asked for
    with pytest.raises(RFBProtocolError, match="unsupported encoding 5"):
        conn.next_event()


def test_rect_outside_the_framebuffer_is_refused() -> None:
    conn = normal()
    conn.receive_data(b"\x00\x00\x00\x01" + rect(7, 0, 2, 1, ENCODING_RAW))
    with pytest.raises(RFBProtocolError, match="outside the 8x4 framebuffer"):
        conn.next_event()


def test_rect_cap_is_checked_from_the_header() -> None:
    conn = normal(max_rect_bytes=31)
    conn.receive_data(b"\x00\x00\x00\x01" + rect(0, 0, 8, 1, ENCODING_RAW))  # 32 bytes
    with pytest.raises(RFBProtocolError, match="32 bytes exceeds the 31-byte cap"):
        conn.next_event()


def test_server_cut_text_cap_plus_one_is_refused_from_the_header() -> None:
    conn = normal(max_cut_text=10)
    conn.receive_data(b"\x03\x00\x00\x00\x00\x00\x00\x0b")
    with pytest.raises(RFBProtocolError, match="11 bytes exceeds 10"):
        conn.next_event()


@pytest.mark.parametrize(
    "partial",
    [
        b"\x00\x00",
        b"\x00\x00\x00\x01",
        b"\x00\x00\x00\x01" + rect(0, 0, 2, 2, 0, b"\0" * 15),
        b"\x03\x00\x00\x00\x00\x00\x00\x03ab",
    ],
)
def test_eof_mid_message_is_an_error(partial: bytes) -> None:
    conn = normal()
    conn.receive_data(partial)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(RFBProtocolError, match="middle of a message"):
        conn.next_event()


def test_clean_eof_between_messages() -> None:
    conn = normal()
    conn.receive_data(b"\x02")
    conn.receive_data(b"")
    assert conn.next_event() == Bell()
    assert conn.next_event() == ConnectionClosed()


@pytest.mark.parametrize("kind", [4, 99, 255])
def test_unknown_server_message_type(kind: int) -> None:
    conn = normal()
    conn.receive_data(bytes([kind, 0, 0, 0]))
    with pytest.raises(RFBProtocolError, match=f"unknown server message type {kind}"):
        conn.next_event()


def test_client_message_encoders() -> None:
    conn = normal()
    assert conn.send(SetEncodings((0, 1, -239))) == b"\x02\x00\x00\x03" + struct.pack(
        ">iii", 0, 1, -239
    )
    assert conn.send(FramebufferUpdateRequest(False, 1, 2, 3, 4)) == (
        b"\x03\x00\x00\x01\x00\x02\x00\x03\x00\x04"
    )
    assert conn.send(KeyEvent(False, 0x61)) == b"\x04\x00\x00\x00\x00\x00\x00\x61"
    assert conn.send(PointerEvent(1, 300, 2)) == b"\x05\x01\x01\x2c\x00\x02"
    assert conn.send(ClientCutText(b"xy")) == b"\x06\x00\x00\x00\x00\x00\x00\x02xy"
    with pytest.raises(RFBLocalError, match="not a client message"):
        conn.send(Bell())
    with pytest.raises(RFBLocalError, match="version phase"):
        RFBClientConnection().send(KeyEvent(True, 1))
