#!/usr/bin/env bash
# Every test, on a fresh machine: installs what is missing (apt, Go builds, llama-server), runs static checks and
# unit tests, brings up the real test bed (control plane + Prometheus + load simulator) and llama-server, runs the
# integration tests against them, and tears everything down. Caches live outside the checkout (~/.cache/ipa-*).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { printf '\n=== %s (+%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

# On any exit: stop background builds (each in a process group of its own), llama-server and the bed.
background=()
cleanup() {
  local pid
  for pid in "${background[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  make -s llm-down >/dev/null 2>&1 || true
  make -s testbed-down >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "install system packages"
scripts/install-deps.sh --packages-only

# Lowers a background job to the idle cores. Each job runs in a session of its own (setsid), so cleanup can kill
# its whole group; but where the kernel schedules by autogroup (on by default in most distributions, and here), a
# session is its own scheduling group and `nice` only ranks processes inside it: a `nice 19` job in its own
# session took as much CPU as the whole Cargo side (beside it, a cold run's k8s build took 1,272 s, not 652 s).
# The group's own niceness is what yields the cores; `nice` stays for kernels without autogroup. Written only
# once the job has its own group: before its setsid, the group would still be this script's.
# Best effort, never fatal: inside a cgroup (a CI container) the file exists but reads empty, since the task's
# group is then the cgroup's, not an autogroup (an empty read failed a CI run under `set -e` at +1 s).
low_priority() {
  local pid=$1 ours="" theirs="" _
  read -r ours _ </proc/self/autogroup 2>/dev/null || return 0
  [[ -n $ours ]] || return 0
  for _ in $(seq 50); do
    read -r theirs _ <"/proc/$pid/autogroup" 2>/dev/null || return 0
    if [[ -n $theirs && $theirs != "$ours" ]]; then
      echo 19 >"/proc/$pid/autogroup" 2>/dev/null || true
      return 0
    fi
    sleep 0.1
  done
}

# The Go tools build in the background while Cargo compiles: each alone leaves a core idle much of the time
# (module downloads, link steps, crate chains), so together they finish sooner than one after the other.
# llama-server builds beside them at the lowest CPU priority: only the three real-LLM tests need it, and they run
# last, so it takes what the others leave idle instead of holding the test bed back (a cold run waited 12 min
# for it after everything else was ready).
logs=$(mktemp -d)
step "building the Go tools, and llama-server at low priority, in the background (logs: $logs)"
# (crane, needed only for the image at the end, is built later, off this critical path.)
setsid bash -c 'testbed/scripts/build-tools.sh k8s etcd kwok ksm helm' >"$logs/tools.log" 2>&1 &
tools_pid=$!
background+=("$tools_pid")
setsid nice -n 19 bash -c 'testbed/scripts/llm-build.sh >/dev/null' >"$logs/llm.log" 2>&1 &
llm_pid=$!
low_priority "$llm_pid" || true
background+=("$llm_pid")
# Waits for a background job; on failure shows its log's tail and stops the run.
wait_for() {
  local pid=$1 log=$2 what=$3
  if ! wait "$pid"; then
    echo "$what failed; the end of its log ($log):" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

step "static checks"
scripts/check.sh

step "unit and property tests"
cargo test --workspace --locked

step "build the ipa binary"
# Debug build: it shares its dependencies with the test build above, and the tests drive it as a subprocess.
cargo build --locked -p ipa
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export IPA_BIN="$target_dir/debug/ipa"

# The fuzz targets (fuzz/, nightly + cargo-fuzz, both cached under ~/.cache) build and run 15 s each in the
# background at the lowest CPU priority: from here the Cargo side only waits — for the tool chain on a cold
# machine, for the bed's clocks in the integration tests — so they take idle cores. Waited for at the end.
step "fuzz targets: build and 15 s each, in the background (log: $logs/fuzz.log)"
setsid nice -n 19 scripts/fuzz.sh ci 15 >"$logs/fuzz.log" 2>&1 &
fuzz_pid=$!
low_priority "$fuzz_pid" || true
background+=("$fuzz_pid")

step "waiting for the Go tools"
wait_for "$tools_pid" "$logs/tools.log" "building the Go tools"
grep -E 'done in|built in|cached' "$logs/tools.log" || true

step "test bed"
make testbed-up
set -a; source testbed/.env; set +a
# The test bed's helm (built with the other Go tools) renders the chart for the manifest tests.
HELM=${TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipa-testbed}/bin/helm-$(sed -n 's/^HELM_VERSION=//p' testbed/versions.env)/helm
export HELM
# crane (built with the release binary, below) reads the image archive as a registry client would.
CRANE=${TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipa-testbed}/bin/crane-$(sed -n 's/^CRANE_VERSION=//p' testbed/versions.env)/crane
export CRANE

# The release build the scale benchmark needs runs now, at the lowest CPU priority: the integration tests mostly
# wait on the bed's clocks, so it takes the idle cores without slowing the tests' own processes.
# crane, which only the image's test needs, builds after it the same way (cached: no time).
setsid nice -n 19 bash -c 'cargo build --release --locked -p ipa && testbed/scripts/build-tools.sh crane' >"$logs/release.log" 2>&1 &
release_pid=$!
# Not lowered further (`low_priority`): the image and the benchmark wait for it at the end; starved behind the
# tests and the other low-priority builds, it finished 10 minutes after the tests in a cold run.
background+=("$release_pid")

step "integration tests against the real parts"
# Tests that need the test bed or the LLM are #[ignore]d in plain `cargo test`; here they run, and fail
# (not skip) when a part is missing.
# The image archive's test waits for the release build (below); the agent's (the real LLM's) for llama-server.
cargo test --workspace --exclude ipa-agent --locked -- --ignored --test-threads=1 --skip scale_benchmark --skip image_archive

step "llama-server and the agent's real-LLM tests"
wait_for "$llm_pid" "$logs/llm.log" "building llama-server"
grep -E 'built in|cached' "$logs/llm.log" || true
make llm-up
set -a; source testbed/.env; set +a
cargo test -p ipa-agent --locked -- --ignored --test-threads=1

step "image archive of the release binary, without a container engine"
# The image and the scale benchmark ship and measure the binary as it ships: a release build (a debug build maps
# ~20 MiB more code and allocates differently), started in the background before the integration tests.
wait_for "$release_pid" "$logs/release.log" "cargo build --release (and crane)"
make -s image IMAGE_OUT="$logs/ipa-image.oci.tar"
IPA_IMAGE="$logs/ipa-image.oci.tar" cargo test -p ipa-image --locked --test archive -- --ignored --nocapture
rm -f "$logs/ipa-image.oci.tar"

step "controller scale benchmark on the test bed (figures printed, not asserted)"
# Last: it creates 1,000 Deployments, and cleaning them up keeps the controller-manager busy for a while.
IPA_BIN="$target_dir/release/ipa" cargo test -p ipa-controller --locked --test scale_bench -- --ignored --nocapture

step "fuzz targets"
wait_for "$fuzz_pid" "$logs/fuzz.log" "the fuzz targets"
grep -E '^fuzz target|built in' "$logs/fuzz.log" || true

step "done in $(( $(date +%s) - t0 ))s"
