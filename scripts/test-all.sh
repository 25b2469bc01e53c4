#!/usr/bin/env bash
# Every test, on a fresh machine: installs what is missing (apt, Go builds, llama-server), runs static checks and
# unit tests, brings up the real test bed (control plane + Prometheus + load simulator) and llama-server, runs the
# integration tests against them, and tears everything down. Caches live outside the checkout (~/.cache/ipa-*).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { printf '\n=== %s (+%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "install system packages"
scripts/install-deps.sh

step "static checks"
scripts/check.sh

step "unit and property tests"
cargo test --workspace --locked

step "build the ipa binary"
# Debug build: it shares its dependencies with the test build above, and the tests drive it as a subprocess.
cargo build --locked -p ipa
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export IPA_BIN="$target_dir/debug/ipa"

step "test bed and llama-server"
cleanup() { make -s llm-down >/dev/null 2>&1 || true; make -s testbed-down >/dev/null 2>&1 || true; }
trap cleanup EXIT
make testbed-up
make llm-up
set -a; source testbed/.env; set +a
# The test bed's helm (built with the other Go tools) renders the chart for the manifest tests.
HELM=${TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipa-testbed}/bin/helm-$(sed -n 's/^HELM_VERSION=//p' testbed/versions.env)/helm
export HELM

step "integration tests against the real parts"
# Tests that need the test bed or the LLM are #[ignore]d in plain `cargo test`; here they run, and fail
# (not skip) when a part is missing.
cargo test --workspace --locked -- --ignored --test-threads=1 --skip scale_benchmark

step "controller scale benchmark on the test bed (figures printed, not asserted)"
# The controller's memory is measured on the binary as it ships: a release build (a debug build maps ~20 MiB
# more code and allocates differently).
cargo build --release --locked -p ipa
# Last: it creates 1,000 Deployments, and cleaning them up keeps the controller-manager busy for a while.
IPA_BIN="$target_dir/release/ipa" cargo test -p ipa-controller --locked --test scale_bench -- --ignored --nocapture

step "done in $(( $(date +%s) - t0 ))s"
