#!/usr/bin/env bash
# Stops the llama-server that llm-up.sh started (by its recorded PID only) and removes LLM_* from testbed/.env.
set -euo pipefail
testbed=$(cd "$(dirname "$0")/.." && pwd)
pid_file=$testbed/.run/llama-server.pid
env_file=$testbed/.env
log() { printf '[llm-down] %s\n' "$*" >&2; }
if [[ -f $pid_file ]]; then
  pid=$(<"$pid_file")
  if [[ -n $pid && -d /proc/$pid && $(readlink -f "/proc/$pid/exe" 2>/dev/null) == */llama-server ]]; then
    kill "$pid"
    for _ in $(seq 1 50); do [[ -d /proc/$pid ]] || break; sleep 0.2; done
    [[ -d /proc/$pid ]] && kill -9 "$pid" 2>/dev/null || true
    log "stopped llama-server (pid $pid)"
  fi
  rm -f "$pid_file"
fi
if [[ -f $env_file ]]; then
  tmp=$(mktemp "$env_file.XXXXXX")
  grep -Ev '^(LLM_URL|LLM_MODEL)=' "$env_file" >"$tmp" || true
  mv "$tmp" "$env_file"
fi
