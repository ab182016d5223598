"""net.rfbsecurity.negotiate over socket pairs: our own RFB server role (VNC authentication)
as the VNC server, a scripted viewer as the client. Passing bytes on, failures told to the
viewer, bounded waits. (Real QEMU and Xvnc: tests/integration/test_security_proxy.py.)"""

from __future__ import annotations

import struct

import gevent
import pytest
from gevent import socket

from console_common.net.relay import TcpStream
from console_common.net.rfbsecurity import FAILED_REASON, SecurityFailed, SecurityPolicy, negotiate
from console_common.proto.rfb import NEED_DATA, AuthResult, ClientInit, RFBServerConnection

PASSWORD = "pw-12345"
CHALLENGE = bytes(range(16))


def vnc_server(sock: socket.socket, password: str, seen: list) -> None:
    """A VNC server with VNC authentication: serves until ClientInit, then holds on."""
    conn = RFBServerConnection("unit", 64, 48, password=password.encode(), challenge=CHALLENGE)
    sock.sendall(conn.data_to_send())
    while True:
        data = sock.recv(4096)
        if not data:
            return
        conn.receive_data(data)
        while (event := conn.next_event()) is not NEED_DATA:
            seen.append(event)
            if isinstance(event, AuthResult) and not event.ok:
                sock.sendall(conn.data_to_send())
                sock.close()
                return
        sock.sendall(conn.data_to_send())
        if any(isinstance(e, ClientInit) for e in seen):
            return


def pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


@pytest.fixture
def wires():
    opened: list[socket.socket] = []

    def make() -> tuple[socket.socket, socket.socket]:
        a, b = pair()
        opened.extend((a, b))
        return a, b
    yield make
    for sock in opened:
        sock.close()


def test_a_33_viewer_gets_none_and_its_client_init_reaches_the_server(wires) -> None:
    proxy_t, server_end = wires()
    proxy_c, viewer = wires()
    seen: list = []
    server = gevent.spawn(vnc_server, server_end, PASSWORD, seen)
    viewer.sendall(b"RFB 003.003\n\x01")  # a 3.3 viewer, its ClientInit pipelined
    done = negotiate(SecurityPolicy(("vnc",), timeout=5), TcpStream(proxy_c),
                     TcpStream(proxy_t), PASSWORD)
    assert done.scheme == "VncAuth"
    assert done.client_early == b"\x01"
    assert done.to_client == b"RFB 003.008\n" + struct.pack(">I", 1)
    assert done.from_client == b"RFB 003.003\n\x01"
    server.join(5)
    assert seen[-2:] == [AuthResult(True), ClientInit(True)]
    got = b""
    while len(got) < 16:
        got += viewer.recv(100)
    assert got == b"RFB 003.008\n" + struct.pack(">I", 1)


def test_a_wrong_password_is_told_to_an_xvp_viewer(wires) -> None:
    proxy_t, server_end = wires()
    proxy_c, viewer = wires()
    gevent.spawn(vnc_server, server_end, "other", [])
    viewer.sendall(b"RFB 003.008\n")
    with pytest.raises(SecurityFailed) as info:
        negotiate(SecurityPolicy(("vnc",), timeout=5), TcpStream(proxy_c), TcpStream(proxy_t),
                  PASSWORD, refuse_client=True)
    assert info.value.close_reason == "security_failed"
    assert info.value.cause == ("the VNC server refused authentication (VncAuth): "
                                "authentication failed")
    assert PASSWORD not in str(info.value)
    reply = viewer.recv(100)
    assert reply == b"RFB 003.008\n\x00" + struct.pack(">I", len(FAILED_REASON)) \
        + FAILED_REASON.encode()


def test_a_silent_server_is_bounded(wires) -> None:
    proxy_t, _server_end = wires()
    proxy_c, _viewer = wires()
    with pytest.raises(SecurityFailed, match="did not complete its handshake in 0.2s"):
        negotiate(SecurityPolicy(("vnc",), timeout=0.2), TcpStream(proxy_c),
                  TcpStream(proxy_t), PASSWORD)


def test_a_viewer_leaving_is_client_closed(wires) -> None:
    proxy_t, server_end = wires()
    proxy_c, viewer = wires()
    gevent.spawn(vnc_server, server_end, PASSWORD, [])
    viewer.close()
    with pytest.raises(SecurityFailed) as info:
        negotiate(SecurityPolicy(("vnc",), timeout=5), TcpStream(proxy_c), TcpStream(proxy_t),
                  PASSWORD)
    assert info.value.close_reason == "client_closed"


@pytest.mark.parametrize(("args", "option"), [
    ((("tls",),), "auth_schemes"),
    (((),), "auth_schemes"),
    ((("vencrypt",),), "vencrypt_ca_certs"),
    ((("vencrypt",), "/nonexistent.pem"), "vencrypt_ca_certs"),
    ((("vnc",), "", "/c.pem"), "vencrypt_client_key"),
])
def test_bad_policies_name_their_option(args: tuple, option: str) -> None:
    with pytest.raises(ValueError) as info:
        SecurityPolicy.build(*args)
    assert info.value.args[1] == option


def test_none_alone_is_no_security_proxy() -> None:
    assert not SecurityPolicy.build(("none",)).active
    assert SecurityPolicy.build(("vnc", "none", "vnc")).schemes == ("vnc", "none")


def test_a_server_refusing_the_connection_is_named(wires) -> None:
    proxy_t, server_end = wires()
    proxy_c, _viewer = wires()

    def refusing() -> None:
        conn = RFBServerConnection("", 0, 0, refuse="too many clients")
        server_end.sendall(conn.data_to_send())
        conn.receive_data(server_end.recv(100))
        conn.next_event()
        server_end.sendall(conn.data_to_send())

    gevent.spawn(refusing)
    with pytest.raises(SecurityFailed) as info:
        negotiate(SecurityPolicy(("vnc",), timeout=5), TcpStream(proxy_c), TcpStream(proxy_t),
                  PASSWORD)
    assert info.value.cause == "the VNC server refused the connection: too many clients"
