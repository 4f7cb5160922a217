#!/usr/bin/env bash
# Run the guest scenarios against tgt (Debian's tgtd) as the reference target.
# This proves the harness; the same scenarios are later pointed at ironlun.
#
# Usage: scripts/guest/tgt-reference.sh [SCENARIO ...]
#   SCENARIO: fs-roundtrip fs-digest fs-chap fs-mutual chap-wrong multi-lun
#             kill-restart fio   (default: all, in that order)
# Env: TGT_PORT (default 3261), TGT_CONTROL_PORT (default 7000 + TGT_PORT % 1000),
#      TGT_OUTAGE (seconds tgtd stays dead in kill-restart, default 3),
#      TGT_STATE_PARENT (where the state dir with the sparse images goes,
#      default /dev/shm, else /tmp), TGT_KEEP=1 keeps the state dir, plus run.sh's GUEST_* variables.
# Prints run.sh's PASS/FAIL lines and a summary; exits non-zero if any failed.
#
# tgt specifics (see the report in the harness notes):
#  - LUN 0 of every target is tgt's controller LUN (type 0x0c, Linux attaches
#    it as sg only), so the disks are LUN 1 and up.
#  - tgt answers SendTargets with 127.0.0.1:PORT (the address it was reached
#    on from the host's view); the guest uses 10.0.2.2:PORT instead.
#  - tgt's CHAP only works with MD5 (open-iscsi's default CHAP_A=5); offering
#    SHA-256 makes tgt 1.0.85 fail the login.
#  - tgt answers HeaderDigest/DataDigest=None unless the target's parameters
#    allow CRC32C (tgtadm --op update --mode target -n HeaderDigest -v CRC32C,None).
#  - tgtd ignores SIGTERM; it is stopped by PID with SIGKILL.
#  - tgt's configuration lives only in the daemon: after kill -9 the hook
#    starts a new tgtd and re-creates targets, LUNs and accounts.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PORT=${TGT_PORT:-3261}
CPORT=${TGT_CONTROL_PORT:-$((7000 + PORT % 1000))}
P=iqn.2026-11.io.ironlun
T_PLAIN=$P:tgt.plain      # tid 1: LUN1 512 MiB, LUN2 256 MiB
T_SECOND=$P:tgt.second    # tid 2: LUN1 128 MiB
T_CHAP=$P:tgt.chap        # tid 3: LUN1 512 MiB, one-way CHAP
T_MUTUAL=$P:tgt.mutual    # tid 4: LUN1 512 MiB, mutual CHAP
T_KILL=$P:tgt.kill        # tid 5: LUN1 512 MiB (kill-restart)
T_DIGEST=$P:tgt.digest    # tid 6: LUN1 512 MiB, CRC32C header and data digests
CHAP_USER=guest-user CHAP_SECRET=guest-secret-0123
MUTUAL_USER=target-user MUTUAL_SECRET=target-secret-4567

log() { printf '[tgt-ref] %s\n' "$*" >&2; }
die() { printf '[tgt-ref] ERROR: %s\n' "$*" >&2; exit 2; }

