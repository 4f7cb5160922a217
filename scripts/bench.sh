#!/usr/bin/env bash
# ironlun against tgt (Debian's user-space target), side by side in one run, with the same
# third-party initiators: qemu-img bench over QEMU's iscsi:// driver, libiscsi's
# iscsi-perf, and a 1 GiB qemu-img convert. Runs alternate between the two targets; the
# table shows medians. For every row: IOPS, MiB/s, the target process's CPU time per I/O
# (from /proc/PID/stat) and the ratio ironlun / tgt. Also the limits (loopback TCP with
# iperf3, the same pattern on the image file without iSCSI) and ironlun's memory.
#
# Both targets serve a fully written 1 GiB image file on the same file system, and a
# RAM-backed one under /dev/shm. tgt runs at its best: rdwr backing store,
# MaxRecvDataSegmentLength 262144.
#
# Usage: scripts/bench.sh [--quick] [--runs N] [--no-replication]
#   --quick   tiny counts, one run (the test suite runs this so the script cannot rot)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3
QUICK=0
REPLICATION=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; RUNS=1 ;;
        --runs) RUNS="$2"; shift ;;
        --no-replication) REPLICATION=0 ;;
        *) echo "usage: $0 [--quick] [--runs N] [--no-replication]" >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    SIZE_MIB=64; N4K1=300; N4K32=3000; N64K=300; N1M=40; PERF_SECS=1; CONVERT_MIB=32
else
    SIZE_MIB=1024; N4K1=20000; N4K32=200000; N64K=30000; N1M=3000; PERF_SECS=5; CONVERT_MIB=1024
fi

need=()
command -v tgtd >/dev/null || need+=(tgt)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v iscsi-perf >/dev/null || need+=(libiscsi-bin)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "bench: installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/install-deps.sh >/dev/null
if [[ -z "${IRONLUN_BIN:-}" ]]; then
    cargo build --release --quiet
    IRONLUN_BIN=target/release/ironlun
fi

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ironlun-bench.XXXXXX")
SHM=$(mktemp -d /dev/shm/ironlun-bench.XXXXXX)
P1=$((21000 + RANDOM % 10000)); P2=$((P1 + 1)); P3=$((P1 + 2)); CTL=$((P1 % 1000 + 100))
IQN1=iqn.2026-11.io.ironlun:bench
IQN2=iqn.2026-11.org.tgt:bench
PIDS=()
cleanup() {
    # tgtd may not stop on SIGTERM while it has targets: ask it first, then insist.
    tgtadm -C "$CTL" --op delete --mode system --force >/dev/null 2>&1 || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK" "$SHM"
}
trap cleanup EXIT

for f in "$WORK/ironlun.img" "$WORK/tgt.img" "$SHM/ironlun.img" "$SHM/tgt.img"; do
    dd if=/dev/zero of="$f" bs=1M count="$SIZE_MIB" status=none
done
dd if=/dev/urandom of="$WORK/convert.raw" bs=1M count="$CONVERT_MIB" status=none

cat > "$WORK/ironlun.toml" <<EOF
[server]
data_dir = "$WORK/data"
nop_interval_secs = 0

[[portal]]
address = "127.0.0.1:$P1"

[[target]]
name = "$IQN1"

[[target.lun]]
lun = 0
path = "$WORK/ironlun.img"

[[target.lun]]
lun = 1
path = "$SHM/ironlun.img"
EOF
"$IRONLUN_BIN" serve -c "$WORK/ironlun.toml" > "$WORK/ironlun.out" 2> "$WORK/ironlun.log" &
IRONLUN_PID=$!
PIDS+=("$IRONLUN_PID")

tgtd -f -C "$CTL" --iscsi "portal=127.0.0.1:$P2" > "$WORK/tgt.log" 2>&1 &
TGT_PID=$!
PIDS+=("$TGT_PID")
for _ in $(seq 100); do
    grep -q '^ironlun: ready' "$WORK/ironlun.out" 2>/dev/null && tgtadm -C "$CTL" --lld iscsi --op show --mode target >/dev/null 2>&1 && break
    sleep 0.1
