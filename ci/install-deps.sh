#!/usr/bin/env bash
# Installs, as root and idempotently, every Debian package porta's build and tests need.
# Usage: ci/install-deps.sh [--no-gpu-toolchains]
set -euo pipefail
pkgs=(
  build-essential pkg-config python3
  libconfig-dev check libsubunit-dev
  libpcre2-dev
  ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo libclblast-dev
  libmicrohttpd-dev libcjson-dev
  python3-venv chromium chromium-driver   # server tests: venv for openai/pytest/selenium, browser
)
if [ "${1:-}" != "--no-gpu-toolchains" ]; then
  pkgs+=(hipcc libamdhip64-dev rocm-device-libs)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
