"""py-spy profiles of our processes during a benchmark window, and their summaries.

    uv run python bench/run.py --quick --measures sessions --only xvpvncproxy --profile
    uv run python bench/bus.py --clients 10 --profile

py-spy (PyPI, pinned below) samples a running process from outside, without changing it.
Each profile is kept as collapsed stacks (``*.txt``, for flamegraph tools or speedscope)
and summarised in ``bench/results/profiles/summary.md``: the frames where the samples were
(self) and the functions they were under (inclusive). A frame of a blocking call (a
socket send, ``Hub.run`` waiting in epoll) is time spent in the kernel or waiting.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

PY_SPY = "py-spy==0.4.3"
RATE = 500  # samples per second
OUT = Path(__file__).resolve().parent / "results" / "profiles"
UV = Path(__file__).resolve().parent.parent / "scripts" / "uv.sh"


def record(pid: int, seconds: float, name: str) -> subprocess.Popen:
    """Start sampling ``pid`` for ``seconds`` into ``OUT/name.txt`` (returns at once)."""
    OUT.mkdir(parents=True, exist_ok=True)
    argv = ["bash", str(UV), "tool", "run", "-q", "--from", PY_SPY, "py-spy", "record",
            "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", str(RATE),
            "--nonblocking", "-f", "raw", "-o", str(OUT / f"{name}.txt")]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def summarise(path: Path, top: int = 12) -> str:
    """Markdown: the top frames by own samples and by inclusive samples."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for fn in {f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")"
                   if " (" in f else f for f in frames}:
            under[fn] += n
    if not total:
        return f"### {path.stem}\n\nno samples (the process was idle or py-spy failed)\n"
    out = [f"### {path.stem}", "", f"{total} samples at {RATE}/s; `Hub.run` is the event loop waiting in epoll", "",
           "| own % | frame |", "|---:|---|"]
    out += [f"| {n * 100 / total:.1f} | `{f}` |" for f, n in own.most_common(top)]
    out += ["", "| inclusive % | function |", "|---:|---|"]
    out += [f"| {n * 100 / total:.1f} | `{f}` |" for f, n in under.most_common(top * 2)]
    return "\n".join(out) + "\n"


def write_summary() -> Path:
    parts = ["# Profiles of the last benchmark run with --profile", ""]
    parts += [summarise(p) for p in sorted(OUT.glob("*.txt"))]
    path = OUT / "summary.md"
    path.write_text("\n".join(parts))
    return path
