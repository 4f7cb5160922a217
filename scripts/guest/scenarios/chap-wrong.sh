#!/bin/sh
# chap-wrong: a CHAP session to TARGET_IQN is logged in and doing I/O; a login
# to each of WRONG_IQN (space separated; default: the same target, through a
# second iface) with a wrong
# CHAP secret must fail with iscsiadm exit code 24 (authorization failure); the
# first session must still read and write correctly afterwards.
# /env: TARGET_PORTAL, TARGET_IQN, CHAP_USER, CHAP_SECRET, optional WRONG_IQN,
#       WRONG_SECRET (default: CHAP_SECRET with "-wrong" appended)
. /harness.sh
IQN=${TARGET_IQN:?TARGET_IQN missing in /env}
WRONG=${WRONG_IQN:-$IQN}
ALLT=$(printf '%s\n' "$IQN" $WRONG | sort -u | tr '\n' ' ')
BAD=${WRONG_SECRET:-${CHAP_SECRET:-x}-wrong}

# shellcheck disable=SC2086
discover $ALLT
node_new "$IQN"
node_auth "$IQN" chap
login_ok "$IQN"
first_disk "$IQN"; DEV=$DISK
must 300 mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 "/dev/$DEV"
must 60 mount -t ext4 "/dev/$DEV" "$MNT"
write_files "$MNT" a 4 4
timeout 120 sha256sum "$MNT"/a* > /tmp/sums || fail "checksumming failed"

# I/O on the good session while the bad login is attempted
log "background writer on the good session"
( write_files "$MNT" b 8 4; timeout 120 sha256sum "$MNT"/b* > /tmp/sums.b ) &
bg=$!
sleep 1
must 30 iscsiadm -m iface -I wrongif -o new >/dev/null
for w in $WRONG; do
  node_new "$w" wrongif
  node_auth "$w" chap wrongif "$BAD"
  log "login to $w with a wrong CHAP secret (expect iscsiadm exit 24)"
  login "$w" wrongif; rc=$?
  log "wrong-secret login to $w: iscsiadm exit $rc"
  [ $rc -eq 24 ] || fail "wrong-secret login to $w gave iscsiadm exit $rc, expected 24 (authorization failure)"
  n=$(timeout 10 iscsiadm -m session 2>/dev/null | grep -c .)
  [ "$n" -eq 1 ] || fail "expected exactly 1 session after the failed login, found $n"
  timeout 30 iscsiadm -m node -T "$w" -p "$PORTAL" -I wrongif -o delete >/dev/null 2>&1
done

wait $bg || fail "background writes on the good session failed"
cat /tmp/sums.b >> /tmp/sums
write_files "$MNT" c 2 4            # writes after the failed login
timeout 120 sha256sum "$MNT"/c* >> /tmp/sums || fail "checksumming failed"
must 60 sync
umount_ok "$MNT"
drop_caches
must 60 mount -t ext4 -o ro "/dev/$DEV" "$MNT"
out=$(timeout 120 sha256sum -c /tmp/sums 2>&1) || { echo "$out" | grep -v ': OK$'; fail "checksum mismatch on the good session"; }
log "good session: $(grep -c . /tmp/sums) files verified"
umount_ok "$MNT"
out=$(timeout 120 e2fsck -fn "/dev/$DEV" 2>&1) || { echo "$out"; fail "e2fsck -fn reported problems"; }
logout_ok "$IQN"
log "chap-wrong OK in $(elapsed)s"
