"""RFC 6455 framing: console_common.proto.websocket.frames (sans-I/O, no sockets)."""

from __future__ import annotations

import random
import struct

import pytest
from console_common.proto.websocket import (
    NEED_DATA,
    Close,
    ConnectionClosed,
    Data,
    FrameReader,
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
    unmask,
)

MASK = bytes((0x37, 0xFA, 0x21, 0x3D))  # the RFC 6455 5.7 example key

# RFC 6455 section 5.7 examples, byte for byte
RFC_HELLO_UNMASKED = bytes((0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F))
RFC_HELLO_MASKED = bytes((0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58))
RFC_FRAGMENTED = bytes((0x01, 0x03, 0x48, 0x65, 0x6C, 0x80, 0x02, 0x6C, 0x6F))
RFC_PING_UNMASKED = bytes((0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F))
RFC_PONG_MASKED = bytes((0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58))
RFC_256_HEADER = bytes((0x82, 0x7E, 0x01, 0x00))
RFC_64K_HEADER = bytes((0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00))


def naive_mask(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    return bytes(b ^ mask[(offset + i) % 4] for i, b in enumerate(data))


def raw_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
    width: int | None = None,
) -> bytes:
    """A frame built independently of the encoder under test (any header, even invalid)."""
    n = len(payload) if length is None else length
    width = width if width is not None else (0 if n < 126 else 2 if n < 1 << 16 else 8)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask is not None else 0
    if width == 0:
        head = bytes((b0, mbit | n))
    elif width == 2:
        head = bytes((b0, mbit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mbit | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + naive_mask(payload, mask)


def feed(chunks: list[bytes], role: str = "server", **kwargs: int) -> list[object]:
    reader, events = FrameReader(role, **kwargs), []  # type: ignore[arg-type]
    for chunk in chunks:
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
    return events


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def random_splits(stream: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 12))))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


def merged(events: list[object]) -> list[object]:
    """Data chunks joined into whole messages: ("text"|"binary", payload); others as they are."""
    out: list[object] = []
    parts: list[bytes] = []
    for event in events:
        if isinstance(event, Data):
            parts.append(event.payload)
            if event.message_finished:
                out.append(("text" if event.is_text else "binary", b"".join(parts)))
                parts = []
        else:
            out.append(event)
    assert not parts, "a message was left unfinished"
    return out


def all_ways(stream: bytes, role: str = "server", **kwargs: int) -> list[object]:
    """Whole, byte by byte, at random splits, and with a trailing partial frame that must
    stay buffered: all must agree. Returns the merged events."""
    whole = merged(feed([stream], role, **kwargs))
    assert merged(feed(bytewise(stream), role, **kwargs)) == whole
    rng = random.Random(len(stream))
    for _ in range(5):
        assert merged(feed(random_splits(stream, rng), role, **kwargs)) == whole
    reader = FrameReader(role, **kwargs)  # type: ignore[arg-type]
    reader.receive_data(stream + stream[:1])  # plus the first byte of a repeat
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    assert merged(events) == whole
    if not reader.closed:
        assert reader.buffered == 1  # the next frame's first byte waits for the rest
        reader.receive_data(stream[1:])
        events = []
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
        assert merged(events) == whole
    return whole


def refused(stream: bytes, role: str = "server", **kwargs: int) -> int:
    """The close code a stream is refused with, the same whole and byte by byte."""
    codes = []
    for chunks in ([stream], bytewise(stream)):
        with pytest.raises(ParseFailed) as info:
            feed(chunks, role, **kwargs)
        codes.append(info.value.code)
    assert codes[0] == codes[1]
    return codes[0]


# --- RFC 6455 5.7 examples -----------------------------------------------------------


def test_rfc_masked_hello_read_by_server() -> None:
    assert all_ways(RFC_HELLO_MASKED) == [("text", b"Hello")]


def test_rfc_unmasked_hello_read_by_client() -> None:
    assert all_ways(RFC_HELLO_UNMASKED, "client") == [("text", b"Hello")]


