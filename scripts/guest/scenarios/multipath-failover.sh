#!/bin/sh
# multipath-failover: dm-multipath over the two servers of an ironlun HA pair.
# The guest logs in to the same target through portal A (TARGET_PORTAL, port
# group 1, active/optimized) and portal B (TARGET_PORTAL_B, port group 2,
# standby), multipathd builds one map (one WWID, two paths, grouped by ALUA
# priority), and an ext4 filesystem on /dev/mapper/<wwid> gets MP_FILES files of
# MP_FILE_MB MiB copied onto it (dd conv=fsync, md5sums). After MP_FAILOVER_AT
# files the host performs a planned Failover (HOST-ACTION failover): A's port
# goes transitioning, then standby, B's active/optimized. The copy must finish
# without an I/O error reaching the filesystem; the map must have moved to B;
# every file verifies and e2fsck -fn is clean. Then HOST-ACTION failback while
# the files are read back (the read may end before the failback does): the map
# returns to A, everything verifies again, more files are written through A,
# verified, and e2fsck -fn is clean.
#
# There is no udev in the guest: multipathd finds the paths by enumerating
# sysfs through libudev, which only lists devices that have a udev database
# entry, so the scenario writes a minimal one (/run/udev/data/b<maj>:<min>,
# "I:" = initialized) for the two path devices. With uid_attribute "" the WWID
# comes from sysfs (VPD page 0x83), not from a udev property. No uevents reach
# multipathd; it follows the paths with its checker (tur) and prioritizer (alua,
# REPORT TARGET PORT GROUPS) and the kernel's dm events. /dev/mapper/<name> is
# made with dmsetup mknodes.
#
# /env: TARGET_PORTAL, TARGET_PORTAL_B, TARGET_IQN, optional MP_FILES (64),
#       MP_FILE_MB (2), MP_FAILOVER_AT (40), MP_AFTER_FILES (8),
#       REPLACEMENT_TIMEOUT (5)
. /harness.sh
IQN=${TARGET_IQN:?TARGET_IQN missing in /env}
PA=${TARGET_PORTAL:?TARGET_PORTAL missing in /env}
PB=${TARGET_PORTAL_B:?TARGET_PORTAL_B missing in /env}
NF=${MP_FILES:-64}
MB=${MP_FILE_MB:-2}
AT=${MP_FAILOVER_AT:-40}
NA=${MP_AFTER_FILES:-8}
RT=${REPLACEMENT_TIMEOUT:-5}

mp_diag() {
  echo "----- multipath state"
  for _d in ${DA:-} ${DB:-}; do
    echo "$_d: access_state=$(cat /sys/block/$_d/device/access_state 2>/dev/null)" \
      "dh_state=$(cat /sys/block/$_d/device/dh_state 2>/dev/null) stat=$(cat /sys/block/$_d/stat 2>/dev/null)"
  done
  timeout 10 multipathd show topology 2>&1
  timeout 10 multipathd show paths format "%d %g %p %t %T %o" 2>&1
  timeout 10 dmsetup table 2>&1; timeout 10 dmsetup status 2>&1
  echo "----- multipathd log (tail, without the checker's routine lines)"
  grep -v -E 'tur state = |checker timeout|reported target port group|: aas = |alua prio = ' /run/multipathd.log 2>/dev/null | tail -60
  echo "----- dmesg (multipath and ALUA)"
  dmesg | grep -E 'multipath|alua|access state|Not Ready|I/O error|EXT4' | tail -40
}
DIAG_EXTRA=mp_diag

# ------------------------------------------------------------ two sessions
discover "$IQN"
for p in "$PA" "$PB"; do
  PORTAL=$p
  node_new "$IQN"
  # multipath handles the failover: give up on a dead session quickly
  node_set "$IQN" node.session.timeo.replacement_timeout "$RT"
  login_ok "$IQN"
