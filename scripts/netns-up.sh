#!/usr/bin/env bash
# The seed's multi-host layout on one machine, with network namespaces (needs root).
#
#   client  (PREFIX-client,   10.231.1.100) --link "public"--> proxy 10.231.1.1
#   proxy   (PREFIX-proxy,    10.231.0.1 on bridge br-lan; 10.231.1.1 on "public")
#             consoleauth tcp://10.231.0.1:6085, novncproxy :6080, xvpvncproxy :6081
#   compute1 (PREFIX-compute1, 10.231.0.11) fake-compute + TigerVNC Xvnc on 10.231.0.11:5910
#   compute2 (PREFIX-compute2, 10.231.0.12) fake-compute + QEMU's VNC on 10.231.0.12:5910
#
# The client reaches only the proxy's public address: it sits on its own link with no
# route to 10.231.0.0/24, and the proxy namespace does not forward. The bridge lives inside
# the proxy namespace and every veth is created directly inside the namespaces, so nothing
# is added to (or depends on) the host's own network.
#
# Usage: scripts/netns-up.sh [--prefix NAME] [--links-only]
#   --prefix NAME   namespace names NAME-proxy, NAME-compute1, ... (default: cp; env
#                   NETNS_PREFIX) -- use a unique one for concurrent runs
#   --links-only    create the namespaces and links only (the test harness starts its own
#                   services); otherwise start the whole suite and print console URLs
# Logs and pids: $NETNS_STATE_DIR (default /tmp/console-netns-NAME). Undo with
# scripts/netns-down.sh --prefix NAME (this script runs it itself when it fails).
set -euo pipefail

PREFIX=${NETNS_PREFIX:-cp}
LINKS_ONLY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) PREFIX=$2; shift 2 ;;
        --links-only) LINKS_ONLY=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "netns-up: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $PREFIX =~ ^[A-Za-z0-9_-]{1,40}$ ]] || { echo "netns-up: bad --prefix $PREFIX" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
BIN=${VENV_BIN:-$REPO/.venv/bin}
STATE=${NETNS_STATE_DIR:-/tmp/console-netns-$PREFIX}
NS_PROXY=$PREFIX-proxy NS_C1=$PREFIX-compute1 NS_C2=$PREFIX-compute2 NS_CLIENT=$PREFIX-client
ALL_NS=("$NS_PROXY" "$NS_C1" "$NS_C2" "$NS_CLIENT")

if [[ $(id -u) -ne 0 ]]; then
    echo "netns-up: needs root (ip netns add); run it with sudo" >&2
    exit 2
fi
if ! ip netns list >/dev/null 2>&1; then
    echo "netns-up: 'ip netns' does not work here (iproute2 missing or no netns support)" >&2
    exit 2
fi
for ns in "${ALL_NS[@]}"; do
    if [[ -e /run/netns/$ns ]]; then
        echo "netns-up: namespace $ns already exists: run scripts/netns-down.sh --prefix $PREFIX" >&2
        exit 1
    fi
done

cleanup_on_error() {
    echo "netns-up: failed; tearing down what was created" >&2
    "$HERE/netns-down.sh" --prefix "$PREFIX" >&2 || true
}
trap cleanup_on_error ERR

mkdir -p "$STATE"
for ns in "${ALL_NS[@]}"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done

# Private LAN of the proxy and compute hosts: a bridge in the proxy namespace.
ip -n "$NS_PROXY" link add br-lan type bridge
ip -n "$NS_PROXY" addr add 10.231.0.1/24 dev br-lan
ip -n "$NS_PROXY" link set br-lan up
i=0
for ns in "$NS_C1" "$NS_C2"; do
    i=$((i + 1))
    ip -n "$NS_PROXY" link add "lan-c$i" type veth peer name eth0 netns "$ns"
    ip -n "$NS_PROXY" link set "lan-c$i" master br-lan up
    ip -n "$ns" addr add "10.231.0.1$i/24" dev eth0
    ip -n "$ns" link set eth0 up
done

# Public link: the client sees the proxy host only.
ip -n "$NS_PROXY" link add public type veth peer name eth0 netns "$NS_CLIENT"
ip -n "$NS_PROXY" addr add 10.231.1.1/24 dev public
ip -n "$NS_PROXY" link set public up
ip -n "$NS_CLIENT" addr add 10.231.1.100/24 dev eth0
ip -n "$NS_CLIENT" link set eth0 up
ip netns exec "$NS_PROXY" sysctl -qw net.ipv4.ip_forward=0

