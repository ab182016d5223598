"""The session recording format (sans-I/O): encoder, incremental decoder, playback stream.

A recording is one file per session::

    {"format": "console-recording", "version": 1, "session_id": ..., ...}\\n   header line
    frame, frame, ...                                                       binary frames

Each frame is ``kind`` (u8: 0 server->client bytes, 1 client->server bytes, 2 a note),
``offset`` (u64 microseconds since the session started, monotonic clock), ``size``
(u32) and ``size`` bytes. A note's bytes are one JSON object: why recording stopped early
(``{"note": "limit", ...}``) or how the session ended (``{"note": "end", ...}``).

The header is JSON so ``head -1`` shows what a file is; frames are binary so recording
costs one small struct per relayed chunk, never an encoding of the payload. A file cut
short (a crash, a full disk) decodes up to its last whole frame and says where it broke.

``playback_stream`` turns the server->client frames into what a viewer needs to replay
them: the recorded RFB handshake is replaced by a plain RFB 3.8 handshake with security
type None (the viewer must not be asked for the VNC server's password), followed by the
recorded ServerInit and everything after it, at the recorded times. A recording fed only
what a security proxy relayed after greeting the client itself starts at the ServerInit
(used as it is) or after it (one is built from the header).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from .rfb.events import BGRX32, SECURITY_NONE, SECURITY_VNC_AUTH, ServerInit
from .rfb.messages import MAX_NAME, encode_server_init

FORMAT = "console-recording"
VERSION = 1
SERVER, CLIENT, NOTE = 0, 1, 2
FRAME = struct.Struct(">BQI")  # kind, offset in microseconds, payload size
MAX_HEADER = 64 * 1024
MAX_FRAME = 16 * 1024 * 1024  # a relay hands over at most 256 KiB at a time
SUFFIX = ".rec"


class RecordingError(ValueError):
    """A file that is not a recording at all (bad or missing header)."""


def encode_header(fields: dict[str, Any]) -> bytes:
    header = {"format": FORMAT, "version": VERSION, **fields}
    line = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    if len(line) > MAX_HEADER:
        raise ValueError(f"header of {len(line)} bytes exceeds {MAX_HEADER}")
    return line


def frame_head(kind: int, offset: float, size: int) -> bytes:
    """The 13 bytes before a frame's payload (the payload is written as it is)."""
    return FRAME.pack(kind, max(0, int(offset * 1_000_000)), size)


def encode_frame(kind: int, offset: float, data: bytes) -> bytes:
    return frame_head(kind, offset, len(data)) + data


