"""Session-wide checks: no token or password a test handled ever reaches a log, and every
line a service wrote fits the log schema (console_common.runtime.logschema, docs/logs.md)."""

from __future__ import annotations

import pytest

from tests import support


@pytest.fixture(scope="session", autouse=True)
def _no_secrets_in_logs():
    yield
    text = support.all_log_text()
    leaked = sorted(s for s in support.SECRETS if s and s in text)
    assert not leaked, f"{len(leaked)} secret(s) appear in service logs"


def _fail_on_schema_problems(found: list[str], when: str) -> None:
    if found:
        shown = "\n".join(found[:20])
        more = f"\n... and {len(found) - 20} more" if len(found) > 20 else ""
        pytest.fail(f"{len(found)} service log line(s) {when} do not fit the log schema "
                    "(libs/common/src/console_common/runtime/logschema.py; document the "
                    f"event/field there and regenerate docs/logs.md):\n{shown}{more}",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _log_schema():
    """After each test: the lines its services wrote (whole lines so far) fit the schema."""
    yield
    if support.SCHEMA_CHECKED:
        _fail_on_schema_problems(support.log_schema_problems(), "written during this test")


@pytest.fixture(scope="session", autouse=True)
def _log_schema_final():
    """At the end: what services stopped by module/session fixtures wrote last."""
    yield
    _fail_on_schema_problems(support.log_schema_problems(final=True),
                             "written at the end of the session")
