"""bench/bus.py and its floor server (bench/bus_floor.py) still run and measure: the
figures in bench/README.md come from them. A short window, real processes (consoleauth,
the floor, a redis-server started by the bench), every reply checked by the bench's own
callers. Figures are not asserted: speed is for the bench, not the suite."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO


def test_bus_bench_measures_consoleauth_and_the_floor_on_redis():
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bus.py"), "--store", "redis", "--client", "req",
         "--clients", "2", "--seconds", "0.5", "--json",
         "--server", "consoleauth,floor,floor-pipelined,floor-green"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["store"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"redis", "redis (floor)", "redis (floor-pipelined)",
                         "redis (floor-green)"}
    for row in rows.values():
        # every call was answered "ok" (the worker exits non-zero otherwise) and timed
        assert row["client"] == "req" and row["calls"] > 0 and row["p99_ms"] > 0


def test_bus_bench_refuses_a_floor_it_cannot_run():
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bus.py"), "--server", "floor", "--ping-tokens", "10"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "floor" in out.stderr
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bus.py"), "--server", "floorish"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "unknown floorish" in out.stderr