def test_rfc_fragmented_text_read_by_client() -> None:
    assert all_ways(RFC_FRAGMENTED, "client") == [("text", b"Hello")]


def test_rfc_ping_and_masked_pong() -> None:
    assert all_ways(RFC_PING_UNMASKED, "client") == [Ping(b"Hello")]
    assert all_ways(RFC_PONG_MASKED) == [Pong(b"Hello")]


def test_rfc_256_bytes_and_64k_binary() -> None:
    small, big = bytes(range(256)), random.Random(1).randbytes(65536)
    assert all_ways(RFC_256_HEADER + small, "client") == [("binary", small)]
    assert feed([RFC_64K_HEADER + big], "client") == [Data(big, True, False)]


def test_encoders_produce_the_rfc_bytes() -> None:
    assert encode_text("Hello") == RFC_HELLO_UNMASKED
    assert encode_text("Hello", mask=MASK) == RFC_HELLO_MASKED
    assert encode_frame(Opcode.TEXT, b"Hel", fin=False) + encode_frame(0, b"lo") == RFC_FRAGMENTED
    assert encode_ping(b"Hello") == RFC_PING_UNMASKED
    assert encode_pong(b"Hello", mask=MASK) == RFC_PONG_MASKED
    assert encode_binary(bytes(256)) == RFC_256_HEADER + bytes(256)
    assert encode_binary(bytes(65536))[:10] == RFC_64K_HEADER


# --- streaming ------------------------------------------------------------------------


def test_data_is_streamed_as_it_arrives() -> None:
    payload = random.Random(2).randbytes(1 << 20)
    stream = raw_frame(Opcode.BINARY, payload)
    reader = FrameReader("server", max_message=1 << 20, max_buffer=4096 + 14)
    chunks: list[bytes] = []
    for i in range(0, len(stream), 4096):
        reader.receive_data(stream[i : i + 4096])
        while (event := reader.next_event()) is not NEED_DATA:
            assert isinstance(event, Data)
            assert len(event.payload) <= 4096
            assert event.message_finished == (len(event.payload) + sum(map(len, chunks)) == 1 << 20)
            chunks.append(event.payload)
        assert reader.buffered == 0  # payload never waits in the reader
        if i == 0:
            assert chunks, "the first chunk must come out before the message is complete"
    assert b"".join(chunks) == payload


def test_buffer_is_bounded() -> None:
    reader = FrameReader("server", max_buffer=100)
    reader.receive_data(bytes(100))
    with pytest.raises(ValueError, match="buffered"):
        reader.receive_data(b"x")


def test_empty_frames() -> None:
    assert all_ways(raw_frame(Opcode.BINARY)) == [("binary", b"")]
    stream = raw_frame(Opcode.BINARY, fin=False) + raw_frame(0, b"ab", fin=False) + raw_frame(0)
    assert all_ways(stream) == [("binary", b"ab")]
    assert feed([raw_frame(Opcode.TEXT)]) == [Data(b"", True, True)]



# --- in-place parsing (no copy of a chunk fed while nothing is left over) ---------------

_MIXED = (
    raw_frame(Opcode.BINARY, bytes(range(200)))  # 16-bit length
    + raw_frame(Opcode.PING, b"p")
    + raw_frame(Opcode.TEXT, "hé".encode()[:2], fin=False)
    + raw_frame(0, "hé".encode()[2:])
    + raw_frame(Opcode.BINARY, b"")
    + raw_frame(Opcode.BINARY, b"abcdefg")
    + raw_frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye")
)
_MIXED_EVENTS = [("binary", bytes(range(200))), Ping(b"p"), ("text", "hé".encode()),
                 ("binary", b""), ("binary", b"abcdefg"), Close(1000, "bye")]


