#!/usr/bin/env bash
# The whole check, as CI runs it: ruff, mypy, then pytest (arguments go to pytest).
#
#   scripts/test.sh                      everything
#   scripts/test.sh -k frame -x          pytest arguments pass through
#
# All three steps run even when an earlier one fails, so one run shows every problem; the
# exit code is non-zero if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/ensure-venv.sh"
BIN="$ROOT/.venv/bin"

failed=()

echo "→ ruff check ."
"$BIN/ruff" check . || failed+=("ruff")

echo "→ mypy"
"$BIN/mypy" || failed+=("mypy")

echo "→ pytest $*"
"$BIN/python" -m pytest "$@" || failed+=("pytest")

if ((${#failed[@]})); then
  echo "✗ failed: ${failed[*]}" >&2
  exit 1
fi
echo "✓ ruff, mypy and pytest passed"
