"""Replay recordings of real servers (TigerVNC Xvnc, QEMU) through the state machines.

The fixtures come from tests/tools/record_rfb.py: each direction's raw bytes up to the end
of the first full Raw update at 32 bpp (BGRX32), plus a json of what was seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from console_common.proto.rfb import (
    BGRX32,
    ENCODING_RAW,
    NEED_DATA,
    AuthResult,
    ClientInit,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    ProtocolVersion,
    RFBClientConnection,
    RFBObserver,
    RFBServerConnection,
    SecurityChosen,
    SecurityTypes,
    ServerInit,
    SetEncodings,
    SetPixelFormat,
    pixels_to_rgb,
    vnc_des_response,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rfb"
NAMES = ["xvnc-none", "xvnc-vncauth", "qemu"]


def load(name: str) -> tuple[bytes, bytes, dict]:
    server = (FIXTURES / f"{name}.server.bin").read_bytes()
    client = (FIXTURES / f"{name}.client.bin").read_bytes()
    return server, client, json.loads((FIXTURES / f"{name}.json").read_text())


def chunked(data: bytes, handshake: int, size: int = 7) -> list[bytes]:
    """Byte by byte through the handshake, then pieces of ``size`` bytes."""
    head = [data[i : i + 1] for i in range(handshake)]
    return head + [data[i : i + size] for i in range(handshake, len(data), size)]


def drain(conn, chunks: list[bytes], after_init=None) -> list:
    events = []
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ServerInit) and after_init is not None:
                after_init(conn)
    return events


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_client_role_parses_real_server(name: str, mode: str) -> None:
    server, _, meta = load(name)
    conn = RFBClientConnection(password=meta["password"] and meta["password"].encode())
    chunks = [server] if mode == "whole" else chunked(server, meta["handshake_server_bytes"])
    events = drain(conn, chunks, after_init=lambda c: c.send(SetPixelFormat(BGRX32)))
    init = meta["server_init"]
    assert events[:3] == [
        ProtocolVersion(*meta["version"]),
        SecurityTypes(tuple(meta["security_types"])),
        AuthResult(True),
    ]
    assert events[3] == ServerInit(
        init["width"], init["height"], events[3].pixel_format, init["name"]
    )
    assert events[3].pixel_format.bits_per_pixel == init["bits_per_pixel"]
    assert len(events) == 5
    update = events[4]
    assert isinstance(update, FramebufferUpdate)
    rects = [[r.x, r.y, r.width, r.height, r.encoding] for r in update.rects]
    assert rects == meta["update_rects"]
    assert sum(r.width * r.height for r in update.rects) == init["width"] * init["height"]
    assert all(len(r.data) == r.width * r.height * 4 for r in update.rects)
    assert conn.trailing_data == (b"", False)


def test_recorded_names_and_sizes() -> None:
    assert load("xvnc-none")[2]["server_init"] == {
        "width": 320,
        "height": 240,
        "name": "rfb-fixture",
        "bits_per_pixel": 32,
    }
    qemu = load("qemu")[2]["server_init"]
    assert qemu["name"] == "QEMU (rfb-fixture)"
    assert (qemu["width"], qemu["height"]) in ((720, 400), (640, 480))


def test_qemu_screen_has_seabios_text() -> None:
    server, _, _ = load("qemu")
    conn = RFBClientConnection()
    events = drain(conn, [server], after_init=lambda c: c.send(SetPixelFormat(BGRX32)))
    rgb = pixels_to_rgb(events[-1].rects[0].data, BGRX32)
    lit = sum(1 for i in range(0, len(rgb), 3) if rgb[i : i + 3] != b"\0\0\0")
    assert 1000 < lit < len(rgb) // 3 // 2  # some text on a black screen


def test_real_xvnc_accepted_our_vnc_auth_response() -> None:
    server, client, meta = load("xvnc-vncauth")
    challenge = bytes.fromhex(meta["challenge"])
    assert server[14:30] == challenge  # after "RFB 003.008\n" and the types list [2]
    assert client[13:29] == vnc_des_response(meta["password"].encode(), challenge)
    assert server[30:34] == b"\0\0\0\0"  # Xvnc said OK


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_server_role_parses_what_we_sent_real_servers(name: str, mode: str) -> None:
    _, client, meta = load(name)
    password = meta["password"] and meta["password"].encode()
    challenge = bytes.fromhex(meta["challenge"]) if meta["challenge"] else None
    conn = RFBServerConnection("x", 320, 240, password=password, challenge=challenge)
    chunks = [client] if mode == "whole" else [client[i : i + 1] for i in range(len(client))]
    events = drain(conn, chunks)
    init = meta["server_init"]
    assert events == [
        ProtocolVersion(3, 8),
        SecurityChosen(meta["security_type"]),
        AuthResult(True),
        ClientInit(True),
        SetPixelFormat(BGRX32),
        SetEncodings((ENCODING_RAW,)),
        FramebufferUpdateRequest(False, 0, 0, init["width"], init["height"]),
    ]


@pytest.mark.parametrize("name", NAMES)
def test_observer_on_real_streams(name: str) -> None:
    server, client, meta = load(name)
    obs = RFBObserver()
    # Interleave the two directions as a relay would see them, in small pieces.
    hs, hc = meta["handshake_server_bytes"], meta["handshake_client_bytes"]
    for i in range(max(hs, hc)):
        obs.server_data(server[i : i + 1] if i < hs else b"")
        obs.client_data(client[i : i + 1] if i < hc else b"")
    assert obs.done and not obs.failed
    obs.server_data(server[hs:])  # the big update afterwards costs nothing
    obs.client_data(client[hc:])
    init = meta["server_init"]
    assert (obs.version, obs.security_type) == (
        "3.8",
        {1: "None", 2: "VncAuth"}[meta["security_type"]],
    )
    assert (obs.desktop_name, obs.width, obs.height) == (
        init["name"],
        init["width"],
        init["height"],
    )
    assert obs.auth_ok is True
