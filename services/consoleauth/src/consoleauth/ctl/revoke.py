"""revoke INSTANCE_UUID | --token TOKEN: delete console tokens at consoleauth, and cut the
open sessions they opened on every proxy (within a second)."""

from __future__ import annotations

import argparse

from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK, EXIT_USAGE

from consoleauth.ctl.common import CtlError, call, emit, read_token

NAME = "revoke"
HELP = ("Revoke every console token of an instance (delete_tokens_for_instance), or one "
        "token (--token); their open sessions are cut.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("instance_uuid", metavar="INSTANCE_UUID", nargs="?")
    parser.add_argument("--token", help="Revoke this one token ('-' reads it from stdin).")


def run(config: Config, args: argparse.Namespace) -> int:
    if (args.instance_uuid is None) == (args.token is None):
        raise CtlError("name an INSTANCE_UUID or --token TOKEN (one of them)", EXIT_USAGE)
    if args.token is not None:
        result = call("consoleauth", config.consoleauth_url, config.consoleauth_timeout,
                      "revoke_token", token=read_token(args.token))
        n = result["deleted"]
        said = "it was live" if n else "no live token: its sessions are cut all the same"
        emit(args, f"Revoked the token ({said})", {"deleted": n})
        return EXIT_OK
    result = call("consoleauth", config.consoleauth_url, config.consoleauth_timeout,
                  "delete_tokens_for_instance", instance_uuid=args.instance_uuid)
    n = result["deleted"]
    emit(args, f"Revoked {n} token{'s' if n != 1 else ''} of instance {args.instance_uuid}",
         {"instance_uuid": args.instance_uuid, "deleted": n})
    return EXIT_OK
