"""The security proxy's sans-I/O handshakes: RFBClientConnection(schemes=..., client_init=
False) towards VNC servers of RFB 3.3/3.7/3.8 (None, VNC authentication, VeNCrypt 0.2
X509None/X509Vnc) and RFBServerConnection greeting (or refusing) the proxy's client. Each
server script is fed whole and byte by byte, and must give the same events and answers."""

from __future__ import annotations

import struct

import pytest
from console_common.proto.rfb import (
    NEED_DATA,
    SECURITY_NONE,
    SECURITY_VENCRYPT,
    SECURITY_VNC_AUTH,
    VENCRYPT_X509NONE,
    VENCRYPT_X509VNC,
    AuthResult,
    ClientState,
    ConnectionClosed,
    ProtocolVersion,
    RFBAuthError,
    RFBClientConnection,
    RFBProtocolError,
    RFBServerConnection,
    SecurityChosen,
    SecurityTypes,
    StartTLS,
    vnc_des_response,
)

CHALLENGE = bytes(range(16))
PASSWORD = b"otp12345"
OK = struct.pack(">I", 0)
RESPONSE = vnc_des_response(PASSWORD, CHALLENGE)


def u32(n: int) -> bytes:
    return struct.pack(">I", n)


def reason(text: str) -> bytes:
    return u32(len(text)) + text.encode()


def drive(segments: list[bytes], byte_by_byte: bool, **kw) -> tuple[list, bytes,
                                                                      RFBClientConnection]:
    """Feed the server's bytes segment by segment (a StartTLS closes a segment: what
    follows is the TLS stream's plaintext); events and everything the client answered."""
    conn = RFBClientConnection(client_init=False, **kw)
    events: list = []
    out = bytearray()
    for segment in segments:
        chunks = [segment[i:i + 1] for i in range(len(segment))] if byte_by_byte else [segment]
        for chunk in chunks:
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not NEED_DATA:
                events.append(event)
                if isinstance(event, StartTLS):
                    out += conn.data_to_send()
                    conn.tls_started()
            out += conn.data_to_send()
    return events, bytes(out), conn


CASES = {
    # name: (server segments, client kwargs, expected events, expected client bytes)
    "3.8 none": ([b"RFB 003.008\n", b"\x01\x01", OK], {"schemes": ("vnc", "none")},
                 [ProtocolVersion(3, 8), SecurityTypes((1,)), AuthResult(True)],
                 b"RFB 003.008\n\x01"),
    "3.8 vnc": ([b"RFB 003.008\n\x02\x01\x02", CHALLENGE, OK],
                {"schemes": ("vnc",), "password": PASSWORD},
                [ProtocolVersion(3, 8), SecurityTypes((1, 2)), AuthResult(True)],
                b"RFB 003.008\n\x02" + RESPONSE),
    "3.7 vnc": ([b"RFB 003.007\n\x01\x02" + CHALLENGE + OK],
                {"schemes": ("vnc",), "password": PASSWORD},
                [ProtocolVersion(3, 7), SecurityTypes((2,)), AuthResult(True)],
                b"RFB 003.007\n\x02" + RESPONSE),
    "3.7 none": ([b"RFB 003.007\n\x01\x01"], {"schemes": ("none",)},
                 [ProtocolVersion(3, 7), SecurityTypes((1,)), AuthResult(True)],
                 b"RFB 003.007\n\x01"),
    "3.3 vnc": ([b"RFB 003.003\n" + u32(2) + CHALLENGE + OK],
                {"schemes": ("vencrypt", "vnc"), "password": PASSWORD},
                [ProtocolVersion(3, 3), SecurityTypes((2,)), AuthResult(True)],
                b"RFB 003.003\n" + RESPONSE),
    "3.3 none": ([b"RFB 003.003\n" + u32(1)], {"schemes": ("vnc", "none")},
                 [ProtocolVersion(3, 3), SecurityTypes((1,)), AuthResult(True)],
                 b"RFB 003.003\n"),
    "vencrypt x509none": (
        [b"RFB 003.008\n\x01\x13", b"\x00\x02", b"\x00", b"\x01" + u32(260), b"\x01", OK],
        {"schemes": ("vencrypt",)},
        [ProtocolVersion(3, 8), SecurityTypes((19,)), StartTLS(VENCRYPT_X509NONE),
         AuthResult(True)],
        b"RFB 003.008\n\x13\x00\x02" + u32(260)),
    "vencrypt x509vnc": (
        [b"RFB 003.008\n\x01\x13\x00\x02\x00\x02" + u32(261) + u32(260) + b"\x01",
         CHALLENGE + OK],
        {"schemes": ("vencrypt", "vnc"), "password": PASSWORD},
        [ProtocolVersion(3, 8), SecurityTypes((19,)), StartTLS(VENCRYPT_X509VNC),
         AuthResult(True)],
        b"RFB 003.008\n\x13\x00\x02" + u32(261) + RESPONSE),
    # without a password X509Vnc is skipped for the next subtype the server offers
    "vencrypt x509none without password": (
        [b"RFB 003.008\n\x01\x13\x00\x02\x00\x02" + u32(261) + u32(260) + b"\x01", OK],
        {"schemes": ("vencrypt",)},
        [ProtocolVersion(3, 8), SecurityTypes((19,)), StartTLS(VENCRYPT_X509NONE),
         AuthResult(True)],
        b"RFB 003.008\n\x13\x00\x02" + u32(260)),
    # our preference decides, not the server's order
    "prefers vencrypt": (
        [b"RFB 003.008\n\x02\x02\x13\x00\x02\x00\x01" + u32(260) + b"\x01", OK],
        {"schemes": ("vencrypt", "vnc"), "password": PASSWORD},
        [ProtocolVersion(3, 8), SecurityTypes((2, 19)), StartTLS(VENCRYPT_X509NONE),
         AuthResult(True)],
        b"RFB 003.008\n\x13\x00\x02" + u32(260)),
    "prefers vnc": (
        [b"RFB 003.008\n\x02\x13\x02" + CHALLENGE + OK],
        {"schemes": ("vnc", "vencrypt"), "password": PASSWORD},
        [ProtocolVersion(3, 8), SecurityTypes((19, 2)), AuthResult(True)],
        b"RFB 003.008\n\x02" + RESPONSE),
    "wrong password": (
        [b"RFB 003.008\n\x01\x02" + CHALLENGE + u32(1) + reason("Authentication failure")],
        {"schemes": ("vnc",), "password": b"wrong"},
        [ProtocolVersion(3, 8), SecurityTypes((2,)), AuthResult(False, "Authentication failure")],
        b"RFB 003.008\n\x02" + vnc_des_response(b"wrong", CHALLENGE)),
    "server refuses": (
        [b"RFB 003.008\n\x00" + reason("too many connections")], {"schemes": ("none",)},
        [ProtocolVersion(3, 8), AuthResult(False, "too many connections")],
        b"RFB 003.008\n"),
}


