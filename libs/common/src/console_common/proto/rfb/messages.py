"""Wire encoding of RFB messages: pure functions shared by both roles and the observer."""

from __future__ import annotations

import re
import struct

from .errors import RFBLocalError, RFBProtocolError
from .events import (
    ENCODING_COPY_RECT,
    ENCODING_CURSOR,
    ENCODING_DESKTOP_SIZE,
    ENCODING_EXTENDED_DESKTOP_SIZE,
    ENCODING_LAST_RECT,
    ENCODING_RAW,
    Bell,
    ClientCutText,
    ExtendedClientMessage,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    KeyEvent,
    PixelFormat,
    PointerEvent,
    ServerCutText,
    ServerInit,
    SetColourMapEntries,
    SetEncodings,
    SetPixelFormat,
)

Version = tuple[int, int]
KNOWN_VERSIONS: tuple[Version, ...] = ((3, 3), (3, 7), (3, 8))
VERSION_SIZE = 12
MAX_REASON = 64 * 1024
MAX_NAME = 64 * 1024

_VERSION_RE = re.compile(rb"RFB (\d{3})\.(\d{3})\n\Z")
_U32 = struct.Struct(">I")


class ReceiveBuffer:
    """Bytes received and not yet consumed, plus whether the peer sent EOF."""

    __slots__ = ("data", "eof")

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False

    def feed(self, data: bytes) -> None:
        if not data:
            self.eof = True
        elif self.eof:
            raise RFBLocalError("receive_data() after EOF")
        else:
            self.data += data

    def __len__(self) -> int:
        return len(self.data)

    def take(self, n: int) -> bytes:
        with memoryview(self.data) as view:
            out = bytes(view[:n])  # one copy, even for a multi-megabyte Raw rectangle
        del self.data[:n]
        return out

    def u8(self, offset: int) -> int:
        return self.data[offset]

    def u16(self, offset: int) -> int:
        return int.from_bytes(self.data[offset : offset + 2], "big")

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.data[offset : offset + 4], "big")


# --- version --------------------------------------------------------------------------


def encode_version(version: Version) -> bytes:
    return b"RFB %03d.%03d\n" % version


def check_version_prefix(data: bytearray | bytes) -> None:
    """Refuse early when the first bytes cannot start a ProtocolVersion line."""
    head = bytes(data[:4])
    if not b"RFB ".startswith(head):
        raise RFBProtocolError(f"not an RFB peer: expected 'RFB xxx.yyy\\n', got {head!r}")


def parse_version(line: bytes) -> Version:
    m = _VERSION_RE.match(line)
    if m is None:
        raise RFBProtocolError(f"bad RFB ProtocolVersion {line!r}")
    return int(m.group(1)), int(m.group(2))


def negotiate_version(peer: Version, ours: Version) -> Version:
    """RFC 6143 7.1.1: 3.7 and 3.8 as offered; any other version means 3.3 (e.g. Apple 3.889)."""
    if peer in ((3, 7), (3, 8)):
        return min(peer, ours)
    return (3, 3)


def reason_at(buf: ReceiveBuffer, offset: int) -> tuple[str, int] | None:
    """A ``u32 length + text`` failure reason at ``offset``: (text, bytes used) or None."""
    if len(buf) < offset + 4:
        return None
    n = buf.u32(offset)
    if n > MAX_REASON:
        raise RFBProtocolError(f"failure reason of {n} bytes exceeds {MAX_REASON}")
    if len(buf) < offset + 4 + n:
        return None
    text = bytes(buf.data[offset + 4 : offset + 4 + n]).decode("utf-8", "replace")
    return text, 4 + n


def encode_reason(reason: str) -> bytes:
    raw = reason.encode("utf-8")
    return _U32.pack(len(raw)) + raw


# --- ServerInit -----------------------------------------------------------------------


def encode_server_init(event: ServerInit) -> bytes:
    name = event.name.encode("utf-8")
    return (
        struct.pack(">HH", event.width, event.height)
        + event.pixel_format.pack()
        + _U32.pack(len(name))
        + name
    )


def server_init_size(buf: ReceiveBuffer) -> int | None:
    if len(buf) < 24:
        return None
    n = buf.u32(20)
    if n > MAX_NAME:
        raise RFBProtocolError(f"desktop name of {n} bytes exceeds {MAX_NAME}")
    return 24 + n


def decode_server_init(raw: bytes) -> ServerInit:
    width, height = struct.unpack_from(">HH", raw)
    pf = PixelFormat.unpack(raw[4:20])
    return ServerInit(width, height, pf, raw[24:].decode("utf-8", "replace"))


# --- client to server -----------------------------------------------------------------

_FIXED_CLIENT_SIZES = {0: 20, 3: 10, 4: 8, 5: 6, 150: 10, 252: 4}
EXTENDED_CLIENT_TYPES = frozenset({150, 248, 251, 252, 255})


