"""What every consolectl subcommand shares: options, bus calls mapped to exit codes, output.

A subcommand module has ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(config, args) -> int``; it raises ``CtlError`` (message + exit code) to refuse.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from console_common.net.bus import BusClient
from console_common.net.bus.curve import CurveClient, KeyError_
from console_common.proto.bus import (BadRequest, BusProtocolError, BusUnavailable, Forbidden,
                                      InvalidToken, RemoteError, Unavailable, UnknownInstance)
from console_common.runtime.service import EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE

PROG = "consolectl"
# Options every subcommand accepts, before or after its name.
OPTIONS = ("log_format", "log_level", "consoleauth_url", "consoleauth_timeout", "compute_url",
           "novncproxy_base_url", "xvpvncproxy_base_url", "bus_secret_key_file",
           "bus_server_key_file", "compute_server_key_file")
# CURVE keys per service called ("consoleauth", "compute host"), set once from the config.
CURVE: dict[str, Any] = {}


def use_curve(config: Any) -> None:
    """The keys the calls of this run use, from bus_secret_key_file and the server keys."""
    secret = config.bus_secret_key_file
    if not secret:
        return
    for service, option in (("consoleauth", "bus_server_key_file"),
                            ("compute host", "compute_server_key_file")):
        if config[option]:
            try:
                CURVE[service] = CurveClient.load(secret, config[option])
            except KeyError_ as exc:
                raise CtlError(f"option {option}: {exc}", EXIT_USAGE) from exc


class CtlError(Exception):
    """A refusal or failure shown as one line on stderr; ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def call(service: str, endpoints: Sequence[str], timeout: float, method: str,
         attempts: int = 3, **args: Any) -> Any:
    """One bus call; every failure becomes a CtlError naming the service and endpoint."""
    with BusClient(endpoints, timeout, attempts=attempts, curve=CURVE.get(service)) as client:
        try:
            return client.call(method, **args)
        except BusUnavailable as exc:
            raise CtlError(f"{service} unreachable: {exc}", EXIT_UNAVAILABLE) from exc
        except InvalidToken as exc:
            raise CtlError("invalid or expired token", EXIT_REFUSED) from exc
        except Forbidden as exc:
            raise CtlError(f"{service} refused: {exc.message} (this key's role does not "
                           "allow it)", EXIT_REFUSED) from exc
        except UnknownInstance as exc:
            raise CtlError(exc.message, EXIT_REFUSED) from exc
        except BadRequest as exc:
            raise CtlError(f"{service} refused the request: {exc.message}", EXIT_USAGE) from exc
        except Unavailable as exc:
            raise CtlError(f"{service} at {', '.join(endpoints)} cannot serve the request: "
                           f"{exc.message}", EXIT_UNAVAILABLE) from exc
        except RemoteError as exc:
            raise CtlError(f"{service} error {exc.type}: {exc.message}", EXIT_REFUSED) from exc
        except BusProtocolError as exc:
            raise CtlError(f"{service} at {', '.join(endpoints)} sent a bad reply: {exc}",
                           EXIT_UNAVAILABLE) from exc


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table drawn like the nova client's (prettytable)."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    return "\n".join([rule, line(cells[0]), rule, *(line(r) for r in cells[1:]), rule])


def properties(values: dict[str, Any]) -> str:
    return table(("Property", "Value"), list(values.items()))


def emit(args: Any, human: str, data: Any) -> None:
    """Print ``data`` as JSON with --json, else the human form."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(human)


def when(expires_at: float | None) -> str:
    if expires_at is None:
        return "-"
    stamp = datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="seconds")
    left = expires_at - time.time()
    return f"{stamp} (in {left:.0f}s)" if left >= 0 else f"{stamp} (expired)"


def read_token(value: str) -> str:
    """A token argument; ``-`` reads it from stdin (keeps it out of the process list)."""
    if value != "-":
        return value
    token = sys.stdin.readline().strip()
    if not token:
        raise CtlError("no token on stdin", EXIT_USAGE)
    return token
