#!/usr/bin/env bash
# Build the container images without pulling anything from a container registry.
#
#   scripts/build-images.sh                    base (once) + gamebackbone/{gateway,gameserver}:$TAG
#   scripts/build-images.sh --local-images     also the Redis and Prometheus stand-ins for compose
#   scripts/build-images.sh --rebuild-base     debootstrap the base again even if it exists
#   BASE_IMAGE=python:3.12-slim scripts/build-images.sh   a registry base instead (no debootstrap)
#
# Steps:
#  1. Base image `gamebackbone-base:local` (skipped when it exists, unless --rebuild-base):
#     `debootstrap --variant=minbase` of Debian into a temporary directory, from the mirror this
#     machine's apt already uses (read from /etc/apt/sources.list and sources.list.d/; override
#     with DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR), security updates applied, a Python >= 3.12
#     added (see below), trimmed (no docs, man pages, locales, apt lists), `docker import`ed.
#     Needs root and debootstrap (scripts/setup-docker.sh installs it).
#  2. gamebackbone/gateway:$TAG and gamebackbone/gameserver:$TAG from Dockerfile.gateway /
#     Dockerfile.gameserver with --build-arg BASE_IMAGE=..., --network host, and this host's CA
#     bundle given to pip as a BuildKit secret (pip_ca): it never lands in a layer.
#  3. With --local-images: gamebackbone/redis:local and gamebackbone/prometheus:local from
#     deploy/local-images/, FROM the same base, with Debian's redis-server and prometheus, so
#     deploy/compose.yaml runs here with REDIS_IMAGE=... PROMETHEUS_IMAGE=... (no pulls).
#
# Which Python (PYTHON_SOURCE):
#   The project needs Python >= 3.12. Bookworm's python3 is 3.11; PyPI has no CPython; no current
#   Debian suite has python3.12 (trixie has 3.13, forky/sid 3.14).
#   - debian: Debian's own python3 from DEBIAN_SUITE (default trixie, the stable release: 3.13),
#     distribution-maintained, the cleanest base. NOT the default, because the GameServer does
#     not start on Python 3.13: it sets asyncio.eager_task_factory, uvloop 0.23.0 passes
#     `eager_start=` to task factories on 3.13, and 3.13's eager factory rejects it (TypeError
#     in create_task; the Gateway runs). Every pin has cp313 wheels, so once the GameServer
#     copes, `PYTHON_SOURCE=debian` is the better default.
#   - host (default): bookworm — the host's own Debian release, which the Python was built on —
#     plus the CPython 3.12 this machine already has (PYTHON, else what
#     scripts/ensure-venv.sh --find-python picks, e.g. pyenv's), copied to /usr/local as
#     python:3.12-slim lays it out, with the Debian packages its extension modules link against
#     (found with ldd + dpkg -S) and every stdlib extension module test-imported. It is the
#     interpreter the test suite runs on here.
#   The python:3.12-slim default in the Dockerfiles stays for users with a registry; the same
#   Dockerfiles build on every base.
#
# Re-runs are cheap: the base is reused, and Docker's layer cache skips every unchanged step
# (the dependency layer depends on pyproject.toml only). Prints the image sizes at the end.
#
# Environment: TAG (dev), BASE_IMAGE (gamebackbone-base:local: anything else skips step 1),
# PYTHON_SOURCE (host), PYTHON, DEBIAN_SUITE, DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR,
# PIP_CA_BUNDLE (the first of /etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/
# ca-bundle.crt that exists; "none" to send none), BUILD_NETWORK (host).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOCAL_BASE="gamebackbone-base:local"
TAG="${TAG:-dev}"
BASE_IMAGE="${BASE_IMAGE:-$LOCAL_BASE}"
PYTHON_SOURCE="${PYTHON_SOURCE:-host}"
BUILD_NETWORK="${BUILD_NETWORK:-host}"
REDIS_LOCAL_IMAGE="gamebackbone/redis:local"
PROMETHEUS_LOCAL_IMAGE="gamebackbone/prometheus:local"

