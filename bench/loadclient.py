"""Benchmark load client: raw TCP, RFC 6455 WebSocket (our own framing) or xvp preamble.

    python bench/loadclient.py download --kind ws --port P --path '/websockify?token=T' \\
        --seconds 3 --warmup 1
    python bench/loadclient.py upload   --kind xvp --port P --path '/console?token=T' ...
    python bench/loadclient.py echo     --kind tcp --port P --count 5000
    python bench/loadclient.py sessions --kind ws --port P --path ... --concurrency 16
    python bench/loadclient.py idle     --kind ws --port P --path ...   (levels on stdin)

Prints ``start`` on a line of its own when the measured window begins (the driver reads
the proxy's CPU time then), and one JSON object per result line. ``idle`` reads a total
session count per stdin line, opens sessions up to it and answers one JSON line each;
EOF or ``close`` closes them all.

Kinds: ``tcp`` connects and relays raw bytes (direct, socat); ``ws`` does the RFC 6455
upgrade (``Sec-WebSocket-Protocol: binary``, no Origin), reads server frames with a
header-only parser that counts payload without copying it, and sends masked client
frames built once with ``console_common.proto.websocket.encode_binary`` (the proxy still has to
unmask every byte; reusing a few prebuilt frames keeps the client off the CPU); ``xvp``
sends ``CONNECT <path> HTTP/1.1`` and requires ``200`` before relaying raw bytes.

download/upload/echo use plain blocking sockets; sessions/idle run greenlets (gevent
monkey-patched at start, so the same blocking-style code serves both).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import time
from collections import Counter

from console_common.proto.websocket import (
    check_client_response,
    client_key,
    client_request,
    encode_binary,
)

HOST = "127.0.0.1"
GREETING_SIZE = 12  # "RFB 003.008\n" from the hold target
HEAD_MAX = 16 << 10
RECV = 1 << 20


class SessionError(Exception):
    """A session could not be opened or ended early; the message is the tally key."""


def emit(obj: object) -> None:
    sys.stdout.write((obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    sys.stdout.flush()


# --- opening a session --------------------------------------------------------------------


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(4096)
        if not chunk:
            raise SessionError("closed before answering the handshake")
        buf += chunk
        if len(buf) > HEAD_MAX:
            raise SessionError("answer head too large")
    return buf[:end], buf[end + 4:]


def open_session(kind: str, port: int, path: str, timeout: float) -> tuple[socket.socket, bytes]:
    """Connected socket past the handshake, and the bytes that came after the answer."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if kind == "tcp":
            return sock, b""
        if kind == "ws":
            key = client_key(os.urandom(16))
            sock.sendall(client_request(f"{HOST}:{port}", path, key, ["binary"]))
            head, rest = _read_head(sock)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if status != 101:
                raise SessionError(f"HTTP {status or lines[0][:40]!r}")
            headers = [tuple(v.strip() for v in line.split(":", 1)) for line in lines[1:]
                       if ":" in line]
            check_client_response(status, headers, key, ["binary"])
            return sock, rest
        if kind == "xvp":
            sock.sendall(f"CONNECT {path} HTTP/1.1\r\n\r\n".encode("ascii"))
            head, rest = _read_head(sock)
            status_line = head.split(b"\r\n", 1)[0]
            if status_line.split(b" ")[1:2] != [b"200"]:
                raise SessionError(f"xvp {status_line[:40].decode('latin-1')!r}")
            return sock, rest
        raise ValueError(f"unknown kind {kind!r}")
    except BaseException:
        sock.close()
        raise


# --- reading: payload counters --------------------------------------------------------------


class RawCounter:
    __slots__ = ()

    def consume(self, data: memoryview | bytes) -> int:
        return len(data)


class WsCounter:
    """Counts data payload bytes in server frames, parsing headers only (no copies)."""

    __slots__ = ("counting", "hdr", "need")

    def __init__(self) -> None:
        self.need = 0  # payload bytes left in the current frame
        self.counting = True  # False inside a control frame's payload
        self.hdr = bytearray()

    def consume(self, data: memoryview | bytes) -> int:
        n, i, payload = len(data), 0, 0
        hdr = self.hdr
        while i < n:
            if self.need:
                take = min(self.need, n - i)
                self.need -= take
                i += take
                if self.counting:
                    payload += take
                continue
            take = min(14 - len(hdr), n - i)
            hdr += data[i:i + take]
            parsed = _parse_header(hdr)
            if parsed is None:
                i += take
                continue
            size, length, opcode = parsed
            i += take - (len(hdr) - size)
            hdr.clear()
            if opcode == 0x8:
                raise SessionError("server closed the WebSocket")
            self.need, self.counting = length, opcode < 0x8
        return payload


