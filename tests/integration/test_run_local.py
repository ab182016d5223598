"""`make run`'s script (scripts/run-local.sh) as a user meets it, on ports of its own.

A terminal's Ctrl-C signals the whole foreground process group: the script must read it as
a clean stop (services drain and exit 0, "stopped."), and a service that dies on its own
while running must be named.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]

WAIT = 60.0


def start(tmp_path: Path) -> tuple[subprocess.Popen, Path, dict[str, int]]:
    ports = {name: free_port() for name in ("novnc", "xvp", "xvp_metrics", "bus", "events",
                                            "compute")}
    vnc_base = free_port()
    env = {
        **os.environ,
        "RUN_LOCAL_LOGS": str(tmp_path / "logs"),
        "CONSOLE_STATE_DIR": str(tmp_path / "state"),
        "CONSOLE_NOVNCPROXY_PORT": str(ports["novnc"]),
        "CONSOLE_XVPVNCPROXY_PORT": str(ports["xvp"]),
        "CONSOLE_XVPVNCPROXY_METRICS_PORT": str(ports["xvp_metrics"]),
        "CONSOLE_CONSOLEAUTH_LISTEN": f"tcp://127.0.0.1:{ports['bus']}",
        "CONSOLE_CONSOLEAUTH_URL": f"tcp://127.0.0.1:{ports['bus']}",
        "CONSOLE_CONSOLEAUTH_EVENTS_LISTEN": f"tcp://127.0.0.1:{ports['events']}",
        "CONSOLE_CONSOLEAUTH_EVENTS_URL": f"tcp://127.0.0.1:{ports['events']}",
        "CONSOLE_COMPUTE_LISTEN": f"tcp://127.0.0.1:{ports['compute']}",
        "CONSOLE_COMPUTE_URL": f"tcp://127.0.0.1:{ports['compute']}",
        "CONSOLE_NOVNCPROXY_BASE_URL": f"http://127.0.0.1:{ports['novnc']}/vnc_auto.html",
        "CONSOLE_XVPVNCPROXY_BASE_URL": f"http://127.0.0.1:{ports['xvp']}/console",
        "CONSOLE_VNC_PORT_BASE": str(vnc_base),
    }
    out = tmp_path / "out.txt"
    with open(out, "wb") as fh:
        # As a terminal starts it: SIGINT at its default (a background job would ignore it).
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "run-local.sh")], cwd=ROOT,
                                env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + WAIT
    while "Press Ctrl-C to stop" not in out.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"run-local did not come up:\n{out.read_text()}")
        time.sleep(0.2)
    return proc, out, ports


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def service_pids(script_pid: int) -> dict[str, int]:
    kids = Path(f"/proc/{script_pid}/task/{script_pid}/children").read_text().split()
    found = {}
    for pid in map(int, kids):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        name = Path(argv[1].decode()).name if len(argv) > 1 else ""
        found[name] = pid
    return found


def test_one_table_of_consoles_then_ctrl_c_is_a_clean_stop(tmp_path: Path) -> None:
    proc, out, ports = start(tmp_path)
    try:
        text = out.read_text()
        rows = re.findall(r"^\| (vm-\d) +\| ([0-9a-f-]{36}) \| (novnc|xvpvnc) +\| (\S+) +\|$",
                          text, re.M)
        assert [(name, kind) for name, _, kind, _ in rows] == [
            (vm, kind) for vm in ("vm-1", "vm-2", "vm-3") for kind in ("novnc", "xvpvnc")]
        assert len({uuid for _, uuid, _, _ in rows}) == 3
        for _, _, kind, url in rows:
            port = ports["novnc"] if kind == "novnc" else ports["xvp"]
            assert url.startswith(f"http://127.0.0.1:{port}/")
        assert text.count("| Name ") == 1  # one table, not one per console
        services = service_pids(proc.pid)
        assert set(services) == {"consoleauth", "fake-compute", "novncproxy", "xvpvncproxy"}
        # Ctrl-C: the terminal signals the script's foreground process group
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(WAIT) == 0
        tail = out.read_text().split("Press Ctrl-C to stop.")[1]
        assert tail.split() == ["stopping...", "stopped."], tail
        for pid in services.values():
            assert not Path(f"/proc/{pid}").exists()
        for name in services:
            events = [json.loads(line)["event"]
                      for line in (tmp_path / "logs" / f"{name}.log").read_text().splitlines()
                      if line.startswith("{")]
            assert events[-1] == "service.stop", (name, events[-3:])
    finally:
        stop(proc)


def test_a_service_that_dies_is_named(tmp_path: Path) -> None:
    proc, out, _ = start(tmp_path)
    try:
        os.kill(service_pids(proc.pid)["xvpvncproxy"], signal.SIGKILL)
        assert proc.wait(WAIT) == 1
        tail = out.read_text().split("Press Ctrl-C to stop.")[1]
        assert "xvpvncproxy exited unexpectedly (exit code 137)" in tail
        assert tail.rstrip().endswith("stopped.")
    finally:
        stop(proc)
