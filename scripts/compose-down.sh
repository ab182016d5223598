#!/usr/bin/env bash
# Remove everything scripts/compose-up.sh made: the compose project (containers, network,
# volumes), our dockerd and its containerd, their mounts, docker0 and the state directory.
# Safe to run twice, and after a crash (a hard-killed dockerd leaves containers behind:
# starting it again on the same directories reaps them, then the normal cleanup runs).
# The cached base image tar, wheels and compose plugin under .cache/docker/ are kept.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/compose-lib.sh"

if [[ ! -d $W ]]; then
    log "nothing to do ($W does not exist)"
    exit 0
fi
if ! dockerd_alive && { pgrep -f "containerd-shim.*$W" >/dev/null || grep -q " $W/" /proc/self/mounts; }; then
    log "dockerd is gone but containers survived: restarting it to reap them"
    rm -f "$W/dockerd.pid" "$W/docker.sock"
    start_dockerd || true
fi
if dockerd_alive; then
    if [[ -e $DOCKER_CONFIG/cli-plugins/docker-compose ]]; then
        log "docker compose -p $PROJECT down -v"
        compose down -v --remove-orphans -t 5 >"$W/down.log" 2>&1 \
            || { tail -n 20 "$W/down.log" >&2; log "compose down failed (continuing)"; }
    fi
    ids=$(docker ps -aq 2>/dev/null)
    [[ -n $ids ]] && docker rm -f $ids >/dev/null 2>&1
    PID=$(cat "$W/dockerd.pid")
    log "stopping dockerd ($PID)"
    kill -TERM "$PID"
    for _ in $(seq 60); do kill -0 "$PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$PID" 2>/dev/null && kill -KILL "$PID"
fi
grep -oE " $W[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
ip link show docker0 >/dev/null 2>&1 && ip link del docker0
rm -f /etc/docker/key.json
# /run/docker and /run/containerd are shared paths: remove them only when no other Docker
# runs on this machine.
if ! pgrep -x dockerd >/dev/null && ! pgrep -x containerd >/dev/null; then
    rm -rf /run/docker /run/containerd
fi
rm -rf "$W"
rm -rf "$ROOT/docker/build"
log "down"
