#!/usr/bin/env bash
# Fuzzing smoke test (docs/fuzzing.md): build the cargo-fuzz targets of fuzz/, replay every
# regression input (each must run without a crash), then fuzz each target for a short time
# from its committed seeds. Exits non-zero on any crash, timeout or out-of-memory.
#
#   FUZZ_SECONDS   seconds of fuzzing per target (default 15; 0 replays only)
#   FUZZ_TARGETS   space-separated targets to run (default: all)
#
# Works on a fresh clone: corpora and artifacts live in a temporary directory that is removed
# afterwards. Needs stable Rust (RUSTC_BOOTSTRAP=1 enables the nightly flags libFuzzer needs)
# and cargo-fuzz, which is installed with `cargo install --locked cargo-fuzz` when missing.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
ALL_TARGETS="pdu_decode login text_keys cdb admin_request rsd"
TARGETS="${FUZZ_TARGETS:-$ALL_TARGETS}"
export RUSTC_BOOTSTRAP=1
# The flags of the recorded long runs: release, debug assertions (overflow checks) on,
# no sanitizer (the crates under test are safe Rust apart from libc calls).
BUILD_FLAGS=(-O -a -s none)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

echo "fuzz-smoke: building the fuzz targets"
cargo fuzz build "${BUILD_FLAGS[@]}"

host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="target/$host/release"
work="$(mktemp -d "${TMPDIR:-/tmp}/ironlun-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# The admin target keeps its replication service's files in a temporary directory that lives
# as long as the process: keep it inside $work.
mkdir -p "$work/tmp"

failed=()
for t in $TARGETS; do
    bin="$bin_dir/$t"
    if [[ ! -x "$bin" ]]; then
        echo "fuzz-smoke: no binary for target $t" >&2
        failed+=("$t (missing)")
        continue
    fi
    dict=()
    if [[ -f "dicts/$t.dict" ]]; then
        dict=("-dict=dicts/$t.dict")
    fi

    # 1. Regression inputs: every file must run without a crash.
    if [[ -d "regressions/$t" ]] && [[ -n "$(ls -A "regressions/$t")" ]]; then
        n="$(find "regressions/$t" -type f | wc -l)"
        echo "fuzz-smoke: $t: replaying $n regression input(s)"
        if ! TMPDIR="$work/tmp" "$bin" -runs=0 -timeout=60 -rss_limit_mb=4096 "regressions/$t" \
            >"$work/$t-replay.log" 2>&1; then
            tail -n 40 "$work/$t-replay.log" >&2
            failed+=("$t (regression)")
            continue
        fi
    fi

    # 2. A short run from the seeds.
    if [[ "$FUZZ_SECONDS" -gt 0 ]]; then
        corpus="$work/corpus/$t"
        mkdir -p "$corpus" "$work/artifacts/$t"
        cp "seeds/$t"/* "$corpus"/ 2>/dev/null || true
        echo "fuzz-smoke: $t: fuzzing for ${FUZZ_SECONDS}s"
        if ! TMPDIR="$work/tmp" "$bin" "$corpus" "${dict[@]}" -max_total_time="$FUZZ_SECONDS" -timeout=60 \
            -rss_limit_mb=4096 -print_final_stats=1 \
            -artifact_prefix="$work/artifacts/$t/" >"$work/$t-fuzz.log" 2>&1; then
            tail -n 60 "$work/$t-fuzz.log" >&2
            for a in "$work/artifacts/$t"/*; do
                [[ -f "$a" ]] || continue
                echo "fuzz-smoke: $t: crash input $(basename "$a"): $(xxd -p "$a" | tr -d '\n' | head -c 2000)" >&2
            done
            failed+=("$t (crash)")
            continue
        fi
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t-fuzz.log")"
        echo "fuzz-smoke: $t: ok (${execs:-?} executions)"
    fi
done

if ((${#failed[@]})); then
    echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: all targets passed"
