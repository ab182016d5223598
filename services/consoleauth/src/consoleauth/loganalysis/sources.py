"""Where log lines come from: files (plain or ``.gz``), directories (their ``*.log*``,
rotated files oldest first) and standard input (``-``).

Lines are cut from 1 MiB reads with ``bytes.split`` (no per-line Python call on the read
side) and no line may grow past ``MAX_LINE``: a longer one is dropped and counted, so a
file with no newline cannot fill memory.
"""

from __future__ import annotations

import gzip
import re
import sys
import zlib
from itertools import chain
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from consoleauth.loganalysis.lines import TOO_LONG_LINE

CHUNK = 1 << 20
MAX_LINE = 1 << 20
_ROTATED = re.compile(r"^(?P<stem>.*?\.log)(?:[.-](?P<n>\d+))?(?:\.gz)?$")


class InputError(Exception):
    """A path that cannot be read at all (missing, not a file or directory): a usage error."""


@dataclass
class Source:
    name: str  # as reports show it: the path given, or "<stdin>"
    path: Path | None  # None: standard input
    error: str | None = field(default=None)  # why reading stopped early, if it did

    def open(self) -> BinaryIO:
        if self.path is None:
            return sys.stdin.buffer
        if self.path.name.endswith(".gz"):
            return gzip.open(self.path, "rb")  # type: ignore[return-value]
        return open(self.path, "rb")  # noqa: SIM115 - closed by read()

    def read(self) -> Iterator[bytes]:
        """Every line; a read that fails mid-way (truncated gzip, I/O error) ends the source
        and says why in ``error`` instead of raising. Lines are handed out of each chunk's
        list by C code (chain), not by a Python generator step per line."""
        return chain.from_iterable(self._chunks())

    def _chunks(self) -> Iterator[list[bytes]]:
        try:
            stream = self.open()
        except OSError as exc:
            self.error = exc.strerror or str(exc)
            return
        try:
            yield from split_chunks(stream)
        except (OSError, EOFError, zlib.error) as exc:
            self.error = f"read failed: {exc}"
        finally:
            if self.path is not None:
                stream.close()


def split_lines(stream: BinaryIO, chunk: int = CHUNK, max_line: int = MAX_LINE) -> Iterator[bytes]:
    return chain.from_iterable(split_chunks(stream, chunk, max_line))


def split_chunks(stream: BinaryIO, chunk: int = CHUNK,
                 max_line: int = MAX_LINE) -> Iterator[list[bytes]]:
    """Lists of whole lines, without their newlines, from reads of ``chunk`` bytes."""
    rest = b""
    dropping = False  # inside a line already longer than max_line
    while data := stream.read(chunk):
        parts = data.split(b"\n")
        if len(parts) == 1:  # no line ends in this chunk
            if not dropping:
                rest += data
                if len(rest) > max_line:
                    rest, dropping = b"", True
            continue
        # only the first line joins what was left of the last chunk: no copy of the chunk
        parts[0] = TOO_LONG_LINE if dropping else rest + parts[0]
        dropping = False
        rest = parts.pop()
        yield parts
        if len(rest) > max_line:
            rest, dropping = b"", True
    if dropping:
        yield [TOO_LONG_LINE]
    elif rest:
        yield [rest]


def _rotation_key(path: Path) -> tuple[str, int, str]:
    """Oldest first: novncproxy.log.2.gz, novncproxy.log.1, novncproxy.log."""
    match = _ROTATED.match(path.name)
    if match is None:
        return (path.name, 0, path.name)
    return (match["stem"], -int(match["n"] or 0), path.name)


def expand(paths: Sequence[str]) -> list[Source]:
    """The sources named on the command line, in order; directories give their ``*.log*``
    files (not recursing)."""
    sources: list[Source] = []
    for given in paths:
        if given == "-":
            sources.append(Source("<stdin>", None))
            continue
        path = Path(given)
        if path.is_dir():
            found = sorted((p for p in path.glob("*.log*") if p.is_file()), key=_rotation_key)
            if not found:
                raise InputError(f"{given}: no *.log* files in this directory")
            sources += [Source(str(p), p) for p in found]
        elif path.is_file():
            sources.append(Source(given, path))
        elif path.exists():
            raise InputError(f"{given}: not a file or directory")
        else:
            raise InputError(f"{given}: no such file or directory")
    return sources