rebuild_base=0
local_images=0
for arg in "$@"; do
  case "$arg" in
    --rebuild-base) rebuild_base=1 ;;
    --local-images) local_images=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "build-images: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '→ %s\n' "$*"; }
die() { printf '✗ build-images: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }

command -v docker >/dev/null 2>&1 || die "no docker CLI; run scripts/setup-docker.sh"
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable; run scripts/setup-docker.sh"

# ---- BuildKit -------------------------------------------------------------------------------
# The Dockerfiles use RUN --mount (the CA secret), so they need BuildKit: `docker buildx build`
# where the buildx plugin exists; otherwise a docker CLI older than 23 has BuildKit built in
# (DOCKER_BUILDKIT=1). Debian's docker.io ships such a CLI as /usr/bin/docker, which may be
# shadowed on PATH by a newer CLI without buildx (as on the project's machines).
BUILD=()
pick_builder() {
  if docker buildx version >/dev/null 2>&1; then
    BUILD=(docker buildx build --load)
    return
  fi
  local cli version
  for cli in docker /usr/bin/docker; do
    version="$("$cli" version --format '{{.Client.Version}}' 2>/dev/null)" || continue
    if [[ "${version%%.*}" =~ ^[0-9]+$ ]] && ((${version%%.*} < 23)); then
      BUILD=(env DOCKER_BUILDKIT=1 "$cli" build)
      return
    fi
  done
  die "BuildKit is needed: install the docker buildx plugin, or Debian's docker.io (its /usr/bin/docker has BuildKit built in)"
}
pick_builder

# ---- the Debian mirror apt uses ---------------------------------------------------------------
# Prints "URI SUITE" for each deb entry in the one-line and deb822 source files.
apt_sources() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$file" ]] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$file" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
  done
  for file in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$file" ]] || continue
    awk '
      function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no") { n = split(uris, u, " "); m = split(suites, s, " "); for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j] } types = uris = suites = ""; enabled = "" }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ /, ""); val = $0 }
      key == "types" { types = val } key == "uris" { uris = val } key == "suites" { suites = val }
      key == "enabled" { enabled = tolower(val) }
      END { flush() }
    ' "$file"
  done
}

find_mirrors() {
  local codename=""
  # shellcheck disable=SC1091  # the host's file, read at run time
  [[ -r /etc/os-release ]] && codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  local sources
  sources="$(apt_sources 2>/dev/null || true)"
  if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
    # The entry for the host's own release (third-party repositories use other suite names).
    DEBIAN_MIRROR="$(awk -v c="$codename" 'c != "" && $2 == c { print $1; exit }' <<<"$sources")"
    if [[ -z "$DEBIAN_MIRROR" ]]; then
      DEBIAN_MIRROR="$(awk '$1 ~ /\/debian\/?$/ && $2 !~ /-security$/ { print $1; exit }' <<<"$sources")"
    fi
    [[ -n "$DEBIAN_MIRROR" ]] || die "no Debian mirror in /etc/apt/sources.list{,.d/}; set DEBIAN_MIRROR=http://.../debian"
  fi
  if [[ -z "${DEBIAN_SECURITY_MIRROR:-}" ]]; then
    DEBIAN_SECURITY_MIRROR="$(awk '$2 ~ /-security$/ { print $1; exit }' <<<"$sources")"
  fi
  DEBIAN_MIRROR="${DEBIAN_MIRROR%/}"
  DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR%/}"
}

