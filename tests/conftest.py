"""Session-wide checks.

- No token, password or key material reaches a service log. Every log a test's service
  wrote (tests/support.py LOG_FILES) is scanned when the session ends, for every secret the
  tests handled (support.SECRETS: tokens sent or received over the bus by the test process,
  tokens consolectl printed, passwords and keys services were started with) and for key
  material of any kind (PEM private keys, ZeroMQ secret keys). A leak fails the run: the
  exit status is set and each offending line is listed (masked).
- Every line a service wrote fits the log schema (console_common.runtime.logschema,
  docs/logs.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import support


@pytest.fixture(scope="session", autouse=True)
def _remember_bus_tokens() -> Iterator[None]:
    """Every token the test process sends or receives over the bus is a secret to look
    for (wrapping the one call every BusClient method goes through; behaviour unchanged)."""
    from console_common.net.bus import BusClient

    original = BusClient.request

    def request(self: Any, method: str, args: dict[str, Any], timeout: float | None = None) -> Any:
        support.remember_bus_call(method, args, None)  # sent, even if refused
        result = original(self, method, args, timeout)
        support.remember_bus_call(method, {}, result)
        return result

    BusClient.request = request
    yield
    BusClient.request = original


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = support.leaks_in_logs(support.LOG_FILES, support.SECRETS)
    if not leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"SECRETS IN SERVICE LOGS: {len(leaks)} line(s) hold a token, password or "
             "key material (tokens must be logged as token_id only):", *leaks[:50]]
    if reporter is not None:
        reporter.write_sep("=", "secrets leaked into logs", red=True, bold=True)
        for line in lines:
            reporter.write_line(line)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
