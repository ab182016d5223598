"""check_token throughput and latency on the bus, against real consoleauth processes.

    uv run python bench/bus.py [--clients 1,10,100] [--seconds 3] [--processes 1] [--json]
                               [--store memory|sqlite|redis|all] [--client bus|req|both]
                               [--replicas N] [--profile] [--cpu]
                               [--server consoleauth,floor,floor-pipelined,floor-green]

Starts consoleauth (``--store``, memory by default; ``redis`` starts its own
``redis-server`` on a free loopback port; ``all`` measures the three stores one after the
other) on a free loopback port, authorizes one token, then for each concurrency level runs
that many concurrent callers for --seconds and prints checks/s and p50/p99/max latency.

Callers (``--client``), spread over ``--processes`` client processes (default 1): ``bus`` is
the proxies' BusClient (greenlets; concurrent checks are coalesced into check_tokens
messages); ``req`` is one plain REQ socket per caller sending check_token and waiting for
each reply, the way a simple client talks (one non-gevent poll loop per client process). ``--replicas 2`` runs
two consoleauth processes on one store (redis) and spreads the callers over both.
``--server`` also (or instead) measures bench/bus_floor.py, the least a Python server does
for the same plain REQ callers (serial blocking, pipelined, or serial through gevent's hub):
what consoleauth costs above it is ours; what it costs is Python, pyzmq, Redis and the VM.
Target (issues 3 and 15): >= 20 000 checks/s and p99 <= 1 ms at 10 clients, every store.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STORES = ("memory", "sqlite", "redis")
# --server: consoleauth, or bench/bus_floor.py (the least a Python server does): its
# arguments, and the stores it can serve from
FLOORS = {"floor": ([], ("memory", "redis")), "floor-pipelined": (["--pipelined"], ("redis",)),
          "floor-green": (["--green"], ("memory", "redis"))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_bus(endpoints: list[str], token: str, clients: int, seconds: float) -> list[float]:
    """``clients`` greenlets sharing the proxies' BusClient, calling check_token."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from console_common.net.bus import BusClient

    client = BusClient(endpoints, timeout=5.0)
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
    return lat


def _worker_req(endpoints: list[str], token: str, clients: int, seconds: float) -> list[float]:
    """``clients`` plain REQ sockets, one request each in flight, served by one poll loop."""
    import zmq

    ctx = zmq.Context()
    body = json.dumps({"v": 1, "method": "check_token", "args": {"token": token}}).encode()
    socks = []
    for i in range(clients):
        s = ctx.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(endpoints[i % len(endpoints)])
        socks.append(s)
    for s in socks:  # connect and warm up outside the measured window
        s.send(body)
        if not s.poll(5000):
            raise SystemExit("bench worker: no reply to the warm-up check")
        s.recv()
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    now = time.perf_counter
    stop_at = now() + seconds
    sent_at = {}
    lat: list[float] = []
    for s in socks:
        sent_at[s] = now()
        s.send(body)
    while sent_at:
        events = poller.poll(5000)
        if not events:
            raise SystemExit(f"bench worker: {len(sent_at)} checks unanswered for 5 s")
        for s, _ in events:
            reply = s.recv()
            t = now()
            lat.append(t - sent_at.pop(s))
            if b'"ok":true' not in reply:
                raise SystemExit(f"bench worker: check failed: {reply[:200]!r}")
            if t < stop_at:
                sent_at[s] = t
                s.send(body)
    ctx.destroy(linger=0)
    return lat


