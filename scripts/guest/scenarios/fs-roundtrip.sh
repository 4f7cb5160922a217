#!/bin/sh
# fs-roundtrip: discovery, login, mkfs.ext4, write FS_FILES x FS_FILE_MB MiB of
# random files (default 64 x 4 MiB = 256 MiB) with sha256 sums, sync, umount,
# logout; log in again, verify every checksum, e2fsck -fn must be clean.
# /env: TARGET_PORTAL, TARGET_IQN, optional DIGEST=crc32c, AUTH=none|chap|mutual
#       (CHAP_USER, CHAP_SECRET, MUTUAL_USER, MUTUAL_SECRET, CHAP_ALGS),
#       FS_FILES, FS_FILE_MB
. /harness.sh
IQN=${TARGET_IQN:?TARGET_IQN missing in /env}
FILES=${FS_FILES:-64}
MB=${FS_FILE_MB:-4}
log "fs-roundtrip: $IQN at $PORTAL, auth=${AUTH:-none} digest=${DIGEST:-none}, $FILES x $MB MiB"

discover "$IQN"
node_new "$IQN"
node_auth "$IQN" "${AUTH:-none}"
node_digest "$IQN" "${DIGEST:-none}"
login_ok "$IQN"
check_digest "$IQN" "${DIGEST:-none}"
first_disk "$IQN"; DEV=$DISK
log "disk /dev/$DEV: $(( $(cat /sys/block/$DEV/size) / 2048 )) MiB"

must 300 mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 "/dev/$DEV"
must 60 mount -t ext4 "/dev/$DEV" "$MNT"
t=$(elapsed)
log "writing $FILES files of $MB MiB"
write_files "$MNT" f "$FILES" "$MB"
timeout 300 sha256sum "$MNT"/f* > /tmp/sums || fail "checksumming failed"
must 120 sync
log "wrote $((FILES * MB)) MiB in $(( $(elapsed) - t ))s"
umount_ok "$MNT"
logout_ok "$IQN"

login_ok "$IQN"
check_digest "$IQN" "${DIGEST:-none}"
first_disk "$IQN"; DEV=$DISK
drop_caches
must 60 mount -t ext4 -o ro "/dev/$DEV" "$MNT"
t=$(elapsed)
n=$(ls "$MNT" | grep -c '^f')
[ "$n" -eq "$FILES" ] || fail "expected $FILES files after re-login, found $n"
out=$(timeout 300 sha256sum -c /tmp/sums 2>&1) || {
  echo "$out" | grep -v ': OK$'; fail "checksum mismatch after re-login"; }
log "verified $FILES checksums in $(( $(elapsed) - t ))s"
umount_ok "$MNT"
out=$(timeout 300 e2fsck -fn "/dev/$DEV" 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
[ $rc -eq 0 ] || fail "e2fsck -fn reported problems (rc=$rc)"
logout_ok "$IQN"
log "fs-roundtrip OK in $(elapsed)s"
