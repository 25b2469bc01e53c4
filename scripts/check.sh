#!/usr/bin/env bash
# Static checks: formatting, clippy with warnings as errors, and drift of generated artefacts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
# The fuzz targets are their own (nightly) workspace; rustfmt alone checks them without resolving it.
rustfmt --check --edition 2024 fuzz/src/lib.rs fuzz/fuzz_targets/*.rs
cargo clippy --workspace --all-targets --locked -- -D warnings
# Generated artefacts (CRD, install manifests) must match what the code generates.
if [[ -x scripts/check-generated.sh ]]; then scripts/check-generated.sh; fi
