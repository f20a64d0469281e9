#!/usr/bin/env bash
# The project's test command (README): system packages, npm dependencies, build, then the full vitest run.
# Extra arguments are passed to vitest (e.g. a file filter).
set -euo pipefail
cd "$(dirname "$0")/.."

need_major=20
have=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [[ $have -lt $need_major ]]; then
  echo "test: rackguard needs Node.js >= $need_major (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "      Debian 12 ships Node 18; install Node 20+ from nodesource.com or nvm." >&2
  exit 1
fi

./scripts/ensure-system-deps.sh

# mosquitto is in /usr/sbin, not on a normal user's PATH on Debian; the tests spawn it by name.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

if [[ -f package-lock.json ]]; then
  npm ci
else
  npm install
fi
npm run build
# The tests too (vitest only strips their types).
npm run typecheck
npx vitest run "$@"
