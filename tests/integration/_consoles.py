"""Shared helpers for the consoleauth / fake-compute / consolectl integration tests:
real processes on free loopback ports, consolectl run as a real command with a timeout."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support import VENV_BIN, ServiceProcess, free_port, remember_secret, wait_bus

CTL_TIMEOUT = 30.0
_URL_TOKEN = re.compile(r"token=([A-Za-z0-9_\-.~%]+)")


def free_port_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports (for vnc_port_base)."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {count} free ports")


def start_consoleauth(log_dir: Path, *extra: str, endpoint: str | None = None,
                      store: str = "memory") -> tuple[ServiceProcess, str]:
    endpoint = endpoint or f"tcp://127.0.0.1:{free_port()}"
    proc = ServiceProcess.start("consoleauth", ["--consoleauth-listen", endpoint,
                                                "--token-store", store, *extra], log_dir)
    wait_bus(endpoint)
    return proc, endpoint


@dataclass
class Compute:
    proc: ServiceProcess
    control: str
    vnc_base: int


def start_compute(log_dir: Path, consoleauth: str, instances: str = "vm-1,vm-2",
                  *extra: str, builtin: int = 2, control: str | None = None) -> Compute:
    control = control or f"tcp://127.0.0.1:{free_port()}"
    base = free_port_block(max(1, builtin))
    proc = ServiceProcess.start("fake-compute", [
        "--compute-listen", control, "--consoleauth-url", consoleauth,
        "--consoleauth-timeout", "2", "--instances", instances, "--vnc-port-base", str(base),
        *extra], log_dir)
    wait_bus(control)
    return Compute(proc, control, base)


def consolectl(*args: str, timeout: float = CTL_TIMEOUT,
               stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `consolectl`; any token it prints is remembered as a secret."""
    result = subprocess.run([str(VENV_BIN / "consolectl"), *args], capture_output=True, check=False,
                            text=True, timeout=timeout, input=stdin)
    for token in _URL_TOKEN.findall(result.stdout):
        remember_secret(token)
    for match in re.finditer(r'"token": "([^"]+)"', result.stdout):
        remember_secret(match.group(1))
    for match in re.finditer(r"^\| token +\| (\S+) +\|$", result.stdout, re.MULTILINE):
        remember_secret(match.group(1))
    return result


def ctl_json(*args: str, timeout: float = CTL_TIMEOUT) -> dict:
    result = consolectl(*args, "--json", timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
