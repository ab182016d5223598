# Shared settings of scripts/compose-up.sh and compose-down.sh (sourced, not run).
# Our own dockerd lives under a short directory (unix socket paths are limited to 108
# bytes); nothing goes to /var/lib/docker and the host's Docker (if any) is not touched.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${CPS_DOCKER_DIR:-/tmp/cps-docker}
PROJECT=${CPS_PROJECT:-consoleproxy}
CACHE=${CPS_CACHE_DIR:-$ROOT/.cache/docker}
export DOCKER_HOST=unix://$W/docker.sock
export DOCKER_CONFIG=$W/cfg
export BASE_IMAGE=${BASE_IMAGE:-local/console-base:latest}
export EDGE_IMAGE=${EDGE_IMAGE:-$BASE_IMAGE}
export REDIS_IMAGE=${REDIS_IMAGE:-$BASE_IMAGE}
export EDGE_NOVNC_PORT=${EDGE_NOVNC_PORT:-6080} EDGE_XVP_PORT=${EDGE_XVP_PORT:-6081}
export COMPOSE_PROGRESS=${COMPOSE_PROGRESS:-plain}
# No registry here: the image is built from a wheelhouse staged on the host (docker/build/),
# with no network (docker/Dockerfile's `staged` way; `source` is the default elsewhere).
export WHEELS=${WHEELS:-staged} BUILD_NETWORK=${BUILD_NETWORK:-none}
# The local cluster runs with Prometheus (compose.yaml's `monitoring` profile) unless told
# otherwise (COMPOSE_PROFILES= for none).
export COMPOSE_PROFILES=${COMPOSE_PROFILES-monitoring}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}

log() { printf '%s compose: %s\n' "$(date +%T)" "$*" >&2; }
compose() { docker compose -p "$PROJECT" -f "$ROOT/compose.yaml" "$@"; }
dockerd_alive() { [[ -f $W/dockerd.pid ]] && kill -0 "$(cat "$W/dockerd.pid")" 2>/dev/null; }

start_dockerd() {
    mkdir -p "$W"
    setsid dockerd --data-root "$W/data" --exec-root "$W/exec" --pidfile "$W/dockerd.pid" \
        -H "unix://$W/docker.sock" --storage-driver overlay2 --iptables=false \
        --ip-forward=false >>"$W/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 $! 2>/dev/null || break
        sleep 0.5
    done
    log "dockerd did not start; last lines of $W/dockerd.log:"
    tail -n 15 "$W/dockerd.log" >&2
    return 1
}
