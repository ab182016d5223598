"""Fuzzing the WebSocket frame reader (proto/websocket/frames.py), both roles.

Every input, whole or in any chunking, either yields events or raises ``ParseFailed``
(the reader's documented error, with a close code to answer with); never another
exception. A message never exceeds ``max_message``; unconsumed input stays within
``max_buffer``.
"""

from __future__ import annotations

from console_common.proto.websocket import (
    NEED_DATA,
    Close,
    ConnectionClosed,
    Data,
    FrameReader,
    ParseFailed,
    Ping,
    Pong,
    encode_binary,
    encode_close,
    encode_frame,
    encode_ping,
    encode_pong,
    encode_text,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import chunked, inputs

MAX_MESSAGE = 300
MAX_BUFFER = 4096
MASK = b"\x37\xfa\x21\x3d"


def _seeds(mask: bytes | None) -> list[bytes]:
    return [
        encode_binary(b"RFB 003.008\n", mask=mask),
        encode_text("héllo wörld", mask=mask),
        encode_frame(0x1, "hé".encode()[:2], fin=False, mask=mask)
        + encode_frame(0x0, "hé".encode()[2:], mask=mask),
        encode_binary(b"x" * 200, fin=False, mask=mask) + encode_ping(b"p", mask=mask)
        + encode_frame(0x0, b"y" * 90, mask=mask),
        encode_binary(b"z" * 290, mask=mask),  # 16-bit length
        encode_ping(b"are you there", mask=mask),
        encode_pong(b"", mask=mask),
        encode_close(1000, "bye", mask=mask),
        encode_close(None, mask=mask),
        encode_frame(0x2, b"", mask=mask),
    ]


def _run(reader: FrameReader, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    message = 0
    for chunk in [*chunks, b""]:
        reader.receive_data(chunk)
        while True:
            try:
                event = reader.next_event()
            except ParseFailed as exc:
                assert 1000 <= exc.code <= 1011 and exc.message
                assert reader.buffered == 0  # a failed reader lets its input go
                return events
            if event is NEED_DATA:
                break
            assert isinstance(event, Data | Ping | Pong | Close | ConnectionClosed)
            events.append(event)
            if isinstance(event, Data):
                message += len(event.payload)
                assert message <= MAX_MESSAGE
                if event.message_finished:
                    message = 0
            elif isinstance(event, Ping | Pong):
                assert len(event.payload) <= 125
            if isinstance(event, ConnectionClosed):
                return events
        assert reader.buffered <= MAX_BUFFER
    return events


@given(st.sampled_from(("server", "client")), st.data())
def test_reader_takes_any_bytes_in_either_role(role: str, data: st.DataObject) -> None:
    """A server reads masked client frames; a client reads unmasked server frames."""
    raw = data.draw(inputs(_seeds(MASK if role == "server" else None)))
    _run(FrameReader(role, MAX_MESSAGE, MAX_BUFFER), data.draw(chunked(raw)))


@given(st.data())
def test_chunking_does_not_change_the_outcome(data: st.DataObject) -> None:
    """Whatever the cuts, the same bytes give the same payload and the same verdict."""
    raw = data.draw(inputs(_seeds(MASK)))

    def outcome(chunks: list[bytes]) -> tuple[bytes, list[type], int | None]:
        reader = FrameReader("server", MAX_MESSAGE, MAX_BUFFER)
        payload, kinds, code = b"", [], None
        for chunk in [*chunks, b""]:
            reader.receive_data(chunk)
            try:
                while (event := reader.next_event()) is not NEED_DATA:
                    if isinstance(event, Data):
                        payload += event.payload
                    else:
                        kinds.append(type(event))
                    if isinstance(event, ConnectionClosed):
                        return payload, kinds, code
            except ParseFailed as exc:
                return payload, kinds, exc.code
        return payload, kinds, code

    whole, cut = outcome([raw]), outcome(data.draw(chunked(raw)))
    assert cut[1:] == whole[1:]
    if whole[2] is None:
        assert cut[0] == whole[0]
    else:  # text is checked as it streams: a cut may deliver more before the bad byte
        short, long = sorted((cut[0], whole[0]), key=len)
        assert long.startswith(short)
