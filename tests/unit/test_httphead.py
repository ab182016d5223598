"""Bounded HTTP/1.x heads: console_common.proto.httphead (sans-I/O, no sockets)."""

from __future__ import annotations

import pytest
from console_common.proto.httphead import (
    NEED_DATA,
    HeadError,
    HeadReader,
    Request,
    Response,
    StatusReader,
    parse_status_line,
    query_param,
    render_head,
    target_path,
)

BROWSER = (
    b"GET /websockify?token=abc HTTP/1.1\r\n"
    b"Host: proxy:6080\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"X-Empty:\r\n"
    b"X-Padded: \t spaced value \t\r\n"
    b"\r\n"
)
BROWSER_REQUEST = Request(
    "GET",
    "/websockify?token=abc",
    "1.1",
    (
        ("host", "proxy:6080"),
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
        ("x-empty", ""),
        ("x-padded", "spaced value"),
    ),
)
XVP = b"CONNECT /console?token=T0k3n HTTP/1.0\r\n\r\n"


def read(chunks: list[bytes], max_size: int = 8192) -> tuple[Request, bytes]:
    reader = HeadReader(max_size)
    for i, chunk in enumerate(chunks):
        reader.receive_data(chunk)
        event = reader.next_event()
        if event is not NEED_DATA:
            assert i == len(chunks) - 1, "the head came out before its last byte"
            return event, reader.trailing_data
    raise AssertionError("no request head")


def all_ways(head: bytes, max_size: int = 8192) -> Request:
    """Whole, byte by byte (NEED_DATA until the last byte), and with trailing bytes."""
    whole, rest = read([head], max_size)
    assert rest == b""
    assert read([head[i : i + 1] for i in range(len(head))], max_size) == (whole, b"")
    reader = HeadReader(max_size)
    reader.receive_data(head + b"RFB 003.008\n")
    assert reader.next_event() == whole
    assert reader.trailing_data == b"RFB 003.008\n"
    reader.receive_data(b"more")
    assert reader.trailing_data == b"RFB 003.008\nmore"
    return whole


def refused(data: bytes, max_size: int = 8192, eof: bool = False) -> HeadError:
    """The error a head is refused with, the same fed whole and byte by byte."""
    errors = []
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        reader = HeadReader(max_size)
        with pytest.raises(HeadError) as info:
            for chunk in [*chunks, b""] if eof else chunks:
                reader.receive_data(chunk)
                assert reader.next_event() is NEED_DATA
        errors.append(info.value)
        with pytest.raises(HeadError):  # and it stays refused
            reader.next_event()
    assert (errors[0].status, errors[0].reason) == (errors[1].status, errors[1].reason)
    return errors[0]


def test_browser_request() -> None:
    request = all_ways(BROWSER)
    assert request == BROWSER_REQUEST
    assert request.header("Sec-WebSocket-Version") == "13"
    assert request.header("cookie") is None