done
PORTAL=$PA
portal_disk "$IQN" "$PA"; DA=$DISK
portal_disk "$IQN" "$PB"; DB=$DISK
[ "$DA" != "$DB" ] || fail "one disk for both portals ($DA)"
state() { cat "/sys/block/$1/device/access_state" 2>/dev/null; }
for d in "$DA" "$DB"; do
  log "$d: wwid '$(cat /sys/block/$d/device/wwid)' handler $(cat /sys/block/$d/device/dh_state) ALUA state $(state $d)"
done
[ "$(cat /sys/block/$DA/device/wwid)" = "$(cat /sys/block/$DB/device/wwid)" ] || fail "the two paths have different wwids"
[ "$(cat /sys/block/$DA/device/dh_state)" = alua ] || fail "no ALUA device handler on $DA"
# wait_states DEV-A-STATE DEV-B-STATE TIMEOUT: the kernel's ALUA view (sysfs)
wait_states() {
  _n=0
  while [ "$(state $DA)" != "$1" ] || [ "$(state $DB)" != "$2" ]; do
    _n=$((_n+1)); [ $_n -gt $(( $3 * 5 )) ] && fail "ALUA states $DA=$(state $DA) $DB=$(state $DB), expected $1 and $2"
    sleep 0.2
  done
}
wait_states active/optimized standby 30

# -------------------------------------------------------------- multipathd
mkdir -p /etc/multipath /run/udev/data
for d in "$DA" "$DB"; do
  printf 'I:%s000000\n' "$(cut -d. -f1 /proc/uptime)" > "/run/udev/data/b$(cat /sys/block/$d/dev)"
done
cat > /etc/multipath.conf <<'EOF'
defaults {
    user_friendly_names no
    find_multipaths no
    uid_attribute ""
    polling_interval 2
    max_polling_interval 4
}
devices {
    device {
        vendor "IRONLUN"
        product "VIRTUAL-DISK"
        path_grouping_policy group_by_prio
        detect_prio no
        prio alua
        hardware_handler "1 alua"
        path_checker tur
        no_path_retry queue
        failback immediate
    }
}
EOF
multipathd -d -s -v3 > /run/multipathd.log 2>&1 &
MAP=; i=0
while [ $i -lt 150 ]; do
  MAP=$(dmsetup ls --target multipath 2>/dev/null | awk '$2 ~ /^\(/ {print $1}')
  [ -n "$MAP" ] && timeout 10 multipath -ll "$MAP" 2>/dev/null | grep -q " $DB " && break
  sleep 0.2; i=$((i+1))
done
[ -n "$MAP" ] || fail "multipathd made no multipath map"
[ "$(echo "$MAP" | wc -l)" = 1 ] || fail "more than one multipath map: $MAP"
must 30 dmsetup mknodes "$MAP"
DEV=/dev/mapper/$MAP
[ -b "$DEV" ] || fail "no $DEV"
majmin() { cat "/sys/block/$1/dev"; }
table=$(dmsetup table "$MAP")
for d in "$DA" "$DB"; do
  echo "$table" | grep -q " $(majmin $d) " || fail "$d ($(majmin $d)) is not a path of $MAP: $table"
done
log "map $MAP ($(dmsetup info -c --noheadings -o uuid "$MAP")): $table"
timeout 20 multipathd show topology | sed 's/^/    /'

