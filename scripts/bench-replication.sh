#!/usr/bin/env bash
# The cost of replication in the write path, as ratios to the same server's LUN without
# replication, measured side by side in one run with a third-party initiator (qemu-img
# bench over QEMU's iscsi:// driver).
#
# One ironlun serves four 1 GiB LUNs: plain, the source of a synchronous mirror, the source
# of an asynchronous mirror, and the source of a snapshot. Each round runs every pattern on
# every LUN, one after the other (the order reversed every other round), and takes each
# replicated LUN's time relative to the plain LUN's run of the same round: the table shows
# the median of those per-round ratios and their range, and IOPS from the median times. A
# ratio of two runs a few seconds apart holds up against the machine's drift (the plain
# LUN's own time moves by 15% or more between rounds on a shared machine); a ratio of
# medians taken across rounds does not.
#
#   - 4 KiB writes at depth 1 (IOPS and mean latency) and depth 32, 1 MiB writes at depth 32;
#     after every run the asynchronous mirror's journal is drained (not timed), so that no
#     run pays for shipping another's writes;
#   - snapshot: 4 KiB writes one per 64 KiB (scattered; every write copies a snapshot block
#     first: "first write"), then the same writes again ("overwrite"); against the plain LUN
#     with the same pattern.
#
# Usage: scripts/bench-replication.sh [--quick] [--rounds N]
#   IRONLUN_IO_THREADS=n  the server's io_threads (default 4, as in its default configuration)
#   IRONLUN_BIN=path      a prebuilt binary (default: cargo build --release)
#   --quick   small counts and one round (the test suite runs this so the script cannot rot)
set -euo pipefail

cd "$(dirname "$0")/.."
ROUNDS=3
QUICK=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1; ROUNDS=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        *) echo "usage: $0 [--quick] [--rounds N]" >&2; exit 2 ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    N4K1=300; N4K32=2000; N1M=40; NSNAP=400; SIZE=64MiB
else
    N4K1=4000; N4K32=40000; N1M=600; NSNAP=12000; SIZE=1GiB
fi

command -v qemu-img >/dev/null || { echo "bench-replication: qemu-img is missing (scripts/install-deps.sh)" >&2; exit 1; }
if [[ -z "${IRONLUN_BIN:-}" ]]; then
    cargo build --release --quiet
    IRONLUN_BIN=target/release/ironlun
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ironlun-bench.XXXXXX")
# Port 0: the server takes a free port and prints it (a random fixed port collided with a
# port already in use once in CI: "Address already in use").
PORT=${BENCH_PORT:-0}
IQN=iqn.2026-11.io.ironlun:bench
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

{
    printf "[server]\ndata_dir = \"%s/data\"\nnop_interval_secs = 0\nio_threads = ${IRONLUN_IO_THREADS:-4}\n\n" "$WORK"
    printf '[[portal]]\naddress = "127.0.0.1:%s"\n\n[[target]]\nname = "%s"\n' "$PORT" "$IQN"
    for l in 0 1 2 3; do
        printf '\n[[target.lun]]\nlun = %s\npath = "%s/lun%s.img"\nsize = "%s"\nname = "lun%s"\n' "$l" "$WORK" "$l" "$SIZE" "$l"
    done
} > "$WORK/ironlun.toml"

"$IRONLUN_BIN" serve -c "$WORK/ironlun.toml" > "$WORK/stdout" 2> "$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
    grep -q '^ironlun: ready' "$WORK/stdout" 2>/dev/null && break
    sleep 0.1
