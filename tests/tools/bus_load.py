"""Load on consoleauth's bus from one process: many requests in flight, every reply counted.

    python tests/tools/bus_load.py ENDPOINT --requests 3000 --inflight 250 \
        [--mix authorize,check,revoke] [--timeout 20] [--req-clients 0] [--seconds S]

Keeps ``--inflight`` requests outstanding on one DEALER socket (the way the proxies' bus
client multiplexes) until ``--requests`` were sent, methods taken in turn from ``--mix``;
``--req-clients N`` adds N plain REQ sockets sending one request at a time (the way a
compute host talks). Checks ask for tokens this process authorized (live ones) and random
ones (invalid). Prints one JSON object: sent, answered, ok, and errors by type;
``unanswered`` counts requests with no reply within ``--timeout`` seconds. With
``--seconds`` it keeps sending for that long instead (``--requests`` is then a cap). Plain pyzmq, no
gevent, so the tool cannot hide a server's fault behind a client's retry.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter

import zmq


def _request(method: str, rid: str, seq: int, live: list[str]) -> bytes:
    uuid = f"load-{os.getpid()}-{seq % 97}"
    if method == "authorize":
        body = {"method": "authorize_console", "args": {
            "console_type": "novnc", "host": "127.0.0.1", "port": 5900 + seq % 50,
            "instance_uuid": uuid}}
    elif method == "check":
        token = live[seq % len(live)] if live and seq % 4 else os.urandom(24).hex()
        body = {"method": "check_token", "args": {"token": token}}
    elif method == "checks":
        tokens = [live[(seq + i) % len(live)] if live else os.urandom(24).hex() for i in range(8)]
        body = {"method": "check_tokens", "args": {"tokens": tokens}}
    elif method == "revoke":
        body = {"method": "delete_tokens_for_instance", "args": {"instance_uuid": uuid}}
    elif method == "ping":
        body = {"method": "ping", "args": {}}
    else:
        raise SystemExit(f"bus_load: unknown method in --mix: {method}")
    return json.dumps({"v": 1, "id": rid, **body}).encode()


def _account(stats: Counter, reply: bytes, live: list[str]) -> None:
    obj = json.loads(reply)
    stats["answered"] += 1
    if obj.get("ok"):
        stats["ok"] += 1
        result = obj.get("result")
        if isinstance(result, dict) and "token" in result and len(live) < 2000:
            live.append(result["token"])
    else:
        kind = obj["error"]["type"]
        # A revoked or random token is a correct answer, not a failure.
        stats["invalid" if kind == "InvalidToken" else f"error.{kind}"] += 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--inflight", type=int, default=250)
    ap.add_argument("--mix", default="authorize,check,revoke")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--req-clients", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=0.0)
    args = ap.parse_args()
    stop_at = time.monotonic() + args.seconds if args.seconds else None
    mix = itertools.cycle(args.mix.split(","))
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(args.endpoint)
    reqs = []
    for _ in range(args.req_clients):
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(args.endpoint)
        reqs.append(s)
    poller = zmq.Poller()
    poller.register(dealer, zmq.POLLIN)
    for s in reqs:
        poller.register(s, zmq.POLLIN)
    stats: Counter = Counter()
    live: list[str] = []
    pending: set[bytes] = set()
    idle_reqs = list(reqs)
    busy = 0
    sent = 0
    last_progress = time.monotonic()

    def more() -> bool:
        return sent < args.requests and (stop_at is None or time.monotonic() < stop_at)

    def next_request() -> bytes:
        nonlocal sent
        sent += 1
        return _request(next(mix), str(sent), sent, live)

    while True:
        while more() and len(pending) < args.inflight:
            rid = str(sent + 1).encode()
            dealer.send_multipart([rid, b"", next_request()])
            pending.add(rid)
        while more() and idle_reqs:
            idle_reqs.pop().send(next_request())
            busy += 1
        if not more() and not pending and not busy:
            break
        events = dict(poller.poll(100))
        if events:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > args.timeout:
            break
        if dealer in events:
            while dealer.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                rid, _, reply = dealer.recv_multipart()
                pending.discard(rid)
                _account(stats, reply, live)
        for s in reqs:
            if s in events:
                _account(stats, s.recv(), live)
                busy -= 1
                idle_reqs.append(s)
    stats["sent"] = sent
    stats["unanswered"] = len(pending) + busy
    json.dump(dict(stats), sys.stdout)
    ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
