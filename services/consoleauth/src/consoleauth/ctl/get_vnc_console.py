"""get-vnc-console SERVER novnc|xvpvnc: ask the compute host(s) for a console URL (nova's).

Each endpoint in --compute-url is asked in turn until one knows the server. A compute host
itself asks consoleauth (with its own timeout) before answering, so each host gets twice
--consoleauth-timeout plus a second: its "consoleauth unreachable" answer arrives in time.
One attempt per host: a retry would authorize a second token.
"""

from __future__ import annotations

import argparse
from typing import Any

from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE

from consoleauth.ctl.common import CtlError, call, emit, table

NAME = "get-vnc-console"
HELP = "Get a console URL for a server from its compute host (like `nova get-vnc-console`)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", metavar="SERVER", help="Instance name or UUID.")
    parser.add_argument("console_type", metavar="TYPE", choices=("novnc", "xvpvnc"),
                        help="novnc (browser) or xvpvnc (desktop client).")


def run(config: Config, args: argparse.Namespace) -> int:
    unknown: CtlError | None = None
    unreachable: CtlError | None = None
    result: dict[str, Any] | None = None
    for endpoint in config.compute_url:
        try:
            result = call("compute host", [endpoint], 2 * config.consoleauth_timeout + 1,
                          "get_vnc_console", attempts=1, instance_id=args.server,
                          console_type=args.console_type)
            break
        except CtlError as exc:
            if exc.code == EXIT_REFUSED:
                unknown = exc  # not on this host: ask the next one
            elif exc.code == EXIT_UNAVAILABLE:
                unreachable = exc
            else:
                raise
    if result is None:
        # Unreachable hosts might have had it: say so rather than "unknown".
        raise unreachable or unknown or CtlError("no compute host to ask", EXIT_REFUSED)
    emit(args, table(("Type", "Url"), [(result["console_type"] or args.console_type,
                                        result["access_url"])]), result)
    return EXIT_OK
