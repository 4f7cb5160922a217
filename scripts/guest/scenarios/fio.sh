#!/bin/sh
# fio: raw-disk fio with O_DIRECT and libaio: sequential 1 MiB write and read,
# 4 KiB random write and read at iodepth 32, all checked with fio's verify
# (crc32c headers): each write job reads its data back and verifies it, and the
# read jobs verify what the write jobs left (seq-read the seq-write region,
# rand-read every block of the rand-write region once, in random order).
# /env: TARGET_PORTAL, TARGET_IQN, optional FIO_SIZE (64m), FIO_RAND_SIZE (16m),
#       DIGEST, AUTH...
. /harness.sh
IQN=${TARGET_IQN:?TARGET_IQN missing in /env}
SIZE=${FIO_SIZE:-64m}
RSIZE=${FIO_RAND_SIZE:-16m}

discover "$IQN"
node_new "$IQN"
node_auth "$IQN" "${AUTH:-none}"
node_digest "$IQN" "${DIGEST:-none}"
login_ok "$IQN"
first_disk "$IQN"; DEV=$DISK
log "fio on /dev/$DEV"

runfio() { # NAME ARGS...
  name=$1; shift
  log "fio job $name"
  timeout 240 fio --name="$name" --filename="/dev/$DEV" --direct=1 --ioengine=libaio \
      --group_reporting "$@" > "/tmp/fio-$name.out" 2>&1
  rc=$?
  grep -E 'IOPS=|^ *(READ|WRITE):|err=|verify|fio:' "/tmp/fio-$name.out" | grep -v 'err= 0' | sed "s/^ */    [$name] /"
  if [ $rc -ne 0 ] || grep -qiE 'verify failed|bad magic|crc32c: verify|io_u error|fio: .*error' "/tmp/fio-$name.out"; then
    cat "/tmp/fio-$name.out"
    fail "fio job $name failed (rc=$rc)"
  fi
}
runfio seq-write  --rw=write     --bs=1m --iodepth=8  --size="$SIZE" --verify=crc32c --do_verify=1 --verify_fatal=1
runfio seq-read   --rw=read      --bs=1m --iodepth=8  --size="$SIZE" --verify=crc32c --verify_fatal=1
runfio rand-write --rw=randwrite --bs=4k --iodepth=32 --size="$RSIZE" --offset="$SIZE" \
                  --verify=crc32c --do_verify=1 --verify_fatal=1
runfio rand-read  --rw=randread  --bs=4k --iodepth=32 --size="$RSIZE" --offset="$SIZE" \
                  --verify=crc32c --verify_fatal=1
logout_ok "$IQN"
log "fio OK in $(elapsed)s"
