#!/usr/bin/env bash
# Install the pinned noVNC client library (npm @novnc/novnc, exact version from
# services/novnc/web/package-lock.json) into services/novnc/web/node_modules.
# Idempotent: does nothing when the pinned version is already installed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WEB="$ROOT/services/novnc/web"
PINNED=$(node -p 'require(process.argv[1]).dependencies["@novnc/novnc"]' "$WEB/package.json")
INSTALLED_PKG="$WEB/node_modules/@novnc/novnc/package.json"

if ! command -v npm >/dev/null 2>&1; then
    echo "install-novnc: npm not found (Debian: apt-get install -y nodejs npm)" >&2
    exit 1
fi

installed=""
if [[ -f "$INSTALLED_PKG" ]]; then
    installed=$(node -p 'require(process.argv[1]).version' "$INSTALLED_PKG")
fi
if [[ "$installed" == "$PINNED" && -f "$WEB/node_modules/@novnc/novnc/core/rfb.js" ]]; then
    echo "install-novnc: @novnc/novnc $PINNED already installed"
    exit 0
fi

echo "install-novnc: installing @novnc/novnc $PINNED (found: ${installed:-none})"
cd "$WEB"
# npm ci installs exactly what package-lock.json says and fails if it disagrees with
# package.json; it never rewrites the lock file.
CI=true npm ci --no-audit --no-fund --no-update-notifier --loglevel=warn </dev/null
test -f "$WEB/node_modules/@novnc/novnc/core/rfb.js"
echo "install-novnc: done ($(node -p 'require(process.argv[1]).version' "$INSTALLED_PKG"))"
