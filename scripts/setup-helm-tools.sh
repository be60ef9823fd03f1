#!/usr/bin/env bash
# Install the chart-checking tools into their own venv, .venv-tools/ (not the project's .venv:
# checkov alone pulls in ~100 packages that the project must not depend on).
#
#   helm-python-sdk      Helm's Go SDK (v4) as a Python wheel: lint and render, no helm binary
#   kubernetes-validate  Kubernetes OpenAPI schemas (strict) for the rendered manifests
#   checkov              static security analysis of the rendered manifests (offline)
#
#   scripts/setup-helm-tools.sh            create/update .venv-tools (quiet when up to date)
#   scripts/setup-helm-tools.sh --print    print the tools venv's python, or fail
#
# Cheap when nothing changed: it reinstalls only when the pins below differ from those
# recorded in .venv-tools/.pins. Exit 0 = the tools import; 3 = the package index could not be
# reached (tests/packaging/test_helm.py then skips, saying so in one line); 1 = anything else.
# PYTHON=/path/to/python3.12 overrides the interpreter; TOOLS_VENV=dir the location.
set -euo pipefail

PINS=(
  "helm-python-sdk==0.2.2"
  "kubernetes-validate==1.37.0"
  "checkov==3.3.30"
)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TOOLS_VENV:-$ROOT/.venv-tools}"
STAMP="$VENV/.pins"
WANT="${PINS[*]}"

tools_ok() {
  [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] &&
    "$VENV/bin/python" -c 'import helm_python, kubernetes_validate, checkov' >/dev/null 2>&1 &&
    [[ -x "$VENV/bin/checkov" ]]
}

if [[ "${1:-}" == "--print" ]]; then
  tools_ok || { echo "✗ $VENV is missing or out of date: run scripts/setup-helm-tools.sh" >&2; exit 1; }
  echo "$VENV/bin/python"
  exit 0
fi

# Keep git and ruff out of the venv (as Python >= 3.13's venv module does).
if [[ -d "$VENV" && ! -f "$VENV/.gitignore" ]]; then
  echo '*' >"$VENV/.gitignore"
fi

if tools_ok; then
  exit 0
fi

if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
  rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  if ! PY="$("$ROOT/scripts/ensure-venv.sh" --find-python)"; then
    echo "✗ no Python >= 3.12 for $VENV" >&2
    exit 1
  fi
  echo "→ creating $VENV with $PY"
  "$PY" -m venv "$VENV"
  echo '*' >"$VENV/.gitignore"
fi

echo "→ installing ${PINS[*]} into $VENV"
log="$(mktemp)"
if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "${PINS[@]}" >"$log" 2>&1; then
  # Keep the reason: the caller prints it (no network, a registry error, ...).
  grep -v "is ignored: it is neither a file nor a directory" "$log" | tail -n 20 >&2 || true
  echo "✗ pip install ${PINS[*]} failed" >&2
  # Exit 3 = the package index could not be reached (tests skip); any other failure is 1.
  # "(from versions: none)": pip saw no release at all of a package that exists on PyPI,
  # which is what an unreachable index looks like (a wrong pin lists the versions it found).
  if grep -qiE "from versions: none|NewConnectionError|Temporary failure in name resolution|Name or service not known|Network is unreachable|Connection refused|ConnectTimeout|ReadTimeout|timed out|ProxyError|Could not fetch URL|No route to host" "$log"; then
    rm -f "$log"
    exit 3
  fi
  rm -f "$log"
  exit 1
fi
rm -f "$log"
if ! "$VENV/bin/python" -c 'import helm_python, kubernetes_validate, checkov'; then
  echo "✗ the tools do not import after installing them" >&2
  exit 1
fi
echo "$WANT" >"$STAMP"
