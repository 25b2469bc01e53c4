#!/usr/bin/env bash
# The fuzz targets (fuzz/, cargo-fuzz + libFuzzer on nightly; docs/fuzzing.md).
#   scripts/fuzz.sh build              build every target
#   scripts/fuzz.sh run SECONDS        build, then run each target for SECONDS
#   scripts/fuzz.sh ci SECONDS         the same with an unoptimised build (`--dev`): what CI runs, a short budget
#   scripts/fuzz.sh runs N [TARGET..]  build, then run each (or the named) target for N executions
# cargo-fuzz is installed once into ${XDG_CACHE_HOME:-~/.cache}/ipa-tools/cargo-fuzz-<version>, nightly with
# rustup's minimal profile if it is missing. Builds go to $CARGO_TARGET_DIR/fuzz (the repository's own target
# dir is never shared: the instrumented build uses other flags). The committed seed corpus in fuzz/corpus/<target>
# is read, never written: what a run finds goes to $CARGO_TARGET_DIR/fuzz/corpus/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_FUZZ_VERSION=0.13.2
root=${XDG_CACHE_HOME:-$HOME/.cache}/ipa-tools/cargo-fuzz-$CARGO_FUZZ_VERSION
export PATH="$root/bin:$PATH"
base_target=${CARGO_TARGET_DIR:-$PWD/target}
export CARGO_TARGET_DIR=${IPA_FUZZ_TARGET_DIR:-$base_target/fuzz}
# Coverage instrumentation, overflow checks and debug assertions, without AddressSanitizer: the workspace forbids
# `unsafe`, so what ASan adds (memory errors) cannot come from our code, and the build and every execution cost
# about twice as much with it.
# cargo-fuzz's default build is optimised *with* debug assertions and overflow checks; its `--release` (-O) would
# turn those off, so it is never passed.
sanitizer=(--sanitizer none)
# CI's short runs use the unoptimised build: it costs half the CPU to build cold (4.4 against 8.8 CPU minutes)
# and a few seconds per target replay the committed corpus and explore about as well.
[[ ${1:-} == ci ]] && sanitizer+=(--dev)
targets=(reply quantity decide seed_metrics agent_request prometheus crd_spec agent_reply)

install() {
  # grep without -q reads all of rustup's output: with -q and pipefail, rustup could die of SIGPIPE after a match.
  rustup toolchain list | grep '^nightly' >/dev/null || rustup toolchain install nightly --profile minimal
  if [[ ! -x $root/bin/cargo-fuzz ]]; then
    cargo install --locked --root "$root" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
  fi
}

build() {
  install
  local t0=$SECONDS
  (cd fuzz && cargo +nightly fuzz build "${sanitizer[@]}")
  echo "fuzz targets built in $((SECONDS - t0)) s"
}

# Runs one target with libFuzzer options; prints its last status line.
run_one() {
  local target=$1; shift
  local work=$CARGO_TARGET_DIR/corpus/$target dict=()
  mkdir -p "$work"
  case $target in
    reply) dict=(-dict=reply.dict) ;;
    quantity) ;;
    *) dict=(-dict=json.dict) ;;
  esac
  local t0=$SECONDS log
  log=$(mktemp)
  if ! (cd fuzz && cargo +nightly fuzz run "${sanitizer[@]}" "$target" "$work" "corpus/$target" -- \
      "${dict[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@") >"$log" 2>&1; then
    # The panic, and how to reproduce it (libFuzzer's dump of the input can be long).
    grep -m1 -A3 'panicked at' "$log" >&2 || tail -n 20 "$log" >&2
    grep -A2 -E 'Reproduce with|Failing input' "$log" >&2 || true
    echo "fuzz target $target FAILED" >&2
    rm -f "$log"
    return 1
  fi
  local execs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz target $target: ${execs:-?} executions in $((SECONDS - t0)) s, no crash"
  rm -f "$log"
}

case ${1:-} in
  build) build ;;
  run | ci)
    build
    for t in "${targets[@]}"; do run_one "$t" -max_total_time="${2:?seconds}"; done ;;
  runs)
    n=${2:?executions}; shift 2
    build
    for t in "${@:-${targets[@]}}"; do run_one "$t" -runs="$n"; done ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