@pytest.mark.parametrize("role", ["server", "client"])
def test_every_split_point_and_pair_parses_the_same(role: str) -> None:
    stream = _MIXED if role == "server" else b"".join(
        raw_frame(op, payload, fin=fin, mask=None) for op, payload, fin in (
            (Opcode.BINARY, bytes(range(200)), True), (Opcode.PING, b"p", True),
            (Opcode.TEXT, "hé".encode()[:2], False), (0, "hé".encode()[2:], True),
            (Opcode.BINARY, b"", True), (Opcode.BINARY, b"abcdefg", True),
            (Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye", True)))
    assert merged(feed([stream], role)) == _MIXED_EVENTS
    n = len(stream)
    for i in range(1, n):
        assert merged(feed([stream[:i], stream[i:]], role)) == _MIXED_EVENTS, i
    for i in range(1, n, 3):
        for j in range(i + 1, n):
            chunks = [stream[:i], bytearray(stream[i:j]), memoryview(stream[j:])]
            assert merged(feed(chunks, role)) == _MIXED_EVENTS, (i, j)


def test_large_masked_frames_in_one_read_come_out_whole() -> None:
    rng = random.Random(7)
    payloads = [rng.randbytes(65536) for _ in range(4)]
    masks = [rng.randbytes(4) for _ in range(4)]
    stream = b"".join(raw_frame(Opcode.BINARY, p, mask=m) for p, m in zip(payloads, masks))
    reader = FrameReader("server", max_buffer=len(stream))
    reader.receive_data(stream)
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    assert events == [Data(p, True, False) for p in payloads]
    for cut in (1, 2, 5, 13, 14, 65535, 65550, 65551, 100000):
        assert merged(feed([stream[:cut], stream[cut:]], max_buffer=len(stream))) == \
            [("binary", p) for p in payloads]


def test_a_chunk_that_is_all_payload_is_returned_without_a_copy() -> None:
    payload = bytes(range(256)) * 4
    reader = FrameReader("client")
    reader.receive_data(raw_frame(Opcode.BINARY, payload, mask=None)[:4])
    assert reader.next_event() is NEED_DATA
    reader.receive_data(payload)
    event = reader.next_event()
    assert isinstance(event, Data) and event.payload is payload


def test_a_reused_buffer_may_be_overwritten_after_need_data() -> None:
    stream = raw_frame(Opcode.BINARY, b"hello") + raw_frame(Opcode.PING, b"ping!")
    cut = len(stream) - 3  # the ping's header is read; 2 of its 5 payload bytes wait
    buf = bytearray(stream[:cut])
    reader = FrameReader("server")
    reader.receive_data(buf)
    assert reader.next_event() == Data(b"hello", True, False)
    assert reader.next_event() is NEED_DATA
    assert reader.buffered == 2
    buf.extend(b"?")  # no view of it held any more (a held one would refuse the resize)
    buf[:] = b"\xff" * len(buf)
    reader.receive_data(stream[cut:])
    assert reader.next_event() == Ping(b"ping!")
    assert reader.next_event() is NEED_DATA and reader.buffered == 0


def test_a_consumed_chunk_is_let_go() -> None:
    buf = bytearray(raw_frame(Opcode.BINARY, b"x" * 300))
    reader = FrameReader("server")
    reader.receive_data(buf)
    assert isinstance(reader.next_event(), Data)
    buf.extend(b"more")  # would raise BufferError if the reader still held a view
    assert reader.next_event() is NEED_DATA

def test_fragmented_message_with_interleaved_control_frames() -> None:
    stream = (
        raw_frame(Opcode.TEXT, "héllo ".encode()[:2], fin=False)
        + raw_frame(Opcode.PING, b"p1")
        + raw_frame(0, "héllo ".encode()[2:], fin=False)
        + raw_frame(Opcode.PONG, b"p2")
        + raw_frame(Opcode.PING)
        + raw_frame(0, "wörld".encode())
        + raw_frame(Opcode.BINARY, b"\x00\xff")
    )
    assert all_ways(stream) == [
        Ping(b"p1"),
        Pong(b"p2"),
        Ping(b""),
        ("text", "héllo wörld".encode()),
        ("binary", b"\x00\xff"),
    ]


def test_message_exactly_at_the_cap_is_accepted() -> None:
    halves = [raw_frame(Opcode.BINARY, bytes(600), fin=False), raw_frame(0, bytes(424))]
    assert all_ways(b"".join(halves), max_message=1024) == [("binary", bytes(1024))]


# --- unmasking ------------------------------------------------------------------------


def test_unmask_matches_naive_reference() -> None:
    rng = random.Random(3)
    for n in (0, 1, 2, 3, 4, 5, 7, 125, 126, 4095, 65536, 70001):
        data, mask = rng.randbytes(n), rng.randbytes(4)
        for offset in range(5):
            assert unmask(data, mask, offset) == naive_mask(data, mask, offset)
        assert unmask(unmask(data, mask), mask) == data
        assert unmask(data, b"\x00" * 4) == data


def test_reader_unmasks_random_payloads_split_at_random_boundaries() -> None:
    rng = random.Random(4)
    for _ in range(40):
        payloads = [rng.randbytes(rng.choice((0, 1, 3, 125, 126, 1000, 70000))) for _ in range(3)]
        stream = b"".join(raw_frame(Opcode.BINARY, p, mask=rng.randbytes(4)) for p in payloads)
        events = feed(random_splits(stream, rng))
        assert merged(events) == [("binary", p) for p in payloads]


def test_same_mask_across_frames_and_odd_chunk_sizes() -> None:
    rng = random.Random(5)
    payloads = [rng.randbytes(n) for n in (5, 13, 1 << 16)]
    stream = b"".join(raw_frame(Opcode.BINARY, p) for p in payloads)  # all with MASK
    for size in (1, 3, 5, 7, 4096, 4099):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert merged(feed(chunks)) == [("binary", p) for p in payloads]


# --- refusals: masking, header bits, opcodes, lengths ---------------------------------


def test_unmasked_client_frame_is_refused() -> None:
    assert refused(raw_frame(Opcode.BINARY, b"hi", mask=None)) == 1002
    assert refused(raw_frame(Opcode.PING, mask=None)) == 1002


def test_masked_server_frame_is_refused_by_the_client_role() -> None:
    assert refused(RFC_HELLO_MASKED, "client") == 1002


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_are_refused(rsv: int) -> None:
    assert refused(raw_frame(Opcode.BINARY, b"x", rsv=rsv)) == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_are_refused(opcode: int) -> None:
    assert refused(raw_frame(opcode, b"x")) == 1002


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_long_or_fragmented_control_frames_are_refused(opcode: int) -> None:
    payload = b"\x03\xe8" + bytes(124) if opcode == Opcode.CLOSE else bytes(126)
    assert refused(raw_frame(opcode, payload)) == 1002
    assert refused(raw_frame(opcode, payload[:2], fin=False)) == 1002
    ok = b"\x03\xe8" + b"r" * 123 if opcode == Opcode.CLOSE else bytes(125)
    assert len(feed([raw_frame(opcode, ok)])) == 1


def test_continuation_without_a_message_is_refused() -> None:
    assert refused(raw_frame(0, b"x")) == 1002
    assert refused(raw_frame(Opcode.BINARY, b"a") + raw_frame(0, b"b")) == 1002


def test_new_data_frame_inside_a_fragmented_message_is_refused() -> None:
    start = raw_frame(Opcode.TEXT, b"a", fin=False)
    assert refused(start + raw_frame(Opcode.BINARY, b"b")) == 1002
    assert refused(start + raw_frame(Opcode.TEXT, b"b", fin=False)) == 1002


def test_64_bit_length_with_top_bit_is_refused() -> None:
    header = bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 63)
    assert refused(header, max_message=1 << 70) == 1002


def test_non_minimal_lengths_are_refused() -> None:
    assert refused(raw_frame(Opcode.BINARY, b"abc", width=2)) == 1002
    assert refused(raw_frame(Opcode.BINARY, bytes(300), width=8)) == 1002


# --- refusals: message size -----------------------------------------------------------


def test_declared_one_tebibyte_is_refused_from_the_header_alone() -> None:
    header = bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 40)  # no mask, no payload sent
    assert refused(header) == 1009


def test_oversized_frame_is_refused_before_its_payload() -> None:
    header = raw_frame(Opcode.BINARY, length=(1 << 20) + 1)  # header + mask only
    assert refused(header) == 1009
    assert refused(raw_frame(Opcode.BINARY, length=1025)[:4], max_message=1024) == 1009


def test_fragments_summing_over_the_cap_are_refused_at_the_later_header() -> None:
    first = raw_frame(Opcode.BINARY, bytes(1000), fin=False)
    second = raw_frame(0, length=25)[:4]  # its header alone
    reader = FrameReader("server", max_message=1024)
    reader.receive_data(first + second)
    assert reader.next_event() == Data(bytes(1000), False, False)
    with pytest.raises(ParseFailed) as info:
        reader.next_event()
    assert info.value.code == 1009


def test_cap_counts_per_message_not_per_connection() -> None:
    stream = raw_frame(Opcode.BINARY, bytes(1000)) * 5
    assert all_ways(stream, max_message=1024) == [("binary", bytes(1000))] * 5


# --- refusals: UTF-8 ------------------------------------------------------------------


def test_invalid_utf8_text_is_refused() -> None:
    assert refused(raw_frame(Opcode.TEXT, b"ok \xff")) == 1007
    assert refused(raw_frame(Opcode.TEXT, "é".encode()[:1])) == 1007  # truncated at the end


def test_invalid_utf8_split_across_fragments_is_refused() -> None:
    euro = "€".encode()  # 3 bytes
    good = raw_frame(Opcode.TEXT, euro[:1], fin=False) + raw_frame(0, euro[1:])
    assert all_ways(good) == [("text", euro)]
    bad = raw_frame(Opcode.TEXT, euro[:2], fin=False) + raw_frame(0, b"A")
    assert refused(bad) == 1007
    unfinished = raw_frame(Opcode.TEXT, b"ab", fin=False) + raw_frame(0, euro[:2])
    assert refused(unfinished) == 1007


def test_binary_messages_are_not_utf8_checked() -> None:
    assert all_ways(raw_frame(Opcode.BINARY, b"\xff\xfe")) == [("binary", b"\xff\xfe")]


# --- close frames ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999])
def test_valid_close_codes(code: int) -> None:
    stream = raw_frame(Opcode.CLOSE, code.to_bytes(2, "big") + "bye ✓".encode())
    assert all_ways(stream) == [Close(code, "bye ✓")]


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2000, 2999, 5000])
def test_invalid_close_codes_are_refused(code: int) -> None:
    assert refused(raw_frame(Opcode.CLOSE, code.to_bytes(2, "big"))) == 1002


