"""One client connection: HTTP/1.1 over a gevent socket, parsed once by our sans-I/O
``HeadReader``, then either a plain response (kept alive) or the WebSocket session.

Why not gevent.pywsgi + gevent-websocket (what this replaced): the head was parsed twice
(ours for the bounds, then pywsgi's), and holding the bounds, our refusal answers and our
frame layer needed overrides of their private names (``_BAD_REQUEST_RESPONSE``,
``_handle_client_error``, ``wsgi_input._discard``, ...). Their public surface gives none of
what we need: a bounded head in size *and* time (pywsgi reads 100 header lines of 64 KiB
with no deadline), every check before the 101 (gevent-websocket writes the 101 first),
no per-byte unmasking (its ``WebSocket`` unmasks in pure Python). What was left of them
was plumbing, so the front door is ours: ``StreamServer`` (server.py), this loop, the
sans-I/O ``HeadReader`` and handshake, ``WsStream`` over our ``FrameReader``.

Bounds: a head is at most ``request_head_max`` bytes (431 beyond) and must arrive within
``request_head_timeout`` seconds (a slowloris gets 408); a connection idle between
requests for that long is closed; a TLS hello on a plain port gets 400 at once. Nothing
here logs a request line (it carries the token).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import gevent
import structlog
from console_common.proto.httphead import (NEED_DATA, HeadError, HeadReader, Request, render_head,
                                           target_path)

from novncproxy.app import ConsoleApp, Refused
from console_common.net.wsstream import WsStream, shutdown_reads

log = structlog.get_logger("novncproxy")
_TLS_RECORD = b"\x16"
READ = 16 * 1024


def plain_response(status: int, reason: str, text: str,
                   extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = (text + "\n").encode("utf-8")
    head = render_head(status, reason, (("Content-Type", "text/plain; charset=utf-8"),
                                        ("Content-Length", str(len(body))),
                                        ("Connection", "close"), *extra))
    return head + body


def _has_token(value: str | None, token: str) -> bool:
    return bool(value) and token in (t.strip().lower() for t in value.split(","))  # type: ignore[union-attr]


def _keep_alive(head: Request) -> bool:
    connection = head.header("connection")
    if head.version == "1.0":
        return _has_token(connection, "keep-alive")
    if _has_token(connection, "close"):
        return False
    # We read no request bodies (GET and HEAD only): a request with one ends the connection.
    return not head.header("transfer-encoding") and head.header("content-length") in (None, "0")


class Connection:
    def __init__(self, sock: Any, address: Any, server: Any) -> None:
        self.sock = sock
        self.server = server
        self.app: ConsoleApp = server.application
        self.tls = hasattr(sock, "getpeercert")
        self.peer = address[0] if isinstance(address, tuple) else str(address or "")
        self.peer_port = address[1] if isinstance(address, tuple) else None
        self._pending = b""  # bytes read past the last head (a pipelined request)

    def serve(self) -> None:
        try:
            while not self.server.draining:
                outcome = self._read_head()
                if outcome is None:
                    return
                if isinstance(outcome, bytes):  # a head we refuse: answered, then closed
                    self._send(outcome)
                    return
                if _has_token(outcome.header("upgrade"), "websocket"):
                    self._upgrade(outcome)
                    return
                if not self._respond(outcome):
                    return
        except OSError:
            pass  # the client went away: nobody to answer
        finally:
            self.server.idle.discard(self)
            self.sock.close()

    # --- the request head, bounded in size and time ----------------------------------------

    def _read_head(self) -> Request | bytes | None:
        server, metrics = self.server, self.app.metrics
        reader = HeadReader(max_size=server.head_max)
        data, self._pending = self._pending, b""
        first = not data
        timer = gevent.Timeout(server.head_timeout)
        timer.start()
        server.idle.add(self)
        try:
            while True:
                if data:
                    if first and data[:1] == _TLS_RECORD:
                        raise HeadError(400, "TLS handshake on a plain-text port: use http://")
                    first = False
                    server.idle.discard(self)
                    reader.receive_data(data)
                    event = reader.next_event()
                    if event is not NEED_DATA:
                        self._pending = reader.trailing_data
                        return event
                data = self.sock.recv(READ)
                if not data:
                    return None  # EOF before a head: nobody to answer
        except HeadError as exc:
            metrics.refused("head_too_large" if exc.status == 431 else "bad_request")
            phrase = "Request Header Fields Too Large" if exc.status == 431 else "Bad Request"
            log.info("http.bad_request", status=exc.status, reason=exc.reason, client=self.peer)
            return plain_response(exc.status, phrase, exc.reason)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if first:
                return None  # idle between requests (or never spoke): just close
            metrics.refused("head_timeout")
            return plain_response(408, "Request Timeout", "request head too slow")
        finally:
            timer.close()
            server.idle.discard(self)

    # --- a plain request ---------------------------------------------------------------------

    def _respond(self, head: Request) -> bool:
        """Answer one request; whether the connection stays open for another."""
        path = unquote(target_path(head.target), encoding="latin-1") or "/"
        status, headers, body = self.app.route(head, path, self.peer, self.tls)
        keep = _keep_alive(head) and not self.server.draining
        code, _, reason = status.partition(" ")
        length = len(body)
        if head.method == "HEAD":
            body = b""
        out = render_head(int(code), reason, (*headers, ("Content-Length", str(length)),
                                              ("Connection", "keep-alive" if keep else "close")))
        self._send(out + body)
        return keep

    def _send(self, data: bytes) -> None:
        with gevent.Timeout(self.server.head_timeout, False):  # a client that never reads
            self.sock.sendall(data)

    # --- the upgrade: every check before the 101 --------------------------------------------

    def _upgrade(self, head: Request) -> None:
        app = self.app
        verdict = app.admit(head, self.peer, self.tls, upgrade=True, peer_port=self.peer_port)
        if isinstance(verdict, Refused):
            self._refuse(verdict)
            return
        prepared = app.prepare_session(verdict)
        if isinstance(prepared, Refused):  # the cluster-wide limits said no
            self._refuse(prepared)
            return
        # A client waits for the 101 before it sends frames (RFC 6455 4.1); whatever came
        # with the head anyway is the session's first bytes.
        early, self._pending = self._pending, b""
        ws = WsStream(self.sock, app.max_message, tls=self.tls, early=early)
        assert verdict.accept is not None
        accept = verdict.accept
        try:
            self.sock.sendall(render_head(accept.status, accept.reason, accept.headers))
        except OSError:
            pass  # the client left: the session ends at once and closes the target
        app.run_session(ws, prepared)

    def _refuse(self, refused: Refused) -> None:
        log.info("session.refused", reason=refused.error, detail=refused.message,
                 status=refused.status, client=self.peer, client_port=self.peer_port)
        status, headers, body = self.app.refusal_response(refused)
        code, _, reason = status.partition(" ")
        self._send(render_head(int(code), reason, (
            *headers, ("Content-Length", str(len(body))), ("Connection", "close"))) + body)

    def abort_idle(self) -> None:
        """Drain: wake a connection waiting for its next request head, so it closes."""
        shutdown_reads(self.sock)
