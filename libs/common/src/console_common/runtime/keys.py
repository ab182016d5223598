"""CURVE keys from a service's configuration, with the one-line errors of bad config.

    server = curve_server(config, "consoleauth")            # None: CURVE off
    client = curve_client(config, "novncproxy")             # to consoleauth
    compute = curve_client(config, "consoleauth", server_key="compute_server_key_file")

A half-given setting (a secret key but no server key, ...) or an unusable file stops the
service with ``PROG: error: option NAME: ... (from SOURCE)``, exit 2.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from console_common.net.bus.curve import CurveClient, CurveServer, KeyError_


def _fail(prog: str, config: Any, option: str, message: str) -> NoReturn:
    print(f"{prog}: error: option {option}: {message} (from {config.source_of(option)})",
          file=sys.stderr)
    raise SystemExit(2)


def curve_server(config: Any, prog: str) -> CurveServer | None:
    secret, folder = config.bus_secret_key_file, config.bus_authorized_keys_dir
    if not secret and not folder:
        return None
    if not secret:
        _fail(prog, config, "bus_secret_key_file", "needed with bus_authorized_keys_dir")
    if not folder:
        _fail(prog, config, "bus_authorized_keys_dir", "needed with bus_secret_key_file "
              "(a folder of <role>/ folders of public keys)")
    try:
        return CurveServer.load(secret, folder)
    except KeyError_ as exc:
        _fail(prog, config, "bus_secret_key_file" if exc.path == secret
              else "bus_authorized_keys_dir", str(exc))


def curve_client(config: Any, prog: str, server_key: str = "bus_server_key_file"
                 ) -> CurveClient | None:
    secret, public = config.bus_secret_key_file, config[server_key]
    if not secret and not public:
        return None
    if not secret:
        _fail(prog, config, "bus_secret_key_file", f"needed with {server_key}")
    if not public:
        _fail(prog, config, server_key, "needed with bus_secret_key_file (the server's "
              "public key, NAME.key)")
    try:
        return CurveClient.load(secret, public)
    except KeyError_ as exc:
        _fail(prog, config, "bus_secret_key_file" if exc.path == secret else server_key,
              str(exc))