def test_close_payload_rules() -> None:
    assert all_ways(raw_frame(Opcode.CLOSE)) == [Close(1005, "")]
    assert refused(raw_frame(Opcode.CLOSE, b"\x03")) == 1002
    assert refused(raw_frame(Opcode.CLOSE, b"\x03\xe8\xc3")) == 1007


def test_nothing_is_read_after_close() -> None:
    after = raw_frame(Opcode.BINARY, b"late") + b"\xff\xff garbage"
    reader = FrameReader()
    reader.receive_data(raw_frame(Opcode.CLOSE, b"\x03\xe8") + after)
    assert reader.next_event() == Close(1000, "")
    assert reader.closed
    reader.receive_data(after)
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"")
    assert reader.next_event() is NEED_DATA


# --- EOF and errors -------------------------------------------------------------------


def test_eof_between_frames_is_a_connection_closed_event() -> None:
    events = feed([raw_frame(Opcode.BINARY, b"x"), b""])
    assert events == [Data(b"x", True, False), ConnectionClosed()]


def test_eof_mid_frame_is_an_error() -> None:
    frame = raw_frame(Opcode.BINARY, b"hello")
    for cut in range(1, len(frame)):  # inside the header, the mask, the payload
        reader = FrameReader()
        reader.receive_data(frame[:cut])
        reader.receive_data(b"")
        with pytest.raises(ParseFailed) as info:
            while reader.next_event() is not NEED_DATA:
                pass
        assert info.value.code == 1006


