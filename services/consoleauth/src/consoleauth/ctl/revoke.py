"""revoke INSTANCE_UUID: delete every console token of an instance at consoleauth."""

from __future__ import annotations

import argparse

from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK

from consoleauth.ctl.common import call, emit

NAME = "revoke"
HELP = "Revoke every console token of an instance (delete_tokens_for_instance)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("instance_uuid", metavar="INSTANCE_UUID")


def run(config: Config, args: argparse.Namespace) -> int:
    result = call("consoleauth", config.consoleauth_url, config.consoleauth_timeout,
                  "delete_tokens_for_instance", instance_uuid=args.instance_uuid)
    n = result["deleted"]
    emit(args, f"Revoked {n} token{'s' if n != 1 else ''} of instance {args.instance_uuid}",
         {"instance_uuid": args.instance_uuid, "deleted": n})
    return EXIT_OK
