"""Idle memory per session of our proxies alone: RSS growth for N held sessions.

    uv run python bench/idle_mem.py [--sessions 2000] [--only novncproxy]

The same measure as the idle ramp of ``run.py`` (same services, client and arithmetic:
growth of the proxy's RSS over its start ÷ sessions alive), at one level and for
novncproxy and xvpvncproxy only: a quick before/after check of a memory change.
"""

from __future__ import annotations

import argparse
import sys
import time

from run import PROFILES, Bench, MeasureError, Profile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--only", default="novncproxy,xvpvncproxy")
    args = ap.parse_args()
    profile = Profile(**{**PROFILES["quick"].__dict__, "idle_levels": (args.sessions,)})
    only = set(args.only.split(","))
    bench = Bench(profile, only)
    bench.meta = {}
    try:
        bench.setup()
        for system in bench.systems:
            if system.name not in only:
                continue
            try:
                out = bench.idle(system)
            except MeasureError as exc:
                print(f"{system.name}: failed: {exc}", file=sys.stderr)
                continue
            row = max(out["steps"], key=lambda r: r["alive"])
            print(f"{system.name}: {row['alive']} sessions alive, "
                  f"{row['rss_kib_per_session']:.1f} KiB RSS/session, "
                  f"{row['pss_kib_per_session']:.1f} KiB PSS/session", flush=True)
            time.sleep(1.0)
    finally:
        bench.procs.stop_all()
        if bench.tokens is not None:
            bench.tokens.bus.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