echo "netns-up: namespaces ${ALL_NS[*]} are up (state in $STATE)"
if [[ $LINKS_ONLY -eq 1 ]]; then
    trap - ERR
    exit 0
fi

# --- the suite ------------------------------------------------------------------------------
start() {  # start NAMESPACE NAME COMMAND...: run in the background, log and pid in $STATE
    local ns=$1 name=$2
    shift 2
    ip netns exec "$ns" setsid "$@" >"$STATE/$name.log" 2>&1 </dev/null &
    echo $! >"$STATE/$name.pid"
}
wait_port() {  # wait_port NAMESPACE HOST PORT
    for _ in $(seq 100); do
        if ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "netns-up: nothing listens on $2:$3 in $1 (see $STATE/*.log)" >&2
    return 1
}
free_display() {
    local d
    for d in $(seq 300 399); do
        [[ -e /tmp/.X$d-lock || -e /tmp/.X11-unix/X$d ]] || { echo "$d"; return; }
    done
    return 1
}

for cmd in consoleauth novncproxy xvpvncproxy fake-compute consolectl; do
    [[ -x $BIN/$cmd ]] || { echo "netns-up: $BIN/$cmd is missing: run make setup" >&2; false; }
done
BUS=tcp://10.231.0.1:6085
NOVNC_BASE=http://10.231.1.1:6080/vnc_auto.html
XVP_BASE=http://10.231.1.1:6081/console
LOG=(--log-format json)

start "$NS_PROXY" consoleauth "$BIN/consoleauth" "${LOG[@]}" --consoleauth-listen "$BUS" \
    --token-store memory
start "$NS_PROXY" novncproxy "$BIN/novncproxy" "${LOG[@]}" --consoleauth-url "$BUS"
start "$NS_PROXY" xvpvncproxy "$BIN/xvpvncproxy" "${LOG[@]}" --consoleauth-url "$BUS"

DISPLAY_NUM=$(free_display)
start "$NS_C1" xvnc Xvnc ":$DISPLAY_NUM" -interface 10.231.0.11 -rfbport 5910 -geometry 800x600 \
    -depth 24 -SecurityTypes None -nolisten tcp -retro -desktop xvnc-compute1
start "$NS_C2" qemu qemu-system-x86_64 -display none -vnc 10.231.0.12:10 -machine accel=tcg \
    -nodefaults -vga std -m 64 -name qemu-compute2

i=0
for ns in "$NS_C1" "$NS_C2"; do
    i=$((i + 1))
    addr=10.231.0.1$i
    real=$([[ $i -eq 1 ]] && echo "c1-xvnc=vnc://$addr:5910" || echo "c2-qemu=vnc://$addr:5910")
    start "$ns" "fake-compute$i" "$BIN/fake-compute" "${LOG[@]}" --consoleauth-url "$BUS" \
        --vncserver-listen "$addr" --vncserver-proxyclient-address "$addr" \
        --compute-listen "tcp://$addr:6095" --instances "c$i-builtin,$real" \
        --novncproxy-base-url "$NOVNC_BASE" --xvpvncproxy-base-url "$XVP_BASE"
done

wait_port "$NS_PROXY" 10.231.0.1 6085
wait_port "$NS_PROXY" 10.231.1.1 6080
wait_port "$NS_PROXY" 10.231.1.1 6081
wait_port "$NS_C1" 10.231.0.11 5910
wait_port "$NS_C2" 10.231.0.12 5910
wait_port "$NS_C1" 10.231.0.11 6095
wait_port "$NS_C2" 10.231.0.12 6095
trap - ERR

cat <<EOF
netns-up: the suite runs; logs in $STATE.
Console URLs (open them from the client namespace, e.g. with consolectl vnc-bridge):
EOF
for i in 1 2; do
    name=$([[ $i -eq 1 ]] && echo c1-xvnc || echo c2-qemu)
    for instance in "c$i-builtin" "$name"; do
        for kind in novnc xvpvnc; do
            echo "$instance ($kind):"
            ip netns exec "$NS_PROXY" "$BIN/consolectl" --compute-url "tcp://10.231.0.1$i:6095" \
                --consoleauth-url "$BUS" get-vnc-console "$instance" "$kind" || true
        done
    done
done
cat <<EOF
Try:  ip netns exec $NS_CLIENT $BIN/consolectl vnc-bridge 'URL' --listen 127.0.0.1:5999
      ip netns exec $NS_CLIENT $BIN/vncdo -s 127.0.0.1::5999 capture screen.png
Stop: scripts/netns-down.sh --prefix $PREFIX
EOF
