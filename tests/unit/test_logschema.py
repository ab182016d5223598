"""The log schema (console_common.runtime.logschema) against the code that logs, the page
that documents it (docs/logs.md) and the logging setup. The lines the real services write
are checked against it by tests/conftest.py during the integration tests."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import warnings
from pathlib import Path

import pytest
import structlog

from console_common.runtime import logdocs, logschema
from console_common.runtime.logging import configure
from console_common.runtime.logschema import INDEX, problems

REPO = Path(__file__).resolve().parents[2]
LEVEL_CALLS = {"debug": "debug", "info": "info", "warning": "warning", "warn": "warning",
               "error": "error", "exception": "error", "critical": "critical"}
EVENT_NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
# services/<dir> -> the service name its lines carry; libs/ may log for any of them
SERVICE_OF_DIR = {"consoleauth": ("consoleauth", "consolectl"), "novnc": ("novncproxy",),
                  "xvp": ("xvpvncproxy",), "fakecompute": ("fake-compute",)}


def _log_calls():
    """(file:line, event, level or None, keyword names, services) of every structlog call
    with a literal event name in libs/ and services/ (``getattr(log, level)(...)`` too)."""
    sources = [*REPO.glob("libs/*/src/**/*.py"), *REPO.glob("services/*/src/**/*.py")]
    assert len(sources) > 50
    for path in sources:
        rel = path.relative_to(REPO)
        services = (SERVICE_OF_DIR[rel.parts[1]] if rel.parts[0] == "services"
                    else logschema.EVERY)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)
                    and EVENT_NAME.match(first.value)):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in LEVEL_CALLS:
                level = LEVEL_CALLS[func.attr]
            elif (isinstance(func, ast.Call) and isinstance(func.func, ast.Name)
                  and func.func.id == "getattr"):
                level = None  # chosen at run time
            else:
                continue
            keywords = {k.arg for k in node.keywords if k.arg is not None}
            if isinstance(func, ast.Attribute) and func.attr == "exception":
                keywords.add("exc_info")  # log.exception() renders the traceback
            yield f"{rel}:{node.lineno}", first.value, level, keywords, services


def test_every_log_call_in_the_code_is_in_the_schema():
    calls = list(_log_calls())
    assert len(calls) > 60, "the source scan found too few log calls"
    wrong = []
    for where, event, level, keywords, services in calls:
        declared = [INDEX.by_key[(event, s)] for s in services if (event, s) in INDEX.by_key]
        if not declared:
            wrong.append(f"{where}: event {event!r} is not in the schema (for {services})")
            continue
        levels = {lv for d in declared for lv in d.levels}
        if level is not None and level not in levels:
            wrong.append(f"{where}: {event} logged at {level}, schema says {sorted(levels)}")
        fields = {f for d in declared for f in d.fields}
        for name in keywords - {"exc_info", "stack_info"}:
            if name not in fields:
                wrong.append(f"{where}: {event} field {name!r} is not in the schema")
        if "exc_info" in keywords and "exception" not in fields:
            wrong.append(f"{where}: {event} logs a traceback: declare 'exception'")
    assert not wrong, "\n".join(wrong)


def test_every_event_in_the_schema_is_logged_somewhere():
    logged = {event for _, event, *_ in _log_calls()}
    stale = sorted(INDEX.names - logged)
    assert not stale, f"in the schema but logged nowhere (remove them): {stale}"


def test_docs_page_matches_the_schema():
    page = REPO / "docs" / "logs.md"
    assert page.read_text() == logdocs.render_markdown(), (
        "docs/logs.md differs from the schema: run `.venv/bin/python -m "
        "console_common.runtime.logdocs > docs/logs.md`")


LINE = {"timestamp": "2026-12-03T06:40:01.000001Z", "level": "info", "service": "novncproxy",
        "event": "session.start", "session_id": "ab" * 8, "token_id": "0123456789ab",
        "instance_uuid": "u-1", "client": "127.0.0.1", "client_port": 40000,
        "target": "127.0.0.1:5900", "kind": "novnc"}


def test_a_conforming_line_has_no_problems():
    assert problems(LINE) == []
    assert problems({**LINE, "worker": 1}) == []
    no_port = {k: v for k, v in LINE.items() if k != "client_port"}  # optional field
    assert problems(no_port) == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"event": "session.bogus"}, "novncproxy session.bogus: undocumented event (not in the schema)"),
    ({"event": "token.authorized"}, "undocumented event (listed for other services)"),
    ({"extra": 1}, "undocumented field 'extra'"),
    ({"client_port": "40000"}, "field 'client_port' should be int, got str"),
    ({"client_port": True}, "field 'client_port' should be int, got bool"),
    ({"level": "warning"}, "level 'warning', schema says info"),
    ({"level": "loud"}, "level 'loud' is not one of"),
    ({"service": "other"}, "unknown service 'other'"),
])
def test_problems_name_the_event_and_field(change, expected):
    found = problems({**LINE, **change})
    assert any(expected in p for p in found), found


def test_missing_required_field():
    line = {k: v for k, v in LINE.items() if k != "session_id"}
    assert problems(line) == ["novncproxy session.start: missing field 'session_id'"]


def test_typed_lists_and_unions():
    line = {"timestamp": "t", "level": "info", "service": "novncproxy",
            "event": "events.link_up", "endpoints": ["tcp://a:1"]}
    assert problems(line) == []
    assert problems({**line, "endpoints": [1]})
    end = {**LINE, "event": "session.end", "close_reason": "client_closed", "bytes_up": 1,
           "bytes_down": 2, "duration_s": 1, "rfb_version": None}  # int is a number
    assert problems(end) == []


def test_real_logging_output_fits_the_schema():
    """configure() as the services use it: structlog lines, stdlib logging and warnings
    (which carry ``logger``) and an exception all validate."""
    stream = io.StringIO()
    # an earlier test's configure() may have left logging's capture flag set while pytest
    # restored warnings.showwarning: start from a clean capture
    logging.captureWarnings(False)
    configure("consoleauth", "json", "debug", stream=stream)
    try:
        log = structlog.get_logger("consoleauth")
        log.info("token.authorized", token_id="0123456789ab", instance_uuid="u",
                 console_type="novnc", target="h:1", ttl_s=600)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.error("bus.handler_failed", method="check_token", exc_info=True)
        logging.getLogger("thirdparty").warning("from stdlib")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a library warning", UserWarning, stacklevel=1)
        log.info("token.authorized", token_id="0123456789ab")  # missing fields
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        logging.captureWarnings(False)
    assert [line.get("logger") for line in lines] == [None, None, "thirdparty", "py.warnings",
                                                      None]
    assert isinstance(lines[1]["exception"], list)
    assert [problems(line) for line in lines[:4]] == [[], [], [], []]
    assert "consoleauth token.authorized: missing field 'instance_uuid'" in problems(lines[4])


def test_lnav_format_file_matches_the_schema():
    fmt = REPO / "monitoring" / "lnav" / "console_suite.json"
    assert json.loads(fmt.read_text()) == logdocs.lnav_format(), (
        "monitoring/lnav/console_suite.json differs from the schema: run `.venv/bin/python -m "
        "console_common.runtime.logdocs --lnav > monitoring/lnav/console_suite.json`")
    values = logdocs.lnav_format()[logdocs.LNAV_NAME]["value"]
    kinds = {name: values[name]["kind"] for name in ("bytes_up", "duration_s", "session_id",
                                                     "endpoints", "ssl_only")}
    assert kinds == {"bytes_up": "integer", "duration_s": "float", "session_id": "string",
                     "endpoints": "json", "ssl_only": "boolean"}


def test_the_session_check_reports_file_line_event_and_the_line(tmp_path: Path):
    """What tests/conftest.py runs after each test, on a log like a service's."""
    from tests import support

    log = tmp_path / "novncproxy-x.log"
    good = json.dumps(LINE)
    bad = json.dumps({**LINE, "token": "oops"})
    log.write_text(f"{good}\nnot json\n{bad}\n{good[:40]}")  # the last line half-written
    support.SCHEMA_CHECKED[log] = (0, 0)
    try:
        found = support.log_schema_problems()
        assert len(found) == 1
        assert found[0].startswith(f"{log}:3: novncproxy session.start: undocumented field "
                                   "'token'")
        assert bad in found[0]
        assert support.log_schema_problems() == []  # each line once
        with log.open("a") as fh:
            fh.write(good[40:] + "\n")  # the line is whole now
        assert support.log_schema_problems(final=True) == []
        assert support.SCHEMA_CHECKED[log] == (log.stat().st_size, 4)
    finally:
        del support.SCHEMA_CHECKED[log]