# ---- 1. the base image ------------------------------------------------------------------------
# Packages (of the host, via dpkg) holding the shared libraries that the ELF files given need,
# outside the directory $1. Prints package names, one a line.
runtime_packages() {
  local skip="$1" lib pkg
  shift
  ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u |
    while read -r lib; do
      [[ "$lib" == "$skip"/* ]] && continue
      pkg="$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null ||
             dpkg -S "${lib#/usr}" 2>/dev/null || dpkg -S "/usr$lib" 2>/dev/null)" ||
        die "no Debian package owns $lib (needed by the host Python)"
      echo "${pkg%%:*}"
    done | sort -u
}

# Copies the host's CPython (prefix $1, version $2) into $3/usr/local, as python:3.12-slim lays
# it out, without what a server never imports (test suite, IDLE, Tk, static library, pip's
# site-packages, optimized .pyc variants, debug symbols). The stale build-time RUNPATH is harmless: ldconfig
# finds libpython in /usr/local/lib.
install_host_python() {
  local prefix="$1" ver="$2" root="$3"
  mkdir -p "$root/usr/local/bin" "$root/usr/local/lib"
  cp -a "$prefix/bin/python$ver" "$root/usr/local/bin/"
  ln -sf "python$ver" "$root/usr/local/bin/python3"
  ln -sf python3 "$root/usr/local/bin/python"
  cp -a "$prefix"/lib/libpython"$ver"*.so* "$root/usr/local/lib/"
  tar -C "$prefix/lib" -c \
      --exclude="python$ver/test" --exclude="python$ver/idlelib" --exclude="python$ver/tkinter" \
      --exclude="python$ver/turtledemo" --exclude="python$ver/config-$ver-*" \
      --exclude="python$ver/site-packages/*" --exclude='*.opt-1.pyc' --exclude='*.opt-2.pyc' \
      --exclude="python$ver/lib-dynload/_tkinter.*" --exclude="python$ver/lib-dynload/_test*" \
      --exclude="python$ver/lib-dynload/_ctypes_test.*" --exclude="python$ver/lib-dynload/_xxtestfuzz.*" \
      --exclude="python$ver/lib-dynload/nis.*" \
      "python$ver" | tar -C "$root/usr/local/lib" -x
  # Debug symbols are most of libpython's size (30 MB -> 5 MB); python:3.12-slim strips too.
  if command -v strip >/dev/null 2>&1; then
    strip --strip-unneeded "$root/usr/local/bin/python$ver" "$root"/usr/local/lib/libpython"$ver"*.so.* \
      "$root/usr/local/lib/python$ver"/lib-dynload/*.so
  fi
}

build_base() {
  [[ "$(id -u)" == 0 ]] || die "debootstrap needs root (sudo $0)"
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing; run scripts/setup-docker.sh (apt-get install debootstrap)"
  find_mirrors

  local suite include host_python="" prefix="" ver=""
  case "$PYTHON_SOURCE" in
    host)
      host_python="${PYTHON:-$("$ROOT/scripts/ensure-venv.sh" --find-python 2>/dev/null || true)}"
      [[ -n "$host_python" ]] || die "PYTHON_SOURCE=host: no Python >= 3.12 on this machine (set PYTHON=/path/to/python3.12)"
      read -r prefix ver < <("$host_python" -c 'import sys; print(sys.base_prefix, "%d.%d" % sys.version_info[:2])')
      [[ -x "$prefix/bin/python$ver" && -d "$prefix/lib/python$ver" ]] ||
        die "PYTHON_SOURCE=host: $host_python ($prefix) is not a self-contained CPython install"
      [[ "$prefix" != /usr ]] || die "PYTHON_SOURCE=host: $host_python is the distribution's Python; use PYTHON_SOURCE=debian"
      command -v dpkg >/dev/null 2>&1 || die "PYTHON_SOURCE=host needs a Debian host (dpkg)"
      # The image's Debian release must be the one that Python was built on: the host's.
      # shellcheck disable=SC1091  # the host's file, read at run time
      suite="${DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}"
      [[ -n "$suite" ]] || die "PYTHON_SOURCE=host: cannot tell the host's Debian release; set DEBIAN_SUITE"
      local -a elves=("$prefix/bin/python$ver" "$prefix"/lib/libpython"$ver"*.so.*)
      local so
      for so in "$prefix/lib/python$ver"/lib-dynload/*.so; do
        case "${so##*/}" in _tkinter.*|_test*|_ctypes_test.*|_xxtestfuzz.*|nis.*) ;; *) elves+=("$so") ;; esac
      done
      include="$(runtime_packages "$prefix" "${elves[@]}" | grep -vx libc6 | paste -sd, -)"
      include="ca-certificates${include:+,$include}"
      ;;
    debian)
      suite="${DEBIAN_SUITE:-trixie}"
      include="python3,python3-venv,ca-certificates"
      ;;
    *) die "PYTHON_SOURCE must be host or debian, got '$PYTHON_SOURCE'" ;;
  esac

  say "debootstrap --variant=minbase $suite from $DEBIAN_MIRROR (security: ${DEBIAN_SECURITY_MIRROR:-none})"
  say "  --include=$include"
  local started rootfs
  started="$(now)"
  rootfs="$(mktemp -d /var/tmp/gamebackbone-base.XXXXXX)"
  chmod 0755 "$rootfs"   # apt in the chroot drops to _apt for downloads
  # shellcheck disable=SC2064  # expand now: the trap must clean this directory
  trap "umount '$rootfs/proc' 2>/dev/null || true; rm -rf --one-file-system '$rootfs'" EXIT

  debootstrap --variant=minbase --components=main --include="$include" \
    "$suite" "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 || {
      tail -n 30 "$rootfs.log" >&2
      die "debootstrap failed (full log: $rootfs.log)"
    }
  rm -f "$rootfs.log"

  # apt inside the image: the same mirror, updates and security; no recommends; no docs on
  # later installs (the stand-in images install packages on top of this base).
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$DEBIAN_MIRROR" "$suite" "$suite"
    if [[ -n "$DEBIAN_SECURITY_MIRROR" ]]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$DEBIAN_SECURITY_MIRROR" "$suite"
    fi
  } >"$rootfs/etc/apt/sources.list.d/debian.sources"
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/apt.conf.d/90gamebackbone" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90gamebackbone-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF

  say "security updates"
  mount -t proc proc "$rootfs/proc"
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
    sh -ec 'apt-get update -qq && apt-get upgrade -y -qq >/dev/null && apt-get clean' \
    || die "apt-get upgrade inside the base failed"
  umount "$rootfs/proc"

  if [[ "$PYTHON_SOURCE" == host ]]; then
    say "CPython $ver from $prefix → /usr/local"
    install_host_python "$prefix" "$ver" "$rootfs"
    chroot "$rootfs" /sbin/ldconfig
  fi
  # Every stdlib extension module must load (a missing shared library shows here, not in prod).
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin python3 -c '
import importlib, pathlib, sys, sysconfig
assert sys.version_info >= (3, 12), sys.version
dynload = pathlib.Path(sysconfig.get_path("platstdlib")) / "lib-dynload"
for so in sorted(dynload.glob("*.so")):
    name = so.name.split(".")[0]
    if not name.startswith(("_test", "_tkinter", "_ctypes_test", "_xxtestfuzz")):
        importlib.import_module(name)
