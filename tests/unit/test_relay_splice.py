"""The relay's zero-copy path over real loopback TCP: bulk directions go through splice(2)
(a pipe appears only then), bytes arrive exact and in order, half-close and a slow reader
still work, a WebSocket destination gets well-formed binary frames."""

from __future__ import annotations

import hashlib
import os

import gevent
import pytest
from console_common.net import splice
from console_common.net.relay import RelayResult, TcpStream, relay
from console_common.proto.websocket import NEED_DATA, Close, Data, FrameReader
from gevent import socket
from console_common.net.wsstream import WsStream

pytestmark = pytest.mark.skipif(not splice.available(), reason="no splice(2) here")


@pytest.fixture
def pipes_made(monkeypatch: pytest.MonkeyPatch) -> list[splice.Pipe]:
    """Records every Pipe the relay makes (the real class: only counted)."""
    made: list[splice.Pipe] = []
    real_init = splice.Pipe.__init__

    def init(self: splice.Pipe, src_fd: int, dst_fd: int) -> None:
        real_init(self, src_fd, dst_fd)
        made.append(self)

    monkeypatch.setattr(splice.Pipe, "__init__", init)
    return made


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        a = socket.create_connection(lst.getsockname())
        b, _ = lst.accept()
    return a, b


def payload(size: int) -> bytes:
    return os.urandom(64 * 1024) * (size // (64 * 1024))


def drain_socket(sock: socket.socket, chunk: int = 256 * 1024, slow: float = 0.0) -> bytes:
    parts = []
    while data := sock.recv(chunk):
        parts.append(data)
        if slow:
            gevent.sleep(slow)
    return b"".join(parts)


def test_bulk_both_ways_is_spliced_and_exact(pipes_made: list[splice.Pipe]) -> None:
    client_far, client_near = tcp_pair()
    target_near, target_far = tcp_pair()
    up, down = payload(32 << 20), payload(32 << 20)
    result = RelayResult()
    glet = gevent.spawn(relay, TcpStream(client_near), TcpStream(target_near), 5.0,
                        result=result)

    def send(sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    senders = [gevent.spawn(send, client_far, up), gevent.spawn(send, target_far, down)]
    readers = [gevent.spawn(drain_socket, target_far), gevent.spawn(drain_socket, client_far)]
    got_up, got_down = (r.get(timeout=30) for r in readers)
    gevent.joinall(senders, raise_error=True)
    glet.get(timeout=10)
    assert hashlib.sha256(got_up).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()
    assert result.totals == {"bytes_up": len(up), "bytes_down": len(down)}
    assert len(pipes_made) == 2  # one per bulk direction
    client_far.close()
    target_far.close()


def test_small_messages_never_make_a_pipe(pipes_made: list[splice.Pipe]) -> None:
    client_far, client_near = tcp_pair()
    target_near, target_far = tcp_pair()
    glet = gevent.spawn(relay, TcpStream(client_near), TcpStream(target_near), 5.0)
    for i in range(50):
        client_far.sendall(b"key %d" % i)
        assert target_far.recv(100) == b"key %d" % i
        target_far.sendall(b"update %d" % i)
        assert client_far.recv(100) == b"update %d" % i
    client_far.close()
    target_far.close()
    glet.get(timeout=5)
    assert pipes_made == []


def test_a_slow_reader_slows_the_spliced_writer() -> None:
    """Back-pressure: the pipe is the only buffer of ours, so a reader pausing after every read
    holds the sender back instead of the proxy's memory growing."""
    client_far, client_near = tcp_pair()
    client_far.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # no autotuning
    target_near, target_far = tcp_pair()
    glet = gevent.spawn(relay, TcpStream(client_near), TcpStream(target_near), 5.0)
    data = payload(64 << 20)  # more than the kernel's socket buffers and the pipe hold
    sender = gevent.spawn(lambda: (target_far.sendall(data), target_far.close()))
    try:
        gevent.sleep(0.3)
        assert not sender.ready()
        got = drain_socket(client_far, 1 << 20, slow=0.001)
        sender.get(timeout=20)
        glet.get(timeout=5)
        assert got == data
    finally:
        client_far.close()
        target_far.close()


def test_websocket_destination_gets_binary_frames_from_the_pipe(
        pipes_made: list[splice.Pipe]) -> None:
    client_far, client_near = tcp_pair()
    target_near, target_far = tcp_pair()
    ws = WsStream(client_near)
    glet = gevent.spawn(relay, ws, TcpStream(target_near), 5.0)
    data = payload(16 << 20)
    gevent.spawn(lambda: (target_far.sendall(data), target_far.shutdown(socket.SHUT_WR)))
    reader = FrameReader("client", max_message=1 << 30, max_buffer=1 << 20)
    parts, closed = [], None
    while closed is None:
        event = reader.next_event()
        if event is NEED_DATA:
            reader.receive_data(client_far.recv(256 * 1024))
        elif isinstance(event, Data):
            parts.append(event.payload)
        elif isinstance(event, Close):
            closed = event.code
    assert b"".join(parts) == data
    assert closed == 1000  # the target's EOF became a normal close
    assert len(pipes_made) == 1
    client_far.close()
    target_far.close()
    glet.get(timeout=5)
    client_near.close()  # the HTTP handler's socket: WsStream leaves it open


def test_websocket_source_is_unmasked_not_spliced(pipes_made: list[splice.Pipe]) -> None:
    """Bulk client data over a WebSocket must reach the target unmasked: that direction
    copies through Python even when it is bulk."""
    from console_common.proto.websocket import encode_binary

    client_far, client_near = tcp_pair()
    target_near, target_far = tcp_pair()
    ws = WsStream(client_near, max_message=1 << 20)
    glet = gevent.spawn(relay, ws, TcpStream(target_near), 5.0)
    data = payload(8 << 20)
    frames = [encode_binary(data[i:i + (256 << 10)], mask=os.urandom(4))
              for i in range(0, len(data), 256 << 10)]
    gevent.spawn(client_far.sendall, b"".join(frames))
    got = bytearray()
    while len(got) < len(data):
        got += target_far.recv(256 * 1024)
    assert bytes(got) == data
    assert pipes_made == []
    client_far.close()
    target_far.close()
    glet.get(timeout=5)
    client_near.close()


def test_prepended_bytes_go_first_then_the_bulk_is_spliced(pipes_made: list[splice.Pipe]) -> None:
    """Bytes that came with a CONNECT answer or a preamble (TcpStream.prepend) are relayed
    before anything read from the socket, also when the rest goes through a pipe."""
    client_far, client_near = tcp_pair()
    target_near, target_far = tcp_pair()
    target = TcpStream(target_near)
    target.prepend(b"RFB 003.008\n")
    assert target.splice_fd is None  # not while prepended bytes are waiting
    glet = gevent.spawn(relay, TcpStream(client_near), target, 5.0)
    data = payload(8 << 20)
    gevent.spawn(lambda: (target_far.sendall(data), target_far.shutdown(socket.SHUT_WR)))
    try:
        got = drain_socket(client_far)
        assert got == b"RFB 003.008\n" + data
        assert len(pipes_made) == 1
    finally:
        client_far.close()
        target_far.close()
        glet.get(timeout=5)
