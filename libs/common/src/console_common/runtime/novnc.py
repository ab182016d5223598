"""Where the noVNC client library is, and files safely under a folder: what novncproxy's
console page and consolectl's playback page both serve."""

from __future__ import annotations

import sys
from pathlib import Path

# libs/common/src/console_common/runtime -> the repository's pinned install (scripts/install-novnc.sh)
PINNED_NOVNC = (Path(__file__).resolve().parents[5] / "services" / "novnc" / "web"
                / "node_modules" / "@novnc" / "novnc")


def find_novnc_dir(web: str) -> Path | None:
    """``web`` if set; else the pinned install in the repository; else sys.prefix/share."""
    candidates = [Path(web)] if web else [PINNED_NOVNC, Path(sys.prefix) / "share" / "novnc"]
    for candidate in candidates:
        if (candidate / "core" / "rfb.js").is_file():
            return candidate.resolve()
    return None


def file_under(root: Path, rel: str) -> Path | None:
    """The file ``rel`` (a URL path, ``/``-separated) inside ``root``, or None: no
    traversal, no dotfiles, no NUL or backslash, nothing that resolves outside ``root``."""
    if not rel or "\x00" in rel or "\\" in rel:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    try:
        resolved = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return None
    return resolved
