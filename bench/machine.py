"""What the figures were measured on: CPU, cores, memory, kernel, and the vCPUs' idle policy.

The idle policy is printed with every result because on a VM it moves the figures more
than most code changes do. An idle vCPU that halts at once (guest halt polling off, as on
this machine: ``haltpoll.guest_halt_poll_ns=0`` on the kernel command line) is woken by
an inter-processor interrupt through the hypervisor, and every cross-thread hand-off of a
bus round trip (client -> ZeroMQ I/O thread -> consoleauth -> Redis and back) can pay
one. Measured here with 200 us of guest halt polling instead: check_token +35-50 % with
the memory and sqlite stores, +10-20 % with Redis (bench/README.md, "seventh pass").
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def describe() -> tuple[str, int]:
    """('<CPU model>, N cores, M GiB, Linux <release>', N)."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cpus = os.cpu_count() or 0
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) >> 20
    return f"{model}, {cpus} cores, {mem} GiB, Linux {platform.release()}", cpus


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def idle_policy() -> str:
    """How an idle vCPU waits, e.g. 'cpuidle haltpoll, guest halt polling off
    (guest_halt_poll_ns=0)'; 'cpuidle unknown' where sysfs does not say."""
    driver = _read("/sys/devices/system/cpu/cpuidle/current_driver") or "unknown"
    text = f"cpuidle {driver}"
    poll_ns = _read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
    if driver == "haltpoll" and poll_ns is not None:
        state = "off" if poll_ns == "0" else f"up to {int(poll_ns) // 1000} us"
        text += f", guest halt polling {state} (guest_halt_poll_ns={poll_ns})"
    return text
