#!/usr/bin/env bash
# Run uv, installing it from PyPI first when this machine has none.
set -euo pipefail
if command -v uv >/dev/null 2>&1; then exec uv "$@"; fi
if python3 -m uv --version >/dev/null 2>&1; then exec python3 -m uv "$@"; fi
echo "installing uv from PyPI..." >&2
python3 -m pip install --quiet --disable-pip-version-check uv >&2
exec python3 -m uv "$@"