def _parse_header(h: bytearray) -> tuple[int, int, int] | None:
    if len(h) < 2:
        return None
    b1 = h[1]
    length, pos = b1 & 0x7F, 2
    if length == 126:
        if len(h) < 4:
            return None
        length, pos = int.from_bytes(h[2:4], "big"), 4
    elif length == 127:
        if len(h) < 10:
            return None
        length, pos = int.from_bytes(h[2:10], "big"), 10
    if b1 & 0x80:  # a masked server frame: not ours to judge here, skip the key
        pos += 4
        if len(h) < pos:
            return None
    return pos, length, h[0] & 0x0F


def counter_for(kind: str) -> RawCounter | WsCounter:
    return WsCounter() if kind == "ws" else RawCounter()


def read_payload(sock: socket.socket, counter, want: int, first: bytes = b"") -> None:
    """Read until ``want`` payload bytes arrived (the greeting, an echo)."""
    got = counter.consume(first) if first else 0
    buf = bytearray(65536)
    view = memoryview(buf)
    while got < want:
        n = sock.recv_into(buf)
        if not n:
            raise SessionError("closed before the expected data")
        got += counter.consume(view[:n])


def outgoing(kind: str, payload: bytes, copies: int) -> bytes:
    """``copies`` messages of ``payload`` as they go on the wire (masked frames for ws)."""
    if kind == "ws":
        return b"".join(encode_binary(payload, mask=os.urandom(4)) for _ in range(copies))
    return payload * copies


# --- measures ---------------------------------------------------------------------------------


def download(a: argparse.Namespace) -> dict:
    sock, rest = open_session(a.kind, a.port, a.path, a.timeout)
    with sock:
        counter = counter_for(a.kind)
        counter.consume(rest)
        buf = bytearray(RECV)
        view = memoryview(buf)
        recv_into, consume, now = sock.recv_into, counter.consume, time.perf_counter
        warm_until = now() + a.warmup
        while now() < warm_until:
            if not (n := recv_into(buf)):
                raise SessionError("stream ended during warm-up")
            consume(view[:n])
        emit("start")
        total, t0 = 0, now()
        stop = t0 + a.seconds
        while True:
            if not (n := recv_into(buf)):
                raise SessionError("stream ended")
            total += consume(view[:n])
            if (t := now()) >= stop:
                break
        emit("end")
    return {"bytes": total, "seconds": t - t0, "mb_per_s": total / (t - t0) / 1e6}


def upload(a: argparse.Namespace) -> dict:
    sock, _ = open_session(a.kind, a.port, a.path, a.timeout)
    with sock:
        copies = 16  # ~1 MiB per sendall: few Python steps per MB
        blob = outgoing(a.kind, os.urandom(a.size), copies)
        per_blob = a.size * copies
        sendall, now = sock.sendall, time.perf_counter
        warm_until = now() + a.warmup
        while now() < warm_until:
            sendall(blob)
        emit("start")
        total, t0 = 0, now()
        stop = t0 + a.seconds
        while True:
            sendall(blob)
            total += per_blob
            if (t := now()) >= stop:
                break
        emit("end")
    return {"bytes": total, "seconds": t - t0, "mb_per_s": total / (t - t0) / 1e6}


def echo(a: argparse.Namespace) -> dict:
    sock, rest = open_session(a.kind, a.port, a.path, a.timeout)
    with sock:
        counter = counter_for(a.kind)
        if rest:
            raise SessionError("echo target sent unasked data")
        message = outgoing(a.kind, os.urandom(a.size), 1)
        buf = bytearray(65536)
        view = memoryview(buf)
        sendall, recv_into, consume, now = sock.sendall, sock.recv_into, counter.consume, \
            time.perf_counter
        lat: list[float] = []
        for i in range(a.warmup_count + a.count):
            t0 = now()
            sendall(message)
            got = 0
            while got < a.size:
                if not (n := recv_into(buf)):
                    raise SessionError("echo connection closed")
                got += consume(view[:n])
            if i >= a.warmup_count:
                lat.append(now() - t0)
    lat.sort()
    pick = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6
    return {"count": len(lat), "p50_us": pick(0.50), "p99_us": pick(0.99),
            "mean_us": sum(lat) / len(lat) * 1e6, "max_us": lat[-1] * 1e6}


