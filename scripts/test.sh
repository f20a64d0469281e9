#!/usr/bin/env bash
# The project's test command (README): system packages, npm dependencies, build, then the full vitest run.
# Extra arguments are passed to vitest (e.g. a file filter).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-system-deps.sh

# mosquitto is in /usr/sbin, not on a normal user's PATH on Debian; the tests spawn it by name.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

if [[ -f package-lock.json ]]; then
  npm ci
else
  npm install
fi
npm run build
npx vitest run "$@"
