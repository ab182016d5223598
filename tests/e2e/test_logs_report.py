"""The `consolectl logs report --html` page in headless Chromium: opened from disk with no
network, it renders with no console error and its charts hold one point or bar per minute
(or bucket) of the logs given, with the values the logs hold."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.e2e.cdp import Browser
from tests.support import VENV_BIN

MINUTES = 12  # 10:00 .. 10:11


def stamp(minute: int, second: int) -> str:
    return f"2026-12-03T10:{minute:02d}:{second:02d}.000000Z"


def write_log(path: Path) -> dict:
    """Sessions on 4 instances over 12 minutes, refusals, a warning; what was written."""
    lines, started, refused = [], [0] * MINUTES, [0] * MINUTES
    durations = []

    def put(event: str, ts: str, service: str = "novncproxy", level: str = "info",
            **fields: object) -> None:
        lines.append(json.dumps({**fields, "event": event, "service": service, "level": level,
                                 "timestamp": ts}))

    for i in range(9):
        begin, length = i, [0.5, 5, 30, 90, 200, 400, 20, 2, 70][i]
        instance = f"vm-{i % 4}"
        sid = f"s{i}"
        put("session.start", stamp(begin, 10), kind="novnc", session_id=sid,
            instance_uuid=instance, client=f"10.0.0.{i}", token_id="t")
        started[begin] += 1
        end_s = 10 + length
        put("session.end", stamp(begin + int(end_s // 60), int(end_s % 60)), kind="novnc",
            session_id=sid, instance_uuid=instance, client=f"10.0.0.{i}", bytes_up=100 * i,
            bytes_down=1000 * i, duration_s=float(length), close_reason="client_closed")
        durations.append(length)
    for minute in (1, 1, 4, 11):
        put("session.refused", stamp(minute, 30), reason="invalid_token", status=403,
            client="10.9.9.9")
        refused[minute] += 1
    put("events.link_down", stamp(3, 0), level="warning", reason="no heartbeat")
    lines.sort(key=lambda text: json.loads(text)["timestamp"])
    path.write_text("\n".join(lines) + "\nnot a log line\n")
    return {"started": started, "refused": refused, "durations": durations}


def test_report_renders_without_errors_and_plots_every_minute(tmp_path: Path,
                                                               browser: Browser) -> None:
    log = tmp_path / "novncproxy.log"
    wrote = write_log(log)
    html = tmp_path / "report.html"
    result = subprocess.run([str(VENV_BIN / "consolectl"), "logs", "report", str(log),
                             "--html", str(html)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "1 line skipped: not JSON" in result.stderr

    browser.navigate(html.as_uri())
    browser.pump_events(0.5)
    assert list(browser.console) == []
    charts = browser.evaluate("""(() => {
        const out = {};
        for (const svg of document.querySelectorAll("svg[data-chart]")) {
            const marks = [...svg.querySelectorAll(".point, .bar")];
            const box = svg.getBoundingClientRect();
            out[svg.dataset.chart] = {
                count: marks.length, declared: Number(svg.dataset.count),
                visible: box.width > 0 && box.height > 0,
                values: marks.map(m => [m.dataset.series || "", Number(m.dataset.value)]),
            };
        }
        return out;
    })()""")
    assert set(charts) == {"active", "started-refused", "bytes", "durations", "instances"}
    for chart in charts.values():
        assert chart["visible"] and chart["count"] == chart["declared"]

    def series(chart: str, name: str) -> list[float]:
        return [v for s, v in charts[chart]["values"] if s == name]

    assert charts["active"]["count"] == MINUTES
    assert charts["started-refused"]["count"] == 2 * MINUTES
    assert series("started-refused", "started") == wrote["started"]
    assert series("started-refused", "refused") == wrote["refused"]
    assert charts["bytes"]["count"] == 2 * MINUTES
    assert sum(series("bytes", "down")) == 1000 * sum(range(9))
    assert charts["durations"]["count"] == 8
    assert series("durations", "durations") == [1, 2, 2, 3, 1, 0, 0, 0]
    assert charts["instances"]["count"] == 4
    assert [v for _, v in charts["instances"]["values"]] == [3, 2, 2, 2]
    # sessions open at some time in each minute (s4 10:04:10-10:07:30, s5 to 10:11:50 ...)
    assert [v for _, v in charts["active"]["values"]] == [1, 1, 1, 1, 2, 2, 3, 3, 2, 2, 1, 1]
    text = browser.evaluate("document.body.innerText")
    assert "Console sessions report" in text and "invalid_token" in text
    browser.screenshot(tmp_path / "report.png")