def sessions(a: argparse.Namespace) -> dict:
    import gevent

    ok, lat, errors = 0, [], Counter()
    now = time.perf_counter
    start_at = now() + a.warmup
    stop_at = start_at + a.seconds

    def one() -> None:
        nonlocal ok
        t0 = now()
        try:
            sock, rest = open_session(a.kind, a.port, a.path, a.timeout)
            with sock:
                read_payload(sock, counter_for(a.kind), GREETING_SIZE, rest)
        except (OSError, SessionError, ValueError) as exc:
            errors[describe(exc)] += 1
            gevent.sleep(0.01)  # a refusing system must not turn this into a busy loop
            return
        t1 = now()
        if start_at <= t1 <= stop_at:  # completions inside the window
            ok += 1
            lat.append(t1 - t0)

    def worker() -> None:
        while now() < stop_at:
            one()

    def mark() -> None:
        gevent.sleep(max(0.0, start_at - now()))
        emit("start")
        gevent.sleep(max(0.0, stop_at - now()))
        emit("end")

    marker = gevent.spawn(mark)
    workers = [gevent.spawn(worker) for _ in range(a.concurrency)]
    gevent.joinall(workers, timeout=a.warmup + a.seconds + a.timeout + 5)
    marker.join(timeout=1)
    gevent.killall(workers + [marker])
    lat.sort()
    pick = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3 if lat else None
    return {"sessions": ok, "seconds": a.seconds, "per_s": ok / a.seconds,
            "setup_p50_ms": pick(0.5), "setup_p99_ms": pick(0.99), "errors": dict(errors)}


def idle(a: argparse.Namespace) -> None:
    import gevent
    import gevent.pool
    from gevent import monkey

    poll_cls = monkey.get_original("select", "poll")
    held: list[socket.socket] = []
    errors: Counter[str] = Counter()

    def open_one() -> None:
        try:
            sock, rest = open_session(a.kind, a.port, a.path, a.timeout)
        except (OSError, SessionError, ValueError) as exc:
            errors[describe(exc)] += 1
            return
        try:
            read_payload(sock, counter_for(a.kind), GREETING_SIZE, rest)
        except (OSError, SessionError, ValueError) as exc:
            errors[describe(exc)] += 1
            sock.close()
            return
        held.append(sock)

    def alive() -> int:
        """Held sessions with nothing to read and no hang-up (idle ones stay silent)."""
        p = poll_cls()
        for s in held:
            p.register(s.fileno(), 0x001 | 0x2000)  # POLLIN | POLLRDHUP
        return len(held) - len(p.poll(0))

    for line in sys.stdin:
        cmd = line.strip()
        if not cmd or cmd == "close":
            break
        want = int(cmd)
        before, t0 = len(held), time.perf_counter()
        errors.clear()
        pool = gevent.pool.Pool(a.concurrency)
        try:
            with gevent.Timeout(a.level_timeout, False):
                for _ in range(max(0, want - len(held))):
                    pool.spawn(open_one)
                pool.join()
        finally:
            pool.kill(timeout=5)
        if pool.greenlets:
            errors["level timeout"] += len(pool.greenlets)
        emit({"target": want, "opened": len(held) - before, "held": len(held), "alive": alive(),
              "seconds": time.perf_counter() - t0, "errors": dict(errors)})
    for s in held:
        s.close()
    emit({"closed": len(held)})


def describe(exc: BaseException) -> str:
    if isinstance(exc, SessionError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("measure", choices=["download", "upload", "echo", "sessions", "idle"])
    ap.add_argument("--kind", choices=["tcp", "ws", "xvp"], required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--size", type=int, default=64 << 10, help="upload frame / echo message")
    ap.add_argument("--count", type=int, default=5000, help="echo round trips measured")
    ap.add_argument("--warmup-count", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=5.0, help="per connect/handshake/read")
    ap.add_argument("--level-timeout", type=float, default=60.0, help="idle: per level")
    a = ap.parse_args()
    if a.measure in ("sessions", "idle"):
        from gevent import monkey

        monkey.patch_all()
        raise_nofile()
    if a.measure == "idle":
        idle(a)
        return 0
    result = {"download": download, "upload": upload, "echo": echo, "sessions": sessions}[
        a.measure](a)
    emit(result)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (OSError, SessionError) as exc:
        emit({"error": describe(exc)})
        raise SystemExit(1) from None
