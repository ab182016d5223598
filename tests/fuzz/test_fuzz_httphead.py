"""Fuzzing the HTTP head readers (proto/httphead.py) and the xvp preamble built on them.

Any bytes, whole or in any chunking: a ``Request``/``Response``, ``NEED_DATA`` until EOF,
or ``HeadError`` with a status to answer (400/431 for requests, 502 for responses); never
another exception, never more than ``max_size`` bytes buffered. The xvp preamble is a
request head whose target carries ``token``: ``query_param`` answers for any target.
"""

from __future__ import annotations

from console_common.proto.httphead import (
    NEED_DATA,
    HeadError,
    HeadReader,
    Request,
    Response,
    StatusReader,
    query_param,
    target_path,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import chunked, inputs

MAX = 1024

REQUESTS = [
    b"GET /websockify?token=abc HTTP/1.1\r\nHost: 127.0.0.1:6080\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:6080\r\n"
    b"Cookie: token=abc; other=1\r\n\r\n",
    b"GET /vnc_lite.html?path=%3Ftoken%3Dabc HTTP/1.0\r\n\r\nRFB 003.008\n",
    b"\r\n\r\nHEAD / HTTP/1.1\nHost: x\n\n",
]
PREAMBLES = [
    b"CONNECT /console?token=0123456789abcdef0123456789abcdef HTTP/1.0\r\n\r\n",
    b"CONNECT /console?token=a%2Fb%00c&token=second HTTP/1.1\r\nHost: h\r\n\r\nRFB 003.008\n",
    b"GET //evil/console?token=x#frag HTTP/1.1\r\n\r\n",
    b"CONNECT http://[::1]:6081/console?token=t HTTP/1.0\r\n\r\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\n\r\nRFB 003.008\n",
    b"HTTP/1.0 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 \r\n\r\n",
]


def _read(reader: HeadReader | StatusReader, chunks: list[bytes],
          statuses: tuple[int, ...]) -> Request | Response | None:
    for chunk in [*chunks, b""]:
        reader.receive_data(chunk)
        try:
            event = reader.next_event()
        except HeadError as exc:
            assert exc.status in statuses and exc.reason
            try:  # and it keeps saying so
                reader.next_event()
            except HeadError as again:
                assert again.status == exc.status
            else:
                raise AssertionError("a failed reader answered again")
            return None
        if event is not NEED_DATA:
            return event
        assert len(reader._buf) <= MAX  # what it holds while it waits is bounded
    raise AssertionError("EOF without a verdict")


@given(st.data())
def test_request_and_response_heads_take_any_bytes(data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        raw = data.draw(inputs(REQUESTS + PREAMBLES))
        head = _read(HeadReader(MAX), data.draw(chunked(raw)), (400, 431))
        if head is not None:
            assert isinstance(head, Request) and head.method and head.target
            assert all(n == n.lower() for n, _ in head.headers)
    else:
        raw = data.draw(inputs(RESPONSES))
        head = _read(StatusReader(MAX), data.draw(chunked(raw)), (502,))
        if head is not None:
            assert isinstance(head, Response) and 100 <= head.status <= 999


_TOKENISH = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["../../etc/passwd", "%2e%2e%2f%2e%2e%2f", "' OR 1=1 --", "$(reboot)",
                     "`id`", "a;rm -rf /", "%00", "\x00", "%ff%fe", "[", "]", "%5B", "#",
                     "?token=", "&token=", "=", "%", "%zz", "\u202e", "😀" * 10]),
)


@given(st.data())
def test_xvp_preamble_gives_a_request_or_a_head_error(data: st.DataObject) -> None:
    """What xvpvncproxy does with a preamble before any bus call: read the head, take the
    token from the target. Either step may refuse (400); neither may raise anything else."""
    if data.draw(st.booleans()):
        token = data.draw(_TOKENISH)
        prefix = data.draw(st.sampled_from(["/console?token=", "//[x/console?token=",
                                            "http://[::1/console?token=", "/console?a=1&token=",
                                            "/con sole?token=", "/console#?token="]))
        raw = (f"CONNECT {prefix}{token} HTTP/1.0\r\n\r\n").encode("utf-8", "surrogatepass")
        raw = data.draw(st.sampled_from([raw, raw[: data.draw(st.integers(0, len(raw)))]]))
    else:
        raw = data.draw(inputs(PREAMBLES))
    head = _read(HeadReader(MAX), data.draw(chunked(raw)), (400, 431))
    if head is None:
        return
    token = query_param(head.target, "token")
    assert token is None or isinstance(token, str)
    assert isinstance(target_path(head.target), str)


_HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.sampled_from(["token=abc; a=\"", "token=\\xff\\xfe", "token=%ff%00", "=;;=", "token",
                     "http://[::1", "http://a@b", "null", "https://x:99999", "ws://", "[",
                     "127.0.0.1:6080", "a, b, , c", "\t"]),
)


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80),
       st.lists(st.tuples(st.sampled_from(["host", "origin", "cookie", "upgrade", "connection",
                                           "sec-websocket-key", "sec-websocket-version",
                                           "sec-websocket-protocol", "x-forwarded-for",
                                           "x-forwarded-proto"]), _HEADER_VALUES),
                max_size=8))
def test_novnc_admission_takes_any_parsed_head(target: str,
                                               headers: list[tuple[str, str]]) -> None:
    """What novncproxy does with a parsed head before any bus call (pure functions):
    the WebSocket handshake verdict, the token from query/path/cookie, the Origin check,
    the client address. Each answers for any head a HeadReader can return."""
    from console_common.proto.websocket.handshake import Accept, Refusal, server_handshake
    from novncproxy import admission

    verdict = server_handshake("GET", target, tuple(headers))
    assert isinstance(verdict, Accept | Refusal)
    head = dict(headers)
    token = admission.token_from_request(target, head.get("cookie"))
    assert token is None or (isinstance(token, str) and token)
    admission.token_is_plausible(token)
    admission.refused_target(target)
    policy = admission.OriginPolicy.from_config(["allowed.example"], ["127.0.0.1"])
    scheme = admission.effective_scheme(False, "127.0.0.1", head.get("x-forwarded-proto"),
                                        policy)
    assert scheme in ("http", "https")
    origin = admission.check_origin(head.get("origin"), head.get("host"), scheme, policy)
    assert origin.allowed or origin.reason
    assert admission.client_address("127.0.0.1", head.get("x-forwarded-for"), policy)
