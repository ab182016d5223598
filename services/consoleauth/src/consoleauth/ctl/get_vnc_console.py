"""get-vnc-console SERVER novnc|xvpvnc: ask the compute host(s) for a console URL (nova's).

``get-vnc-console --all [TYPE]``: every instance of every compute host, one row per
instance and console type (both when TYPE is left out), named like ``nova list`` names
them: Name, ID, Type, Url. ``--json`` gives the same rows as a list of objects.

Each endpoint in --compute-url is asked in turn until one knows the server. A compute host
itself asks consoleauth (with its own timeout) before answering, so each host gets twice
--consoleauth-timeout plus a second: its "consoleauth unreachable" answer arrives in time.
One attempt per host: a retry would authorize a second token.
"""

from __future__ import annotations

import argparse
from typing import Any

from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE

from consoleauth.ctl.common import CtlError, call, emit, table

NAME = "get-vnc-console"
HELP = "Get a console URL for a server from its compute host (like `nova get-vnc-console`)."


CONSOLE_TYPES = ("novnc", "xvpvnc")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("server", metavar="SERVER", nargs="?",
                        help="Instance name or UUID (not with --all).")
    parser.add_argument("console_type", metavar="TYPE", nargs="?", choices=CONSOLE_TYPES,
                        help="novnc (browser) or xvpvnc (desktop client); with --all, "
                             "both when left out.")
    parser.add_argument("--all", action="store_true",
                        help="Every instance of every compute host: one row per instance "
                             "and console type.")


def run(config: Config, args: argparse.Namespace) -> int:
    if args.all:
        if args.console_type is None and args.server in CONSOLE_TYPES:
            args.server, args.console_type = None, args.server  # `--all novnc`
        if args.server is not None:
            raise CtlError("--all takes no SERVER (only an optional TYPE)", EXIT_USAGE)
        return run_all(config, args)
    if args.server is None or args.console_type is None:
        raise CtlError("expected SERVER and TYPE (novnc or xvpvnc), or --all", EXIT_USAGE)
    if args.console_type not in CONSOLE_TYPES:
        raise CtlError(f"TYPE must be novnc or xvpvnc, not {args.console_type!r}", EXIT_USAGE)
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


def run_all(config: Config, args: argparse.Namespace) -> int:
    if args.console_type is not None and args.console_type not in CONSOLE_TYPES:
        raise CtlError(f"TYPE must be novnc or xvpvnc, not {args.console_type!r}", EXIT_USAGE)
    kinds = (args.console_type,) if args.console_type else CONSOLE_TYPES
    timeout = 2 * config.consoleauth_timeout + 1
    rows: list[dict[str, Any]] = []
    for endpoint in config.compute_url:
        listed = call("compute host", [endpoint], timeout, "list_instances", attempts=1)
        for instance in listed["instances"]:
            for kind in kinds:
                console = call("compute host", [endpoint], timeout, "get_vnc_console",
                               attempts=1, instance_id=instance["uuid"], console_type=kind)
                rows.append({"name": instance["name"], "instance_uuid": instance["uuid"],
                             "console_type": kind, "access_url": console["access_url"],
                             "token": console["token"],
                             "expires_at": console.get("expires_at")})
    if not rows:
        raise CtlError("no instances on the compute hosts asked", EXIT_REFUSED)
    emit(args, table(("Name", "ID", "Type", "Url"),
                     [(r["name"], r["instance_uuid"], r["console_type"], r["access_url"])
                      for r in rows]), rows)
    return EXIT_OK
