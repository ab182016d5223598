"""The listening server: gevent's StreamServer with a bounded Pool (gunicorn's gevent
worker), one ``Connection`` (handler.py) per client, and TLS.

TLS is not left to gevent's ``StreamServer`` ssl arguments (they handshake with no
deadline, so a silent client would hold a pool slot for ever). Each connection is wrapped
here within ``request_head_timeout``:
  - ``ssl_only``: every connection must complete a TLS handshake (a plain-HTTP client
    fails it and is closed);
  - ``cert`` without ``ssl_only``: like Nova/websockify, the first byte is peeked: 0x16
    (a TLS handshake record) gets TLS, anything else is served as plain HTTP.
"""

from __future__ import annotations

import socket
from typing import Any

import gevent
import gevent.pool
import structlog
from gevent import ssl
from gevent.server import StreamServer

from novncproxy.app import ConsoleApp
from novncproxy.handler import Connection

log = structlog.get_logger("novncproxy")


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key or None)
    return ctx


class ProxyServer(StreamServer):
    # gevent's default (128) overflows in a burst of new sessions (TcpExtListenOverflows in
    # the new-sessions bench); the kernel caps it at net.core.somaxconn. As xvpvncproxy.
    backlog = 1024

    def __init__(self, listener: Any, app: ConsoleApp, *, pool: gevent.pool.Pool,
                 head_max: int, head_timeout: float,
                 tls: ssl.SSLContext | None = None, ssl_only: bool = False) -> None:
        super().__init__(listener, spawn=pool)
        self.application = app
        self.pool = pool
        self.head_max = head_max
        self.head_timeout = head_timeout
        self.tls = tls
        self.ssl_only = ssl_only
        self.draining = False
        self.idle: set[Connection] = set()  # connections waiting for a request head

    def handle(self, sock: Any, address: Any) -> None:
        self.application.metrics.connections.inc()
        if self.tls is not None:
            sock = self._wrap(sock)
            if sock is None:
                return
        Connection(sock, address, self).serve()

    def _wrap(self, sock: Any) -> Any:
        assert self.tls is not None
        metrics = self.application.metrics
        timer = gevent.Timeout(self.head_timeout)
        timer.start()
        try:
            if not self.ssl_only:
                first = sock.recv(1, socket.MSG_PEEK)
                if not first:
                    sock.close()
                    return None
                if first != b"\x16":
                    return sock  # plain HTTP on a TLS-capable port
            return self.tls.wrap_socket(sock, server_side=True)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            metrics.refused("tls_timeout")
        except (ssl.SSLError, OSError) as exc:
            metrics.refused("tls_handshake")
            log.info("http.tls_failed", error=type(exc).__name__)
        finally:
            timer.close()
        sock.close()
        return None

    def begin_drain(self) -> None:
        """Stop accepting and close connections idle between requests; sessions go on."""
        self.draining = True
        self.close()
        for handler in list(self.idle):
            handler.abort_idle()
