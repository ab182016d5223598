#!/usr/bin/env bash
# `make run`: a local cluster on embedded defaults, no Docker: consoleauth (sqlite store),
# one fake compute host with three built-in instances, novncproxy and xvpvncproxy.
# Prints the console URLs; Ctrl-C stops everything. Every service reads its CONSOLE_*
# variables as usual (the tests move every port that way).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
LOGS=${RUN_LOCAL_LOGS:-.state/logs}
mkdir -p "$LOGS"
pids=()
names=()
# Each service in a process group of its own (job control): a Ctrl-C in the terminal then
# reaches only this script, which stops the services in order (SIGTERM, drain), instead of
# every service getting SIGINT at once and the script mistaking their exits for failures.
set -m

stop() {  # exit code
    trap - INT TERM EXIT
    local code=${1:-0} i rc
    echo
    echo "stopping..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for i in "${!pids[@]}"; do
        for _ in $(seq 150); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${pids[$i]}" 2>/dev/null
        wait "${pids[$i]}" 2>/dev/null; rc=$?
        # 127: reaped before (the one that died); 0: drained and exited cleanly
        if [[ $rc != 0 && $rc != 127 ]]; then
            echo "${names[$i]} did not stop cleanly (exit code $rc); see $LOGS/${names[$i]}.log"
        fi
    done
    echo "stopped."
    exit "$code"
}
trap 'stop 0' INT  # Ctrl-C is how a user ends it: not an error
trap 'stop 143' TERM
trap 'stop $?' EXIT

start() {  # name, command...
    local name=$1; shift
    "$@" --log-format json >"$LOGS/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
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
import os, sys, urllib.request
ports = (os.environ.get("CONSOLE_NOVNCPROXY_PORT", "6080"),
         os.environ.get("CONSOLE_XVPVNCPROXY_METRICS_PORT", "6082"))
try:
    for port in ports:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
except Exception:
    sys.exit(1)
PY
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a service failed to start; logs in $LOGS:"; tail -n 3 "$LOGS"/*.log; exit 1; }
    done
    sleep 0.2
done

echo
echo "Consoles (tokens are valid for 10 minutes; ask again with: .venv/bin/consolectl get-vnc-console vm-1 novnc):"
"$BIN/consolectl" get-vnc-console --all || exit 1
echo
echo "Open a novnc Url in a browser. For a desktop VNC viewer:"
echo "  .venv/bin/consolectl vnc-bridge '<xvpvnc Url above>' --listen 127.0.0.1:5999"
echo "  then point the viewer (vncviewer, Remmina, vncdo) at 127.0.0.1::5999."
echo "All consoles as JSON: .venv/bin/consolectl get-vnc-console --all --json"
echo "Service logs (JSON lines): $LOGS/*.log. Press Ctrl-C to stop."
dead=
wait -n -p dead "${pids[@]}"
code=$?
for i in "${!pids[@]}"; do
    if [[ ${pids[$i]} == "$dead" ]]; then
        echo "${names[$i]} exited unexpectedly (exit code $code); the end of $LOGS/${names[$i]}.log:"
        tail -n 5 "$LOGS/${names[$i]}.log"
    fi
done
stop 1
