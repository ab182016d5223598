"""RFB server role: handshakes (3.3, 3.7, 3.8; None and VNC auth) and client messages.

Every input is fed whole, byte by byte and with trailing bytes (h11's ``tr`` style).
"""

from __future__ import annotations

import struct

import pytest
from console_common.proto.rfb import (
    BGRX32,
    ENCODING_COPY_RECT,
    ENCODING_DESKTOP_SIZE,
    ENCODING_RAW,
    NEED_DATA,
    RGB565,
    AuthResult,
    Bell,
    ClientCutText,
    ClientInit,
    ConnectionClosed,
    ExtendedClientMessage,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    KeyEvent,
    PointerEvent,
    ProtocolVersion,
    Rectangle,
    RFBAuthError,
    RFBLocalError,
    RFBProtocolError,
    RFBServerConnection,
    SecurityChosen,
    ServerCutText,
    ServerState,
    SetColourMapEntries,
    SetEncodings,
    SetPixelFormat,
    vnc_des_response,
)

CHALLENGE = bytes(range(16))
PASSWORD = b"secret"
U32_OK = b"\0\0\0\0"
SERVER_INIT = (
    struct.pack(">HH", 320, 240)
    + b"\x20\x18\x00\x01\x00\xff\x00\xff\x00\xff\x10\x08\x00\x00\x00\x00"
    + b"\0\0\0\x04desk"
)


def make(**kw) -> RFBServerConnection:
    kw.setdefault("password", None)
    if kw["password"] is not None:
        kw.setdefault("challenge", CHALLENGE)
    return RFBServerConnection("desk", 320, 240, **kw)


def run(conn: RFBServerConnection, chunks: list[bytes]) -> tuple[list, bytes]:
    events, out = [], bytearray(conn.data_to_send())
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                break
        out += conn.data_to_send()
    return events, bytes(out)


def tr(data: bytes, expected_events: list, expected_out: bytes, trailing: bytes | None, **kw):
    """Whole, byte by byte, then with trailing bytes that must stay buffered (unless None)."""
    conn = make(**kw)
    assert run(conn, [data]) == (expected_events, expected_out)
    conn = make(**kw)
    pieces = [data[i : i + 1] for i in range(len(data))]
    assert run(conn, pieces) == (expected_events, expected_out)
    if trailing is not None:
        conn = make(**kw)
        assert run(conn, [data + trailing]) == (expected_events, expected_out)
        assert conn.trailing_data == (trailing, False)
    return conn


V38, V37, V33 = b"RFB 003.008\n", b"RFB 003.007\n", b"RFB 003.003\n"
RESPONSE = vnc_des_response(PASSWORD, CHALLENGE)