def measure(endpoints: list[str], token: str, clients: int, seconds: float, processes: int,
            kind: str, profile_pid: int | None = None,
            cpu_of: dict[int, str] | None = None) -> dict:
    """One concurrency level; ``cpu_of`` (pid -> role): also CPU per check by thread of
    those processes and the clients, over the middle half of the window."""
    procs = max(1, min(processes, clients))
    share = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    workers = [subprocess.Popen([sys.executable, __file__, "--worker", kind, ",".join(endpoints),
                                 token, str(n), str(seconds)],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
               for n in share]
    profilers = []
    if profile_pid is not None:  # consoleauth and the first client process, in the window
        import profiles

        time.sleep(0.4)
        profilers = [profiles.record(profile_pid, seconds - 0.2, f"bus-{clients}-consoleauth"),
                     profiles.record(workers[0].pid, seconds - 0.2, f"bus-{clients}-client")]
    if cpu_of is not None:
        import threadcpu  # bench/threadcpu.py

        pids = {**cpu_of, **{w.pid: "client" for w in workers}}
        time.sleep(0.5 + seconds / 4)  # past start-up and warm-up, into the window
        before, t0 = threadcpu.snapshot(pids), time.perf_counter()
        time.sleep(seconds / 2)
        after, t1 = threadcpu.snapshot(pids), time.perf_counter()
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
    row = {"clients": clients, "processes": procs, "calls": len(lat),
           "checks_per_s": len(lat) / seconds, "p50_ms": pick(0.50), "p99_ms": pick(0.99),
           "max_ms": lat[-1] * 1e3}
    if cpu_of is not None:
        row["cpu_per_check"] = threadcpu.per_event(before, after,
                                                   row["checks_per_s"] * (t1 - t0))
    return row


def ping_with_tokens(endpoint: str, tokens: int) -> dict:
    """Fill the store with ``tokens`` live tokens (500 authorizations in flight), then time
    200 pings one after another: ping counts tokens, so it must not scan the store."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def request(method: str, args: dict, rid: int) -> None:
        sock.send_multipart([str(rid).encode(), b"", json.dumps(
            {"v": 1, "id": str(rid), "method": method, "args": args}).encode()])

    t0 = time.perf_counter()
    sent = answered = 0
    while answered < tokens:
        while sent < tokens and sent - answered < 500:
            request("authorize_console", {"console_type": "novnc", "host": "127.0.0.1",
                                          "port": 5900, "instance_uuid": f"fill-{sent}"}, sent)
            sent += 1
        if not sock.poll(10000):
            raise RuntimeError(f"filling the store: no reply after {answered} of {tokens}")
        _, _, reply = sock.recv_multipart()
        if b'"ok":true' not in reply:
            raise RuntimeError(f"filling the store: {reply[:200]!r}")
        answered += 1
    fill_s = time.perf_counter() - t0
    lat = []
    count = None
    for i in range(200):
        t = time.perf_counter()
        request("ping", {}, i)
        if not sock.poll(10000):
            raise RuntimeError("ping: no reply")
        count = json.loads(sock.recv_multipart()[2])["result"]["tokens"]
        lat.append(time.perf_counter() - t)
    ctx.destroy(linger=0)
    lat.sort()
    return {"tokens": count, "fill_s": fill_s, "ping_p50_ms": lat[100] * 1e3,
            "ping_p99_ms": lat[198] * 1e3, "ping_max_ms": lat[-1] * 1e3}


class Cluster:
    """consoleauth replicas on one store, and the store's own redis-server if it needs one."""

    def __init__(self, store: str, replicas: int, server: str = "consoleauth") -> None:
        self.store = store
        self.server = server
        self.procs: list[subprocess.Popen] = []
        self.state = tempfile.mkdtemp(prefix="bench-bus-")
        store_args: list[str] = []  # where the server finds its store
        if store == "redis":
            if not shutil.which("redis-server"):
                raise SystemExit("bench/bus.py: --store redis needs redis-server "
                                 "(apt-get install redis-server; make system does)")
            port = free_port()
            self.procs.append(subprocess.Popen(
                ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", self.state], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL))
            store_args = ["--redis-url", f"redis://127.0.0.1:{port}/0"]
            _wait_tcp(port)
        elif replicas > 1:
            raise SystemExit("bench/bus.py: --replicas > 1 needs a shared store (--store redis)")
        self.endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(replicas)]
        if server in FLOORS:  # bench/bus_floor.py knows one token, made here
            import secrets

            self.floor_token = secrets.token_urlsafe(32)
            self.consoleauths = [subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("bus_floor.py")), ep,
                 self.floor_token, *store_args, *FLOORS[server][0]], stdin=subprocess.DEVNULL)
                for ep in self.endpoints]
            self.procs += self.consoleauths
            return
        self.consoleauths = [subprocess.Popen(
            [sys.executable, "-m", "consoleauth.cli", "--consoleauth-listen", ep, "--token-store",
             store, "--consoleauth-events-listen", f"tcp://127.0.0.1:{free_port()}",
             "--log-format", "json", "--log-level", "warning", "--state-dir", self.state,
             *store_args],
            stdin=subprocess.DEVNULL) for ep in self.endpoints]
        self.procs += self.consoleauths

    def roles(self) -> dict[int, str]:
        """pid -> role of the processes this cluster runs (for --cpu)."""
        return {p.pid: self.server if p in self.consoleauths else "redis" for p in self.procs}

    def token(self) -> str:
        if self.server in FLOORS:  # it answers only check_token (the warm-up waits for it)
            return self.floor_token
        from console_common.net.bus import BusClient
        from console_common.proto.bus import BusUnavailable

        for ep in self.endpoints:
            with BusClient([ep], timeout=1.0) as admin:
                deadline = time.monotonic() + 15
                while True:
                    try:
                        admin.call("ping")
                        break
                    except BusUnavailable:
                        if time.monotonic() > deadline:
                            raise
        with BusClient(self.endpoints[:1], timeout=2.0) as admin:
            return admin.call("authorize_console", console_type="novnc", host="127.0.0.1",
                              port=5900, instance_uuid="bench")["token"]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.state, ignore_errors=True)


