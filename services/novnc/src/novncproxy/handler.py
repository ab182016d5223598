"""The connection handler: gevent.pywsgi + gevent-websocket, with our bounds and admission.

What we use of gevent-websocket (``geventwebsocket.handler.WebSocketHandler``):
  - its place in gevent.pywsgi: pywsgi reads the request (we feed it a head we already
    bounded), builds the WSGI environ, keeps HTTP/1.1 keep-alive for plain requests;
  - ``run_application``'s dispatch: an upgrade request goes to ``upgrade_websocket``; a
    refusal set there is sent as an ordinary response; otherwise the WSGI app runs;
  - ``start_response``/``_prepare_response`` for the 101 (no Content-Length, no chunking,
    no Date, connection closed after the session) and ``run_websocket`` (the per-server
    ``clients`` registry, the WSGI app called with ``wsgi.websocket`` set, the socket
    closed afterwards).

What we replace, and why (measured on gevent-websocket 0.10.1):
  - ``upgrade_websocket``/``upgrade_connection``: it writes the 101 before any of our
    checks could run (Nova's mistake: clients then see a dropped socket instead of a
    status), accepts versions 7/8, matches subprotocols by substring and answers with
    status 402 for HTTP/1.0. Ours runs ``server_handshake`` (exact ``binary`` or none;
    426 for other versions), the Origin check, the token check on the bus and the target
    connection, all before the 101; refusals get their HTTP status and a JSON body.
  - ``geventwebsocket.websocket.WebSocket`` (framing): it unmasks byte by byte in pure
    Python, reads any declared 64-bit length (no message cap), accepts unmasked client
    frames and never sends close codes. ``WsStream`` (wsstream.py) over our sans-I/O
    ``FrameReader``/encoders replaces it.
  - request head reading: pywsgi bounds the request line (8 KiB) but reads up to 100
    header lines of 64 KiB each with no deadline. ``handle_one_request`` here reads the
    whole head through ``HeadReader`` within ``request_head_max`` bytes (431 beyond) and
    ``request_head_timeout`` seconds (a slowloris gets 408 and is closed), then hands the
    parsed head to pywsgi.
  - logging: pywsgi's access log and error log lines (which would carry the request line,
    token included) and gevent-websocket's own logger are replaced by structlog events
    that never hold a token.
"""

from __future__ import annotations

import logging
import traceback
from io import BytesIO
from typing import Any

import gevent
import structlog
from console_common.httphead import NEED_DATA, HeadError, HeadReader, Request, render_head
from gevent.pywsgi import _BAD_REQUEST_RESPONSE, headers_factory
from geventwebsocket.handler import WebSocketHandler

from novncproxy.app import ConsoleApp, Refused
from novncproxy.wsstream import WsStream, shutdown_reads, take_buffered

log = structlog.get_logger("novncproxy")
_wslog = logging.getLogger("geventwebsocket")
_TLS_RECORD = b"\x16"


