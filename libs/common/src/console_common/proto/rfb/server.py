"""The server role of RFB (what a VNC server does), sans-I/O.

The handshake replies (version, security types, challenge, SecurityResult, ServerInit) are
queued by the state machine itself; take them with ``data_to_send()`` after each
``receive_data()``/``next_event()`` round. Messages the caller decides on (framebuffer
updates, bell, cut text, colour map) are encoded by ``send(event) -> bytes``.
"""

from __future__ import annotations

import enum
import struct

from .auth import CHALLENGE_SIZE, vnc_check_response
from .connection import RFBConnection
from .errors import RFBAuthError, RFBLocalError, RFBProtocolError
from .events import (
    BGRX32,
    ENCODING_DESKTOP_SIZE,
    ENCODING_EXTENDED_DESKTOP_SIZE,
    NEED_DATA,
    SECURITY_NONE,
    SECURITY_VNC_AUTH,
    AuthResult,
    ClientInit,
    FramebufferUpdate,
    PixelFormat,
    ProtocolVersion,
    SecurityChosen,
    ServerEvent,
    ServerInit,
    SetEncodings,
    SetPixelFormat,
)
from .messages import (
    KNOWN_VERSIONS,
    VERSION_SIZE,
    Version,
    check_version_prefix,
    client_message_size,
    decode_client_message,
    encode_reason,
    encode_server_init,
    encode_server_message,
    encode_version,
    negotiate_version,
    parse_version,
)

_U32 = struct.Struct(">I")
AUTH_FAILED_REASON = "authentication failed"


class ServerState(enum.Enum):
    VERSION = "version"  # waiting for the client's ProtocolVersion
    SECURITY = "security"  # 3.7/3.8: waiting for the chosen security type
    AUTH = "auth"  # VNC auth: waiting for the 16-byte response
    INIT = "init"  # waiting for ClientInit
    NORMAL = "normal"  # client messages
    CLOSED = "closed"  # EOF seen, or authentication failed (client data is ignored)
    ERROR = "error"


