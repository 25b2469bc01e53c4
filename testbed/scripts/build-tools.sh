#!/usr/bin/env bash
# Builds the test bed's Go binaries (control plane, etcd, KWOK, kube-state-metrics, helm, crane) from the Go module
# proxy.
# Go is only test infrastructure here. Each tool is built in a generated wrapper module, cached by version;
# a present binary is never rebuilt. Usage: build-tools.sh [k8s|etcd|kwok|ksm|helm|crane ...]  (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
source "$here/versions.env"
cache=${TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipa-testbed}
mkdir -p "$cache/bin" "$cache/src"
cache=$(cd "$cache" && pwd)
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
jobs=${GO_BUILD_JOBS:-2}

log() { printf '[build-tools] %s\n' "$*" >&2; }

# wrapper_module DIR MODULE_NAME: creates DIR with a go.mod named MODULE_NAME (fresh each time).
wrapper_module() {
  rm -rf "$1"; mkdir -p "$1"
  printf 'module %s\n\ngo 1.24.0\n' "$2" >"$1/go.mod"
}

build_k8s() {
  local out="$cache/bin/k8s-$K8S_VERSION"
  if [[ -x $out/kube-apiserver && -x $out/kube-controller-manager && -x $out/kube-scheduler && -x $out/kubectl ]]; then
    log "kubernetes v$K8S_VERSION cached"; return; fi
  local src="$cache/src/k8s-$K8S_VERSION" minor=${K8S_VERSION#1.}; minor=${minor%%.*}
  wrapper_module "$src" local/testbed-k8s
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths, which a
  # dependent module does not see: map every staging module to its published v0.X.Y tag instead.
  local gomod
  gomod=$(cd "$src" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    printf 'godebug default=go1.24\n\nrequire k8s.io/kubernetes v%s\n\n' "$K8S_VERSION"
    printf 'tool (\n'
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$c"; done
    printf ')\n\nreplace (\n'
    sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) v0\.0\.0$#\1#p' "$gomod" | sort -u |
      while read -r m; do printf '\t%s => %s v0.%s\n' "$m" "$m" "${K8S_VERSION#1.}"; done
    printf ')\n'
  } >>"$src/go.mod"
  (cd "$src" && go mod tidy)
  local ldf="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
  ldf+=" -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  ldf+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
  mkdir -p "$out.tmp"
  (cd "$src" && go build -trimpath -p "$jobs" -ldflags "$ldf" -o "$out.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# bin_name PKG: the binary a main package is installed as (a /vN suffix is not a name).
bin_name() {
  case $1 in
    go.etcd.io/etcd/server/v3) echo etcd ;;
    k8s.io/kube-state-metrics/v2) echo kube-state-metrics ;;
    helm.sh/helm/v3/cmd/helm) echo helm ;;
    *) basename "$1" ;;
  esac
}

# simple_tool NAME VERSION MODULE PKG... : a wrapper module that requires MODULE@VERSION and builds PKGs.
simple_tool() {
  local name=$1 version=$2 module=$3; shift 3
  local out="$cache/bin/$name-$version" missing=0 p
  for p in "$@"; do [[ -x $out/$(bin_name "$p") ]] || missing=1; done
  if [[ $missing == 0 ]]; then log "$name v$version cached"; return; fi
  local src="$cache/src/$name-$version"
  wrapper_module "$src" "local/testbed-$name"
  { printf '\nrequire %s v%s\n\ntool (\n' "$module" "$version"; for p in "$@"; do printf '\t%s\n' "$p"; done; printf ')\n'; } >>"$src/go.mod"
  (cd "$src" && go mod tidy)
  mkdir -p "$out.tmp"
  for p in "$@"; do
    local bin; bin=$(bin_name "$p")
    (cd "$src" && go build -trimpath -p "$jobs" -ldflags "-s -w" -o "$out.tmp/$bin" "$p")
  done
  rm -rf "$out"; mv "$out.tmp" "$out"
}

targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(k8s etcd kwok ksm helm crane)
for t in "${targets[@]}"; do
  start=$(date +%s)
  case $t in
    k8s) build_k8s ;;
    etcd) simple_tool etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 ;;
    kwok) simple_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl ;;
    ksm) simple_tool ksm "$KSM_VERSION" k8s.io/kube-state-metrics/v2 k8s.io/kube-state-metrics/v2 ;;
    helm) simple_tool helm "$HELM_VERSION" helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm ;;
    crane) simple_tool crane "$CRANE_VERSION" github.com/google/go-containerregistry github.com/google/go-containerregistry/cmd/crane ;;
    *) log "unknown tool $t"; exit 2 ;;
  esac
  log "$t done in $(( $(date +%s) - start ))s"
done
