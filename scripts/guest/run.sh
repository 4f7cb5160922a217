#!/usr/bin/env bash
# Boot the ironlun test guest under QEMU (TCG) and run one scenario in it.
#
# Usage: scripts/guest/run.sh SCENARIO_FILE [VAR=VALUE ...]
#   VAR=VALUE pairs are written to /env in the guest (sourced by /init and the
#   scenario). SCENARIO_NAME=... overrides the name used in PASS/FAIL lines and
#   in the guest's InitiatorName (default: scenario file name without .sh).
# Env:
#   GUEST_TIMEOUT     hard timeout in seconds for the whole boot (default 300)
#   GUEST_HOST_HOOK   executable run as `$GUEST_HOST_HOOK WORD` whenever the guest
#                     prints `HOST-ACTION WORD`; when it exits, `HOST-DONE WORD RC`
#                     is sent to the guest on its second serial port (/dev/ttyS1)
#   GUEST_HOOK_TIMEOUT  seconds the hook may run (default 120)
#   GUEST_LOG_DIR     where the console log goes (default /tmp/ironlun-guest-logs)
#   GUEST_MEM         guest memory in MiB (default 1024)
#   GUEST_QEMU_EXTRA  extra qemu arguments (word-split)
#   IRONLUN_GUEST_CACHE  see build.sh
# Exit status: the scenario's exit code (from `SCENARIO-EXIT N`), 124 on
# timeout, 125 when the guest stopped without reporting.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { printf '[guest-run] ERROR: %s\n' "$*" >&2; exit 2; }

