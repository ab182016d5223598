"""A small HTTP/1.1 server for the plain GET pages of a service's second port
(``/metrics``, ``/healthz``): xvpvncproxy's metrics port and consoleauth's.

Why not gevent.pywsgi (what this replaced): a malformed request made it log an error line
echoing the client's raw bytes, a reset while reading printed a bare traceback (not JSON),
and a BrokenPipe while sending its 400 killed the handler greenlet; quieting it meant
overriding its private ``_handle_client_error``. Here the head goes through our sans-I/O
``HeadReader`` (bounded in size and time, as every port of the suite), one request per
connection, and a bad one gets its 400/431 and one info line.

    server = PlainHttpServer(listener, route, pool_size=16)
    server.start()

``route(path, query)`` returns ``(status, content_type, body)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import gevent.pool
import structlog
from gevent.server import StreamServer

from console_common.proto.httphead import (NEED_DATA, HeadError, HeadReader, render_head,
                                           target_path, target_query)

log = structlog.get_logger("plainhttp")

Route = Callable[[str, str], tuple[int, str, bytes]]
HEAD_MAX = 8192
HEAD_TIMEOUT = 5.0
READ = 4096
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


class PlainHttpServer(StreamServer):
    def __init__(self, listener: Any, route: Route, pool_size: int = 16,
                 head_timeout: float = HEAD_TIMEOUT) -> None:
        # a pool of its own: a scrape never waits behind consoles, and a flood of
        # connections to this port holds at most pool_size greenlets
        super().__init__(listener, spawn=gevent.pool.Pool(pool_size))
        self.route, self.head_timeout = route, head_timeout

    def handle(self, sock: Any, address: Any) -> None:
        try:
            self._serve(sock, address)
        except OSError:
            pass  # the client left: nobody to answer
        finally:
            sock.close()

    def _serve(self, sock: Any, address: Any) -> None:
        reader = HeadReader(max_size=HEAD_MAX)
        spoke = False
        try:
            with gevent.Timeout(self.head_timeout, TimeoutError):
                while (head := reader.next_event()) is NEED_DATA:
                    data = sock.recv(READ)
                    if not data:
                        return  # closed before a whole head: a probe
                    spoke = True
                    reader.receive_data(data)
        except TimeoutError:
            if spoke:  # one that never spoke (a TCP probe) is just closed
                self._send(sock, 408, "text/plain", b"request head too slow\n")
            return
        except HeadError as exc:
            client = address[0] if isinstance(address, tuple) else str(address)
            log.info("metrics.bad_request", client=client[:64], reason=exc.reason)
            self._send(sock, exc.status, "text/plain", exc.reason.encode() + b"\n")
            return
        if head.method not in ("GET", "HEAD"):
            self._send(sock, 405, "text/plain", b"GET only\n", (("Allow", "GET, HEAD"),))
            return
        status, kind, body = self.route(target_path(head.target), target_query(head.target))
        self._send(sock, status, kind, b"" if head.method == "HEAD" else body,
                   length=len(body))

    def _send(self, sock: Any, status: int, kind: str, body: bytes,
              extra: tuple[tuple[str, str], ...] = (), length: int | None = None) -> None:
        head = render_head(status, _REASONS.get(status, "Error"), (
            ("Content-Type", kind), ("Content-Length", str(len(body) if length is None
                                                            else length)),
            ("Connection", "close"), *extra))
        with gevent.Timeout(self.head_timeout, False):  # a client that never reads
            sock.sendall(head + body)
