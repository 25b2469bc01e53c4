#!/usr/bin/env bash
# Static checks: formatting, clippy with warnings as errors, and drift of generated artefacts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Generated artefacts (CRD, install manifests) must match what the code generates.
if [[ -x scripts/check-generated.sh ]]; then scripts/check-generated.sh; fi
