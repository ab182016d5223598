"""The metrics ports' small HTTP server (net.plainhttp) on a real loopback socket."""

from __future__ import annotations

import gevent
from gevent import socket

from console_common.net.plainhttp import PlainHttpServer


def _ask(port: int, data: bytes, wait: float = 2.0) -> bytes:
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait)
    try:
        if data:
            sock.sendall(data)
        out = b""
        with gevent.Timeout(wait, False):
            while chunk := sock.recv(65536):
                out += chunk
        return out
    finally:
        sock.close()


def test_pages_and_every_refusal() -> None:
    seen: list[tuple[str, str]] = []

    def route(path: str, query: str) -> tuple[int, str, bytes]:
        seen.append((path, query))
        return (200, "text/plain", b"hello\n") if path == "/ok" else (404, "text/plain", b"no\n")

    server = PlainHttpServer(("127.0.0.1", 0), route, head_timeout=0.3)
    server.start()
    port = server.server_port
    try:
        got = _ask(port, b"GET /ok?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\nhello\n")
        assert b"Content-Length: 6\r\n" in got and b"Connection: close\r\n" in got
        assert seen == [("/ok", "x=1")]
        head = _ask(port, b"HEAD /ok HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")  # no body
        assert _ask(port, b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
        assert _ask(port, b"POST /ok HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
        assert _ask(port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
        big = b"GET /ok HTTP/1.1\r\nX: " + b"a" * 10000 + b"\r\n\r\n"
        assert _ask(port, big).startswith(b"HTTP/1.1 431")
        assert _ask(port, b"GET /ok HTTP/1.1\r\n").startswith(b"HTTP/1.1 408")  # too slow
        assert _ask(port, b"") == b""  # a probe that says nothing: closed, no answer
        assert _ask(port, b"GET //[x/?a=b HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    finally:
        server.stop(timeout=1)
