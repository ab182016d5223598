"""logs summary|sessions|errors|report [PATH...|-]: read the suite's JSON log lines.

PATH: log files (plain or .gz), directories (their *.log* files, rotated ones oldest
first), or - for standard input (the default when it is not a terminal). `docker compose
logs` output (lines prefixed "novncproxy-1  | ") is read as is; any mix works.

  summary   time range, lines/warnings/errors per service, sessions started, ended and
            still open, refusals by reason, close reasons, bytes, durations, top
            instances and clients
  sessions  one row per session (start and end joined by session_id), sorted by start
  errors    warnings and errors grouped by event and message
  report    --html FILE: one self-contained HTML page with the summary and charts

Lines that are not JSON, not the suite's, or truncated are counted and reported on
stderr ("3 lines skipped: not JSON (first: novncproxy.log:1203)"), never fatal.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import orjson
from console_common.runtime.config import Config, add_option_arguments, select
from console_common.runtime.service import EXIT_OK, EXIT_USAGE

from consoleauth.ctl.common import OPTIONS, PROG, CtlError, table
from consoleauth.loganalysis.analysis import Analysis
from consoleauth.loganalysis.lines import parse_time
from consoleauth.loganalysis.rows import KEEP_ALL, ROW_KEYS, SessionFilter
from consoleauth.loganalysis.sources import InputError, Source, expand

NAME = "logs"
HELP = "Read the services' JSON logs: logs summary|sessions|errors|report [PATH...|-]."
ACTIONS = {
    "summary": "Time range, sessions, refusals, bytes, durations, top instances and clients.",
    "sessions": "One row per session, sorted by start (filters below).",
    "errors": "Warnings and errors grouped by event and message.",
    "report": "Write one self-contained HTML report with charts (--html FILE).",
}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="logs_action", metavar="ACTION", required=True)
    for action, text in ACTIONS.items():
        sub = actions.add_parser(action, help=text, description=text)
        sub.add_argument("paths", nargs="*", metavar="PATH",
                         help="Log files (.gz too), directories, or - for stdin.")
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="Print the result as JSON.")
        add_option_arguments(sub, select(OPTIONS))  # common options after the action too
        if action in ("summary", "report"):
            sub.add_argument("--top", type=_positive, default=10, metavar="N",
                             help="How many instances and clients to rank (default 10).")
        if action == "sessions":
            sub.add_argument("--instance", metavar="INSTANCE_UUID", help="Only this instance.")
            sub.add_argument("--client", metavar="ADDR", help="Only this client address.")
            sub.add_argument("--service", help="Only this service (novncproxy, xvpvncproxy).")
            sub.add_argument("--reason", metavar="CLOSE_REASON",
                             help="Only this close_reason (or 'open', 'unknown').")
            sub.add_argument("--since", metavar="WHEN", type=_when,
                             help="Started at or after: ISO time or relative (30m, 2h, 1d).")
            sub.add_argument("--until", metavar="WHEN", type=_when,
                             help="Started at or before: ISO time or relative.")
            sub.add_argument("--min-duration", metavar="SECONDS", type=_seconds,
                             help="Only sessions at least this long (90, 90s, 5m, 1h).")
            sub.add_argument("--limit", type=_positive, metavar="N",
                             help="Only the first N sessions (by start).")
            sub.add_argument("--csv", action="store_true", help="Print CSV rows.")
        if action == "errors":
            sub.add_argument("--limit", type=_positive, metavar="N",
                             help="Only the N most frequent groups.")
        if action == "report":
            sub.add_argument("--html", required=True, metavar="FILE",
                             help="Where to write the HTML report.")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _seconds(text: str) -> float:
    match = _RELATIVE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected seconds or 90s/5m/2h/1d, got {text!r}")
    return float(match[1]) * _UNIT[match[2]]


def _when(text: str, now: datetime | None = None) -> datetime:
    """An ISO time (naive = UTC) or a time relative to now: ``2h`` is two hours ago."""
    match = _RELATIVE.match(text)
    if match is not None and match[2]:
        return (now or datetime.now(UTC)) - timedelta(seconds=float(match[1]) * _UNIT[match[2]])
    try:
        return parse_time(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO time (2026-12-03T06:00:00Z) or 30m/2h/1d ago, got {text!r}"
        ) from None


def _sources(paths: list[str]) -> list[Source]:
    if not paths:
        if sys.stdin.isatty():
            raise CtlError("no input: give log files or directories, or pipe lines in (-)",
                           EXIT_USAGE)
        paths = ["-"]
    try:
        return expand(paths)
    except InputError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from exc


def read_all(analysis: Analysis, sources: list[Source]) -> list[str]:
    """Feed every source; returns the warnings to print (sources that failed mid-way)."""
    problems = []
    for source in sources:
        count = analysis.consume(source.read(), source.name)
        if source.error:
            problems.append(f"{source.name}: {source.error} (after line {count})")
    analysis.finish()
    return problems


def _dump(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def write_json_list(rows: Iterator[dict[str, Any]], batch: int = 512) -> None:
    """A JSON list, one object per line, written as the rows come (in batches)."""
    out, dumps = sys.stdout, orjson.dumps
    out.write("[")
    first = True
    while chunk := list(islice(rows, batch)):
        out.write(("\n  " if first else ",\n  ")
                  + ",\n  ".join([dumps(row).decode() for row in chunk]))
        first = False
    out.write("]\n" if first else "\n]\n")


def run(config: Config, args: argparse.Namespace) -> int:
    sources = _sources(args.paths)
    action = args.logs_action
    keep = limit = None
    if action == "sessions":
        keep = SessionFilter(instance=args.instance, client=args.client, service=args.service,
                             reason=args.reason, since=args.since, until=args.until,
                             min_duration=args.min_duration)
        if keep == SessionFilter():
            keep = KEEP_ALL
        limit = args.limit
    analysis = Analysis(keep=keep, limit=limit)
    problems = read_all(analysis, sources)
    as_json = getattr(args, "json", False)
    if action == "summary":
        summary = analysis.summary(top=args.top)
        summary["source_errors"] = problems
        _dump(summary) if as_json else print(format_summary(summary, len(sources)))
    elif action == "sessions":
        rows = analysis.iter_session_rows()  # written as they come: no second copy
        if args.csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(ROW_KEYS)
            writer.writerows(["" if r[k] is None else r[k] for k in ROW_KEYS] for r in rows)
        elif as_json:
            write_json_list(rows)
        else:
            print(format_sessions(list(rows)))
    elif action == "errors":
        groups = analysis.error_groups()[:args.limit]
        _dump(groups) if as_json else print(format_errors(groups))
    else:
        write_report(analysis, sources, Path(args.html), args.top, as_json)
    for problem in problems:
        print(f"{PROG}: warning: {problem}", file=sys.stderr)
    if (notice := analysis.skip_notice()) is not None:
        print(f"{PROG}: {notice}", file=sys.stderr)
    return EXIT_OK


def write_report(analysis: Analysis, sources: list[Source], path: Path, top: int,
                 as_json: bool) -> None:
    from consoleauth.loganalysis.report import render

    summary = analysis.summary(top=top)
    timeline = analysis.timeline()
    generated = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    page = render(summary, timeline, analysis.durations.histogram, analysis.error_groups(),
                  [s.name for s in sources], generated)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CtlError(f"cannot write {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    if as_json:
        _dump({"html": str(path), "bytes": len(page.encode()), "points": len(timeline["times"]),
               "step_minutes": timeline["step_minutes"], "summary": summary})
    else:
        steps = len(timeline["times"])
        print(f"Wrote {path} ({steps} time step{'s' if steps != 1 else ''} of "
              f"{timeline['step_minutes']} min, {summary['sessions_started']} sessions, "
              f"{summary['refusals']} refusals)")


# ---- human output -------------------------------------------------------------------------------


def _bytes(value: int | None) -> str:
    from consoleauth.loganalysis.report import human_bytes

    return human_bytes(value)


def _secs(value: float | None) -> str:
    from consoleauth.loganalysis.report import human_seconds

    return human_seconds(value)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def format_summary(s: dict[str, Any], sources: int) -> str:
    d = s["duration_s"]
    out = [f"Logs: {s['first'] or '-'} to {s['last'] or '-'}, {s['lines']} lines from "
           f"{sources} source{'s' if sources != 1 else ''}"]
    out.append(table(("Service", "Lines", "Warnings", "Errors"),
                     [(k, v["lines"], v["warnings"], v["errors"])
                      for k, v in s["services"].items()]))
    out.append(f"Sessions: {s['sessions_started']} started, {s['sessions_ended']} ended, "
               f"{s['sessions_open']} still open, {s['sessions_unknown']} end unknown")
    out.append(f"Refusals: {s['refusals']} ({_pairs(s['refusals_by_reason'])})")
    out.append(f"Close reasons: {_pairs(s['close_reasons'])}")
    out.append(f"Bytes: up {_bytes(s['bytes_up'])}, down {_bytes(s['bytes_down'])}")
    out.append(f"Duration: p50 {_secs(d['p50'])}, p95 {_secs(d['p95'])}, max {_secs(d['max'])}"
               f" ({d['count']} sessions)")
    for title, key, name in (("Top instances", "top_instances", "instance_uuid"),
                             ("Top clients", "top_clients", "client")):
        if s[key]:
            extra = ("Refusals",) if name == "client" else ()
            out.append(f"{title}:")
            out.append(table((name, "Sessions", "Bytes up", "Bytes down", "Time", *extra),
                             [(r[name], r["sessions"], _bytes(r["bytes_up"]),
                               _bytes(r["bytes_down"]), _secs(r["duration_s"]),
                               *((r["refusals"],) if extra else ())) for r in s[key]]))
    return "\n".join(out)


def format_sessions(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No sessions."
    return table(("Started", "Ended", "Duration", "Service", "Instance", "Client", "Up", "Down",
                  "Close reason"),
                 [(r["started"], r["ended"] or r["state"], _secs(r["duration_s"]), r["service"],
                   r["instance_uuid"], r["client"], r["bytes_up"], r["bytes_down"],
                   r["close_reason"] or r["state"]) for r in rows])


def format_errors(groups: list[dict[str, Any]]) -> str:
    if not groups:
        return "No warnings or errors."
    out = [table(("Count", "Level", "Event", "Message", "First", "Last"),
                 [(g["count"], g["level"], g["event"], g["message"][:60], g["first"], g["last"])
                  for g in groups])]
    out.append("Examples:")
    out += [f"  {g['where']}: {g['example'][:300]}" for g in groups]
    return "\n".join(out)
