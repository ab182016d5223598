"""Not collected by default (no ``test_`` prefix): run by test_secret_scan.py in a child
pytest, with CONSOLE_LEAK_PROBE naming what to leak into a fake service log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import support

TOKEN = "Zq3" + "x" * 40


def test_writes_a_log(tmp_path: Path) -> None:
    kind = os.environ.get("CONSOLE_LEAK_PROBE")
    if kind is None:
        pytest.skip("run by tests/unit/test_secret_scan.py only")
    log = tmp_path / "probe.log"
    support.LOG_FILES.append(log)
    support.remember_bus_call("authorize_console", {}, {"token": TOKEN})
    lines = ['{"event": "session.start", "token_id": "ab12cd34"}']
    if kind == "token":
        lines.append(f'{{"event": "bus.debug", "args": "token={TOKEN}"}}')
    elif kind == "pem":
        lines.append('{"event": "tls.loaded", "detail": "-----BEGIN PRIVATE KEY-----"}')
    elif kind == "curve":
        lines.append('{"event": "keys", "detail": "secret-key = \\"abc\\""}')
    log.write_text("\n".join(lines) + "\n")