(($# >= 1)) || die "usage: $0 SCENARIO_FILE [VAR=VALUE ...]"
SCEN=$1; shift
[[ -f $SCEN ]] || die "scenario file $SCEN not found"
NAME=$(basename "$SCEN" .sh)
for kv in "$@"; do
  [[ $kv == *=* && ${kv%%=*} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "argument '$kv' is not VAR=VALUE"
  [[ ${kv%%=*} == SCENARIO_NAME ]] && NAME=${kv#*=}
done
TIMEOUT=${GUEST_TIMEOUT:-300}
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "GUEST_TIMEOUT must be a number of seconds"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
if [[ -n ${GUEST_HOST_HOOK:-} && ! -x $GUEST_HOST_HOOK ]]; then
  die "GUEST_HOST_HOOK=$GUEST_HOST_HOOK is not executable"
fi

# ------------------------------------------------------------------ the image
build_out=$("$HERE/build.sh") || die "guest build failed (see messages above)"
kernel=$(sed -n 's/^kernel=//p' <<<"$build_out")
initrd=$(sed -n 's/^initrd=//p' <<<"$build_out")
busybox=$(sed -n 's/^busybox=//p' <<<"$build_out")
[[ -s $kernel && -s $initrd && -x $busybox ]] || die "build.sh did not report kernel/initrd/busybox"

WORK=$(mktemp -d /tmp/ironlun-guest.XXXXXX)
QPID=""; CPID=""
cleanup() {
  [[ -n $QPID ]] && kill "$QPID" 2>/dev/null || true
  [[ -n $CPID ]] && kill "$CPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# second archive: /scenario.sh, /harness.sh, /env
O=$WORK/overlay
mkdir -p "$O"
cp "$SCEN" "$O/scenario.sh"
cp "$HERE/harness.sh" "$O/harness.sh"
chmod 755 "$O/scenario.sh" "$O/harness.sh"
{
  q() { local v=${1//\'/\'\\\'\'}; printf "'%s'" "$v"; }
  printf 'SCENARIO_NAME=%s\n' "$(q "$NAME")"
  printf 'GUEST_TIMEOUT=%s\n' "$TIMEOUT"
  for kv in "$@"; do printf '%s=%s\n' "${kv%%=*}" "$(q "${kv#*=}")"; done
} > "$O/env"
(cd "$O" && find . -mindepth 1 | LC_ALL=C sort | "$busybox" cpio -o -H newc -R 0:0 2>/dev/null) \
  | gzip -1 > "$WORK/overlay.cpio.gz"
cat "$initrd" "$WORK/overlay.cpio.gz" > "$WORK/initrd.img"

# ---------------------------------------------------------------------- boot
LOGDIR=${GUEST_LOG_DIR:-/tmp/ironlun-guest-logs}
mkdir -p "$LOGDIR"
LOG=$LOGDIR/$NAME.log
: > "$LOG"
mkfifo "$WORK/console" "$WORK/hook.in" "$WORK/hook.out"

# shellcheck disable=SC2206
extra=(${GUEST_QEMU_EXTRA:-})
timeout -s TERM -k 10 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m "${GUEST_MEM:-1024}" -nographic -no-reboot \
  -kernel "$kernel" -initrd "$WORK/initrd.img" \
  -append "console=ttyS0 panic=-1 quiet" \
  -netdev user,id=n0,restrict=off -device virtio-net-pci,netdev=n0,romfile= \
  -serial mon:stdio -serial pipe:"$WORK/hook" \
  "${extra[@]}" </dev/null >"$WORK/console" 2>&1 &
QPID=$!
# drain the guest's echo side of the hook port so it never blocks
cat "$WORK/hook.out" >/dev/null 2>&1 &
CPID=$!

START=$SECONDS
code=""
echo "[guest-run] $NAME: booting (timeout ${TIMEOUT}s, log $LOG)"
while IFS= read -r line; do
  line=${line%$'\r'}
  printf '%s\n' "$line"
  printf '%s\n' "$line" >> "$LOG"
  case $line in
    *"SCENARIO-EXIT "*)
      c=${line##*SCENARIO-EXIT }; c=${c%% *}
      [[ $c =~ ^[0-9]+$ ]] && code=$c ;;
    "HOST-ACTION "*)   # only at the start of a line
      word=${line#HOST-ACTION }; word=${word%% *}
      (
        if [[ -n ${GUEST_HOST_HOOK:-} ]]; then
          exec 9>"$WORK/hook.lock"; flock 9   # one hook at a time
          echo "[host-hook] running $GUEST_HOST_HOOK $word"
          set +e
          timeout -k 5 "${GUEST_HOOK_TIMEOUT:-120}" "$GUEST_HOST_HOOK" "$word" </dev/null 2>&1 | sed -u 's/^/[host-hook] /'
          rc=${PIPESTATUS[0]}
        else
          echo "[host-hook] HOST-ACTION $word requested but GUEST_HOST_HOOK is not set"
          rc=127
        fi
        echo "[host-hook] $word finished with exit code $rc"
        # <> opens the FIFO without blocking even if QEMU is gone
        printf 'HOST-DONE %s %s\n' "$word" "$rc" 1<>"$WORK/hook.in"
      ) 2>&1 | tee -a "$LOG" &
      ;;
  esac
done < "$WORK/console"
set +e
wait "$QPID"; qrc=$?; QPID=""
kill "$CPID" 2>/dev/null; CPID=""
wait 2>/dev/null   # hook subshells
set -e
DUR=$((SECONDS - START))

if [[ -n $code ]]; then
  echo "[guest-run] $NAME: scenario exit $code after ${DUR}s (log $LOG)"
  if ((code == 0)); then
    echo "PASS $NAME"
  else
    reason=$(grep -m1 -E '^(\[scenario\] )?FAIL:' "$LOG" | sed 's/^\[scenario\] //; s/^FAIL: //' || true)
    echo "FAIL $NAME (scenario exit $code${reason:+: $reason}, ${DUR}s)"
  fi
  exit "$code"
elif ((qrc == 124 || qrc == 137)); then
  echo "FAIL $NAME (timeout after ${TIMEOUT}s, no SCENARIO-EXIT)"
  exit 124
else
  echo "FAIL $NAME (guest stopped without SCENARIO-EXIT after ${DUR}s)"
  exit 125
fi
