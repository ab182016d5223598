"""Bounded HTTP/1.x heads, sans-I/O: request heads, the xvp preamble, CONNECT answers.

    reader = HeadReader(max_size=8192)
    while (event := reader.next_event()) is NEED_DATA:
        reader.receive_data(sock.recv(4096))  # b"" = EOF
    event.method, event.target, event.header("host"), reader.trailing_data

``HeadReader`` reads a request head (novncproxy's requests, the xvp client's
``CONNECT /console?token=T HTTP/1.0`` preamble); ``StatusReader`` reads a response head
(the ``200`` a target sends to our ``CONNECT internal_access_path``). Both stop at the
blank line, keep what follows in ``trailing_data`` (RFB bytes, already sent by an eager
client), and refuse a head over ``max_size`` bytes. They raise ``HeadError`` whose
``status`` is the HTTP answer to give (400, 431; 502 for a target's bad response).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "NEED_DATA",
    "HeadError",
    "HeadReader",
    "Need",
    "Request",
    "Response",
    "StatusReader",
    "parse_status_line",
    "query_param",
    "render_head",
    "target_path",
    "target_query",
]


class Need(enum.Enum):
    DATA = "need data"


NEED_DATA: Final = Need.DATA

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[0-9])")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[0-9]) ([1-9][0-9]{2})(?: ([\t\x20-\x7e]*))?")
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\t\x20-\x7e]*?)[ \t]*")
_START_LINE_BYTES = re.compile(rb"[\x20-\x7e\r]*")
_TLS_HANDSHAKE: Final = 0x16


class HeadError(ValueError):
    """A head we refuse; ``status`` is the HTTP status to answer with (if anyone)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type[HeadError], tuple[int, str]]:
        return type(self), (self.status, self.reason)


@dataclass(frozen=True, slots=True)
class Request:
    """A request head. Header names are lower-cased; values keep their bytes (ASCII)."""

    method: str
    target: str
    version: str  # "1.0", "1.1"
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case); several are joined with ", "."""
        return _header(self.headers, name)


@dataclass(frozen=True, slots=True)
class Response:
    """A response head. Header names are lower-cased."""

    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    values = [v for n, v in headers if n == name.lower()]
    return ", ".join(values) if values else None


class _HeadBuffer:
    """Buffers bytes up to a blank line, remembering how far it already searched."""

    _error_status = 400
    _what = "request"

    def __init__(self, max_size: int = 8192) -> None:
        self._max = max_size
        self._buf = bytearray()
        self._searched = 0  # no line end at or before this index (minus 2)
        self._skipped = 0  # blank lines before the start line (RFC 9112 2.2), counted in size
        self._line_checked = 0  # start-line bytes already checked; -1 once it is complete
        self._eof = False
        self._done = False
        self._error: HeadError | None = None

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes; ``b""`` is EOF. Bytes after the head end up in ``trailing_data``."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() after EOF")
        self._buf += data

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the head (only meaningful once the head was returned)."""
        return bytes(self._buf) if self._done else b""

    @property
    def eof(self) -> bool:
        return self._eof

    def _next_head(self) -> list[bytes] | Literal[Need.DATA]:
        if self._error is not None:
            raise HeadError(self._error.status, self._error.reason)
        if self._done:
            raise RuntimeError(f"the {self._what} head was already returned")
        try:
            return self._find_head()
        except HeadError as exc:
            self._error = exc
            raise

    def _find_head(self) -> list[bytes] | Literal[Need.DATA]:
        buf = self._buf
        if not self._searched:
            start = len(buf) - len(buf.lstrip(b"\r\n"))
            if start:
                self._skipped += start
                del buf[:start]
            if buf:
                self._check_first_byte(buf[0])
        if self._line_checked >= 0:  # refuse binary garbage now, not after max_size bytes
            newline = buf.find(b"\n", self._line_checked)
            stop = len(buf) if newline < 0 else newline
            if _START_LINE_BYTES.fullmatch(buf, self._line_checked, stop) is None:
                raise HeadError(
                    self._error_status, f"not an HTTP {self._what} (bytes outside ASCII)"
                )
            self._line_checked = stop if newline < 0 else -1
        if buf:
            begin = max(self._searched - 2, 0)
            ends = [i for i in (buf.find(b"\n\n", begin), buf.find(b"\n\r\n", begin)) if i >= 0]
            if ends:
                end = min(ends)
                size = end + (2 if buf[end + 1] == 0x0A else 3)
                if self._skipped + size > self._max:
                    raise self._too_large()
                lines = bytes(buf[:end]).split(b"\n")
                del buf[:size]
                self._done = True
                return [line.removesuffix(b"\r") for line in lines]
            self._searched = len(buf)
        if self._skipped + len(buf) > self._max:
            raise self._too_large()
        if self._eof:
            status = self._error_status  # 400 for a request, 502 for a target's response
            if buf or self._skipped:
                raise HeadError(status, f"connection closed before the end of the {self._what} head")
            raise HeadError(status, f"connection closed before any {self._what}")
        return NEED_DATA

    def _check_first_byte(self, byte: int) -> None:
        pass

    def _too_large(self) -> HeadError:
        status = 431 if self._error_status == 400 else self._error_status
        return HeadError(status, f"{self._what} head too large (over {self._max} bytes)")


