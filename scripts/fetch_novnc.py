"""Fetch the pinned noVNC (npm @novnc/novnc) without node: the registry tarball of the exact
version in services/novnc/web/package-lock.json, checked against the lock's sha512
integrity, unpacked into DEST. Used by the image's source build (docker/Dockerfile).

    python3 scripts/fetch_novnc.py services/novnc/web/package-lock.json /out/novnc
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "@novnc/novnc"


def main(lock_path: str, dest: str) -> int:
    lock = json.loads(Path(lock_path).read_text())
    entry = lock["packages"][f"node_modules/{PACKAGE}"]
    version, integrity = entry["version"], entry["integrity"]
    algo, _, digest = integrity.partition("-")
    if algo != "sha512":
        print(f"fetch_novnc: unsupported integrity {algo}", file=sys.stderr)
        return 1
    registry = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org/").rstrip("/")
    url = entry.get("resolved") or f"{registry}/{PACKAGE}/-/novnc-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as reply:
        data = reply.read(64 << 20)
    if base64.b64encode(hashlib.sha512(data).digest()).decode() != digest:
        print(f"fetch_novnc: {url} does not match the lock's integrity", file=sys.stderr)
        return 1
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = []
        for member in tar.getmembers():
            name = member.name[len("package/"):] if member.name.startswith("package/") else ""
            parts = Path(name).parts
            # plain files and folders inside package/ only (Python 3.11.2, Debian's, has
            # no extraction filters: the checks are ours)
            if not name or ".." in parts or name.startswith("/") or not (
                    member.isfile() or member.isdir()):
                continue
            member.name = name
            members.append(member)
        tar.extractall(out, members=members)
    if not (out / "core" / "rfb.js").is_file():
        print(f"fetch_novnc: {url} holds no core/rfb.js", file=sys.stderr)
        return 1
    print(f"fetch_novnc: {PACKAGE} {version} in {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