# the paths of the path group that dm-multipath is using (dmsetup status:
# features, handler, path groups with their state A/E/D and their paths)
active_paths() {
  dmsetup status "$MAP" | awk '{
    i = 4; i += $i + 1; i += $i + 1; npg = $i; i += 2
    for (g = 1; g <= npg; g++) {
      st = $i; i++; i += $i + 1; np = $i; i++; ns = $i; i++
      for (p = 1; p <= np; p++) { if (st == "A" && $(i+1) == "A") print $i; i += 3 + ns }
    }
  }'
}
# mp_prio DEV: the priority multipathd gives DEV (alua prioritizer: 50 active/optimized, 1 standby)
mp_prio() { timeout 10 multipathd show paths format "%d %p" 2>/dev/null | awk -v d="$1" '$1==d{print $2}'; }
# wait_map DEV-ACTIVE DEV-STANDBY TIMEOUT: multipathd gives DEV-ACTIVE the highest priority
wait_map() {
  _n=0
  while [ "$(mp_prio $1)" != 50 ] || [ "$(mp_prio $2)" != 1 ]; do
    _n=$((_n+1)); [ $_n -gt $3 ] && fail "multipathd priorities $1=$(mp_prio $1) $2=$(mp_prio $2), expected 50 and 1"
    sleep 1
  done
}
# io_count DEV FIELD: /sys/block/DEV/stat field (1 reads, 5 writes completed)
io_count() { awk -v f="$2" '{print $f}' "/sys/block/$1/stat"; }
wait_map "$DA" "$DB" 60

# ------------------------------------------------------ copy across failover
must 300 mkfs.ext4 -F -q -E lazy_itable_init=0,lazy_journal_init=0 "$DEV"
must 60 mount -t ext4 "$DEV" "$MNT"
[ "$(active_paths)" = "$(majmin $DA)" ] || fail "I/O before the failover did not use $DA's path group: $(active_paths)"
mkdir -p /tmp/src
i=1; while [ $i -le "$NF" ]; do
  dd if=/dev/urandom of=/tmp/src/f$i bs=1M count="$MB" 2>/dev/null || fail "no room for the source files in RAM"
  i=$((i+1))
done
(cd /tmp/src && md5sum f*) | sed "s|  |  $MNT/|" > /tmp/sums
wb0=$(io_count "$DB" 5)
echo 0 > /tmp/progress
(
  i=1
  while [ $i -le "$NF" ]; do
    timeout 300 dd if=/tmp/src/f$i of="$MNT/f$i" bs=1M conv=fsync 2>/tmp/dd.err \
      || { echo "[scenario] writer: f$i failed: $(cat /tmp/dd.err)"; exit 1; }
    echo $i > /tmp/progress
    i=$((i+1))
  done
) &
wr=$!
i=0; while [ "$(cat /tmp/progress)" -lt "$AT" ]; do
  i=$((i+1)); [ $i -gt 600 ] && fail "the copy did not reach $AT files in 120 s"
  kill -0 $wr 2>/dev/null || break
  sleep 0.2
done
t=$(elapsed)
log "$(cat /tmp/progress) of $NF files copied: HOST-ACTION failover"
rc=$(host_action failover 120)
at=$(cat /tmp/progress)
log "host hook failover finished with $rc after $(( $(elapsed) - t ))s, $at files copied"
[ "$rc" = 0 ] || fail "host action failover failed (hook exit $rc; 999 = no answer from run.sh; 127 = GUEST_HOST_HOOK not set)"
[ "$at" -lt "$NF" ] || fail "the copy ended before the failover did: nothing was written across it"
wait $wr || fail "the copy across the failover failed"
log "copy finished $(( $(elapsed) - t ))s after HOST-ACTION failover"
grep -q " $MNT ext4 rw," /proc/mounts || fail "the filesystem is no longer mounted read-write: $(grep " $MNT " /proc/mounts)"
errs=$(dmesg | grep -E 'EXT4-fs (error|warning)|Buffer I/O error|Remounting filesystem read-only|Aborting journal|I/O error, dev dm-')
[ -z "$errs" ] || fail "I/O errors reached the filesystem: $errs"
wait_states standby active/optimized 60
wait_map "$DB" "$DA" 60
must 120 sync
[ "$(active_paths)" = "$(majmin $DB)" ] || fail "after the failover dm-multipath does not use $DB's path group: $(active_paths)"
wb=$(( $(io_count "$DB" 5) - wb0 ))
[ $wb -gt 0 ] || fail "no writes went through $DB"
log "failover: $DB active/optimized, $DA standby, $wb writes through $DB; dm-multipath and ALUA events:"
dmesg | grep -E 'multipath: .*(Failing|Reinstating) path|Asymmetric access state changed|alua: port group' \
  | tail -12 | sed 's/^/    /'