def _parse_headers(lines: list[bytes], status: int) -> tuple[tuple[str, str], ...]:
    headers = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HeadError(status, "obsolete header line folding")
        if (match := _HEADER.fullmatch(line)) is None:
            raise HeadError(status, "malformed header line")
        headers.append((match[1].decode("ascii").lower(), match[2].decode("ascii")))
    return tuple(headers)


class HeadReader(_HeadBuffer):
    """Reads one HTTP/1.x request head of at most ``max_size`` bytes.

    ``next_event()`` returns ``Request`` or ``NEED_DATA``, or raises ``HeadError``
    (and keeps raising it). A TLS ClientHello on a plain port is refused at its first byte.
    """

    def next_event(self) -> Request | Literal[Need.DATA]:
        lines = self._next_head()
        if lines is NEED_DATA:
            return NEED_DATA
        try:
            match = _REQUEST_LINE.fullmatch(lines[0])
            if match is None:
                raise HeadError(400, "malformed request line")
            return Request(
                method=match[1].decode("ascii"),
                target=match[2].decode("ascii"),
                version=match[3].decode("ascii"),
                headers=_parse_headers(lines[1:], 400),
            )
        except HeadError as exc:
            self._error = exc
            raise

    def _check_first_byte(self, byte: int) -> None:
        if byte == _TLS_HANDSHAKE:
            raise HeadError(400, "TLS handshake on a plain-text port (use http://, or enable TLS)")


class StatusReader(_HeadBuffer):
    """Reads one HTTP/1.x response head (a target's answer to CONNECT); errors are 502."""

    _error_status = 502
    _what = "response"

    def next_event(self) -> Response | Literal[Need.DATA]:
        lines = self._next_head()
        if lines is NEED_DATA:
            return NEED_DATA
        try:
            version, status, reason = parse_status_line(lines[0])
            return Response(version, status, reason, _parse_headers(lines[1:], 502))
        except HeadError as exc:
            self._error = exc
            raise


def parse_status_line(line: bytes) -> tuple[str, int, str]:
    """``b"HTTP/1.1 200 OK"`` -> ``("1.1", 200, "OK")``; a trailing CRLF is allowed."""
    match = _STATUS_LINE.fullmatch(line.removesuffix(b"\n").removesuffix(b"\r"))
    if match is None:
        raise HeadError(502, "malformed status line")
    return match[1].decode("ascii"), int(match[2]), (match[3] or b"").decode("ascii")


def render_head(status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """An ``HTTP/1.1`` response head, e.g. ``render_head(401, "Not Authorized")``."""
    lines = [f"HTTP/1.1 {status:03d} {reason}", *(f"{n}: {v}" for n, v in headers)]
    if not 100 <= status <= 999 or any("\r" in x or "\n" in x for x in lines):
        raise ValueError("invalid status, or CR/LF inside a header")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def target_path(target: str) -> str:
    """The path of a request target (``/console?token=T`` -> ``/console``)."""
    try:
        return urlsplit(target).path
    except ValueError:  # an authority urlsplit refuses (``//[x/...``): the raw path part
        return target.split("#", 1)[0].split("?", 1)[0]


def target_query(target: str) -> str:
    """The query of a request target, split as urlsplit splits it (fragment first, then
    the first ``?``) but without parsing the authority: ``//[x/?token=T`` raises nothing
    (urlsplit raises ValueError on it, which a handler would not expect)."""
    return target.split("#", 1)[0].partition("?")[2]


def query_param(target: str, name: str) -> str | None:
    """The first value of query parameter ``name`` in a request target, percent-decoded;
    ``None`` when absent, ``""`` when present but empty."""
    values = parse_qs(target_query(target), keep_blank_values=True).get(name)
    return values[0] if values else None
