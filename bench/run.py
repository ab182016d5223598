"""Benchmark driver: our proxies against direct TCP, socat and websockify, on this machine.

    uv run python bench/run.py                  # full: median of 3, idle ramp to 10 000
    uv run python bench/run.py --quick          # short windows, same measures (~3 min)
    uv run python bench/run.py --quick --smoke  # smallest sizes, 1 repetition (make test)
    uv run python bench/run.py --quick --measures download,echo --only xvpvncproxy
    uv run python bench/run.py --quick --measures download --record   # + recording on

It installs its baselines (Debian ``socat``; websockify + numpy from PyPI into
``bench/.venv-baselines``), starts the targets (bench/targets.py), ``consoleauth
--token-store memory``, ``novncproxy``, ``xvpvncproxy``, one websockify and one socat per
target, all on free loopback ports, then runs each measure for every system, systems
interleaved and the whole round repeated (median reported):

- download: server -> client MB/s (64 KiB framebuffer updates) and proxy CPU-s per GB;
- upload: client -> server MB/s (64 KiB masked frames for WebSocket) and CPU-s per GB;
- echo: 64-byte round trip p50/p99, and what each proxy adds over direct TCP;
- sessions: new sessions per second, 16 concurrent clients, each session a full
  handshake (our proxies: a real check_token on the bus) and the target's greeting;
- idle: sessions held by one proxy process, ramped (1k -> 5k -> 10k), RSS per session;
- bus: ``bench/bus.py --json`` (check_token/s and latency against consoleauth).

CPU is utime+stime (+ reaped children) of the proxy's whole process tree, read from
/proc before and after each measured window; RSS/PSS likewise. Prints Markdown tables
and a summary of the targets; writes bench/results/latest.json and latest.md.
Exits 1 when any measure failed to run (never because of a slow figure).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import machine  # bench/machine.py
import profiles  # bench/profiles.py

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
LOGS = RESULTS / "logs"
BASELINE_VENV = BENCH / ".venv-baselines"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
TOKEN_REFRESH = 300.0  # tokens live 600 s; a full run is longer than that
MEMORY_GUARD_KIB = 3 << 20  # stop an idle ramp when less than 3 GiB is available

# The reference figures for websockify 0.13 + numpy on this kind of machine, used
# for ratios only when websockify could not be measured in this run.
WEBSOCKIFY_REFERENCE = {"download": 1150.0, "upload": 300.0, "sessions": 300.0}


@dataclass(frozen=True)
class Profile:
    name: str
    reps: int
    seconds: float  # download/upload window
    warmup: float
    echo_count: int
    echo_warmup: int
    sess_seconds: float
    sess_warmup: float
    idle_levels: tuple[int, ...]
    idle_fork_step: int  # process-per-session systems ramp in steps this big
    idle_level_timeout: float
    bus_clients: str
    bus_seconds: float


PROFILES = {
    "full": Profile("full", 3, 5.0, 1.0, 5000, 500, 5.0, 1.0, (1000, 5000, 10000), 250, 90.0,
                    "1,10,100", 3.0),
    "quick": Profile("quick", 3, 0.8, 0.2, 1000, 100, 0.8, 0.2, (1000, 5000, 10000), 500, 40.0,
                     "10", 1.0),
    "smoke": Profile("smoke", 1, 0.3, 0.1, 50, 10, 0.5, 0.2, (50,), 50, 20.0, "10", 0.3),
}


MEASURES = ("download", "upload", "echo", "sessions", "idle", "bus")


class MeasureError(Exception):
    """A measure could not run for a system; the message says why."""


# --- /proc ----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("latin-1")
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from 'state' on (comm may hold spaces)


def tree(root: int) -> list[int]:
    """``root`` and all its descendants (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat_fields(int(name))
            if f is not None:
                children.setdefault(int(f[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def cpu_seconds(root: int) -> float:
    """utime+stime of the tree, plus what its processes collected from reaped children."""
    ticks = 0
    for pid in tree(root):
        f = _stat_fields(pid)
        if f is not None:
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def memory_kib(root: int) -> dict[str, int]:
    """RSS (VmRSS) and PSS summed over the tree, and how many processes it has."""
    rss = pss = n = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                        break
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
            n += 1
        except (OSError, ValueError):
            pass  # exited meanwhile
    return {"rss_kib": rss, "pss_kib": pss, "processes": n}


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


# --- processes ------------------------------------------------------------------------------


class Processes:
    """Everything we start, each in a process group of its own; all stopped at the end."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], *, log: bool = True, **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        with contextlib.ExitStack() as stack:
            if log:
                LOGS.mkdir(parents=True, exist_ok=True)
                out = stack.enter_context(open(LOGS / f"{name}.log", "wb"))
                kw.setdefault("stdout", out)
                kw.setdefault("stderr", subprocess.STDOUT)
            proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # the group may still hold forked children (websockify, socat): end them too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc, grace=3.0)


class Lines:
    """Line reader over a pipe with a deadline on every read."""

    def __init__(self, pipe) -> None:
        self.fd = pipe.fileno()
        self.buf = b""

    def readline(self, deadline: float) -> str | None:
        """The next line; None at EOF. Raises MeasureError past the deadline."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MeasureError("timed out waiting for the load client")
            if not select.select([self.fd], [], [], left)[0]:
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line.decode()
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MeasureError(f"{name} exited with {proc.returncode} at start "
                               f"(see {LOGS / (name + '.log')})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise MeasureError(f"{name} did not listen on {port} within {timeout:g}s")


def raise_nofile(want: int = 65536) -> int:
    """Our children inherit this: 10 000 sessions are 20 000 descriptors in a proxy."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((max(want, soft), max(want, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- baselines ------------------------------------------------------------------------------


def run_quiet(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


def ensure_socat() -> str:
    path = shutil.which("socat")
    if path is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise MeasureError("socat missing and cannot apt-get install it (not root)")
        print("installing socat (Debian)...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        ok = subprocess.run(["apt-get", "install", "-y", "-q", "socat"], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False)
        if ok.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=300, check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", "socat"], env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=False)
        path = shutil.which("socat")
        if path is None:
            raise MeasureError("apt-get install socat failed")
    return path


def socat_version(path: str) -> str:
    out = run_quiet([path, "-V"], 10).stdout
    for line in out.splitlines():
        if "socat version" in line:
            return line.split("socat version", 1)[1].split(" on ")[0].strip()
    return "unknown"


def ensure_websockify(upgrade: bool) -> tuple[Path, str, str]:
    """websockify (latest from PyPI) + numpy in bench/.venv-baselines; (exe, versions)."""
    py = BASELINE_VENV / "bin" / "python"
    exe = BASELINE_VENV / "bin" / "websockify"
    uv = shutil.which("uv")
    uv_cmd = [uv] if uv else ["bash", str(ROOT / "scripts" / "uv.sh")]
    have = exe.exists() and py.exists()
    if not have or upgrade:
        print(f"{'updating' if have else 'installing'} websockify + numpy (PyPI) "
              f"in {BASELINE_VENV.relative_to(ROOT)}...", flush=True)
        if not py.exists():
            r = run_quiet([*uv_cmd, "venv", "-q", str(BASELINE_VENV)], 300)
            if r.returncode != 0:
                raise MeasureError(f"uv venv failed: {r.stderr.strip()[-300:]}")
        r = run_quiet([*uv_cmd, "pip", "install", "-q", "--python", str(py), "-U",
                       "websockify", "numpy"], 600)
        if r.returncode != 0:
            if have:  # offline or the index is down: the installed one still measures
                print(f"  update failed, using the installed one: {r.stderr.strip()[-200:]}")
            else:
                raise MeasureError(f"installing websockify failed: {r.stderr.strip()[-300:]}")
    code = "import importlib.metadata as m; print(m.version('websockify'), m.version('numpy'))"
    r = run_quiet([str(py), "-c", code], 60)
    if r.returncode != 0:
        raise MeasureError(f"websockify baseline broken: {r.stderr.strip()[-300:]}")
    ws_version, np_version = r.stdout.split()
    return exe, ws_version, np_version


# --- the systems under test -----------------------------------------------------------------

TARGETS = ("stream", "sink", "echo", "hold")


@dataclass
class System:
    name: str
    kind: str  # tcp | ws | xvp
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)  # target -> proxy pid (tree root)
    path: Callable[[str], str] = lambda target: "/"
    ours: bool = False
    forks: bool = False  # a process per session


class Tokens:
    """A token per (console type, target), renewed before it expires; every session still
    costs the proxy a check_token on the bus."""

    def __init__(self, endpoint: str, ports: dict[str, int]) -> None:
        from console_common.net.bus import BusClient

        self.bus = BusClient([endpoint], timeout=5.0)
        self.ports = ports
        self.cache: dict[tuple[str, str], tuple[float, str]] = {}

    def get(self, console_type: str, target: str) -> str:
        got = self.cache.get((console_type, target))
        if got is None or time.monotonic() - got[0] > TOKEN_REFRESH:
            token = self.bus.call("authorize_console", console_type=console_type,
                                  host="127.0.0.1", port=self.ports[target],
                                  instance_uuid="bench")["token"]
            got = self.cache[(console_type, target)] = (time.monotonic(), token)
        return got[1]

    def wait_ready(self, timeout: float = 30.0) -> None:
        from console_common.proto.bus import BusUnavailable

        deadline = time.monotonic() + timeout
        while True:
            try:
                self.bus.call("ping")
                return
            except BusUnavailable:
                if time.monotonic() > deadline:
                    raise MeasureError("consoleauth did not answer ping") from None


class Bench:
    def __init__(self, profile: Profile, only: set[str] | None) -> None:
        self.p = profile
        self.only = only
        self.procs = Processes()
        self.systems: list[System] = []
        self.failures: list[dict] = []
        self.meta: dict = {}
        self.consoleauth_pid = 0
        self.tokens: Tokens | None = None
        self.measures: set[str] = set(MEASURES)
        self.floor = False  # --floor: also the bare gevent relay (bench/gevent_floor.py)
        self.workers = 1  # --workers: our proxies' pre-fork worker processes
        self.record_dir: str | None = None  # --record: also our proxies recording there
        self.profile = False  # --profile: py-spy our processes in each measured window
        self.profilers: list[subprocess.Popen] = []

    def fail(self, measure: str, system: str, error: str) -> None:
        self.failures.append({"measure": measure, "system": system, "error": error})
        print(f"  FAILED {measure} / {system}: {error}", flush=True)

    # --- setting up ---

    def setup(self) -> None:
        nofile = self.meta["nofile"] = raise_nofile()
        # A session costs the proxy two descriptors; without CAP_SYS_RESOURCE the hard
        # limit (often 20 000) cannot be raised, which caps one process below 10 000.
        cap = (nofile - 256) // 2  # listeners, logs, bus sockets
        self.meta["idle_levels"] = sorted({min(level, cap) for level in self.p.idle_levels})
        self.meta["idle_fd_cap"] = cap if cap < max(self.p.idle_levels) else None
        tgt = self.procs.start("targets", [sys.executable, str(BENCH / "targets.py")],
                               log=False, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=None)
        line = Lines(tgt.stdout).readline(time.monotonic() + 30)
        if not line:
            raise MeasureError("targets did not start")
        ports = {k: int(v) for k, v in json.loads(line).items()}
        self.meta["targets_pid"] = tgt.pid
        self.systems.append(System("direct", "tcp", ports))
        starting: list[tuple[str, int, subprocess.Popen]] = []

        try:
            socat = ensure_socat()
            self.meta["socat"] = socat_version(socat)
            s = System("socat", "tcp", {}, forks=True)
            for t in TARGETS:
                port = free_port()
                proc = self.procs.start(f"socat-{t}", [
                    socat, f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=4096",
                    f"TCP:127.0.0.1:{ports[t]}"])
                s.ports[t], s.pids[t] = port, proc.pid
                starting.append((f"socat-{t}", port, proc))
            self.systems.append(s)
        except MeasureError as exc:
            self.fail("setup", "socat", str(exc))

        if self.floor:
            s = System("gevent-floor", "tcp", {})
            for t in TARGETS:
                port = free_port()
                proc = self.procs.start(f"gevent-floor-{t}", [
                    sys.executable, str(BENCH / "gevent_floor.py"), str(port), str(ports[t])])
                s.ports[t], s.pids[t] = port, proc.pid
                starting.append((f"gevent-floor-{t}", port, proc))
            self.systems.append(s)

        try:
            exe, wsv, npv = ensure_websockify(upgrade=self.p.name == "full")
            self.meta["websockify"], self.meta["numpy"] = wsv, npv
            s = System("websockify", "ws", {}, path=lambda t: "/websockify", forks=True)
            for t in TARGETS:
                port = free_port()
                proc = self.procs.start(f"websockify-{t}", [
                    str(exe), f"127.0.0.1:{port}", f"127.0.0.1:{ports[t]}"])
                s.ports[t], s.pids[t] = port, proc.pid
                starting.append((f"websockify-{t}", port, proc))
            self.systems.append(s)
        except MeasureError as exc:
            self.fail("setup", "websockify", str(exc))

        bus = f"tcp://127.0.0.1:{free_port()}"
        events = f"tcp://127.0.0.1:{free_port()}"
        ca = self.procs.start("consoleauth", [str(VENV_BIN / "consoleauth"),
                                              "--consoleauth-listen", bus,
                                              "--consoleauth-events-listen", events,
                                              "--token-store", "memory", "--log-format", "json"])
        self.consoleauth_pid = ca.pid
        self.tokens = Tokens(bus, ports)
        tokens = self.tokens
        common = ["--consoleauth-url", bus, "--consoleauth-events-url", events,
                  "--log-format", "json",
                  "--workers", str(self.workers)]
        port = free_port()
        proc = self.procs.start("novncproxy", [str(VENV_BIN / "novncproxy"), *common,
                                               "--novncproxy-host", "127.0.0.1",
                                               "--novncproxy-port", str(port)])
        starting.append(("novncproxy", port, proc))
        self.systems.append(System(
            "novncproxy", "ws", dict.fromkeys(TARGETS, port), dict.fromkeys(TARGETS, proc.pid),
            path=lambda t: f"/websockify?token={tokens.get('novnc', t)}", ours=True))
        port = free_port()
        proc = self.procs.start("xvpvncproxy", [str(VENV_BIN / "xvpvncproxy"), *common,
                                                "--xvpvncproxy-host", "127.0.0.1",
                                                "--xvpvncproxy-port", str(port),
                                                "--xvpvncproxy-metrics-port", str(free_port())])
        starting.append(("xvpvncproxy", port, proc))
        self.systems.append(System(
            "xvpvncproxy", "xvp", dict.fromkeys(TARGETS, port), dict.fromkeys(TARGETS, proc.pid),
            path=lambda t: f"/console?token={tokens.get('xvpvnc', t)}", ours=True))

        if self.record_dir:  # the same proxies with session recording on
            rec = [*common, "--record-dir", self.record_dir, "--record-max-bytes", str(1 << 40)]
            for name, kind, flags, console, path in (
                    ("novncproxy", "ws", ["--novncproxy-host", "127.0.0.1",
                                          "--novncproxy-port"], "novnc", "/websockify"),
                    ("xvpvncproxy", "xvp", ["--xvpvncproxy-metrics-port", "0",
                                            "--xvpvncproxy-host", "127.0.0.1",
                                            "--xvpvncproxy-port"], "xvpvnc", "/console")):
                port = free_port()
                proc = self.procs.start(f"{name}+rec", [str(VENV_BIN / name), *rec, *flags,
                                                        str(port)])
                starting.append((f"{name}+rec", port, proc))
                self.systems.append(System(
                    f"{name}+rec", kind, dict.fromkeys(TARGETS, port),
                    dict.fromkeys(TARGETS, proc.pid), ours=True,
                    path=lambda t, c=console, p=path: f"{p}?token={tokens.get(c, t)}"))

        broken: set[str] = set()
        for name, port, proc in starting:
            try:
                wait_port(port, proc, name)
            except MeasureError as exc:
                system = name.split("-")[0]
                self.fail("setup", system, str(exc))
                broken.add(system)
        try:
            tokens.wait_ready()
        except MeasureError as exc:
            self.fail("setup", "consoleauth", str(exc))
            broken |= {"novncproxy", "xvpvncproxy", "novncproxy+rec", "xvpvncproxy+rec"}
        self.systems = [s for s in self.systems if s.name not in broken]
        if self.only:
            self.systems = [s for s in self.systems
                            if s.name in self.only or s.name in ("direct", "gevent-floor")]

    # --- running the load client ---

    def client(self, measure: str, system: System, target: str, extra: list[str],
               timeout: float, on_mark: Callable[[str], None] | None = None) -> dict:
        argv = [sys.executable, str(BENCH / "loadclient.py"), measure, "--kind", system.kind,
                "--port", str(system.ports[target]), "--path", system.path(target), *extra]
        proc = self.procs.start(f"client-{measure}", argv, log=False, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            lines, result = Lines(proc.stdout), None
            deadline = time.monotonic() + timeout
            while (line := lines.readline(deadline)) is not None:
                if line in ("start", "end"):
                    if on_mark is not None:
                        on_mark(line)
                elif line.strip():
                    result = json.loads(line)
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if result is None or "error" in result or proc.returncode != 0:
                err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                why = (result or {}).get("error") or (err[-1] if err else f"exit {proc.returncode}")
                raise MeasureError(why)
            return result
        except subprocess.TimeoutExpired:
            raise MeasureError("load client did not exit") from None
        finally:
            self.procs.stop(proc, grace=2.0)

    def cpu_watch(self, system: System, target: str) -> dict[str, int]:
        watch = {}
        if target in system.pids:
            watch["proxy"] = system.pids[target]
        if system.ours:
            watch["consoleauth"] = self.consoleauth_pid
        return watch

    def windowed(self, measure: str, system: System, target: str, extra: list[str],
                 timeout: float) -> tuple[dict, dict[str, float]]:
        """Run a client; CPU seconds per watched tree between its start and end marks."""
        watch = self.cpu_watch(system, target)
        marks: dict[str, dict[str, float]] = {}

        window = self.p.sess_seconds if measure == "sessions" else self.p.seconds

        def on_mark(mark: str) -> None:
            marks[mark] = {k: cpu_seconds(pid) for k, pid in watch.items()}
            if mark == "start" and self.profile and system.ours:
                for role, pid in watch.items():
                    self.profilers.append(profiles.record(
                        pid, window, f"{measure}-{system.name}-{role}-{len(self.profilers)}"))

        result = self.client(measure, system, target, extra, timeout, on_mark)
        end = marks.get("end") or {k: cpu_seconds(pid) for k, pid in watch.items()}
        start = marks.get("start", end)
        return result, {k: end[k] - start[k] for k in watch}

    # --- measures ---

    def throughput(self, measure: str, system: System) -> dict:
        target = "stream" if measure == "download" else "sink"
        p = self.p
        r, cpu = self.windowed(measure, system, target,
                               ["--seconds", str(p.seconds), "--warmup", str(p.warmup)],
                               timeout=p.seconds + p.warmup + 30)
        sample = {"mb_per_s": r["mb_per_s"], "bytes": r["bytes"], "seconds": r["seconds"]}
        if "proxy" in cpu:
            sample["proxy_cpu_s"] = cpu["proxy"]
            sample["cpu_s_per_gb"] = cpu["proxy"] / (r["bytes"] / 1e9) if r["bytes"] else None
            sample["proxy_cpu_util"] = cpu["proxy"] / r["seconds"]
            sample.update(memory_kib(system.pids[target]))
        return sample

    def echo(self, system: System) -> dict:
        p = self.p
        return self.client("echo", system, "echo",
                           ["--count", str(p.echo_count), "--warmup-count", str(p.echo_warmup),
                            "--size", "64"], timeout=60 + p.echo_count * 0.01)

    def sessions(self, system: System) -> dict:
        p = self.p
        r, cpu = self.windowed("sessions", system, "hold",
                               ["--seconds", str(p.sess_seconds), "--warmup", str(p.sess_warmup),
                                "--concurrency", "16"],
                               timeout=p.sess_seconds + p.sess_warmup + 40)
        if not r["sessions"] and r["errors"]:  # refused or broken, not merely slow
            raise MeasureError(f"no session completed: {r['errors']}")
        sample = dict(r)
        for k, v in cpu.items():
            sample[f"{k}_cpu_ms_per_session"] = v / r["sessions"] * 1e3 if r["sessions"] else None
        return sample

    def idle(self, system: System) -> dict:
        """Ramp held sessions through one proxy process; RSS/PSS at each step."""
        p = self.p
        pid = system.pids["hold"]
        base = memory_kib(pid)
        plan: list[int] = []
        levels = self.meta["idle_levels"]
        for level in levels:
            last = plan[-1] if plan else 0
            step = p.idle_fork_step if system.forks else level - last
            plan += list(range(last + step, level, step)) + [level]
        argv = [sys.executable, str(BENCH / "loadclient.py"), "idle", "--kind", system.kind,
                "--port", str(system.ports["hold"]), "--path", system.path("hold"),
                "--concurrency", "64" if system.forks else "100", "--timeout", "15",
                "--level-timeout", str(p.idle_level_timeout)]
        proc = self.procs.start("client-idle", argv, log=False, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rows, stopped = [], None
        try:
            lines = Lines(proc.stdout)
            for level in plan:
                if mem_available_kib() < MEMORY_GUARD_KIB:
                    stopped = f"memory guard: less than {MEMORY_GUARD_KIB >> 20} GiB available"
                    break
                proc.stdin.write(f"{level}\n".encode())
                proc.stdin.flush()
                line = lines.readline(time.monotonic() + p.idle_level_timeout + 30)
                if line is None:
                    raise MeasureError("idle client ended early: " + proc.stderr.read().decode(
                        errors="replace").strip()[-300:])
                row = json.loads(line)
                time.sleep(0.5)  # let the proxy finish setting up the last sessions
                mem = memory_kib(pid)
                alive = row["alive"]
                row.update(mem)
                row["rss_kib_per_session"] = (mem["rss_kib"] - base["rss_kib"]) / alive \
                    if alive else None
                row["pss_kib_per_session"] = (mem["pss_kib"] - base["pss_kib"]) / alive \
                    if alive else None
                rows.append(row)
                print(f"    {system.name}: {alive}/{level} sessions alive, "
                      f"RSS {mem['rss_kib'] / 1024:.0f} MiB in {mem['processes']} process(es)"
                      f"{', errors ' + json.dumps(row['errors']) if row['errors'] else ''}",
                      flush=True)
                if alive < 0.9 * level:
                    stopped = f"failed at {level}: {alive} sessions alive"
                    break
            proc.stdin.write(b"close\n")
            proc.stdin.flush()
            with contextlib.suppress(MeasureError):
                lines.readline(time.monotonic() + 30)
        except BrokenPipeError:
            raise MeasureError("idle client died: " + proc.stderr.read().decode(
                errors="replace").strip()[-300:]) from None
        finally:
            self.procs.stop(proc, grace=10.0)
        if not rows:
            raise MeasureError(stopped or "no level measured")
        best = max(rows, key=lambda r: r["alive"])
        time.sleep(1.0)  # sessions wind down before the next system ramps
        return {"base": base, "steps": rows, "stopped": stopped, "max_alive": best["alive"],
                "levels": {str(r["target"]): r for r in rows if r["target"] in levels}}

    def bus(self) -> list[dict]:
        p = self.p
        argv = [sys.executable, str(BENCH / "bus.py"), "--json", "--clients", p.bus_clients,
                "--seconds", str(p.bus_seconds)]
        n_levels = len(p.bus_clients.split(","))
        proc = self.procs.start("bus", argv, log=False, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=60 + n_levels * (p.bus_seconds + 30))
        except subprocess.TimeoutExpired:
            raise MeasureError("bench/bus.py timed out") from None
        finally:
            self.procs.stop(proc, grace=2.0)
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()
            raise MeasureError(f"bench/bus.py exit {proc.returncode}: {tail[-1] if tail else ''}")
        text = out.decode()
        start = text.find("[")  # stdout may carry other lines before the JSON
        rows, _ = json.JSONDecoder().raw_decode(text[start:])
        return rows

    # --- the run ---

    def interleaved(self, measure: str, systems: list[System],
                    fn: Callable[[System], dict]) -> dict[str, list]:
        """Each repetition runs every system once, in a rotated order."""
        samples: dict[str, list] = {s.name: [] for s in systems}
        for rep in range(self.p.reps):
            k = rep % len(systems)
            for system in systems[k:] + systems[:k]:
                try:
                    sample = fn(system)
                except MeasureError as exc:
                    self.fail(measure, system.name, str(exc))
                    sample = {"error": str(exc)}
                sample["rep"] = rep
                samples[system.name].append(sample)
        return samples

    def run(self) -> dict:
        results: dict = {}
        t0 = time.monotonic()
        phases = self.meta["phase_seconds"] = {}

        def phase(name: str) -> None:
            now = time.monotonic()
            if phases:
                last = next(reversed(phases))
                phases[last] = round(now - phases[last], 1)
            if name:
                print(f"{name}...", flush=True)
                phases[name] = now

        want = self.measures
        for measure in ("download", "upload", "echo", "sessions"):
            if measure not in want:  # skipped: empty samples, reported as not measured
                results[measure] = {s.name: [] for s in self.systems}
                continue
            phase(measure)
            fn = {"echo": self.echo, "sessions": self.sessions}.get(
                measure, lambda s, m=measure: self.throughput(m, s))
            results[measure] = self.interleaved(measure, self.systems, fn)
        results["idle"] = {}
        if "idle" in want:
            phase("idle")
            for system in self.systems:
                if system.name in ("direct", "socat"):
                    continue  # no proxy process of interest (socat forks per session)
                try:
                    results["idle"][system.name] = self.idle(system)
                except MeasureError as exc:
                    self.fail("idle", system.name, str(exc))
                    results["idle"][system.name] = {"error": str(exc)}
        results["bus"] = []
        if "bus" in want:
            phase("bus")
            try:
                results["bus"] = self.bus()
            except MeasureError as exc:
                self.fail("bus", "consoleauth", str(exc))
        phase("")
        self.meta["measure_seconds"] = round(time.monotonic() - t0, 1)
        return results


# --- summarising ----------------------------------------------------------------------------


def median_of(samples: list[dict], key: str) -> float | None:
    vals = [s[key] for s in samples if s.get(key) is not None and "error" not in s]
    return statistics.median(vals) if vals else None


def summarise(results: dict, systems: list[str]) -> dict:
    s: dict = {}
    for m in ("download", "upload"):
        s[m] = {name: {"mb_per_s": median_of(smp, "mb_per_s"),
                       "cpu_s_per_gb": median_of(smp, "cpu_s_per_gb"),
                       "proxy_cpu_util": median_of(smp, "proxy_cpu_util"),
                       "rss_kib": median_of(smp, "rss_kib"),
                       "runs": sum("error" not in x for x in smp)}
                for name, smp in results[m].items()}
    direct = {x["rep"]: x for x in results["echo"].get("direct", []) if "error" not in x}
    s["echo"] = {}
    for name, smp in results["echo"].items():
        added50 = [x["p50_us"] - direct[x["rep"]]["p50_us"] for x in smp
                   if "error" not in x and x["rep"] in direct]
        added99 = [x["p99_us"] - direct[x["rep"]]["p99_us"] for x in smp
                   if "error" not in x and x["rep"] in direct]
        s["echo"][name] = {"p50_us": median_of(smp, "p50_us"), "p99_us": median_of(smp, "p99_us"),
                           "added_p50_us": statistics.median(added50) if added50 else None,
                           "added_p99_us": statistics.median(added99) if added99 else None,
                           "runs": sum("error" not in x for x in smp)}
    s["sessions"] = {name: {"per_s": median_of(smp, "per_s"),
                            "setup_p50_ms": median_of(smp, "setup_p50_ms"),
                            "setup_p99_ms": median_of(smp, "setup_p99_ms"),
                            "proxy_cpu_ms_per_session": median_of(smp, "proxy_cpu_ms_per_session"),
                            "consoleauth_cpu_ms_per_session":
                                median_of(smp, "consoleauth_cpu_ms_per_session"),
                            "errors": sum(sum(x.get("errors", {}).values()) for x in smp),
                            "runs": sum("error" not in x for x in smp)}
                     for name, smp in results["sessions"].items()}
    return s


def targets(summary: dict, results: dict, meta: dict) -> list[dict]:
    rows: list[dict] = []

    def ref(measure: str, key: str) -> tuple[float | None, str]:
        v = summary[measure].get("websockify", {}).get(key)
        if v is not None:
            return v, "measured"
        return WEBSOCKIFY_REFERENCE.get(measure), "issue's reference"

    def add(goal: str, system: str, value: float | None, unit: str, target: str,
            met: bool | None, ratio: float | None = None, note: str = "") -> None:
        rows.append({"goal": goal, "system": system, "value": value, "unit": unit,
                     "target": target, "vs_websockify": ratio,
                     "status": "NOT MEASURED" if met is None else ("MET" if met else "NOT MET"),
                     "note": note})

    ours = [n for n in ("novncproxy", "xvpvncproxy") if n in summary["download"]]
    for measure, factor, cpu_cap in (("download", 1.5, 0.5), ("upload", 3.0, 1.0)):
        base, src = ref(measure, "mb_per_s")
        for name in ours:
            v = summary[measure][name]["mb_per_s"]
            ratio = v / base if v is not None and base else None
            add(f"{measure} MB/s", name, v, "MB/s", f">= {factor:g}x websockify",
                None if ratio is None else ratio >= factor, ratio,
                "" if src == "measured" else f"websockify: {src}")
            c = summary[measure][name]["cpu_s_per_gb"]
            wc = summary[measure].get("websockify", {}).get("cpu_s_per_gb")
            add(f"{measure} CPU", name, c, "CPU-s/GB", f"<= {cpu_cap:g}",
                None if c is None else c <= cpu_cap, c / wc if c is not None and wc else None)
    socat = summary["echo"].get("socat", {}).get("added_p50_us")
    wsecho = summary["echo"].get("websockify", {}).get("added_p50_us")
    for name in ours:
        v = summary["echo"][name]["added_p50_us"]
        met = None if v is None or socat is None else v <= 1.5 * max(socat, 1.0)
        add("added RTT p50", name, v, "µs",
            "<= 1.5x socat" + (f" ({1.5 * socat:.0f} µs)" if socat is not None else ""),
            met, v / wsecho if v is not None and wsecho else None)
    base, src = ref("sessions", "per_s")
    for name in ours:
        v = summary["sessions"][name]["per_s"]
        ratio = v / base if v is not None and base else None
        add("new sessions/s", name, v, "/s", ">= 10x websockify (with check_token)",
            None if ratio is None else ratio >= 10, ratio,
            "" if src == "measured" else f"websockify: {src}")
    cap = meta.get("idle_fd_cap")
    goal_n = min(10000, cap) if cap else 10000
    capped = (f"; fd hard limit {meta['nofile']} here caps a process at {cap} sessions"
              if cap and cap < 10000 else "")
    for name in ours:
        idle = results["idle"].get(name, {})
        row = idle.get("levels", {}).get(str(goal_n))
        ws_max = results["idle"].get("websockify", {}).get("max_alive")
        if not idle:
            add("idle sessions", name, None, "sessions", "10000 alive at <= 50 KiB each", None)
        elif row is None:
            top = max(meta.get("idle_levels") or [0])
            add("idle sessions", name, idle.get("max_alive"), "sessions",
                "10000 alive at <= 50 KiB each", None if top < goal_n else False,
                idle.get("max_alive") / ws_max if idle.get("max_alive") and ws_max else None,
                f"ramp tops at {top}" if top < goal_n else (idle.get("stopped") or
                                                            idle.get("error", "")))
        else:
            per = row["rss_kib_per_session"]
            add("idle sessions", name, per, "KiB RSS/session",
                "10000 alive at <= 50 KiB each",
                row["alive"] >= 0.995 * goal_n and per is not None and per <= 50,
                row["alive"] / ws_max if ws_max else None,
                f"{row['alive']} alive; websockify held at most {ws_max}{capped}")
    at10 = next((r for r in results.get("bus", []) if r["clients"] == 10), None)
    if at10 is None and results.get("bus"):
        at10 = results["bus"][-1]
    if at10 is not None:
        note = "" if at10["clients"] == 10 else f"at {at10['clients']} clients"
        add("check_token/s", "consoleauth", at10["checks_per_s"], "/s", ">= 20 000",
            at10["checks_per_s"] >= 20000, None, note)
        add("check_token p99", "consoleauth", at10["p99_ms"], "ms", "<= 1 ms",
            at10["p99_ms"] <= 1.0, None, note)
    return rows


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def ratio_str(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def markdown(meta: dict, summary: dict, results: dict, goals: list[dict], failures: list[dict],
             profile: Profile) -> str:
    out: list[str] = []
    w = out.append
    w(f"## Benchmark: {meta['date']} on {meta['machine']}")
    w("")
    w(f"Mode `{profile.name}`: median of {profile.reps} interleaved repetition(s); "
      f"throughput windows {profile.seconds:g} s after {profile.warmup:g} s warm-up; "
      f"websockify {meta.get('websockify', '?')} + numpy {meta.get('numpy', '?')}, "
      f"socat {meta.get('socat', '?')}, Python {meta['python']}. Load average "
      f"{meta['loadavg_start']} at start, {meta['loadavg_end']} at end "
      f"(anything else running on these {meta['cpus']} cores skews the figures). "
      f"Idle vCPUs: {meta.get('idle_policy', '?')} (see bench/machine.py).")
    w("")

    def vs(m: str, name: str, key: str) -> str:
        base = summary[m].get("websockify", {}).get(key)
        v = summary[m][name][key]
        return ratio_str(v / base) if v is not None and base else "—"

    for m, title in (("download", "Download: server → client, 64 KiB framebuffer updates"),
                     ("upload", ("Upload: client → server, 64 KiB messages (masked frames "
                                 "over WebSocket)"))):
        w(f"### {title}")
        w("")
        w("| system | MB/s | vs websockify | proxy CPU-s/GB | proxy CPU (cores) | proxy RSS MiB |")
        w("|---|---:|---:|---:|---:|---:|")
        for name, r in summary[m].items():
            w(f"| {name} | {fmt(r['mb_per_s'])} | {vs(m, name, 'mb_per_s')} | "
              f"{fmt(r['cpu_s_per_gb'], 2)} | {fmt(r['proxy_cpu_util'], 2)} | "
              f"{fmt(r['rss_kib'] / 1024 if r['rss_kib'] else None, 1)} |")
        w("")
    w("### Echo round trip, 64 bytes (added = system − direct, same repetition)")
    w("")
    w("| system | p50 µs | p99 µs | added p50 µs | added p99 µs |")
    w("|---|---:|---:|---:|---:|")
    for name, r in summary["echo"].items():
        w(f"| {name} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | {fmt(r['added_p50_us'])} | "
          f"{fmt(r['added_p99_us'])} |")
    w("")
    w("### New sessions per second (16 concurrent clients; handshake, token check, greeting)")
    w("")
    w("| system | sessions/s | vs websockify | setup p50 ms | setup p99 ms | "
      "proxy CPU ms/session | consoleauth CPU ms/session | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in summary["sessions"].items():
        w(f"| {name} | {fmt(r['per_s'])} | {vs('sessions', name, 'per_s')} | "
          f"{fmt(r['setup_p50_ms'], 1)} | {fmt(r['setup_p99_ms'], 1)} | "
          f"{fmt(r['proxy_cpu_ms_per_session'], 3)} | "
          f"{fmt(r['consoleauth_cpu_ms_per_session'], 3)} | {r['errors']} |")
    w("")
    w("### Idle sessions held by one proxy (ramp; per session = growth over the start / alive)")
    w("")
    if meta.get("idle_fd_cap"):
        w(f"The open-files hard limit here is {meta['nofile']} and cannot be raised (no "
          f"CAP_SYS_RESOURCE): at two descriptors a session, the ramp tops at "
          f"{meta['idle_fd_cap']} sessions.")
        w("")
    w("| system | level | alive | RSS MiB | KiB RSS/session | KiB PSS/session | processes | "
      "open s | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, r in results["idle"].items():
        if "error" in r:
            w(f"| {name} | — | — | — | — | — | — | — | {r['error']} |")
            continue
        for row in r["steps"]:
            if row["target"] not in meta["idle_levels"] and row is not r["steps"][-1]:
                continue
            errs = ", ".join(f"{k}: {v}" for k, v in row["errors"].items())
            w(f"| {name} | {row['target']:,} | {row['alive']:,} | {row['rss_kib'] / 1024:,.0f} | "
              f"{fmt(row['rss_kib_per_session'], 1)} | {fmt(row['pss_kib_per_session'], 1)} | "
              f"{row['processes']} | {row['seconds']:.1f} | {errs} |")
        if r.get("stopped"):
            w(f"| {name} | stopped | | | | | | | {r['stopped']} |")
    w("")
    if results.get("bus"):
        w("### check_token on the bus (bench/bus.py, its own consoleauth)")
        w("")
        w("| clients | checks/s | p50 ms | p99 ms | max ms |")
        w("|---:|---:|---:|---:|---:|")
        for r in results["bus"]:
            w(f"| {r['clients']} | {fmt(r['checks_per_s'])} | {r['p50_ms']:.3f} | "
              f"{r['p99_ms']:.3f} | {r['max_ms']:.2f} |")
        w("")
    w("### Targets")
    w("")
    w("| goal | system | measured | target | vs websockify | status | note |")
    w("|---|---|---:|---|---:|---|---|")
    for g in goals:
        digits = 2 if g["unit"] in ("CPU-s/GB", "ms") else (1 if "KiB" in g["unit"] else 0)
        w(f"| {g['goal']} | {g['system']} | {fmt(g['value'], digits)} {g['unit']} | "
          f"{g['target']} | {ratio_str(g['vs_websockify'])} | **{g['status']}** | {g['note']} |")
    w("")
    if failures:
        w("### Failures (measures that did not run)")
        w("")
        for f in failures:
            w(f"- {f['measure']} / {f['system']}: {f['error']}")
        w("")
    return "\n".join(out)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short windows (about 3 minutes)")
    ap.add_argument("--smoke", action="store_true",
                    help="with --quick: smallest sizes, 1 repetition (a check that it runs)")
    ap.add_argument("--only", help="comma list of systems (direct is always kept)")
    ap.add_argument("--reps", type=int, help="override the repetitions of the profile")
    ap.add_argument("--floor", action="store_true",
                    help="also measure gevent-floor, the least a gevent relay does "
                         "(bench/gevent_floor.py): what gevent itself costs")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy our proxies and consoleauth in each measured window "
                         "(bench/results/profiles/; figures are lower while sampling)")
    ap.add_argument("--workers", type=int, default=1,
                    help="run our proxies with --workers N (pre-fork, SO_REUSEPORT)")
    ap.add_argument("--record", nargs="?", const="", metavar="BASE",
                    help="also measure our proxies with session recording on (novncproxy+rec, "
                         "xvpvncproxy+rec); record_dir is a temporary folder in BASE (default: "
                         "the system's temp folder; /dev/shm leaves the disk out), removed after")
    ap.add_argument("--measures", default=",".join(MEASURES),
                    help=f"comma list of measures to run (default: all of {','.join(MEASURES)})")
    args = ap.parse_args()
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.reps:
        profile = Profile(**{**profile.__dict__, "reps": args.reps})
    name, cpus = machine.describe()
    meta = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": name, "cpus": cpus, "python": platform.python_version(),
            "mode": profile.name, "loadavg_start": loadavg(),
            "idle_policy": machine.idle_policy()}
    measures = [m for m in args.measures.split(",") if m]
    unknown = set(measures) - set(MEASURES)
    if unknown:
        ap.error(f"--measures: unknown {', '.join(sorted(unknown))} "
                 f"(expected a comma list of {', '.join(MEASURES)})")
    bench = Bench(profile, set(args.only.split(",")) if args.only else None)
    bench.measures = set(measures)
    bench.profile = args.profile
    bench.floor = args.floor
    bench.workers = meta["workers"] = args.workers
    if args.record is not None:
        bench.record_dir = meta["record_dir"] = tempfile.mkdtemp(prefix="bench-recordings-",
                                                                 dir=args.record or None)
    if args.profile:
        shutil.rmtree(profiles.OUT, ignore_errors=True)
    bench.meta = meta

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        print(f"bench ({profile.name}) on {name}", flush=True)
        bench.setup()
        results = bench.run()
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        return 130
    except MeasureError as exc:
        print(f"bench could not start: {exc}", file=sys.stderr)
        return 1
    finally:
        for profiler in bench.profilers:  # each ends by itself after its window
            try:
                profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        bench.procs.stop_all()
        if bench.record_dir:
            shutil.rmtree(bench.record_dir, ignore_errors=True)
        if bench.tokens is not None:
            bench.tokens.bus.close()
    meta["loadavg_end"] = loadavg()
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    summary = summarise(results, [s.name for s in bench.systems])
    goals = targets(summary, results, meta)
    md = markdown(meta, summary, results, goals, bench.failures, profile)
    print()
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "profile": profile.__dict__, "summary": summary, "targets": goals,
           "results": results, "failures": bench.failures}
    (RESULTS / "latest.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (RESULTS / "latest.md").write_text(md + "\n")
    if bench.profile:
        print(f"profiles: {profiles.write_summary()}")
    print(f"wrote {RESULTS.relative_to(ROOT)}/latest.json and latest.md "
          f"({meta['total_seconds']:.0f} s)")
    if bench.failures:
        print(f"{len(bench.failures)} measure(s) failed to run", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    random.seed()
    raise SystemExit(main())
