"""The log analysis core: the suite's JSON log lines in; sessions, refusals, errors and
per-minute series out. Pure: no files, no clock, no printing (``sources`` reads, the CLI
prints), so a test feeds it hand-built lines.

    analysis = Analysis(keep=SessionFilter(instance="vm-1"))
    analysis.consume(lines, origin="novncproxy.log")   # any iterable of bytes lines
    analysis.finish()
    analysis.summary(); analysis.session_rows(); analysis.error_groups(); analysis.timeline()

Streaming: memory grows with the sessions open at once, instances, clients, error groups
(capped) and minutes of the time range, never with the number of lines. Kept session rows
(``sessions``) are the output itself; ``limit`` keeps at most about twice that many.

Every line is decoded with orjson (about 4x the standard library's json.loads here; the
benchmark in bench/logs.py): a line we count is a line we checked, so a cheap substring
pre-filter would save little and could miscount.

Joining: ``session.start`` and ``session.end`` meet by ``session_id`` in any order (files
may be read newest first). An end without a start began before the logs did (its start is
its end minus ``duration_s``), except ``close_reason=connect_failed``, which never relayed.
A session still open when its process logged ``service.start`` or ``service.stop`` again
(or its pre-fork master ``worker.died``) lost its end (the process died or the log was
cut): its state is ``unknown``; one open at
the end of the input is ``open``. A process is the source, the compose replica prefix and
the pre-fork ``worker`` field together.

Times: the services write ISO-8601 UTC with microseconds (``2026-12-03T06:33:46.360596Z``),
which sorts as text, so per-line work compares strings and takes the minute as the first
16 characters; only session rows parse a time (and rewrite any other spelling to that one).
A line with another UTC offset is still read, but falls in the minute its own text names.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from operator import itemgetter
from sys import intern
from typing import Any

import orjson

from consoleauth.loganalysis.durations import Durations
from consoleauth.loganalysis.lines import (TOO_LONG_LINE, canonical, iso, message_of, parse_time,
                                           split_prefix)
from consoleauth.loganalysis.rows import KEEP_ALL, ROW_KEYS

# Why a line was skipped (the words of the report: "3 lines skipped: not JSON (first: ...)").
NOT_JSON, TRUNCATED, NOT_OURS, INCOMPLETE, TOO_LONG = (
    "not JSON", "truncated", "not ours", "incomplete session line", "too long")

# xvpvncproxy logs refusals that are not limits as ``xvp.refused`` with the HTTP status it
# answered (None: closed before any request, a health probe, not a refusal).
REASON_OF_STATUS = {400: "bad_request", 401: "invalid_token", 403: "invalid_token",
                    408: "head_timeout", 413: "head_too_large", 431: "head_too_large",
                    429: "limited", 503: "consoleauth_unavailable"}

MAX_EXAMPLE = 2000
MAX_ERROR_GROUPS = 10_000  # distinct (event, message) pairs kept; the rest pooled
PROBLEM_LEVELS = frozenset({"warning", "error", "critical"})

_FIRST = itemgetter(0)
_SERVICE_FIELDS = ("lines", "warnings", "errors")
# Per-minute bucket slots.
_STARTED, _ENDED, _REFUSED, _UP, _DOWN, _OPENED, _CLOSED = range(7)


class Analysis:
    def __init__(self, keep: Callable[[dict[str, Any], str | None], bool] | None = None,
                 limit: int | None = None, max_error_groups: int = MAX_ERROR_GROUPS) -> None:
        self.keep = keep  # None: keep no rows (summary, errors, report)
        self.max_error_groups = max_error_groups
        self.limit = limit
        self.lines = 0
        self.first: str | None = None
        self.last: str | None = None
        self.services: dict[str, list[int]] = {}
        self.skipped: dict[str, list[Any]] = {}  # reason -> [count, first "source:line"]
        self.sessions_started = self.sessions_ended = self.sessions_unknown = 0
        self.refusals = 0
        self.refusals_by_reason: Counter[str] = Counter()
        self.close_reasons: Counter[str] = Counter()
        self.bytes_up = self.bytes_down = 0
        self.durations = Durations()
        self.instances: dict[str, list[float]] = {}  # uuid -> [sessions, up, down, seconds]
        self.clients: dict[str, list[float]] = {}  # addr -> [sessions, up, down, seconds, refused]
        self.minutes: dict[str, list[int]] = {}  # "YYYY-MM-DDTHH:MM" -> slots above
        # session_id -> (start ts, service, kind, instance, client, process)
        self.open: dict[str, tuple[Any, ...]] = {}
        self.by_process: dict[tuple[Any, ...], set[str]] = {}
        self.orphans: dict[str, dict[str, Any]] = {}  # ends seen before their start
        self.errors: dict[tuple[str, str], list[Any]] = {}
        self._rows: list[tuple[str, tuple[Any, ...]]] = []  # (start, values)
        self._handlers: dict[str, Callable[..., None]] = {
            "session.start": self._start, "session.end": self._end,
            "session.refused": self._refused, "xvp.refused": self._xvp_refused,
            "service.start": self._restart, "service.stop": self._restart,
            # a pre-fork master names the worker that died: that worker's sessions
            "worker.died": self._restart, "worker.exit": self._restart,
        }
        self._finished = False

    # ---- feeding ----------------------------------------------------------------------------

    def skip(self, reason: str, where: str, count: int = 1) -> None:
        entry = self.skipped.get(reason)
        if entry is None:
            self.skipped[reason] = [count, where]
        else:
            entry[0] += count

    def consume(self, lines: Iterable[bytes], origin: str) -> int:
        """Feed one source's lines (bytes, newline or not); ``origin`` names the source in
        reports (``novncproxy.log:1203``). Returns the number of lines read.

        The hot loop: one orjson decode and a few dict look-ups per line; type checks only
        on the rare paths (a new service name, a level other than info)."""
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        services, handlers = self.services, self._handlers
        first, last = self.first or "\uffff", self.last or ""
        number = 0
        for raw in lines:
            number += 1
            replica = None
            if raw[:1] != b"{":
                if raw is TOO_LONG_LINE:
                    self.skip(TOO_LONG, f"{origin}:{number}")
                    continue
                replica, raw = split_prefix(raw)
                if not raw:
                    continue  # blank lines are not log lines
            try:
                rec = loads(raw)
                ts = rec["timestamp"]
                service = rec["service"]
                level = rec["level"]
                event = rec["event"]
                # a str timestamp ("2026-12-03T..."): a list slices to no "T", others raise
                ours = ts[10:11] == "T"
                stats = services.get(service)  # unhashable values raise TypeError
                handler = handlers.get(event)
            except decode_error as exc:  # cut short: the decoder ran out at the very end
                cut = raw[:1] == b"{" and exc.pos >= len(raw.rstrip())
                self.skip(TRUNCATED if cut else NOT_JSON, f"{origin}:{number}")
                continue
            except (KeyError, TypeError, IndexError):
                ours = False
            if not ours:
                self.skip(NOT_OURS, f"{origin}:{number}")
                continue
            if stats is None:
                if type(service) is not str or type(event) is not str:
                    self.skip(NOT_OURS, f"{origin}:{number}")
                    continue
                stats = services[service] = [0, 0, 0]
            if level != "info":
                if type(level) is not str or type(event) is not str:
                    self.skip(NOT_OURS, f"{origin}:{number}")
                    continue
                if level in PROBLEM_LEVELS:
                    stats[1 if level == "warning" else 2] += 1
                    self._problem(rec, ts, service, level, event, raw, f"{origin}:{number}")
            stats[0] += 1
            if ts < first:
                first = ts
            if ts > last:
                last = ts
            if handler is not None:
                handler(rec, ts, service, origin, replica, number)
        self.lines += number
        self.first = None if first == "\uffff" else first
        self.last = last or None
        return number

    # ---- events -----------------------------------------------------------------------------

    def _minute(self, ts: str) -> list[int]:
        bucket = self.minutes.get(ts[:16])
        if bucket is None:
            bucket = self.minutes[ts[:16]] = [0, 0, 0, 0, 0, 0, 0]
        return bucket

    @staticmethod
    def _stats(table: dict[Any, list[float]], key: Any, width: int) -> list[float]:
        stats = table.get(key)
        if stats is None:
            stats = table[key] = [0] * width
        return stats

    @staticmethod
    def _valid_time(ts: str) -> datetime | None:
        try:
            return parse_time(ts)
        except ValueError:
            return None

    def _start(self, rec: dict[str, Any], ts: str, service: str, origin: str,
               replica: str | None, number: int) -> None:
        sid = rec.get("session_id")
        if type(sid) is not str:
            self.skip(INCOMPLETE, f"{origin}:{number}")
            return
        self.sessions_started += 1
        bucket = self._minute(ts)
        bucket[_STARTED] += 1
        bucket[_OPENED] += 1
        instance, client = _shared(rec.get("instance_uuid")), _shared(rec.get("client"))
        (self.instances.get(instance) or self._stats(self.instances, instance, 4))[0] += 1
        (self.clients.get(client) or self._stats(self.clients, client, 5))[0] += 1
        if self.orphans:
            orphan = self.orphans.pop(sid, None)
            if orphan is not None:  # its end came first (files read newest first)
                self._closed_at(orphan["ended"])
                orphan.update(started=ts, service=service, kind=orphan["kind"] or rec.get("kind"),
                              state="ended")
                self._row(orphan)
                return
        proc = (origin, replica, _worker(rec))
        if sid in self.open:  # the same id started again (a line read twice): the last wins
            self._forget(sid)
            self._closed_at(ts)
        kind = rec.get("kind")
        # one copy of each repeated string for every row that keeps it
        self.open[sid] = (ts, intern(service), intern(kind) if type(kind) is str else kind,
                          instance, client, proc)
        sessions = self.by_process.get(proc)
        if sessions is None:
            self.by_process[proc] = {sid}
        else:
            sessions.add(sid)

    def _forget(self, sid: str) -> tuple[Any, ...] | None:
        """Take an open session out of ``open`` and its process's set."""
        opened = self.open.pop(sid, None)
        if opened is not None:
            sessions = self.by_process[opened[5]]
            sessions.discard(sid)
            if not sessions:
                del self.by_process[opened[5]]
        return opened

    def _closed_at(self, ts: str) -> None:
        self._minute(ts)[_CLOSED] += 1

    def _end(self, rec: dict[str, Any], ts: str, service: str, origin: str,
             replica: str | None, number: int) -> None:
        get = rec.get
        sid = get("session_id")
        if type(sid) is not str:
            self.skip(INCOMPLETE, f"{origin}:{number}")
            return
        up, down, duration = get("bytes_up"), get("bytes_down"), get("duration_s")
        if type(up) is not int or up < 0:
            up = 0
        if type(down) is not int or down < 0:
            down = 0
        if type(duration) is int:
            duration = float(duration)
        if type(duration) is not float or duration < 0:
            duration = None
        reason = get("close_reason")
        reason = intern(reason) if type(reason) is str else _text(reason)  # shared by rows
        self.sessions_ended += 1
        self.close_reasons[reason or "-"] += 1
        self.bytes_up += up
        self.bytes_down += down
        bucket = self._minute(ts)
        bucket[_ENDED] += 1
        bucket[_UP] += up
        bucket[_DOWN] += down
        relayed = reason != "connect_failed"
        if relayed and duration is not None:
            self.durations.add(duration)
        opened = self._forget(sid)
        if opened is not None:
            started, service, kind, instance, client, proc = opened
            bucket[_CLOSED] += 1
        else:
            started, kind = None, get("kind")
            instance, client = _text(get("instance_uuid")), _text(get("client"))
        seconds = duration or 0.0
        stats = self.instances.get(instance) or self._stats(self.instances, instance, 4)
        stats[1] += up
        stats[2] += down
        stats[3] += seconds
        stats = self.clients.get(client) or self._stats(self.clients, client, 5)
        stats[1] += up
        stats[2] += down
        stats[3] += seconds
        if opened is not None:
            if self.keep is not None:
                self._keep_row((sid, service, kind, instance, client, started, ts, duration,
                                up, down, reason, "ended"))
        else:
            row = {"session_id": sid, "service": service, "kind": kind,
                   "instance_uuid": instance, "client": client, "started": started,
                   "ended": ts, "duration_s": duration, "bytes_up": up, "bytes_down": down,
                   "close_reason": reason, "state": "ended"}
            if not relayed:  # never relayed: no start line; it began duration_s earlier
                row["started"] = self._before(ts, duration)
                self._row(row)
            else:  # an end with no start yet: the start may come in a later (older) file
                self.orphans[sid] = row

    def _refused(self, rec: dict[str, Any], ts: str, service: str, origin: str,
                 replica: str | None, number: int, reason: str | None = None) -> None:
        self.refusals += 1
        self.refusals_by_reason[reason or _text(rec.get("reason")) or "-"] += 1
        self._minute(ts)[_REFUSED] += 1
        self._stats(self.clients, _text(rec.get("client")), 5)[4] += 1

    def _xvp_refused(self, rec: dict[str, Any], ts: str, service: str, origin: str,
                     replica: str | None, number: int) -> None:
        status = rec.get("status")
        if status is None:
            return  # closed before any request: a probe, not a refusal (DESIGN)
        reason = REASON_OF_STATUS.get(status) if type(status) is int else None
        self._refused(rec, ts, service, origin, replica, number, reason or "bad_request")

    def _restart(self, rec: dict[str, Any], ts: str, service: str, origin: str,
                 replica: str | None, number: int) -> None:
        """The process logged service.start/stop (or its pre-fork master logged that the
        worker died): its sessions still open lost their end."""
        lost = self.by_process.pop((origin, replica, _worker(rec)), None)
        if not lost:
            return
        for sid in lost:
            started, service, kind, instance, client, _ = self.open.pop(sid)
            self.sessions_unknown += 1
            self._closed_at(ts)
            self._row({"session_id": sid, "service": service, "kind": kind,
                       "instance_uuid": instance, "client": client, "started": started,
                       "ended": None, "duration_s": None, "bytes_up": None,
                       "bytes_down": None, "close_reason": None, "state": "unknown"})

    def _problem(self, rec: dict[str, Any], ts: str, service: str, level: str, event: str,
                 raw: bytes, where: str) -> None:
        key = (event, message_of(rec))
        group = self.errors.get(key)
        if group is None:
            if len(self.errors) >= self.max_error_groups:
                key = (event, "(more distinct messages than kept)")
                group = self.errors.get(key)
            if group is None:
                example = raw.decode("utf-8", "replace").strip()[:MAX_EXAMPLE]
                # [count, first, last, level, services, example, where]
                group = self.errors[key] = [0, ts, ts, level, set(), example, where]
        group[0] += 1
        if ts < group[1]:
            group[1] = ts
        if ts > group[2]:
            group[2] = ts
        if level == "error" or level == "critical":
            group[3] = level
        group[4].add(service)

    # ---- rows ---------------------------------------------------------------------------------

    @staticmethod
    def _before(ts: str, seconds: float | None) -> str | None:
        try:
            return iso(parse_time(ts) - timedelta(seconds=seconds or 0))
        except (ValueError, OverflowError):
            return None

    def _row(self, row: dict[str, Any]) -> None:
        if self.keep is not None:
            self._keep_row(tuple(row.values()))  # every row dict is built in ROW_KEYS order

    def _keep_row(self, values: tuple[Any, ...]) -> None:
        """Keep a row (a tuple in ROW_KEYS order: a third of a dict's memory) if it passes
        the filter."""
        keep = self.keep
        started = values[5]
        if started is not None and not (len(started) == 27 and started[26] == "Z"
                                        and started[19] == "."):
            started = canonical(started)  # None: not a time, sorted last
            values = (*values[:5], started, *values[6:])
        if keep is not KEEP_ALL and not keep(dict(zip(ROW_KEYS, values)), started):  # type: ignore[misc]
            return
        rows = self._rows
        rows.append((started or "\uffff", values))
        if self.limit is not None and len(rows) >= 2 * self.limit + 1024:
            rows.sort(key=_FIRST)  # keep the ``limit`` earliest; amortised O(log limit) a row
            del rows[self.limit:]

    def finish(self) -> None:
        """End of input: ends without a start began before the logs did; sessions with no
        end are open. Idempotent."""
        if self._finished:
            return
        self._finished = True
        for sid, row in self.orphans.items():
            row["started"] = self._before(row["ended"], row["duration_s"])
            self._minute(row["started"] or row["ended"])[_OPENED] += 1
            self._closed_at(row["ended"])
            self._stats(self.instances, row["instance_uuid"], 4)[0] += 1
            self._stats(self.clients, row["client"], 5)[0] += 1
            self._row(row)
        self.orphans.clear()
        last = self._valid_time(self.last) if self.last else None
        for sid, (started, service, kind, instance, client, _) in self.open.items():
            begun = self._valid_time(started)
            so_far = round((last - begun).total_seconds(), 3) if last and begun else None
            self._row({"session_id": sid, "service": service, "kind": kind,
                       "instance_uuid": instance, "client": client, "started": started,
                       "ended": None, "duration_s": so_far, "bytes_up": None,
                       "bytes_down": None, "close_reason": None, "state": "open"})

    def iter_session_rows(self) -> Iterator[dict[str, Any]]:
        """The kept sessions, sorted by start (unknown starts last), one dict at a time."""
        self.finish()
        self._rows.sort(key=_FIRST)  # stable: equal starts stay in the order they came
        if self.limit is not None:
            del self._rows[self.limit:]
        for _, values in self._rows:
            yield dict(zip(ROW_KEYS, values))

    def session_rows(self) -> list[dict[str, Any]]:
        return list(self.iter_session_rows())

    # ---- results ------------------------------------------------------------------------------

    def skipped_lines(self) -> int:
        return sum(count for count, _ in self.skipped.values())

    def skip_notice(self) -> str | None:
        """"3 lines skipped: not JSON (first: novncproxy.log:1203)", or None."""
        if not self.skipped:
            return None
        total = self.skipped_lines()
        parts = [f"{count} {reason} (first: {where})" if len(self.skipped) > 1
                 else f"{reason} (first: {where})" for reason, (count, where)
                 in sorted(self.skipped.items(), key=lambda kv: -kv[1][0])]
        return f"{total} line{'s' if total != 1 else ''} skipped: {', '.join(parts)}"

    def _top(self, table: dict[str, list[float]], name: str, by: Callable[[list[float]], Any],
             top: int) -> list[dict[str, Any]]:
        # largest first; ties by name, ascending
        ranked = sorted(table.items(),
                        key=lambda kv: (*(-x for x in by(kv[1])), str(kv[0])))[:top]
        out = []
        for key, stats in ranked:
            item = {name: key, "sessions": int(stats[0]), "bytes_up": int(stats[1]),
                    "bytes_down": int(stats[2]), "bytes": int(stats[1] + stats[2]),
                    "duration_s": round(stats[3], 3)}
            if len(stats) > 4:
                item["refusals"] = int(stats[4])
            out.append(item)
        return out

    def summary(self, top: int = 10) -> dict[str, Any]:
        """DESIGN "Log analysis": ``summary --json``."""
        self.finish()
        durations = self.durations
        result: dict[str, Any] = {
            "first": self.first, "last": self.last, "lines": self.lines,
            "skipped_lines": self.skipped_lines(),
            "skipped": {reason: {"count": count, "first": where}
                        for reason, (count, where) in self.skipped.items()},
            "services": {name: dict(zip(_SERVICE_FIELDS, stats))
                         for name, stats in sorted(self.services.items())},
            "sessions_started": self.sessions_started,
            "sessions_ended": self.sessions_ended,
            "sessions_open": len(self.open),
            "sessions_unknown": self.sessions_unknown,
            "refusals": self.refusals,
            "refusals_by_reason": dict(self.refusals_by_reason.most_common()),
            "close_reasons": dict(self.close_reasons.most_common()),
            "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
            "duration_s": {"count": durations.count, "p50": durations.quantile(0.5),
                           "p95": durations.quantile(0.95),
                           "max": durations.max if durations.count else None},
        }
        for name, table in (("instances", self.instances), ("clients", self.clients)):
            single = name[:-1] if name == "clients" else "instance_uuid"
            result[f"top_{name}"] = self._top(table, single, lambda s: (s[0], s[1] + s[2]), top)
            result[f"top_{name}_by_bytes"] = self._top(table, single, lambda s: (s[1] + s[2],), top)
            result[f"top_{name}_by_time"] = self._top(table, single, lambda s: (s[3],), top)
        return result

    def error_groups(self) -> list[dict[str, Any]]:
        """Warnings and errors grouped by (event, message), most frequent first."""
        groups = [{"event": event, "message": message, "level": g[3], "count": g[0],
                   "first": g[1], "last": g[2], "services": sorted(g[4]), "example": g[5],
                   "where": g[6]}
                  for (event, message), g in self.errors.items()]
        groups.sort(key=lambda g: (-g["count"], g["event"], g["message"]))
        return groups

    def timeline(self, max_points: int = 1440) -> dict[str, Any]:
        """Per-minute series from the first to the last minute seen (gaps are zeros); wider
        steps (5, 15, 60 ... minutes) when the range has more than ``max_points`` minutes.

        ``active`` is the number of sessions open at some time in each step: open when it
        began plus those that opened in it (a one-second session still shows)."""
        self.finish()
        keys = []
        for key in self.minutes:
            try:
                keys.append((parse_time(key + ":00"), key))
            except ValueError:
                continue
        if not keys:
            return {"step_minutes": 1, "times": [], "started": [], "refused": [],
                    "bytes_up": [], "bytes_down": [], "active": []}
        keys.sort()
        start, end = keys[0][0], keys[-1][0]
        minutes = int((end - start).total_seconds() // 60) + 1
        step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)
                     if minutes / s <= max_points), math.ceil(minutes / max_points))
        count = math.ceil(minutes / step)
        series = {name: [0] * count for name in ("started", "refused", "bytes_up",
                                                  "bytes_down", "opened", "closed")}
        slots = (("started", _STARTED), ("refused", _REFUSED), ("bytes_up", _UP),
                 ("bytes_down", _DOWN), ("opened", _OPENED), ("closed", _CLOSED))
        for when, key in keys:
            index = int((when - start).total_seconds() // 60) // step
            bucket = self.minutes[key]
            for name, slot in slots:
                series[name][index] += bucket[slot]
        active, now = [], 0
        for opened, closed in zip(series["opened"], series["closed"]):
            active.append(now + opened)
            now += opened - closed
        return {"step_minutes": step,
                "times": [iso(start + timedelta(minutes=i * step))[:16] + "Z"
                          for i in range(count)],
                "started": series["started"], "refused": series["refused"],
                "bytes_up": series["bytes_up"], "bytes_down": series["bytes_down"],
                "active": active}


def _worker(rec: dict[str, Any]) -> int | str | None:
    """The pre-fork worker index (part of a process's identity, so a dict key)."""
    worker = rec.get("worker")
    return worker if worker is None or type(worker) in (int, str) else str(worker)


def _shared(value: Any) -> str | None:
    """Text, one copy per distinct value (instances and clients repeat across sessions)."""
    return intern(value) if type(value) is str else _text(value)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value)


