"""The seed's PROXYSERVER / COMPUTESERVER layout in network namespaces (needs root).

``scripts/netns-up.sh --links-only`` builds the namespaces and links under a prefix of
our own (concurrent runs do not collide); this harness starts the services in them and
``scripts/netns-down.sh`` removes everything at the end, also when a test or the setup
fails. Without root or ``ip netns`` the tests are skipped, except in CI (CI=true), where
that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import require
from tests.integration.test_vnc_bridge import novncproxy_missing
from tests.support import REPO, ServiceProcess

UP, DOWN = REPO / "scripts" / "netns-up.sh", REPO / "scripts" / "netns-down.sh"
PROXY_LAN, PROXY_PUBLIC, CLIENT = "10.231.0.1", "10.231.1.1", "10.231.1.100"
COMPUTE1, COMPUTE2 = "10.231.0.11", "10.231.0.12"
UNROUTABLE = "10.231.9.12"  # on no link: the proxy host has no route to it
BUS = f"tcp://{PROXY_LAN}:6085"
NOVNC_BASE = f"http://{PROXY_PUBLIC}:6080/vnc_auto.html"
XVP_BASE = f"http://{PROXY_PUBLIC}:6081/console"
REAL_VNC_PORT = 5910


def wait_port(ns: str, host: str, port: int, timeout: float = 20.0) -> None:
    """Wait until ``host:port`` accepts a TCP connection from inside namespace ``ns``."""
    deadline = time.monotonic() + timeout
    probe = ["ip", "netns", "exec", ns, "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"]
    while subprocess.run(probe, check=False, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} as seen from {ns}")
        time.sleep(0.1)


def free_display() -> int:
    for display in range(400, 500):
        if not (Path(f"/tmp/.X{display}-lock").exists()
                or Path(f"/tmp/.X11-unix/X{display}").exists()):
            return display
    raise RuntimeError("no free X display number in 400-499")


@dataclass
class Layout:
    prefix: str
    log_dir: Path
    procs: list[ServiceProcess] = field(default_factory=list)
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    novnc_skip: str | None = None

    def __post_init__(self) -> None:
        # The namespaces scripts/netns-up.sh creates for this prefix.
        self.proxy, self.compute1, self.compute2, self.client = (
            f"{self.prefix}-{role}" for role in ("proxy", "compute1", "compute2", "client"))

    def service(self, ns: str, command: str, args: list[str], name: str) -> ServiceProcess:
        proc = ServiceProcess.start(command, args, log_dir=self.log_dir, netns=ns, name=name)
        self.procs.append(proc)
        return proc

    def program(self, ns: str, argv: list[str], name: str) -> None:
        with open(self.log_dir / f"{name}.log", "wb") as out:
            self.others.append(subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                                stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL,
                                                start_new_session=True))

    def fake_compute(self, ns: str, name: str, listen: str, proxyclient: str, control: str,
                     instances: str, vnc_port_base: int) -> ServiceProcess:
        return self.service(ns, "fake-compute", [
            "--consoleauth-url", BUS, "--vncserver-listen", listen,
            "--vncserver-proxyclient-address", proxyclient, "--compute-listen", control,
            "--instances", instances, "--vnc-port-base", str(vnc_port_base),
            "--novncproxy-base-url", NOVNC_BASE, "--xvpvncproxy-base-url", XVP_BASE,
        ], name)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=10)
        for popen in self.others:
            if popen.poll() is None:
                popen.terminate()
                try:
                    popen.wait(10)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait(5)


@pytest.fixture(scope="session")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    require(os.geteuid() == 0, "the netns tests need root (ip netns add)")
    netns_ok = shutil.which("ip") is not None and subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True).returncode == 0
    require(netns_ok, "`ip netns` is not available")
    for tool in ("Xvnc", "qemu-system-x86_64"):
        require(shutil.which(tool) is not None, f"{tool} is missing: run scripts/install-system.sh")
    prefix = f"cpt{uuid.uuid4().hex[:8]}"
    lay = Layout(prefix, tmp_path_factory.mktemp("netns"))
    env = {**os.environ, "NETNS_STATE_DIR": str(lay.log_dir / "state")}
    up = subprocess.run([str(UP), "--prefix", prefix, "--links-only"], check=False,
                        capture_output=True, text=True, env=env, timeout=60)
    try:
        assert up.returncode == 0, f"netns-up failed: {up.stderr}"
        start_suite(lay)
        yield lay
    finally:
        lay.stop()
        down = subprocess.run([str(DOWN), "--prefix", prefix], check=False,
                              capture_output=True, text=True, env=env, timeout=60)
        assert down.returncode == 0, f"netns-down failed: {down.stderr}"
        assert not any(Path(f"/run/netns/{prefix}-{n}").exists()
                       for n in ("proxy", "compute1", "compute2", "client"))


def start_suite(lay: Layout) -> None:
    lay.service(lay.proxy, "consoleauth", ["--consoleauth-listen", BUS, "--token-store",
                                           "memory"], "consoleauth")
    lay.service(lay.proxy, "xvpvncproxy", ["--consoleauth-url", BUS, "--target-connect-timeout",
                                           "3"], "xvpvncproxy")
    lay.novnc_skip = novncproxy_missing()
    if lay.novnc_skip is None:
        lay.service(lay.proxy, "novncproxy", ["--consoleauth-url", BUS,
                                              "--target-connect-timeout", "3"], "novncproxy")
    display = free_display()
    lay.program(lay.compute1, ["Xvnc", f":{display}", "-interface", COMPUTE1, "-rfbport",
                               str(REAL_VNC_PORT), "-geometry", "800x600", "-depth", "24",
                               "-SecurityTypes", "None", "-nolisten", "tcp", "-retro",
                               "-desktop", "xvnc-compute1"], "xvnc")
    lay.program(lay.compute2, ["qemu-system-x86_64", "-display", "none", "-vnc",
                               f"{COMPUTE2}:{REAL_VNC_PORT - 5900}", "-machine", "accel=tcg",
                               "-nodefaults", "-vga", "std", "-m", "64", "-name", "qemu-compute2"],
                "qemu")
    # The two well-configured compute hosts.
    lay.fake_compute(lay.compute1, "fake-compute1", COMPUTE1, COMPUTE1, f"tcp://{COMPUTE1}:6095",
                     f"c1-builtin,c1-xvnc=vnc://{COMPUTE1}:{REAL_VNC_PORT}", 5900)
    lay.fake_compute(lay.compute2, "fake-compute2", COMPUTE2, COMPUTE2, f"tcp://{COMPUTE2}:6095",
                     f"c2-builtin,c2-qemu=vnc://{COMPUTE2}:{REAL_VNC_PORT}", 5900)
    # Misconfigured: a proxyclient address the proxy cannot reach...
    lay.fake_compute(lay.compute2, "fake-compute2-badaddr", COMPUTE2, UNROUTABLE,
                     f"tcp://{COMPUTE2}:6096", "c2-badaddr", 5920)
    # ... and VNC servers listening on the compute host's loopback only.
    lay.fake_compute(lay.compute1, "fake-compute1-loopback", "127.0.0.1", COMPUTE1,
                     f"tcp://{COMPUTE1}:6096", "c1-loopback", 5920)
    wait_port(lay.proxy, PROXY_LAN, 6085)
    wait_port(lay.client, PROXY_PUBLIC, 6081)
    if lay.novnc_skip is None:
        wait_port(lay.client, PROXY_PUBLIC, 6080)
    for ns, host in ((lay.compute1, COMPUTE1), (lay.compute2, COMPUTE2)):
        wait_port(lay.proxy, host, REAL_VNC_PORT)
        wait_port(lay.proxy, host, 6095)
        wait_port(lay.proxy, host, 6096)
        wait_port(lay.proxy, host, 5900)
