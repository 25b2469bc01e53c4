#!/usr/bin/env bash
# The autoscaler at work: brings up the test bed (and llama-server with LLM=1), starts the agent and the
# controller, creates the seed's test app and applies the seed's IPA manifest (URIs pointed at the bed), plays a
# load trace through the load simulator, and prints a live table of load, replicas and requests, then a summary.
#
#   make demo                         # built-in provider in the agent, NAB ELB trace, 4 minutes
#   LLM=1 make demo                   # the agent asks llama-server (Gemma 270M) instead
#   DEMO_SECONDS=600 DEMO_TRACE=/path/to/trace.csv DEMO_PEAK_RPS=80 DEMO_TIME_SCALE=360 make demo
#
# Everything binds 127.0.0.1. The agent and the controller are stopped at the end; the test bed stays up
# (`make testbed-down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${DEMO_SECONDS:-240}
trace=${DEMO_TRACE:-$root/../shared/traces/nab/elb_request_count_8c0756.csv}
peak_rps=${DEMO_PEAK_RPS:-60}
# One 5-minute trace step every 0.8 s: a day of ELB traffic in about four minutes.
time_scale=${DEMO_TIME_SCALE:-360}
interval=${DEMO_INTERVAL:-5s}
ns=ipaapp app=testapp ingress=testappingress

log() { printf '[demo] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
[[ -f $trace ]] || die "trace $trace not found (set DEMO_TRACE)"

make -s testbed-up
[[ ${LLM:-0} == 1 ]] && make -s llm-up
set -a; source testbed/.env; set +a
kc=("${TESTBED_KUBECTL:-kubectl}" --kubeconfig "$KUBECONFIG")

ipa=${IPA_BIN:-}
if [[ -z $ipa ]]; then
  log "building ipa"
  cargo build -q -p ipa
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  ipa=$target_dir/debug/ipa
fi

run_dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  curl -fsS -X DELETE "$LOADSIM_URL/load?namespace=$ns&deployment=$app" >/dev/null 2>&1 || true
  log "agent and controller stopped; logs in $run_dir; the test bed is still up (make testbed-down)"
}
trap cleanup EXIT

agent_port=$(free_port)
agent_args=(agent --listen "127.0.0.1:$agent_port" --log-file "$run_dir/llm.log")
if [[ ${LLM:-0} == 1 ]]; then
  agent_args+=(--provider openai --base-url "$LLM_URL" --model "${LLM_MODEL:-gemma}")
else
  agent_args+=(--provider builtin)
fi
"$ipa" "${agent_args[@]}" >"$run_dir/agent.log" 2>&1 &
pids+=($!)
agent_url=http://127.0.0.1:$agent_port
for _ in $(seq 100); do curl -fsS -o /dev/null "$agent_url/healthz" 2>/dev/null && break; sleep 0.2; done
curl -fsS -o /dev/null "$agent_url/healthz" || die "agent did not start (log: $run_dir/agent.log)"

log "installing the CRD and the seed's test app"
"$ipa" crd | "${kc[@]}" apply --server-side --force-conflicts -f - >/dev/null
"${kc[@]}" wait --for=condition=Established crd/ipas.ipa.shafinhasnat.me --timeout=30s >/dev/null
"${kc[@]}" delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
# The article's commands (its Service/Ingress names fixed up so they point at the test app).
"${kc[@]}" create namespace "$ns" >/dev/null
"${kc[@]}" create deployment "$app" --image=shafinhasnat/cpuload --namespace="$ns" --replicas=1 --port=8080 >/dev/null
"${kc[@]}" expose deployment "$app" --name=testappsvc --namespace="$ns" --port=8001 --target-port=8080 --type=ClusterIP >/dev/null
"${kc[@]}" create ingress "$ingress" --namespace="$ns" --class=nginx --rule="cpuload.shafinhasnat.me/*=testappsvc:8001" >/dev/null

metrics_port=$(free_port)
# Gemma 270M on two shared cores takes ~10 s per answer (measured with LLM=1): give the agent time to answer.
agent_timeout=10s
[[ ${LLM:-0} == 1 ]] && agent_timeout=40s
"$ipa" controller --namespace "$ns" --metrics-listen "127.0.0.1:$metrics_port" \
  --rate-window 10s --window 60s --history 10m --agent-timeout "$agent_timeout" >"$run_dir/controller.log" 2>&1 &
