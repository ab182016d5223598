"""A passive observer of a relayed RFB stream: learns version, security, desktop name, size.

It follows the handshake on both directions until ServerInit, then stops parsing: every
later call is an O(1) no-op, so a proxy can feed it every chunk it relays. It never raises
into the caller: on garbage or a security type it cannot follow it sets ``failed`` and
``reason`` and stops. It buffers at most ``max_buffer`` bytes per direction.
"""

from __future__ import annotations

from collections.abc import Generator

from .errors import RFBProtocolError
from .events import SECURITY_NONE, SECURITY_VNC_AUTH, security_type_name
from .messages import (
    VERSION_SIZE,
    ReceiveBuffer,
    check_version_prefix,
    decode_server_init,
    negotiate_version,
    parse_version,
    reason_at,
    server_init_size,
)

_SERVER, _CLIENT = 0, 1
# What the parser waits for: (direction, size function of the buffer -> int | None).
_Want = tuple[int, object]


class RFBObserver:
    """Feed it ``client_data(chunk)`` / ``server_data(chunk)`` as the relay copies bytes."""

    def __init__(self, max_buffer: int = 64 * 1024) -> None:
        self.version: str | None = None  # negotiated, e.g. "3.8"
        self.security_type: str | None = None  # e.g. "None", "VncAuth"
        self.auth_ok: bool | None = None
        self.desktop_name: str | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.done = False  # ServerInit seen, nothing more to learn
        self.failed = False
        self.reason = ""
        self._max = max_buffer
        self._bufs = (ReceiveBuffer(), ReceiveBuffer())
        self._end: tuple[bool, str] = (False, "")  # (failed, reason) when the parser returns
        self._parser = self._parse()
        self._want: _Want | None = next(self._parser)

    @property
    def active(self) -> bool:
        return self._want is not None

    def client_data(self, data: bytes) -> None:
        if self._want is not None:
            self._feed(_CLIENT, data)

    def server_data(self, data: bytes) -> None:
        if self._want is not None:
            self._feed(_SERVER, data)

    def info(self) -> dict[str, object]:
        """What is known so far, for a session log line."""
        return {
            "rfb_version": self.version,
            "security_type": self.security_type,
            "desktop_name": self.desktop_name,
            "width": self.width,
            "height": self.height,
        }

    def _feed(self, side: int, data: bytes) -> None:
        buf = self._bufs[side]
        buf.data += data
        try:
            while self._want is not None:
                want_side, size_of = self._want
                wbuf = self._bufs[want_side]
                size = size_of(wbuf)  # type: ignore[operator]
                if size is None or len(wbuf) < size:
                    break
                self._want = self._parser.send(wbuf.take(size))
        except StopIteration:
            self._stop(*self._end)
            return
        except (RFBProtocolError, ValueError, IndexError) as exc:
            self._stop(failed=True, reason=str(exc) or type(exc).__name__)
            return
        if self._want is not None and max(len(b) for b in self._bufs) > self._max:
            self._stop(failed=True, reason=f"more than {self._max} bytes without progress")

    def _stop(self, failed: bool, reason: str = "") -> None:
        self.failed, self.reason = failed, reason
        self._want = None
        self._parser.close()
        self._bufs = (ReceiveBuffer(), ReceiveBuffer())

    def _parse(self) -> Generator[_Want | None, bytes, None]:
        def fixed(n: int):
            return lambda buf: n

        def version_line(buf: ReceiveBuffer) -> int:
            check_version_prefix(buf.data)
            return VERSION_SIZE

        parse_version((yield (_SERVER, version_line)))
        client_version = parse_version((yield (_CLIENT, version_line)))
        version = negotiate_version(client_version, (3, 8))
        self.version = f"{version[0]}.{version[1]}"
        if version == (3, 3):
            kind = int.from_bytes((yield (_SERVER, fixed(4))), "big")
            if kind == 0:
                yield from self._refused((_SERVER, lambda b: _reason_size(b, 0)))
                return
        else:
            offered = yield (_SERVER, lambda b: 1 + b.u8(0) if len(b) else None)
            if offered == b"\0":
                yield from self._refused((_SERVER, lambda b: _reason_size(b, 0)))
                return
            kind = (yield (_CLIENT, fixed(1)))[0]
        self.security_type = security_type_name(kind)
        if kind not in (SECURITY_NONE, SECURITY_VNC_AUTH):
            self._end = (False, f"cannot follow security type {self.security_type}")
            return
        if kind == SECURITY_VNC_AUTH:
            yield (_SERVER, fixed(16))  # challenge
            yield (_CLIENT, fixed(16))  # response
        if kind == SECURITY_VNC_AUTH or version == (3, 8):
            status = int.from_bytes((yield (_SERVER, fixed(4))), "big")
            if status != 0:
                self.auth_ok = False
                self._end = (False, "authentication failed")
                return
        self.auth_ok = True
        yield (_CLIENT, fixed(1))  # ClientInit
        init = decode_server_init((yield (_SERVER, server_init_size)))
        self.width, self.height, self.desktop_name = init.width, init.height, init.name
        self.done = True

    def _refused(self, want: _Want) -> Generator[_Want | None, bytes, None]:
        raw = yield want
        self.auth_ok = False
        self._end = (False, raw[4:].decode("utf-8", "replace") or "refused")


def _reason_size(buf: ReceiveBuffer, offset: int) -> int | None:
    got = reason_at(buf, offset)
    return None if got is None else got[1]
