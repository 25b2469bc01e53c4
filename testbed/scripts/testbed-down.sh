#!/usr/bin/env bash
# Stops everything testbed-up.sh started (by recorded PID), deletes the KWOK cluster and the bed's run
# directory, and removes the bed's lines from testbed/.env (the LLM scripts' LLM_* lines stay).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

for name in prometheus loadsim kube-state-metrics; do stop "$name"; done
if [[ -d $KWOK_WORKDIR/clusters/$cluster && -x $kwokctl ]]; then
  log "deleting KWOK cluster $cluster"
  "$kwokctl" --name "$cluster" delete cluster --kubeconfig "$kubeconfig" >/dev/null 2>&1 ||
    log "kwokctl delete cluster failed; removing what is left"
fi
# kwokctl stops its components through its own PID files; make sure none outlived it.
if [[ -d $KWOK_WORKDIR/clusters/$cluster/pids ]]; then
  for file in "$KWOK_WORKDIR/clusters/$cluster"/pids/*.pid; do
    [[ -f $file ]] || continue
    pid=$(cat "$file")
    if [[ -n $pid && $(readlink -f "/proc/$pid/cwd" 2>/dev/null) == "$KWOK_WORKDIR"* ]]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
fi
rm -rf "$run"
foreign=$(keep_foreign_env)
if [[ -n $foreign ]]; then echo "$foreign" >"$env_file"; else rm -f "$env_file"; fi
log "test bed down"
