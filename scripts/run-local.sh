#!/usr/bin/env bash
# `make run`: a local cluster on embedded defaults, no Docker: consoleauth (sqlite store),
# one fake compute host with three built-in instances, novncproxy and xvpvncproxy.
# Prints the console URLs; Ctrl-C stops everything.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
LOGS=${CONSOLE_RUN_LOGS:-.state/logs}
mkdir -p "$LOGS"
pids=()

stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    echo "stopped."
    exit "${1:-0}"  # not back into the script (it would report "a service exited")
}
trap 'stop 0' INT  # Ctrl-C is how a user ends it: not an error
trap 'stop 143' TERM
trap stop EXIT

start() {  # name, command...
    local name=$1; shift
    "$@" --log-format json >"$LOGS/$name.log" 2>&1 &
    pids+=($!)
}

start consoleauth "$BIN/consoleauth"
start fake-compute "$BIN/fake-compute"
start novncproxy "$BIN/novncproxy"
start xvpvncproxy "$BIN/xvpvncproxy"

for _ in $(seq 100); do
    "$BIN/consolectl" status >/dev/null 2>&1 && break
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a service failed to start; logs in $LOGS:"; tail -n 5 "$LOGS"/*.log; exit 1; }
    done
    sleep 0.2
done
"$BIN/consolectl" status || { echo "services did not come up; logs in $LOGS"; exit 1; }
# The proxies are not on the bus: wait for their health endpoints, and for every process.
for _ in $(seq 100); do
    python3 - <<'PY' && break
import sys, urllib.request
try:
    for url in ("http://127.0.0.1:6080/healthz", "http://127.0.0.1:6082/healthz"):
        urllib.request.urlopen(url, timeout=1).read()
except Exception:
    sys.exit(1)
PY
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a service failed to start; logs in $LOGS:"; tail -n 3 "$LOGS"/*.log; exit 1; }
    done
    sleep 0.2
done

echo
echo "Console URLs (tokens are valid for 10 minutes; ask again with: .venv/bin/consolectl get-vnc-console vm-1 novnc):"
for vm in vm-1 vm-2 vm-3; do
    "$BIN/consolectl" get-vnc-console "$vm" novnc || exit 1
done
"$BIN/consolectl" get-vnc-console vm-1 xvpvnc || exit 1
echo
echo "For a desktop VNC viewer: .venv/bin/consolectl vnc-bridge '<xvpvnc URL above>' --listen 127.0.0.1:5999"
echo "then point the viewer (vncviewer, Remmina, vncdo) at 127.0.0.1::5999."
echo "Service logs (JSON lines): $LOGS/*.log. Press Ctrl-C to stop."
wait -n "${pids[@]}"
echo "a service exited; see $LOGS"
exit 1
