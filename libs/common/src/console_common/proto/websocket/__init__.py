"""RFC 6455 WebSocket, sans-I/O: the opening handshake and framing, both roles.

Server role (novncproxy), after reading the request head::

    verdict = server_handshake(request.method, request.target, request.headers)
    if isinstance(verdict, Refusal):
        ...  # answer verdict.status with verdict.headers, close
    ...  # answer 101 with verdict.headers
    reader = FrameReader("server", max_message=1 << 20)
    reader.receive_data(sock.recv(65536))  # b"" = EOF
    while (event := reader.next_event()) is not NEED_DATA:
        match event:
            case Data(payload):  # a chunk of a message, streamed: relay it
                target.sendall(payload)
            case Ping(payload):
                sock.sendall(encode_pong(payload))
            case Close(code, reason):
                sock.sendall(encode_close(code if is_valid_close_code(code) else 1000))
            case ConnectionClosed(): ...
    # ParseFailed(code) from next_event: send encode_close(exc.code) (unless 1006), close
    sock.sendall(encode_binary(data_from_target))  # one copy: header + payload

Client role (consolectl vnc-bridge): ``client_request`` / ``check_client_response``,
``FrameReader("client")`` and encoders given a fresh 4-byte ``mask``.
"""

from console_common.proto.websocket.frames import (
    NEED_DATA,
    Close,
    CloseCode,
    ConnectionClosed,
    Data,
    FrameEvent,
    FrameReader,
    Need,
    Opcode,
    ParseFailed,
    Ping,
    Pong,
    encode_binary,
    encode_close,
    encode_frame,
    encode_ping,
    encode_pong,
    encode_text,
    is_valid_close_code,
    unmask,
)
from console_common.proto.websocket.handshake import (
    Accept,
    HandshakeError,
    Headers,
    Refusal,
    accept_key,
    check_client_response,
    client_key,
    client_request,
    server_handshake,
)

__all__ = [
    "NEED_DATA",
    "Accept",
    "Close",
    "CloseCode",
    "ConnectionClosed",
    "Data",
    "FrameEvent",
    "FrameReader",
    "HandshakeError",
    "Headers",
    "Need",
    "Opcode",
    "ParseFailed",
    "Ping",
    "Pong",
    "Refusal",
    "accept_key",
    "check_client_response",
    "client_key",
    "client_request",
    "encode_binary",
    "encode_close",
    "encode_frame",
    "encode_ping",
    "encode_pong",
    "encode_text",
    "is_valid_close_code",
    "server_handshake",
    "unmask",
]
