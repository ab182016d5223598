"""RFB (RFC 6143, the VNC protocol) as sans-I/O state machines, in the style of h11.

Nothing here does I/O, imports gevent/zmq/socket/select/ssl, sleeps or reads a clock:
bytes go in with ``receive_data(data)`` (``b""`` means EOF), events come out of
``next_event()`` (an event, ``NEED_DATA``, or ``ConnectionClosed()`` after a clean EOF),
handshake replies the state machine makes itself come out of ``data_to_send()``, and
messages you choose to send are encoded by ``send(event) -> bytes``. Protocol violations
raise ``RFBProtocolError`` (after which the connection stays in its error state).

Server role (a VNC server, e.g. the fake compute host)::

    conn = RFBServerConnection("instance-1", 320, 240, password=b"secret",
                               challenge=os.urandom(16))   # the caller supplies randomness
    sock.sendall(conn.data_to_send())                        # "RFB 003.008\\n"
    while True:
        conn.receive_data(sock.recv(65536))
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, ConnectionClosed):
                return
            if isinstance(event, AuthResult) and not event.ok:
                ...                                  # flush data_to_send(), then close
            if isinstance(event, FramebufferUpdateRequest):
                pixels = rgb_to_pixels(rgb888, conn.pixel_format)   # client's format
                sock.sendall(conn.send(FramebufferUpdate(
                    (Rectangle(0, 0, 320, 240, ENCODING_RAW, pixels),))))
        sock.sendall(conn.data_to_send())      # security types, challenge, ServerInit...

Client role (a VNC viewer; the recorder in tests/tools/record_rfb.py is one)::

    conn = RFBClientConnection(password=b"secret")
    ...feed conn.receive_data(), drain conn.next_event(), sendall(conn.data_to_send())...
    # events: ProtocolVersion, SecurityTypes, AuthResult, ServerInit, then server messages
    sock.sendall(conn.send(SetPixelFormat(BGRX32)))      # also sizes later Raw rects
    sock.sendall(conn.send(SetEncodings((ENCODING_RAW, ENCODING_COPY_RECT))))
    sock.sendall(conn.send(FramebufferUpdateRequest(False, 0, 0, conn.width, conn.height)))
    # -> FramebufferUpdate(rects=(Rectangle(x, y, width, height, encoding, data), ...))

Observer (a proxy watching what it relays; never raises, O(1) once done)::

    obs = RFBObserver()
    obs.client_data(chunk_from_client); obs.server_data(chunk_from_server)
    obs.version, obs.security_type, obs.desktop_name, obs.width, obs.height
    obs.done / obs.failed / obs.reason / obs.info()
"""

from .auth import vnc_check_response, vnc_des_key, vnc_des_response
from .client import ClientState, RFBClientConnection
from .errors import RFBAuthError, RFBLocalError, RFBProtocolError
from .events import (
    BGR233,
    BGRX32,
    ENCODING_COPY_RECT,
    ENCODING_CURSOR,
    ENCODING_DESKTOP_SIZE,
    ENCODING_EXTENDED_DESKTOP_SIZE,
    ENCODING_HEXTILE,
    ENCODING_LAST_RECT,
    ENCODING_RAW,
    ENCODING_RRE,
    ENCODING_TIGHT,
    ENCODING_ZRLE,
    NEED_DATA,
    RGB565,
    SECURITY_NONE,
    SECURITY_VENCRYPT,
    SECURITY_VNC_AUTH,
    VENCRYPT_X509NONE,
    VENCRYPT_X509VNC,
    AuthResult,
    Bell,
    ClientCutText,
    ClientEvent,
    ClientInit,
    ConnectionClosed,
    Event,
    ExtendedClientMessage,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    KeyEvent,
    Need,
    PixelFormat,
    PointerEvent,
    ProtocolVersion,
    Rectangle,
    SecurityChosen,
    SecurityTypes,
    StartTLS,
    ServerCutText,
    ServerEvent,
    ServerInit,
    SetColourMapEntries,
    SetEncodings,
    SetPixelFormat,
    security_type_name,
    vencrypt_subtype_name,
)
from .messages import encode_client_message, encode_server_init, encode_server_message
from .observer import RFBObserver
from .pixels import pixel_bytes, pixels_to_rgb, rgb_to_pixels
from .server import RFBServerConnection, ServerState

__all__ = [
    "BGR233",
    "BGRX32",
    "ENCODING_COPY_RECT",
    "ENCODING_CURSOR",
    "ENCODING_DESKTOP_SIZE",
    "ENCODING_EXTENDED_DESKTOP_SIZE",
    "ENCODING_HEXTILE",
    "ENCODING_LAST_RECT",
    "ENCODING_RAW",
    "ENCODING_RRE",
    "ENCODING_TIGHT",
    "ENCODING_ZRLE",
    "NEED_DATA",
    "RGB565",
    "SECURITY_NONE",
    "SECURITY_VENCRYPT",
    "SECURITY_VNC_AUTH",
    "VENCRYPT_X509NONE",
    "VENCRYPT_X509VNC",
    "AuthResult",
    "Bell",
    "ClientCutText",
    "ClientEvent",
    "ClientInit",
    "ClientState",
    "ConnectionClosed",
    "Event",
    "ExtendedClientMessage",
    "FramebufferUpdate",
    "FramebufferUpdateRequest",
    "KeyEvent",
    "Need",
    "PixelFormat",
    "PointerEvent",
    "ProtocolVersion",
    "RFBAuthError",
    "RFBClientConnection",
    "RFBLocalError",
    "RFBObserver",
    "RFBProtocolError",
    "RFBServerConnection",
    "Rectangle",
    "SecurityChosen",
    "SecurityTypes",
    "StartTLS",
    "ServerCutText",
    "ServerEvent",
    "ServerInit",
    "ServerState",
    "SetColourMapEntries",
    "SetEncodings",
    "SetPixelFormat",
    "encode_client_message",
    "encode_server_init",
    "encode_server_message",
    "pixel_bytes",
    "pixels_to_rgb",
    "rgb_to_pixels",
    "security_type_name",
    "vencrypt_subtype_name",
    "vnc_check_response",
    "vnc_des_key",
    "vnc_des_response",
]
