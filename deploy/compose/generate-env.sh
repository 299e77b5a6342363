#!/usr/bin/env bash
# Write the .env that docker-compose.yml reads: a random PostgreSQL password and audit key, readable by the owner
# only. An existing value is kept, so running it again never locks gpuops out of a database it already created.
# Usage: deploy/compose/generate-env.sh [PATH]   (default: .env beside docker-compose.yml)
set -euo pipefail

target="${1:-$(cd "$(dirname "$0")/../.." && pwd)/.env}"
umask 077
touch "$target"
chmod 600 "$target"

random_hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

for name in POSTGRES_PASSWORD GPUOPS_AUDIT_KEY; do
  if ! grep -q "^${name}=" "$target"; then
    printf '%s=%s\n' "$name" "$(random_hex)" >> "$target"
  fi
done
echo "wrote $target (keep it out of version control; back up GPUOPS_AUDIT_KEY apart from the database)"
