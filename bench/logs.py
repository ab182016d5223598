"""`consolectl logs` over a generated log: lines/s on one core and peak RSS.

    uv run python bench/logs.py [--size-mb 1024] [--commands summary,report] [--gz]

Writes (once, then reuses) a log of realistic lines, the ones the services write, in the
services' own spelling (structlog's JSONRenderer: ``", "`` separators, ``timestamp``
last): consoleauth's ``token.authorized``, the proxies' ``session.start`` /
``session.end`` (both kinds) and ``session.refused``/``xvp.refused``, health probes,
``events.link_up``, warnings such as ``events.link_down`` and ``session.end`` with
``connect_failed``; about 200 sessions open at once, some never ended. While writing it
counts what it wrote, and the run checks ``summary --json`` against those counts, so a
fast wrong answer fails.

Each command runs as the real ``consolectl`` in a child process pinned to one CPU
(``taskset``); wall time, CPU time and peak RSS come from that child's ``wait4`` rusage.
On a shared machine wall time includes waiting for the CPU: the lines per CPU second are
the one-core speed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
CONSOLECTL = VENV_BIN / "consolectl"
START = datetime(2026, 12, 1, tzinfo=UTC)


def stamp(us: int) -> str:
    return (START + timedelta(microseconds=us)).replace(tzinfo=None).isoformat(
        timespec="microseconds") + "Z"


def generate(path: Path, size: int, seed: int = 7) -> dict:
    """Write about ``size`` bytes of log lines; return what was written (the truth)."""
    rng = random.Random(seed)
    truth = {"lines": 0, "sessions_started": 0, "sessions_ended": 0, "refusals": 0,
             "bytes_up": 0, "bytes_down": 0, "warnings": 0}
    open_sessions: list[tuple[str, str, str, str, int, str, str, int]] = []
    instances = [f"{rng.getrandbits(128):032x}" for _ in range(400)]
    instances = [f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}" for u in instances]
    clients = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
               for _ in range(2000)]
    now = 0  # microseconds since START
    written = 0
    out: list[str] = []
    with open(path, "w", encoding="ascii") as fh:
        while written < size:
            now += rng.randrange(2_000, 60_000)
            ts = stamp(now)
            roll = rng.random()
            if roll < 0.22 or (roll < 0.40 and not open_sessions):
                service, kind = (("novncproxy", "novnc") if rng.random() < 0.8
                                 else ("xvpvncproxy", "xvpvnc"))
                sid, tid = f"{rng.getrandbits(64):016x}", f"{rng.getrandbits(48):012x}"
                inst, client = rng.choice(instances), rng.choice(clients)
                port = rng.randrange(30000, 61000)
                target = f"192.168.{rng.randrange(4)}.{rng.randrange(2, 60)}:{5900 + rng.randrange(40)}"
                out.append(f'{{"token_id": "{tid}", "instance_uuid": "{inst}", "console_type": '
                           f'"{kind}", "target": "{target}", "ttl_s": 600, "event": '
                           f'"token.authorized", "service": "consoleauth", "level": "info", '
                           f'"timestamp": "{ts}"}}')
                if rng.random() < 0.01:  # the compute host is gone: no start, a warning end
                    out.append(f'{{"close_reason": "connect_failed", "close_detail": "connection '
                               f'refused", "bytes_up": 0, "bytes_down": 0, "duration_s": 0.004, '
                               f'"kind": "{kind}", "event": "session.end", "instance_uuid": '
                               f'"{inst}", "target": "{target}", "client_port": {port}, '
                               f'"client": "{client}", "session_id": "{sid}", "token_id": '
                               f'"{tid}", "service": "{service}", "level": "warning", '
                               f'"timestamp": "{ts}"}}')
                    truth["sessions_ended"] += 1
                    truth["warnings"] += 1
                else:
                    out.append(f'{{"kind": "{kind}", "event": "session.start", "instance_uuid": '
                               f'"{inst}", "target": "{target}", "client_port": {port}, '
                               f'"client": "{client}", "session_id": "{sid}", "token_id": '
                               f'"{tid}", "service": "{service}", "level": "info", '
                               f'"timestamp": "{ts}"}}')
                    open_sessions.append((sid, tid, inst, client, port, target, kind, now))
                    truth["sessions_started"] += 1
            elif roll < 0.40 or len(open_sessions) > 200:
                i = rng.randrange(len(open_sessions))
                open_sessions[i], open_sessions[-1] = open_sessions[-1], open_sessions[i]
                sid, tid, inst, client, port, target, kind, began = open_sessions.pop()
                service = "novncproxy" if kind == "novnc" else "xvpvncproxy"
                up, down = rng.randrange(200, 200_000), rng.randrange(10_000, 500_000_000)
                reason = rng.choice(("client_closed", "client_closed", "client_closed",
                                     "target_closed", "idle_timeout", "revoked"))
                out.append(f'{{"close_reason": "{reason}", "bytes_up": {up}, "bytes_down": '
                           f'{down}, "duration_s": {(now - began) / 1e6:.3f}, "kind": "{kind}", '
                           f'"rfb_version": "003.008", "security_type": 1, "desktop_name": '
                           f'"instance-{inst[:8]}", "event": "session.end", "instance_uuid": '
                           f'"{inst}", "target": "{target}", "client_port": {port}, "client": '
                           f'"{client}", "session_id": "{sid}", "token_id": "{tid}", "service": '
                           f'"{service}", "level": "info", "timestamp": "{ts}"}}')
                truth["sessions_ended"] += 1
                truth["bytes_up"] += up
                truth["bytes_down"] += down
            elif roll < 0.47:
                client, port = rng.choice(clients), rng.randrange(30000, 61000)
                if rng.random() < 0.7:
                    reason, status, detail = rng.choice((
                        ("invalid_token", 401, "invalid or expired token"),
                        ("limit_instance", 429, "too many console sessions for this instance"),
                        ("bad_origin", 403, "origin not allowed"),
                        ("consoleauth_unavailable", 503, "token service unavailable")))
                    out.append(f'{{"reason": "{reason}", "detail": "{detail}", "status": '
                               f'{status}, "client": "{client}", "client_port": {port}, "event": '
                               f'"session.refused", "service": "novncproxy", "level": "info", '
                               f'"timestamp": "{ts}"}}')
                else:
                    out.append(f'{{"client": "{client}", "client_port": {port}, "status": 401, '
                               f'"reason": "invalid or expired token", "event": "xvp.refused", '
                               f'"service": "xvpvncproxy", "level": "info", "timestamp": "{ts}"}}')
                truth["refusals"] += 1
            elif roll < 0.52:  # a health probe: closed before any request, not a refusal
                out.append(f'{{"client": "{rng.choice(clients)}", "client_port": '
                           f'{rng.randrange(30000, 61000)}, "status": null, "reason": "connection '
                           f'closed before any request", "event": "xvp.refused", "service": '
                           f'"xvpvncproxy", "level": "info", "timestamp": "{ts}"}}')
            elif roll < 0.995:
                out.append(f'{{"method": "check_token", "token_id": "{rng.getrandbits(48):012x}", '
                           f'"result": "ok", "elapsed_ms": {rng.random() * 3:.3f}, "event": '
                           f'"token.checked", "service": "consoleauth", "level": "info", '
                           f'"timestamp": "{ts}"}}')
            else:
                out.append(f'{{"endpoints": ["tcp://consoleauth:6086"], "silent_s": 12.0, '
                           f'"event": "events.link_down", "service": "novncproxy", "level": '
                           f'"warning", "timestamp": "{ts}"}}')
                truth["warnings"] += 1
            if len(out) >= 20_000:
                block = "\n".join(out) + "\n"
                fh.write(block)
                written += len(block)
                truth["lines"] += len(out)
                out.clear()
        if out:
            block = "\n".join(out) + "\n"
            fh.write(block)
            truth["lines"] += len(out)
    truth["sessions_open"] = len(open_sessions)
    return truth


def run(args: list[str], cpu: int, output: bool) -> dict:
    """One consolectl run pinned to ``cpu`` (taskset execs it: the rusage is consolectl's
    own); its output (only if asked: a big output held here would be copied into the next
    child and count in its peak RSS), wall and CPU seconds, peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        begun = time.perf_counter()
        proc = subprocess.Popen(["taskset", "-c", str(cpu), str(CONSOLECTL), *args],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - begun
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"consolectl {' '.join(args)} exited {proc.returncode}: "
                             f"{err.read().decode()}")
        out.seek(0)
        return {"stdout": out.read() if output else b"", "wall_s": wall,
                "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="Log size to generate (MB).")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "consolectl-logs-bench"),
                    help="Where the generated log is kept between runs.")
    ap.add_argument("--commands", default="summary,report",
                    help="consolectl logs subcommands to time (summary,sessions,errors,report).")
    ap.add_argument("--gz", action="store_true", help="Also time the same log gzip-compressed.")
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                    help="The CPU the runs are pinned to.")
    args = ap.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"bench-{args.size_mb}MB.log"
    truth_file = log.with_suffix(".truth.json")
    if not (log.exists() and truth_file.exists()):
        begun = time.perf_counter()
        truth = generate(log, args.size_mb * 1_000_000)
        truth_file.write_text(json.dumps(truth))
        print(f"generated {log} ({log.stat().st_size / 1e6:.0f} MB, {truth['lines']} lines) "
              f"in {time.perf_counter() - begun:.0f}s")
    truth = json.loads(truth_file.read_text())
    inputs = [log]
    if args.gz:
        gz = log.with_suffix(".log.gz")
        if not gz.exists():
            with open(log, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
        inputs.append(gz)
    size = log.stat().st_size
    print(f"{log.name}: {size / 1e6:.0f} MB, {truth['lines']} lines, "
          f"{size / truth['lines']:.0f} bytes/line; pinned to CPU {args.cpu}")
    failed = False
    for path in inputs:
        for command in args.commands.split(","):
            extra = ["--json"]
            if command == "report":
                extra += ["--html", str(folder / "report.html")]
            got = run(["logs", command, str(path), *extra], args.cpu, command == "summary")
            rate = truth["lines"] / got["wall_s"]
            print(f"logs {command:8} {path.name:20} {got['wall_s']:6.1f}s wall "
                  f"{got['cpu_s']:6.1f}s CPU  {rate / 1000:6.0f}k lines/s "
                  f"({truth['lines'] / got['cpu_s'] / 1000:.0f}k per CPU s)  "
                  f"peak RSS {got['peak_rss_mib']:.0f} MiB")
            if command == "summary":
                summary = json.loads(got["stdout"])
                for key in ("lines", "sessions_started", "sessions_ended", "sessions_open",
                            "refusals", "bytes_up", "bytes_down"):
                    if summary[key] != truth[key]:
                        print(f"  WRONG {key}: {summary[key]} != written {truth[key]}")
                        failed = True
                warnings = sum(s["warnings"] for s in summary["services"].values())
                if warnings != truth["warnings"] or summary["skipped_lines"]:
                    print(f"  WRONG warnings {warnings} (written {truth['warnings']}) or "
                          f"skipped {summary['skipped_lines']}")
                    failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
