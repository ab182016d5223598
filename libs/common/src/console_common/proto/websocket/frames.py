"""RFC 6455 framing, both roles, sans-I/O.

``FrameReader`` turns received bytes into events. Data payload is *streamed*: a
``Data`` event is emitted for whatever payload bytes are in hand, so a reader costs
the size of one read, never the size of a message. Message size is capped from the
frame headers alone (close 1009), before any payload is buffered.

The ``encode_*`` functions turn frames into bytes. The server role sends unmasked
frames; the client role passes the 4-byte masking key it drew (pure code draws no
randomness).
"""

from __future__ import annotations

import codecs
import enum
import struct
from dataclasses import dataclass
from typing import Final, Literal

Buffer = bytes | bytearray | memoryview

__all__ = [
    "NEED_DATA",
    "Close",
    "CloseCode",
    "ConnectionClosed",
    "Data",
    "FrameEvent",
    "FrameReader",
    "Need",
    "Opcode",
    "ParseFailed",
    "Ping",
    "Pong",
    "encode_binary",
    "encode_close",
    "encode_frame",
    "encode_ping",
    "encode_pong",
    "encode_text",
    "is_valid_close_code",
    "unmask",
]


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005  # reported, never sent: a close frame without a code
    ABNORMAL = 1006  # reported, never sent: the connection ended without a close frame
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011


class Need(enum.Enum):
    DATA = "need data"


NEED_DATA: Final = Need.DATA

_DATA_OPCODES: Final = frozenset((0x0, 0x1, 0x2))
_CONTROL_OPCODES: Final = frozenset((0x8, 0x9, 0xA))
_MAX_CONTROL_PAYLOAD: Final = 125


class ParseFailed(Exception):
    """The peer broke the protocol; ``code`` is the close code to answer with.

    ``code`` 1006 means the peer went away mid-frame: there is nobody to send a
    close frame to (1006 itself is never sent).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message

    def __reduce__(self) -> tuple[type[ParseFailed], tuple[int, str]]:
        return type(self), (self.code, self.message)


@dataclass(frozen=True, slots=True)
class Data:
    """A chunk of a data message; ``message_finished`` on its last chunk."""

    payload: bytes
    message_finished: bool
    is_text: bool


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer's close frame; code 1005 when it carried no code."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """EOF between frames, with no close frame and no message open (an abrupt close)."""


FrameEvent = Data | Ping | Pong | Close | ConnectionClosed


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire (RFC 6455 7.4)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999


try:  # websockets' C helper XORs 8 bytes at a time (~30 GB/s here, vs ~0.4 for big ints)
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover - the pure fallback below is correct, only slower
    _apply_mask = None


def unmask(data: Buffer, mask: bytes, offset: int = 0) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``, ``data`` starting ``offset`` bytes into
    the payload (masking is symmetric: this also masks)."""
    if _apply_mask is not None:
        o = offset & 3
        return _apply_mask(data, mask[o:] + mask[:o] if o else mask)
    n = len(memoryview(data))
    o = offset & 3
    key = int.from_bytes((mask * ((n + o + 3) >> 2))[o : o + n], "little")
    # No Python loop per byte: big integers convert and XOR in C, a machine word at a time.
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


