"""Fuzzing the RESP parser (consoleauth/stores/resp.py), which reads every Redis reply.

Any RESP value Redis could send, encoded and cut anywhere, parses back to itself, the
same whole or in pieces (MGET replies take a fast path of their own: arrays of bulk
strings). Any bytes at all: replies, NEED, or a sticky RespProtocolError; never another
exception.
"""

from __future__ import annotations

from typing import Any

from consoleauth.stores.resp import NEED, RespError, RespParser, RespProtocolError
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import chunked, inputs

_line = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=20)
_scalars = st.one_of(
    st.binary(max_size=40),                        # bulk string (may hold \r\n)
    st.none(),                                     # null bulk
    st.integers(-(2 ** 63), 2 ** 63 - 1),          # integer
    _line.map(lambda s: ("+", s)),                 # status
    _line.map(lambda s: ("-", s)),                 # error
)
VALUES = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=24)


def _encode(value: Any) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, tuple):
        return f"{value[0]}{value[1]}\r\n".encode()
    return b"*%d\r\n" % len(value) + b"".join(_encode(v) for v in value)


def _expected(value: Any) -> Any:
    if isinstance(value, tuple):
        return value[1] if value[0] == "+" else ("error", value[1])
    if isinstance(value, list):
        return [_expected(v) for v in value]
    return value


def _seen(reply: Any) -> Any:
    if isinstance(reply, RespError):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [_seen(r) for r in reply]
    return reply


def _parse(chunks: list[bytes]) -> list[Any]:
    parser, out = RespParser(), []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next()) is not NEED:
            out.append(_seen(reply))
    return out


@given(st.data(), st.lists(VALUES, min_size=1, max_size=4))
def test_every_value_parses_back_whole_or_in_pieces(data: st.DataObject, values: list) -> None:
    stream = b"".join(_encode(v) for v in values)
    assert _parse(data.draw(chunked(stream))) == [_expected(v) for v in values]


SEEDS = [b"*3\r\n$5\r\nhello\r\n$-1\r\n$0\r\n\r\n", b"*2\r\n:1\r\n*1\r\n+OK\r\n",
         b"-ERR no\r\n$3\r\na\r\nb\r\n", b"*-1\r\n*0\r\n", b"$70000\r\n"]


@given(st.data(), inputs(SEEDS))
def test_any_bytes_give_replies_need_or_a_sticky_protocol_error(data: st.DataObject,
                                                                  raw: bytes) -> None:
    parser = RespParser()
    try:
        for chunk in data.draw(chunked(raw)):
            parser.feed(chunk)
            while parser.next() is not NEED:
                pass
    except RespProtocolError:
        parser.feed(b":1\r\n")
        try:
            parser.next()
        except RespProtocolError:
            return
        raise AssertionError("a protocol error must stay") from None
