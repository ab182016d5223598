"""The session-end scan of service logs (tests/conftest.py) really turns a run red: a
child pytest runs a probe test that writes a token / a PEM key / a CURVE secret key into a
log the scan reads; the probe test itself passes, the run must not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import support

REPO = Path(__file__).resolve().parents[2]


def run_probe(kind: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONSOLE_LEAK_PROBE"}
    if kind is not None:
        env["CONSOLE_LEAK_PROBE"] = kind
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/unit/_leak_probe.py"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def test_a_leak_fails_the_run_and_names_the_line() -> None:
    result = run_probe("token")
    assert "1 passed" in result.stdout, result.stdout
    assert result.returncode == 1, result.stdout
    assert "SECRETS IN SERVICE LOGS: 1 line(s)" in result.stdout
    assert "probe.log:2:" in result.stdout
    assert "x" * 40 not in result.stdout  # the report masks the token


def test_a_clean_run_stays_green() -> None:
    result = run_probe("clean")
    assert result.returncode == 0, result.stdout
    assert "SECRETS" not in result.stdout


@pytest.mark.parametrize("line", [
    '{"detail": "-----BEGIN PRIVATE KEY-----"}',
    '{"detail": "-----BEGIN RSA PRIVATE KEY-----"}',
    '{"detail": "-----BEGIN OPENSSH PRIVATE KEY-----"}',
    '{"detail": "secret-key = \\"x\\""}',
    '{"password": "hunter2-long"}',
])
def test_key_material_and_registered_secrets_are_found(tmp_path: Path, line: str) -> None:
    log = tmp_path / "svc.log"
    log.write_text('{"event": "ok", "token_id": "ab12cd34", "public_key": "Yne@$w-vo<fVvi]a"}\n'
                   + line + "\n")
    found = support.leaks_in_logs([log], {"hunter2-long", "abc"})
    assert len(found) == 1 and found[0].startswith(f"{log}:2: "), found
    assert "hunter2-long" not in found[0]  # masked
