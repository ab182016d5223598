"""The built-in VNC server of a fake instance: the sans-I/O RFB core on gevent sockets.

    console = BuiltinConsole(spec, listen="127.0.0.1", port=5900)
    console.start()        # StreamServer with a bounded Pool of client sessions
    console.stop("instance deleted")   # stop listening, close every open connection

One ``Screen`` per instance renders the test pattern ``FPS`` times a second while someone
watches and keeps the damage of recent frames. Each client has a reader (the calling
greenlet: client messages, input goes to the pattern) and a writer (the only one sending
after the handshake): a FramebufferUpdateRequest is held until something in its region
changed (incremental) and answered at most ``MAX_UPDATES_PER_S`` times a second, with
Raw rectangles in the client's pixel format. A client that breaks the protocol is closed
with a logged reason; the server keeps serving. Nothing is logged per frame.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Iterable

import gevent
import gevent.event
import gevent.pool
import structlog
from console_common.proto.rfb import (
    ENCODING_RAW,
    NEED_DATA,
    AuthResult,
    ClientInit,
    ConnectionClosed,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    KeyEvent,
    PointerEvent,
    Rectangle,
    RFBProtocolError,
    RFBServerConnection,
    rgb_to_pixels,
)
from gevent.server import StreamServer

from fakecompute.instances import InstanceSpec
from fakecompute.pattern import Rect, TestPattern, region_of

FPS = 15
MAX_UPDATES_PER_S = 20
HISTORY = 64  # frames of damage kept; a client further behind gets the whole region
HANDSHAKE_TIMEOUT = 10.0
MAX_CLIENTS = 64  # per instance; a full pool stops accepting (the backlog holds the rest)
RECV_SIZE = 64 * 1024

log = structlog.get_logger("fakecompute.vnc")


class Screen:
    """An instance's test pattern, rendered while watched, with per-frame damage."""

    def __init__(self, name: str, fps: float = FPS) -> None:
        self.pattern = TestPattern(name)
        self.width, self.height = self.pattern.width, self.pattern.height
        self._interval = 1.0 / fps
        self._t0 = time.monotonic()
        self.frame, _ = self.pattern.render(0.0)
        self.version = 1
        self._damage: deque[tuple[int, list[Rect]]] = deque(maxlen=HISTORY)
        self._watchers: set[gevent.event.Event] = set()
        self._ticker: gevent.Greenlet | None = None

    def watch(self, wake: gevent.event.Event) -> None:
        self._watchers.add(wake)
        if self._ticker is None or self._ticker.dead:
            self._ticker = gevent.spawn(self._tick_loop)

    def unwatch(self, wake: gevent.event.Event) -> None:
        self._watchers.discard(wake)

    def stop(self) -> None:
        self._watchers.clear()
        if self._ticker is not None:
            self._ticker.kill(block=False)

    def _tick_loop(self) -> None:
        next_at = time.monotonic()
        while self._watchers:
            next_at += self._interval
            delay = next_at - time.monotonic()
            if delay < -self._interval:  # fell behind (hub busy): skip, never catch up in a burst
                next_at, delay = time.monotonic(), 0
            gevent.sleep(max(0.0, delay))
            self.frame, rects = self.pattern.render(time.monotonic() - self._t0)
            self.version += 1
            self._damage.append((self.version, rects))
            for wake in list(self._watchers):
                wake.set()

    def damage_since(self, version: int) -> list[Rect] | None:
        """Rectangles changed after ``version``; None when history no longer reaches back."""
        if version >= self.version:
            return []
        if not self._damage or self._damage[0][0] > version + 1:
            return None
        return [r for v, rects in self._damage if v > version for r in rects]


def clip(rect: Rect, to: Rect) -> Rect | None:
    x, y, w, h = rect
    cx, cy, cw, ch = to
    x0, y0, x1, y1 = max(x, cx), max(y, cy), min(x + w, cx + cw), min(y + h, cy + ch)
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def coalesce(rects: Iterable[Rect]) -> list[Rect]:
    """Drop duplicates and merge rectangles whose bounding box costs no more than both."""
    out: list[Rect] = []
    for rect in dict.fromkeys(rects):
        merged = True
        while merged:
            merged = False
            for i, other in enumerate(out):
                x0, y0 = min(rect[0], other[0]), min(rect[1], other[1])
                x1 = max(rect[0] + rect[2], other[0] + other[2])
                y1 = max(rect[1] + rect[3], other[1] + other[3])
                if (x1 - x0) * (y1 - y0) <= rect[2] * rect[3] + other[2] * other[3]:
                    rect = (x0, y0, x1 - x0, y1 - y0)
                    del out[i]
                    merged = True
                    break
        out.append(rect)
    return out


class _Closed(Exception):
    """The session ends; str() is the logged reason."""


def _describe(exc: BaseException) -> tuple[str, str]:
    """(reason, log level) of how a session ended."""
    if isinstance(exc, _Closed):
        reason = str(exc)
        quiet = reason in ("client closed", "client closed during the handshake")  # port probes
        return reason, "info" if quiet else "warning"
    if isinstance(exc, RFBProtocolError):
        return f"protocol error: {exc}", "warning"
    if isinstance(exc, OSError):
        return f"connection error: {exc.strerror or exc}", "info"
    return f"internal error: {type(exc).__name__}: {exc}", "error"