done
grep -q '^ironlun: ready' "$WORK/stdout" || { echo "bench-replication: the server did not start" >&2; cat "$WORK/server.log" >&2; exit 1; }
PORT=$(sed -n 's/^ironlun: listening on 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$WORK/stdout" | head -n 1)
[[ -n $PORT ]] || { echo "bench-replication: no listening port in the server's output" >&2; cat "$WORK/stdout" >&2; exit 1; }
SOCK="$WORK/data/admin.sock"
admin() { "$IRONLUN_BIN" admin --socket "$SOCK" "$@"; }

# Fully written images, so that no row pays for allocating blocks.
for l in 0 1 2 3; do
    qemu-img bench -w -f raw -c $(( $(numfmt --from=iec "${SIZE%iB}") / 1048576 )) -d 16 -s 1M --pattern=0x11 \
        "iscsi://127.0.0.1:$PORT/$IQN/$l" > /dev/null
done
admin replicate --source lun1 --sync-type mirror --mode sync --name syncm --wait > /dev/null
admin replicate --source lun2 --sync-type mirror --mode async --name asyncm --wait > /dev/null
ASYNC_SYNC=$(admin list syncs | awk '$4 == "volume:lun2" { print $1 }')

# drained: wait (up to 30 s) until the asynchronous mirror has shipped its journal, so that
# its backlog is not shipped during the next measurement (of any LUN).
drained() {
    for _ in $(seq 300); do
        admin --json show "$ASYNC_SYNC" | grep -q '"IronLun_LagBytes":0[,}]' && return
        sleep 0.1
    done
    echo "bench-replication: the asynchronous mirror did not drain in 30 s" >&2
}

# cpu_ticks: the server's user + system time so far, in clock ticks (every thread's).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }

# run LUN PATTERN-ARGS... -> "seconds ticks": the run's time, and the server's CPU from its
# start until the asynchronous mirror has shipped what it wrote (shipping is part of what a
# write to that LUN costs)
run() {
    local lun=$1; shift
    local out c0
    c0=$(cpu_ticks)
    out=$(qemu-img bench -w -f raw -t none "$@" "iscsi://127.0.0.1:$PORT/$IQN/$lun")
    drained
    echo "$(sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p' <<< "$out") $(( $(cpu_ticks) - c0 ))"
}

# runw LUN PATTERN-ARGS... -> "seconds ticks" from start to exit (login and the closing
# SYNCHRONIZE CACHE included)
runw() {
    local lun=$1; shift
    local t0=$EPOCHREALTIME c0
    c0=$(cpu_ticks)
    qemu-img bench -w -f raw -t none "$@" "iscsi://127.0.0.1:$PORT/$IQN/$lun" > /dev/null
    awk -v a="$t0" -v b="$EPOCHREALTIME" -v c="$(( $(cpu_ticks) - c0 ))" 'BEGIN { printf "%.6f %d\n", b - a, c }'
}
# runf LUN PATTERN-ARGS... -> "seconds ticks" for the writes and the closing flush: runw less
# the same command's cost with one write (start, login, logout; the median of three). The
# snapshot rows use it: a first write to a chunk is held in the volume's write cache until
# its chunk is saved, so part of what it costs is paid by the flush.
runf() {
    local lun=$1; shift
    local base all
    base=$(for _ in 1 2 3; do runw "$lun" -c 1 -d 1 -s 4k; done)
    all=$(runw "$lun" "$@")
    awk -v a="$all" -v t="$(cut -d' ' -f1 <<< "$base" | sort -g | sed -n 2p)" \
        -v c="$(cut -d' ' -f2 <<< "$base" | sort -g | sed -n 2p)" \
        'BEGIN { split(a, x, " "); printf "%.6f %d\n", x[1] - t, x[2] - c }'
}

declare -A T C
# put KEY ROUND "SECONDS TICKS"
put() { read -r "T[$1:$2]" "C[$1:$2]" <<< "$3"; }

for round in $(seq "$ROUNDS"); do
    if (( round % 2 )); then order=(0 1 2); else order=(2 1 0); fi
    for lun in "${order[@]}"; do put "4k1:$lun" "$round" "$(run $lun -c $N4K1 -d 1 -s 4k)"; done
    for lun in "${order[@]}"; do put "4k32:$lun" "$round" "$(run $lun -c $N4K32 -d 32 -s 4k)"; done
    for lun in "${order[@]}"; do put "1m32:$lun" "$round" "$(run $lun -c $N1M -d 32 -s 1M)"; done
    # A fresh snapshot of lun3, then one 4 KiB write per 64 KiB (first writes), then
    # the same writes again (overwrites); the plain LUN with the same pattern alongside,
    # before or after, alternating (the overwrites follow the first writes on lun3 either
    # directly or with the plain LUN's run in between).
    admin snapshot lun3 --name "snap$round" --wait > /dev/null
    if (( round % 2 )); then snap=(first:0 first:3 over:3 over:0); else snap=(first:3 first:0 over:0 over:3); fi
    for k in "${snap[@]}"; do put "$k" "$round" "$(runf "${k#*:}" -c $NSNAP -d 32 -s 4k -S 64k)"; done
    gsync=$(admin list group-syncs | awk -v n="snap$round" '$2 == n { print $1 }')
    admin modify "$gsync" return-to-pool > /dev/null
done

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# round_secs KEY: its time in each round, one per line
round_secs() { for r in $(seq "$ROUNDS"); do echo "${T[$1:$r]}"; done; }
# ratios ARRAY KEY BASE: KEY's value over BASE's in ARRAY (T: time, C: CPU), round by round
ratios() {
    local -n a=$1
    for r in $(seq "$ROUNDS"); do
        awk -v x="${a[$2:$r]}" -v y="${a[$3:$r]}" 'BEGIN { printf "%.4f\n", (y > 0) ? x / y : 0 }'
    done
}
# spread ARRAY KEY BASE -> "median low high" of the ratios
spread() { ratios "$@" | sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m, a[1], a[NR] }'; }

printf 'ironlun replication write cost, %s, %s, %s round(s); IOPS from median times, ratios per round\n' "$(date -u +%F)" "$(nproc) cores" "$ROUNDS"
printf '%-34s %8s %8s %8s %12s %8s %12s\n' "pattern / LUN" "IOPS" "lat us" "time" "(range)" "CPU" "(range)"
row() {
    local label=$1 key=$2 lun=$3 base=$4 count=$5 qd=$6
    local s
    s=$(round_secs "$key:$lun" | median)
    awk -v l="$label" -v s="$s" -v t="$(spread T "$key:$lun" "$key:$base")" \
        -v c="$(spread C "$key:$lun" "$key:$base")" -v n="$count" -v qd="$qd" 'BEGIN {
        split(t, tt, " "); split(c, cc, " ");
        iops = n / s; lat = (qd == 1) ? sprintf("%.1f", s / n * 1e6) : "-";
        printf "%-34s %8.0f %8s %7.2fx %5.2f-%.2fx %7.2fx %5.2f-%.2fx\n", l, iops, lat,
            tt[1], tt[2], tt[3], cc[1], cc[2], cc[3] }'
}
row "4k write qd1, no replication" 4k1 0 0 $N4K1 1
row "4k write qd1, sync mirror" 4k1 1 0 $N4K1 1
row "4k write qd1, async mirror" 4k1 2 0 $N4K1 1
row "4k write qd32, no replication" 4k32 0 0 $N4K32 32
row "4k write qd32, sync mirror" 4k32 1 0 $N4K32 32
row "4k write qd32, async mirror" 4k32 2 0 $N4K32 32
row "1M write qd32, no replication" 1m32 0 0 $N1M 32
row "1M write qd32, sync mirror" 1m32 1 0 $N1M 32
row "1M write qd32, async mirror" 1m32 2 0 $N1M 32
row "4k/64k-step qd32, no replication" first 0 0 $NSNAP 32
row "4k/64k-step qd32, snapshot first" first 3 0 $NSNAP 32
row "4k/64k-step qd32, snapshot over" over 3 0 $NSNAP 32
echo "(time and CPU: the median over the rounds of the time for the same writes, and of the"
echo " server's CPU for them, relative to the LUN without replication in the same round; lower"
echo " is better; the range is the lowest and highest of those ratios. The asynchronous mirror's"
echo " CPU includes shipping its writes; the 4k/64k-step rows time the writes and the closing"
echo " flush)"
