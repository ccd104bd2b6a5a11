#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages bitrack builds and tests with. Uses sudo when not
# root. Safe to run again: apt-get skips what is already there.
set -euo pipefail
PKGS=(build-essential cmake pkg-config
      libopenmpi-dev openmpi-bin
      libzmq3-dev libmsgpack-dev libcmocka-dev libedit-dev
      libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev
      python3 python3-zmq python3-msgpack python3-venv python3-pip python3-setuptools
      python3-prometheus-client curl nodejs
      iproute2 procps time
      clang libclang-rt-14-dev)
# npm comes with some nodejs builds (NodeSource's); Debian ships it as its own package.
command -v npm > /dev/null 2>&1 || PKGS+=(npm)
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The official OpenAI client, pinned, for the HTTP API tests (tests/e2e/serve_http.sh):
# installed from the npm registry into tests/e2e/node/node_modules (ignored by git).
# Skipped when the pinned version is already there.
node_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/e2e/node"
if ! node -e 'const d = process.argv[1];
  process.exit(require(d + "/node_modules/openai/package.json").version ===
               require(d + "/package.json").dependencies.openai ? 0 : 1)' "$node_dir" 2> /dev/null; then
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error
fi