def encode_note(offset: float, fields: dict[str, Any]) -> bytes:
    return encode_frame(NOTE, offset, json.dumps(fields, separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    offset: float  # seconds since the session started
    data: bytes


class Decoder:
    """Feed it bytes as they are read; take back the header and whole frames.

    ``header`` is set once the first line is in; ``feed`` returns the frames completed by
    the bytes given; ``finish()`` says whether the file ended cleanly or where it broke
    (``damage``). After damage nothing more is decoded."""

    def __init__(self) -> None:
        self.header: dict[str, Any] | None = None
        self.damage: str | None = None
        self.consumed = 0  # bytes of the file decoded so far
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        if self.damage is not None:
            return []
        self._buf += data
        frames: list[Frame] = []
        if self.header is None and not self._read_header():
            return frames
        buf, pos, size = self._buf, 0, len(self._buf)
        while size - pos >= FRAME.size:
            kind, micros, n = FRAME.unpack_from(buf, pos)
            if kind > NOTE or n > MAX_FRAME:
                self.damage = f"bad frame at byte {self.consumed + pos}"
                break
            if size - pos - FRAME.size < n:
                break
            start = pos + FRAME.size
            frames.append(Frame(kind, micros / 1_000_000, bytes(buf[start:start + n])))
            pos = start + n
        del buf[:pos]
        self.consumed += pos
        return frames

    def finish(self) -> str | None:
        """End of the file: None when it ended on a frame boundary, else the damage."""
        if self.damage is None:
            if self.header is None:
                self.damage = "no header line"
            elif self._buf:
                self.damage = (f"truncated at byte {self.consumed + len(self._buf)}: "
                               f"{len(self._buf)} bytes of an incomplete frame")
        return self.damage

    def _read_header(self) -> bool:
        end = self._buf.find(b"\n", 0, MAX_HEADER)
        if end < 0:
            if len(self._buf) >= MAX_HEADER:
                raise RecordingError(f"no header line in the first {MAX_HEADER} bytes")
            return False
        self.header = parse_header(bytes(self._buf[:end]))
        del self._buf[:end + 1]
        self.consumed = end + 1
        return True


def parse_header(line: bytes) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise RecordingError("the first line is not a JSON header") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(f"not a {FORMAT} file")
    if header.get("version") != VERSION:
        raise RecordingError(f"recording format version {header.get('version')!r} "
                             f"is not {VERSION}")
    return header


@dataclass
class Recording:
    header: dict[str, Any]
    frames: list[Frame]
    damage: str | None
    notes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.frames[-1].offset if self.frames else 0.0


def decode(data: bytes) -> Recording:
    """A whole file's bytes (or what is left of them) decoded."""
    decoder = Decoder()
    frames = decoder.feed(data)
    damage = decoder.finish()
    if decoder.header is None:
        raise RecordingError("no header line (empty or not a recording)")
    notes = []
    for f in frames:
        if f.kind == NOTE:
            try:
                notes.append(json.loads(f.data))
            except ValueError:
                notes.append({"note": "unreadable"})
    return Recording(decoder.header, frames, damage, notes)


# --- playback -------------------------------------------------------------------------

PLAYBACK_FRAME = struct.Struct(">dI")  # offset in seconds, size: what the player page reads
_HANDSHAKE_38_NONE = b"RFB 003.008\n" + bytes([1, SECURITY_NONE]) + b"\0\0\0\0"


class PlaybackError(ValueError):
    """The recorded stream cannot be replayed (its handshake cannot be followed)."""


def split_handshake(stream: bytes, rfb_version: str | None,
                    security_type: str | None) -> tuple[bytes, int]:
    """(ServerInit message, offset of what follows it) in a recorded server stream.

    Only the server's side is recorded, so the negotiated version and security type come
    from the header (what the proxy's observer saw)."""
    if len(stream) < 12 or not stream.startswith(b"RFB "):
        raise PlaybackError("the recording does not start with an RFB version")
    version = rfb_version or "3.8"
    security = {"None": SECURITY_NONE, "VncAuth": SECURITY_VNC_AUTH}.get(security_type or "None")
    if security is None:
        raise PlaybackError(f"cannot replay a handshake with security type {security_type}")
    pos = 12
    if version == "3.3":
        pos += 4
    else:
        if len(stream) <= pos or stream[pos] == 0:
            raise PlaybackError("the VNC server refused the session")
        pos += 1 + stream[pos]
    if security == SECURITY_VNC_AUTH:
        pos += 16
    if security == SECURITY_VNC_AUTH or version == "3.8":
        if stream[pos:pos + 4] != b"\0\0\0\0":
            raise PlaybackError("the VNC server refused the authentication")
        pos += 4
    if len(stream) < pos + 24:
        raise PlaybackError("the recording ends before the desktop was described")
    name_size = int.from_bytes(stream[pos + 20:pos + 24], "big")
    if name_size > MAX_NAME or len(stream) < pos + 24 + name_size:
        raise PlaybackError("the recording ends before the desktop was described")
    end = pos + 24 + name_size
    return stream[pos:end], end


def playback_stream(recording: Recording) -> tuple[bytes, float]:
    """The server frames as the player page reads them (``PLAYBACK_FRAME`` + bytes each),
    the handshake replaced by RFB 3.8 / None; and the duration. Raises PlaybackError."""
    server = [f for f in recording.frames if f.kind == SERVER]
    if not server:
        raise PlaybackError("the recording holds nothing the console sent")
    # The handshake is a few hundred bytes at most: join only the frames it can span.
    head = bytearray()
    for count, f in enumerate(server, 1):
        head += f.data
        if len(head) >= 64 * 1024 + MAX_NAME or count == len(server):
            break
    header = recording.header
    width, height = header.get("width"), header.get("height")
    if head.startswith(b"RFB ") or not (width and height):
        server_init, end = split_handshake(bytes(head), header.get("rfb_version"),
                                           header.get("security_type"))
    elif (len(head) >= 24 and head[:4] == struct.pack(">HH", width, height)
          and (n := int.from_bytes(head[20:24], "big")) <= MAX_NAME and len(head) >= 24 + n):
        # recorded from the ServerInit on (a security proxy that greeted the client
        # itself and relayed the rest)
        server_init, end = bytes(head[:24 + n]), 24 + n
    else:
        # recorded from after the ServerInit: the header describes the desktop (the viewer
        # sets its own pixel format anyway)
        server_init, end = encode_server_init(ServerInit(
            int(width), int(height), BGRX32, str(header.get("desktop_name") or ""))), 0
    out = [_playback_frame(0.0, _HANDSHAKE_38_NONE + server_init)]
    pos = 0  # where each frame starts in the server stream
    for f in server:
        if pos + len(f.data) > end:
            out.append(_playback_frame(f.offset, f.data[max(0, end - pos):]))
        pos += len(f.data)
    return b"".join(out), recording.duration


def _playback_frame(offset: float, data: bytes) -> bytes:
    return PLAYBACK_FRAME.pack(offset, len(data)) + data