done
tgtadm -C "$CTL" --lld iscsi --op new --mode target --tid 1 -T "$IQN2"
tgtadm -C "$CTL" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 --bstype rdwr -b "$WORK/tgt.img"
tgtadm -C "$CTL" --lld iscsi --op new --mode logicalunit --tid 1 --lun 2 --bstype rdwr -b "$SHM/tgt.img"
tgtadm -C "$CTL" --lld iscsi --op update --mode target --tid 1 --name MaxRecvDataSegmentLength --value 262144
tgtadm -C "$CTL" --lld iscsi --op bind --mode target --tid 1 -I ALL

url() { # target disk|ram
    case "$1:$2" in
        ironlun:disk) echo "iscsi://127.0.0.1:$P1/$IQN1/0" ;;
        ironlun:ram) echo "iscsi://127.0.0.1:$P1/$IQN1/1" ;;
        tgt:disk) echo "iscsi://127.0.0.1:$P2/$IQN2/1" ;;
        tgt:ram) echo "iscsi://127.0.0.1:$P2/$IQN2/2" ;;
    esac
}
pid_of() { if [[ $1 == ironlun ]]; then echo "$IRONLUN_PID"; else echo "$TGT_PID"; fi; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

declare -A SECS CPU
add() { SECS[$1]="${SECS[$1]:-} $2"; CPU[$1]="${CPU[$1]:-} $3"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# qemu-img bench: name target medium args... -> records seconds and CPU seconds
qbench() {
    local name=$1 t=$2 m=$3; shift 3
    local pid c0 c1 out s
    pid=$(pid_of "$t")
    c0=$(cpu_ticks "$pid")
    out=$(qemu-img bench -f raw "$@" "$(url "$t" "$m")")
    c1=$(cpu_ticks "$pid")
    s=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' <<< "$out")
    add "$name:$t" "$s" "$(awk -v a="$c0" -v b="$c1" -v t="$TICK" 'BEGIN { print (b - a) / t }')"
}
# iscsi-perf reads for PERF_SECS: records the IOPS as "seconds per op" x ops
iperf_reads() {
    local name=$1 t=$2 m=$3 depth=$4 blocks=$5
    local pid c0 c1 iops
    pid=$(pid_of "$t")
    c0=$(cpu_ticks "$pid")
    iops=$(timeout $((PERF_SECS + 20)) iscsi-perf -m "$depth" -b "$blocks" -t "$PERF_SECS" "$(url "$t" "$m")" 2>&1 \
        | tr '\r' '\n' | sed -n 's/.*iops average \([0-9]*\).*/\1/p' | tail -1)
    c1=$(cpu_ticks "$pid")
    # Stored as the time one million I/Os take, and the CPU for the whole run.
    add "$name:$t" "$(awk -v i="$iops" 'BEGIN { print (i > 0) ? 1e6 / i : 0 }')" \
        "$(awk -v a="$c0" -v b="$c1" -v t="$TICK" -v i="$iops" -v s="$PERF_SECS" 'BEGIN { print (i > 0) ? (b - a) / t * 1e6 / (i * s) : 0 }')"
}
convert() {
    local name=$1 t=$2 m=$3
    local pid c0 c1 t0 t1
    pid=$(pid_of "$t")
    c0=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    qemu-img convert -n -f raw -O raw "$WORK/convert.raw" "$(url "$t" "$m")"
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$pid")
    add "$name:$t" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$(awk -v a="$c0" -v b="$c1" -v t="$TICK" 'BEGIN { print (b - a) / t }')"
}

# name | medium | kind | count | bytes per I/O | qemu-img args
PATTERNS=(
    "4k read qd1|disk|q|$N4K1|4096|-c $N4K1 -d 1 -s 4k"
    "4k write qd1|disk|q|$N4K1|4096|-w -c $N4K1 -d 1 -s 4k"
    "4k read qd32|disk|q|$N4K32|4096|-c $N4K32 -d 32 -s 4k"
    "4k write qd32|disk|q|$N4K32|4096|-w -c $N4K32 -d 32 -s 4k"
    "64k read qd32|disk|q|$N64K|65536|-c $N64K -d 32 -s 64k"
    "64k write qd32|disk|q|$N64K|65536|-w -c $N64K -d 32 -s 64k"
    "1M read qd32|disk|q|$N1M|1048576|-c $N1M -d 32 -s 1M"
    "1M write qd32|disk|q|$N1M|1048576|-w -c $N1M -d 32 -s 1M"
    "1M read qd32 RAM|ram|q|$N1M|1048576|-c $N1M -d 32 -s 1M"
    "1M write qd32 RAM|ram|q|$N1M|1048576|-w -c $N1M -d 32 -s 1M"
    "iscsi-perf 4k read qd32|disk|p|1000000|4096|32 8"
    "iscsi-perf 1M read qd32|disk|p|1000000|1048576|32 2048"
    "convert ${CONVERT_MIB} MiB|disk|c|$CONVERT_MIB|1048576|"
)

for run in $(seq "$RUNS"); do
    for p in "${PATTERNS[@]}"; do
        IFS='|' read -r name medium kind count bytes args <<< "$p"
        # Alternate which target goes first.
        if (( run % 2 )); then order="ironlun tgt"; else order="tgt ironlun"; fi
        for t in $order; do
            case "$kind" in
                q) # shellcheck disable=SC2086
                   qbench "$name" "$t" "$medium" $args ;;
                p) # shellcheck disable=SC2086
                   iperf_reads "$name" "$t" "$medium" $args ;;
                c) convert "$name" "$t" "$medium" ;;
            esac
        done
    done
