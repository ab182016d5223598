"""Fuzzing the RFB state machines (proto/rfb): client, server and the relay's observer.

Seeds are real conversations (the TigerVNC/QEMU recordings in tests/fixtures/rfb, cut
after the handshake and a little of the first update) followed by a few hand-encoded
messages; they are fed whole, mutated and in any chunking. The client and server roles
yield events or raise ``RFBProtocolError`` (its subclasses included) and nothing else;
the observer never raises and never holds more than its ``max_buffer`` per direction.
"""

from __future__ import annotations

import json
from pathlib import Path

from console_common.proto.rfb import (
    BGRX32,
    ENCODING_COPY_RECT,
    ENCODING_RAW,
    NEED_DATA,
    RGB565,
    Bell,
    ClientCutText,
    ConnectionClosed,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    KeyEvent,
    PointerEvent,
    Rectangle,
    RFBClientConnection,
    RFBObserver,
    RFBProtocolError,
    RFBServerConnection,
    ServerCutText,
    SetEncodings,
    SetPixelFormat,
    encode_client_message,
    encode_server_message,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import chunked, inputs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rfb"
NAMES = ("xvnc-none", "xvnc-vncauth", "qemu")
META = {n: json.loads((FIXTURES / f"{n}.json").read_text()) for n in NAMES}
SERVER_HEAD = {n: (FIXTURES / f"{n}.server.bin").read_bytes()[:META[n]["handshake_server_bytes"]]
               for n in NAMES}
CLIENT_HEAD = {n: (FIXTURES / f"{n}.client.bin").read_bytes()[:META[n]["handshake_client_bytes"]]
               for n in NAMES}
CLIENT_ALL = {n: (FIXTURES / f"{n}.client.bin").read_bytes() for n in NAMES}
SERVER_START = {n: (FIXTURES / f"{n}.server.bin").read_bytes()[:1500] for n in NAMES}

SERVER_MESSAGES = b"".join(encode_server_message(m, BGRX32) for m in (
    Bell(),
    ServerCutText(b"clipboard \xe9"),
    FramebufferUpdate((Rectangle(0, 0, 2, 2, ENCODING_RAW, b"\x01\x02\x03\x00" * 4),
                       Rectangle.copy_rect(2, 2, 2, 2, 0, 0))),
))
CLIENT_MESSAGES = b"".join(encode_client_message(m) for m in (
    SetPixelFormat(RGB565),
    SetEncodings((ENCODING_RAW, ENCODING_COPY_RECT, -223)),
    FramebufferUpdateRequest(False, 0, 0, 16, 8),
    KeyEvent(True, 0xFF0D),
    PointerEvent(1, 3, 4),
    ClientCutText(b"paste"),
))
SERVER_SEEDS = [*SERVER_START.values(), *(h + SERVER_MESSAGES for h in SERVER_HEAD.values())]
CLIENT_SEEDS = [*CLIENT_ALL.values(), *(h + CLIENT_MESSAGES for h in CLIENT_HEAD.values())]
OBSERVER_MAX = 2048


def _drive(conn: RFBClientConnection | RFBServerConnection, chunks: list[bytes]) -> None:
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        try:
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    return
        except RFBProtocolError as exc:
            assert str(exc)
            try:  # it stays in its error state
                conn.next_event()
            except RFBProtocolError:
                return
            raise AssertionError("no error after a protocol error") from exc
        conn.data_to_send()  # the handshake's answers, as a socket would take them


@given(st.data())
def test_client_role_takes_any_server_bytes(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    password = (META[name].get("password") or "").encode() or data.draw(st.sampled_from(
        [None, b"secret"]))
    conn = RFBClientConnection(password=password, max_cut_text=4096, max_rect_bytes=1 << 20)
    raw = data.draw(inputs(SERVER_SEEDS, max_random=256))
    _drive(conn, data.draw(chunked(raw)))


@given(st.data())
def test_server_role_takes_any_client_bytes(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    secured = bool(META[name].get("challenge"))
    conn = RFBServerConnection(
        "fuzz", 16, 8, BGRX32,
        password=META[name]["password"].encode() if secured else None,
        version=data.draw(st.sampled_from([(3, 3), (3, 7), (3, 8)])),
        challenge=bytes.fromhex(META[name]["challenge"]) if secured else None,
        max_cut_text=4096)
    raw = data.draw(inputs(CLIENT_SEEDS, max_random=256))
    _drive(conn, data.draw(chunked(raw)))


@given(st.data())
def test_observer_never_raises_and_stays_bounded(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    server = data.draw(inputs([SERVER_START[name], SERVER_HEAD[name] + SERVER_MESSAGES]))
    client = data.draw(inputs([CLIENT_ALL[name]]))
    # interleave the two directions as a relay would see them
    pieces = [(0, c) for c in data.draw(chunked(server))] + [(1, c) for c in
                                                            data.draw(chunked(client))]
    order = data.draw(st.permutations(range(len(pieces)))) if len(pieces) < 40 else range(
        len(pieces))
    obs = RFBObserver(max_buffer=OBSERVER_MAX)
    for i in order:
        side, chunk = pieces[i]
        (obs.server_data if side == 0 else obs.client_data)(chunk)
        assert all(len(b) <= OBSERVER_MAX + len(chunk) for b in obs._bufs)
        if not obs.active:
            assert all(len(b) == 0 for b in obs._bufs)  # done or failed: nothing kept
    info = obs.info()
    assert set(info) == {"rfb_version", "security_type", "desktop_name", "width", "height"}
    if obs.failed:
        assert obs.reason
