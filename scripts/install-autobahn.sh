#!/usr/bin/env bash
# The Autobahn WebSocket testsuite (PyPI autobahntestsuite 25.10.1) runs only on Python 2.7.
# This machine image ships CPython 2.7.18 through pyenv; virtualenv 20.21.1 is the last that
# can make a 2.7 environment. Installed once into .cache/autobahn27 (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.cache/autobahn27
if [ -x "$DEST/bin/wstest" ]; then exit 0; fi
PY27=${PYTHON27:-$(ls -d /root/.pyenv/versions/2.7*/bin/python2.7 2>/dev/null | head -1 || true)}
if [ -z "$PY27" ] || [ ! -x "$PY27" ]; then
    PY27=$(command -v python2.7 || true)
fi
if [ -z "$PY27" ]; then
    echo "install-autobahn: no Python 2.7 found (set PYTHON27=/path/to/python2.7)" >&2
    exit 1
fi
TOOL=.cache/virtualenv-20.21.1
mkdir -p .cache
if [ ! -d "$TOOL" ]; then
    python3 -m pip install --quiet --disable-pip-version-check --target "$TOOL" "virtualenv==20.21.1"
fi
PYTHONPATH="$TOOL" python3 -m virtualenv --quiet -p "$PY27" "$DEST"
"$DEST/bin/pip" install --quiet --disable-pip-version-check "autobahntestsuite==25.10.1" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
"$DEST/bin/wstest" --help >/dev/null
echo "autobahn testsuite installed in $DEST"
