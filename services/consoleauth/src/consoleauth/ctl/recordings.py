"""recordings list [--instance I] [--since WHEN] | recordings play ID|FILE [--listen ADDR]

The session recordings the proxies wrote to ``record_dir`` (read like every option:
``--record-dir``, ``CONSOLE_RECORD_DIR``, config files). ``list`` reads each file's header
and walks its frames (no payload is read) for the duration and whether it is complete.
``play`` serves a playback page on a local port (default 127.0.0.1 and any free port),
prints its URL and serves until interrupted: the page replays what the console sent with
the real noVNC client library (play/pause, speed, a timeline to seek, the metadata).

WHEN for --since: an ISO date or date-time (UTC unless it says), or an age: 30m, 2h, 1d.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from console_common.proto.recording import (FRAME, MAX_FRAME, MAX_HEADER, NOTE, SUFFIX,
                                            PlaybackError, RecordingError, decode,
                                            parse_header, playback_stream)
from console_common.runtime.config import Config, add_option_arguments, select
from console_common.runtime.novnc import file_under, find_novnc_dir
from console_common.runtime.service import EXIT_OK, EXIT_REFUSED, EXIT_USAGE

from consoleauth.ctl.common import OPTIONS as COMMON_OPTIONS
from consoleauth.ctl.common import PROG, CtlError, emit, table

NAME = "recordings"
HELP = "List recorded console sessions, or play one back in the browser."
OPTIONS = ("record_dir", "web")
PLAYER_DIR = Path(__file__).resolve().parent / "player"
MAX_PLAY_BYTES = 2 * 1024 * 1024 * 1024  # read whole into memory: refuse what cannot fit
_AGE = re.compile(r"\A(\d+(?:\.\d+)?)\s*([smhd])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    lister = actions.add_parser("list", help="List the recordings in record_dir.")
    lister.add_argument("--instance", dest="instance_uuid", metavar="INSTANCE_UUID",
                        help="Only this instance's recordings.")
    lister.add_argument("--since", metavar="WHEN", type=_since,
                        help="Only recordings started since WHEN (ISO date-time, or 30m, 2h, 1d).")
    player = actions.add_parser("play", help="Serve a playback page and print its URL.")
    player.add_argument("recording", metavar="ID|FILE",
                        help="A session id (as `list` shows) or a recording file.")
    player.add_argument("--listen", default="127.0.0.1:0", type=_address, metavar="HOST:PORT",
                        help="Where the playback page is served [default: 127.0.0.1:0, any "
                             "free port].")
    for sub in (lister, player):  # the options also after the action's name
        add_option_arguments(sub, select(list(dict.fromkeys([*COMMON_OPTIONS, *OPTIONS]))))
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="Print the result as JSON.")


def run(config: Config, args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list(config, args)
    return _play(config, args)


# --- list -------------------------------------------------------------------------------

def _since(value: str) -> float:
    text = value.strip()
    if m := _AGE.match(text):
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO date-time or an age like 30m, 2h, 1d") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _record_dir(config: Config) -> Path:
    if not config.record_dir:
        raise CtlError("record_dir is not set (--record-dir DIR, CONSOLE_RECORD_DIR or "
                       "record_dir in a config file)", EXIT_USAGE)
    directory = Path(config.record_dir)
    if not directory.is_dir():
        raise CtlError(f"record_dir {directory} is not a folder", EXIT_USAGE)
    return directory


def summary(path: Path) -> dict[str, Any] | None:
    """What `list` shows of one file (None: not a recording). Frames are skipped over,
    never read: a long recording costs a seek per frame, not its size."""
    try:
        with path.open("rb") as f:
            header = parse_header(f.readline(MAX_HEADER).rstrip(b"\n"))
            size = os.fstat(f.fileno()).st_size
            last, end, damage = 0.0, None, None
            while True:
                at = f.tell()
                head = f.read(FRAME.size)
                if not head:
                    break
                if len(head) < FRAME.size:
                    damage = f"truncated at byte {size}"
                    break
                kind, micros, n = FRAME.unpack(head)
                if kind > NOTE or n > MAX_FRAME:
                    damage = f"bad frame at byte {at}"
                    break
                if at + FRAME.size + n > size:
                    damage = f"truncated at byte {size}"
                    break
                last = micros / 1_000_000
                if kind == NOTE and n < 4096:
                    note = _note(f.read(n))
                    if note.get("note") == "end":
                        end = note
                    elif note.get("note"):
                        header["stopped"] = note["note"]
                else:
                    f.seek(n, os.SEEK_CUR)
    except (OSError, RecordingError, ValueError):
        return None
    status = ("damaged: " + damage) if damage else ("complete" if end else "no end (open?)")
    return {"id": header.get("session_id"), "file": str(path),
            "session_id": header.get("session_id"), "kind": header.get("kind"),
            "instance_uuid": header.get("instance_uuid"), "client": header.get("client"),
            "started": header.get("started"), "duration_s": round(last, 3), "bytes": size,
            "desktop_name": header.get("desktop_name"), "width": header.get("width"),
            "height": header.get("height"), "rfb_version": header.get("rfb_version"),
            "record_input": header.get("record_input"), "status": status,
            "stopped": header.get("stopped"),
            "close_reason": end.get("close_reason") if end else None}


def _note(raw: bytes) -> dict[str, Any]:
    try:
        note = json.loads(raw)
    except ValueError:
        return {}
    return note if isinstance(note, dict) else {}


def _recordings(directory: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if path.is_file() and (row := summary(path)) is not None:
            yield row


def _list(config: Config, args: argparse.Namespace) -> int:
    rows = [r for r in _recordings(_record_dir(config))
            if (args.instance_uuid is None or r["instance_uuid"] == args.instance_uuid)
            and (args.since is None or (r["started"] or 0) >= args.since)]
    rows.sort(key=lambda r: (r["started"] or 0, r["session_id"] or ""))
    human = table(("Id", "Started", "Duration", "Instance", "Client", "Kind", "Bytes", "Status"),
                  [(r["id"], _iso(r["started"]), f"{r['duration_s']:.1f}s", r["instance_uuid"],
                    r["client"], r["kind"], r["bytes"], r["status"]) for r in rows])
    emit(args, human if rows else "No recordings.", rows)
    return EXIT_OK


def _iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else "-"


# --- play -------------------------------------------------------------------------------

def find_recording(config: Config, wanted: str) -> Path:
    candidate = Path(wanted)
    if candidate.is_file():
        return candidate
    if os.sep in wanted or wanted.endswith(SUFFIX):
        raise CtlError(f"no recording file {wanted}", EXIT_REFUSED)
    directory = _record_dir(config)
    matches = sorted(directory.glob(f"*-{_glob_safe(wanted)}{SUFFIX}"))
    if not matches:
        raise CtlError(f"no recording {wanted!r} in {directory}", EXIT_REFUSED)
    return matches[-1]


def _glob_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "?", text)


def find_novnc(web: str) -> Path:
    if (found := find_novnc_dir(web)) is None:
        raise CtlError("the noVNC client library is not installed: run scripts/install-novnc.sh "
                       "or pass --web DIR", EXIT_USAGE)
    return found


def load_playback(path: Path) -> tuple[dict[str, Any], bytes]:
    """(metadata for the page, the playback stream), or a CtlError saying why not."""
    try:
        if path.stat().st_size > MAX_PLAY_BYTES:
            raise CtlError(f"{path} is larger than {MAX_PLAY_BYTES} bytes", EXIT_REFUSED)
        recording = decode(path.read_bytes())
        stream, duration = playback_stream(recording)
    except OSError as exc:
        raise CtlError(f"cannot read {path}: {exc.strerror}", EXIT_REFUSED) from exc
    except (RecordingError, PlaybackError) as exc:
        raise CtlError(f"cannot play {path}: {exc}", EXIT_REFUSED) from exc
    stopped = [n for n in recording.notes if n.get("note") not in ("end", None)]
    end = next((n for n in recording.notes if n.get("note") == "end"), None)
    meta = {"file": path.name, "header": recording.header, "duration": duration,
            "damage": recording.damage, "stopped": stopped[0] if stopped else None,
            "end": end}
    return meta, stream


def _play(config: Config, args: argparse.Namespace) -> int:
    path = find_recording(config, args.recording)
    meta, stream = load_playback(path)
    novnc = find_novnc(config.web)
    files = {"/": (PLAYER_DIR / "player.html", "text/html; charset=utf-8"),
             "/player.js": (PLAYER_DIR / "player.js", "text/javascript; charset=utf-8"),
             "/player.css": (PLAYER_DIR / "player.css", "text/css; charset=utf-8")}
    payloads = {"/recording.json": (json.dumps(meta).encode(), "application/json"),
                "/recording.bin": (stream, "application/octet-stream")}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
            target = self.path.split("?", 1)[0]
            if target in payloads:
                return self._send(*payloads[target])
            if target in files:
                path, kind = files[target]
                return self._send(path.read_bytes(), kind)
            if target.startswith("/novnc/") and (found := file_under(novnc, target[7:])):
                kind = "text/javascript" if found.suffix == ".js" else "application/octet-stream"
                return self._send(found.read_bytes(), kind)
            self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)

        def _send(self, body: bytes, kind: str, status: int = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass  # a local page for one viewer: nothing worth a line per request

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a viewer that went away mid-response (its tab closed): nothing to report

    try:
        server = Server(args.listen, Handler)
    except OSError as exc:
        raise CtlError(f"cannot listen on {args.listen[0]}:{args.listen[1]}: {exc.strerror}",
                       EXIT_USAGE) from exc
    host, port = server.server_address[:2]
    shown = socket.gethostname() if host == "0.0.0.0" else host  # a URL one can open
    url = f"http://{shown}:{port}/"
    damaged = f" (damaged: {meta['damage']})" if meta["damage"] else ""
    emit(args, f"Playing {path.name}{damaged} at {url} (Ctrl-C to stop)",
         {"url": url, "file": str(path), "damage": meta["damage"]})
    sys.stdout.flush()
    if not ipaddress.ip_address(host).is_loopback:
        print(f"{PROG}: warning: serving the recording to anyone who reaches {host}:{port} "
              "(no authentication)", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return EXIT_OK
