"""`consolectl`: the operator/user CLI (get-vnc-console, authorize, check, revoke, status,
vnc-bridge, logs).

The common options (--consoleauth-url, --consoleauth-timeout, --compute-url,
--config-file, --json, --log-level ...) are accepted before or after the subcommand.
Exit codes: 0 ok, 1 refused, 2 usage, 3 service unreachable; errors are one line on stderr.
``vnc-bridge`` lives in its own module, imported only when that subcommand is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from console_common.runtime.config import (
    ConfigError,
    add_option_arguments,
    flags_from_namespace,
    load,
    make_parser,
    select,
)
from console_common.runtime.logging import configure
from console_common.runtime.service import EXIT_USAGE

from consoleauth.ctl import (authorize, check, disconnect, get_vnc_console, keys, logs,
                             recordings, revoke, sessions, status)
from consoleauth.ctl.common import OPTIONS, PROG, CtlError, use_curve

COMMANDS: tuple[ModuleType, ...] = (get_vnc_console, authorize, check, revoke, sessions,
                                    disconnect, status, keys, logs, recordings)
BRIDGE = "vnc-bridge"
BRIDGE_MODULE = "consoleauth.ctl.vnc_bridge"
DESCRIPTION = "Console proxy suite CLI: console URLs, tokens and service status."


def _add_common(parser: argparse.ArgumentParser, option_names: Sequence[str],
                with_group: bool = True) -> None:
    if with_group:
        add_option_arguments(parser, select(option_names))
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="Print the result as JSON.")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, DESCRIPTION, select(OPTIONS))
    _add_common(parser, OPTIONS, with_group=False)  # make_parser added the options
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        sub = subs.add_parser(module.NAME, help=module.HELP, description=module.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        _add_common(sub, _names(module))
    # vnc-bridge's own arguments are known only once its module is imported (lazily):
    # here it takes the common options and leaves the rest for its own parser.
    bridge = subs.add_parser(BRIDGE, help="Bridge a local VNC port to a console URL.",
                             add_help=False)
    _add_common(bridge, OPTIONS)
    return parser


def _bridge_module() -> ModuleType:
    try:
        return importlib.import_module(BRIDGE_MODULE)
    except ModuleNotFoundError as exc:
        missing = "" if exc.name == BRIDGE_MODULE else f" (missing {exc.name})"
        raise CtlError(f"vnc-bridge is not available in this build{missing}", EXIT_USAGE) from exc


def _parse_bridge(args: argparse.Namespace, extra: Sequence[str]) -> tuple[ModuleType, list[str]]:
    module = _bridge_module()
    names = list(dict.fromkeys([*OPTIONS, *getattr(module, "OPTIONS", ())]))
    parser = make_parser(f"{PROG} {BRIDGE}", module.__doc__ or BRIDGE, select(names))
    _add_common(parser, names, with_group=False)
    module.add_arguments(parser)
    parser.parse_args(extra, namespace=args)
    return module, names


def load_config(args: argparse.Namespace, option_names: Sequence[str]):
    options = select(option_names)
    return load(options, getattr(args, "config_file", ()) or (),
                flags=flags_from_namespace(args, options))


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, ModuleType, Sequence[str]]:
    """(args, subcommand module, option names) from argv; usage errors exit 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == BRIDGE:
        module, names = _parse_bridge(args, extra)
        return args, module, names
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    module = next(m for m in COMMANDS if m.NAME == args.command)
    return args, module, _names(module)


def _names(module: ModuleType) -> list[str]:
    """The common options, and those a subcommand adds (``OPTIONS`` in its module)."""
    return list(dict.fromkeys([*OPTIONS, *getattr(module, "OPTIONS", ())]))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, module, option_names = parse(argv)
        try:
            config = load_config(args, option_names)
        except ConfigError as exc:
            raise CtlError(f"error: {exc}", EXIT_USAGE) from exc
        configure(PROG, config.log_format, config.log_level)
        if "bus_secret_key_file" in option_names:
            use_curve(config)
        return int(module.run(config, args))
    except CtlError as exc:
        message = exc.message if exc.message.startswith("error: ") else f"error: {exc.message}"
        print(f"{PROG}: {message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0  # `consolectl status | head`: the reader went away


if __name__ == "__main__":
    raise SystemExit(main())
