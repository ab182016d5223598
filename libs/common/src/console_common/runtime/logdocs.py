"""docs/logs.md and the lnav format (monitoring/lnav/console_suite.json), rendered from the
log schema (runtime/logschema.py); unit tests fail when a file and the schema disagree.

    python -m console_common.runtime.logdocs > docs/logs.md
    python -m console_common.runtime.logdocs --lnav > monitoring/lnav/console_suite.json
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from console_common.runtime.logschema import (COMMON_OPTIONAL, EVENTS, EVERY, FOREIGN_FIELDS,
                                              LEVELS, SESSION)

# -- the documentation page (docs/logs.md is this, checked by a unit test) --------------

def _fields_text(fields: Mapping[str, str]) -> str:
    if not fields:
        return "—"
    out = []
    for name, spec in fields.items():
        optional = spec.startswith("?")
        kind = spec.lstrip("?").replace("|", "\\|")  # inside a Markdown table
        out.append(f"`{name}`{'?' if optional else ''}: {kind}")
    return ", ".join(out)


def render_markdown() -> str:
    lines = [
        "# Log events",
        "",
        "<!-- Generated from libs/common/src/console_common/runtime/logschema.py by",
        "     `python -m console_common.runtime.logdocs > docs/logs.md`; a unit test fails",
        "     when this page and the schema disagree. Edit the schema, not this page. -->",
        "",
        "Every service writes structlog JSON lines (`--log-format json`, or any output that is",
        "not a terminal). This page lists every event each service writes, its level(s) and",
        "its fields with their types. The integration tests validate every line every service",
        "wrote against this schema: an undocumented event or field, a missing field or a wrong",
        "type fails them.",
        "",
        "Types: `str`, `int`, `number` (int or float), `bool`, `list`, `list[str]`,",
        "`list[int]`, `object`, `null`; `a|b` is either; a name ending in `?` may be absent.",
        "",
        "## Fields on every line",
        "",
        "| field | type | what |",
        "|---|---|---|",
        "| `timestamp` | str | ISO-8601 UTC |",
        f"| `level` | str | {', '.join(LEVELS)} |",
        f"| `service` | str | {', '.join(f'`{s}`' for s in EVERY)} |",
        "| `event` | str | the event name (below) |",
        "| `worker`? | int | the pre-fork worker (0..N-1) that wrote it, with `--workers N` |",
        "",
        "## Session fields",
        "",
        "Bound to every line logged while a session runs (`session.*`, and an error inside",
        "the relay): " + _fields_text(SESSION) + ".",
        "Tokens never appear: `token_id` is a short hash of the token.",
        "",
        "## Lines from other libraries",
        "",
        "Python `logging` records (gevent, third parties) and `warnings` go through the same",
        "renderer: they carry `logger` (str, e.g. `py.warnings`), the message as `event`, and",
        "`exception` (list) when they hold a traceback.",
        "",
        "## Events",
        "",
        "| event | services | level | fields | what |",
        "|---|---|---|---|---|",
    ]
    session_keys = set(SESSION)
    for event in sorted(EVENTS, key=lambda e: (e.name, e.services)):
        in_session = session_keys <= event.fields.keys()
        own = {k: v for k, v in event.fields.items() if not in_session or k not in session_keys}
        fields = _fields_text(own)
        if in_session:
            optional = event.fields["session_id"].startswith("?")
            fields = ("session fields" + (" (when in a session)" if optional else "")
                      + ("" if fields == "—" else ", " + fields))
        services = ", ".join(event.services)
        lines.append(f"| `{event.name}` | {services} | {'/'.join(event.levels)} | {fields} "
                     f"| {event.doc} |")
    lines.append("")
    return "\n".join(lines)


# -- the lnav format (monitoring/lnav/console_suite.json is this, checked by a unit test) -

LNAV_NAME = "console_suite_log"  # also the SQL table lnav makes of these lines
_LNAV_IDENTIFIERS = ("service", "event", "session_id", "token_id", "instance_uuid", "client",
                     "target", "close_reason", "reason", "kind", "logger")


def _lnav_kind(spec: str) -> str:
    parts = set(spec.lstrip("?").split("|")) - {"null"}
    if parts <= {"int"}:
        return "integer"
    if parts <= {"int", "number"}:
        return "float"
    if parts == {"bool"}:
        return "boolean"
    if parts == {"str"}:
        return "string"
    return "json"


def lnav_format() -> dict[str, Any]:
    """lnav's JSON format for these lines: every field of the schema a column of the
    ``console_suite_log`` table (a field typed differently by two events is a string)."""
    kinds: dict[str, str] = {}
    specs = [SESSION, COMMON_OPTIONAL, FOREIGN_FIELDS, *(e.fields for e in EVENTS)]
    for fields in specs:
        for name, spec in fields.items():
            kind = _lnav_kind(spec)
            if kinds.get(name, kind) != kind:
                kind = "string" if "json" not in (kind, kinds[name]) else "json"
            kinds[name] = kind
    values: dict[str, Any] = {"service": {"kind": "string", "identifier": True},
                              "event": {"kind": "string", "identifier": True}}
    for name in sorted(kinds):
        values[name] = {"kind": kinds[name]}
        if name in _LNAV_IDENTIFIERS:
            values[name]["identifier"] = True
    return {
        "$schema": "https://lnav.org/schemas/format-v1.schema.json",
        LNAV_NAME: {
            "title": "Console proxy suite",
            "description": "JSON lines of consoleauth, novncproxy, xvpvncproxy, fake-compute "
                           "and consolectl (docs/logs.md). Generated from "
                           "console_common/runtime/logschema.py.",
            "url": "docs/logs.md",
            "json": True,
            "hide-extra": False,
            "timestamp-field": "timestamp",
            "level-field": "level",
            "level": {level: f"^{level}$" for level in LEVELS},
            "line-format": [
                {"field": "__timestamp__"}, " ",
                {"field": "level", "min-width": 7, "text-transform": "uppercase"}, " ",
                {"field": "service", "min-width": 12}, " ",
                {"field": "event", "min-width": 20}, " ",
                {"field": "session_id", "default-value": ""},
            ],
            "value": values,
        },
    }


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:] == ["--lnav"]:
        print(json.dumps(lnav_format(), indent=2))
    else:
        print(render_markdown(), end="")
