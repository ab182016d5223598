"""Session-wide checks: no token, password or key material reaches a service log.

Every log a test's service wrote (tests/support.py LOG_FILES) is scanned when the session
ends, for every secret the tests handled (support.SECRETS: tokens sent or received over
the bus by the test process, tokens consolectl printed, passwords and keys services were
started with) and for key material of any kind (PEM private keys, ZeroMQ secret keys).
A leak fails the run: the exit status is set and each offending line is listed (masked).
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
