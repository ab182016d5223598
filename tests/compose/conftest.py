"""The suite as a docker compose cluster behind the HAProxy edge (marker ``compose``).

One session fixture runs ``scripts/compose-up.sh`` (our own dockerd, base image, wheelhouse,
build, ``up --wait`` with two replicas of each proxy) and always ``scripts/compose-down.sh``
at the end. When dockerd cannot start here the tests are skipped; with CI=true that is a
failure, except when the kernel has no overlay filesystem (compose-up exit code 4).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import support
from tests.support import REPO

UP, DOWN = REPO / "scripts" / "compose-up.sh", REPO / "scripts" / "compose-down.sh"
DOCKER_DIR = os.environ.get("CPS_DOCKER_DIR", "/tmp/cps-docker")
PROJECT = "consoleproxy"
LOCK = Path("/tmp/cps-compose.lock")
UP_TIMEOUT = 540  # a cold machine: apt + debootstrap (~1-2 min) + build; warm: ~1.5 min
EXIT_NO_DOCKERD, EXIT_NO_OVERLAY = 3, 4
ADMIN_KEY = "/keys/admin.key_secret"  # the cluster's bus runs with CURVE (docker/bus-keys.sh)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "compose: needs root and Docker (runs its own dockerd)")


def _port_or_free(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            return support.free_port()


@dataclass
class Cluster:
    env: dict[str, str]
    novnc_port: int
    xvp_port: int
    prometheus_port: int

    def compose(self, *args: str, timeout: float = 60) -> str:
        cmd = ["docker", "compose", "-p", PROJECT, "-f", str(REPO / "compose.yaml"), *args]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): "
                                 f"{done.stderr.strip()[-2000:]}")
        return done.stdout

    def docker(self, *args: str, timeout: float = 30) -> str:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=True).stdout

    def get_console(self, kind: str, server: str = "vm-1") -> dict:
        out = self.compose("exec", "-T", "fake-compute", "consolectl", "--json",
                           "--bus-secret-key-file", ADMIN_KEY,
                           "get-vnc-console", server, kind,
                           "--compute-url", "tcp://127.0.0.1:6095",
                           "--consoleauth-url", "tcp://consoleauth:6085", timeout=30)
        result = json.loads(out)
        support.remember_secret(result["token"])
        return result


def _lock() -> int:
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + 120
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.fail(f"another compose run holds {LOCK} (scripts/compose-up.sh "
                            f"and these tests use one dockerd under {DOCKER_DIR})")
            time.sleep(1)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if os.geteuid() != 0:
        if in_ci:
            pytest.fail("compose tests need root to run dockerd (CI=true)")
        pytest.skip("compose tests need root to run their own dockerd")
    fd = _lock()
    log_dir = tmp_path_factory.mktemp("compose")
    novnc_port, xvp_port = _port_or_free(6080), _port_or_free(6081)
    prometheus_port = _port_or_free(9090)
    env = {**os.environ, "DOCKER_HOST": f"unix://{DOCKER_DIR}/docker.sock",
           "DOCKER_CONFIG": f"{DOCKER_DIR}/cfg", "CPS_DOCKER_DIR": DOCKER_DIR,
           "EDGE_NOVNC_PORT": str(novnc_port), "EDGE_XVP_PORT": str(xvp_port),
           "COMPOSE_PROFILES": "monitoring", "PROMETHEUS_PORT": str(prometheus_port)}
    up_log = log_dir / "compose-up.log"
    c = Cluster(env, novnc_port, xvp_port, prometheus_port)
    try:
        started = time.monotonic()
        with up_log.open("w") as out:
            try:
                rc = subprocess.run(["bash", str(UP)], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=UP_TIMEOUT,
                                    check=False).returncode
            except subprocess.TimeoutExpired:
                rc = None
        tail = "\n".join(up_log.read_text(errors="replace").splitlines()[-25:])
        if rc == EXIT_NO_OVERLAY or (rc == EXIT_NO_DOCKERD and not in_ci):
            pytest.skip(f"dockerd cannot start on this machine (compose-up exit {rc}):\n{tail}")
        if rc != 0:
            pytest.fail(f"scripts/compose-up.sh {'timed out' if rc is None else f'exit {rc}'} "
                        f"after {time.monotonic() - started:.0f}s:\n{tail}")
        print(f"compose cluster up in {time.monotonic() - started:.0f}s")
        yield c
    finally:
        try:  # keep the container logs for the session's secret scan, then remove it all
            logs = log_dir / "compose-services.log"
            if Path(DOCKER_DIR, "docker.sock").exists():
                with logs.open("w") as out:
                    subprocess.run(["docker", "compose", "-p", PROJECT, "-f",
                                    str(REPO / "compose.yaml"), "logs", "--no-color",
                                    "--no-log-prefix"], env=env, stdout=out,
                                   stderr=subprocess.DEVNULL, timeout=60, check=False)
                support.LOG_FILES.append(logs)
        except (OSError, subprocess.SubprocessError):
            pass
        down = subprocess.run(["bash", str(DOWN)], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        assert down.returncode == 0, f"compose-down failed: {down.stderr[-2000:]}"
