#!/usr/bin/env bash
# Brings up the test bed on 127.0.0.1: a KWOK cluster (real etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler; fake nodes whose pods KWOK marks Running), kube-state-metrics, the workload simulator
# (`ipa loadsim`) and Prometheus scraping both. Writes testbed/.env. Idempotent: a healthy bed is reused.
#
# Settings (environment):
#   TESTBED_NODES=3 TESTBED_NODE_CPU=4 TESTBED_NODE_MEMORY=16Gi   fake nodes
#   TESTBED_SCRAPE_INTERVAL=2s                                    Prometheus scrape (and evaluation) interval
#   LOADSIM_STARTUP_SECONDS=5 LOADSIM_RESTART_SECONDS=10          simulated app start-up / OOM restart delay
#   IPA_BIN=path/to/ipa                                           the ipa binary (default: built from this workspace)
#   TESTBED_CLUSTER=ipa-testbed  TESTBED_CACHE=~/.cache/ipa-testbed
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

nodes=${TESTBED_NODES:-3}
node_cpu=${TESTBED_NODE_CPU:-4}
node_memory=${TESTBED_NODE_MEMORY:-16Gi}
scrape_interval=${TESTBED_SCRAPE_INTERVAL:-2s}
startup_seconds=${LOADSIM_STARTUP_SECONDS:-5}
restart_seconds=${LOADSIM_RESTART_SECONDS:-10}
t0=$(date +%s)

healthy() {
  [[ -f $run/up && -f $kubeconfig ]] || return 1
  alive kube-state-metrics && alive loadsim && alive prometheus || return 1
  kubectl --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1 || return 1
  curl -fsS -o /dev/null --max-time 2 "$(env_value PROMETHEUS_URL)/-/ready" || return 1
  curl -fsS -o /dev/null --max-time 2 "$(env_value LOADSIM_URL)/healthz"
}

if healthy; then
  log "test bed already up; reusing it (KUBECONFIG=$kubeconfig)"
  exit 0
fi
if [[ -e $run ]]; then
  log "stale or partial test bed found; removing it first"
  "$testbed/scripts/testbed-down.sh"
fi
mkdir -p "$run" "$pids" "$logs"

# --- binaries -------------------------------------------------------------------------------------------
# What the bed and its tests use; crane (the image's test only) is built by `make testbed-tools` or CI.
"$testbed/scripts/build-tools.sh" k8s etcd kwok ksm helm
if ! command -v prometheus >/dev/null; then
  log "installing Debian's prometheus"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# Debian's package may start its own service on :9090; ours runs on a free port with its own config.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
prometheus_bin=$(command -v prometheus)
ksm_bin=$bin/ksm-$KSM_VERSION/kube-state-metrics

ipa=${IPA_BIN:-}
if [[ -z $ipa ]]; then
  target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  if [[ -x $target_dir/release/ipa ]]; then
    ipa=$target_dir/release/ipa
  else
    log "building ipa (debug)"
    (cd "$root" && cargo build -q -p ipa)
    ipa=$target_dir/debug/ipa
  fi
fi
[[ -x $ipa ]] || die "no ipa binary at $ipa"
t_tools=$(date +%s)

# --- cluster --------------------------------------------------------------------------------------------
cat >"$run/kwokctl.yaml" <<EOF
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  kubeVersion: v$K8S_VERSION
  # The default 0.0.0.0 needs a default route and exposes the cluster; everything stays on loopback.
  bindAddress: 127.0.0.1
  kubeApiserverBinary: $k8s_bin/kube-apiserver
  kubeControllerManagerBinary: $k8s_bin/kube-controller-manager
  kubeSchedulerBinary: $k8s_bin/kube-scheduler
  kubectlBinary: $k8s_bin/kubectl
  kwokControllerBinary: $bin/kwok-$KWOK_VERSION/kwok
  etcdBinary: $bin/etcd-$ETCD_VERSION/etcd
EOF
log "creating KWOK cluster $cluster"
"$kwokctl" --name "$cluster" delete cluster --kubeconfig "$kubeconfig" >/dev/null 2>&1 || true
"$kwokctl" --name "$cluster" -c "$run/kwokctl.yaml" create cluster \
  --kubeconfig "$kubeconfig" --wait 2m >"$logs/kwokctl.log" 2>&1 ||
  { tail -n 20 "$logs/kwokctl.log" >&2; die "kwokctl create cluster failed (log: $logs/kwokctl.log)"; }
kc=(kubectl --kubeconfig "$kubeconfig")

