#!/usr/bin/env bash
# Copy the Grafana dashboards and the Prometheus alert rules into the Helm chart.
#
# Helm reads files only from inside the chart directory (.Files.Get / .Files.Glob), so the
# chart carries copies: deploy/grafana/*.json -> deploy/helm/gamebackbone/dashboards/ and
# deploy/prometheus/alerts.yaml -> deploy/helm/gamebackbone/rules/alerts.yaml.
# The originals in deploy/grafana and deploy/prometheus are the ones to edit; run this after.
# tests/packaging/test_helm.py fails while a copy differs from its original.
#
#   scripts/sync-chart-assets.sh           copy (and drop chart copies whose original is gone)
#   scripts/sync-chart-assets.sh --check   only compare; exit 1 and name the files that differ
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/deploy/helm/gamebackbone"
check=0
if [[ "${1:-}" == "--check" ]]; then
  check=1
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

# "source destination" pairs
pairs=()
shopt -s nullglob
for src in "$ROOT"/deploy/grafana/*.json; do
  pairs+=("$src" "$CHART/dashboards/$(basename "$src")")
done
if [[ -f "$ROOT/deploy/prometheus/alerts.yaml" ]]; then
  pairs+=("$ROOT/deploy/prometheus/alerts.yaml" "$CHART/rules/alerts.yaml")
fi

# Copies without an original (a dashboard renamed or removed upstream).
stale=()
for copy in "$CHART"/dashboards/*.json; do
  [[ -f "$ROOT/deploy/grafana/$(basename "$copy")" ]] || stale+=("$copy")
done
if [[ -f "$CHART/rules/alerts.yaml" && ! -f "$ROOT/deploy/prometheus/alerts.yaml" ]]; then
  stale+=("$CHART/rules/alerts.yaml")
fi

differ=0
for ((i = 0; i < ${#pairs[@]}; i += 2)); do
  src="${pairs[i]}"
  dst="${pairs[i + 1]}"
  if cmp -s "$src" "$dst"; then
    continue
  fi
  if ((check)); then
    if [[ -f "$dst" ]]; then
      echo "✗ ${dst#"$ROOT"/} differs from ${src#"$ROOT"/}" >&2
    else
      echo "✗ ${dst#"$ROOT"/} is missing (a copy of ${src#"$ROOT"/})" >&2
    fi
    differ=1
  else
    mkdir -p "$(dirname "$dst")"
    cp "$src" "$dst"
    echo "→ ${src#"$ROOT"/} -> ${dst#"$ROOT"/}"
  fi
done
for copy in "${stale[@]}"; do
  if ((check)); then
    echo "✗ ${copy#"$ROOT"/} has no original any more" >&2
    differ=1
  else
    rm -f "$copy"
    echo "→ removed ${copy#"$ROOT"/} (no original)"
  fi
done

if ((check && differ)); then
  echo "  run scripts/sync-chart-assets.sh" >&2
  exit 1
fi
