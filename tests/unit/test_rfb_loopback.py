"""Server and client state machines talking to each other through in-memory pipes."""

from __future__ import annotations

import pytest
from console_common.proto.rfb import (
    BGRX32,
    ENCODING_COPY_RECT,
    ENCODING_RAW,
    NEED_DATA,
    RGB565,
    AuthResult,
    Bell,
    ClientCutText,
    ClientInit,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    KeyEvent,
    PointerEvent,
    Rectangle,
    RFBClientConnection,
    RFBObserver,
    RFBServerConnection,
    ServerCutText,
    ServerInit,
    SetEncodings,
    SetPixelFormat,
    pixels_to_rgb,
    rgb_to_pixels,
)

W, H = 16, 8
CHALLENGE = b"0123456789abcdef"


class Pipe:
    """Moves bytes between the two machines, showing them to an observer on the way."""

    def __init__(self, server: RFBServerConnection, client: RFBClientConnection) -> None:
        self.server, self.client, self.observer = server, client, RFBObserver()
        self.server_events: list = []
        self.client_events: list = []

    def to_client(self, data: bytes) -> None:
        if data:
            self.observer.server_data(data)
            self.client.receive_data(data)

    def to_server(self, data: bytes) -> None:
        if data:
            self.observer.client_data(data)
            self.server.receive_data(data)

    def pump(self) -> None:
        for _ in range(10):
            self.to_client(self.server.data_to_send())
            while (event := self.client.next_event()) is not NEED_DATA:
                self.client_events.append(event)
            self.to_server(self.client.data_to_send())
            while (event := self.server.next_event()) is not NEED_DATA:
                self.server_events.append(event)


def rgb_frame() -> bytes:
    return bytes(
        (x * 16, y * 32, (x + y) % 256)[i] for y in range(H) for x in range(W) for i in range(3)
    )


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
@pytest.mark.parametrize("password", [None, b"s3cret"])
def test_full_session(version: tuple[int, int], password: bytes | None) -> None:
    server = RFBServerConnection(
        "loop", W, H, password=password, challenge=CHALLENGE, version=version
    )
    client = RFBClientConnection(password=password)
    pipe = Pipe(server, client)
    pipe.pump()
    assert pipe.server_events[-2:] == [AuthResult(True), ClientInit(True)]
    assert pipe.client_events[-2:] == [AuthResult(True), ServerInit(W, H, BGRX32, "loop")]
    assert client.version == server.version == version
    assert (pipe.observer.version, pipe.observer.desktop_name) == (
        f"{version[0]}.{version[1]}",
        "loop",
    )
    assert pipe.observer.security_type == ("VncAuth" if password else "None")

    for event in (
        SetPixelFormat(BGRX32),
        SetEncodings((ENCODING_RAW, ENCODING_COPY_RECT)),
        FramebufferUpdateRequest(False, 0, 0, W, H),
        KeyEvent(True, 0x61),
        PointerEvent(1, 3, 4),
        ClientCutText(b"copied"),
    ):
        pipe.to_server(client.send(event))
    pipe.pump()
    assert pipe.server_events[-6:] == [
        SetPixelFormat(BGRX32),
        SetEncodings((ENCODING_RAW, ENCODING_COPY_RECT)),
        FramebufferUpdateRequest(False, 0, 0, W, H),
        KeyEvent(True, 0x61),
        PointerEvent(1, 3, 4),
        ClientCutText(b"copied"),
    ]

    rgb = rgb_frame()
    raw = Rectangle(0, 0, W, H, ENCODING_RAW, rgb_to_pixels(rgb, server.pixel_format))
    copy = Rectangle.copy_rect(0, 0, 4, 4, src_x=8, src_y=4)
    pipe.to_client(server.send(FramebufferUpdate((raw, copy))))
    pipe.to_client(server.send(Bell()))
    pipe.to_client(server.send(ServerCutText(b"pasted")))
    pipe.pump()
    update, bell, cut = pipe.client_events[-3:]
    assert update == FramebufferUpdate((raw, copy))
    assert pixels_to_rgb(update.rects[0].data, client.pixel_format) == rgb
    assert (bell, cut) == (Bell(), ServerCutText(b"pasted"))


def test_pixel_format_change_flows_through() -> None:
    server = RFBServerConnection("loop", W, H)
    client = RFBClientConnection()
    pipe = Pipe(server, client)
    pipe.pump()
    pipe.to_server(client.send(SetPixelFormat(RGB565)))
    pipe.pump()
    assert server.pixel_format == client.pixel_format == RGB565
    rgb = rgb_frame()
    rect = Rectangle(0, 0, W, H, ENCODING_RAW, rgb_to_pixels(rgb, RGB565))
    assert len(rect.data) == W * H * 2
    pipe.to_client(server.send(FramebufferUpdate((rect,))))
    pipe.pump()
    back = pixels_to_rgb(pipe.client_events[-1].rects[0].data, RGB565)
    assert all(abs(a - b) <= 4 for a, b in zip(back, rgb))


def test_wrong_password_both_sides_see_the_refusal() -> None:
    server = RFBServerConnection("loop", W, H, password=b"right", challenge=CHALLENGE)
    client = RFBClientConnection(password=b"wrong")
    pipe = Pipe(server, client)
    pipe.pump()
    assert pipe.server_events[-1] == AuthResult(False, "authentication failed")
    assert pipe.client_events[-1] == AuthResult(False, "authentication failed")
    assert pipe.observer.auth_ok is False
