#!/usr/bin/env bash
# libiscsi conformance: runs iscsi-test-cu against a freshly started ironlun, one suite per
# process (see shared/spec/libiscsi-notes.md), and prints pass/fail/skip counts per suite.
#
# usage: scripts/conformance.sh [--all | SUITE...]
#   no argument : the suites the target core must pass (issue "iSCSI target core")
#   --all       : every suite of the ALL family (SCSI + iSCSI) plus MultipathIO
#   SUITE...    : the named suites (e.g. Read10 iSCSITMF)
# env:
#   IRONLUN_BIN       the server binary (default: target/release/ironlun, else target/debug)
#   CONFORMANCE_STRICT=0  report failures but exit 0
#   CONFORMANCE_OUT   directory for per-suite logs, kept (default: a temp dir, kept only
#                     when a test failed or did not run, and then printed)
# Exit status: 0 when no test failed (skips are reported, with their reasons, separately).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${IRONLUN_BIN:-}
if [[ -z "$bin" ]]; then
    if [[ -x "$here/target/release/ironlun" ]]; then bin="$here/target/release/ironlun"; else bin="$here/target/debug/ironlun"; fi
fi
[[ -x "$bin" ]] || { echo "conformance: no ironlun binary at $bin (cargo build first)" >&2; exit 2; }
command -v iscsi-test-cu >/dev/null || { echo "conformance: iscsi-test-cu missing (apt-get install libiscsi-bin)" >&2; exit 2; }

CORE_SUITES=(Inquiry Mandatory ModeSense6 NoMedia Prefetch10 Prefetch16 PreventAllow
    Read6 Read10 Read12 Read16 ReadCapacity10 ReadCapacity16 StartStopUnit TestUnitReady
    Unmap Verify10 Verify12 Verify16 Write10 Write12 Write16 WriteSame10 WriteSame16
    WriteVerify10 WriteVerify12 WriteVerify16 iSCSIcmdsn iSCSIdatasn iSCSIResiduals iSCSITMF)

if [[ "${1:-}" == "--all" ]]; then
    mapfile -t SUITES < <(iscsi-test-cu --list 2>/dev/null | sed -n 's/^ALL\.\([A-Za-z0-9]*\)$/\1/p')
elif [[ $# -gt 0 ]]; then
    SUITES=("$@")
else
    SUITES=("${CORE_SUITES[@]}")
fi

work=$(mktemp -d /tmp/ironlun-conformance.XXXXXX)
out=${CONFORMANCE_OUT:-$work/logs}
mkdir -p "$out"
pick_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo $((20000 + RANDOM % 20000)); }
p1=$(pick_port); p2=$(pick_port)
iqn=iqn.2026-11.io.ironlun:conformance
init1=iqn.2026-11.test:conformance-1
init2=iqn.2026-11.test:conformance-2
cat > "$work/ironlun.toml" <<EOF
[server]
data_dir = "$work/data"
# libiscsi's synchronous test tool does not read the socket while it sleeps (Sanitize.Reset
# sleeps 60 s), so target pings would drop its connection (libiscsi issue #185).
nop_interval_secs = 0
# SANITIZE must still be running seconds after it starts (Sanitize.Reset checks it).
sanitize_rate_mib_s = 32

[[portal]]
address = "127.0.0.1:$p1"
group = 1

[[portal]]
address = "127.0.0.1:$p2"
group = 2

[[target]]
name = "$iqn"
allowed_initiators = ["$init1", "$init2"]

[[target.lun]]
lun = 0
path = "$work/data/lun0.img"
size = "256MiB"

# The ReadOnly suite runs against a write-protected LUN.
[[target.lun]]
lun = 1
path = "$work/data/lun1.img"
size = "16MiB"
read_only = true

# PreventAllow and StartStopUnit.Simple need a removable medium.
[[target.lun]]
lun = 2
path = "$work/data/lun2.img"
size = "16MiB"
removable = true

# 4 KiB physical blocks (8 logical blocks each): the unaligned and Data-Out size tests of
# WRITE SAME and COMPARE AND WRITE need LBPPB > 1; GetLBAStatus.UnmapSingle needs LBPPB = 1.
[[target.lun]]
lun = 3
path = "$work/data/lun3.img"
size = "256MiB"
physical_block_size = 4096
EOF

server_pid=
keep_logs=1
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    # Logs outside CONFORMANCE_OUT stay only when something failed.
    if [[ $keep_logs == 1 && -z "${CONFORMANCE_OUT:-}" ]]; then
        rm -rf "$work/data"
    else
        rm -rf "$work"
    fi
    true
}
trap cleanup EXIT
RUST_LOG=${RUST_LOG:-warn} "$bin" serve -c "$work/ironlun.toml" >"$out/server.stdout" 2>"$out/server.log" &
server_pid=$!
for _ in $(seq 1 100); do
    grep -q '^ironlun: ready' "$out/server.stdout" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { echo "conformance: server exited"; cat "$out/server.log"; exit 2; }
    sleep 0.1