tgtadm_() { tgtadm -C "$CPORT" --lld iscsi "$@"; }
# alive PID: running and not a zombie (a tgtd started by an earlier hook is
# re-parented and may never be reaped)
alive() { [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

start_tgtd() { # STATE: starts tgtd, records its PID in $STATE/tgtd.pid
  local state=$1 i
  tgtd -f -C "$CPORT" --iscsi "portal=127.0.0.1:$PORT" </dev/null >>"$state/tgtd.log" 2>&1 &
  echo $! > "$state/tgtd.pid"
  disown $! 2>/dev/null || true
  for i in $(seq 100); do
    tgtadm_ --op show --mode sys >/dev/null 2>&1 && return 0
    alive "$(cat "$state/tgtd.pid")" || break
    sleep 0.1
  done
  tail -5 "$state/tgtd.log" >&2
  die "tgtd did not come up on 127.0.0.1:$PORT (control port $CPORT)"
}

configure_tgt() { # STATE: targets, LUNs, accounts (idempotent images)
  local state=$1
  tgtadm_ --op new --mode target --tid 1 -T "$T_PLAIN"
  tgtadm_ --op new --mode logicalunit --tid 1 --lun 1 -b "$state/plain1.img"
  tgtadm_ --op new --mode logicalunit --tid 1 --lun 2 -b "$state/plain2.img"
  tgtadm_ --op new --mode target --tid 2 -T "$T_SECOND"
  tgtadm_ --op new --mode logicalunit --tid 2 --lun 1 -b "$state/second1.img"
  tgtadm_ --op new --mode target --tid 3 -T "$T_CHAP"
  tgtadm_ --op new --mode logicalunit --tid 3 --lun 1 -b "$state/chap1.img"
  tgtadm_ --op new --mode target --tid 4 -T "$T_MUTUAL"
  tgtadm_ --op new --mode logicalunit --tid 4 --lun 1 -b "$state/mutual1.img"
  tgtadm_ --op new --mode target --tid 5 -T "$T_KILL"
  tgtadm_ --op new --mode logicalunit --tid 5 --lun 1 -b "$state/kill1.img"
  tgtadm_ --op new --mode target --tid 6 -T "$T_DIGEST"
  tgtadm_ --op new --mode logicalunit --tid 6 --lun 1 -b "$state/digest1.img"
  # tgt offers no digests unless told to (it answers None to CRC32C)
  tgtadm_ --op update --mode target --tid 6 -n HeaderDigest -v CRC32C,None
  tgtadm_ --op update --mode target --tid 6 -n DataDigest -v CRC32C,None
  for tid in 1 2 3 4 5 6; do tgtadm_ --op bind --mode target --tid "$tid" -I ALL; done
  tgtadm_ --op new --mode account --user "$CHAP_USER" --password "$CHAP_SECRET"
  tgtadm_ --op new --mode account --user "$MUTUAL_USER" --password "$MUTUAL_SECRET"
  tgtadm_ --op bind --mode account --tid 3 --user "$CHAP_USER"
  tgtadm_ --op bind --mode account --tid 4 --user "$CHAP_USER"
  tgtadm_ --op bind --mode account --tid 4 --user "$MUTUAL_USER" --outgoing
}

# ------------------------------------------------------------ hook mode
# run.sh calls $GUEST_HOST_HOOK WORD; our hook is a wrapper that execs
# `tgt-reference.sh --hook WORD` with TGT_REF_STATE pointing at the state dir.
if [[ ${1:-} == --hook ]]; then
  word=${2:-}; state=${TGT_REF_STATE:?TGT_REF_STATE not set}
  case $word in
    kill-restart)
      pid=$(cat "$state/tgtd.pid")
      echo "kill -9 tgtd pid $pid"
      kill -9 "$pid"
      # a thread stuck in fdatasync() delays the exit: wait up to 60 s
      for _ in $(seq 600); do alive "$pid" || break; sleep 0.1; done
      alive "$pid" && { echo "tgtd $pid did not die within 60 s of SIGKILL"; exit 4; }
      sleep "${TGT_OUTAGE:-3}"
      start_tgtd "$state"
      configure_tgt "$state"
      echo "tgtd restarted as pid $(cat "$state/tgtd.pid") and reconfigured"
      ;;
    *) echo "unknown host action '$word'"; exit 3 ;;
  esac
  exit 0
fi

# ------------------------------------------------------------ main
command -v tgtd >/dev/null && command -v tgtadm >/dev/null || die "tgt is not installed (apt-get install tgt)"
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then die "127.0.0.1:$PORT is already in use (set TGT_PORT)"; fi
if tgtadm_ --op show --mode sys >/dev/null 2>&1; then die "a tgtd already answers on control port $CPORT (set TGT_CONTROL_PORT)"; fi