class FrameReader:
    """Streaming RFC 6455 frame parser for one direction of one connection.

    ``role="server"`` reads a client's frames (they must be masked); ``role="client"``
    reads a server's frames (they must not be). Feed bytes with ``receive_data`` (``b""``
    is EOF) and call ``next_event`` until it returns ``NEED_DATA``; it raises
    ``ParseFailed`` (and keeps raising it) when the peer breaks the protocol.

    ``max_message`` caps a data message (the sum of its fragments, from the headers);
    ``max_buffer`` caps bytes fed but not yet consumed (a caller that feeds without
    draining gets ``ValueError``). After a ``Close`` event nothing more is yielded and
    further bytes are discarded.

    Bytes fed while nothing is left over are parsed in place, not copied: payload is
    unmasked (or, unmasked frames, sliced) straight from the caller's chunk, so a chunk
    costs one copy. The reader may keep a view of ``data`` until ``next_event`` returns
    ``NEED_DATA`` (what is left then, part of a header or control frame, is copied):
    a caller reusing a buffer must not overwrite it before that.
    """

    __slots__ = ("_buf", "_closed", "_eof", "_error", "_expect_masked", "_fin", "_mask",
                 "_max_buffer", "_max_message", "_msg_opcode", "_msg_size", "_offset",
                 "_opcode", "_remaining", "_utf8", "_vdata", "_view", "_vpos")

    def __init__(
        self,
        role: Literal["server", "client"] = "server",
        max_message: int = 1 << 20,
        max_buffer: int = 1 << 18,
    ) -> None:
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self._expect_masked = role == "server"
        self._max_message = max_message
        self._max_buffer = max_buffer
        # Unconsumed input lives in exactly one place: _buf (bytes left over from earlier
        # chunks) or _view[_vpos:] (the chunk just fed, parsed in place; _vdata is that
        # chunk when it is bytes, so a payload spanning all of it is returned as is).
        self._buf = bytearray()
        self._view: memoryview | None = None
        self._vdata: bytes | None = None
        self._vpos = 0
        self._eof = False
        self._closed = False
        self._error: ParseFailed | None = None
        # the frame being read; _opcode is None between frames
        self._opcode: int | None = None
        self._fin = False
        self._mask: bytes | None = None
        self._remaining = 0
        self._offset = 0
        # the data message being read; _msg_opcode is None between messages
        self._msg_opcode: int | None = None
        self._msg_size = 0
        self._utf8: codecs.IncrementalDecoder | None = None

    @property
    def closed(self) -> bool:
        """True once a ``Close`` event has been returned."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        view = self._view
        return len(self._buf) if view is None else len(view) - self._vpos

    def receive_data(self, data: Buffer) -> None:
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() after EOF")
        if self._closed or self._error is not None:
            return  # nothing more is read after a close or a protocol error
        view = memoryview(data)
        if view.itemsize != 1 or view.ndim != 1:
            view = view.cast("B")
        if self.buffered + len(view) > self._max_buffer:
            raise ValueError(
                f"more than {self._max_buffer} bytes buffered: "
                "call next_event() until NEED_DATA before feeding more"
            )
        if self._view is not None:
            self._spill()
        if self._buf:
            self._buf += view
        else:  # nothing left over: parse this chunk in place
            self._view, self._vpos = view, 0
            self._vdata = data if type(data) is bytes else None

    def _spill(self) -> None:
        """Copy what is left of the fed chunk into _buf and let the chunk go."""
        view = self._view
        if view is not None:
            self._buf += view[self._vpos :]
            self._view = self._vdata = None
            self._vpos = 0

    def _drop(self) -> None:
        self._buf.clear()
        self._view = self._vdata = None
        self._vpos = 0

    def next_event(self) -> FrameEvent | Literal[Need.DATA]:
        if self._error is not None:
            raise ParseFailed(self._error.code, self._error.message)
        if self._closed:
            return NEED_DATA
        try:
            event = self._next_event()
        except ParseFailed as exc:
            self._error = exc
            self._drop()
            raise
        if event is NEED_DATA:
            self._spill()  # at most a header or a control frame's worth
        return event

    def _next_event(self) -> FrameEvent | Literal[Need.DATA]:
        while True:
            if self._opcode is None and not self._read_header():
                if not self._eof:
                    return NEED_DATA
                if self.buffered:
                    raise ParseFailed(CloseCode.ABNORMAL, "connection closed inside a frame header")
                if self._msg_opcode is not None:
                    raise ParseFailed(
                        CloseCode.ABNORMAL, "connection closed inside a fragmented message"
                    )
                return ConnectionClosed()
            opcode = self._opcode
            assert opcode is not None
            if opcode >= 0x8:
                n = self._remaining
                if self.buffered < n:
                    return self._need_payload()
                payload = self._take(n)
                self._opcode = None
                return self._control_event(opcode, payload)
            n = min(self._remaining, self.buffered)
            if n == 0 and self._remaining:
                return self._need_payload()
            payload = self._take(n)
            self._remaining -= n
            frame_done = self._remaining == 0
            finished = frame_done and self._fin
            utf8 = self._utf8
            if utf8 is not None:
                try:
                    utf8.decode(payload, finished)
                except UnicodeDecodeError as exc:
                    raise ParseFailed(
                        CloseCode.INVALID_DATA, "invalid UTF-8 in a text message"
                    ) from exc
            is_text = self._msg_opcode == Opcode.TEXT
            if frame_done:
                self._opcode = None
            if finished:
                self._msg_opcode = None
                self._msg_size = 0
                self._utf8 = None
            if payload or finished:
                return Data(payload, finished, is_text)
            # an empty frame that ends nothing: nothing to report, read on

    def _need_payload(self) -> Literal[Need.DATA]:
        if self._eof:
            raise ParseFailed(CloseCode.ABNORMAL, "connection closed inside a frame payload")
        return NEED_DATA

    def _read_header(self) -> bool:
        """Consume one frame header if all of it is buffered; validate as early as possible."""
        view = self._view
        if view is None:
            buf: Buffer = self._buf
            base = 0
        else:
            buf, base = view, self._vpos
        have = len(buf) - base
        if have < 2:
            return False
        b0, b1 = buf[base], buf[base + 1]
        fin = bool(b0 & 0x80)
        opcode = b0 & 0x0F
        if b0 & 0x70:
            raise ParseFailed(
                CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension negotiated)"
            )
        masked = bool(b1 & 0x80)
        if masked != self._expect_masked:
            raise ParseFailed(
                CloseCode.PROTOCOL_ERROR,
                "client frame not masked" if self._expect_masked else "server frame masked",
            )
        length = b1 & 0x7F
        if opcode in _CONTROL_OPCODES:
            if not fin:
                raise ParseFailed(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if length > _MAX_CONTROL_PAYLOAD:
                raise ParseFailed(CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes")
        elif opcode == Opcode.CONTINUATION:
            if self._msg_opcode is None:
                raise ParseFailed(CloseCode.PROTOCOL_ERROR, "continuation frame outside a message")
        elif opcode in _DATA_OPCODES:
            if self._msg_opcode is not None:
                raise ParseFailed(
                    CloseCode.PROTOCOL_ERROR, "new data frame inside a fragmented message"
                )
        else:
            raise ParseFailed(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        pos = 2
        if length == 126:
            if have < 4:
                return False
            length = (buf[base + 2] << 8) | buf[base + 3]
            if length < 126:
                raise ParseFailed(CloseCode.PROTOCOL_ERROR, "payload length not minimally encoded")
            pos = 4
        elif length == 127:
            if have < 10:
                return False
            length = int.from_bytes(buf[base + 2 : base + 10], "big")
            if length >> 63:
                raise ParseFailed(CloseCode.PROTOCOL_ERROR, "payload length with the top bit set")
            if length < 1 << 16:
                raise ParseFailed(CloseCode.PROTOCOL_ERROR, "payload length not minimally encoded")
            pos = 10
        if opcode in _DATA_OPCODES and self._msg_size + length > self._max_message:
            raise ParseFailed(
                CloseCode.MESSAGE_TOO_BIG,
                f"message of at least {self._msg_size + length} bytes exceeds {self._max_message}",
            )
        if masked:
            if have < pos + 4:
                return False
            self._mask = bytes(buf[base + pos : base + pos + 4])
            pos += 4
        else:
            self._mask = None
        self._consume(pos)
        self._opcode, self._fin, self._remaining, self._offset = opcode, fin, length, 0
        if opcode in _DATA_OPCODES:
            if opcode != Opcode.CONTINUATION:
                self._msg_opcode = opcode
                self._utf8 = _utf8_decoder() if opcode == Opcode.TEXT else None
            self._msg_size += length
        return True

    def _consume(self, n: int) -> None:
        view = self._view
        if view is None:
            del self._buf[:n]
            return
        self._vpos += n
        if self._vpos == len(view):  # all of the chunk consumed: let it go
            self._view = self._vdata = None
            self._vpos = 0

    def _take(self, n: int) -> bytes:
        """Consume ``n`` payload bytes of the current frame, unmasked."""
        mask = self._mask
        view = self._view
        if view is None:
            buf = self._buf
            if n == len(buf):
                chunk = bytes(buf)
                buf.clear()
            else:
                chunk = bytes(memoryview(buf)[:n])
                del buf[:n]
            if mask is not None and n:
                chunk = unmask(chunk, mask, self._offset)
        else:  # straight from the fed chunk: one copy (the unmasked bytes), or none
            pos = self._vpos
            data = self._vdata
            if mask is not None and n:
                chunk = unmask(view[pos : pos + n], mask, self._offset)
            elif data is not None and pos == 0 and n == len(data):
                chunk = data
            else:
                chunk = bytes(view[pos : pos + n])
            self._consume(n)
        self._offset += n
        return chunk

    def _control_event(self, opcode: int, payload: bytes) -> Ping | Pong | Close:
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        close = _parse_close(payload)
        self._closed = True
        self._drop()
        return close


def _utf8_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")("strict")


def _parse_close(payload: bytes) -> Close:
    if not payload:
        return Close(int(CloseCode.NO_STATUS), "")
    if len(payload) == 1:
        raise ParseFailed(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if not is_valid_close_code(code):
        raise ParseFailed(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseFailed(CloseCode.INVALID_DATA, "close reason is not valid UTF-8") from exc
    return Close(code, reason)


# --- encoders -------------------------------------------------------------------------


def encode_frame(
    opcode: int, payload: Buffer = b"", fin: bool = True, mask: bytes | None = None
) -> bytes:
    """One frame as bytes. ``mask=None`` for the server role; the client role passes a
    fresh 4-byte key. Unmasked, the payload is copied once (header + payload)."""
    op = Opcode(opcode)
    n = len(memoryview(payload))
    if op >= Opcode.CLOSE and (n > _MAX_CONTROL_PAYLOAD or not fin):
        raise ValueError("control frames carry at most 125 bytes and are never fragmented")
    b0 = (0x80 if fin else 0) | op
    mbit = 0 if mask is None else 0x80
    if n < 126:
        header = bytes((b0, mbit | n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        header = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is None:
        return b"".join((header, payload))
    if len(mask) != 4:
        raise ValueError("a masking key is 4 bytes")
    return b"".join((header, mask, unmask(payload, mask) if n else b""))


def encode_binary(payload: Buffer, fin: bool = True, mask: bytes | None = None) -> bytes:
    return encode_frame(Opcode.BINARY, payload, fin, mask)


def encode_text(text: str, mask: bytes | None = None) -> bytes:
    return encode_frame(Opcode.TEXT, text.encode("utf-8"), True, mask)


def encode_ping(payload: Buffer = b"", mask: bytes | None = None) -> bytes:
    return encode_frame(Opcode.PING, payload, True, mask)


def encode_pong(payload: Buffer = b"", mask: bytes | None = None) -> bytes:
    return encode_frame(Opcode.PONG, payload, True, mask)


def encode_close(
    code: int | None = CloseCode.NORMAL, reason: str = "", mask: bytes | None = None
) -> bytes:
    """A close frame. ``code=None`` sends none (the peer sees 1005). A reason longer than
    the 123 bytes a control frame leaves is cut at a character boundary."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return encode_frame(Opcode.CLOSE, b"", True, mask)
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    raw = reason.encode("utf-8")
    if len(raw) > _MAX_CONTROL_PAYLOAD - 2:
        raw = raw[: _MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(Opcode.CLOSE, code.to_bytes(2, "big") + raw, True, mask)
