"""Zero-copy bulk relaying on Linux: splice(2) socket -> pipe -> socket under gevent.

A relay direction moving bulk data (a framebuffer stream) through Python costs two copies
and a bytes object per read: recv copies kernel -> Python, sendall copies it back. With
splice the payload pages move from the source socket into a pipe and from the pipe into
the destination socket without ever entering user space; Python only counts.

Both sockets must be plain TCP (not TLS) in non-blocking mode, as gevent keeps them. The
pipe is made only when a direction turns out to carry bulk data (see ``relay.pump``), so an
idle session costs no extra descriptors. Where splice is missing, ``available()`` is False
and the relay copies as before.
"""

from __future__ import annotations

import fcntl
import os
import socket

from gevent import get_hub

# One pipe load is one frame header on a WebSocket and one pass through the hub: 1 MiB
# loads measured 0.31 CPU-s/GB against 0.51 with 256 KiB (bench/README.md). The pages are
# only held while data is in flight; past the per-user pipe budget (non-root:
# /proc/sys/fs/pipe-user-pages-soft) the kernel refuses the size and 64 KiB is used.
PIPE_SIZE = 1024 * 1024
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_MORE = getattr(socket, "MSG_MORE", 0)


def available() -> bool:
    return hasattr(os, "splice") and hasattr(os, "SPLICE_F_NONBLOCK")


class Pipe:
    """A kernel pipe with readiness watchers for the two sockets around it.

    ``fill(n)`` moves up to ``n`` bytes from the source socket into the pipe (0 at EOF),
    ``drain()`` sends all the pipe holds to the destination socket; both wait through the
    gevent hub while a socket is not ready, so other greenlets run meanwhile. (os.splice
    itself retries a call interrupted by a signal, PEP 475.)
    """

    __slots__ = ("_r", "_w", "_src", "_dst", "_read_ready", "_write_ready", "held")

    def __init__(self, src_fd: int, dst_fd: int) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self._w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # over the per-user pipe budget: the default 64 KiB still works
        self._src, self._dst = src_fd, dst_fd
        loop = get_hub().loop
        self._read_ready = loop.io(src_fd, 1)
        self._write_ready = loop.io(dst_fd, 2)
        self.held = 0  # bytes in the pipe not yet sent on

    def fill(self, size: int) -> int:
        """Wait for source bytes, then move what is there (up to ``size``) into the pipe;
        0 at EOF. Keeps splicing while more is queued, so one load (one frame header on
        a WebSocket) carries as much as the pipe holds."""
        got = 0
        while got < size:
            try:
                n = os.splice(self._src, self._w, size - got, flags=_FLAGS)
            except BlockingIOError:
                if got:
                    break  # the source is empty for now, or the pipe is full
                get_hub().wait(self._read_ready)
                continue
            if not n:
                break  # EOF: the next fill returns 0
            got += n
        self.held += got
        return got

    def drain(self) -> None:
        """Send everything the pipe holds to the destination socket."""
        while self.held:
            try:
                n = os.splice(self._r, self._dst, self.held, flags=_FLAGS)
            except BlockingIOError:
                get_hub().wait(self._write_ready)
                continue
            self.held -= n

    def send_header(self, sock: socket.socket, header: bytes) -> None:
        """Send a small header that must go out before the pipe's payload (a WebSocket
        frame header); MSG_MORE lets the kernel put both into the same segments."""
        view = memoryview(header)
        while view:
            try:
                n = sock.send(view, _MORE) if _MORE else sock.send(view)
            except BlockingIOError:  # a gevent socket waits itself; a raw one may not
                get_hub().wait(self._write_ready)
                continue
            view = view[n:]

    def discard(self) -> None:
        """Drop what the pipe holds (the destination may send nothing more)."""
        while self.held:
            try:
                self.held -= len(os.read(self._r, min(self.held, PIPE_SIZE))) or self.held
            except BlockingIOError:
                self.held = 0

    def close(self) -> None:
        for watcher in (self._read_ready, self._write_ready):
            watcher.close()
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
