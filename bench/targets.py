"""Benchmark targets: the servers behind the proxies, in a process of their own.

    python bench/targets.py            # prints {"stream": P, "sink": P, "echo": P, "hold": P}

- ``stream``: a VNC-like server that pushes framebuffer updates as fast as the socket takes
  them: one prebuilt 64 KiB update (RFB FramebufferUpdate header, one raw rectangle) sent
  with ``sendall`` in a tight loop, a thread per connection (``sendall`` runs in C with the
  GIL released, so the server costs almost nothing per byte).
- ``sink``: reads and discards (``recv_into`` one preallocated buffer), a thread per
  connection.
- ``echo``: sends back what it reads (TCP_NODELAY), a thread per connection.
- ``hold``: one thread and an epoll loop for thousands of connections: greets each with
  the 12-byte RFB version (``RFB 003.008\\n``), discards whatever comes, closes on EOF.
  Used for new sessions per second and for idle sessions.

Everything is loopback only. The process exits when its stdin closes (the driver's end)
or on SIGTERM/SIGINT; every socket is closed with it.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import threading

UPDATE_SIZE = 64 << 10
GREETING = b"RFB 003.008\n"


def framebuffer_update(size: int = UPDATE_SIZE) -> bytes:
    """One RFB FramebufferUpdate of ``size`` bytes: one raw rectangle of 32-bit pixels."""
    pixels = (size - 16) // 4
    width = 390
    height = pixels // width
    head = bytes((0, 0)) + (1).to_bytes(2, "big")  # message type 0, padding, 1 rectangle
    rect = b"".join(v.to_bytes(2, "big") for v in (0, 0, width, height)) + (0).to_bytes(4, "big")
    body = os.urandom(width * height * 4)
    update = head + rect + body
    return update + os.urandom(size - len(update))  # pad to exactly size (trailing bytes)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listener(backlog: int = 4096) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(backlog)
    return s


def _serve_threads(lsock: socket.socket, handler) -> None:
    while True:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return  # listener closed: shutting down
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_guard, args=(handler, conn), daemon=True).start()


def _guard(handler, conn: socket.socket) -> None:
    try:
        handler(conn)
    except OSError:
        pass  # the client went away: that is how every benchmark connection ends
    finally:
        conn.close()


def stream(conn: socket.socket, update: bytes) -> None:
    sendall = conn.sendall
    while True:
        sendall(update)


def sink(conn: socket.socket) -> None:
    buf = bytearray(1 << 20)
    recv_into = conn.recv_into
    while recv_into(buf):
        pass


def echo(conn: socket.socket) -> None:
    recv, sendall = conn.recv, conn.sendall
    while data := recv(65536):
        sendall(data)


def hold(lsock: socket.socket) -> None:
    """Accept, greet, keep; discard input; close on EOF or error. One epoll, one thread."""
    lsock.setblocking(False)
    ep = select.epoll()
    ep.register(lsock.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    lfd = lsock.fileno()
    while True:
        for fd, _ in ep.poll(1.0):
            if fd == lfd:
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    except OSError:
                        return
                    conn.setblocking(False)
                    try:
                        conn.send(GREETING)  # 12 bytes always fit a fresh socket buffer
                    except OSError:
                        conn.close()
                        continue
                    conns[conn.fileno()] = conn
                    ep.register(conn.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
                continue
            conn = conns.get(fd)
            if conn is None:
                continue
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                ep.unregister(fd)
                del conns[fd]
                conn.close()


def main() -> int:
    raise_nofile()
    update = framebuffer_update()
    socks = {name: listener() for name in ("stream", "sink", "echo", "hold")}
    threading.Thread(target=_serve_threads, args=(socks["stream"], lambda c: stream(c, update)),
                     daemon=True).start()
    threading.Thread(target=_serve_threads, args=(socks["sink"], sink), daemon=True).start()
    threading.Thread(target=_serve_threads, args=(socks["echo"], echo), daemon=True).start()
    threading.Thread(target=hold, args=(socks["hold"],), daemon=True).start()
    print(json.dumps({name: s.getsockname()[1] for name, s in socks.items()}), flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())

    def watch_stdin() -> None:
        try:  # os.read: no buffered-reader lock for a daemon thread to hold at exit
            while os.read(0, 4096):
                pass
        finally:
            done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not done.wait(1.0):
        pass
    for s in socks.values():
        s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
