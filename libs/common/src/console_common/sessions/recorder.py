"""Recording a console session to a file without slowing its relay.

    policy = RecordingPolicy.from_config(config)     # None when record_dir is not set
    registry.recording = policy                      # SessionRegistry.run opens one per session
    recorder.server_data(chunk)  # console -> client bytes, from wherever the session path
    recorder.client_data(chunk)  # has them (after the security proxy, when there is one)
    recorder.close({...})        # the end note; the file is complete

The relay's hot path only appends the chunk and a 13-byte frame head to a list (no copy,
no syscall). A writer greenlet joins what is pending and writes it in one ``write`` from
the hub's thread pool (a slow disk blocks no session) every FLUSH_INTERVAL seconds or
FLUSH_BYTES. What waits is bounded (MAX_PENDING): beyond it the relay waits for the writer
(back-pressure, as with a slow client); if the disk does not catch up within STALL_TIMEOUT
the recording stops and the session goes on. Past ``record_max_bytes`` the recording
stops too (one log line, a note in the file). The header waits for the RFB handshake to
be seen (desktop name and size), or for the first flush that cannot wait any longer.

Files are created with mode 0600 (client input may hold typed passwords), named
``<UTC start>-<instance>-<session_id>.rec`` in ``record_dir``.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable
from contextvars import copy_context
from typing import Any

import gevent
import gevent.event
import structlog

from console_common.proto.recording import (CLIENT, FRAME, SERVER, SUFFIX, encode_header,
                                            encode_note, frame_head)

log = structlog.get_logger("recording")

FLUSH_INTERVAL = 0.5
FLUSH_BYTES = 512 * 1024
MAX_PENDING = 8 * 1024 * 1024
STALL_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class RecordingPolicy:
    """What ``record_dir``, ``record_input`` and ``record_max_bytes`` say; opens recorders."""

    def __init__(self, directory: str, record_input: bool = False,
                 max_bytes: int = 512 * 1024 * 1024) -> None:
        self.directory = directory
        self.record_input = record_input
        self.max_bytes = max_bytes

    @classmethod
    def from_config(cls, config: Any) -> RecordingPolicy | None:
        if not config.record_dir:
            return None
        return cls(config.record_dir, config.record_input, config.record_max_bytes)

    def check(self) -> None:
        """At start: the folder exists (created 0700 if not) and is writable; OSError if
        not, for the service to stop with one line."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, "not writable", self.directory)

    def open(self, session: Any) -> Recorder | None:
        """A recorder for ``session`` (runner.Session), or None when the file cannot be
        created (logged once; the session goes on unrecorded)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(session.started_at))
        instance = _UNSAFE.sub("_", session.instance_uuid or "unknown")[:64]
        path = os.path.join(self.directory, f"{stamp}-{instance}-{session.session_id}{SUFFIX}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("recording.failed", path=path, error=exc.strerror or str(exc))
            return None
        observer = session.observer

        def describe() -> dict[str, Any]:
            fields = {"session_id": session.session_id, "kind": session.kind,
                      "instance_uuid": session.instance_uuid, "client": session.client,
                      "token_id": session.token_id, "target": session.context.get("target"),
                      "started": session.started_at,
                      "started_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                   time.gmtime(session.started_at)),
                      "record_input": self.record_input}
            if observer is not None:
                fields.update(observer.info())
            return fields

        # offsets count from the session's start, the header's `started` (wall clock)
        return Recorder(fd, path, describe, self.max_bytes, self.record_input,
                        ready=lambda: observer is None or not observer.active,
                        elapsed=session.age)


class Recorder:
    """One session's file. ``server_data``/``client_data`` return whether they still want
    bytes (a relay observer's contract: False lets the relay stop calling)."""

    def __init__(self, fd: int, path: str, describe: Callable[[], dict[str, Any]],
                 max_bytes: int, record_input: bool, ready: Callable[[], bool] = lambda: True,
                 elapsed: Callable[[], float] | None = None) -> None:
        self.path = path
        self.active = True
        self.record_input = record_input
        self.stopped: str | None = None  # why recording stopped early
        self._fd = fd
        self._describe, self._ready = describe, ready
        self._max = max_bytes
        if elapsed is None:  # seconds since this recorder started
            t0 = time.monotonic()
            elapsed = lambda: time.monotonic() - t0  # noqa: E731
        self._elapsed = elapsed
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._total = 0  # frame bytes in the file or on their way (not the header, notes)
        self._header_done = False
        self._closing = False
        self._wake = gevent.event.Event()
        self._room = gevent.event.Event()
        self._room.set()
        self._writer = gevent.spawn(copy_context().run, self._write_loop)

    def server_data(self, data: bytes) -> bool:
        return self._add(SERVER, data)

    def client_data(self, data: bytes) -> bool:
        return self.record_input and self._add(CLIENT, data)

    def _add(self, kind: int, data: bytes) -> bool:
        if not self.active:
            return False
        size = FRAME.size + len(data)
        if self._total + size > self._max:
            self._stop("limit", f"record_max_bytes ({self._max}) reached")
            return False
        self._pending.append(frame_head(kind, self._elapsed(), len(data)))
        self._pending.append(data)
        self._pending_bytes += size
        self._total += size
        if self._pending_bytes >= FLUSH_BYTES:
            self._wake.set()
            if self._pending_bytes >= MAX_PENDING:
                self._room.clear()
                if not self._room.wait(STALL_TIMEOUT):  # the writer is behind: wait for it
                    self._stop("stalled", f"disk writes fell {STALL_TIMEOUT:g}s behind")
                    return False
        return self.active

    def _stop(self, note: str, detail: str) -> None:
        if not self.active:
            return
        self.active = False
        self.stopped = note
        log.warning("recording.stopped", path=self.path, reason=note, detail=detail,
                    recorded_bytes=self._total)
        self._pending.append(encode_note(self._elapsed(), {"note": note,
                                                                    "detail": detail}))
        self._wake.set()

    def close(self, end: dict[str, Any]) -> None:
        """The end note (close reason, byte counts), then the last write; bounded wait."""
        if self._closing:
            return
        self._closing = True
        self.active = False
        self._pending.append(encode_note(self._elapsed(), {"note": "end", **end}))
        self._wake.set()
        self._room.set()
        self._writer.join(CLOSE_TIMEOUT)
        if not self._writer.ready():
            self._writer.kill(block=False)
            log.warning("recording.close_timeout", path=self.path)  # its finally closes

    def _write_loop(self) -> None:
        try:
            while True:
                self._wake.wait(FLUSH_INTERVAL)
                self._wake.clear()
                closing = self._closing
                if not self._header_done:
                    if not closing and not self._ready() and self._pending_bytes < MAX_PENDING:
                        continue  # the desktop is not described yet: wait a little more
                    header = encode_header(self._describe())
                    self._pending.insert(0, header)
                    self._header_done = True
                if self._pending:
                    chunks, self._pending, self._pending_bytes = self._pending, [], 0
                    self._room.set()
                    gevent.get_hub().threadpool.apply(_write_all, (self._fd, chunks))
                if closing and not self._pending:
                    break
        except OSError as exc:  # a full or failing disk: the session goes on
            self.active = False
            self._pending, self._pending_bytes = [], 0
            self._room.set()
            log.warning("recording.failed", path=self.path, error=exc.strerror or str(exc))
        except Exception:  # never a silent greenlet death
            self.active = False
            self._room.set()
            log.error("recording.failed", path=self.path, exc_info=True)
        finally:
            try:
                os.close(self._fd)
            except OSError:
                pass


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Runs in a pool thread: one write per batch (short writes retried)."""
    view = memoryview(b"".join(chunks))
    while view:
        n = os.write(fd, view)
        view = view[n:]
