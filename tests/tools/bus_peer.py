"""A misbehaving bus peer, as a real process on a real ZeroMQ socket, for fault tests.

    python tests/tools/bus_peer.py ENDPOINT slow-compute --delay 30
    python tests/tools/bus_peer.py ENDPOINT garbage

``slow-compute``: a compute host's control endpoint whose ``validate_console_port``
answers ``valid`` after ``--delay`` seconds (0: at once); it prints one line
``validate <instance_uuid>`` per call, so a test can count the calls.
``garbage``: answers every request with bytes that are not a bus message (as a broken or
foreign service on consoleauth's port would).
"""

from __future__ import annotations

import argparse
import sys

import gevent
import zmq


def slow_compute(endpoint: str, delay: float) -> None:
    from console_common.net.bus import BusServer

    def validate(args: dict) -> dict:
        print(f"validate {args['instance_uuid']}", flush=True)
        gevent.sleep(delay)
        return {"valid": True}

    server = BusServer(endpoint, {"validate_console_port": validate,
                                  "ping": lambda args: {"service": "slow-compute",
                                                        "version": "0"}},
                       handler_timeout=3600)
    server.start()
    print("ready", flush=True)
    server.wait()


def garbage(endpoint: str) -> None:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(endpoint)
    print("ready", flush=True)
    while True:
        frames = sock.recv_multipart()
        split = frames.index(b"", 1) if b"" in frames[1:] else len(frames) - 1
        sock.send_multipart([*frames[:split + 1], b"\x00 not a bus message"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("mode", choices=["slow-compute", "garbage"])
    ap.add_argument("--delay", type=float, default=30.0)
    args = ap.parse_args()
    if args.mode == "slow-compute":
        slow_compute(args.endpoint, args.delay)
    else:
        garbage(args.endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
