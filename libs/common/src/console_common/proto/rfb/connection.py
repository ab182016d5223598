"""What the client and server roles share: the I/O-facing API of a sans-I/O connection.

A role subclass sets ``state`` (an enum with ``CLOSED`` and ``ERROR`` members), fills
``_out`` with handshake bytes, and implements ``_next_event()`` over ``_buf``;
``_clean_eof()`` says whether an EOF right now ends the connection between messages.
"""

from __future__ import annotations

import enum
from collections import deque

from .errors import RFBProtocolError
from .events import NEED_DATA, ConnectionClosed, Event, Need
from .messages import ReceiveBuffer


class RFBConnection:
    state: enum.Enum

    def __init__(self, out: bytes = b"") -> None:
        self._buf = ReceiveBuffer()
        self._out = bytearray(out)
        self._pending: deque = deque()

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means EOF."""
        self._buf.feed(data)

    def data_to_send(self) -> bytes:
        """Bytes the handshake queued for the peer."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """(bytes received but not yet parsed, EOF seen)."""
        return bytes(self._buf.data), self._buf.eof

    def next_event(self) -> Event | Need:
        states = type(self.state)
        if self.state is states.ERROR:
            raise RFBProtocolError("connection is in the error state after a protocol error")
        if self._pending:
            return self._pending.popleft()
        try:
            event = self._next_event()
        except RFBProtocolError:
            self.state = states.ERROR
            raise
        if event is NEED_DATA and self._buf.eof:
            if self._clean_eof() or self.state is states.CLOSED:
                self.state = states.CLOSED
                return ConnectionClosed()
            phase, self.state = self.state, states.ERROR
            raise RFBProtocolError(
                f"connection closed in the middle of a message ({phase.value} phase, "
                f"{len(self._buf)} bytes pending)"
            )
        return event

    def _clean_eof(self) -> bool:
        return not self._buf.data

    def _next_event(self) -> Event | Need:
        raise NotImplementedError
