#!/usr/bin/env bash
# Installs what the tests need and the machine may lack. Idempotent; quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v curl >/dev/null || need+=(curl)
command -v cmake >/dev/null || need+=(cmake)
if [[ ${#need[@]} -gt 0 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's prometheus package starts a system service; the tests start their own on a free port.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
pkill -x -u prometheus prometheus 2>/dev/null || true
# `--packages-only`: the caller builds the Go tools itself (scripts/test-all.sh overlaps them with Cargo).
[[ ${1:-} == --packages-only ]] || testbed/scripts/build-tools.sh
