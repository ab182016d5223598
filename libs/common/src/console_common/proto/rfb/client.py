"""The client role of RFB (what a VNC viewer does), sans-I/O.

The handshake answers (version, chosen security type, VNC auth response, ClientInit) are
queued by the state machine; take them with ``data_to_send()``. Client messages are
encoded by ``send(event) -> bytes``; ``send(SetPixelFormat(...))`` also switches the pixel
format used to size Raw rectangles of later updates.

The proxies' security proxy uses this role towards the VNC server with ``schemes`` (its
``auth_schemes``, in order of preference: ``vencrypt``, ``vnc``, ``none``) and
``client_init=False``: the connection stops once authenticated (state AUTHENTICATED),
leaving ClientInit/ServerInit to the relay. VeNCrypt 0.2 (X509None, X509Vnc) pauses at
``StartTLS``: the caller runs TLS on the socket, then calls ``tls_started()``.
"""

from __future__ import annotations

import enum
import struct

from .auth import CHALLENGE_SIZE, vnc_des_response
from .connection import RFBConnection
from .errors import RFBAuthError, RFBLocalError, RFBProtocolError
from .events import (
    ENCODING_COPY_RECT,
    ENCODING_DESKTOP_SIZE,
    ENCODING_EXTENDED_DESKTOP_SIZE,
    ENCODING_LAST_RECT,
    ENCODING_RAW,
    NEED_DATA,
    SECURITY_NONE,
    SECURITY_VENCRYPT,
    SECURITY_VNC_AUTH,
    VENCRYPT_X509NONE,
    VENCRYPT_X509VNC,
    AuthResult,
    Bell,
    ClientEvent,
    FramebufferUpdate,
    PixelFormat,
    ProtocolVersion,
    Rectangle,
    SecurityTypes,
    ServerCutText,
    SetColourMapEntries,
    SetPixelFormat,
    StartTLS,
    security_type_name,
    vencrypt_subtype_name,
)
from .messages import (
    KNOWN_VERSIONS,
    VERSION_SIZE,
    Version,
    check_version_prefix,
    decode_server_init,
    encode_client_message,
    encode_version,
    negotiate_version,
    parse_version,
    reason_at,
    rect_payload_size,
    server_init_size,
)

_U32 = struct.Struct(">I")
# auth_schemes names (Nova's) -> the RFB security type each stands for
SCHEMES = {"vencrypt": SECURITY_VENCRYPT, "vnc": SECURITY_VNC_AUTH, "none": SECURITY_NONE}
_RECT_HEADER = struct.Struct(">HHHHi")


class ClientState(enum.Enum):
    VERSION = "version"  # waiting for the server's ProtocolVersion
    SECURITY = "security"  # waiting for security types (3.7/3.8) or the type (3.3)
    CHALLENGE = "challenge"  # VNC auth: waiting for the 16-byte challenge
    VENCRYPT_VERSION = "vencrypt-version"  # waiting for the server's VeNCrypt version
    VENCRYPT_STATUS = "vencrypt-status"  # did it accept 0.2
    VENCRYPT_SUBTYPES = "vencrypt-subtypes"
    VENCRYPT_ACK = "vencrypt-ack"  # did it accept our subtype
    TLS = "tls"  # the caller runs the TLS handshake, then calls tls_started()
    SECURITY_RESULT = "security-result"
    SERVER_INIT = "server-init"
    NORMAL = "normal"  # server messages
    AUTHENTICATED = "authenticated"  # client_init=False: done; ClientInit is the caller's
    CLOSED = "closed"  # EOF, or the server refused us (later data is ignored)
    ERROR = "error"


