"""The session runner's security seam: a failing step ends the session with
close_reason=security_failed and its cause (both streams closed, no relay); a successful
one relays with the stream it returns, and the observer learns the handshake the client
saw (the end line names the scheme)."""

from __future__ import annotations

import struct

import structlog
from console_common.net.rfbsecurity import Negotiated, SecurityFailed
from console_common.proto.rfb import BGRX32
from console_common.sessions.runner import Session

from tests.unit.test_relay import FakeStream

SERVER_INIT = struct.pack(">HH", 64, 48) + BGRX32.pack() + struct.pack(">I", 4) + b"unit"


def session() -> Session:
    return Session(client="10.0.0.9", token="t" * 43, instance_uuid="vm-1",
                   target="10.0.0.5:5901", kind="novnc")


def test_a_failed_step_ends_the_session_with_its_cause() -> None:
    client, target = FakeStream("client"), FakeStream("target")

    def step(_client, _target):
        raise SecurityFailed("the VNC server refused authentication (VncAuth): nope")

    s = session()
    with structlog.testing.capture_logs() as logs:
        s.run(client, target, security=step)
    end = [line for line in logs if line["event"] == "session.end"][-1]
    assert end["close_reason"] == s.close_reason == "security_failed"
    assert end["close_detail"] == "the VNC server refused authentication (VncAuth): nope"
    assert end["log_level"] == "warning"
    assert client.closed and target.closed and not target.sent


def test_a_cut_during_the_step_keeps_its_reason() -> None:
    def step(_client, _target):
        s.cut("revoked")
        raise SecurityFailed("the client left during the RFB handshake", "client_closed")

    s = session()
    with structlog.testing.capture_logs() as logs:
        s.run(FakeStream("client"), FakeStream("target"), security=step)
    end = [line for line in logs if line["event"] == "session.end"][-1]
    assert end["close_reason"] == "revoked" and end["log_level"] == "info"


def test_a_good_step_relays_with_its_stream_and_names_the_scheme() -> None:
    client, raw, tls = FakeStream("client"), FakeStream("raw"), FakeStream("tls")
    to_client = b"RFB 003.008\n\x01\x01" + bytes(4)

    def step(_client, _target):
        return Negotiated(tls, "VeNCrypt/X509Vnc", to_client, b"RFB 003.008\n\x01\x01",
                          b"\x01")

    tls.feed(SERVER_INIT, b"")
    client.feed(b"")
    s = session()
    with structlog.testing.capture_logs() as logs:
        s.run(client, raw, security=step, drain=0.5)
    end = [line for line in logs if line["event"] == "session.end"][-1]
    assert end["security_scheme"] == "VeNCrypt/X509Vnc"
    assert (end["rfb_version"], end["security_type"], end["desktop_name"]) == \
        ("3.8", "None", "unit")
    assert b"".join(client.sent) == SERVER_INIT
    assert not raw.sent and tls.closed