class ClientSession:
    """One VNC client of one instance."""

    def __init__(self, console: BuiltinConsole, sock: socket.socket, client: str) -> None:
        self.console, self.sock, self.client = console, sock, client
        self.screen = console.screen
        password = console.spec.password
        self.conn = RFBServerConnection(
            console.spec.name, self.screen.width, self.screen.height,
            password=password.encode("utf-8") if password is not None else None,
            challenge=os.urandom(16) if password is not None else None)
        self.wake = gevent.event.Event()
        self.request: FramebufferUpdateRequest | None = None
        self.full = False  # the pending request is non-incremental
        self.sent_version = 0
        self.updates = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.failure: Exception | None = None

    # --- lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        started = time.monotonic()
        log.info("vnc.client_connected", instance=self.console.spec.name,
                 instance_uuid=self.console.spec.uuid, client=self.client, port=self.console.port)
        reason, level, writer = "client closed", "info", None
        try:
            with gevent.Timeout(HANDSHAKE_TIMEOUT, _Closed("handshake timed out")):
                self._handshake()
            writer = gevent.spawn(self._writer_main)
            self._read_loop()
        except (_Closed, RFBProtocolError, OSError) as exc:
            reason, level = _describe(self.failure or exc)  # the writer may have failed first
        except gevent.GreenletExit:
            reason = self.console.closing_reason or "closed by server"
        finally:
            if writer is not None:
                writer.kill(block=False)
            self.screen.unwatch(self.wake)
            self.sock.close()
            getattr(log, level)(
                "vnc.client_disconnected", instance=self.console.spec.name,
                instance_uuid=self.console.spec.uuid, client=self.client, reason=reason,
                duration_s=round(time.monotonic() - started, 3), updates=self.updates,
                bytes_sent=self.bytes_sent, bytes_received=self.bytes_received)

    def _recv(self) -> bytes:
        data = self.sock.recv(RECV_SIZE)
        self.bytes_received += len(data)
        self.conn.receive_data(data)
        return data

    def _flush_handshake(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)
            self.bytes_sent += len(out)

    def _handshake(self) -> None:
        self._flush_handshake()  # our ProtocolVersion
        while True:
            self._recv()
            while (event := self.conn.next_event()) is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    raise _Closed("client closed during the handshake")
                if isinstance(event, AuthResult) and not event.ok:
                    self._flush_handshake()
                    raise _Closed("authentication failed")
                if isinstance(event, ClientInit):
                    self._flush_handshake()
                    self.screen.watch(self.wake)
                    return
            self._flush_handshake()

    def _read_loop(self) -> None:
        pattern = self.screen.pattern
        while True:
            while (event := self.conn.next_event()) is not NEED_DATA:
                if isinstance(event, FramebufferUpdateRequest):
                    self.request = event
                    self.full = self.full or not event.incremental
                    self.wake.set()
                elif isinstance(event, KeyEvent):
                    pattern.key(event.keysym, event.down)
                elif isinstance(event, PointerEvent):
                    pattern.pointer(event.x, event.y, event.buttons)
                elif isinstance(event, ConnectionClosed):
                    raise _Closed("client closed")
                # SetPixelFormat/SetEncodings are kept by the connection; cut text ignored.
            if not self._recv():
                continue  # EOF fed: next_event reports ConnectionClosed or an error

    # --- updates ------------------------------------------------------------------------
    def _writer_main(self) -> None:
        try:
            self._write_loop()
        except Exception as exc:  # noqa: BLE001 - handed to the reader, which logs it once
            self.failure = exc
            self.sock.close()  # wakes the reader's recv with an error

    def _write_loop(self) -> None:
        min_gap = 1.0 / MAX_UPDATES_PER_S
        last = 0.0
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.request is None:
                continue
            gap = last + min_gap - time.monotonic()
            if gap > 0:
                gevent.sleep(gap)  # requests and damage keep collecting meanwhile
            request, full = self.request, self.full
            if request is None:
                continue
            area = clip((request.x, request.y, request.width, request.height),
                        (0, 0, self.screen.width, self.screen.height))
            frame, version = self.screen.frame, self.screen.version
            if full or area is None:
                rects = [area] if area is not None else []
            elif version == self.sent_version:
                continue  # nothing new: hold the request until the next frame
            else:
                damage = self.screen.damage_since(self.sent_version)
                damage = [area] if damage is None else damage
                rects = coalesce(c for r in damage if (c := clip(r, area)) is not None)
                if not rects:
                    self.sent_version = version  # changes outside the asked region only
                    continue
            self.request, self.full = None, False
            self._send_update(frame, rects)
            self.sent_version, last = version, time.monotonic()

    def _send_update(self, frame: bytes, rects: list[Rect]) -> None:
        pf, width = self.conn.pixel_format, self.screen.width
        update = FramebufferUpdate(tuple(
            Rectangle(*r, ENCODING_RAW, rgb_to_pixels(region_of(frame, width, r), pf))
            for r in rects))
        data = self.conn.send(update)
        self.sock.sendall(data)
        self.updates += 1
        self.bytes_sent += len(data)


class BuiltinConsole:
    """A built-in instance's VNC server on ``listen:port``."""

    def __init__(self, spec: InstanceSpec, listen: str, port: int,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.spec, self.listen, self.port = spec, listen, port
        self.screen = Screen(spec.name)
        self.pool = gevent.pool.Pool(max_clients)
        self.server: StreamServer | None = None
        self.closing_reason: str | None = None

    def start(self) -> None:
        server = StreamServer((self.listen, self.port), self._handle, spawn=self.pool)
        server.start()  # raises OSError when the address is taken
        self.server = server

    def _handle(self, sock: socket.socket, address: tuple) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP: nothing to tune
        ClientSession(self, sock, f"{address[0]}:{address[1]}").run()

    @property
    def clients(self) -> int:
        return len(self.pool)

    def stop(self, reason: str) -> None:
        """Stop listening and close every open connection (logged with ``reason``)."""
        self.closing_reason = reason
        if self.server is not None:
            self.server.close()
        self.pool.kill(block=True, timeout=2)
        self.screen.stop()