class RFBClientConnection(RFBConnection):
    """One RFB connection seen from the client side.

    Without ``schemes``: picks the first security type in the server's order that it can
    do: None, or VNC Authentication when ``password`` is given. With ``schemes`` (names of
    SCHEMES, in our order of preference): the first of them the server offers; VeNCrypt's
    subtype is the first in the server's order of X509None and (with a password) X509Vnc.
    """

    def __init__(
        self,
        password: bytes | None = None,
        shared: bool = True,
        version: Version = (3, 8),
        max_cut_text: int = 1 << 20,
        max_rect_bytes: int = 64 << 20,
        schemes: tuple[str, ...] | None = None,
        client_init: bool = True,
    ) -> None:
        if version not in KNOWN_VERSIONS:
            raise ValueError(f"RFB version must be one of {KNOWN_VERSIONS}, got {version}")
        if schemes is not None and (not schemes or not set(schemes) <= SCHEMES.keys()):
            raise ValueError(f"schemes must be names of {sorted(SCHEMES)}, got {schemes}")
        super().__init__()
        self.version: Version | None = None  # negotiated
        self.security_type: int | None = None
        self.width = 0
        self.height = 0
        self.pixel_format: PixelFormat | None = None  # format of pixels we receive
        self.name = ""
        self.state = ClientState.VERSION
        self.vencrypt_subtype: int | None = None
        self._password = password
        self._schemes = schemes
        self._send_client_init = client_init
        self._shared = shared
        self._ours = version
        self._max_cut = max_cut_text
        self._max_rect = max_rect_bytes
        self._rects: list[Rectangle] = []
        self._rects_left: int | None = None  # inside a FramebufferUpdate when not None

    # --- I/O-facing API: receive_data, data_to_send, trailing_data, next_event (base) ----

    def _clean_eof(self) -> bool:
        # Inside a FramebufferUpdate the parser holds the header and the rectangles
        # already complete, not these bytes: an EOF there is mid-message too.
        return not self._buf.data and self._rects_left is None

    def send(self, event: ClientEvent) -> bytes:
        """Encode a client message (normal phase only)."""
        if self.state is not ClientState.NORMAL:
            raise RFBLocalError(
                f"cannot send {type(event).__name__} in the {self.state.value} phase"
            )
        data = encode_client_message(event)
        if isinstance(event, SetPixelFormat):
            if not event.pixel_format.true_colour:
                raise RFBLocalError("colour-map pixel formats are not supported")
            self.pixel_format = event.pixel_format
        return data

    # --- readers ----------------------------------------------------------------------

    def _next_event(self):
        readers = {
            ClientState.VERSION: self._read_version,
            ClientState.SECURITY: self._read_security,
            ClientState.VENCRYPT_VERSION: self._read_vencrypt_version,
            ClientState.VENCRYPT_STATUS: self._read_vencrypt_status,
            ClientState.VENCRYPT_SUBTYPES: self._read_vencrypt_subtypes,
            ClientState.VENCRYPT_ACK: self._read_vencrypt_ack,
            ClientState.TLS: self._read_nothing,
            ClientState.AUTHENTICATED: self._read_nothing,
            ClientState.CHALLENGE: self._read_challenge,
            ClientState.SECURITY_RESULT: self._read_security_result,
            ClientState.SERVER_INIT: self._read_server_init,
            ClientState.NORMAL: self._read_message,
            ClientState.CLOSED: self._read_closed,
        }
        while (event := readers[self.state]()) is None:  # None: progress, no event yet
            pass
        return event

    def _read_version(self):
        check_version_prefix(self._buf.data)
        if len(self._buf) < VERSION_SIZE:
            return NEED_DATA
        peer = parse_version(self._buf.take(VERSION_SIZE))
        self.version = negotiate_version(peer, self._ours)
        self._out += encode_version(self.version)
        self.state = ClientState.SECURITY
        return ProtocolVersion(*peer)

    def _refused(self, reason: str) -> AuthResult:
        self.state = ClientState.CLOSED
        return AuthResult(ok=False, reason=reason)

    def _read_security(self):
        buf = self._buf
        if self.version == (3, 3):
            if len(buf) < 4:
                return NEED_DATA
            offered: tuple[int, ...] = (buf.u32(0),)
            used = 4
        else:
            if not buf:
                return NEED_DATA
            count = buf.u8(0)
            if len(buf) < 1 + count:
                return NEED_DATA
            offered = tuple(buf.data[1 : 1 + count])
            used = 1 + count
        if offered in ((0,), ()):  # connection failed, with a reason
            got = reason_at(buf, used)
            if got is None:
                return NEED_DATA
            reason, n = got
            buf.take(used + n)
            return self._refused(reason)
        buf.take(used)
        self.security_type = self._choose(offered)
        if self.version != (3, 3):
            self._out += bytes((self.security_type,))
        if self.security_type == SECURITY_VNC_AUTH:
            self.state = ClientState.CHALLENGE
        elif self.security_type == SECURITY_VENCRYPT:
            self.state = ClientState.VENCRYPT_VERSION
        elif self.version == (3, 8):
            self.state = ClientState.SECURITY_RESULT
        else:
            self._pending.append(AuthResult(ok=True))
            self._client_init()
        return SecurityTypes(offered)

    def _choose(self, offered: tuple[int, ...]) -> int:
        if self._schemes is not None:
            return self._choose_scheme(offered)
        for kind in offered:
            if kind == SECURITY_NONE or (kind == SECURITY_VNC_AUTH and self._password is not None):
                return kind
        names = ", ".join(security_type_name(k) for k in offered)
        if SECURITY_VNC_AUTH in offered:
            raise RFBAuthError(f"server requires VNC authentication, no password given ({names})")
        raise RFBAuthError(f"no supported security type offered by the server ({names})")

    def _choose_scheme(self, offered: tuple[int, ...]) -> int:
        for scheme in self._schemes or ():
            kind = SCHEMES[scheme]
            if kind in offered and (kind != SECURITY_VNC_AUTH or self._password is not None):
                if self.version == (3, 3) and kind == SECURITY_VENCRYPT:
                    break  # VeNCrypt needs 3.7+: a 3.3 server imposing it is broken
                return kind
        names = ", ".join(security_type_name(k) for k in offered)
        ours = ", ".join(self._schemes or ())
        if SECURITY_VNC_AUTH in offered and "vnc" in (self._schemes or ()):
            raise RFBAuthError(f"the server requires VNC authentication and no password "
                               f"was given for this console (server offers {names})")
        raise RFBAuthError(f"no common security scheme: the server offers {names}, "
                           f"auth_schemes allows {ours}")

    # --- VeNCrypt 0.2 -------------------------------------------------------------------

    def _read_vencrypt_version(self):
        if len(self._buf) < 2:
            return NEED_DATA
        major, minor = self._buf.take(2)
        if (major, minor) < (0, 2):
            raise RFBAuthError(f"the server speaks VeNCrypt {major}.{minor}, only 0.2 is "
                               "supported")
        self._out += b"\x00\x02"
        self.state = ClientState.VENCRYPT_STATUS
        return None

    def _read_vencrypt_status(self):
        if not self._buf:
            return NEED_DATA
        if self._buf.take(1)[0] != 0:
            raise RFBAuthError("the server refused VeNCrypt version 0.2")
        self.state = ClientState.VENCRYPT_SUBTYPES
        return None

    def _read_vencrypt_subtypes(self):
        buf = self._buf
        if not buf or len(buf) < 1 + 4 * buf.u8(0):
            return NEED_DATA
        count = buf.u8(0)
        raw = buf.take(1 + 4 * count)
        offered = struct.unpack_from(f">{count}I", raw, 1)
        usable = (VENCRYPT_X509NONE, VENCRYPT_X509VNC) if self._password is not None \
            else (VENCRYPT_X509NONE,)
        chosen = next((s for s in offered if s in usable), None)
        if chosen is None:
            names = ", ".join(vencrypt_subtype_name(s) for s in offered) or "none"
            need = "" if self._password is not None or VENCRYPT_X509VNC not in offered \
                else " (X509Vnc needs a password, none was given for this console)"
            raise RFBAuthError(f"no common VeNCrypt subtype: the server offers {names}, "
                               f"the proxy speaks X509None and X509Vnc{need}")
        self.vencrypt_subtype = chosen
        self._out += _U32.pack(chosen)
        self.state = ClientState.VENCRYPT_ACK
        return None

    def _read_vencrypt_ack(self):
        buf = self._buf
        if not buf:
            return NEED_DATA
        if buf.take(1)[0] != 1:
            raise RFBAuthError(f"the server refused VeNCrypt subtype "
                               f"{vencrypt_subtype_name(self.vencrypt_subtype or 0)}")
        if buf:  # the TLS handshake is ours to start: plaintext here would be an attack
            raise RFBProtocolError(f"{len(buf)} unexpected bytes before the TLS handshake")
        self.state = ClientState.TLS
        return StartTLS(self.vencrypt_subtype or 0)

    def tls_started(self) -> None:
        """The caller finished the TLS handshake (and verified the server): go on inside it."""
        if self.state is not ClientState.TLS:
            raise RFBLocalError(f"tls_started() in the {self.state.value} phase")
        # VeNCrypt always ends with a SecurityResult (QEMU and TigerVNC send it in 3.7 too).
        self.state = ClientState.CHALLENGE if self.vencrypt_subtype == VENCRYPT_X509VNC \
            else ClientState.SECURITY_RESULT

    def _read_nothing(self):
        return NEED_DATA  # bytes wait in the buffer (trailing_data) for the caller

    def _read_challenge(self):
        if len(self._buf) < CHALLENGE_SIZE:
            return NEED_DATA
        challenge = self._buf.take(CHALLENGE_SIZE)
        if self._password is None:  # 3.3 servers impose VNC auth
            raise RFBAuthError("server requires VNC authentication, no password given")
        self._out += vnc_des_response(self._password, challenge)
        self.state = ClientState.SECURITY_RESULT
        return None

    def _read_security_result(self):
        buf = self._buf
        if len(buf) < 4:
            return NEED_DATA
        status = buf.u32(0)
        if status == 0:
            buf.take(4)
            self._client_init()
            return AuthResult(ok=True)
        if self.version == (3, 8):
            got = reason_at(buf, 4)
            if got is None:
                return NEED_DATA
            reason, n = got
            buf.take(4 + n)
            return self._refused(reason)
        buf.take(4)
        return self._refused("authentication failed")

    def _client_init(self) -> None:
        if not self._send_client_init:
            self.state = ClientState.AUTHENTICATED
            return
        self._out += bytes((int(self._shared),))
        self.state = ClientState.SERVER_INIT

    def _read_server_init(self):
        size = server_init_size(self._buf)
        if size is None or len(self._buf) < size:
            return NEED_DATA
        init = decode_server_init(self._buf.take(size))
        self.width, self.height, self.name = init.width, init.height, init.name
        self.pixel_format = init.pixel_format
        self.state = ClientState.NORMAL
        return init

    def _read_message(self):
        buf = self._buf
        if self._rects_left is not None:
            return self._read_rects()
        if not buf:
            return NEED_DATA
        kind = buf.u8(0)
        if kind == 0:  # FramebufferUpdate: type, pad, u16 count, rectangles
            if len(buf) < 4:
                return NEED_DATA
            self._rects_left = buf.u16(2)
            self._rects = []
            buf.take(4)
            return self._read_rects()
        if kind == 1:  # SetColourMapEntries: type, pad, u16 first, u16 count, 6 * count
            if len(buf) < 6 or len(buf) < 6 + 6 * buf.u16(4):
                return NEED_DATA
            first, count = buf.u16(2), buf.u16(4)
            raw = buf.take(6 + 6 * count)
            flat = struct.unpack_from(f">{3 * count}H", raw, 6)
            colours = tuple(tuple(flat[i : i + 3]) for i in range(0, len(flat), 3))
            return SetColourMapEntries(first, colours)  # type: ignore[arg-type]
        if kind == 2:
            buf.take(1)
            return Bell()
        if kind == 3:  # ServerCutText: type, 3 pad, u32 length, text
            if len(buf) < 8:
                return NEED_DATA
            if (length := buf.u32(4)) > self._max_cut:
                raise RFBProtocolError(f"server cut text of {length} bytes exceeds {self._max_cut}")
            if len(buf) < 8 + length:
                return NEED_DATA
            return ServerCutText(buf.take(8 + length)[8:])
        raise RFBProtocolError(f"unknown server message type {kind}")

    def _read_rects(self):
        buf = self._buf
        assert self.pixel_format is not None and self._rects_left is not None
        bpp = self.pixel_format.bytes_per_pixel
        while self._rects_left:
            if len(buf) < 12:
                return NEED_DATA
            x, y, w, h, encoding = _RECT_HEADER.unpack_from(buf.data)
            extra = buf.u8(12) if len(buf) > 12 else None
            size = rect_payload_size(encoding, w, h, bpp, extra)
            if size is None:
                raise RFBProtocolError(
                    f"unsupported encoding {encoding} in a FramebufferUpdate "
                    "(only Raw, CopyRect, DesktopSize, Cursor, ExtendedDesktopSize are parsed)"
                )
            if size < 0:  # ExtendedDesktopSize before its screen count arrived
                return NEED_DATA
            if size > self._max_rect:
                raise RFBProtocolError(
                    f"rectangle of {size} bytes exceeds the {self._max_rect}-byte cap"
                )
            if encoding in (ENCODING_RAW, ENCODING_COPY_RECT) and (
                x + w > self.width or y + h > self.height
            ):
                raise RFBProtocolError(
                    f"rectangle {w}x{h}+{x}+{y} outside the {self.width}x{self.height} framebuffer"
                )
            if len(buf) < 12 + size:
                return NEED_DATA
            buf.take(12)
            rect = Rectangle(x, y, w, h, encoding, buf.take(size))
            if encoding == ENCODING_LAST_RECT:
                self._rects_left = 0
                break
            if encoding in (ENCODING_DESKTOP_SIZE, ENCODING_EXTENDED_DESKTOP_SIZE):
                self.width, self.height = w, h
            self._rects.append(rect)
            self._rects_left -= 1
        update = FramebufferUpdate(tuple(self._rects))
        self._rects, self._rects_left = [], None
        return update

    def _read_closed(self):
        self._buf.data.clear()
        return NEED_DATA
