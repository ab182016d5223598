"""Bus client: the Lazy Pirate pattern on zmq.green, safe from many greenlets at once.

Every call has one deadline (``timeout``) covering all its attempts. Each attempt uses a
REQ socket of its own, taken from a small pool of idle connected sockets (saves a connect
per call); a socket whose reply did not come is closed (LINGER 0), never reused, because a
REQ socket is unusable after a lost reply. Attempts fail over along the endpoint list.

Waiting is done the zmq.green way but without its per-socket machinery (which costs more
than a whole request and, reusing sockets quickly, was seen to miss a wake-up): sockets
come from a plain context of our own, every call is non-blocking, and the greenlet sleeps
on the socket's fd through the hub (``wait_read``) only after ZMQ_EVENTS says nothing is
queued. The fd is edge-style, so EVENTS is always checked before sleeping.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import zmq
from gevent.socket import wait_read

from console_common.addresses import ip_family
from console_common.bus.errors import BusUnavailable
from console_common.bus.protocol import decode_reply, encode_request

MAX_IDLE_PER_ENDPOINT = 64


_CONTEXT: zmq.Context | None = None


def _context() -> zmq.Context:
    """One plain context per process for every client (see module docstring)."""
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT.closed:
        _CONTEXT = zmq.Context()
    return _CONTEXT


def expand_endpoints(endpoints: Sequence[str]) -> tuple[str, ...]:
    """Resolve every host name to all its addresses: ZeroMQ resolves a name once at
    connect, so a scaled service behind one DNS name would otherwise get one replica."""
    out: list[str] = []
    for ep in endpoints:
        parts = urlsplit(ep)
        host = parts.hostname
        if parts.scheme != "tcp" or not host or ip_family(host) is not None or host == "*":
            out.append(ep)
            continue
        try:
            infos = socket.getaddrinfo(host, parts.port, type=socket.SOCK_STREAM)
        except OSError:
            out.append(ep)  # let ZeroMQ try (and fail clearly) later
            continue
        addrs = sorted({info[4][0] for info in infos})
        out += [f"tcp://[{a}]:{parts.port}" if ":" in a else f"tcp://{a}:{parts.port}"
                for a in addrs]
    return tuple(dict.fromkeys(out))


def _wait_readable(sock: zmq.Socket, deadline: float) -> bool:
    """Sleep this greenlet until ``sock`` has a message or ``deadline`` passes."""
    fd = sock.getsockopt(zmq.FD)
    while not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            wait_read(fd, timeout=remaining)
        except TimeoutError:
            return False
    return True


class BusClient:
    def __init__(self, endpoints: Sequence[str], timeout: float, attempts: int = 3,
                 context: zmq.Context | None = None) -> None:
        if not endpoints:
            raise ValueError("BusClient needs at least one endpoint")
        self._names = tuple(endpoints)
        self._endpoints = expand_endpoints(endpoints)
        self._timeout = float(timeout)
        self._attempts = max(1, attempts)
        self._ctx = context or _context()
        self._idle: dict[str, list[zmq.Socket]] = {}
        self._turn = itertools.count()
        self._ids = itertools.count()
        self._prefix = os.urandom(4).hex()
        self._closed = False

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._names

    @property
    def timeout(self) -> float:
        return self._timeout

    def call(self, method: str, **args: Any) -> Any:
        """Call ``method``; returns its result or raises RemoteError / BusUnavailable."""
        rid = f"{self._prefix}-{next(self._ids)}"
        payload = encode_request(method, args, rid)  # schema-checked, size-capped
        deadline = time.monotonic() + self._timeout
        first = next(self._turn)
        count = len(self._endpoints)
        detail = ""
        for attempt in range(self._attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            endpoint = self._endpoints[(first + attempt) % count]
            share = remaining / (self._attempts - attempt)
            sock = self._take(endpoint)
            answered = False
            try:
                sock.send(payload, zmq.NOBLOCK)
                if _wait_readable(sock, time.monotonic() + share):
                    data = sock.recv(zmq.NOBLOCK)
                    answered = True
                    return decode_reply(data, method, rid)
                detail = f"last try {endpoint}: no reply in {share:.2g}s"
            except zmq.ZMQError as exc:
                detail = f"last try {endpoint}: {exc}"
            finally:
                if answered and not self._closed:
                    self._give(endpoint, sock)
                else:
                    sock.close(linger=0)
        raise BusUnavailable(self._names, self._timeout, detail)

    def _take(self, endpoint: str) -> zmq.Socket:
        idle = self._idle.get(endpoint)
        if idle:
            return idle.pop()
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)
        sock.connect(endpoint)
        return sock

    def _give(self, endpoint: str, sock: zmq.Socket) -> None:
        idle = self._idle.setdefault(endpoint, [])
        if len(idle) < MAX_IDLE_PER_ENDPOINT:
            idle.append(sock)
        else:
            sock.close(linger=0)

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for sock in idle:
                sock.close(linger=0)
        self._idle.clear()

    def __enter__(self) -> "BusClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
