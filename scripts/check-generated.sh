#!/usr/bin/env bash
# Regenerates the CRD and the install manifest from the code and fails when the committed copies differ.
# `scripts/check-generated.sh --write` updates them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --quiet --locked -p ipa -- crd >"$tmp/crd.yaml"
cargo run --quiet --locked -p ipa -- crd --helm >"$tmp/crd-helm.yaml"
cargo run --quiet --locked -p ipa -- manifests >"$tmp/install.yaml"
status=0
for pair in "crd.yaml:deploy/crd.yaml" "crd-helm.yaml:deploy/helm/ipa/templates/crd.yaml" "install.yaml:deploy/install.yaml"; do
  generated="$tmp/${pair%%:*}" committed="${pair#*:}"
  if [[ "${1:-}" == "--write" ]]; then
    cp "$generated" "$committed"
  elif ! diff -u "$committed" "$generated" >/dev/null 2>&1; then
    echo "check-generated: $committed is out of date; run scripts/check-generated.sh --write" >&2
    diff -u "$committed" "$generated" | head -40 >&2 || true
    status=1
  fi
done
exit $status
