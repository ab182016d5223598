"""Slowloris against both proxies (real processes, loopback only): thousands of
connections that send part of a request head a byte at a time, or nothing at all.

What must hold, measured on the proxy process (/proc/PID): its fd count and RSS stay
bounded while the attack holds its connections and fall back after; the request-head
deadline (``--request-head-timeout``) closes what never finishes; a legitimate user
still opens a console (WebSocket + RFB through novncproxy, the xvp preamble + RFB through
xvpvncproxy, to a fake compute host's console) within a bound, all along.

``CONSOLE_SLOWLORIS_CONNECTIONS`` sets the count (10 000 by default; `make soak` raises
it), ``CONSOLE_SLOWLORIS_WAVES`` the waves (2). The figures are printed (see them with ``pytest -s``).
"""

from __future__ import annotations

import errno
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration._consoles import start_compute, start_consoleauth
from tests.integration.test_novnc_protocol import WsClient, start_proxy
from tests.integration.test_xvp_protocol import start_xvp
from tests.support import ServiceProcess, console_token

COUNT = int(os.environ.get("CONSOLE_SLOWLORIS_CONNECTIONS", "10000"))
# The proxies' request-head deadline in this test: long enough that every attacker of a
# wave is connected (about 3 000 connections a second here) before the first is cut.
HEAD_TIMEOUT = max(5.0, COUNT / 2000)
HOLD = HEAD_TIMEOUT + 1.5  # how long each wave goes on once its connections are open
# the second wave shows the first one's memory is reused, not leaked
WAVES = int(os.environ.get("CONSOLE_SLOWLORIS_WAVES", "2"))
LEGIT_BOUND = 3.0  # seconds a legitimate console may take during the attack
RFB_VERSION = b"RFB 003.008\n"
# What an attacked proxy may cost, on top of its idle figures: per held connection
# (greenlet, socket, a head buffer) and in all.
RSS_PER_CONNECTION_KIB = 24
FD_SLACK = 64


def proc_status(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open fds) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text()
               .splitlines() if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def nofile_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


