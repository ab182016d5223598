"""``consolectl logs report --html FILE``: one self-contained HTML page (inline CSS and SVG,
no script, nothing fetched) with the summary and five charts.

Pure: figures in (``Analysis.summary()``, ``timeline()``, ``error_groups()``), text out.
Every plotted value is an SVG element a test (or a curious reader) can count:
``svg[data-chart=NAME]`` holds ``.point`` circles (line charts) or ``.bar`` rects, each with
``data-value`` (and ``data-series``/``data-label`` where a chart has several), and a
``<title>`` for the tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from consoleauth.loganalysis.durations import DURATION_LABELS

WIDTH, HEIGHT = 880, 220
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 14, 34
COLORS = {"active": "#2b6cb0", "started": "#2f855a", "refused": "#c53030",
          "up": "#805ad5", "down": "#dd6b20", "durations": "#2b6cb0", "instances": "#2c7a7b"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:920px;color:#1a202c;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.muted{color:#718096}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{border:1px solid #e2e8f0;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:20px}.warn{color:#c53030}
table{border-collapse:collapse;margin:4px 0 8px}td,th{border-bottom:1px solid #edf2f7;
padding:3px 10px;text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
svg{display:block;background:#fafafa;border:1px solid #edf2f7;border-radius:4px}
svg text{font-size:11px;fill:#4a5568}.legend span{display:inline-block;width:10px;height:10px;
margin:0 4px 0 12px;border-radius:2px}code{font-size:12px;word-break:break-all}
"""


def human_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns


def human_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s" if value < 10 else f"{value:.0f}s"
    if value < 3600:
        return f"{value // 60:.0f}m{value % 60:02.0f}s"
    return f"{value // 3600:.0f}h{value % 3600 // 60:02.0f}m"


def _axis(vmax: float, label: str, times: Sequence[str]) -> list[str]:
    bottom, right = HEIGHT - BOTTOM, WIDTH - RIGHT
    out = [f'<line x1="{LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#a0aec0"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#a0aec0"/>',
           f'<text x="{LEFT - 6}" y="{TOP + 8}" text-anchor="end">{escape(label)}</text>',
           f'<text x="{LEFT - 6}" y="{bottom}" text-anchor="end">0</text>']
    if times:
        out.append(f'<text x="{LEFT}" y="{HEIGHT - 12}">{escape(times[0])}</text>')
        if len(times) > 1:
            out.append(f'<text x="{right}" y="{HEIGHT - 12}" text-anchor="end">'
                       f'{escape(times[-1])}</text>')
    return out


def _scale(values: Sequence[float]) -> float:
    return max([*values, 1])


def line_chart(name: str, times: Sequence[str], values: Sequence[int], what: str) -> str:
    vmax = _scale(values)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = len(values)
    points = []
    for i, value in enumerate(values):
        x = LEFT + (plot_w * (i + 0.5) / n if n else 0)
        y = TOP + plot_h * (1 - value / vmax)
        points.append((x, y, value, times[i]))
    body = _axis(vmax, f"{vmax:g}", times)
    if points:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points)
        body.append(f'<polyline fill="none" stroke="{COLORS[name]}" stroke-width="1.5" '
                    f'points="{path}"/>')
    radius = 2.5 if n <= 120 else 1.2
    body += [f'<circle class="point" data-value="{v}" data-time="{t}" cx="{x:.1f}" '
             f'cy="{y:.1f}" r="{radius}" fill="{COLORS[name]}"><title>{t}: {v} {what}</title>'
             f'</circle>' for x, y, v, t in points]
    return _svg(name, n, body)


def bar_chart(name: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
              fmt=str, stacked: bool = False, axis_labels: Sequence[str] = ()) -> str:
    """Vertical bars: one slot per label; several series side by side or stacked."""
    totals = ([sum(vals[i] for _, vals in series) for i in range(len(labels))] if stacked
              else [v for _, vals in series for v in vals])
    vmax = _scale(totals)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(len(labels), 1)
    slot = plot_w / n
    width = slot * 0.8 / (1 if stacked else len(series))
    body = _axis(vmax, fmt(vmax), axis_labels)
    count = 0
    for i, label in enumerate(labels):
        base = HEIGHT - BOTTOM
        for j, (series_name, vals) in enumerate(series):
            value = vals[i]
            h = plot_h * value / vmax
            x = LEFT + slot * i + slot * 0.1 + (0 if stacked else j * width)
            y = base - h
            body.append(f'<rect class="bar" data-series="{series_name}" data-label="'
                        f'{escape(label)}" data-value="{value}" x="{x:.1f}" y="{y:.1f}" '
                        f'width="{max(width, 0.5):.1f}" height="{h:.1f}" '
                        f'fill="{COLORS.get(series_name, COLORS.get(name, "#4a5568"))}">'
                        f'<title>{escape(label)}: {fmt(value)} {series_name}</title></rect>')
            count += 1
            if stacked:
                base = y
    if not axis_labels:  # few slots: a label under each
        for i, label in enumerate(labels):
            body.append(f'<text x="{LEFT + slot * (i + 0.5):.1f}" y="{HEIGHT - 12}" '
                        f'text-anchor="middle">{escape(label)}</text>')
    return _svg(name, count, body)


