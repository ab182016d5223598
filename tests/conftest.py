"""Session-wide checks: no token or password a test handled ever reaches a log."""

from __future__ import annotations

import pytest

from tests import support


@pytest.fixture(scope="session", autouse=True)
def _no_secrets_in_logs():
    yield
    text = support.all_log_text()
    leaked = sorted(s for s in support.SECRETS if s and s in text)
    assert not leaked, f"{len(leaked)} secret(s) appear in service logs"
