#!/bin/sh
# kill-restart: mount a filesystem, write + sync files with checksums, then keep
# writing while asking the host (HOST-ACTION kill-restart) to kill -9 the
# target and restart it. open-iscsi must reconnect (replacement_timeout
# REPLACEMENT_TIMEOUT, default 60 s) and the I/O must resume; afterwards the
# filesystem must be clean and every file (before and across the kill) verify.
# /env: TARGET_PORTAL, TARGET_IQN, optional REPLACEMENT_TIMEOUT, KR_FILES (16),
#       KR_FILE_MB (4)
. /harness.sh
IQN=${TARGET_IQN:?TARGET_IQN missing in /env}
RT=${REPLACEMENT_TIMEOUT:-60}
NF=${KR_FILES:-16}
MB=${KR_FILE_MB:-4}

discover "$IQN"
node_new "$IQN"
node_set "$IQN" node.session.timeo.replacement_timeout "$RT"
login_ok "$IQN"
first_disk "$IQN"; DEV=$DISK
must 300 mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 "/dev/$DEV"
must 60 mount -t ext4 "/dev/$DEV" "$MNT"
write_files "$MNT" pre "$NF" "$MB"
timeout 120 sha256sum "$MNT"/pre* > /tmp/sums.pre || fail "checksumming failed"
must 60 sync
log "$NF files written and synced before the kill"

# sources for the writes across the kill, in RAM
mkdir -p /tmp/src
i=1; while [ $i -le "$NF" ]; do
  dd if=/dev/urandom of=/tmp/src/post$i bs=1M count="$MB" 2>/dev/null; i=$((i+1)); done
(cd /tmp/src && sha256sum post*) | sed "s|  |  $MNT/|" > /tmp/sums.post

errs0=$(dmesg | grep -c 'detected conn error')
(
  i=1
  while [ $i -le "$NF" ]; do
    timeout $((RT + 120)) dd if=/tmp/src/post$i of="$MNT/post$i" bs=1M conv=fsync 2>/dev/null \
      || { echo "[scenario] writer: post$i failed"; exit 1; }
    i=$((i+1))
  done
  exit 0
) &
wr=$!
sleep 2
t=$(elapsed)
rc=$(host_action kill-restart $((RT + 90)))
log "host hook kill-restart finished with $rc after $(( $(elapsed) - t ))s"
[ "$rc" = 0 ] || fail "host action kill-restart failed (hook exit $rc; 999 = no answer from run.sh; 127 = GUEST_HOST_HOOK not set)"
wait $wr || fail "writes across the target restart failed"
log "writer finished $(( $(elapsed) - t ))s after HOST-ACTION"
errs=$(( $(dmesg | grep -c 'detected conn error') - errs0 ))
[ $errs -gt 0 ] || fail "no connection error seen: the kill did not interrupt the session"
dmesg | grep -E 'connection[0-9]+:[0-9]+: detected conn error' | tail -3
grep -E 'operational after recovery|is operational now' /run/iscsid.log | tail -2
must 120 sync
umount_ok "$MNT"
drop_caches
out=$(timeout 300 e2fsck -fn "/dev/$DEV" 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
[ $rc -eq 0 ] || fail "e2fsck -fn after the restart reported problems (rc=$rc)"
must 60 mount -t ext4 -o ro "/dev/$DEV" "$MNT"
out=$(timeout 300 sha256sum -c /tmp/sums.pre 2>&1) || { echo "$out" | grep -v ': OK$'; fail "files synced before the kill do not verify"; }
out=$(timeout 300 sha256sum -c /tmp/sums.post 2>&1) || { echo "$out" | grep -v ': OK$'; fail "files written across the kill do not verify"; }
log "all $((NF * 2)) files verify"
umount_ok "$MNT"
logout_ok "$IQN"
log "kill-restart OK in $(elapsed)s"