def hbar_chart(name: str, rows: Sequence[tuple[str, float, str]]) -> str:
    """Horizontal bars (label, value, tooltip), largest first."""
    bar_h, gap = 18, 6
    height = max(TOP * 2 + len(rows) * (bar_h + gap), 40)
    vmax = _scale([v for _, v, _ in rows])
    left, plot_w = 250, WIDTH - 250 - 80
    body = []
    for i, (label, value, tip) in enumerate(rows):
        y = TOP + i * (bar_h + gap)
        w = plot_w * value / vmax
        short = label if len(label) <= 36 else label[:35] + "…"
        body.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{escape(short)}</text>')
        body.append(f'<rect class="bar" data-label="{escape(label)}" data-value="{value:g}" '
                    f'x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                    f'fill="{COLORS[name]}"><title>{escape(tip)}</title></rect>')
        body.append(f'<text x="{left + w + 6:.1f}" y="{y + 13}">{value:g}</text>')
    return _svg(name, len(rows), body, height)


def _svg(name: str, count: int, body: list[str], height: int = HEIGHT) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" data-chart="{name}" data-count="{count}" '
            f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img">'
            + "".join(body) + "</svg>")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()
           ) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{escape(h)}</th>'
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if i in numeric else ""}">'
                                    f'{escape("-" if c is None else str(c))}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render(summary: dict[str, Any], timeline: dict[str, Any], histogram: Sequence[int],
           errors: Sequence[dict[str, Any]], sources: Sequence[str], generated: str) -> str:
    s = summary
    times = timeline["times"]
    step = timeline["step_minutes"]
    per = "minute" if step == 1 else f"{step} minutes"
    d = s["duration_s"]
    cards = [("Sessions started", s["sessions_started"]), ("Ended", s["sessions_ended"]),
             ("Still open", s["sessions_open"]), ("End unknown", s["sessions_unknown"]),
             ("Refusals", s["refusals"]), ("Bytes up", human_bytes(s["bytes_up"])),
             ("Bytes down", human_bytes(s["bytes_down"])),
             ("Duration p50", human_seconds(d["p50"])), ("p95", human_seconds(d["p95"])),
             ("max", human_seconds(d["max"]))]
    skipped = ""
    if s["skipped_lines"]:
        parts = ", ".join(f'{v["count"]} {k} (first: {v["first"]})'
                          for k, v in s["skipped"].items())
        plural = "s" if s["skipped_lines"] != 1 else ""
        skipped = (f'<p class="warn">{s["skipped_lines"]} line{plural} skipped: '
                   f'{escape(parts)}</p>')
    top = s["top_instances"]
    instances = hbar_chart("instances", [
        (str(r["instance_uuid"]), r["sessions"],
         f'{r["instance_uuid"]}: {r["sessions"]} sessions, {human_bytes(r["bytes"])}, '
         f'{human_seconds(r["duration_s"])}') for r in top])
    charts = [
        (f"Concurrent sessions (open at some time in each {per})",
         line_chart("active", times, timeline["active"], "sessions open"), ()),
        (f"Sessions started and refused per {per}",
         bar_chart("started-refused", times, [("started", timeline["started"]),
                                              ("refused", timeline["refused"])],
                   axis_labels=_ends(times)), ("started", "refused")),
        (f"Bytes per {per} (counted when a session ends)",
         bar_chart("bytes", times, [("up", timeline["bytes_up"]),
                                    ("down", timeline["bytes_down"])],
                   fmt=human_bytes, stacked=True, axis_labels=_ends(times)), ("up", "down")),
        ("Session durations", bar_chart("durations", DURATION_LABELS,
                                        [("durations", histogram)]), ()),
        ("Top instances by sessions", instances, ()),
    ]
    chart_html = "".join(
        f"<h2>{escape(title)}</h2>"
        + ('<p class="legend muted">' + "".join(
            f'<span style="background:{COLORS[k]}"></span>{k}' for k in legend) + "</p>"
           if legend else "") + svg
        for title, svg, legend in charts)
    services = _table(("Service", "Lines", "Warnings", "Errors"),
                      [(name, v["lines"], v["warnings"], v["errors"])
                       for name, v in s["services"].items()], (1, 2, 3))
    reasons = _table(("Refusal reason", "Count"), list(s["refusals_by_reason"].items()), (1,))
    closes = _table(("Close reason", "Count"), list(s["close_reasons"].items()), (1,))
    clients = _table(("Client", "Sessions", "Refusals", "Bytes", "Time"),
                     [(r["client"], r["sessions"], r.get("refusals", 0), human_bytes(r["bytes"]),
                       human_seconds(r["duration_s"])) for r in s["top_clients"]], (1, 2, 3, 4))
    problems = _table(("Level", "Event", "Message", "Count", "Last seen"),
                      [(g["level"], g["event"], g["message"], g["count"], g["last"])
                       for g in errors[:15]], (3,))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Console sessions report</title><style>{CSS}</style></head>
<body>
<h1>Console sessions report</h1>
<p class="muted">{escape(s["first"] or "-")} to {escape(s["last"] or "-")} ·
{s["lines"]} lines from {len(sources)} source{"s" if len(sources) != 1 else ""}
({escape(", ".join(sources[:6]) + (" ..." if len(sources) > 6 else ""))}) ·
generated {escape(generated)}</p>
{skipped}
<div class="cards">{"".join(f'<div class="card">{escape(k)}<b>{escape(str(v))}</b></div>'
                            for k, v in cards)}</div>
{chart_html}
<h2>Services</h2>{services}
<h2>Refusals</h2>{reasons}
<h2>Close reasons</h2>{closes}
<h2>Top clients</h2>{clients}
<h2>Warnings and errors</h2>{problems}
</body></html>
"""


def _ends(times: Sequence[str]) -> Sequence[str]:
    return [times[0], times[-1]] if len(times) > 1 else list(times)