def test_xvp_preambles() -> None:
    assert all_ways(XVP) == Request("CONNECT", "/console?token=T0k3n", "1.0", ())
    get = all_ways(b"GET /console?token=T0k3n HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (get.method, get.target, get.header("host")) == ("GET", "/console?token=T0k3n", "x")


def test_bare_newlines_and_leading_blank_lines() -> None:
    bare = all_ways(BROWSER.replace(b"\r\n", b"\n"))
    assert bare == BROWSER_REQUEST
    assert all_ways(b"\r\n\n" + XVP) == Request("CONNECT", "/console?token=T0k3n", "1.0", ())
    mixed = all_ways(b"GET / HTTP/1.1\r\nA: b\n\r\n")
    assert mixed.headers == (("a", "b"),)


def test_repeated_headers_are_kept_in_order() -> None:
    request = all_ways(b"GET / HTTP/1.1\r\nCookie: a=1\r\nX: y\r\ncookie: token=T\r\n\r\n")
    assert request.header("Cookie") == "a=1, token=T"
    assert request.headers == (("cookie", "a=1"), ("x", "y"), ("cookie", "token=T"))


def test_head_exactly_at_the_limit_is_accepted() -> None:
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 100 + b"\r\n\r\n"
    assert all_ways(head, max_size=len(head)).header("x") == "a" * 100


def test_head_over_the_limit_is_refused() -> None:
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 100 + b"\r\n\r\n"
    error = refused(head, max_size=len(head) - 1)
    assert error.status == 431 and "request head too large" in error.reason
    endless = b"GET / HTTP/1.1\r\n" + b"X-Pad: aaaaaaaaaa\r\n" * 500  # never ends
    assert refused(endless).status == 431


def test_leading_blank_lines_count_towards_the_limit() -> None:
    assert refused(b"\r\n" * 100 + XVP, max_size=100).status == 431


@pytest.mark.parametrize(
    "line",
    [
        b"GET /",
        b"GET / HTTP/2.0",
        b"GET / HTTP/1.1 extra",
        b"GET  / HTTP/1.1",
        b"GET / http/1.1",
        b"GET /a b HTTP/1.1",
        b"G(T / HTTP/1.1",
        b" GET / HTTP/1.1",
        b"GET / HTTP/1.1\t",
    ],
)
def test_bad_request_lines_are_400(line: bytes) -> None:
    error = refused(line + b"\r\n\r\n")
    assert error.status == 400


@pytest.mark.parametrize(
    "header",
    [
        b"NoColon",
        b"Space Before: colon",
        b"Tab\t: x",
        b": empty name",
        b"X: bad\x00byte",
        b"X: caf\xc3\xa9",
    ],
)
def test_bad_header_lines_are_400(header: bytes) -> None:
    assert refused(b"GET / HTTP/1.1\r\n" + header + b"\r\n\r\n").status == 400


def test_obsolete_line_folding_is_400() -> None:
    error = refused(b"GET / HTTP/1.1\r\nX: a\r\n  continued\r\n\r\n")
    assert (error.status, error.reason) == (400, "obsolete header line folding")
    assert refused(b"GET / HTTP/1.1\r\nX: a\r\n\tcontinued\r\n\r\n").status == 400


def test_binary_garbage_is_refused_at_once() -> None:
    reader = HeadReader()
    reader.receive_data(b"RFB\x00\x01\x02")  # no line end: refused before max_size bytes
    with pytest.raises(HeadError) as info:
        reader.next_event()
    assert info.value.status == 400
    assert refused(b"GET /\xff HTTP/1.1\r\n\r\n").status == 400


def test_tls_client_hello_on_the_plain_port_is_refused_at_its_first_byte() -> None:
    reader = HeadReader()
    reader.receive_data(b"\x16")
    with pytest.raises(HeadError) as info:
        reader.next_event()
    assert info.value.status == 400 and "TLS" in info.value.reason
    hello = bytes.fromhex("160301020001 0001fc0303".replace(" ", ""))
    assert "TLS" in refused(hello).reason


def test_eof_before_the_end_is_an_error() -> None:
    assert refused(BROWSER[:-2], eof=True).status == 400
    assert "before the end" in refused(b"GET / HT", eof=True).reason
    assert "before any request" in refused(b"", eof=True).reason


def test_trickled_bytes_cost_linear_time() -> None:
    # 4 MiB in 64-byte pieces: rescanning from the start each time would scan ~128 GiB
    reader = HeadReader(max_size=8 << 20)
    reader.receive_data(b"GET / HTTP/1.1\r\n")
    line = b"X-Pad: " + b"a" * 55 + b"\r\n"
    for _ in range(65536):
        reader.receive_data(line)
        assert reader.next_event() is NEED_DATA
    reader.receive_data(b"\r\n")
    request = reader.next_event()
    assert isinstance(request, Request) and len(request.headers) == 65536


def test_reading_past_the_head_is_a_caller_error() -> None:
    reader = HeadReader()
    reader.receive_data(XVP)
    assert isinstance(reader.next_event(), Request)
    with pytest.raises(RuntimeError):
        reader.next_event()
    reader.receive_data(b"")
    with pytest.raises(RuntimeError):
        reader.receive_data(b"x")


# --- responses (a target's answer to CONNECT) -----------------------------------------


def test_status_reader_keeps_the_rfb_greeting() -> None:
    data = b"HTTP/1.1 200 OK\r\n\r\nRFB 003.008\n"
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        reader, event = StatusReader(), NEED_DATA
        for chunk in chunks:
            reader.receive_data(chunk)
            if event is NEED_DATA:
                event = reader.next_event()
        assert event == Response("1.1", 200, "OK", ())
        assert reader.trailing_data == b"RFB 003.008\n"


def test_status_reader_with_headers() -> None:
    reader = StatusReader()
    reader.receive_data(b"HTTP/1.0 200 Connection established\r\nProxy-Agent: xapi\r\n\r\n")
    response = reader.next_event()
    assert response == Response("1.0", 200, "Connection established", (("proxy-agent", "xapi"),))


def test_status_reader_refusals_are_502() -> None:
    for data in (b"RFB 003.008\n\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"\x16\x03\x01\r\n\r\n"):
        reader = StatusReader()
        reader.receive_data(data)
        with pytest.raises(HeadError) as info:
            reader.next_event()
        assert info.value.status == 502
    reader = StatusReader(max_size=64)
    reader.receive_data(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20)
    with pytest.raises(HeadError) as info:
        reader.next_event()
    assert info.value.status == 502 and "too large" in info.value.reason
    reader = StatusReader()
    reader.receive_data(b"HTTP/1.1 200 OK\r\n")
    reader.receive_data(b"")
    with pytest.raises(HeadError):
        reader.next_event()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"HTTP/1.1 200 OK", ("1.1", 200, "OK")),
        (b"HTTP/1.1 200 OK\r\n", ("1.1", 200, "OK")),
        (b"HTTP/1.0 403 Forbidden here", ("1.0", 403, "Forbidden here")),
        (b"HTTP/1.1 200", ("1.1", 200, "")),
        (b"HTTP/1.1 200 ", ("1.1", 200, "")),
    ],
)
def test_parse_status_line(line: bytes, expected: tuple[str, int, str]) -> None:
    assert parse_status_line(line) == expected


@pytest.mark.parametrize("line", [b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"200 OK", b"HTTP/1.1 OK"])
def test_parse_status_line_refuses_garbage(line: bytes) -> None:
    with pytest.raises(HeadError):
        parse_status_line(line)


# --- helpers --------------------------------------------------------------------------


def test_query_param() -> None:
    assert query_param("/console?token=T0k3n", "token") == "T0k3n"
    assert query_param("/websockify?a=1&token=x%2By&token=second", "token") == "x+y"
    assert query_param("/websockify?token=", "token") == ""
    assert query_param("/websockify", "token") is None
    assert query_param("/vnc_auto.html?path=%3Ftoken%3DT", "path") == "?token=T"
    assert query_param(query_param("/?path=%3Ftoken%3DT", "path") or "", "token") == "T"


def test_target_path() -> None:
    assert target_path("/console?token=T") == "/console"
    assert target_path("/") == "/"


def test_render_head() -> None:
    assert render_head(401, "Not Authorized") == b"HTTP/1.1 401 Not Authorized\r\n\r\n"
    assert render_head(200, "OK", (("X", "y"),)) == b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n"
    with pytest.raises(ValueError):
        render_head(200, "OK", (("X", "y\r\nSet-Cookie: z"),))
