"""disconnect SESSION_ID... | --instance I | --client ADDR: cut open sessions wherever they
are (WebSocket close 1008 "console disconnected by operator"; xvp: connection closed)."""

from __future__ import annotations

import argparse

from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK, EXIT_REFUSED, EXIT_USAGE

from consoleauth.ctl.common import CtlError, call, emit

NAME = "disconnect"
HELP = "Cut open console sessions: by session id, instance (--instance) or client (--client)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("session_ids", metavar="SESSION_ID", nargs="*")
    parser.add_argument("--instance", dest="instance_uuid", metavar="INSTANCE_UUID")
    parser.add_argument("--client", metavar="ADDR")


def run(config: Config, args: argparse.Namespace) -> int:
    if not (args.session_ids or args.instance_uuid or args.client):
        raise CtlError("name SESSION_IDs, --instance or --client", EXIT_USAGE)
    result = call("consoleauth", config.consoleauth_url, config.consoleauth_timeout,
                  "disconnect", session_ids=args.session_ids or None,
                  instance_uuid=args.instance_uuid, client=args.client)
    n = result["matched"]
    emit(args, f"Disconnecting {n} session{'s' if n != 1 else ''}", {"matched": n})
    return EXIT_OK if n else EXIT_REFUSED
