"""RFB events (RFC 6143 names) as frozen dataclasses, plus the ``NEED_DATA`` sentinel."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from .errors import RFBProtocolError


class Need(enum.Enum):
    DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = Need.DATA
"""Returned by ``next_event()`` when more bytes are needed to make the next event."""

# Security types (RFC 6143 7.1.2 and the IANA registry).
SECURITY_INVALID = 0
SECURITY_NONE = 1
SECURITY_VNC_AUTH = 2
SECURITY_VENCRYPT = 19
# VeNCrypt subtypes (u32) the security proxy speaks: TLS verified by X.509, then None or
# VNC authentication inside it. Anonymous-TLS and Plain subtypes are never chosen.
VENCRYPT_X509NONE = 260
VENCRYPT_X509VNC = 261
VENCRYPT_SUBTYPE_NAMES = {256: "Plain", 257: "TLSNone", 258: "TLSVnc", 259: "TLSPlain",
                          260: "X509None", 261: "X509Vnc", 262: "X509Plain",
                          263: "TLSSASL", 264: "X509SASL"}
SECURITY_TYPE_NAMES = {
    0: "Invalid",
    1: "None",
    2: "VncAuth",
    5: "RA2",
    6: "RA2ne",
    16: "Tight",
    17: "Ultra",
    18: "TLS",
    19: "VeNCrypt",
    20: "SASL",
    21: "MD5",
    22: "xvp",
    30: "AppleDH",
    113: "MSLogon2",
}


def security_type_name(security_type: int) -> str:
    return SECURITY_TYPE_NAMES.get(security_type, f"unknown({security_type})")


def vencrypt_subtype_name(subtype: int) -> str:
    return VENCRYPT_SUBTYPE_NAMES.get(subtype, f"unknown({subtype})")


# Encodings and pseudo-encodings (RFC 6143 7.7, 7.8).
ENCODING_RAW = 0
ENCODING_COPY_RECT = 1
ENCODING_RRE = 2
ENCODING_HEXTILE = 5
ENCODING_TIGHT = 7
ENCODING_ZRLE = 16
ENCODING_DESKTOP_SIZE = -223
ENCODING_LAST_RECT = -224
ENCODING_CURSOR = -239
ENCODING_EXTENDED_DESKTOP_SIZE = -308


# --- pixel format ---------------------------------------------------------------------

_PIXEL_FORMAT = struct.Struct(">BBBBHHHBBBxxx")


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """RFC 6143 7.4: how a pixel is laid out on the wire (16 bytes packed)."""

    bits_per_pixel: int
    depth: int
    big_endian: bool
    true_colour: bool
    red_max: int
    green_max: int
    blue_max: int
    red_shift: int
    green_shift: int
    blue_shift: int

    SIZE: ClassVar[int] = 16

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8

    def pack(self) -> bytes:
        return _PIXEL_FORMAT.pack(
            self.bits_per_pixel,
            self.depth,
            int(self.big_endian),
            int(self.true_colour),
            self.red_max,
            self.green_max,
            self.blue_max,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> PixelFormat:
        """Parse 16 bytes; refuses bits-per-pixel other than 8, 16 or 32."""
        if len(data) != cls.SIZE:
            raise RFBProtocolError(f"pixel format needs {cls.SIZE} bytes, got {len(data)}")
        bpp, depth, be, tc, rmax, gmax, bmax, rsh, gsh, bsh = _PIXEL_FORMAT.unpack(data)
        if bpp not in (8, 16, 32):
            raise RFBProtocolError(f"pixel format with {bpp} bits per pixel (need 8, 16 or 32)")
        return cls(bpp, depth, bool(be), bool(tc), rmax, gmax, bmax, rsh, gsh, bsh)


BGRX32 = PixelFormat(32, 24, False, True, 255, 255, 255, 16, 8, 0)
"""32 bpp, depth 24, true colour, little-endian, red at bit 16: bytes B, G, R, X."""

RGB565 = PixelFormat(16, 16, False, True, 31, 63, 31, 11, 5, 0)
BGR233 = PixelFormat(8, 8, False, True, 7, 7, 3, 0, 3, 6)


# --- handshake ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProtocolVersion:
    """The peer's ``RFB xxx.yyy`` line, as received (not yet negotiated)."""

    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class SecurityTypes:
    """Security types the server offered (3.3: the single type the server decided)."""

    types: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SecurityChosen:
    """The security type a 3.7/3.8 client chose."""

    security_type: int