def test_eof_inside_a_fragmented_message_is_an_error() -> None:
    with pytest.raises(ParseFailed) as info:
        feed([raw_frame(Opcode.BINARY, b"a", fin=False), b""])
    assert info.value.code == 1006
    with pytest.raises(ParseFailed):
        feed([raw_frame(Opcode.PING, b"x", mask=None), b""], "server")


def test_errors_are_sticky() -> None:
    reader = FrameReader()
    reader.receive_data(raw_frame(Opcode.BINARY, b"x", mask=None))
    for _ in range(2):
        with pytest.raises(ParseFailed) as info:
            reader.next_event()
        assert info.value.code == 1002
    reader.receive_data(raw_frame(Opcode.BINARY, b"fine"))  # ignored
    with pytest.raises(ParseFailed):
        reader.next_event()


def test_data_after_eof_is_a_caller_error() -> None:
    reader = FrameReader()
    reader.receive_data(b"")
    with pytest.raises(RuntimeError):
        reader.receive_data(b"x")


def test_role_is_checked() -> None:
    with pytest.raises(ValueError):
        FrameReader("proxy")  # type: ignore[arg-type]


# --- encoders -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536, 70000])
def test_encoded_frames_round_trip_in_both_roles(n: int) -> None:
    payload = random.Random(n).randbytes(n)
    server_frame = encode_binary(payload)
    assert server_frame == raw_frame(Opcode.BINARY, payload, mask=None)
    assert merged(feed([server_frame], "client", max_message=1 << 17)) == [("binary", payload)]
    client_frame = encode_binary(payload, mask=b"\x01\x02\x03\x04")
    assert client_frame == raw_frame(Opcode.BINARY, payload, mask=b"\x01\x02\x03\x04")
    assert merged(feed([client_frame], "server", max_message=1 << 17)) == [("binary", payload)]