@pytest.mark.parametrize(
    ("client_bytes", "events", "out", "kw"),
    [
        pytest.param(
            V38 + b"\x01\x01",
            [ProtocolVersion(3, 8), SecurityChosen(1), AuthResult(True), ClientInit(True)],
            V38 + b"\x01\x01" + U32_OK + SERVER_INIT,
            {},
            id="3.8-none",
        ),
        pytest.param(
            V37 + b"\x01\x00",
            [ProtocolVersion(3, 7), SecurityChosen(1), AuthResult(True), ClientInit(False)],
            V38 + b"\x01\x01" + SERVER_INIT,  # 3.7: no SecurityResult for None
            {},
            id="3.7-none",
        ),
        pytest.param(
            V33 + b"\x01",
            [ProtocolVersion(3, 3), AuthResult(True), ClientInit(True)],
            V38 + b"\0\0\0\x01" + SERVER_INIT,  # 3.3: the server decides, u32
            {},
            id="3.3-none",
        ),
        pytest.param(
            b"RFB 003.889\n" + b"\x01",  # Apple's version: treated as 3.3
            [ProtocolVersion(3, 889), AuthResult(True), ClientInit(True)],
            V38 + b"\0\0\0\x01" + SERVER_INIT,
            {},
            id="apple-3.889-as-3.3",
        ),
        pytest.param(
            V38 + b"\x02" + RESPONSE + b"\x01",
            [ProtocolVersion(3, 8), SecurityChosen(2), AuthResult(True), ClientInit(True)],
            V38 + b"\x01\x02" + CHALLENGE + U32_OK + SERVER_INIT,
            {"password": PASSWORD},
            id="3.8-vncauth",
        ),
        pytest.param(
            V37 + b"\x02" + RESPONSE + b"\x01",
            [ProtocolVersion(3, 7), SecurityChosen(2), AuthResult(True), ClientInit(True)],
            V38 + b"\x01\x02" + CHALLENGE + U32_OK + SERVER_INIT,
            {"password": PASSWORD},
            id="3.7-vncauth",
        ),
        pytest.param(
            V33 + RESPONSE + b"\x01",
            [ProtocolVersion(3, 3), AuthResult(True), ClientInit(True)],
            V38 + b"\0\0\0\x02" + CHALLENGE + U32_OK + SERVER_INIT,
            {"password": PASSWORD},
            id="3.3-vncauth",
        ),
        pytest.param(
            V38 + b"\x01\x01",
            [ProtocolVersion(3, 8), SecurityChosen(1), AuthResult(True), ClientInit(True)],
            V37 + b"\x01\x01" + SERVER_INIT,  # we offer 3.7; a 3.8 client gets 3.7
            {"version": (3, 7)},
            id="offer-3.7",
        ),
    ],
)
def test_handshake(client_bytes: bytes, events: list, out: bytes, kw: dict) -> None:
    conn = tr(client_bytes, events, out, trailing=b"\x04\x01\x00", **kw)
    assert conn.state is ServerState.NORMAL


@pytest.mark.parametrize("version", [V38, V37, V33])
def test_wrong_password_is_refused_and_later_data_ignored(version: bytes) -> None:
    bad = vnc_des_response(b"wrong!", CHALLENGE)
    data = version + (b"" if version == V33 else b"\x02") + bad
    reason = b"\0\0\0\x15authentication failed" if version == V38 else b""
    expected_out = (
        V38
        + (b"\0\0\0\x02" if version == V33 else b"\x01\x02")
        + CHALLENGE
        + b"\0\0\0\x01"
        + reason
    )
    events = [ProtocolVersion(3, int(version[8:11]))]
    events += [] if version == V33 else [SecurityChosen(2)]
    events += [AuthResult(False, "authentication failed")]
    conn = tr(data, events, expected_out, trailing=None, password=PASSWORD)
    assert conn.state is ServerState.CLOSED
    conn.receive_data(b"more junk")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()


def test_password_is_truncated_to_eight_bytes() -> None:
    conn = make(password=b"12345678-ignored")
    data = V38 + b"\x02" + vnc_des_response(b"12345678", CHALLENGE)
    assert run(conn, [data])[0][-1] == AuthResult(True)


def test_vnc_auth_needs_a_challenge() -> None:
    with pytest.raises(ValueError, match="16-byte"):
        RFBServerConnection("d", 1, 1, password=b"x")


def test_security_type_not_offered_is_refused_with_a_reason() -> None:
    conn = make()
    conn.receive_data(V38 + b"\x02")
    assert conn.next_event() == ProtocolVersion(3, 8)
    with pytest.raises(RFBAuthError, match="chose security type 2"):
        conn.next_event()
    assert conn.data_to_send().endswith(b"\0\0\0\x01\0\0\0\x19security type not offered")
    with pytest.raises(RFBProtocolError, match="error state"):
        conn.next_event()


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00", b"RFB 3.8\n\0\0\0\0\0"]
)
def test_garbage_version_is_an_error(garbage: bytes) -> None:
    conn = make()
    conn.receive_data(garbage)
    with pytest.raises(RFBProtocolError):
        conn.next_event()
    assert conn.state is ServerState.ERROR