done

# Limits: loopback TCP, and the patterns on the image file without iSCSI.
iperf3 -s -1 -p "$P3" > /dev/null 2>&1 &
IPERF_PID=$!
PIDS+=("$IPERF_PID")
LOOPBACK=n/a
# The server may take a moment to listen on a loaded machine: retry the client.
# A run that printed no rate (an error in its JSON) is tried again too.
for _ in $(seq 100); do
    if out=$(iperf3 -c 127.0.0.1 -p "$P3" -t "$PERF_SECS" -J 2>/dev/null); then
        rate=$(awk -F'[:,]' '/"bits_per_second"/ { b = $2 } END { printf "%.0f", b / 8 / 1048576 }' <<< "$out")
        if [[ $rate -gt 0 ]]; then
            LOOPBACK=$rate
            break
        fi
        kill "$IPERF_PID" 2>/dev/null || true
        wait "$IPERF_PID" 2>/dev/null || true
        iperf3 -s -1 -p "$P3" > /dev/null 2>&1 &
        IPERF_PID=$!
        PIDS+=("$IPERF_PID")
    fi
    sleep 0.1
done
kill "$IPERF_PID" 2>/dev/null || true
wait "$IPERF_PID" 2>/dev/null || true
raw_secs() { qemu-img bench -f raw "$@" "$WORK/tgt.img" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'; }
RAW4K=$(raw_secs -c "$N4K32" -d 32 -s 4k)
RAW1M=$(raw_secs -c "$N1M" -d 32 -s 1M)

# Memory: idle, with 64 idle sessions, with 8 busy sessions.
rss() { awk '/VmRSS/ { print $2 }' "/proc/$IRONLUN_PID/status"; }
# Idle: after 12 s without I/O (the server gives freed memory back after 5 to 10 s idle).
sleep 12
RSS_IDLE=$(rss)
/usr/bin/python3 scripts/hold-sessions.py 127.0.0.1 "$P1" "$IQN1" 64 6 > "$WORK/hold.out" 2>&1 &
HOLD=$!
for _ in $(seq 50); do grep -q 'logged in' "$WORK/hold.out" 2>/dev/null && break; sleep 0.1; done
sleep 1
RSS_64=$(rss)
wait "$HOLD" 2>/dev/null || true
BUSY=()
for k in $(seq 8); do
    qemu-img bench -f raw -w -c $((N4K32 / 4)) -d 32 -s 64k "$(url ironlun disk)" > /dev/null &
    BUSY+=($!)
done
sleep 2
RSS_BUSY=$(rss)
wait "${BUSY[@]}" 2>/dev/null || true

printf 'ironlun vs tgt %s, %s, %s cores, %s run(s), medians; CPU is the target process'"'"'s user+system time per I/O\n' \
    "$(date -u +%F)" "$(uname -r)" "$(nproc)" "$RUNS"
# paired IRONLUN TGT (space-separated values, one per run, in run order) -> "median low
# high" of TGT / IRONLUN run by run: two runs made seconds apart are compared with each
# other, not with medians taken across runs while the machine drifts.
paired() {
    awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= n; i++) if (x[i] > 0) print y[i] / x[i] }' | sort -g |
        awk '{ r[NR] = $1 } END { if (NR == 0) { print 0, 0, 0; exit }
            print (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2, r[1], r[NR] }'
}
printf '%-26s %10s %10s %9s %10s %10s %9s %8s %12s %8s %12s\n' "pattern" "ironlun" "MiB/s" "CPU us" "tgt" "MiB/s" "CPU us" "IOPS x" "(range)" "CPU x" "(range)"
for p in "${PATTERNS[@]}"; do
    IFS='|' read -r name medium kind count bytes args <<< "$p"
    a=$(median <<< "${SECS[$name:ironlun]}"); ac=$(median <<< "${CPU[$name:ironlun]}")
    b=$(median <<< "${SECS[$name:tgt]}"); bc=$(median <<< "${CPU[$name:tgt]}")
    awk -v n="$name" -v a="$a" -v ac="$ac" -v b="$b" -v bc="$bc" -v count="$count" -v bytes="$bytes" -v kind="$kind" \
        -v t="$(paired "${SECS[$name:ironlun]}" "${SECS[$name:tgt]}")" \
        -v c="$(paired "${CPU[$name:ironlun]}" "${CPU[$name:tgt]}")" 'BEGIN {
        if (kind == "p") { ia = 1e6 / a; ib = 1e6 / b; ca = ac; cb = bc }
        else { ia = count / a; ib = count / b; ca = ac / count * 1e6; cb = bc / count * 1e6 }
        split(t, tt, " "); split(c, cc, " ")
        printf "%-26s %10.0f %10.1f %9.1f %10.0f %10.1f %9.1f %7.2fx %5.2f-%.2fx %7.2fx %5.2f-%.2fx\n", n, ia, ia * bytes / 1048576, ca, ib, ib * bytes / 1048576, cb, tt[1], tt[2], tt[3], cc[1], cc[2], cc[3] }'