def test_encode_accepts_any_buffer() -> None:
    data = bytearray(b"abc")
    assert encode_binary(memoryview(data)) == encode_binary(bytes(data)) == b"\x82\x03abc"


def test_encode_close() -> None:
    assert encode_close() == b"\x88\x02\x03\xe8"
    assert encode_close(None) == b"\x88\x00"
    assert feed([encode_close(1011, "console unreachable")], "client") == [
        Close(1011, "console unreachable")
    ]
    long_reason = "é" * 100  # 200 bytes: cut to at most 123, on a character boundary
    (event,) = feed([encode_close(1008, long_reason, mask=MASK)])
    assert isinstance(event, Close) and event.reason == "é" * 61
    for code in (1005, 1006, 1015, 999, 5000):
        with pytest.raises(ValueError):
            encode_close(code)


def test_encoder_refuses_what_the_reader_would() -> None:
    with pytest.raises(ValueError):
        encode_ping(bytes(126))
    with pytest.raises(ValueError):
        encode_frame(Opcode.PONG, b"", fin=False)
    with pytest.raises(ValueError):
        encode_frame(3, b"")
    with pytest.raises(ValueError):
        encode_binary(b"x", mask=b"abc")


def test_each_frame_is_unmasked_with_its_own_key() -> None:
    # same-sized chunks of consecutive frames, control frames between them, new keys each
    rng = random.Random(6)
    payloads = [rng.randbytes(5) for _ in range(6)]
    stream = b"".join(
        raw_frame(Opcode.PING if i % 2 else Opcode.BINARY, p, mask=rng.randbytes(4))
        for i, p in enumerate(payloads)
    )
    expected = [Ping(p) if i % 2 else ("binary", p) for i, p in enumerate(payloads)]
    assert all_ways(stream) == expected
