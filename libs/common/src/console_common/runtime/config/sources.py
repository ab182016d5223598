"""Read raw option values from config files, the environment and flags, keeping where
each came from (file:line, env var, flag) so a bad value can be reported precisely.

Config files are INI (``[DEFAULT]``, ``[vnc]``, ...) or the seed's flag-file form
(``--name=value`` lines, optional leading ``--``, ``#`` comments, ``--flag``/``--noflag``
booleans, nested ``--flagfile=...``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from console_common.runtime.config.options import ALIASES, OPTIONS

# Sections whose keys we read; other sections of a shared nova.conf are left alone.
OUR_SECTIONS = ("default", "vnc", "console", "consoleauth")
MAX_FILE_BYTES = 1 << 20
MAX_INCLUDE_DEPTH = 8


@dataclass(frozen=True, slots=True)
class RawValue:
    name: str
    value: str
    source: str  # "file.conf:12", "env CONSOLE_X", "flag --x"


class SourceError(Exception):
    """A config source cannot be read at all (missing file, not text, loops)."""


def normalise(name: str) -> str:
    return name.strip().lstrip("-").replace("-", "_").lower()


def read_file(path: str, _depth: int = 0) -> tuple[list[RawValue], list[str]]:
    """Values and notes (unknown options) from one file, INI or flag-file."""
    if _depth > MAX_INCLUDE_DEPTH:
        raise SourceError(f"{path}: flag files nested more than {MAX_INCLUDE_DEPTH} deep")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise SourceError(f"config file {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"config file {path} is not UTF-8 text (byte {exc.start})") from exc
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip() and ln.strip()[0] not in "#;"), "")
    if first.startswith("["):
        return _read_ini(path, lines)
    return _read_flagfile(path, lines, _depth)


def _read_ini(path: str, lines: list[str]) -> tuple[list[RawValue], list[str]]:
    values: list[RawValue] = []
    notes: list[str] = []
    section = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        where = f"{path}:{number}"
        if stripped.startswith("["):
            if not stripped.endswith("]"):
                raise SourceError(f"{where}: bad section header {stripped!r}")
            section = stripped[1:-1].strip().lower()
            continue
        sep = min((i for i in (stripped.find("="), stripped.find(":")) if i > 0), default=-1)
        if sep < 0:
            raise SourceError(f"{where}: expected 'name = value', got {stripped!r}")
        if section is None:
            raise SourceError(f"{where}: option outside a section (add [DEFAULT])")
        if section not in OUR_SECTIONS:
            continue
        name = normalise(stripped[:sep])
        name = ALIASES.get((section, name), name)
        value = _unquote(stripped[sep + 1:].strip())
        if name in ("config_file", "flagfile"):
            notes.append(f"{where}: nested config files are only read from flag files")
        elif name in OPTIONS:
            values.append(RawValue(name, value, where))
        else:
            notes.append(f"{where}: unknown option {name!r} in [{section}]")
    return values, notes


def _read_flagfile(path: str, lines: list[str], depth: int) -> tuple[list[RawValue], list[str]]:
    values: list[RawValue] = []
    notes: list[str] = []
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{number}"
        body = stripped[2:] if stripped.startswith("--") else stripped
        if "=" in body:
            raw_name, value = body.split("=", 1)
            name, value = normalise(raw_name), _unquote(value.strip())
            name = ALIASES.get(("default", name), name)  # old flag names (`record`)
        else:  # `--ssl_only` / `--nossl_only` booleans, as gflags wrote them
            name, value = normalise(body), "true"
            if name not in OPTIONS and name.startswith("no") and name[2:] in OPTIONS:
                name, value = name[2:], "false"
        if name in ("flagfile", "config_file"):
            target = value if os.path.isabs(value) else os.path.join(os.path.dirname(path), value)
            more, more_notes = read_file(target, depth + 1)
            values += more
            notes += more_notes
        elif name in OPTIONS:
            values.append(RawValue(name, value, where))
        else:
            notes.append(f"{where}: unknown option {name!r}")
    return values, notes


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def from_env(environ: Mapping[str, str]) -> tuple[list[RawValue], list[str]]:
    values, notes = [], []
    for key in sorted(environ):
        if not key.startswith("CONSOLE_"):
            continue
        name = key[len("CONSOLE_"):].lower()
        if name in OPTIONS:
            values.append(RawValue(name, environ[key], f"env {key}"))
        elif name in ("config_file", "flagfile"):
            continue  # handled by the loader as a file list
        else:
            notes.append(f"env {key}: unknown option {name!r}")
    return values, notes
