"""The sans-I/O RESP codec, fed whole and byte by byte, and redis URL parsing."""

from __future__ import annotations

import pytest
from consoleauth.stores.redis_link import parse_redis_url
from consoleauth.stores.resp import NEED, RespError, RespParser, RespProtocolError, encode

STREAM = (b"+OK\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:7\r\n"
          b"-ERR wrong number of arguments\r\n*0\r\n$0\r\n\r\n*-1\r\n")
EXPECTED = ["OK", 42, b"hello", None, [b"a", None, [7]], "ERR wrong number of arguments", [],
            b"", None]


def _drain(parser: RespParser) -> list:
    out = []
    while (reply := parser.next()) is not NEED:
        out.append(str(reply) if isinstance(reply, RespError) else reply)
    return out


def test_whole_stream() -> None:
    parser = RespParser()
    parser.feed(STREAM)
    assert _drain(parser) == EXPECTED


def test_byte_by_byte_gives_the_same_replies() -> None:
    parser = RespParser()
    out = []
    for i in range(len(STREAM)):
        parser.feed(STREAM[i:i + 1])
        out += _drain(parser)
    assert out == EXPECTED


def test_error_reply_is_a_value_not_a_failure() -> None:
    parser = RespParser()
    parser.feed(b"-NOSCRIPT No matching script\r\n:1\r\n")
    error = parser.next()
    assert isinstance(error, RespError) and str(error).startswith("NOSCRIPT")
    assert parser.next() == 1


@pytest.mark.parametrize("garbage", [b"?what\r\n", b"$abc\r\n", b"$3\r\nabcXY", b"\r\n",
                                     b"$999999999999\r\n"])
def test_garbage_is_a_sticky_protocol_error(garbage: bytes) -> None:
    parser = RespParser()
    parser.feed(garbage)
    with pytest.raises(RespProtocolError):
        parser.next()
    parser.feed(b":1\r\n")
    with pytest.raises(RespProtocolError):  # the link must be dropped
        parser.next()


def test_endless_line_is_bounded() -> None:
    parser = RespParser()
    parser.feed(b"+" + b"x" * 70000)
    with pytest.raises(RespProtocolError):
        parser.next()


def test_encode_commands() -> None:
    assert encode("MGET", "a", b"bc") == b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$2\r\nbc\r\n"
    assert encode("EXPIRE", "k", 5, 1.5) == b"*4\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    with pytest.raises(TypeError):
        encode("SET", "k", None)


def test_redis_urls() -> None:
    a = parse_redis_url("redis://:s3cret@10.0.0.5:6380/3")
    assert (a.host, a.port, a.db, a.password, a.username, a.tls) == (
        "10.0.0.5", 6380, 3, "s3cret", None, False)
    assert "s3cret" not in a.where()
    a = parse_redis_url("rediss://user:p%40ss@redis.example")
    assert (a.host, a.port, a.db, a.username, a.password, a.tls) == (
        "redis.example", 6379, 0, "user", "p@ss", True)
    a = parse_redis_url("unix:///run/redis.sock?db=2")
    assert (a.path, a.db, a.host) == ("/run/redis.sock", 2, None)
    for bad in ("http://h", "redis://h/notanumber", "redis://:6379", "unix://"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)