import ensurepip, ssl, sqlite3, venv  # noqa: F401  (venv + pip for the builder stage)
' || die "the base's Python cannot load its standard library"

  # Trim what a server image never reads.
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "$rootfs"/usr/share/{man,info,lintian}/* \
         "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
         "$rootfs"/var/lib/dpkg/*-old "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.cache
  find "$rootfs/var/log" -type f -delete
  : >"$rootfs/etc/resolv.conf"   # Docker provides these at run time
  : >"$rootfs/etc/hostname"
  rm -f "$rootfs/etc/machine-id"

  local python_version
  python_version="$(chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
  say "docker import → $LOCAL_BASE (Debian $suite, Python $python_version from $PYTHON_SOURCE)"
  tar --numeric-owner --one-file-system -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.opencontainers.image.title=gamebackbone-base org.opencontainers.image.description=\"debootstrap --variant=minbase $suite + Python $python_version ($PYTHON_SOURCE)\" org.opencontainers.image.created=$(date -u +%Y-%m-%dT%H:%M:%SZ) io.gamebackbone.base.python-source=$PYTHON_SOURCE" \
    --message "debootstrap --variant=minbase $suite $DEBIAN_MIRROR; Python $python_version ($PYTHON_SOURCE)" \
    - "$LOCAL_BASE" >/dev/null
  rm -rf --one-file-system "$rootfs"
  trap - EXIT
  say "base image built in $(($(now) - started)) s"
}

if [[ "$BASE_IMAGE" == "$LOCAL_BASE" ]]; then
  existing="$(docker image inspect --format '{{index .Config.Labels "io.gamebackbone.base.python-source"}}' "$LOCAL_BASE" 2>/dev/null || true)"
  if ((rebuild_base)) || [[ -z "$existing" ]]; then
    build_base
  elif [[ "$existing" != "$PYTHON_SOURCE" ]]; then
    say "base image $LOCAL_BASE has PYTHON_SOURCE=$existing, not $PYTHON_SOURCE: rebuilding it"
    build_base
  else
    say "base image $LOCAL_BASE exists (--rebuild-base to rebuild it)"
  fi
fi

# ---- 2. the application images --------------------------------------------------------------
SECRET_ARGS=()
if [[ -z "${PIP_CA_BUNDLE:-}" ]]; then
  for candidate in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    if [[ -s "$candidate" ]]; then PIP_CA_BUNDLE="$candidate"; break; fi
  done
fi
if [[ -n "${PIP_CA_BUNDLE:-}" && "$PIP_CA_BUNDLE" != none ]]; then
  SECRET_ARGS=(--secret "id=pip_ca,src=$PIP_CA_BUNDLE")
fi

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ "$REVISION" != unknown ]] && [[ -n "$(git status --porcelain -- pyproject.toml README.md libs services clients 2>/dev/null)" ]]; then
  REVISION="$REVISION-dirty"
fi
# The commit's time, not the build's: rebuilding the same commit gives the same labels.
CREATED="$(git log -1 --format=%cI 2>/dev/null || echo unknown)"
SOURCE="$(git remote get-url origin 2>/dev/null || echo unknown)"

build() {  # build IMAGE DOCKERFILE [CONTEXT]
  local image="$1" dockerfile="$2" context="${3:-.}" started log
  started="$(now)"
  log="${TMPDIR:-/tmp}/gamebackbone-build-$(basename "${image%%:*}").log"
  say "build $image ($dockerfile, BASE_IMAGE=$BASE_IMAGE)"
  "${BUILD[@]}" --progress=plain --network "$BUILD_NETWORK" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" \
    --build-arg "CREATED=$CREATED" --build-arg "SOURCE=$SOURCE" \
    "${SECRET_ARGS[@]}" \
    -f "$dockerfile" -t "$image" "$context" >"$log" 2>&1 || {
      tail -n 40 "$log" >&2
      die "building $image failed (log: $log)"
    }
  say "built $image in $(($(now) - started)) s"
}

build "gamebackbone/gateway:$TAG" Dockerfile.gateway
build "gamebackbone/gameserver:$TAG" Dockerfile.gameserver
images=("gamebackbone/gateway:$TAG" "gamebackbone/gameserver:$TAG")

# ---- 3. local stand-ins for the third-party images ------------------------------------------
if ((local_images)); then
  build "$REDIS_LOCAL_IMAGE" deploy/local-images/Dockerfile.redis deploy/local-images
  build "$PROMETHEUS_LOCAL_IMAGE" deploy/local-images/Dockerfile.prometheus deploy/local-images
  images+=("$REDIS_LOCAL_IMAGE" "$PROMETHEUS_LOCAL_IMAGE")
fi

# ---- sizes ------------------------------------------------------------------------------------
echo
[[ "$BASE_IMAGE" == "$LOCAL_BASE" ]] && images=("$LOCAL_BASE" "${images[@]}")
printf '%-40s %10s\n' IMAGE SIZE
for image in "${images[@]}"; do
  bytes="$(docker image inspect --format '{{.Size}}' "$image")"
  printf '%-40s %7d MB\n' "$image" "$((bytes / 1000000))"
done
if ((local_images)); then
  echo
  echo "compose without pulls: REDIS_IMAGE=$REDIS_LOCAL_IMAGE PROMETHEUS_IMAGE=$PROMETHEUS_LOCAL_IMAGE TAG=$TAG docker compose -f deploy/compose.yaml up"
fi
