#!/usr/bin/env bash
# Install the Debian packages the console proxy suite needs (real VNC servers, a real
# browser, Redis, network tools). Idempotent and non-interactive; run as root.
# Skips apt entirely when every package is already installed.
set -euo pipefail

PACKAGES=(
    tigervnc-standalone-server tigervnc-tools qemu-system-x86 chromium redis-server
    socat iproute2 xterm x11-utils xfonts-base psmisc procps openssl curl ca-certificates
)
# Log analysis and monitoring (docs/logs.md, monitoring/): lnav reads the JSON lines with
# monitoring/lnav/console_suite.json; prometheus and promtool check and scrape the suite.
PACKAGES+=(lnav prometheus)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ "$status" == ii* ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install-system: must run as root to install: ${missing[*]}" >&2
    exit 1
fi

echo "install-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o Acquire::Retries=3)
apt-get "${apt_opts[@]}" update </dev/null
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${PACKAGES[@]}" </dev/null
echo "install-system: done"