done
printf '(IOPS x: ironlun / tgt, CPU x: tgt CPU per I/O / ironlun CPU per I/O, both higher is better: the median over the runs of the\n'
printf ' ratio of the two targets'"'"' runs made one after the other, and the lowest and highest of those ratios; IOPS, MiB/s and CPU us\n'
printf ' are medians over the runs; convert: one I/O per MiB)\n'
printf 'limits: loopback TCP (iperf3, one stream) %s MiB/s; the image file without iSCSI: 4k qd32 %.0f IOPS, 1M qd32 %.0f MiB/s\n' \
    "$LOOPBACK" "$(awk -v n="$N4K32" -v s="$RAW4K" 'BEGIN { print n / s }')" "$(awk -v n="$N1M" -v s="$RAW1M" 'BEGIN { print n / s }')"
printf 'ironlun memory: RSS idle %s KiB, with 64 idle sessions %s KiB (%s KiB per session), with 8 busy sessions %s KiB\n' \
    "$RSS_IDLE" "$RSS_64" "$(( (RSS_64 - RSS_IDLE) / 64 ))" "$RSS_BUSY"

if [[ $REPLICATION == 1 ]]; then
    echo
    if [[ $QUICK == 1 ]]; then
        IRONLUN_BIN="$IRONLUN_BIN" scripts/bench-replication.sh --quick
    else
        IRONLUN_BIN="$IRONLUN_BIN" scripts/bench-replication.sh --rounds "$RUNS"
    fi
fi
