"""status: ping every consoleauth endpoint and every compute host, at once.

Exit 3 when any of them does not answer within --consoleauth-timeout.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gevent
from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK, EXIT_UNAVAILABLE

from consoleauth.ctl.common import CtlError, call, emit, table

NAME = "status"
HELP = "Ping consoleauth and the compute hosts; show versions, tokens, instances, latency."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-compute", action="store_true",
                        help="Only consoleauth (skip the compute hosts).")


def _ping(role: str, endpoint: str, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    row: dict[str, Any] = {"endpoint": endpoint, "role": role}
    try:
        result = call(role, [endpoint], timeout, "ping")
    except CtlError as exc:
        row.update(ok=False, error=exc.message)
        return row
    row.update(ok=True, latency_ms=round((time.monotonic() - started) * 1000, 1), **result)
    return row


def _state(row: dict[str, Any]) -> str:
    if not row["ok"]:
        return row["error"]
    parts = [f"store={row['store']}" if row.get("store") else "",
             f"tokens={row['tokens']}" if row.get("tokens") is not None else "",
             f"instances={row['instances']}" if row.get("instances") is not None else ""]
    return " ".join(p for p in parts if p) or "ok"


def run(config: Config, args: argparse.Namespace) -> int:
    targets = [("consoleauth", ep) for ep in config.consoleauth_url]
    if not args.no_compute:
        targets += [("compute host", ep) for ep in config.compute_url]
    jobs = [gevent.spawn(_ping, role, ep, config.consoleauth_timeout) for role, ep in targets]
    gevent.joinall(jobs, raise_error=True)
    rows = [job.value for job in jobs]
    human = table(("Endpoint", "Service", "Version", "State", "Latency"), [
        (r["endpoint"], r.get("service") or r["role"], r.get("version"), _state(r),
         f"{r['latency_ms']:.1f} ms" if r["ok"] else None) for r in rows])
    emit(args, human, rows)
    return EXIT_OK if all(r["ok"] for r in rows) else EXIT_UNAVAILABLE
