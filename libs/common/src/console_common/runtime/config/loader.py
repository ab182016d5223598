"""Merge option sources by precedence and validate them into a frozen Config.

defaults < config files (in order) < environment (CONSOLE_*) < command-line flags.
A bad value raises ConfigError whose message is one line: option, source, value, expectation.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn

from marshmallow import Schema, ValidationError

from console_common import __version__
from console_common.runtime.config.options import ALIASES, OPTIONS, Option, default_state_dir
from console_common.runtime.config.sources import RawValue, SourceError, from_env, read_file


class ConfigError(Exception):
    """Configuration cannot be used; str() is the one line shown to the operator."""


class Config(Mapping[str, Any]):
    """Frozen, validated option values with attribute access (``config.novncproxy_port``)."""

    __slots__ = ("_values", "_sources", "notes")

    def __init__(self, values: dict[str, Any], sources: dict[str, str], notes: Sequence[str]):
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))
        object.__setattr__(self, "_sources", MappingProxyType(dict(sources)))
        object.__setattr__(self, "notes", tuple(notes))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"option {name!r} is not loaded for this service") from None

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Config is frozen")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def source_of(self, name: str) -> str:
        return self._sources.get(name, "default")

    def replace(self, **changes: Any) -> "Config":
        values = dict(self._values)
        values.update(changes)
        return Config(values, dict(self._sources), self.notes)


def _describe(value: str) -> str:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return repr(shown)


def load(options: Sequence[Option], files: Sequence[str] = (),
         environ: Mapping[str, str] | None = None,
         flags: Iterable[RawValue] = ()) -> Config:
    environ = os.environ if environ is None else environ
    wanted = {o.name: o for o in options}
    raw: dict[str, RawValue] = {}
    notes: list[str] = []
    try:
        for path in [*_env_files(environ), *files]:
            values, file_notes = read_file(path)
            notes += file_notes
            for rv in values:
                raw[rv.name] = rv
    except SourceError as exc:
        raise ConfigError(str(exc)) from exc
    env_values, env_notes = from_env(environ)
    notes += env_notes
    for rv in [*env_values, *flags]:
        raw[rv.name] = rv

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    schema = Schema.from_dict({o.name: o.field() for o in options})()
    for name, option in wanted.items():
        rv = raw.get(name)
        if rv is None:
            values[name] = option.default
            continue
        try:
            loaded = schema.load({name: rv.value}, partial=True)
        except ValidationError as exc:
            msgs = exc.messages.get(name, exc.messages) if isinstance(exc.messages, dict) else exc.messages
            expected = "; ".join(_flatten(msgs))
            expected = expected.replace("Not a valid integer.", "expected a whole number")
            expected = expected.replace("Not a valid number.", "expected a number")
            expected = expected.replace("Not a valid boolean.", "expected true or false")
            raise ConfigError(f"option {name}: bad value {_describe(rv.value)} from {rv.source}: "
                              f"{expected}") from exc
        values[name] = loaded[name]
        sources[name] = rv.source
    if "state_dir" in values and not values["state_dir"]:
        values["state_dir"] = default_state_dir()
    return Config(values, sources, notes)


def _flatten(msgs: Any) -> list[str]:
    if isinstance(msgs, str):
        return [msgs]
    if isinstance(msgs, dict):
        return [m for v in msgs.values() for m in _flatten(v)]
    return [m for v in msgs for m in _flatten(v)]


def _env_files(environ: Mapping[str, str]) -> list[str]:
    value = environ.get("CONSOLE_CONFIG_FILE", "")
    return [p for p in (s.strip() for s in value.split(",")) if p]


class _Parser(argparse.ArgumentParser):
    """argparse that ends with one usage line and exit code 2, never a traceback."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_option_arguments(parser: argparse.ArgumentParser, options: Sequence[Option],
                         suppress_common: bool = True) -> None:
    """Each option as `--dashed-name` (Nova's `--under_score` spelling accepted too)."""
    group = parser.add_argument_group("options (also CONSOLE_<NAME> env vars and config files)")
    group.add_argument("--config-file", "--flagfile", dest="config_file", action="append",
                       metavar="PATH", default=argparse.SUPPRESS,
                       help="Config file (INI or flag-file form); repeatable, later wins.")
    for o in options:
        spellings = [o.flag] if o.flag == "--" + o.name else [o.flag, "--" + o.name]
        spellings += [f"--{old}" for (section, old), new in ALIASES.items()
                      if section == "default" and new == o.name]  # Nova's old `--record`
        default = o.default if o.name != "state_dir" else default_state_dir()
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{o.help} [default: {shown!s}]" if shown not in ("", None) else o.help
        help_text = help_text.replace("%", "%%")
        if o.flag_only_bool:
            group.add_argument(*spellings, dest=o.name, nargs="?", const="true",
                               default=argparse.SUPPRESS, metavar="BOOL", help=help_text)
        else:
            group.add_argument(*spellings, dest=o.name, default=argparse.SUPPRESS,
                               metavar=o.metavar, help=help_text)


def make_parser(prog: str, description: str, options: Sequence[Option]) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description,
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_option_arguments(parser, options)
    return parser


def flags_from_namespace(ns: argparse.Namespace, options: Sequence[Option]) -> list[RawValue]:
    out = []
    for o in options:
        if hasattr(ns, o.name):
            out.append(RawValue(o.name, getattr(ns, o.name), f"flag {o.flag}"))
    return out


def parse(prog: str, description: str, names: Sequence[str], argv: Sequence[str] | None = None,
          extend: Callable[[argparse.ArgumentParser], None] | None = None,
          ) -> tuple[Config, argparse.Namespace]:
    """Parse argv and every source for a service; on bad config print one line, exit 2."""
    options = [OPTIONS[n] for n in names]
    parser = make_parser(prog, description, options)
    if extend is not None:
        extend(parser)
    ns = parser.parse_args(argv)
    try:
        config = load(options, getattr(ns, "config_file", ()) or (), flags=flags_from_namespace(ns, options))
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return config, ns
