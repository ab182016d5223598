"""CPU time and sleeps per thread of a few processes, between two snapshots (Linux /proc).

``bench/bus.py --cpu`` divides them by the checks made in between: how many µs of CPU
each thread spends per check (consoleauth's main thread, its ZeroMQ I/O thread, the
clients', redis-server) and how often per check it went to sleep and had to be woken,
which is what a round trip costs on a VM (see machine.py). Threads are labelled
``role:main`` for a process's first thread, else ``role:<thread name>``; threads of one
label are summed (two client processes, two replicas).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter

Snapshot = dict[tuple[int, int], tuple[str, int, int]]  # (pid, tid) -> (label, ns, sleeps)


def snapshot(pids: dict[int, str]) -> Snapshot:
    """``pids``: pid -> role. Threads that end before the next snapshot are left out."""
    out: Snapshot = {}
    for pid, role in pids.items():
        with contextlib.suppress(OSError):
            for tid in map(int, os.listdir(f"/proc/{pid}/task")):
                base = f"/proc/{pid}/task/{tid}"
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"{base}/comm") as f:
                        name = "main" if tid == pid else f.read().strip()
                    with open(f"{base}/schedstat") as f:
                        ns = int(f.read().split()[0])
                    with open(f"{base}/status") as f:
                        sleeps = next(int(line.split()[1]) for line in f
                                      if line.startswith("voluntary_ctxt_switches:"))
                    out[(pid, tid)] = (f"{role}:{name}", ns, sleeps)
    return out


def per_event(before: Snapshot, after: Snapshot, events: float) -> dict[str, dict[str, float]]:
    """{label: {"us": CPU µs per event, "sleeps": voluntary switches per event}}, busiest
    first; labels with under 1 % of the busiest one's CPU time are left out."""
    ns: Counter[str] = Counter()
    sleeps: Counter[str] = Counter()
    for key, (label, t1, s1) in after.items():
        if key in before:
            _, t0, s0 = before[key]
            ns[label] += t1 - t0
            sleeps[label] += s1 - s0
    if events <= 0:
        return {}
    total = max(ns.values(), default=0)
    return {label: {"us": round(n / 1e3 / events, 1), "sleeps": round(sleeps[label] / events, 2)}
            for label, n in ns.most_common() if total and n > 0.01 * total}
