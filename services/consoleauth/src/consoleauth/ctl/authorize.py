"""authorize: store connect info at consoleauth under a (new or given) token.

Prints the token and its expiry, and the access URL when a proxy base URL is given
(--novncproxy-base-url / --xvpvncproxy-base-url, also from config files or environment).
"""

from __future__ import annotations

import argparse
import sys

from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK

from consoleauth.ctl.common import CtlError, call, emit, properties, read_token, when
from console_common.runtime.service import EXIT_USAGE
from console_common.proto.urls import access_url

NAME = "authorize"
HELP = "Authorize a console token at consoleauth (what a compute host does)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="VNC server host the proxy connects to.")
    parser.add_argument("--port", required=True, type=int, help="VNC server port.")
    parser.add_argument("--instance-uuid", required=True, help="Instance the console belongs to.")
    parser.add_argument("--console-type", default="novnc", choices=("novnc", "xvpvnc"),
                        help="Console type (default: novnc).")
    parser.add_argument("--token", help="Use this token (32-256 URL-safe characters; '-' reads "
                        "it from stdin) instead of a generated one.")
    parser.add_argument("--internal-access-path", help="Path sent as CONNECT to the VNC host.")
    parser.add_argument("--password-file", metavar="FILE",
                        help="The console's VNC password, first line of FILE ('-': stdin), "
                        "for the proxies' security proxy (never on the command line).")


def run(config: Config, args: argparse.Namespace) -> int:
    token = read_token(args.token) if args.token is not None else None
    secret = {} if args.password_file is None else {"password": _password(args.password_file)}
    result = call("consoleauth", config.consoleauth_url, config.consoleauth_timeout,
                  "authorize_console", token=token, console_type=args.console_type,
                  host=args.host, port=args.port, instance_uuid=args.instance_uuid,
                  internal_access_path=args.internal_access_path, **secret)
    shown = {"token": result["token"], "expires_at": when(result["expires_at"])}
    data = {"token": result["token"], "expires_at": result["expires_at"]}
    base_option = {"novnc": "novncproxy_base_url", "xvpvnc": "xvpvncproxy_base_url"}
    if config.source_of(base_option[args.console_type]) != "default":
        url = access_url(args.console_type, result["token"], config.novncproxy_base_url,
                         config.xvpvncproxy_base_url)
        shown["access_url"] = data["access_url"] = url
    emit(args, properties(shown), data)
    return EXIT_OK


def _password(path: str) -> str:
    try:
        if path == "-":
            line = sys.stdin.readline()
        else:
            with open(path, encoding="utf-8") as fh:
                line = fh.readline()
    except OSError as exc:
        raise CtlError(f"cannot read --password-file {path}: {exc.strerror or exc}",
                       EXIT_USAGE) from exc
    password = line.rstrip("\r\n")
    if not password:
        raise CtlError(f"no password in --password-file {path}", EXIT_USAGE)
    return password