@pytest.fixture(scope="module", autouse=True)
def _enough_fds() -> Iterator[None]:
    """The test holds COUNT sockets itself: raise its own soft limit (the proxies raise
    theirs at start, which the tests check)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = COUNT + 512
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {need}: raise it (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@dataclass
class Cluster:
    ca: ServiceProcess
    bus: str
    compute: ServiceProcess
    control: str

    def console(self, kind: str) -> str:
        return console_token(self.control, kind)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("slowloris")
    ca, bus = start_consoleauth(logs)
    with ca:
        compute = start_compute(logs, bus, "vm-1", builtin=1)
        with compute.proc:
            yield Cluster(ca, bus, compute.proc, compute.control)


@dataclass
class Figures:
    proxy: str
    before: tuple[int, int] = (0, 0)
    peak: list[int] = field(default_factory=lambda: [0, 0])
    wave_peaks: list[int] = field(default_factory=list)  # RSS KiB, each wave
    after: tuple[int, int] = (0, 0)
    opened: int = 0
    closed_by_proxy: int = 0
    legit: list[float] = field(default_factory=list)
    legit_failures: list[str] = field(default_factory=list)

    def sample(self, pid: int) -> None:
        rss, fds = proc_status(pid)
        self.peak = [max(self.peak[0], rss), max(self.peak[1], fds)]

    def report(self) -> str:
        lat = sorted(self.legit)
        p50 = lat[len(lat) // 2] if lat else float("nan")
        return (f"\nslowloris {self.proxy}: {self.opened} connections held per wave, {len(self.wave_peaks)} waves "
                f"({self.closed_by_proxy} closed by the proxy's head deadline); "
                f"RSS KiB before/peak/after {self.before[0]}/{self.peak[0]}/{self.after[0]} "
                f"(peak of each wave {'/'.join(map(str, self.wave_peaks))}); "
                f"fds before/peak/after {self.before[1]}/{self.peak[1]}/{self.after[1]} "
                f"({self.peak[1] - self.before[1]} attackers open at once); "
                f"legit consoles {len(lat)} ok, {len(self.legit_failures)} failed, latency "
                f"p50 {p50:.3f}s max {max(lat, default=float('nan')):.3f}s")


def attack(port: int, pid: int, figures: Figures, partial: bytes,
           legit: Callable[[], None]) -> None:
    """COUNT connections: half drip ``partial`` a byte per second, half say nothing.
    A legitimate console is opened every half second meanwhile."""
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    stop = threading.Event()

    def legit_loop() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                legit()
                figures.legit.append(time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on below
                figures.legit_failures.append(f"{type(exc).__name__}: {exc}"[:200])
            stop.wait(0.5)

    prober = threading.Thread(target=legit_loop, daemon=True)
    try:
        # open in batches: the proxy's accept backlog is 1024
        for start in range(0, COUNT, 500):
            batch = []
            for _ in range(min(500, COUNT - start)):
                s = socket.socket()
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    raise AssertionError(f"connect: {os.strerror(err)}")
                sel.register(s, selectors.EVENT_WRITE)
                batch.append(s)
            deadline = time.monotonic() + 10
            pending = set(batch)
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(1):
                    pending.discard(key.fileobj)
                    sel.unregister(key.fileobj)
            for s in pending:
                sel.unregister(s)
            socks += [s for s in batch if s not in pending and
                      s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
            figures.sample(pid)
            if start == 0:
                prober.start()  # legitimate users from the first batch on
        figures.opened = len(socks)
        assert figures.opened >= COUNT * 0.98, f"only {figures.opened} of {COUNT} connected"
        alive = set(socks)
        slow = socks[::2]
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        sent = 0
        held_until = time.monotonic() + HOLD
        while time.monotonic() < held_until:
            for s in slow:  # one more byte of the head each round
                if s in alive and sent < len(partial):
                    try:
                        s.send(partial[sent:sent + 1])
                    except OSError:
                        alive.discard(s)
            sent += 1
            round_end = time.monotonic() + 1.0
            while (left := round_end - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    s = key.fileobj
                    try:
                        data = s.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data or data.startswith(b"HTTP/1.1 408"):
                        alive.discard(s)
                        sel.unregister(s)
            figures.sample(pid)
        figures.closed_by_proxy = figures.opened - len(alive)
    finally:
        stop.set()
        if prober.is_alive():
            prober.join(10)
        for s in socks:
            s.close()
        sel.close()


def waves(port: int, pid: int, figures: Figures, partial: bytes,
          legit: Callable[[], None]) -> None:
    for _ in range(WAVES):
        figures.peak[0] = 0
        attack(port, pid, figures, partial, legit)
        figures.wave_peaks.append(figures.peak[0])
    figures.peak[0] = max(figures.wave_peaks)


def check(figures: Figures, pid: int) -> None:
    deadline = time.monotonic() + 10
    while True:  # what the attack took comes back once its sockets are gone
        figures.after = proc_status(pid)
        if figures.after[1] <= figures.before[1] + FD_SLACK or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    print(figures.report())
    assert not figures.legit_failures, figures.legit_failures[:5]
    assert len(figures.legit) >= 10, "too few legitimate consoles opened during the attack"
    assert max(figures.legit) < LEGIT_BOUND, figures.report()
    # most of a wave was open at once (the first are cut by the deadline, not before)
    assert figures.peak[1] - figures.before[1] >= figures.opened * 0.5, figures.report()
    # every held connection cost one fd at most, and none stayed
    assert figures.peak[1] <= figures.before[1] + figures.opened + FD_SLACK, figures.report()
    assert figures.after[1] <= figures.before[1] + FD_SLACK, figures.report()
    grew = figures.peak[0] - figures.before[0]
    assert grew <= figures.opened * RSS_PER_CONNECTION_KIB, figures.report()
    # the allocator keeps some of a wave's memory, but the next wave reuses it: no leak
    first, *later = figures.wave_peaks
    assert all(peak <= first + (first - figures.before[0]) * 0.15 for peak in later), \
        figures.report()
    # the head deadline (HEAD_TIMEOUT < HOLD) closed those that never finished a head
    assert figures.closed_by_proxy >= figures.opened * 0.9, figures.report()


def test_slowloris_against_novncproxy(tmp_path: Path, cluster: Cluster) -> None:
    port, proxy = start_proxy(tmp_path, cluster.bus, "--request-head-timeout",
                              str(HEAD_TIMEOUT))
    with proxy:
        pid = proxy.popen.pid
        soft, hard = nofile_limits(pid)
        assert soft == hard, f"novncproxy kept its soft fd limit {soft} (hard {hard})"

        def legit() -> None:
            ws = WsClient(port, f"/websockify?token={cluster.console('novnc')}")
            try:
                assert ws.reply.status == 101, ws.reply
                assert ws.recv_bytes(12) == RFB_VERSION
            finally:
                ws.close()

        legit()  # warm: the first console pays for imports and connections
        figures = Figures("novncproxy", before=proc_status(pid))
        waves(port, pid, figures, b"GET /websockify?token=x HTTP/1.1\r\nHost: a\r\n", legit)
        check(figures, pid)
        legit()
        assert proxy.alive()


def test_slowloris_against_xvpvncproxy(tmp_path: Path, cluster: Cluster) -> None:
    proxy, port, _ = start_xvp(tmp_path, cluster.bus, "--request-head-timeout",
                               str(HEAD_TIMEOUT))
    with proxy:
        pid = proxy.popen.pid
        soft, hard = nofile_limits(pid)
        assert soft == hard, f"xvpvncproxy kept its soft fd limit {soft} (hard {hard})"

        def legit() -> None:
            token = cluster.console("xvpvnc")
            with socket.create_connection(("127.0.0.1", port), timeout=LEGIT_BOUND) as sock:
                sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode())
                got = b""
                while len(got) < 19 + 12 and (data := sock.recv(4096)):
                    got += data
                assert got == b"HTTP/1.1 200 OK\r\n\r\n" + RFB_VERSION, got

        legit()
        figures = Figures("xvpvncproxy", before=proc_status(pid))
        waves(port, pid, figures, b"CONNECT /console?token=x HTTP/1.0\r\nHost: a\r\n", legit)
        check(figures, pid)
        legit()
        assert proxy.alive()