def plain_response(status: int, reason: str, text: str,
                   extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    body = (text + "\n").encode("utf-8")
    head = render_head(status, reason, (("Content-Type", "text/plain; charset=utf-8"),
                                        ("Content-Length", str(len(body))),
                                        ("Connection", "close"), *extra))
    return head + body


def _has_token(value: str | None, token: str) -> bool:
    return bool(value) and token in (t.strip().lower() for t in value.split(","))  # type: ignore[union-attr]


class _NoInput:
    """Stands in for pywsgi's request body reader once a session runs (nothing to discard:
    the upgrade request had no body, and the reader's buffers are better freed)."""

    __slots__ = ()

    def _discard(self) -> None:
        pass


_NO_INPUT = _NoInput()


class ProxyHandler(WebSocketHandler):
    _head: Request | None = None
    _requestline = ""

    def __init__(self, sock: Any, address: Any, server: Any) -> None:
        super().__init__(sock, address, server)
        self.tls = hasattr(sock, "getpeercert")
        self.peer = address[0] if isinstance(address, tuple) else str(address or "")
        self.peer_port = address[1] if isinstance(address, tuple) else None

    # --- the request head, bounded in size and time ----------------------------------------

    def handle_one_request(self) -> Any:
        server = self.server
        if getattr(server, "draining", False) or self.rfile.closed:
            return None
        self._head = None
        outcome = self._read_head(server.head_max, server.head_timeout)
        if not isinstance(outcome, Request):
            return outcome  # None (closed) or (status, response bytes)
        self._head = outcome
        self._requestline = f"{outcome.method} {outcome.target} HTTP/{outcome.version}"
        return super().handle_one_request()

    def _read_head(self, limit: int, timeout: float) -> Request | tuple[str, bytes] | None:
        server = self.server
        metrics = server.application.metrics
        reader = HeadReader(max_size=limit)
        rfile = self.rfile
        received = 0
        timer = gevent.Timeout(timeout)
        timer.start()
        server.idle.add(self)
        try:
            first = rfile.peek(1)[:1]  # refuse a TLS hello at once, without waiting for a line
            if not first:
                return None
            if first == _TLS_RECORD:
                raise HeadError(400, "TLS handshake on a plain-text port: use http://")
            while (event := reader.next_event()) is NEED_DATA:
                line = rfile.readline(limit + 1)
                if not line:
                    return None  # EOF before the head ended: nobody to answer
                server.idle.discard(self)
                received += len(line)
                reader.receive_data(line)
        except HeadError as exc:
            metrics.refused("head_too_large" if exc.status == 431 else "bad_request")
            phrase = "Request Header Fields Too Large" if exc.status == 431 else "Bad Request"
            return str(exc.status), plain_response(exc.status, phrase, exc.reason)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            if not received:
                return None  # an idle keep-alive connection: just close it
            metrics.refused("head_timeout")
            return "408", plain_response(408, "Request Timeout", "request head too slow")
        except OSError:
            return None
        finally:
            timer.close()
            server.idle.discard(self)
        return event

    def read_requestline(self) -> str:
        return self._requestline

    def MessageClass(self, *args: Any) -> Any:
        """pywsgi parses headers from the head we already read and bounded."""
        head = self._head
        raw = b"" if head is None else "".join(
            f"{name}: {value}\r\n" for name, value in head.headers).encode("latin-1")
        return headers_factory(BytesIO(raw + b"\r\n"))

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["wsgi.url_scheme"] = "https" if self.tls else "http"
        env["novncproxy.head"] = self._head
        env["novncproxy.peer"] = self.peer
        env["novncproxy.tls"] = self.tls
        return env

    # --- the upgrade: every check before the 101 --------------------------------------------

    def upgrade_websocket(self) -> Any:
        head = self._head
        if head is None or not _has_token(head.header("upgrade"), "websocket"):
            return None  # a plain request: the WSGI app answers it
        app: ConsoleApp = self.application
        verdict = app.admit(head, self.peer, self.tls, upgrade=True, peer_port=self.peer_port)
        if isinstance(verdict, Refused):
            log.info("session.refused", reason=verdict.error, detail=verdict.message,
                     status=verdict.status, client=self.peer, client_port=self.peer_port)
            status, headers, body = app.refusal_response(verdict)
            self.start_response(status, [*headers, ("Connection", "close")])
            return [body]
        prepared = app.prepare_session(verdict)
        # The rest of the connection is WebSocket frames, read from the socket: the
        # buffered reader hands over what it holds and is closed (its 8 KiB buffer freed;
        # the socket stays open for the session).
        early = take_buffered(self.rfile, self.socket)
        self.rfile.close()
        ws = WsStream(self.socket, app.max_message, tls=self.tls, early=early)
        self.websocket = ws
        self.environ.update({"wsgi.websocket": ws, "wsgi.websocket_version": "13",
                             "novncproxy.prepared": prepared})
        assert verdict.accept is not None
        self.start_response("101 Switching Protocols", list(verdict.accept.headers))
        return None

    def run_websocket(self) -> None:
        """After the 101: drop what only the HTTP request needed (the parsed head, pywsgi's
        headers, the full WSGI environ) before the session runs for hours."""
        env = self.environ
        self.environ = {"wsgi.websocket": env["wsgi.websocket"],
                        "novncproxy.prepared": env["novncproxy.prepared"]}
        self.headers = self._head = None
        self.wsgi_input = _NO_INPUT  # pywsgi calls wsgi_input._discard() after the session
        del env
        super().run_websocket()

    # --- logging: structlog events, never a request line --------------------------------------

    @property
    def logger(self) -> logging.Logger:
        return _wslog

    def log_request(self) -> None:
        pass  # no access log: request lines carry tokens; metrics count what matters

    def log_error(self, msg: str, *args: Any) -> None:
        log.warning("http.error", detail=msg.split("%", 1)[0][:100], client=self.peer)

    def _handle_client_error(self, ex: BaseException) -> Any:
        log.info("http.bad_request", error=type(ex).__name__, client=self.peer)
        return "400", _BAD_REQUEST_RESPONSE

    def handle_error(self, t: type[BaseException], v: BaseException, tb: Any) -> None:
        if not issubclass(t, gevent.GreenletExit):
            log.error("http.internal_error", error=f"{t.__name__}: {v}"[:300],
                      traceback="".join(traceback.format_exception(t, v, tb))[-4000:])
        self._send_error_response_if_possible(500)

    def abort_idle(self) -> None:
        """Drain: wake a handler waiting for the next request head, so it closes."""
        shutdown_reads(self.socket)
