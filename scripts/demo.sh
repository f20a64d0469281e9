#!/usr/bin/env bash
# The README's demo command: the simulated rack and the agent, on embedded defaults, no hardware and
# no servers. Installs socat (the virtual RS-485 line) when it is missing and we are root, installs
# npm dependencies, builds, and runs `npm start`. Extra arguments go to the demo (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

need_major=20
have=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [[ $have -lt $need_major ]]; then
  echo "demo: rackguard needs Node.js >= $need_major (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "      Debian 12 and Raspberry Pi OS ship Node 18; install Node 20+ from nodesource.com or nvm." >&2
  exit 1
fi

if ! command -v socat >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update && apt-get install -y --no-install-recommends socat
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n apt-get update && sudo -n apt-get install -y --no-install-recommends socat
  else
    echo "demo: socat is missing (it provides the virtual serial line). Install it: sudo apt-get install socat" >&2
    exit 1
  fi
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci
fi
exec npm start -- "$@"