def test_garbage_is_refused_before_twelve_bytes() -> None:
    conn = make()
    conn.receive_data(b"\x16\x03")  # a TLS hello on the plain port
    with pytest.raises(RFBProtocolError, match="not an RFB peer"):
        conn.next_event()


def normal(**kw) -> RFBServerConnection:
    conn = make(**kw)
    run(conn, [V38 + b"\x01\x01"])
    assert conn.state is ServerState.NORMAL
    return conn


KEY = b"\x04\x01\x00\x00\x00\x00\xff\x0d"
CLIENT_MESSAGES = (
    b"\x00\x00\x00\x00"
    + RGB565.pack()
    + b"\x02\x00\x00\x03"
    + struct.pack(">iii", 0, 1, -223)
    + b"\x03\x01\x00\x0a\x00\x14\x00\x1e\x00\x28"
    + KEY
    + b"\x05\x03\x01\x00\x00\xf0"
    + b"\x06\x00\x00\x00\x00\x00\x00\x02hi"
    + b"\x06\x00\x00\x00\x00\x00\x00\x00"
)
CLIENT_EVENTS = [
    SetPixelFormat(RGB565),
    SetEncodings((0, 1, -223)),
    FramebufferUpdateRequest(True, 10, 20, 30, 40),
    KeyEvent(True, 0xFF0D),
    PointerEvent(3, 256, 240),
    ClientCutText(b"hi"),
    ClientCutText(b""),
]


def test_client_messages_whole_byte_by_byte_and_trailing() -> None:
    for chunks in (
        [CLIENT_MESSAGES],
        [CLIENT_MESSAGES[i : i + 1] for i in range(len(CLIENT_MESSAGES))],
        [CLIENT_MESSAGES + b"\x06\x00\x00\x00\x00\x00\x00\x05hel"],
    ):
        conn = normal()
        assert run(conn, chunks) == (CLIENT_EVENTS, b"")
        assert conn.pixel_format == RGB565
        assert conn.encodings == (0, 1, -223)
    assert conn.trailing_data == (b"\x06\x00\x00\x00\x00\x00\x00\x05hel", False)


def test_byte_by_byte_gives_need_data_until_the_last_byte() -> None:
    conn = normal()
    for b in KEY[:-1]:
        conn.receive_data(bytes([b]))
        assert conn.next_event() is NEED_DATA
    conn.receive_data(KEY[-1:])
    assert conn.next_event() == KeyEvent(True, 0xFF0D)


def test_cut_text_cap_plus_one_is_refused_from_the_header() -> None:
    conn = normal(max_cut_text=100)
    conn.receive_data(b"\x06\x00\x00\x00" + struct.pack(">I", 101))  # header only, no text
    with pytest.raises(RFBProtocolError, match="101 bytes exceeds 100"):
        conn.next_event()
    at_cap = normal(max_cut_text=100)
    assert run(at_cap, [b"\x06\0\0\0" + struct.pack(">I", 100) + b"x" * 100])[0] == [
        ClientCutText(b"x" * 100)
    ]


def test_default_cut_text_cap_is_one_mebibyte() -> None:
    conn = normal()
    conn.receive_data(b"\x06\x00\x00\x00" + struct.pack(">I", (1 << 20) + 1))
    with pytest.raises(RFBProtocolError, match="exceeds"):
        conn.next_event()


@pytest.mark.parametrize(
    "partial", [b"\x04\x01\x00", b"\x06\x00\x00\x00\x00\x00\x00\x05he", b"\x02\x00"]
)
def test_eof_mid_message_is_an_error(partial: bytes) -> None:
    conn = normal()
    conn.receive_data(partial)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(RFBProtocolError, match="middle of a message"):
        conn.next_event()


def test_eof_mid_handshake_is_an_error_and_clean_eof_is_closed() -> None:
    conn = make()
    conn.receive_data(b"RFB 00")
    conn.receive_data(b"")
    with pytest.raises(RFBProtocolError, match="version phase"):
        conn.next_event()
    conn = normal()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    with pytest.raises(RFBLocalError):
        conn.receive_data(b"late")


