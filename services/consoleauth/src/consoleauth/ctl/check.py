"""check TOKEN: what consoleauth says about a token (exit 1 when invalid or expired)."""

from __future__ import annotations

import argparse
import dataclasses

from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK

from consoleauth.ctl.common import call, emit, properties, read_token, when

NAME = "check"
HELP = "Check a console token at consoleauth and print its connect info."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("token", metavar="TOKEN", help="The token ('-' reads it from stdin).")


def run(config: Config, args: argparse.Namespace) -> int:
    info = call("consoleauth", config.consoleauth_url, config.consoleauth_timeout,
                "check_token", token=read_token(args.token))
    data = dataclasses.asdict(info)
    # consolectl shows that the console has a password, never what it is
    if data.pop("password", None) is not None:
        data["password"] = "***"
    shown = {"console_type": info.console_type, "host": info.host, "port": info.port,
             "internal_access_path": info.internal_access_path,
             "instance_uuid": info.instance_uuid, "expires_at": when(info.expires_at)}
    emit(args, properties(shown), data)
    return EXIT_OK