@pytest.mark.parametrize("name", CASES)
def test_whole_and_byte_by_byte_agree(name: str) -> None:
    segments, kw, expected_events, expected_out = CASES[name]
    whole = drive(segments, False, **kw)
    trickled = drive(segments, True, **kw)
    assert whole[0] == trickled[0] == expected_events
    assert whole[1] == trickled[1] == expected_out
    if expected_events[-1] == AuthResult(True):
        assert whole[2].state is ClientState.AUTHENTICATED  # ClientInit is the relay's


def test_security_types_and_subtype_are_kept() -> None:
    segments, kw, _, _ = CASES["vencrypt x509vnc"]
    _, _, conn = drive(segments, False, **kw)
    assert (conn.security_type, conn.vencrypt_subtype) == (SECURITY_VENCRYPT, VENCRYPT_X509VNC)
    _, _, conn = drive(CASES["3.3 vnc"][0], False, **CASES["3.3 vnc"][1])
    assert (conn.version, conn.security_type) == ((3, 3), SECURITY_VNC_AUTH)


def test_bytes_after_authentication_stay_for_the_caller() -> None:
    conn = RFBClientConnection(client_init=False, schemes=("none",))
    conn.receive_data(b"RFB 003.008\n\x01\x01" + OK + b"early")
    events = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
    assert events[-1] == AuthResult(True)
    assert conn.trailing_data == (b"early", False)
    assert conn.data_to_send() == b"RFB 003.008\n\x01"


FAILURES = {
    "no common scheme": ([b"RFB 003.008\n\x01\x02"], {"schemes": ("vencrypt",)},
                         "no common security scheme: the server offers VncAuth, "
                         "auth_schemes allows vencrypt"),
    "vnc without password": ([b"RFB 003.008\n\x01\x02"], {"schemes": ("vnc", "none")},
                             "no password was given for this console"),
    "3.3 imposes vencrypt": ([b"RFB 003.003\n" + u32(19)], {"schemes": ("vencrypt",)},
                             "no common security scheme"),
    "3.3 imposes vnc, none allowed": ([b"RFB 003.003\n" + u32(2)], {"schemes": ("none",)},
                                      "no common security scheme"),
    "x509vnc without password": (
        [b"RFB 003.008\n\x01\x13\x00\x02\x00\x01" + u32(261)], {"schemes": ("vencrypt",)},
        "no common VeNCrypt subtype: the server offers X509Vnc, the proxy speaks X509None "
        "and X509Vnc (X509Vnc needs a password"),
    "anonymous tls only": (
        [b"RFB 003.008\n\x01\x13\x00\x02\x00\x02" + u32(257) + u32(258)],
        {"schemes": ("vencrypt",), "password": PASSWORD},
        "the server offers TLSNone, TLSVnc"),
    "old vencrypt": ([b"RFB 003.008\n\x01\x13\x00\x01"], {"schemes": ("vencrypt",)},
                     "VeNCrypt 0.1, only 0.2"),
    "vencrypt version refused": ([b"RFB 003.008\n\x01\x13\x00\x02\x01"],
                                 {"schemes": ("vencrypt",)}, "refused VeNCrypt version 0.2"),
    "subtype refused": ([b"RFB 003.008\n\x01\x13\x00\x02\x00\x01" + u32(260) + b"\x00"],
                        {"schemes": ("vencrypt",)}, "refused VeNCrypt subtype X509None"),
    "plaintext before tls": (
        [b"RFB 003.008\n\x01\x13\x00\x02\x00\x01" + u32(260) + b"\x01" + OK],
        {"schemes": ("vencrypt",)}, "4 unexpected bytes before the TLS handshake"),
    "not rfb": ([b"HTTP/1.1 400"], {"schemes": ("none",)}, "not an RFB peer"),
}


