"""Connecting to a console target (the VNC server) for either proxy.

Bounded connect (``timeout`` covers DNS, TCP connect and the CONNECT answer); optionally
passes through an HTTP CONNECT ``internal_access_path`` and requires a ``200`` status line
before relaying. Bytes the target sent right after its CONNECT answer are not lost: the
returned stream yields them first.
"""

from __future__ import annotations

import socket
import time

import gevent
from gevent import socket as gsocket

from console_common.net.addresses import ip_family
from console_common.proto.httphead import NEED_DATA, HeadError, StatusReader
from console_common.net.relay import TcpStream

READ = 4096


class TargetUnreachable(Exception):
    """The console target cannot be reached; ``reason`` is short and safe to log/show."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target}: {reason}")
        self.target, self.reason = target, reason


def connect_target(host: str, port: int, timeout: float,
                   internal_access_path: str | None = None) -> TcpStream:
    target = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        with gevent.Timeout(timeout, TimeoutError("connect timed out")):
            sock = _connect(host, port, timeout)
    except TimeoutError as exc:
        raise TargetUnreachable(target, f"timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise TargetUnreachable(target, exc.strerror or str(exc)) from exc
    sock.settimeout(None)
    stream = TcpStream(sock)
    if internal_access_path is None:
        return stream
    try:
        leftover = _connect_through(sock, internal_access_path, deadline)
    except TargetUnreachable as exc:
        sock.close()
        raise TargetUnreachable(target, exc.reason) from exc
    except BaseException:
        sock.close()
        raise
    if leftover:
        stream.prepend(leftover)
    return stream


def _connect(host: str, port: int, timeout: float) -> gsocket.socket:
    """A connected socket. An IP address (what compute hosts report) is connected to
    directly: create_connection would still pass it through getaddrinfo, which gevent runs
    in its resolver thread pool, a thread hand-off per session."""
    family = ip_family(host)
    if family is None:
        return gsocket.create_connection((host, port), timeout=timeout)
    sock = gsocket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _connect_through(sock: socket.socket, path: str, deadline: float) -> bytes:
    if any(c in path for c in "\r\n ") or not path:
        raise TargetUnreachable("", "bad internal_access_path")
    reader = StatusReader(max_size=8192)
    remaining = max(0.0, deadline - time.monotonic())
    try:
        with gevent.Timeout(remaining, TimeoutError("no CONNECT answer")):
            sock.sendall(f"CONNECT {path} HTTP/1.1\r\n\r\n".encode("ascii"))
            while (event := reader.next_event()) is NEED_DATA:
                reader.receive_data(sock.recv(READ))
    except TimeoutError as exc:
        raise TargetUnreachable("", "no answer to CONNECT in time") from exc
    except HeadError as exc:
        raise TargetUnreachable("", f"bad answer to CONNECT: {exc.reason}") from exc
    except (OSError, UnicodeEncodeError) as exc:
        raise TargetUnreachable("", f"CONNECT failed: {exc}") from exc
    if event.status != 200:
        raise TargetUnreachable("", f"CONNECT refused: {event.status} {event.reason}")
    return bytes(reader.trailing_data)