done

url1="iscsi://127.0.0.1:$p1/$iqn/0"
url2="iscsi://127.0.0.1:$p2/$iqn/0"
printf '%-26s %5s %5s %5s %s\n' suite pass fail skip notes
tp=0 tf=0 ts=0
failed_tests=() skipped_tests=()
for suite in "${SUITES[@]}"; do
    log="$out/$suite.log"
    urls=("$url1")
    [[ "$suite" == MultipathIO ]] && urls+=("$url2")
    [[ "$suite" == ReadOnly ]] && urls=("${url1%/0}/1")
    [[ "$suite" == PreventAllow || "$suite" == StartStopUnit ]] && urls=("${url1%/0}/2")
    [[ "$suite" == CompareAndWrite || "$suite" == WriteSame1[06] ]] && urls=("${url1%/0}/3")
    set +e
    timeout -k 10 300 stdbuf -oL iscsi-test-cu --dataloss --allow-sanitize \
        -i "$init1" -I "$init2" -t "ALL.$suite" "${urls[@]}" >"$log" 2>&1
    rc=$?
    set -e
    # A verdict follows "Test: NAME ..." (after any indented log lines); a test whose text
    # holds "[SKIPPED]" before its verdict is a skip, even though CUnit counts it as passed.
    counts=$(awk '
        function close_test(v) {
            if (name == "") return
            if (v == "FAILED") { f++; failed = failed " " name }
            else if (skip) { s++; skipped = skipped " " name }
            else p++
            name = ""; skip = 0
        }
        /Test: / {
            line = $0; sub(/.*Test: /, "", line); name = line; sub(/ \.\.\..*/, "", name); skip = 0
            rest = line; sub(/^[^.]*\.\.\./, "", rest); $0 = rest
        }
        name != "" && /\[SKIPPED\]/ && !/^(passed|FAILED)/ { skip = 1 }
        name != "" && /^(passed|FAILED)/ { v = $0; sub(/[^A-Za-z].*/, "", v); close_test(v) }
        END { printf "%d %d %d|%s|%s\n", p, f, s, failed, skipped }' "$log")
    read -r p f s <<<"${counts%%|*}"
    rest=${counts#*|}
    fails=${rest%%|*}
    skips=${rest#*|}
    note=
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then note="TIMEOUT"; f=$((f + 1)); fails="$fails (timeout)"; fi
    if [[ $((p + f + s)) -eq 0 ]]; then note="${note:+$note, }no test ran (rc=$rc)"; f=$((f + 1)); fails="$fails (none-ran)"; fi
    [[ -n "$fails" ]] && note="${note:+$note; }failed:$fails"
    [[ -n "$skips" ]] && note="${note:+$note; }skipped:$skips"
    printf '%-26s %5d %5d %5d %s\n' "$suite" "$p" "$f" "$s" "$note"
    tp=$((tp + p)) tf=$((tf + f)) ts=$((ts + s))
    for t in $fails; do failed_tests+=("$suite.$t"); done
    for t in $skips; do
        reason=$(awk -v t="$t" '/Test: /{cur=$0; sub(/.*Test: /,"",cur); sub(/ \.\.\..*/,"",cur)} cur==t && /\[SKIPPED\]/{sub(/.*\[SKIPPED\] */,""); print; exit}' "$log")
        skipped_tests+=("$suite.$t: $reason")
    done
done
if [[ $tf -eq 0 && -z "${CONFORMANCE_OUT:-}" ]]; then
    keep_logs=0
    echo "conformance: $tp passed, $tf failed, $ts skipped"
else
    echo "conformance: $tp passed, $tf failed, $ts skipped (logs in $out)"
fi
if [[ ${#skipped_tests[@]} -gt 0 ]]; then
    echo "skipped:"
    printf '  %s\n' "${skipped_tests[@]}"
fi
if [[ $tf -gt 0 ]]; then
    echo "failed:"
    printf '  %s\n' "${failed_tests[@]}"
    [[ "${CONFORMANCE_STRICT:-1}" == 0 ]] || exit 1
fi
exit 0
