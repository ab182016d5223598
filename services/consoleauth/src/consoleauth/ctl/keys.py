"""keys generate NAME --dir DIR [--role ROLE]: a ZeroMQ CURVE certificate pair for the bus.

Writes ``DIR/NAME.key`` (public: give it to the server, in its
``bus_authorized_keys_dir/<role>/``) and ``DIR/NAME.key_secret`` (secret, mode 0600: the
process's ``bus_secret_key_file``). The role, if given, is written into the certificate's
metadata for people to read; what grants it is the folder the server keeps the key in.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import zmq.auth
from console_common.net.bus.curve import ROLES
from console_common.runtime.config import Config
from console_common.runtime.service import EXIT_OK, EXIT_USAGE

from consoleauth.ctl.common import CtlError, emit

NAME = "keys"
HELP = "Make CURVE keys for the bus: keys generate NAME --dir DIR [--role ROLE]."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("generate",), help="generate: a new key pair.")
    parser.add_argument("name", metavar="NAME", help="File name stem (NAME.key, NAME.key_secret).")
    parser.add_argument("--dir", required=True, help="Directory to write into (created 0700).")
    parser.add_argument("--role", choices=ROLES, help="Role, recorded in the metadata.")


def run(config: Config, args: argparse.Namespace) -> int:
    if not args.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise CtlError("NAME: letters, digits, '-', '_' and '.' only", EXIT_USAGE)
    folder = Path(args.dir)
    public, secret = folder / f"{args.name}.key", folder / f"{args.name}.key_secret"
    if public.exists() or secret.exists():
        raise CtlError(f"{public} or {secret} exists: not overwriting a key", EXIT_USAGE)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        zmq.auth.create_certificates(str(folder), args.name,
                                     metadata={"role": args.role} if args.role else None)
    finally:
        os.umask(old)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    emit(args, f"Wrote {public} (public) and {secret} (secret, 0600)",
         {"public": str(public), "secret": str(secret), "role": args.role})
    return EXIT_OK