def _wait_tcp(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, kind, endpoints, token, clients, seconds = sys.argv
        fn = _worker_req if kind == "req" else _worker_bus
        json.dump(fn(endpoints.split(","), token, int(clients), float(seconds)), sys.stdout)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,10,100")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--store", default="memory", choices=[*STORES, "all"])
    ap.add_argument("--client", default="bus", choices=["bus", "req", "both"])
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--server", default="consoleauth",
                    help="comma-separated: consoleauth, floor, floor-pipelined, floor-green "
                         "(bench/bus_floor.py, the least a Python bus server does: memory or "
                         "redis, req callers only)")
    ap.add_argument("--ping-tokens", type=int, default=0,
                    help="then fill the store with N tokens and time ping (no scan)")
    ap.add_argument("--endpoint", help="use a running consoleauth instead of starting one")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy consoleauth and a client process (bench/results/profiles/)")
    ap.add_argument("--cpu", action="store_true",
                    help="also CPU µs and sleeps per check by thread (consoleauth, redis-server, "
                         "clients), from /proc in the middle of each window")
    args = ap.parse_args()
    if (args.profile or args.cpu) and args.endpoint:
        ap.error("--profile and --cpu need the consoleauth this script starts (no --endpoint)")
    stores = STORES if args.store == "all" else (args.store,)
    kinds = ("bus", "req") if args.client == "both" else (args.client,)
    servers = args.server.split(",")
    if unknown := set(servers) - {"consoleauth", *FLOORS}:
        ap.error(f"--server: unknown {', '.join(sorted(unknown))}")
    if set(servers) & set(FLOORS) and (args.endpoint or args.ping_tokens or args.replicas > 1):
        ap.error("--server floor*: one floor server this script starts, check_token only")
    rows: list[dict] = []
    pings: list[dict] = []
    for store, server in [(st, sv) for st in stores for sv in servers]:
        served = [k for k in kinds if k == "req"] if server in FLOORS else kinds
        if not served or (server in FLOORS and store not in FLOORS[server][1]):
            continue  # a floor serves plain REQ callers, from the stores it has
        cluster = None if args.endpoint else Cluster(store, args.replicas, server)
        try:
            if cluster is None:
                from console_common.net.bus import BusClient

                endpoints = [args.endpoint]
                with BusClient(endpoints, timeout=2.0) as admin:
                    token = admin.call("authorize_console", console_type="novnc",
                                       host="127.0.0.1", port=5900, instance_uuid="bench")["token"]
            else:
                endpoints, token = cluster.endpoints, cluster.token()
            for kind in served:
                for n in args.clients.split(","):
                    pid = cluster.consoleauths[0].pid if args.profile and cluster else None
                    cpu_of = cluster.roles() if args.cpu and cluster else None
                    row = measure(endpoints, token, int(n), args.seconds, args.processes, kind,
                                  pid, cpu_of)
                    label = store if cluster else "running"
                    rows.append({"store": label if server == "consoleauth" else f"{label} ({server})",
                                 "client": kind, "replicas": len(endpoints), **row})
            if args.ping_tokens:
                pings.append({"store": store, **ping_with_tokens(endpoints[0], args.ping_tokens)})
        finally:
            if cluster is not None:
                cluster.stop()
    if args.profile:
        import profiles

        print(f"profiles: {profiles.write_summary()}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows + pings if pings else rows, indent=2))
    else:
        import machine  # bench/machine.py

        print(f"check_token on {machine.describe()[0]}; idle vCPUs: {machine.idle_policy()}; "
              f"{args.seconds:g}s per level")
        print("| store | consoleauths | client | clients | checks/s | p50 ms | p99 ms | max ms |")
        print("|---|---:|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['store']} | {r['replicas']} | {r['client']} | {r['clients']} | "
                  f"{r['checks_per_s']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                  f"{r['max_ms']:.2f} |")
        for r in rows:
            if "cpu_per_check" in r:
                print(f"CPU per check by thread ({r['store']}, {r['client']}, {r['clients']} "
                      f"clients; sleeps per check in brackets): " + ", ".join(
                          f"{label} {v['us']} µs ({v['sleeps']})"
                          for label, v in r["cpu_per_check"].items()))
        for p in pings:
            print(f"ping with {p['tokens']} live tokens ({p['store']}, filled in "
                  f"{p['fill_s']:.1f}s): p50 {p['ping_p50_ms']:.3f} ms, p99 "
                  f"{p['ping_p99_ms']:.3f} ms, max {p['ping_max_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
