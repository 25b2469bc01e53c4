#!/usr/bin/env bash
# Stops everything testbed-up.sh started (by recorded PID), deletes the KWOK cluster and the bed's run
# directory, and removes the bed's lines from testbed/.env (the LLM scripts' LLM_* lines stay).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

for name in prometheus loadsim kube-state-metrics; do stop "$name"; done
# ours DIR PID: PID is a component of the cluster in DIR: its command line names files there (a recycled PID's won't).
ours() { [[ -n $2 ]] && tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null | grep -qF "$1"; }

# Every cluster in the bed's own KWOK work dir, whatever TESTBED_CLUSTER was when it was created.
for dir in "$KWOK_WORKDIR"/clusters/*/; do
  [[ -d $dir ]] || continue
  name=$(basename "$dir")
  components=()
  for file in "$dir"pids/*.pid; do
    [[ -f $file ]] || continue
    pid=$(<"$file")
    if ours "$dir" "$pid"; then components+=("$pid"); fi
  done
  if [[ -x $kwokctl ]]; then
    log "deleting KWOK cluster $name"
    "$kwokctl" --name "$name" delete cluster --kubeconfig "$kubeconfig" >/dev/null 2>&1 ||
      log "kwokctl delete cluster $name failed; stopping what is left"
  fi
  # kwokctl stops its components itself; make sure none outlived it.
  for pid in "${components[@]}"; do
    ours "$dir" "$pid" || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 25); do ours "$dir" "$pid" || break; sleep 0.2; done
    if ours "$dir" "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
done
rm -rf "$run"
foreign=$(keep_foreign_env)
if [[ -n $foreign ]]; then echo "$foreign" >"$env_file"; else rm -f "$env_file"; fi
log "test bed down"
