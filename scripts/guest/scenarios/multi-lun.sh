#!/bin/sh
# multi-lun: log in to every target in TARGET_IQNS (space separated), wait for
# the expected disks, print each disk's size and VPD 0x83 identifiers, and
# compare against EXPECT_DISKS.
# /env: TARGET_PORTAL, TARGET_IQNS, EXPECT_DISKS
#   EXPECT_DISKS = entries separated by ';', each "IQN,LUN,SIZE_BYTES,WWID":
#   WWID is compared with /sys/block/sdX/device/wwid (the kernel's pick from
#   VPD 0x83, e.g. naa.6001405...); '*' or empty skips the WWID check.
#   Every expected (IQN, LUN) must be a disk, and no other disk may appear.
. /harness.sh
IQNS=${TARGET_IQNS:?TARGET_IQNS missing in /env}
EXPECT=${EXPECT_DISKS:?EXPECT_DISKS missing in /env}

# shellcheck disable=SC2086
discover $IQNS
for iqn in $IQNS; do
  node_new "$iqn"
  login_ok "$iqn"
done

# expected disk count per target
for iqn in $IQNS; do
  n=$(echo "$EXPECT" | tr ';' '\n' | awk -F, -v t="$iqn" '$1==t' | wc -l)
  [ "$n" -gt 0 ] || fail "EXPECT_DISKS has no entry for $iqn"
  wait_disks "$iqn" "$n" 60
done
sleep 1  # late LUNs of a scan would show up now

bad=0
: > /tmp/seen
for iqn in $IQNS; do
  session_disks "$iqn" > /tmp/disks
  while read -r lun dev; do
    size=$(( $(cat /sys/block/$dev/size) * 512 ))
    wwid=$(tr -d '\000' < /sys/block/$dev/device/wwid 2>/dev/null | sed 's/[[:space:]]*$//')
    vpd=$(od -An -tx1 -v /sys/block/$dev/device/vpd_pg83 2>/dev/null | tr -d ' \n')
    model=$(cat /sys/block/$dev/device/vendor /sys/block/$dev/device/model 2>/dev/null | tr -s ' \n' ' ')
    echo "DISK target=$iqn lun=$lun dev=$dev size=$size model=[$model] wwid=[$wwid]"
    echo "     vpd_pg83=$vpd"
    echo "$iqn,$lun" >> /tmp/seen
    exp=$(echo "$EXPECT" | tr ';' '\n' | awk -F, -v t="$iqn" -v l="$lun" '$1==t && $2==l')
    if [ -z "$exp" ]; then
      echo "[scenario] MISMATCH: unexpected disk $iqn LUN $lun ($dev)"; bad=1; continue
    fi
    esize=$(echo "$exp" | cut -d, -f3)
    ewwid=$(echo "$exp" | cut -d, -f4-)
    if [ "$esize" != "$size" ]; then
      echo "[scenario] MISMATCH: $iqn LUN $lun size $size, expected $esize"; bad=1
    fi
    if [ -n "$ewwid" ] && [ "$ewwid" != "*" ] && [ "$ewwid" != "$wwid" ]; then
      echo "[scenario] MISMATCH: $iqn LUN $lun wwid [$wwid], expected [$ewwid]"; bad=1
    fi
    [ -n "$vpd" ] || { echo "[scenario] MISMATCH: $iqn LUN $lun has no VPD page 0x83"; bad=1; }
  done < /tmp/disks
done
# every expected disk seen?
echo "$EXPECT" | tr ';' '\n' | while IFS=, read -r iqn lun rest; do
  [ -n "$iqn" ] || continue
  grep -qxF "$iqn,$lun" /tmp/seen || { echo "[scenario] MISMATCH: expected disk $iqn LUN $lun not found"; echo x >> /tmp/missing; }
done
[ -f /tmp/missing ] && bad=1
# identifiers must be unique across all disks
dups=$(for d in /sys/block/sd*/device/wwid; do [ -f "$d" ] && cat "$d"; echo; done | grep -v '^$' | sort | uniq -d)
[ -z "$dups" ] || { echo "[scenario] MISMATCH: duplicate wwid(s): $dups"; bad=1; }

[ $bad -eq 0 ] || fail "disk inventory does not match EXPECT_DISKS"
for iqn in $IQNS; do logout_ok "$iqn"; done
log "multi-lun OK: $(wc -l < /tmp/seen) disks match"