def client_message_size(buf: ReceiveBuffer, max_cut_text: int) -> int | None:
    """Size of the client message at the head of ``buf``, from its header alone.

    None: the header is incomplete. Raises on an unknown type or a cut text over the cap.
    """
    kind = buf.u8(0)
    if (size := _FIXED_CLIENT_SIZES.get(kind)) is not None:
        return size
    n = len(buf)
    if kind == 2:  # SetEncodings: u8 type, pad, u16 count, s32 * count
        return 4 + 4 * buf.u16(2) if n >= 4 else None
    if kind == 6:  # ClientCutText: u8 type, 3 pad, u32 length, text
        if n < 8:
            return None
        if (length := buf.u32(4)) > max_cut_text:
            raise RFBProtocolError(f"client cut text of {length} bytes exceeds {max_cut_text}")
        return 8 + length
    if kind == 248:  # ClientFence: type, 3 pad, u32 flags, u8 length, payload
        return 9 + buf.u8(8) if n >= 9 else None
    if kind == 251:  # SetDesktopSize: type, pad, u16 w, u16 h, u8 screens, pad, 16 * screens
        return 8 + 16 * buf.u8(6) if n >= 8 else None
    if kind == 255:  # QEMU client message: u8 subtype
        if n < 2:
            return None
        if buf.u8(1) == 0:  # extended key event
            return 12
        if buf.u8(1) == 1:  # audio: u16 operation; 0 enable, 1 disable, 2 set format
            if n < 4:
                return None
            op = buf.u16(2)
            if op in (0, 1):
                return 4
            if op == 2:
                return 10
            raise RFBProtocolError(f"unknown QEMU audio operation {op}")
        raise RFBProtocolError(f"unknown QEMU client message subtype {buf.u8(1)}")
    raise RFBProtocolError(f"unknown client message type {kind}")


def decode_client_message(raw: bytes):  # -> ClientEvent
    kind = raw[0]
    if kind == 0:
        return SetPixelFormat(PixelFormat.unpack(raw[4:20]))
    if kind == 2:
        count = (len(raw) - 4) // 4
        return SetEncodings(struct.unpack_from(f">{count}i", raw, 4))
    if kind == 3:
        inc, x, y, w, h = struct.unpack_from(">BHHHH", raw, 1)
        return FramebufferUpdateRequest(bool(inc), x, y, w, h)
    if kind == 4:
        down, keysym = struct.unpack_from(">BxxI", raw, 1)
        return KeyEvent(bool(down), keysym)
    if kind == 5:
        buttons, x, y = struct.unpack_from(">BHH", raw, 1)
        return PointerEvent(buttons, x, y)
    if kind == 6:
        return ClientCutText(raw[8:])
    return ExtendedClientMessage(kind, raw)


def encode_client_message(event) -> bytes:  # event: ClientEvent
    if isinstance(event, SetPixelFormat):
        return b"\0\0\0\0" + event.pixel_format.pack()
    if isinstance(event, SetEncodings):
        n = len(event.encodings)
        return struct.pack(f">BxH{n}i", 2, n, *event.encodings)
    if isinstance(event, FramebufferUpdateRequest):
        e = event
        return struct.pack(">BBHHHH", 3, int(e.incremental), e.x, e.y, e.width, e.height)
    if isinstance(event, KeyEvent):
        return struct.pack(">BBxxI", 4, int(event.down), event.keysym)
    if isinstance(event, PointerEvent):
        return struct.pack(">BBHH", 5, event.buttons, event.x, event.y)
    if isinstance(event, ClientCutText):
        return struct.pack(">BxxxI", 6, len(event.text)) + event.text
    if isinstance(event, ExtendedClientMessage):
        return event.data
    raise RFBLocalError(f"{type(event).__name__} is not a client message")


# --- server to client -----------------------------------------------------------------


def rect_payload_size(
    encoding: int, width: int, height: int, bytes_per_pixel: int, extra: int | None = None
) -> int | None:
    """Bytes after a rectangle header for ``encoding``; None if the encoding is unsupported.

    ``extra`` is the first payload byte, needed for ExtendedDesktopSize (screen count).
    """
    if encoding == ENCODING_RAW:
        return width * height * bytes_per_pixel
    if encoding == ENCODING_COPY_RECT:
        return 4
    if encoding in (ENCODING_DESKTOP_SIZE, ENCODING_LAST_RECT):
        return 0
    if encoding == ENCODING_CURSOR:
        return width * height * bytes_per_pixel + (width + 7) // 8 * height
    if encoding == ENCODING_EXTENDED_DESKTOP_SIZE:
        return -1 if extra is None else 4 + 16 * extra
    return None


def encode_server_message(event, pixel_format: PixelFormat) -> bytes:  # event: ServerEvent
    if isinstance(event, FramebufferUpdate):
        parts = [struct.pack(">BxH", 0, len(event.rects))]
        bpp = pixel_format.bytes_per_pixel
        for r in event.rects:
            extra = r.data[0] if r.data else None
            size = rect_payload_size(r.encoding, r.width, r.height, bpp, extra)
            if size is not None and size != len(r.data):
                raise RFBLocalError(
                    f"rectangle {r.width}x{r.height} encoding {r.encoding} needs {size} bytes "
                    f"of data at {pixel_format.bits_per_pixel} bpp, got {len(r.data)}"
                )
            parts.append(struct.pack(">HHHHi", r.x, r.y, r.width, r.height, r.encoding))
            parts.append(r.data)
        return b"".join(parts)
    if isinstance(event, SetColourMapEntries):
        head = struct.pack(">BxHH", 1, event.first_colour, len(event.colours))
        return head + b"".join(struct.pack(">HHH", *c) for c in event.colours)
    if isinstance(event, Bell):
        return b"\x02"
    if isinstance(event, ServerCutText):
        return struct.pack(">BxxxI", 3, len(event.text)) + event.text
    raise RFBLocalError(f"{type(event).__name__} is not a server message")
