#!/usr/bin/env bash
# Undo scripts/netns-up.sh: stop every process inside the namespaces it created (they
# are ours: nothing else runs there), delete the namespaces (their veths and bridge go
# with them) and remove the state directory. Safe to run twice or after a partial start.
#
# Usage: scripts/netns-down.sh [--prefix NAME]   (default: cp; env NETNS_PREFIX)
set -uo pipefail

PREFIX=${NETNS_PREFIX:-cp}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "netns-down: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $PREFIX =~ ^[A-Za-z0-9_-]{1,40}$ ]] || { echo "netns-down: bad --prefix $PREFIX" >&2; exit 2; }
if [[ $(id -u) -ne 0 ]]; then
    echo "netns-down: needs root (ip netns del)" >&2
    exit 2
fi
STATE=${NETNS_STATE_DIR:-/tmp/console-netns-$PREFIX}
ALL_NS=("$PREFIX-proxy" "$PREFIX-compute1" "$PREFIX-compute2" "$PREFIX-client")

pids_in() { [[ -e /run/netns/$1 ]] && ip netns pids "$1" 2>/dev/null; }

for ns in "${ALL_NS[@]}"; do
    for pid in $(pids_in "$ns"); do kill -TERM "$pid" 2>/dev/null; done
done
for _ in $(seq 50); do
    left=0
    for ns in "${ALL_NS[@]}"; do [[ -n $(pids_in "$ns") ]] && left=1; done
    [[ $left -eq 0 ]] && break
    sleep 0.1
done
for ns in "${ALL_NS[@]}"; do
    for pid in $(pids_in "$ns"); do kill -KILL "$pid" 2>/dev/null; done
done
status=0
for ns in "${ALL_NS[@]}"; do
    if [[ -e /run/netns/$ns ]]; then
        for _ in $(seq 20); do
            [[ -z $(pids_in "$ns") ]] && break
            sleep 0.1
        done
        ip netns del "$ns" || status=1
    fi
done
rm -rf "$STATE"
echo "netns-down: removed ${ALL_NS[*]}"
exit $status
