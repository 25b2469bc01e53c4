#!/usr/bin/env bash
# Starts llama.cpp's llama-server with Gemma 3 270M on 127.0.0.1:<free port> (building/assembling both first if the
# cache lacks them), waits for /health, records its PID in testbed/.run/llama-server.pid and sets LLM_URL and
# LLM_MODEL in testbed/.env (other keys are kept). Idempotent: a healthy running server is reused.
set -euo pipefail
testbed=$(cd "$(dirname "$0")/.." && pwd)
run=$testbed/.run
pid_file=$run/llama-server.pid
env_file=$testbed/.env
log_file=$run/llama-server.log
model_alias=${LLM_MODEL_ALIAS:-gemma-3-270m-q4_k_m}
log() { printf '[llm-up] %s\n' "$*" >&2; }
mkdir -p "$run"

env_value() { [[ -f $env_file ]] && sed -n "s/^$1=//p" "$env_file" | tail -n 1; }

# set_env KEY=VALUE...: replaces only those keys in testbed/.env, keeping every other line.
set_env() {
  local tmp; tmp=$(mktemp "$env_file.XXXXXX")
  local keys=() kv
  for kv in "$@"; do keys+=("${kv%%=*}"); done
  if [[ -f $env_file ]]; then
    local pattern; pattern=$(printf '^%s=|' "${keys[@]}"); pattern=${pattern%|}
    grep -Ev "$pattern" "$env_file" >"$tmp" || true
  fi
  printf '%s\n' "$@" >>"$tmp"
  mv "$tmp" "$env_file"
}

running() {
  [[ -f $pid_file ]] || return 1
  local pid; pid=$(<"$pid_file")
  [[ -n $pid && -d /proc/$pid && $(readlink -f "/proc/$pid/exe" 2>/dev/null) == */llama-server ]] || return 1
  local url; url=$(env_value LLM_URL)
  [[ -n $url ]] && curl -fsS -o /dev/null --max-time 2 "${url%/v1}/health"
}

if running; then
  log "llama-server already running (pid $(<"$pid_file")) at $(env_value LLM_URL)"
  exit 0
fi

paths=$("$testbed/scripts/llm-build.sh")
server=$(sed -n 's/^LLAMA_SERVER=//p' <<<"$paths")
gguf=$(sed -n 's/^LLM_GGUF=//p' <<<"$paths")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
threads=${LLM_THREADS:-2}
# --no-jinja --chat-template gemma: the GGUF (a base model) has no chat template, and with Jinja on (the default)
# the name "gemma" would be taken as the template text itself and every prompt would become "gemma".
t0=$(date +%s.%N)
nohup "$server" -m "$gguf" --alias "$model_alias" --host 127.0.0.1 --port "$port" -c 4096 -np 1 -t "$threads" \
  --no-webui --no-jinja --chat-template gemma >"$log_file" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"
for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/health" 2>/dev/null; then
    set_env "LLM_URL=http://127.0.0.1:$port/v1" "LLM_MODEL=$model_alias"
    log "llama-server pid $pid ready at http://127.0.0.1:$port/v1 in $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s (log: $log_file)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    log "llama-server exited; last lines of $log_file:"; tail -n 20 "$log_file" >&2
    rm -f "$pid_file"; exit 1
  fi
  sleep 0.2
done
log "llama-server did not become healthy within 60 s"; kill "$pid" 2>/dev/null || true; rm -f "$pid_file"; exit 1
