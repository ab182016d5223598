"""A WebSocket connection as a relay ``Stream`` (recv/sendall/shutdown_write/close), for
both ends: ``role="server"`` (novncproxy, after its 101: unmasked frames out, masked
frames in) and ``role="client"`` (consolectl vnc-bridge, which dials a proxy: every frame
out masked with a fresh random key, unmasked frames in).

Framing is our sans-I/O core (``console_common.proto.websocket``): ``FrameReader`` streams data
payload as it arrives (a read costs its own size, never a message's), caps messages from
the headers alone and refuses unmasked frames; this module only does the I/O around it.

- ``recv(n)``: the data bytes in hand, up to ``n``: every data frame already received
  (of binary or text messages; text is relayed as its UTF-8 bytes), joined; answers pings with pongs, echoes a close frame's code and then returns
  ``b""`` (EOF); a protocol violation is answered with its close code (1002, 1007, 1009)
  and then ends reading like an EOF, with ``close_reason`` naming it for the session log.
- ``sendall(data)``: one binary frame per chunk. As a server, small frames go out as one
  buffer, large ones as header + payload in one ``sendmsg`` (no copy of the payload) on
  plain TCP, one joined buffer over TLS (which copies into records anyway). As a client,
  each frame is masked (vectorised) into one buffer.
- ``send_pipe(pipe)``: the relay's zero-copy path for bulk target data (a server on plain
  TCP only; ``splice_fd`` is None over TLS and for a client, whose frames must be masked):
  one binary frame per pipe load, its header sent with MSG_MORE and the payload spliced
  from the pipe, never copied through Python.
- ``shutdown_write()``: close 1000 "console closed the connection" (the target ended).
  ``close(code, reason)``: the close frame if none went out yet, then the socket.
  ``cut(code, reason)``: from another greenlet (shutdown 1001, revocation 1008): send the
  close frame, then end our reads so the relay finishes.

Writes from the two relay directions (data frames one way, pongs/close echoes the other)
are serialised by a lock, so frames never interleave. Nothing is logged here.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any

import gevent
import gevent.lock
from console_common.proto.websocket import (
    NEED_DATA,
    Close,
    CloseCode,
    ConnectionClosed,
    Data,
    FrameReader,
    ParseFailed,
    Ping,
    Pong,
    encode_binary,
    encode_close,
    encode_ping,
    encode_pong,
)

READ_SIZE = 256 * 1024
SMALL_FRAME = 16 * 1024  # below this, one joined buffer beats a scatter-gather send
CLOSE_SEND_TIMEOUT = 1.0  # a client that reads nothing cannot hold a close for long

_REASONS = {
    CloseCode.PROTOCOL_ERROR: "protocol_error",
    CloseCode.INVALID_DATA: "invalid_data",
    CloseCode.MESSAGE_TOO_BIG: "message_too_big",
    CloseCode.ABNORMAL: "client_aborted",
}


def _binary_header(n: int) -> bytes:
    if n < 126:
        return bytes((0x82, n))
    if n < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, n)
    return struct.pack("!BBQ", 0x82, 127, n)


class WsStream:
    """One WebSocket after its handshake, over a connected (maybe TLS) socket.

    ``early``: bytes the peer sent right after the handshake, read with it; every read
    after them goes to the socket. ``owns_socket``: ``close()`` closes the socket too
    (a server's socket belongs to its HTTP connection, which closes it).
    """

    def __init__(self, sock: socket.socket, max_message: int = 1 << 20, tls: bool = False,
                 early: bytes = b"", role: str = "server", owns_socket: bool = False) -> None:
        self._sock = sock
        self._recv = sock.recv
        self._reader = FrameReader(role, max_message=max_message,
                                   max_buffer=READ_SIZE + 4096)
        if early:
            self._reader.receive_data(early)
        self._lock = gevent.lock.Semaphore()
        self._sendall = sock.sendall
        self._masked = role == "client"  # RFC 6455: a client masks every frame it sends
        self._owns_socket = owns_socket
        self._sendmsg = None if tls or self._masked else getattr(sock, "sendmsg", None)
        self._eof = False  # a close or EOF was read while data was still to be returned
        self.close_sent: int | None = None  # the code we sent (0: a close without code)
        self.close_received: int | None = None  # the peer's code (1005: none)
        self.closed = False
        self.close_reason: str | None = None  # set when the client broke the protocol
        self.error = ""
        # heartbeat (sessions.limits.SessionClock): since when a ping of ours is unanswered
        self.ping_unanswered_since: float | None = None
        self._pinging = False

    # --- reading -------------------------------------------------------------------------

    def recv(self, size: int = READ_SIZE) -> bytes:
        """The data payload already received, up to ``size`` (one read's worth): every
        data frame in hand, joined, so a read of many frames is one ``sendall`` on."""
        if self._eof:
            return b""
        reader = self._reader
        room = READ_SIZE + 4096
        parts: list[bytes] = []
        total = 0
        while True:
            try:
                event = reader.next_event()
            except ParseFailed as exc:
                if parts:  # the error is sticky: hand over the data, report it next call
                    break
                # Ends this direction like an EOF (the relay passes it on); the session
                # reads close_reason. Raising would only print a greenlet error.
                if exc.code != CloseCode.ABNORMAL:
                    self._send_close(exc.code, exc.message[:100])
                self.close_reason = _REASONS.get(exc.code, "protocol_error")
                self.error = f"{exc.code}: {exc.message}"
                return b""
            if event is NEED_DATA:
                if parts:
                    break  # never wait for more while holding data
                reader.receive_data(self._recv(min(size, room - reader.buffered)))
                continue
            kind = type(event)
            if kind is Data:
                if event.payload:
                    parts.append(event.payload)
                    total += len(event.payload)
                    if total >= size:
                        break
            elif kind is Ping:
                self._send_control(encode_pong(event.payload, mask=self._mask()))
            elif kind is Pong:
                self.ping_unanswered_since = None  # any pong: the peer is alive
            elif kind is Close:
                self.close_received = event.code
                if self.close_sent is None:  # echo the peer's code (none for 1005)
                    code = None if event.code == CloseCode.NO_STATUS else event.code
                    self._send_close(code)
                self._eof = True
                break
            elif kind is ConnectionClosed:
                self._eof = True
                break
            # Pong, or an empty non-final data frame: nothing to relay, read on
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    # --- writing -------------------------------------------------------------------------

    def _mask(self) -> bytes | None:
        return os.urandom(4) if self._masked else None

    def sendall(self, data: bytes) -> None:
        if self.close_sent is not None:
            return  # closing: RFC 6455 allows no data after our close frame
        if self._masked:
            frame = encode_binary(data, mask=os.urandom(4))  # vectorised masking
            with self._lock:
                self._sendall(frame)
            return
        n = len(data)
        header = _binary_header(n)
        with self._lock:
            if n < SMALL_FRAME or self._sendmsg is None:
                self._sendall(header + data)
                return
            sent = self._sendmsg((header, data))
            if sent < len(header):
                self._sendall(header[sent:])
                self._sendall(data)
            elif sent - len(header) < n:
                self._sendall(memoryview(data)[sent - len(header):])

    @property
    def splice_fd(self) -> int | None:
        return None if self._sendmsg is None else self._sock.fileno()

    def send_pipe(self, pipe: Any) -> None:
        if self.close_sent is not None:
            pipe.discard()
            return
        with self._lock:
            pipe.send_header(self._sock, _binary_header(pipe.held))
            pipe.drain()

    def ping(self, now: float | None = None) -> None:
        """Send a ping from the session clock's greenlet without ever blocking it: the
        frame goes out from a greenlet of its own (it may wait behind a data send to a
        slow client), one at a time. The pong clears ``ping_unanswered_since``."""
        if self._pinging or self.close_sent is not None:
            return
        if self.ping_unanswered_since is None:
            self.ping_unanswered_since = time.monotonic() if now is None else now
        self._pinging = True
        gevent.spawn(self._ping)

    def _ping(self) -> None:
        try:
            self._send_control(encode_ping(b"", mask=self._mask()))
        except (OSError, ValueError):
            pass  # the peer is gone: the relay sees it too, and the clock's deadline holds
        finally:
            self._pinging = False

    def _send_control(self, frame: bytes) -> None:
        if self.close_sent is not None:
            return
        with self._lock:
            self._sendall(frame)

    def _send_close(self, code: int | None, reason: str = "") -> bool:
        """Send our close frame once; False when it could not go out (peer gone/stuck)."""
        if self.close_sent is not None:
            return True
        self.close_sent = code or 0
        frame = encode_close(code, reason if code is not None else "", mask=self._mask())
        timer = gevent.Timeout(CLOSE_SEND_TIMEOUT)
        timer.start()
        try:
            with self._lock:
                self._sendall(frame)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            return False
        except (OSError, ValueError):
            return False
        finally:
            timer.close()
        return True

    # --- ending --------------------------------------------------------------------------

    def shutdown_write(self) -> None:
        """The target ended: a normal close (1000), with a reason a user can read (the
        VNC server closed or died). The client answers with its close."""
        self._send_close(CloseCode.NORMAL, "console closed the connection")

    def cut_target_lost(self) -> None:
        """The console connection failed mid-session: tell the client 1011."""
        self._send_close(CloseCode.INTERNAL_ERROR, "console connection lost")

    def cut(self, code: int, reason: str) -> None:
        """End the session from another greenlet: close frame, then EOF for our reader."""
        self._send_close(code, reason)
        shutdown_reads(self._sock)

    def abort(self) -> None:
        """End the session at once without a close frame, from another greenlet: for a
        peer that reads nothing (stalled, or dead: no pong), so a send blocked on it fails
        now rather than after the drain."""
        self.close_sent = self.close_sent if self.close_sent is not None else 0
        shutdown_reads(self._sock, socket.SHUT_RDWR)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self._send_close(code, reason)
        # A server's socket belongs to its HTTP connection, which closes it once the
        # session returns (closing it here too would let a stale object close a reused fd).
        if self._owns_socket:
            self._sock.close()


def shutdown_reads(sock: socket.socket, how: int = socket.SHUT_RD) -> None:
    """Make a reader blocked on ``sock`` see EOF (and with SHUT_RDWR a blocked writer fail).
    Done on a duplicate of the descriptor, not through an SSL wrapper (whose shutdown()
    drops the TLS state first)."""
    try:
        fd = sock.fileno()
        if fd < 0:
            return
        dup = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        dup.shutdown(how)
    except OSError:
        pass  # not connected any more: the reader sees that already
    finally:
        dup.close()
