#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs, then runs
# formatting and lint checks, the unit and integration tests, and libiscsi's conformance suite.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" $(( $(date +%s) - start )); }

step "dependencies"
scripts/install-deps.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build"
cargo build --workspace --all-targets --locked

step "unit and integration tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
cargo test --doc --workspace --locked
# The replication write-cost benchmark's quick mode, so that it cannot rot.
cargo test -p replication --bench write_cost --locked -- --quick

step "fuzzing smoke run: regression inputs, then 15 s per target (docs/fuzzing.md)"
FUZZ_SECONDS="${FUZZ_SECONDS:-15}" scripts/fuzz-smoke.sh

step "libiscsi conformance: every suite of the ALL family and MultipathIO"
IRONLUN_BIN=target/debug/ironlun scripts/conformance.sh --all

step "done"
