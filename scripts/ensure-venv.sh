#!/usr/bin/env bash
# Make sure .venv exists with Python >= 3.12 and the project installed (editable, dev extras).
#
# Every entry point (scripts/test.sh, run-sample.sh, make) calls this first, so it has to be
# cheap when nothing changed: it reinstalls only when pyproject.toml is newer than a stamp
# file inside .venv, and prints nothing unless it does something.
#
#   scripts/ensure-venv.sh                 create/update .venv
#   scripts/ensure-venv.sh --find-python   print the Python >= 3.12 it would use, or fail
#
# PYTHON=/path/to/python3.12 overrides the search; VENV=dir overrides the location.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
STAMP="$VENV/.gamebackbone-install-stamp"

# True when "$1" runs and is CPython >= 3.12 with venv support. pyenv shims exist for
# versions that are not selected and fail when run, so existence alone proves nothing.
python_ok() {
  "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local candidate
  local -a candidates=()
  if [[ -n "${PYTHON:-}" ]]; then
    candidates+=("$PYTHON")
  fi
  candidates+=(python3.12)
  local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
  for candidate in "$pyenv_root"/versions/3.12*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
    [[ -x "$candidate" ]] && candidates+=("$candidate")
  done
  candidates+=(python3.13 python3)
  for candidate in "${candidates[@]}"; do
    if python_ok "$candidate"; then
      command -v "$candidate" 2>/dev/null || echo "$candidate"
      return 0
    fi
  done
  return 1
}

if [[ "${1:-}" == "--find-python" ]]; then
  find_python || { echo "✗ no Python >= 3.12 found (tried \$PYTHON, python3.12, pyenv 3.12.*, python3.13, python3)" >&2; exit 1; }
  exit 0
fi

if [[ -x "$VENV/bin/python" ]] && ! python_ok "$VENV/bin/python"; then
  echo "→ $VENV has no working Python >= 3.12: recreating it"
  rm -rf "$VENV"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  if ! PY="$(find_python)"; then
    echo "✗ no Python >= 3.12 found (tried \$PYTHON, python3.12, pyenv 3.12.*, python3.13, python3)." >&2
    echo "  Install one (e.g. apt-get install python3.12 python3.12-venv, or pyenv install 3.12) or set PYTHON=/path/to/python3.12" >&2
    exit 1
  fi
  echo "→ creating $VENV with $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
  "$PY" -m venv "$VENV"
  rm -f "$STAMP"
fi

if [[ ! -f "$STAMP" || "$ROOT/pyproject.toml" -nt "$STAMP" ]]; then
  echo "→ installing the project into $VENV (pip install -e '.[dev]')"
  # Quiet pip, but keep its output for the error case: a failed install must say why.
  log="$(mktemp)"
  if ! (cd "$ROOT" && "$VENV/bin/python" -m pip install --disable-pip-version-check -e '.[dev]') >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "✗ pip install -e '.[dev]' failed" >&2
    exit 1
  fi
  rm -f "$log"
  touch "$STAMP"
fi
