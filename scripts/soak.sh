#!/usr/bin/env bash
# Soak: mixed, verified I/O from several sessions while snapshots are taken and returned to
# the pool and a mirror is fractured and resynchronized every few seconds; then a full
# verification. Prints operations, errors (must be zero) and the server's RSS over time.
# Not part of CI.
#
# Usage: scripts/soak.sh [SECONDS]     (default 1800: 30 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_SECONDS="${1:-1800}"
exec cargo nextest run --release -p ironlun --run-ignored only -E 'test(=soak::soak)' --no-capture
