"""keys generate NAME --dir DIR [--role ROLE]: a ZeroMQ CURVE certificate pair for the bus.

Writes ``DIR/NAME.key`` (public: give it to the server, in its
``bus_authorized_keys_dir/<role>/``) and ``DIR/NAME.key_secret`` (secret, mode 0600: the
process's ``bus_secret_key_file``). The role, if given, is written into the certificate's
metadata for people to read; what grants it is the folder the server keeps the key in.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

import zmq
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
    public_key, secret_key = zmq.curve_keypair()
    metadata = f"    role = {args.role}\n" if args.role else ""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    def body(kind: str) -> str:  # z85 keys may hold braces: no str.format on them
        return (f"#   ZeroMQ CURVE certificate ({kind}), consolectl keys generate, {stamp}\n"
                f"metadata\n{metadata}curve\n    public-key = \"{public_key.decode()}\"\n")

    # the secret file is created 0600: never readable by others, not even briefly
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(body("secret: keep it private")
                  + f"    secret-key = \"{secret_key.decode()}\"\n")
    public.write_text(body("public"))
    os.chmod(public, 0o644)
    emit(args, f"Wrote {public} (public) and {secret} (secret, 0600)",
         {"public": str(public), "secret": str(secret), "role": args.role})
    return EXIT_OK