@pytest.mark.parametrize("name", FAILURES)
def test_failures_are_clear(name: str) -> None:
    segments, kw, message = FAILURES[name]
    # plaintext after the ack is seen only in the same read (later bytes go to TLS, whose
    # handshake fails on them)
    for byte_by_byte in (False,) if name == "plaintext before tls" else (False, True):
        with pytest.raises(RFBProtocolError) as info:
            drive(segments, byte_by_byte, **kw)
        assert message in str(info.value)
        assert isinstance(info.value, RFBAuthError) or name in ("plaintext before tls",
                                                                "not rfb")
        assert PASSWORD.decode() not in str(info.value)


def test_eof_in_the_middle_is_an_error() -> None:
    conn = RFBClientConnection(client_init=False, schemes=("vencrypt",))
    conn.receive_data(b"RFB 003.008\n\x01\x13\x00")
    conn.receive_data(b"")
    with pytest.raises(RFBProtocolError, match="closed in the middle"):
        while conn.next_event() is not NEED_DATA:
            pass


def test_tls_started_only_when_asked() -> None:
    conn = RFBClientConnection(client_init=False, schemes=("vencrypt",))
    with pytest.raises(RFBProtocolError, match="tls_started"):
        conn.tls_started()


def test_bad_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="schemes"):
        RFBClientConnection(schemes=("tls",))
    with pytest.raises(ValueError, match="schemes"):
        RFBClientConnection(schemes=())


# --- the client side: the proxy greets with RFB 3.8 and security None -----------------


def greet(client_bytes: bytes, byte_by_byte: bool, **kw) -> tuple[list, bytes, bytes]:
    conn = RFBServerConnection("", 0, 0, **kw)
    out = bytearray(conn.data_to_send())
    events: list = []
    chunks = [client_bytes[i:i + 1] for i in range(len(client_bytes))] if byte_by_byte \
        else [client_bytes]
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, AuthResult):
                break
        out += conn.data_to_send()
        if events and isinstance(events[-1], AuthResult):
            break
    return events, bytes(out), conn.trailing_data[0]


@pytest.mark.parametrize(("client", "events", "answer"), [
    (b"RFB 003.008\n\x01\x01", [ProtocolVersion(3, 8), SecurityChosen(SECURITY_NONE),
                                AuthResult(True)], b"RFB 003.008\n\x01\x01" + OK),
    (b"RFB 003.007\n\x01\x01", [ProtocolVersion(3, 7), SecurityChosen(SECURITY_NONE),
                                AuthResult(True)], b"RFB 003.008\n\x01\x01"),
    (b"RFB 003.003\n\x01", [ProtocolVersion(3, 3), AuthResult(True)],
     b"RFB 003.008\n" + u32(1)),
])
def test_the_client_is_offered_none_only(client: bytes, events: list, answer: bytes) -> None:
    for byte_by_byte in (False, True):
        got, out, trailing = greet(client, byte_by_byte)
        assert (got, out) == (events, answer)
        if not byte_by_byte:  # the ClientInit (last byte) is the relay's to pass on
            assert trailing == b"\x01"


@pytest.mark.parametrize(("client", "answer"), [
    (b"RFB 003.008\n", b"RFB 003.008\n\x00" + reason("console security negotiation failed")),
    (b"RFB 003.003\n", b"RFB 003.008\n" + u32(0) + reason("console security negotiation failed")),
])
def test_a_refused_client_gets_the_reason(client: bytes, answer: bytes) -> None:
    conn = RFBServerConnection("", 0, 0, refuse="console security negotiation failed")
    out = conn.data_to_send()
    conn.receive_data(client)
    assert conn.next_event() == ProtocolVersion(*(int(client[4:7]), int(client[8:11])))
    assert conn.next_event() == AuthResult(False, "console security negotiation failed")
    out += conn.data_to_send()
    assert out == answer
    conn.receive_data(b"\x01")  # whatever it says next is not listened to
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_a_client_choosing_vnc_auth_is_refused() -> None:
    conn = RFBServerConnection("", 0, 0)
    conn.data_to_send()
    conn.receive_data(b"RFB 003.008\n\x02")
    assert conn.next_event() == ProtocolVersion(3, 8)
    with pytest.raises(RFBAuthError, match="only 1 was offered"):
        conn.next_event()