log "creating $nodes fake nodes ($node_cpu CPU, $node_memory)"
for i in $(seq 0 $(( nodes - 1 ))); do
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "$node_cpu", memory: "$node_memory", pods: "110"}
  capacity: {cpu: "$node_cpu", memory: "$node_memory", pods: "110"}
EOF
done >"$run/nodes.yaml"
"${kc[@]}" apply -f "$run/nodes.yaml" >/dev/null
"${kc[@]}" wait --for=condition=Ready node --all --timeout=60s >/dev/null
# Pods land on the fake nodes only once the default ServiceAccount exists.
until "${kc[@]}" get serviceaccount default >/dev/null 2>&1; do sleep 0.5; done
t_cluster=$(date +%s)

# --- kube-state-metrics, load simulator, Prometheus -----------------------------------------------------
ksm_port=$(free_port)
ksm_telemetry_port=$(free_port)
start kube-state-metrics "$ksm_bin" --kubeconfig "$kubeconfig" \
  --host 127.0.0.1 --port "$ksm_port" --telemetry-host 127.0.0.1 --telemetry-port "$ksm_telemetry_port" \
  --resources=deployments,replicasets,pods,nodes,namespaces,services,ingresses,horizontalpodautoscalers

loadsim_port=$(free_port)
KUBECONFIG=$kubeconfig IPA_LOG=${IPA_LOG:-info} NO_COLOR=1 start loadsim "$ipa" loadsim \
  --listen "127.0.0.1:$loadsim_port" --startup-seconds "$startup_seconds" --restart-seconds "$restart_seconds"

prometheus_port=$(free_port)
cat >"$run/prometheus.yml" <<EOF
global:
  scrape_interval: $scrape_interval
  evaluation_interval: $scrape_interval
scrape_configs:
  - job_name: loadsim
    honor_labels: true
    static_configs: [{targets: ["127.0.0.1:$loadsim_port"]}]
  - job_name: kube-state-metrics
    honor_labels: true
    static_configs: [{targets: ["127.0.0.1:$ksm_port"]}]
  - job_name: prometheus
    static_configs: [{targets: ["127.0.0.1:$prometheus_port"]}]
EOF
start prometheus "$prometheus_bin" --config.file="$run/prometheus.yml" \
  --storage.tsdb.path="$run/prometheus" --storage.tsdb.retention.time=1d \
  --web.listen-address="127.0.0.1:$prometheus_port" --web.enable-lifecycle

prometheus_url=http://127.0.0.1:$prometheus_port
loadsim_url=http://127.0.0.1:$loadsim_port
ksm_url=http://127.0.0.1:$ksm_port
wait_http kube-state-metrics "$ksm_url/healthz" 60
wait_http loadsim "$loadsim_url/healthz" 60
wait_http prometheus "$prometheus_url/-/ready" 60
# Healthy = Prometheus has scraped every target successfully.
deadline=$(( $(date +%s) + 60 ))
until [[ $(curl -fsS "$prometheus_url/api/v1/query?query=sum(up)" | sed -n 's/.*"value":\[[^,]*,"\([0-9]*\)".*/\1/p') == 3 ]]; do
  (( $(date +%s) < deadline )) || die "Prometheus does not see all targets up: $(curl -fsS "$prometheus_url/api/v1/targets" | head -c 2000)"
  sleep 0.5
done

foreign=$(keep_foreign_env)
{
  echo "# Written by testbed/scripts/testbed-up.sh; \`set -a; source testbed/.env; set +a\` to use it."
  echo "KUBECONFIG=$kubeconfig"
  echo "PROMETHEUS_URL=$prometheus_url"
  echo "LOADSIM_URL=$loadsim_url"
  echo "KSM_URL=$ksm_url"
  echo "KWOK_CLUSTER=$cluster"
  echo "KWOK_WORKDIR=$KWOK_WORKDIR"
  echo "TESTBED_KUBECTL=$k8s_bin/kubectl"
  echo "TESTBED_SCRAPE_INTERVAL=$scrape_interval"
  echo "TESTBED_NODES=$nodes"
  [[ -z $foreign ]] || echo "$foreign"
} >"$env_file"
touch "$run/up"
t_end=$(date +%s)
log "up in $(( t_end - t0 ))s (tools $(( t_tools - t0 ))s, cluster $(( t_cluster - t_tools ))s, services $(( t_end - t_cluster ))s)"
log "KUBECONFIG=$kubeconfig"
log "Prometheus $prometheus_url   load simulator $loadsim_url   kube-state-metrics $ksm_url/metrics"
