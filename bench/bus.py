"""check_token throughput and latency on the bus, against a real consoleauth process.

    uv run python bench/bus.py [--clients 1,10,100] [--seconds 3] [--processes 2] [--json]
                               [--profile]

Starts consoleauth (memory store) on a free loopback port, authorizes one token, then for
each concurrency level runs that many concurrent BusClient callers (greenlets spread over
--processes client processes) calling check_token for --seconds, and prints checks/s and
p50/p99/max latency. Target (issue 3): >= 20 000 checks/s and p99 <= 1 ms at 10 clients.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(endpoint: str, token: str, clients: int, seconds: float) -> None:
    """One client process: ``clients`` greenlets calling check_token; prints latencies."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from console_common.bus import BusClient

    client = BusClient([endpoint], timeout=5.0)
    lat: list[float] = []
    start_at = time.perf_counter() + 0.3  # let every process connect first
    stop_at = start_at + seconds

    def loop() -> None:
        check, now = client.check_token, time.perf_counter
        check(token)  # connect outside the measured window
        gevent.sleep(max(0.0, start_at - now()))
        while (t0 := now()) < stop_at:
            check(token)
            lat.append(now() - t0)

    gevent.joinall([gevent.spawn(loop) for _ in range(clients)], raise_error=True)
    json.dump(lat, sys.stdout)


def measure(endpoint: str, token: str, clients: int, seconds: float, processes: int,
            profile_pid: int | None = None) -> dict:
    procs = max(1, min(processes, clients))
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [subprocess.Popen([sys.executable, __file__, "--worker", endpoint, token, str(n),
                                 str(seconds)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
               for n in share]
    profilers = []
    if profile_pid is not None:  # consoleauth and the first client process, in the window
        import profiles

        time.sleep(0.4)
        profilers = [profiles.record(profile_pid, seconds - 0.2, f"bus-{clients}-consoleauth"),
                     profiles.record(workers[0].pid, seconds - 0.2, f"bus-{clients}-client")]
    lat: list[float] = []
    for w in workers:
        out, _ = w.communicate(timeout=seconds + 60)
        if w.returncode != 0:
            raise RuntimeError(f"bench worker failed with exit code {w.returncode}")
        lat += json.loads(out)
    for profiler in profilers:
        profiler.wait(timeout=30)
    lat.sort()
    pick = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3
    return {"clients": clients, "processes": procs, "calls": len(lat),
            "checks_per_s": len(lat) / seconds, "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "max_ms": lat[-1] * 1e3}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, endpoint, token, clients, seconds = sys.argv
        _worker(endpoint, token, int(clients), float(seconds))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,10,100")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--endpoint", help="use a running consoleauth instead of starting one")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy consoleauth and a client process (bench/results/profiles/)")
    args = ap.parse_args()

    proc = None
    endpoint = args.endpoint
    if endpoint is None:
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        proc = subprocess.Popen([sys.executable, "-m", "consoleauth.cli", "--consoleauth-listen",
                                 endpoint, "--token-store", "memory", "--log-format", "json",
                                 "--log-level", "warning"], stdin=subprocess.DEVNULL)
    try:
        from console_common.bus import BusClient, BusUnavailable

        with BusClient([endpoint], timeout=1.0) as admin:
            deadline = time.monotonic() + 15
            while True:
                try:
                    admin.call("ping")
                    break
                except BusUnavailable:
                    if time.monotonic() > deadline:
                        raise
            token = admin.call("authorize_console", console_type="novnc", host="127.0.0.1",
                               port=5900, instance_uuid="bench")["token"]
        if args.profile and proc is None:
            ap.error("--profile needs the consoleauth this script starts (no --endpoint)")
        rows = [measure(endpoint, token, int(n), args.seconds, args.processes,
                        proc.pid if args.profile and proc else None)
                for n in args.clients.split(",")]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    if args.profile:
        import profiles

        print(f"profiles: {profiles.write_summary()}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"check_token on {os.cpu_count()} cores, {args.seconds:g}s per level")
        print("| clients | checks/s | p50 ms | p99 ms | max ms |")
        print("|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['clients']} | {r['checks_per_s']:.0f} | {r['p50_ms']:.3f} | "
                  f"{r['p99_ms']:.3f} | {r['max_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