@pytest.mark.parametrize("kind", [1, 7, 99, 200])
def test_unknown_message_type_is_an_error(kind: int) -> None:
    conn = normal()
    conn.receive_data(bytes([kind]) + b"\0" * 20)
    with pytest.raises(RFBProtocolError, match=f"unknown client message type {kind}"):
        conn.next_event()


def test_extension_messages_are_tolerated_raw() -> None:
    qemu_key = b"\xff\x00\x00\x01" + struct.pack(">II", 0xFF0D, 0x1C)
    fence = b"\xf8\x00\x00\x00\x00\x00\x00\x01\x03abc"
    desktop = b"\xfb\x00\x01\x00\x00\xc8\x01\x00" + b"\x00" * 16
    data = qemu_key + fence + desktop + KEY
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        events, _ = run(normal(), chunks)
        assert events == [
            ExtendedClientMessage(255, qemu_key),
            ExtendedClientMessage(248, fence),
            ExtendedClientMessage(251, desktop),
            KeyEvent(True, 0xFF0D),
        ]


def test_send_encodes_server_messages() -> None:
    conn = normal()
    pixels = bytes(range(2 * 2 * 4))
    update = FramebufferUpdate(
        (
            Rectangle(1, 2, 2, 2, ENCODING_RAW, pixels),
            Rectangle.copy_rect(0, 0, 2, 2, src_x=5, src_y=6),
        )
    )
    assert conn.send(update) == (
        b"\x00\x00\x00\x02"
        + b"\x00\x01\x00\x02\x00\x02\x00\x02\x00\x00\x00\x00"
        + pixels
        + b"\x00\x00\x00\x00\x00\x02\x00\x02\x00\x00\x00\x01\x00\x05\x00\x06"
    )
    assert update.rects[1].copy_source == (5, 6)
    assert conn.send(Bell()) == b"\x02"
    assert conn.send(ServerCutText(b"abc")) == b"\x03\x00\x00\x00\x00\x00\x00\x03abc"
    colours = SetColourMapEntries(1, ((0xFFFF, 0, 0x8000),))
    assert conn.send(colours) == b"\x01\x00\x00\x01\x00\x01\xff\xff\x00\x00\x80\x00"


def test_raw_rect_size_follows_the_client_pixel_format() -> None:
    conn = normal()
    run(conn, [b"\x00\x00\x00\x00" + RGB565.pack()])
    with pytest.raises(RFBLocalError, match="needs 8 bytes"):
        conn.send(FramebufferUpdate((Rectangle(0, 0, 2, 2, ENCODING_RAW, b"\0" * 16),)))
    assert (
        len(conn.send(FramebufferUpdate((Rectangle(0, 0, 2, 2, ENCODING_RAW, b"\0" * 8),)))) == 24
    )
    conn.send(FramebufferUpdate((Rectangle(0, 0, 640, 480, ENCODING_DESKTOP_SIZE),)))
    assert (conn.width, conn.height) == (640, 480)


def test_send_before_the_normal_phase_is_refused() -> None:
    conn = make()
    with pytest.raises(RFBLocalError, match="version phase"):
        conn.send(Bell())
    with pytest.raises(RFBLocalError, match="not a server message"):
        normal().send(KeyEvent(True, 1))


def test_colour_map_pixel_format_is_refused() -> None:
    conn = normal()
    palette = BGRX32.pack()[:3] + b"\x00" + BGRX32.pack()[4:]
    conn.receive_data(b"\x00\x00\x00\x00" + palette)
    with pytest.raises(RFBProtocolError, match="colour-map"):
        conn.next_event()


def test_copy_source_only_for_copy_rect() -> None:
    with pytest.raises(ValueError):
        _ = Rectangle(0, 0, 1, 1, ENCODING_RAW, b"\0" * 4).copy_source
    assert Rectangle.copy_rect(0, 0, 1, 1, 2, 3).encoding == ENCODING_COPY_RECT
