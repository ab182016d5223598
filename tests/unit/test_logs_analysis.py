"""`consolectl logs`: the analysis core on hand-built lines (good, bad, out of order,
compose-prefixed), the sources (gz, directories, stdin, long lines) and the CLI's shapes
(DESIGN "Log analysis")."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consoleauth.ctl import logs as ctl_logs
from consoleauth.ctl.main import main
from consoleauth.loganalysis.analysis import Analysis
from consoleauth.loganalysis.durations import Durations
from consoleauth.loganalysis.lines import split_prefix
from consoleauth.loganalysis.rows import ROW_KEYS, SessionFilter
from consoleauth.loganalysis.report import render
from consoleauth.loganalysis.sources import Source, expand, split_lines
from tests.support import VENV_BIN


def line(event: str, ts: str, service: str = "novncproxy", level: str = "info",
         **fields: object) -> str:
    """A line as the services write it (structlog JSONRenderer, timestamp last)."""
    return json.dumps({**fields, "event": event, "service": service, "level": level,
                       "timestamp": f"2026-12-03T{ts}Z"})


def start(sid: str, ts: str, instance: str = "vm-1", client: str = "10.0.0.1",
          service: str = "novncproxy", **extra: object) -> str:
    kind = "novnc" if service == "novncproxy" else "xvpvnc"
    return line("session.start", ts, service, kind=kind, instance_uuid=instance,
                target="10.1.0.5:5900", client_port=50000, client=client, session_id=sid,
                token_id="abcdef012345", **extra)


def end(sid: str, ts: str, duration: float, up: int = 10, down: int = 1000,
        reason: str = "client_closed", instance: str = "vm-1", client: str = "10.0.0.1",
        service: str = "novncproxy", level: str = "info") -> str:
    kind = "novnc" if service == "novncproxy" else "xvpvnc"
    return line("session.end", ts, service, level, close_reason=reason, bytes_up=up,
                bytes_down=down, duration_s=duration, kind=kind, instance_uuid=instance,
                client=client, session_id=sid, token_id="abcdef012345")


def refused(ts: str, reason: str = "invalid_token", status: int = 401,
            client: str = "10.0.0.9") -> str:
    return line("session.refused", ts, reason=reason, detail="x", status=status,
                client=client, client_port=40000)


# A small day: three sessions on two proxies, refusals, a probe, a failed connect, warnings.
NOVNC = [
    line("service.start", "10:00:00.000000", listen="0.0.0.0:6080"),
    start("s1", "10:00:05.000000"),
    refused("10:00:30.000000"),
    start("s2", "10:01:10.000000", instance="vm-2", client="10.0.0.2"),
    end("s1", "10:02:05.000000", 120.0, up=100, down=5000),
    refused("10:02:10.000000", reason="limit_instance", status=429),
    line("events.link_down", "10:02:20.000000", level="warning", reason="no heartbeat"),
    line("events.link_down", "10:02:50.000000", level="warning", reason="no heartbeat"),
    end("s2", "10:03:10.500000", 120.5, up=50, down=7000, reason="revoked", instance="vm-2",
        client="10.0.0.2"),
]
XVP = [
    line("xvp.refused", "10:00:40.000000", "xvpvncproxy", client="10.0.0.8", client_port=1,
         status=None, reason="connection closed before any request"),
    line("xvp.refused", "10:00:41.000000", "xvpvncproxy", client="10.0.0.8", client_port=2,
         status=401, reason="invalid or expired token"),
    start("x1", "10:01:00.000000", service="xvpvncproxy"),
    end("x2", "10:01:30.000000", 0.004, up=0, down=0, reason="connect_failed",
        service="xvpvncproxy", level="warning"),
    line("bus.handler_failed", "10:01:31.000000", "xvpvncproxy", level="error",
         exception=[{"exc_type": "ValueError", "exc_value": "boom", "frames": []}]),
]


def analyse(*sources: tuple[str, list[str]], **kwargs: object) -> Analysis:
    analysis = Analysis(**kwargs)  # type: ignore[arg-type]
    for name, lines in sources:
        analysis.consume([text.encode() for text in lines], name)
    analysis.finish()
    return analysis


def test_summary_counts_sessions_refusals_bytes_and_problems() -> None:
    s = analyse(("novncproxy.log", NOVNC), ("xvpvncproxy.log", XVP)).summary()
    for key in ("sessions_started", "sessions_ended", "sessions_open", "refusals",
                "refusals_by_reason", "close_reasons", "bytes_up", "bytes_down",
                "skipped_lines", "first", "last", "services", "top_instances", "top_clients"):
        assert key in s, key
    assert (s["sessions_started"], s["sessions_ended"], s["sessions_open"]) == (3, 3, 1)
    assert s["refusals"] == 3  # the probe (status null) is not one
    assert s["refusals_by_reason"] == {"invalid_token": 2, "limit_instance": 1}
    assert s["close_reasons"] == {"client_closed": 1, "revoked": 1, "connect_failed": 1}
    assert (s["bytes_up"], s["bytes_down"]) == (150, 12000)
    assert s["first"] == "2026-12-03T10:00:00.000000Z"
    assert s["last"] == "2026-12-03T10:03:10.500000Z"
    assert s["services"] == {"novncproxy": {"lines": 9, "warnings": 2, "errors": 0},
                             "xvpvncproxy": {"lines": 5, "warnings": 1, "errors": 1}}
    # connect_failed never relayed: not a duration
    assert s["duration_s"] == {"count": 2, "p50": 120.0, "p95": 120.5, "max": 120.5}
    assert s["top_instances"][0] == {"instance_uuid": "vm-1", "sessions": 2, "bytes_up": 100,
                                     "bytes_down": 5000, "bytes": 5100, "duration_s": 120.004}
    assert [c["client"] for c in s["top_clients_by_bytes"]][:2] == ["10.0.0.2", "10.0.0.1"]
    assert s["skipped_lines"] == 0 and s["lines"] == 14


def test_sessions_rows_join_start_and_end_and_show_open_sessions() -> None:
    rows = analyse(("n.log", NOVNC), ("x.log", XVP), keep=SessionFilter()).session_rows()
    assert [r["session_id"] for r in rows] == ["s1", "x1", "s2", "x2"]  # by start
    assert all(list(r) == list(ROW_KEYS) for r in rows)
    s1, x1, s2, x2 = rows
    assert s1 == {"session_id": "s1", "service": "novncproxy", "kind": "novnc",
                  "instance_uuid": "vm-1", "client": "10.0.0.1",
                  "started": "2026-12-03T10:00:05.000000Z", "ended": "2026-12-03T10:02:05.000000Z",
                  "duration_s": 120.0, "bytes_up": 100, "bytes_down": 5000,
                  "close_reason": "client_closed", "state": "ended"}
    assert x1["ended"] is None and x1["state"] == "open" and x1["close_reason"] is None
    assert x1["duration_s"] == 130.5  # so far: to the last line of the input
    assert x2["close_reason"] == "connect_failed"
    assert x2["started"] == "2026-12-03T10:01:29.996000Z"  # its end minus duration_s
    assert s2["close_reason"] == "revoked"


def test_bad_lines_are_counted_with_the_first_place_never_fatal() -> None:
    lines = [
        start("s1", "10:00:00.000000"),
        "Traceback (most recent call last):",  # not JSON
        '{"event": "session.end", "service": "novncproxy", "lev',  # truncated
        "[1, 2, 3]",  # JSON, not ours
        '{"event": "x", "service": "s", "level": "info"}',  # no timestamp
        '{"event": "x", "service": ["a"], "level": "info", "timestamp": "2026-12-03T10:00:00Z"}',
        '{"event": "x", "service": "s", "level": "info", "timestamp": 5}',
        "",  # blank: not a log line, not counted
        '{"a": 1} trailing',  # not JSON
        line("session.start", "10:00:09.000000"),  # ours, but no session_id
        end("s1", "10:00:10.000000", 10.0),
    ]
    analysis = analyse(("novncproxy.log", lines))
    s = analysis.summary()
    assert s["skipped"] == {"not JSON": {"count": 2, "first": "novncproxy.log:2"},
                            "truncated": {"count": 1, "first": "novncproxy.log:3"},
                            "not ours": {"count": 4, "first": "novncproxy.log:4"},
                            "incomplete session line": {"count": 1,
                                                        "first": "novncproxy.log:10"}}
    assert s["skipped_lines"] == 8
    assert (s["sessions_started"], s["sessions_ended"]) == (1, 1)
    assert analysis.skip_notice() == (
        "8 lines skipped: 4 not ours (first: novncproxy.log:4), 2 not JSON (first: "
        "novncproxy.log:2), 1 truncated (first: novncproxy.log:3), 1 incomplete session line "
        "(first: novncproxy.log:10)")
    only = analyse(("a.log", ["nope", "nope", "nope"]))
    assert only.skip_notice() == "3 lines skipped: not JSON (first: a.log:1)"


def test_fields_of_any_json_type_never_crash_the_analysis() -> None:
    """Every field of every line the analysis reads, replaced by each JSON type."""
    base = [start("s1", "10:00:00.000000", worker=0), end("s1", "10:00:10.000000", 10.0),
            end("s2", "10:00:11.000000", 1.0, reason="connect_failed"), refused("10:00:12.0"),
            line("xvp.refused", "10:00:13.000000", "xvpvncproxy", status=401, reason="x"),
            line("service.start", "10:00:14.000000", worker=0),
            line("worker.died", "10:00:15.000000", level="error", worker=0),
            line("bus.request_failed", "10:00:16.000000", level="warning", error="boom")]
    odd = [None, 7, -1, 2.5, True, [1, 2], {"a": [1]}, "", "x" * 300, "2026-13-45T99:99:99Z",
           "xxxxxxxxxxTxxxxx", "2026-12-03T10:00:00+02:00"]
    variants = []
    for text in base:
        rec = json.loads(text)
        for field in rec:
            for value in odd:
                variants.append(json.dumps({**rec, field: value}))
    for keep in (None, SessionFilter(), SessionFilter(since=datetime(2026, 1, 1, tzinfo=UTC))):
        analysis = analyse(("odd.log", base + variants), keep=keep)
        json.dumps(analysis.summary())
        json.dumps(analysis.session_rows())
        json.dumps(analysis.error_groups())
        analysis.timeline()
        render(analysis.summary(), analysis.timeline(), analysis.durations.histogram,
               analysis.error_groups(), ["odd.log"], "now")
    assert analysis.skipped_lines() > 0


def test_an_end_read_before_its_start_is_joined_and_a_lone_end_began_earlier() -> None:
    newer = [end("s1", "10:05:00.000000", 300.0), end("old", "10:00:30.000000", 90.0)]
    older = [start("s1", "10:00:00.000000")]
    analysis = analyse(("n.log", newer), ("n.log.1", older), keep=SessionFilter())
    rows = {r["session_id"]: r for r in analysis.session_rows()}
    assert rows["s1"]["started"] == "2026-12-03T10:00:00.000000Z"
    assert rows["s1"]["state"] == "ended"
    assert rows["old"]["started"] == "2026-12-03T09:59:00.000000Z"
    s = analysis.summary()
    assert (s["sessions_started"], s["sessions_ended"], s["sessions_open"]) == (1, 2, 0)
    assert s["top_instances"][0]["sessions"] == 2
    t = analysis.timeline()
    assert t["times"][0] == "2026-12-03T09:59Z"
    assert max(t["active"]) == 2 and t["active"][-1] == 1  # both open in 10:00, s1 to 10:05


def test_a_restart_of_the_process_makes_its_open_sessions_unknown() -> None:
    lines = [start("a", "10:00:00.000000"), start("b", "10:00:01.000000"),
             end("b", "10:00:02.000000", 1.0),
             line("service.start", "10:30:00.000000"), start("c", "10:31:00.000000")]
    other = [start("z", "10:00:00.000000", service="xvpvncproxy"),
             line("service.stop", "10:10:00.000000", "xvpvncproxy")]
    # pre-fork workers share a log; the master names the one that died
    workers = [start("w0", "10:00:00.000000", worker=0), start("w1", "10:00:00.000000", worker=1),
               line("worker.died", "10:01:00.000000", level="error", worker=1, pid=7,
                    exit_code=-9, replaced=True)]
    analysis = analyse(("n.log", lines), ("x.log", other), ("w.log", workers),
                       keep=SessionFilter())
    state = {r["session_id"]: r["state"] for r in analysis.session_rows()}
    assert state == {"a": "unknown", "b": "ended", "c": "open", "z": "unknown",
                     "w0": "open", "w1": "unknown"}
    s = analysis.summary()
    assert (s["sessions_open"], s["sessions_unknown"]) == (2, 3)


def test_compose_prefixed_coloured_and_timestamped_lines() -> None:
    a = start("s1", "10:00:00.000000")
    assert split_prefix(f"novncproxy-1  | {a}".encode()) == ("novncproxy-1", a.encode())
    coloured = f"\x1b[36mnovncproxy-2  |\x1b[0m {a}".encode()
    assert split_prefix(coloured) == ("novncproxy-2", a.encode())
    stamped = f"xvp-1  | 2026-12-03T10:00:00.123456789Z {a}".encode()
    assert split_prefix(stamped) == ("xvp-1", a.encode())
    assert split_prefix(b"novncproxy-1  |") == ("novncproxy-1", b"")
    # two replicas in one compose output: a restart of one leaves the other's session open
    lines = [f"novncproxy-1  | {start('r1', '10:00:00.000000')}",
             f"novncproxy-2  | {start('r2', '10:00:00.000000')}",
             "novncproxy-1  |",
             f"novncproxy-1  | {line('service.start', '10:05:00.000000')}",
             "Attaching to consoleauth-1, novncproxy-1, novncproxy-2"]
    analysis = analyse(("compose.txt", lines), keep=SessionFilter())
    assert {r["session_id"]: r["state"] for r in analysis.session_rows()} == {
        "r1": "unknown", "r2": "open"}
    assert analysis.skipped == {"not JSON": [1, "compose.txt:5"]}


def test_filters_limit_and_relative_times() -> None:
    lines = [start("s1", "10:00:00.000000"), end("s1", "10:00:30.000000", 30.0),
             start("s2", "11:00:00.000000", instance="vm-2", client="10.0.0.2"),
             end("s2", "11:10:00.000000", 600.0, reason="idle_timeout", instance="vm-2",
                 client="10.0.0.2"),
             start("s3", "12:00:00.000000", service="xvpvncproxy")]

    def ids(**kw: object) -> list[str]:
        limit = kw.pop("limit", None)
        return [r["session_id"] for r in analyse(("n.log", lines), keep=SessionFilter(**kw),
                                                 limit=limit).session_rows()]

    assert ids() == ["s1", "s2", "s3"]
    assert ids(instance="vm-2") == ["s2"]
    assert ids(client="10.0.0.1") == ["s1", "s3"]
    assert ids(service="xvpvncproxy") == ["s3"]
    assert ids(reason="idle_timeout") == ["s2"]
    assert ids(reason="open") == ["s3"]
    assert ids(min_duration=60) == ["s2"]
    now = datetime(2026, 12, 3, 12, 30, tzinfo=UTC)
    assert ids(since=ctl_logs._when("2h", now)) == ["s2", "s3"]  # since 10:30
    assert ids(until=ctl_logs._when("2026-12-03T11:00:00", now)) == ["s1", "s2"]
    assert ids(since=ctl_logs._when("2026-12-03T10:30Z", now),
               until=ctl_logs._when("90m", now)) == ["s2"]
    assert ids(limit=2) == ["s1", "s2"]
    assert ids(limit=1, service="novncproxy") == ["s1"]
    assert ctl_logs._seconds("5m") == 300 and ctl_logs._seconds("90") == 90


def test_durations_are_exact_then_folded_within_one_percent() -> None:
    exact = Durations()
    for v in (1.0, 2.0, 3.0, 4.0, 100.0):
        exact.add(v)
    assert (exact.quantile(0.5), exact.quantile(0.95), exact.max) == (3.0, 100.0, 100.0)
    folded = Durations(cap=100)
    for i in range(1, 10001):
        folded.add(i / 10)  # 0.1 .. 1000 s
    assert folded.values is None  # bounded: buckets now
    assert folded.quantile(0.5) == pytest.approx(500.0, rel=0.01)
    assert folded.quantile(0.95) == pytest.approx(950.0, rel=0.01)
    assert folded.histogram == [9, 90, 500, 2400, 6000, 1001, 0, 0]


def test_timeline_fills_gaps_and_widens_its_step_on_long_ranges() -> None:
    lines = [start("a", "10:00:00.000000"), refused("10:00:10.000000"),
             end("a", "10:03:59.000000", 239.0, up=5, down=7),
             refused("10:05:00.000000")]
    t = analyse(("n.log", lines)).timeline()
    assert t["step_minutes"] == 1
    assert t["times"] == [f"2026-12-03T10:0{m}Z" for m in range(6)]
    assert t["started"] == [1, 0, 0, 0, 0, 0]
    assert t["refused"] == [1, 0, 0, 0, 0, 1]
    assert t["bytes_down"] == [0, 0, 0, 7, 0, 0]
    assert t["active"] == [1, 1, 1, 1, 0, 0]
    wide = analyse(("n.log", lines)).timeline(max_points=3)
    assert wide["step_minutes"] == 2 and len(wide["times"]) == 3
    assert wide["refused"] == [1, 0, 1] and wide["active"] == [1, 1, 0]


def test_split_lines_bounds_long_lines_across_chunks() -> None:
    data = b"a\n" + b"x" * 50 + b"\nb\nc"
    out = list(split_lines(io.BytesIO(data), chunk=8, max_line=20))
    assert out[0] == b"a" and out[2:] == [b"b", b"c"]
    assert out[1] == b"\x00line too long\x00"
    analysis = Analysis()
    analysis.consume(out, "big.log")
    assert analysis.skipped["too long"] == [1, "big.log:2"]
    assert list(split_lines(io.BytesIO(b"x" * 50), chunk=8, max_line=20)) == [
        b"\x00line too long\x00"]


def test_directories_gz_and_rotation_order(tmp_path: Path) -> None:
    (tmp_path / "novncproxy.log").write_text(end("s1", "10:05:00.000000", 300.0) + "\n")
    with gzip.open(tmp_path / "novncproxy.log.2.gz", "wt") as fh:
        fh.write(line("service.start", "09:00:00.000000") + "\n")
    (tmp_path / "novncproxy.log.1").write_text(start("s1", "10:00:00.000000") + "\n")
    (tmp_path / "notes.txt").write_text("not a log\n")
    names = [Path(s.name).name for s in expand([str(tmp_path)])]
    assert names == ["novncproxy.log.2.gz", "novncproxy.log.1", "novncproxy.log"]
    broken = tmp_path / "cut.log.gz"
    broken.write_bytes(gzip.compress((start("s9", "10:00:00.000000") + "\n").encode() * 500)[:-40])
    source = Source(str(broken), broken)
    analysis = Analysis()
    count = analysis.consume(source.read(), source.name)
    assert source.error and "read failed" in source.error and count >= 0


def run_ctl(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_summary_sessions_errors_shapes(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "novncproxy.log").write_text("\n".join(NOVNC + ["garbage"]) + "\n")
    with gzip.open(logs / "xvpvncproxy.log.gz", "wt") as fh:
        fh.write("\n".join(XVP) + "\n")
    code, out, err = run_ctl(capsys, "logs", "summary", "--json", str(logs))
    assert code == 0
    summary = json.loads(out)
    assert summary["sessions_started"] == 3 and summary["refusals"] == 3
    assert summary["skipped_lines"] == 1
    assert err.strip() == f"consolectl: 1 line skipped: not JSON (first: {logs}/novncproxy.log:10)"
    code, out, _ = run_ctl(capsys, "logs", "sessions", str(logs), "--json", "--instance", "vm-1")
    rows = json.loads(out)
    assert [r["session_id"] for r in rows] == ["s1", "x1", "x2"]
    assert all(set(r) >= {"session_id", "service", "kind", "instance_uuid", "client", "started",
                          "ended", "duration_s", "bytes_up", "bytes_down", "close_reason"}
               for r in rows)
    code, out, _ = run_ctl(capsys, "logs", "sessions", str(logs), "--csv")
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == list(ROW_KEYS) and len(table) == 5
    assert table[1][:2] == ["s1", "novncproxy"] and table[2][6] == ""  # x1 still open
    code, out, _ = run_ctl(capsys, "logs", "errors", "--json", str(logs))
    groups = json.loads(out)
    assert [(g["event"], g["message"], g["count"]) for g in groups] == [
        ("events.link_down", "no heartbeat", 2), ("bus.handler_failed", "ValueError: boom", 1),
        ("session.end", "connect_failed", 1)]
    assert groups[0]["first"] == "2026-12-03T10:02:20.000000Z"
    assert groups[0]["last"] == "2026-12-03T10:02:50.000000Z"
    assert json.loads(groups[0]["example"])["event"] == "events.link_down"
    code, out, _ = run_ctl(capsys, "logs", "summary", str(logs))
    assert "Sessions: 3 started, 3 ended, 1 still open, 0 end unknown" in out
    assert "Refusals: 3 (invalid_token 2, limit_instance 1)" in out
    code, out, _ = run_ctl(capsys, "logs", "errors", str(logs))
    assert "events.link_down" in out and "Examples:" in out
    code, out, _ = run_ctl(capsys, "logs", "sessions", str(logs), "--reason", "nothing")
    assert code == 0 and out.strip() == "No sessions."


def test_cli_report_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "n.log"
    log.write_text("\n".join(NOVNC + XVP) + "\n")
    html = tmp_path / "report.html"
    code, out, _ = run_ctl(capsys, "logs", "report", str(log), "--html", str(html), "--json")
    assert code == 0
    meta = json.loads(out)
    assert meta["points"] == 4 and meta["summary"]["refusals"] == 3
    page = html.read_text()
    assert page.count('class="point"') == 4 and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    code, _, err = run_ctl(capsys, "logs", "summary", str(tmp_path / "missing.log"))
    assert code == 2 and err.strip() == (f"consolectl: error: {tmp_path}/missing.log: no such "
                                         "file or directory")
    with pytest.raises(SystemExit) as exit_:
        main(["logs", "sessions", str(log), "--since", "yesterday-ish"])
    assert exit_.value.code == 2
    (tmp_path / "empty").mkdir()
    code, _, err = run_ctl(capsys, "logs", "summary", str(tmp_path / "empty"))
    assert code == 2 and "no *.log* files" in err
    code, _, err = run_ctl(capsys, "logs", "report", str(log), "--html",
                           str(tmp_path / "no" / "dir" / "r.html"))
    assert code == 2 and "cannot write" in err


def test_render_marks_every_plotted_value() -> None:
    analysis = analyse(("n.log", NOVNC), ("x.log", XVP))
    page = render(analysis.summary(), analysis.timeline(), analysis.durations.histogram,
                  analysis.error_groups(), ["n.log", "x.log"], "now")
    assert page.count('data-series="started"') == 4 == page.count('data-series="refused"')
    assert page.count('data-series="up"') == 4
    assert 'data-chart="durations" data-count="8"' in page
    assert 'data-chart="instances" data-count="2"' in page


def test_stdin_is_read_when_piped() -> None:
    """The real command, lines piped in with no PATH (and with -)."""
    text = "\n".join(NOVNC) + "\n"
    for extra in ([], ["-"]):
        result = subprocess.run([str(VENV_BIN / "consolectl"), "logs", "summary", "--json",
                                 *extra], input=text, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["sessions_ended"] == 2


def test_no_input_on_a_terminal_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty())
    code, _, err = run_ctl(capsys, "logs", "summary")
    assert code == 2 and "no input" in err