ALL=(fs-roundtrip fs-digest fs-chap fs-mutual chap-wrong multi-lun kill-restart fio)
if (($#)); then SCEN=("$@"); else SCEN=("${ALL[@]}"); fi
for s in "${SCEN[@]}"; do [[ " ${ALL[*]} " == *" $s "* ]] || die "unknown scenario $s (one of: ${ALL[*]})"; done

# images on tmpfs by default: fast, and kill -9 never waits for a disk flush
parent=${TGT_STATE_PARENT:-/dev/shm}
[[ -d $parent && -w $parent ]] || parent=/tmp
STATE=$(mktemp -d "$parent/ironlun-tgt-ref.XXXXXX")
export TGT_REF_STATE=$STATE TGT_PORT=$PORT TGT_CONTROL_PORT=$CPORT
cleanup() {
  if [[ -f $STATE/tgtd.pid ]]; then
    pid=$(cat "$STATE/tgtd.pid")
    # tgtd ignores SIGTERM: ask it to exit, then kill -9 our PID if it is still there
    tgtadm_ --op delete --mode system >/dev/null 2>&1 || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do alive "$pid" || break; sleep 0.2; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null || true
  fi
  if [[ ${TGT_KEEP:-0} == 1 ]]; then log "kept $STATE"; else rm -rf "$STATE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for img in plain1:512M plain2:256M second1:128M chap1:512M mutual1:512M kill1:512M digest1:512M; do
  truncate -s "${img#*:}" "$STATE/${img%%:*}.img"
done
start_tgtd "$STATE"
configure_tgt "$STATE"
log "tgtd pid $(cat "$STATE/tgtd.pid") on 127.0.0.1:$PORT (control $CPORT), state $STATE"

printf '#!/bin/sh\nexec %q --hook "$1"\n' "$HERE/tgt-reference.sh" > "$STATE/hook"
chmod +x "$STATE/hook"

naa() { printf 'naa.60000000000000000e%010x%04x' "$1" "$2"; }   # tgt's NAA for tid, lun
G=10.0.2.2:$PORT
S=$HERE/scenarios
results=(); pass=0; failn=0
for s in "${SCEN[@]}"; do
  case $s in
    fs-roundtrip) args=("$S/fs-roundtrip.sh" TARGET_PORTAL=$G TARGET_IQN=$T_PLAIN) ;;
    fs-digest)    args=("$S/fs-roundtrip.sh" SCENARIO_NAME=fs-digest TARGET_PORTAL=$G TARGET_IQN=$T_DIGEST
                        DIGEST=crc32c) ;;
    fs-chap)      args=("$S/fs-roundtrip.sh" SCENARIO_NAME=fs-chap TARGET_PORTAL=$G TARGET_IQN=$T_CHAP
                        AUTH=chap CHAP_USER=$CHAP_USER CHAP_SECRET=$CHAP_SECRET FS_FILES=${FS_SMALL_FILES:-16}) ;;
    fs-mutual)    args=("$S/fs-roundtrip.sh" SCENARIO_NAME=fs-mutual TARGET_PORTAL=$G TARGET_IQN=$T_MUTUAL
                        AUTH=mutual CHAP_USER=$CHAP_USER CHAP_SECRET=$CHAP_SECRET
                        MUTUAL_USER=$MUTUAL_USER MUTUAL_SECRET=$MUTUAL_SECRET FS_FILES=${FS_SMALL_FILES:-16}) ;;
    chap-wrong)   args=("$S/chap-wrong.sh" TARGET_PORTAL=$G TARGET_IQN=$T_CHAP
                        CHAP_USER=$CHAP_USER CHAP_SECRET=$CHAP_SECRET "WRONG_IQN=$T_CHAP $T_MUTUAL") ;;
    multi-lun)    args=("$S/multi-lun.sh" TARGET_PORTAL=$G "TARGET_IQNS=$T_PLAIN $T_SECOND"
                        "EXPECT_DISKS=$T_PLAIN,1,536870912,$(naa 1 1);$T_PLAIN,2,268435456,$(naa 1 2);$T_SECOND,1,134217728,$(naa 2 1)") ;;
    kill-restart) args=("$S/kill-restart.sh" TARGET_PORTAL=$G TARGET_IQN=$T_KILL) ;;
    fio)          args=("$S/fio.sh" TARGET_PORTAL=$G TARGET_IQN=$T_PLAIN) ;;
  esac
  t0=$SECONDS
  set +e
  if [[ $s == kill-restart ]]; then
    GUEST_HOST_HOOK=$STATE/hook "$HERE/run.sh" "${args[@]}" > "$STATE/$s.out" 2>&1
  else
    "$HERE/run.sh" "${args[@]}" > "$STATE/$s.out" 2>&1
  fi
  rc=$?
  set -e
  line=$(grep -E '^(PASS|FAIL) ' "$STATE/$s.out" | tail -1)
  [[ -n $line ]] || line="FAIL $s (run.sh exit $rc, no verdict; see below)"
  if ((rc != 0)); then
    tail -40 "$STATE/$s.out" | sed 's/^/    | /'
    failn=$((failn + 1))
  else
    pass=$((pass + 1))
  fi
  echo "$line"
  results+=("$(printf '%-13s %4ss  %s' "$s" $((SECONDS - t0)) "${line%% *}")")
done
echo "---- tgt reference summary"
printf '%s\n' "${results[@]}"
echo "$pass passed, $failn failed"
((failn == 0))