pids+=($!)

log "playing $(basename "$trace") (peak $peak_rps rps, ×$time_scale) for ${seconds}s"
curl -fsS -X PUT "$LOADSIM_URL/load" -H 'content-type: application/json' \
  -d "{\"namespace\":\"$ns\",\"deployment\":\"$app\",\"ingress\":\"$ingress\",\"trace\":{\"path\":\"$trace\",\"peak_rps\":$peak_rps},\"time_scale\":$time_scale}" >/dev/null
sleep 15 # let the app serve for a moment before the IPA arrives, as it would in a real cluster

# The seed's manifest, verbatim apart from the two URIs and the demo's interval.
cat <<MANIFEST | "${kc[@]}" apply -n "$ns" -f - >/dev/null
apiVersion: ipa.shafinhasnat.me/v1alpha1
kind: IPA
metadata:
  name: ipa
spec:
  metadata:
    prometheusUri: $PROMETHEUS_URL
    llmAgent: $agent_url
    interval: $interval
    ipaGroup:
      - deployment: $app
        namespace: $ns
        ingress: $ingress
MANIFEST

cat >&2 <<BANNER
[demo] agent dashboard: $agent_url/      controller metrics: http://127.0.0.1:$metrics_port/metrics
[demo] Prometheus: $PROMETHEUS_URL       kubectl: ${kc[*]} get ipa -n $ns
BANNER
query() {
  curl -fsS --get "$PROMETHEUS_URL/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print("%.2f" % float(r[0]["value"][1]) if r else "-")' 2>/dev/null || echo "-"
}
printf '%6s %8s %9s %5s %8s %8s %-9s %s\n' time rps cpu_cores pods cpu_req mem_req source decision
start=$(date +%s)
samples=$run_dir/samples.tsv
: >"$samples"
while (( $(date +%s) - start < seconds )); do
  t=$(( $(date +%s) - start ))
  rps=$(query "sum(rate(nginx_ingress_controller_requests{namespace=\"$ns\",ingress=\"$ingress\"}[10s]))")
  cpu=$(query "sum(rate(container_cpu_usage_seconds_total{namespace=\"$ns\",pod=~\"$app-.*\"}[10s]))")
  read -r replicas cpu_req mem_req < <("${kc[@]}" get deploy "$app" -n "$ns" \
    -o jsonpath='{.spec.replicas} {.spec.template.spec.containers[0].resources.requests.cpu} {.spec.template.spec.containers[0].resources.requests.memory}{"\n"}' 2>/dev/null || echo "- - -")
  read -r source decision < <("${kc[@]}" get ipa ipa -n "$ns" \
    -o jsonpath='{.status.groups[0].source} {.status.lastDecision}{"\n"}' 2>/dev/null || echo "- -")
  printf '%6s %8s %9s %5s %8s %8s %-9s %s\n' "${t}s" "$rps" "$cpu" "${replicas:--}" "${cpu_req:--}" "${mem_req:--}" "${source:--}" "${decision:--}"
  printf '%s\t%s\t%s\t%s\n' "$t" "$rps" "${replicas:--}" "${cpu_req:--}" >>"$samples"
  sleep 5
done

echo
echo "== summary"
python3 - "$samples" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def num(v):
    try:
        return float(v)
    except ValueError:
        return None
rps = [x for x in (num(r[1]) for r in rows) if x is not None]
pods = [x for x in (num(r[2]) for r in rows) if x is not None]
changes = lambda col: sum(1 for a, b in zip(rows, rows[1:]) if a[col] != b[col])
print(f"samples: {len(rows)}; load: min {min(rps, default=0):.1f} / mean {sum(rps) / max(len(rps), 1):.1f} / max {max(rps, default=0):.1f} rps")
print(f"replicas: min {min(pods, default=0):.0f} / max {max(pods, default=0):.0f}; "
      f"replica changes seen: {changes(2)}, CPU-request changes seen: {changes(3)}")
PY
"${kc[@]}" get ipa -n "$ns"
"${kc[@]}" get ipa ipa -n "$ns" -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {end}{"\n"}'
