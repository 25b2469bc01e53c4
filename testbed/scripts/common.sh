# Shared by testbed-up.sh and testbed-down.sh: where things live and small helpers. Source it; don't run it.
# shellcheck shell=bash

testbed=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=$(cd "$testbed/.." && pwd)
# shellcheck source=../versions.env
source "$testbed/versions.env"

cache=${TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipa-testbed}
bin=$cache/bin
k8s_bin=$bin/k8s-$K8S_VERSION
kwokctl=$bin/kwok-$KWOK_VERSION/kwokctl
# Everything this bed writes at run time; testbed/.run/ is git-ignored and shared with the LLM scripts.
run=$testbed/.run/bed
pids=$run/pids
logs=$run/logs
kubeconfig=$run/kubeconfig
cluster=${TESTBED_CLUSTER:-ipa-testbed}
env_file=$testbed/.env
export KWOK_WORKDIR=$run/kwok
# kwokctl looks for kubectl on PATH (and would download one otherwise).
export PATH=$k8s_bin:$PATH

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local port
  while :; do
    port=$(( 20000 + RANDOM % 20000 ))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# start_time PID: the process' start time in clock ticks since boot (field 22 of /proc/PID/stat, counted after
# the parenthesised command name, which may contain spaces); nothing for a zombie (state Z) or no process.
start_time() {
  local fields
  fields=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || return 0
  [[ ${fields%% *} == Z ]] || cut -d' ' -f20 <<<"$fields"
}

# alive NAME: the process recorded in $pids/NAME.pid still runs and is the one we started (same PID and start
# time: a recycled PID has another start time; a binary rebuilt meanwhile does not matter).
alive() {
  local file=$pids/$1.pid pid started
  [[ -f $file ]] || return 1
  read -r pid started _ <"$file" || return 1
  [[ -n $pid && -n $started ]] || return 1
  [[ $(start_time "$pid") == "$started" ]]
}

# start NAME BINARY ARGS...: starts a background process logging to $logs/NAME.log and records its PID.
start() {
  local name=$1 exe=$2; shift 2
  mkdir -p "$pids" "$logs"
  nohup "$exe" "$@" >"$logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid $(start_time "$pid") $exe" >"$pids/$name.pid"
}

# stop NAME: stops the recorded process (TERM, then KILL after 10 s) if it is still ours.
stop() {
  local file=$pids/$1.pid pid
  if alive "$1"; then
    read -r pid _ <"$file"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$1" || break; sleep 0.2; done
    if alive "$1"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$file"
}

# wait_http NAME URL SECONDS: waits until URL answers 2xx.
wait_http() {
  local name=$1 url=$2 deadline=$(( $(date +%s) + $3 ))
  until curl -fs -o /dev/null --max-time 2 "$url"; do
    if (( $(date +%s) > deadline )); then
      log "$name did not answer $url in $3 s; last log lines:"
      tail -n 20 "$logs/$name.log" >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.5
  done
}

# env_value KEY: the value of KEY in testbed/.env, if any.
env_value() {
  [[ -f $env_file ]] || return 0
  sed -n "s/^$1=//p" "$env_file" | tail -n 1
}

# keep_foreign_env: the lines of testbed/.env this bed does not own (the LLM scripts' LLM_* lines).
keep_foreign_env() {
  [[ -f $env_file ]] || return 0
  grep -E '^LLM_' "$env_file" || true
}
