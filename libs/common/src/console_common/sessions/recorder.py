"""Recording a console session to a file without slowing its relay.

    policy = RecordingPolicy.from_config(config)     # None when record_dir is not set
    registry.recording = policy                      # SessionRegistry.run opens one per session
    recorder.server_data(chunk)  # console -> client bytes, from wherever the session path
    recorder.client_data(chunk)  # has them (after the security proxy, when there is one)
    recorder.close({...})        # the end note; the file is complete

The relay's hot path copies the chunk and its 13-byte frame head into a buffer it reuses
(no syscall; one memcpy). Holding on to the relay's own chunks instead would be cheaper
per call but costs far more: the relay would allocate fresh pages for every read (page
faults, a bulk stream paid ~2 CPU-s/GB for it). A full buffer (BUFFER_BYTES), or any
data every FLUSH_INTERVAL seconds, goes to a writer greenlet that writes it from the hub's
thread pool (a slow disk blocks no session) and hands the buffer back. At most BUFFERS
buffers per session: when all are waiting to be written the relay waits for the writer
(back-pressure, as with a slow client); if the disk does not catch up within STALL_TIMEOUT
the recording stops and the session goes on. Past ``record_max_bytes`` the recording
stops too (one log line, a note in the file). The header waits for the RFB handshake to
be seen (desktop name and size), or for the first flush that cannot wait any longer.

Files are created with mode 0600 (client input may hold typed passwords), named
``<UTC start>-<instance>-<session_id>.rec`` in ``record_dir``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from collections.abc import Callable
from contextvars import copy_context
from typing import Any

import gevent
import gevent.event
import structlog
from gevent.monkey import get_original

from console_common.proto.recording import (CLIENT, FRAME, NOTE, SERVER, SUFFIX,
                                            encode_header)

log = structlog.get_logger("recording")
# A real lock (not gevent's): shared by the writer greenlet and a pool thread.
_os_lock = get_original("_thread", "allocate_lock")

FLUSH_INTERVAL = 0.5
BUFFER_BYTES = 1024 * 1024  # one write each: big enough to cost the filesystem little
BUFFERS = 4  # per session, created as needed: memory is bounded by BUFFERS * BUFFER_BYTES
STALL_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
HEADER_WAIT = 10.0
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
        self._total = 0  # frame bytes recorded (not the header, notes)
        self._buffers = 1
        self._fill = bytearray(BUFFER_BYTES)  # what the relay copies into
        self._used = 0
        self._full: list[tuple[bytes | bytearray, int]] = []  # waiting for the writer
        self._free: list[bytearray] = []
        self._header_done = False
        self._closing = False
        # the descriptor is closed by whoever is last: the writer, or a write still in
        # flight in its thread when the writer was given up on (never a reused number)
        self._fd_lock = _os_lock()
        self._in_flight = False
        self._close_pending = False
        self._wake = gevent.event.Event()
        self._room = gevent.event.Event()
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
        self._total += size
        self._put(kind, data)
        return self.active

    def _put(self, kind: int, data: bytes) -> None:
        size = FRAME.size + len(data)
        if not self._used:  # the writer sleeps while nothing waits: now something will
            self._wake.set()
        if self._used + size > len(self._fill):
            if not self._hand_over():
                return
            if size > len(self._fill):  # larger than a buffer: written on its own
                self._full.append((FRAME.pack(kind, int(self._elapsed() * 1e6), len(data))
                                   + data, size))
                self._wake.set()
                return
        start = self._used + FRAME.size
        FRAME.pack_into(self._fill, self._used, kind, int(self._elapsed() * 1e6), len(data))
        self._fill[start:start + len(data)] = data
        self._used = start + len(data)

    def _hand_over(self) -> bool:
        """The filled buffer to the writer; a free one to fill, waiting while none is."""
        if self._used:
            self._full.append((self._fill, self._used))
            self._fill, self._used = bytearray(), 0
            self._wake.set()
        while not self._free and self._buffers >= BUFFERS:
            if self._writer.ready():  # the writer failed: nothing will be freed
                return False
            self._room.clear()
            if not self._room.wait(STALL_TIMEOUT) and self.active:  # the disk is behind
                self._stop("stalled", f"disk writes fell {STALL_TIMEOUT:g}s behind")
            if not self.active or self._closing:
                return False
        if self._free:
            self._fill = self._free.pop()
        else:
            self._buffers += 1
            self._fill = bytearray(BUFFER_BYTES)
        return True

    def _note(self, fields: dict[str, Any]) -> None:
        self._put(NOTE, json.dumps(fields, separators=(",", ":")).encode())

    def _stop(self, note: str, detail: str) -> None:
        if not self.active:
            return
        self.active = False
        self.stopped = note
        log.warning("recording.stopped", path=self.path, reason=note, detail=detail,
                    recorded_bytes=self._total)
        if note != "stalled":  # a stalled writer gets no more to write
            self._note({"note": note, "detail": detail})
        self._wake.set()

    def close(self, end: dict[str, Any]) -> None:
        """The end note (close reason, byte counts), then the last write; bounded wait."""
        if self._closing:
            return
        was_active, self.active = self.active, False
        if was_active or self.stopped != "stalled":
            self._note({"note": "end", **end})
        self._closing = True
        self._wake.set()
        self._room.set()
        self._writer.join(CLOSE_TIMEOUT)
        if not self._writer.ready():
            self._writer.kill(block=False)
            log.warning("recording.close_timeout", path=self.path)  # its finally closes

    def _write(self, data: bytes | memoryview) -> None:
        self._in_flight = True
        gevent.get_hub().threadpool.apply(self._write_in_thread, (data,))

    def _write_in_thread(self, data: bytes | memoryview) -> None:
        try:
            _write_all(self._fd, data)
        finally:
            with self._fd_lock:
                self._in_flight = False
                if self._close_pending:
                    os.close(self._fd)

    def _close_fd(self) -> None:
        with self._fd_lock:
            if self._in_flight:
                self._close_pending = True
            else:
                os.close(self._fd)

    def _write_loop(self) -> None:
        write = self._write
        # a client that stalls in the handshake gets a header without the desktop (and its
        # writer goes to sleep) after HEADER_WAIT
        header_by = time.monotonic() + HEADER_WAIT
        try:
            while True:
                # an idle session's writer sleeps until there is something to write
                pending = self._used or self._full or self._closing
                woken = self._wake.wait(FLUSH_INTERVAL if pending else None)
                self._wake.clear()
                closing = self._closing
                if not self._header_done:
                    if (not closing and not self._ready() and not self._full
                            and time.monotonic() < header_by):
                        continue  # the desktop is not described yet: wait a little more
                    write(encode_header(self._describe()))
                    self._header_done = True
                if (closing or not woken) and self._used:  # time's up: what there is
                    # (never while the relay waits in _hand_over: its buffer is empty then)
                    self._full.append((self._fill, self._used))
                    self._fill, self._used = bytearray(), 0  # _hand_over finds it a buffer
                while self._full:
                    buffer, used = self._full.pop(0)
                    with memoryview(buffer) as view:
                        write(view[:used])
                    if isinstance(buffer, bytearray) and len(buffer) == BUFFER_BYTES:
                        self._free.append(buffer)
                    self._room.set()
                if closing and not self._full:
                    break
        except OSError as exc:  # a full or failing disk: the session goes on
            self.active = False
            self._full.clear()
            log.warning("recording.failed", path=self.path, error=exc.strerror or str(exc))
        except Exception:  # never a silent greenlet death
            self.active = False
            log.error("recording.failed", path=self.path, exc_info=True)
        finally:
            self._room.set()
            self._close_fd()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Runs in a pool thread: the whole buffer, short writes finished."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