timeout 20 multipathd show topology | sed 's/^/    /'
drop_caches
out=$(timeout 300 md5sum -c /tmp/sums 2>&1) || { echo "$out" | grep -v ': OK$'; fail "files copied across the failover do not verify"; }
log "all $NF files verify through $DB"
umount_ok "$MNT"
out=$(timeout 300 e2fsck -fn "$DEV" 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
[ $rc -eq 0 ] || fail "e2fsck -fn after the failover reported problems (rc=$rc)"

# ---------------------------------------------------- read across failback
must 60 mount -t ext4 "$DEV" "$MNT"
drop_caches
ra0=$(io_count "$DA" 1)
rm -f /tmp/verify.rc
( timeout 300 md5sum -c /tmp/sums > /tmp/verify.out 2>&1; echo $? > /tmp/verify.rc ) &
rd=$!
sleep 1
t=$(elapsed)
rc=$(host_action failback 150)
if [ -f /tmp/verify.rc ]; then how="the read-back had finished"; else how="the read-back was still running"; fi
log "host hook failback finished with $rc after $(( $(elapsed) - t ))s ($how)"
[ "$rc" = 0 ] || fail "host action failback failed (hook exit $rc)"
wait $rd || { grep -v ': OK$' /tmp/verify.out; fail "files read across the failback do not verify"; }
wait_states active/optimized standby 60
wait_map "$DA" "$DB" 60
drop_caches
out=$(timeout 300 md5sum -c /tmp/sums 2>&1) || { echo "$out" | grep -v ': OK$'; fail "files do not verify after the failback"; }
ra=$(( $(io_count "$DA" 1) - ra0 ))
[ $ra -gt 0 ] || fail "no reads went through $DA after the failback"
log "failback: $DA active/optimized, $DB standby, all $NF files verify ($ra reads through $DA)"

# ------------------------------------------------ writes after the failback
wa0=$(io_count "$DA" 5)
write_files "$MNT" after "$NA" "$MB"
timeout 120 md5sum "$MNT"/after* >> /tmp/sums || fail "checksumming failed"
must 120 sync
[ "$(active_paths)" = "$(majmin $DA)" ] || fail "after the failback dm-multipath does not use $DA's path group: $(active_paths)"
wa=$(( $(io_count "$DA" 5) - wa0 ))
[ $wa -gt 0 ] || fail "no writes went through $DA after the failback"
errs=$(dmesg | grep -E 'EXT4-fs (error|warning)|Buffer I/O error|Remounting filesystem read-only|Aborting journal|I/O error, dev dm-')
[ -z "$errs" ] || fail "I/O errors reached the filesystem: $errs"
drop_caches
out=$(timeout 300 md5sum -c /tmp/sums 2>&1) || { echo "$out" | grep -v ': OK$'; fail "files do not verify after writes through $DA"; }
umount_ok "$MNT"
out=$(timeout 300 e2fsck -fn "$DEV" 2>&1); rc=$?
echo "$out" | sed 's/^/    /'
[ $rc -eq 0 ] || fail "e2fsck -fn after the failback reported problems (rc=$rc)"
log "all $((NF + NA)) files verify, $wa writes through $DA"

# ------------------------------------------------------------------ cleanup
timeout 30 multipathd shutdown >/dev/null 2>&1
timeout 30 dmsetup remove "$MAP" || log "warning: dmsetup remove $MAP failed"
must 60 iscsiadm -m node -T "$IQN" --logout >/dev/null
log "multipath-failover OK in $(elapsed)s"
