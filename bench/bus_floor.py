"""The least a Python bus server can do for check_token: a reference for consoleauth.

    python bench/bus_floor.py ENDPOINT TOKEN [--redis-url redis://127.0.0.1:PORT/0]
                              [--pipelined | --green]

``bench/bus.py --server floor`` (or ``floor-pipelined``, ``floor-green``) runs it in place of consoleauth,
so the same callers measure it. One thread, no gevent, plain pyzmq: wait for the ROUTER
socket, take every request already queued (at most 64, "a wave"), look their tokens up (a
dict, or one ``MGET`` on one TCP socket to Redis, read with consoleauth's RESP parser) and
answer each. Per request it does only what any server must: decode the JSON, hash the
token, encode the reply. No validation, logging, metrics, deadlines or error handling:
what consoleauth costs above this is our own code and gevent; what this costs is Python,
pyzmq, libzmq, Redis and the machine.

Serial (default): a wave's MGET is sent and its reply awaited (a blocking ``recv``) before
the next wave is read. ``--pipelined``: one ``zmq.Poller`` over both sockets, a wave's MGET
sent as soon as the wave is read, replies matched to waves in order (what consoleauth's
Redis link does, without gevent). ``--green``: the serial loop through gevent's hub
(zmq.green, monkey-patched sockets): what waiting the gevent way costs over blocking.

It serves only ``check_token`` from plain REQ callers (bus.py ``--client req``) and knows
the one TOKEN it is given (stored in Redis at start when it uses Redis).
"""

from __future__ import annotations

import sys

GREEN = "--green" in sys.argv  # decided before zmq and socket are imported
if GREEN:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
from collections import deque  # noqa: E402
from collections.abc import Callable  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import orjson  # noqa: E402

if GREEN:
    import zmq.green as zmq  # the same calls, each wait a switch to gevent's hub
else:
    import zmq

from console_common.proto.tokens import token_hash  # noqa: E402
from consoleauth.stores.resp import NEED, RespParser, encode, mget  # noqa: E402

WAVE = 64
KEY = b"console:token:"
INVALID = b'{"v":1,"ok":false,"error":{"type":"InvalidToken","message":"invalid token"}}'


def _record(token_hash: str) -> bytes:
    # The shape of a real record (consoleauth's redis store keeps an array of its fields).
    now = time.time()
    return orjson.dumps([token_hash, "novnc", "127.0.0.1", 5900, "bench", "", now, now + 3600,
                         None, None])


def _reply(raw: bytes | None) -> bytes:
    return b'{"v":1,"ok":true,"result":' + raw + b"}" if raw is not None else INVALID


def _key(token: str) -> bytes:
    return KEY + token_hash(token).encode()


def _keys(wave: list[list[bytes]]) -> list[bytes]:
    return [_key(orjson.loads(m[-1])["args"]["token"]) for m in wave]


def _read_wave(sock: zmq.Socket, first: list[bytes] | None = None) -> list[list[bytes]]:
    wave = [first] if first is not None else []
    try:
        while len(wave) < WAVE:
            wave.append(sock.recv_multipart(zmq.NOBLOCK))
    except zmq.Again:
        pass
    return wave


class Redis:
    """One TCP connection; ``ask`` writes and waits for one reply (blocking)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = RespParser()

    def ask(self, payload: bytes) -> object:
        self.sock.sendall(payload)
        while (reply := self.parser.next()) is NEED:
            self.read()
        return reply

    def read(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise SystemExit("bus_floor: Redis closed the connection")
        self.parser.feed(data)


def serve_serial(sock: zmq.Socket, lookup: Callable[[list[bytes]], list]) -> None:
    send = sock.send_multipart
    while True:
        wave = _read_wave(sock, sock.recv_multipart())
        for message, raw in zip(wave, lookup(_keys(wave)), strict=True):
            send([*message[:-1], _reply(raw)])


def serve_pipelined(sock: zmq.Socket, redis: Redis) -> None:
    send = sock.send_multipart
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(redis.sock, zmq.POLLIN)
    waiting: deque[list[list[bytes]]] = deque()  # waves whose MGET is out, in order
    redis_fd = redis.sock.fileno()
    while True:
        for ready, _ in poller.poll():
            if ready == redis_fd:
                redis.read()
                while (values := redis.parser.next()) is not NEED:
                    for message, raw in zip(waiting.popleft(), values, strict=True):
                        send([*message[:-1], _reply(raw)])
            elif wave := _read_wave(sock):
                waiting.append(wave)
                redis.sock.sendall(mget(_keys(wave)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("token")
    ap.add_argument("--redis-url")
    ap.add_argument("--pipelined", action="store_true", help="overlap waves (needs --redis-url)")
    ap.add_argument("--green", action="store_true",
                    help="wait through gevent's hub (zmq.green, gevent sockets)")
    args = ap.parse_args()
    if args.pipelined and not args.redis_url:
        ap.error("--pipelined overlaps Redis round trips: it needs --redis-url")
    if args.pipelined and args.green:
        ap.error("--green runs the serial loop (waves in turn)")
    key, record = _key(args.token), _record(token_hash(args.token))
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(args.endpoint)
    if args.redis_url:
        redis = Redis(args.redis_url)
        redis.ask(encode("SET", key, record, "PX", 3_600_000))
        if args.pipelined:
            serve_pipelined(sock, redis)
        serve_serial(sock, lambda keys: redis.ask(mget(keys)))  # type: ignore[arg-type]
    table = {key: record}
    serve_serial(sock, lambda keys: [table.get(k) for k in keys])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