class RFBServerConnection(RFBConnection):
    """One RFB connection seen from the server side.

    ``password`` None offers security type None, else VNC Authentication with
    ``challenge`` (16 random bytes from the caller: this core reads no entropy source).
    ``refuse``: answer the client's version with a connection failure carrying this reason
    (RFC 6143 7.1.2; 3.3: security type 0 and the reason) and close: how a proxy tells a
    VNC viewer why it cannot have the console.
    """

    def __init__(
        self,
        name: str,
        width: int,
        height: int,
        pixel_format: PixelFormat = BGRX32,
        password: bytes | None = None,
        version: Version = (3, 8),
        challenge: bytes | None = None,
        max_cut_text: int = 1 << 20,
        refuse: str | None = None,
    ) -> None:
        if version not in KNOWN_VERSIONS:
            raise ValueError(f"RFB version must be one of {KNOWN_VERSIONS}, got {version}")
        if password is not None and (challenge is None or len(challenge) != CHALLENGE_SIZE):
            raise ValueError("VNC authentication needs a 16-byte random challenge")
        super().__init__(encode_version(version))  # a server speaks first
        self.name = name
        self.width = width
        self.height = height
        self.server_pixel_format = pixel_format
        self.pixel_format = pixel_format  # what the client asked for (SetPixelFormat)
        self.encodings: tuple[int, ...] = ()
        self.version: Version | None = None  # negotiated
        self.security_type = SECURITY_VNC_AUTH if password is not None else SECURITY_NONE
        self.state = ServerState.VERSION
        self._offered = version
        self._password = password
        self._challenge = challenge
        self._max_cut = max_cut_text
        self._refuse = refuse

    # --- I/O-facing API: receive_data, data_to_send, trailing_data, next_event (base) ----

    def send(self, event: ServerEvent) -> bytes:
        """Encode a server message (normal phase only); the Raw data size is checked
        against the client's current pixel format."""
        if self.state is not ServerState.NORMAL:
            raise RFBLocalError(
                f"cannot send {type(event).__name__} in the {self.state.value} phase"
            )
        data = encode_server_message(event, self.pixel_format)
        if isinstance(event, FramebufferUpdate):
            for r in event.rects:
                if r.encoding in (ENCODING_DESKTOP_SIZE, ENCODING_EXTENDED_DESKTOP_SIZE):
                    self.width, self.height = r.width, r.height
        return data

    # --- readers ----------------------------------------------------------------------

    def _next_event(self):
        reader = {
            ServerState.VERSION: self._read_version,
            ServerState.SECURITY: self._read_security,
            ServerState.AUTH: self._read_auth,
            ServerState.INIT: self._read_init,
            ServerState.NORMAL: self._read_message,
            ServerState.CLOSED: self._read_closed,
        }[self.state]
        return reader()

    def _read_version(self):
        check_version_prefix(self._buf.data)
        if len(self._buf) < VERSION_SIZE:
            return NEED_DATA
        peer = parse_version(self._buf.take(VERSION_SIZE))
        self.version = negotiate_version(peer, self._offered)
        if self._refuse is not None:
            self._out += (_U32.pack(0) if self.version == (3, 3) else b"\x00")
            self._out += encode_reason(self._refuse)
            self._pending.append(AuthResult(ok=False, reason=self._refuse))
            self.state = ServerState.CLOSED
        elif self.version == (3, 3):
            self._out += _U32.pack(self.security_type)
            self._after_security_chosen()
        else:
            self._out += bytes((1, self.security_type))
            self.state = ServerState.SECURITY
        return ProtocolVersion(*peer)

    def _after_security_chosen(self) -> None:
        if self.security_type == SECURITY_VNC_AUTH:
            assert self._challenge is not None
            self._out += self._challenge
            self.state = ServerState.AUTH
            return
        if self.version == (3, 8):
            self._out += _U32.pack(0)
        self._pending.append(AuthResult(ok=True))
        self.state = ServerState.INIT

    def _read_security(self):
        if not self._buf:
            return NEED_DATA
        chosen = self._buf.take(1)[0]
        if chosen != self.security_type:
            self._out += _U32.pack(1)
            if self.version == (3, 8):
                self._out += encode_reason("security type not offered")
            raise RFBAuthError(
                f"client chose security type {chosen}, only {self.security_type} was offered"
            )
        self._after_security_chosen()
        return SecurityChosen(chosen)

    def _read_auth(self):
        if len(self._buf) < CHALLENGE_SIZE:
            return NEED_DATA
        response = self._buf.take(CHALLENGE_SIZE)
        assert self._password is not None and self._challenge is not None
        if vnc_check_response(self._password, self._challenge, response):
            self._out += _U32.pack(0)
            self.state = ServerState.INIT
            return AuthResult(ok=True)
        self._out += _U32.pack(1)
        if self.version == (3, 8):
            self._out += encode_reason(AUTH_FAILED_REASON)
        self.state = ServerState.CLOSED
        return AuthResult(ok=False, reason=AUTH_FAILED_REASON)

    def _read_init(self):
        if not self._buf:
            return NEED_DATA
        shared = bool(self._buf.take(1)[0])
        init = ServerInit(self.width, self.height, self.server_pixel_format, self.name)
        self._out += encode_server_init(init)
        self.state = ServerState.NORMAL
        return ClientInit(shared)

    def _read_message(self):
        if not self._buf:
            return NEED_DATA
        size = client_message_size(self._buf, self._max_cut)
        if size is None or len(self._buf) < size:
            return NEED_DATA
        event = decode_client_message(self._buf.take(size))
        if isinstance(event, SetPixelFormat):
            if not event.pixel_format.true_colour:
                raise RFBProtocolError("colour-map pixel formats are not supported")
            self.pixel_format = event.pixel_format
        elif isinstance(event, SetEncodings):
            self.encodings = event.encodings
        return event

    def _read_closed(self):
        self._buf.data.clear()  # after a refused authentication the client is not listened to
        return NEED_DATA
