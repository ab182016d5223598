"""RFBObserver: passive, never raises, cheap once it has seen ServerInit."""

from __future__ import annotations

import struct

import pytest
from console_common.proto.rfb import BGRX32, RFBObserver, vnc_des_response

V38, V37, V33 = b"RFB 003.008\n", b"RFB 003.007\n", b"RFB 003.003\n"
INIT = struct.pack(">HH", 1024, 768) + BGRX32.pack() + b"\0\0\0\x09instance1"
CHALLENGE = bytes(16)


def session(version: bytes, security: int) -> tuple[bytes, bytes]:
    """(server bytes, client bytes) of a successful handshake."""
    auth = security == 2
    if version == V33:
        server, client = V38 + struct.pack(">I", security), version
    else:
        server, client = V38 + bytes((1, security)), version + bytes((security,))
    if auth:
        server += CHALLENGE
        client += vnc_des_response(b"pw", CHALLENGE)
    if auth or version == V38:
        server += b"\0\0\0\0"
    return server + INIT, client + b"\x01"


@pytest.mark.parametrize("version", [V38, V37, V33])
@pytest.mark.parametrize("security", [1, 2])
@pytest.mark.parametrize("piece", [1, 3, 1000])
def test_learns_the_handshake(version: bytes, security: int, piece: int) -> None:
    server, client = session(version, security)
    obs = RFBObserver()
    for i in range(0, max(len(server), len(client)), piece):
        obs.server_data(server[i : i + piece])
        obs.client_data(client[i : i + piece])
    assert obs.done and not obs.failed and not obs.active
    assert obs.info() == {
        "rfb_version": {V38: "3.8", V37: "3.7", V33: "3.3"}[version],
        "security_type": {1: "None", 2: "VncAuth"}[security],
        "desktop_name": "instance1",
        "width": 1024,
        "height": 768,
    }


def test_a_whole_relay_chunk_holding_serverinit_and_more() -> None:
    server, client = session(V38, 1)
    obs = RFBObserver()
    obs.client_data(client)
    obs.server_data(server + b"\x00" * 60000)  # ServerInit then the first update
    assert obs.done and obs.width == 1024


def test_after_serverinit_the_observer_holds_nothing() -> None:
    server, client = session(V38, 1)
    obs = RFBObserver()
    obs.server_data(server)
    obs.client_data(client)
    assert obs.done
    for _ in range(100):
        obs.server_data(b"\x00" * 65536)
    assert obs._bufs[0].data == b"" and obs._bufs[1].data == b""


@pytest.mark.parametrize(
    ("server", "client"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", b""),
        (V38, b"GET / HTTP/1.1\r\n\r\n"),
        (V38 + b"\x01\x01\0\0\0\0" + struct.pack(">HH", 1, 1) + b"\x18" + b"\0" * 19, b""),
    ],
    ids=["ssh", "http-client", "bad-pixel-format"],
)
def test_garbage_marks_failed_and_never_raises(server: bytes, client: bytes) -> None:
    obs = RFBObserver()
    obs.server_data(server)
    obs.client_data(client or V38 + b"\x01\x01")
    assert obs.failed and obs.reason and not obs.done
    obs.server_data(b"anything")  # still no exception
    obs.client_data(b"anything")


def test_buffering_is_bounded() -> None:
    obs = RFBObserver(max_buffer=1024)
    obs.server_data(V38)
    obs.client_data(b"RFB 003.00")  # the client never finishes its version
    obs.server_data(b"\x00" * 2000)
    assert obs.failed and "1024" in obs.reason
    assert not obs.active


def test_refusals_and_unfollowable_security() -> None:
    obs = RFBObserver()
    obs.server_data(V38 + b"\x00\0\0\0\x04busy")
    obs.client_data(V38)
    assert (obs.auth_ok, obs.reason, obs.failed) == (False, "busy", False)

    obs = RFBObserver()
    obs.server_data(V38 + b"\x01\x02" + CHALLENGE + b"\0\0\0\x01")
    obs.client_data(V38 + b"\x02" + bytes(16))
    assert (obs.auth_ok, obs.security_type, obs.reason) == (
        False,
        "VncAuth",
        "authentication failed",
    )

    obs = RFBObserver()
    obs.server_data(V38 + b"\x01\x13")
    obs.client_data(V38 + b"\x13")
    assert obs.security_type == "VeNCrypt" and not obs.failed and not obs.active
    assert "cannot follow" in obs.reason