@dataclass(frozen=True, slots=True)
class StartTLS:
    """VeNCrypt: the server accepted ``subtype``; the caller now runs the TLS handshake on
    the connection, verifies the server, and calls ``tls_started()`` (every later byte
    in either direction is the TLS stream's plaintext)."""

    subtype: int


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of the security phase (synthesised when the wire has no SecurityResult)."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ClientInit:
    shared: bool


@dataclass(frozen=True, slots=True)
class ServerInit:
    width: int
    height: int
    pixel_format: PixelFormat
    name: str


# --- client to server -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetPixelFormat:
    pixel_format: PixelFormat


@dataclass(frozen=True, slots=True)
class SetEncodings:
    encodings: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FramebufferUpdateRequest:
    incremental: bool
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class KeyEvent:
    down: bool
    keysym: int


@dataclass(frozen=True, slots=True)
class PointerEvent:
    buttons: int
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class ClientCutText:
    text: bytes


@dataclass(frozen=True, slots=True)
class ExtendedClientMessage:
    """A known extension message (QEMU, fences, xvp, SetDesktopSize...), kept raw.

    ``data`` is the whole message including its type byte.
    """

    message_type: int
    data: bytes


# --- server to client -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rectangle:
    """One rectangle of a FramebufferUpdate; ``data`` is the payload after the 12-byte header.

    Raw: width*height*bpp bytes. CopyRect: 4 bytes (source x, y). DesktopSize: empty.
    Cursor: width*height*bpp pixel bytes then the bit mask ((width+7)//8 * height bytes).
    """

    x: int
    y: int
    width: int
    height: int
    encoding: int
    data: bytes = field(default=b"", repr=False)

    @classmethod
    def copy_rect(
        cls, x: int, y: int, width: int, height: int, src_x: int, src_y: int
    ) -> Rectangle:
        return cls(x, y, width, height, ENCODING_COPY_RECT, struct.pack(">HH", src_x, src_y))

    @property
    def copy_source(self) -> tuple[int, int]:
        """(src_x, src_y) of a CopyRect rectangle."""
        if self.encoding != ENCODING_COPY_RECT:
            raise ValueError("copy_source is only defined for CopyRect rectangles")
        sx, sy = struct.unpack(">HH", self.data)
        return sx, sy


@dataclass(frozen=True, slots=True)
class FramebufferUpdate:
    rects: tuple[Rectangle, ...]


@dataclass(frozen=True, slots=True)
class SetColourMapEntries:
    first_colour: int
    colours: tuple[tuple[int, int, int], ...]  # 16-bit (red, green, blue)


@dataclass(frozen=True, slots=True)
class Bell:
    pass


@dataclass(frozen=True, slots=True)
class ServerCutText:
    text: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed cleanly between messages (``receive_data(b"")``)."""


HandshakeEvent = (
    ProtocolVersion | SecurityTypes | SecurityChosen | AuthResult | ClientInit | ServerInit
)
ClientEvent = (
    SetPixelFormat
    | SetEncodings
    | FramebufferUpdateRequest
    | KeyEvent
    | PointerEvent
    | ClientCutText
    | ExtendedClientMessage
)
ServerEvent = FramebufferUpdate | SetColourMapEntries | Bell | ServerCutText
Event = HandshakeEvent | ClientEvent | ServerEvent | ConnectionClosed
