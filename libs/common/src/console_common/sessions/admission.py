"""A console token to its connect info, or a typed denial: the one check both proxies make.

Every way the bus can fail (no reply in the deadline, an answer that is not a bus
message, consoleauth unable to decide because its store or the compute host is down, the
caller's budget spent) is the same denial, ``UNAVAILABLE``: each proxy answers it with its
own 503, never a 500, a traceback or a dropped socket.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from console_common.net.bus import BusClient
from console_common.proto.bus import BadRequest, BusError, ConnectInfo, InvalidToken

if TYPE_CHECKING:  # proxy_metrics imports Denial from here
    from console_common.sessions.metrics import ProxyMetrics


class Denial(enum.Enum):
    MISSING = "missing"  # no token in the request
    INVALID = "invalid"  # unknown, expired, revoked, or for another console type
    UNAVAILABLE = "unavailable"  # consoleauth could not say
    LIMITED = "limited"  # a limit refused it (per token, instance, client)


@dataclass(frozen=True, slots=True)
class Denied:
    kind: Denial
    reason: str  # for the log; never the token


def check_console_token(bus: BusClient, token: str, console_type: str,
                        metrics: ProxyMetrics | None = None) -> ConnectInfo | Denied:
    """The check, counted in ``metrics`` (result and latency) the same way for both."""
    started = time.monotonic()
    checked = _check(bus, token, console_type)
    if metrics is not None:
        metrics.token_checked(checked.kind.value if isinstance(checked, Denied) else "ok",
                              time.monotonic() - started)
    return checked


def _check(bus: BusClient, token: str, console_type: str) -> ConnectInfo | Denied:
    try:
        info = bus.check_token(token)
    except (InvalidToken, BadRequest):  # BadRequest: not even shaped like a token
        return Denied(Denial.INVALID, "invalid or expired console token")
    except BusError as exc:
        return Denied(Denial.UNAVAILABLE, f"consoleauth could not check the token: "
                                          f"{getattr(exc, 'type', type(exc).__name__)}: {exc}")
    if not isinstance(info, ConnectInfo) or info.console_type != console_type:
        found = getattr(info, "console_type", "?")
        return Denied(Denial.INVALID, f"not a {console_type} console token ({found})")
    return info
