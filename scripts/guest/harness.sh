# shellcheck shell=sh
# Helpers for guest scenarios (busybox sh). run.sh ships this file as
# /harness.sh next to /scenario.sh; scenarios start with `. /harness.sh`.
# Parameters come from /env (already exported by /init, sourced again here).

[ -f /env ] && { set -a; . /env; set +a; }
PORTAL=${TARGET_PORTAL:-10.0.2.2:3260}
MNT=/mnt/t
mkdir -p "$MNT"
T0=$(cut -d. -f1 /proc/uptime)

log() { echo "[scenario] $*"; }
elapsed() { echo $(( $(cut -d. -f1 /proc/uptime) - T0 )); }

diag() {
  echo "----- diagnostics (t=$(elapsed)s)"
  timeout 10 iscsiadm -m session -P3 2>&1 | head -60
  echo "----- dmesg (tail)"; dmesg | tail -40
  echo "----- iscsid log (tail)"; tail -30 /run/iscsid.log 2>/dev/null
  # a scenario's own diagnostics (a function name)
  [ -n "${DIAG_EXTRA:-}" ] && $DIAG_EXTRA
  echo "-----"
}
fail() { echo "[scenario] FAIL: $*"; diag; exit 1; }

# must TIMEOUT CMD...: run CMD under a timeout; fail the scenario if it fails
must() {
  _t=$1; shift
  timeout "$_t" "$@"; _rc=$?
  [ $_rc -eq 0 ] && return 0
  [ $_rc -eq 143 ] && fail "timed out after ${_t}s: $*"
  fail "rc=$_rc: $*"
}

# Discovery against $PORTAL; every IQN given must be listed. The discovered
# records (which carry the target's own view of its address, e.g. 127.0.0.1)
# are not stored: node records are created at $PORTAL with node_new.
discover() {
  log "discovery: sendtargets at $PORTAL"
  _out=$(timeout 60 iscsiadm -m discovery -t sendtargets -p "$PORTAL" -o nonpersistent 2>&1); _rc=$?
  echo "$_out" | sed 's/^/    /'
  [ $_rc -eq 0 ] || fail "discovery at $PORTAL failed (iscsiadm rc=$_rc)"
  for _iqn in "$@"; do
    echo "$_out" | awk '{print $2}' | grep -qxF "$_iqn" || fail "discovery did not list $_iqn"
  done
}

# node_new IQN [IFACE]: node record for IQN at $PORTAL (through IFACE)
node_new() {
  _if=${2:+-I $2}
  # shellcheck disable=SC2086
  must 30 iscsiadm -m node -o new -T "$1" -p "$PORTAL" $_if >/dev/null
}
# node_set IQN NAME VALUE [IFACE]
node_set() {
  _if=${4:+-I $4}
  # shellcheck disable=SC2086
  must 30 iscsiadm -m node -T "$1" -p "$PORTAL" $_if -o update -n "$2" -v "$3"
}
# node_auth IQN MODE(none|chap|mutual) [IFACE] [SECRET-override]
node_auth() {
  case $2 in
    none|"") return 0 ;;
    chap|mutual)
      [ -n "${CHAP_USER:-}" ] && [ -n "${CHAP_SECRET:-}" ] || fail "AUTH=$2 needs CHAP_USER and CHAP_SECRET"
      node_set "$1" node.session.auth.authmethod CHAP "$3"
      node_set "$1" node.session.auth.username "$CHAP_USER" "$3"
      node_set "$1" node.session.auth.password "${4:-$CHAP_SECRET}" "$3"
      if [ -n "${CHAP_ALGS:-}" ]; then node_set "$1" node.session.auth.chap_algs "$CHAP_ALGS" "$3"; fi
      if [ "$2" = mutual ]; then
        [ -n "${MUTUAL_USER:-}" ] && [ -n "${MUTUAL_SECRET:-}" ] || fail "AUTH=mutual needs MUTUAL_USER and MUTUAL_SECRET"
        node_set "$1" node.session.auth.username_in "$MUTUAL_USER" "$3"
        node_set "$1" node.session.auth.password_in "$MUTUAL_SECRET" "$3"
      fi ;;
    *) fail "unknown AUTH=$2 (none|chap|mutual)" ;;
  esac
}
# node_digest IQN crc32c|none
node_digest() {
  case ${2:-none} in
    none|None|"") return 0 ;;
    crc32c|CRC32C)
      node_set "$1" 'node.conn[0].iscsi.HeaderDigest' CRC32C
      node_set "$1" 'node.conn[0].iscsi.DataDigest' CRC32C ;;
    *) fail "unknown DIGEST=$2 (none|crc32c)" ;;
  esac
}
# login IQN [IFACE]: prints iscsiadm output, returns its exit code
login() {
  _if=${2:+-I $2}
  log "login to $1 at $PORTAL${2:+ via iface $2}"
  # shellcheck disable=SC2086
  _out=$(timeout 120 iscsiadm -m node -T "$1" -p "$PORTAL" $_if --login 2>&1); _rc=$?
  echo "$_out" | sed 's/^/    /'
  return $_rc
}
login_ok() {
  _if=${2:+-I $2}
  log "login to $1 at $PORTAL${2:+ via iface $2}"
  # shellcheck disable=SC2086
  _out=$(timeout 120 iscsiadm -m node -T "$1" -p "$PORTAL" $_if --login 2>&1); _rc=$?
  echo "$_out" | sed 's/^/    /'
  [ $_rc -eq 0 ] || fail "login to $1 failed (iscsiadm rc=$_rc)"
}
logout_ok() {
  log "logout from $1"
  must 60 iscsiadm -m node -T "$1" -p "$PORTAL" --logout >/dev/null
  # the SCSI devices go away with the session
  _i=0; while [ -n "$(session_of "$1")" ] && [ $_i -lt 100 ]; do sleep 0.2; _i=$((_i+1)); done
}

# session_of IQN: sysfs dir of the (first) session to IQN
session_of() {
  for _s in /sys/class/iscsi_session/session*; do
    [ -f "$_s/targetname" ] || continue
    [ "$(cat "$_s/targetname")" = "$1" ] && { echo "$_s"; return 0; }
  done
  return 0
}
# session_at IQN PORTAL: sysfs dir of the session to IQN through PORTAL
# (ADDRESS:PORT, as given to node_new), for several sessions to one target
session_at() {
  for _s in /sys/class/iscsi_session/session*; do
    [ -f "$_s/targetname" ] && [ "$(cat "$_s/targetname")" = "$1" ] || continue
    for _c in "$_s"/device/connection*/iscsi_connection/connection*; do
      [ "$(cat "$_c/persistent_address" 2>/dev/null):$(cat "$_c/persistent_port" 2>/dev/null)" = "$2" ] \
        && { echo "$_s"; return 0; }
    done
  done
  return 0
}
# session_disks IQN: "LUN DEV" lines for the block devices of IQN's session
session_disks() {
  session_dir_disks "$(session_of "$1")"
}
# session_dir_disks SESSION-DIR: the same for one session's sysfs dir
session_dir_disks() {
  _s=$1; [ -n "$_s" ] || return 0
  for _b in "$_s"/device/target*/*:*:*:*/block/*; do
    [ -e "$_b" ] || continue
    _hctl=$(basename "$(dirname "$(dirname "$_b")")")
    echo "${_hctl##*:} $(basename "$_b")"
  done | sort -n
}
# wait_disks IQN COUNT [TIMEOUT]: wait until IQN's session has COUNT disks
# with a non-zero size and a /dev node
wait_disks() {
  _n=0; _lim=$(( ${3:-60} * 5 ))
  while [ $_n -lt $_lim ]; do
    _ok=0
    for _d in $(session_disks "$1" | awk '{print $2}'); do
      [ -b "/dev/$_d" ] && [ "$(cat /sys/block/$_d/size 2>/dev/null || echo 0)" != 0 ] && _ok=$((_ok+1))
    done
    [ $_ok -ge "$2" ] && return 0
    sleep 0.2; _n=$((_n+1))
  done
  session_disks "$1"
  fail "timed out waiting for $2 disk(s) of $1"
}
# first_disk IQN: sets DISK to the device name (sdX) of the lowest LUN that is
# a disk (a variable, not stdout: fail inside $(...) would not stop the script)
first_disk() {
  wait_disks "$1" 1 "${2:-60}"
  DISK=$(session_disks "$1" | awk 'NR==1{print $2}')
  [ -n "$DISK" ] && [ -b "/dev/$DISK" ] || fail "no disk found for $1"
}

# portal_disk IQN PORTAL [TIMEOUT]: sets DISK to the lowest disk of the session
# to IQN through PORTAL (a standby ALUA path included: only its size is read)
portal_disk() {
  _n=0; _lim=$(( ${3:-60} * 5 )); DISK=
  while [ $_n -lt $_lim ]; do
    DISK=$(session_dir_disks "$(session_at "$1" "$2")" | awk 'NR==1{print $2}')
    [ -n "$DISK" ] && [ -b "/dev/$DISK" ] && [ "$(cat /sys/block/$DISK/size 2>/dev/null || echo 0)" != 0 ] && return 0
    sleep 0.2; _n=$((_n+1))
  done
  fail "timed out waiting for a disk of $1 through $2"
}

# session_param IQN NAME: negotiated value from iscsiadm -m session -P2
session_param() {
  _s=$(session_of "$1"); _sid=${_s##*session}
  timeout 10 iscsiadm -m session -r "$_sid" -P2 2>/dev/null | awk -v k="$2:" '$1==k{print $2; exit}'
}
check_digest() {
  case ${2:-none} in none|None|"") return 0 ;; esac
  _h=$(session_param "$1" HeaderDigest); _d=$(session_param "$1" DataDigest)
  log "negotiated HeaderDigest=$_h DataDigest=$_d"
  [ "$_h" = CRC32C ] && [ "$_d" = CRC32C ] || fail "digests not in effect (HeaderDigest=$_h DataDigest=$_d)"
}

# umount_ok DIR: umount, retrying while busy (busybox timeout's watcher process
# keeps the cwd of the command it guards for up to a second)
umount_ok() {
  _i=0
  while ! timeout 120 umount "$1" 2>/dev/null; do
    _i=$((_i+1))
    [ $_i -ge 20 ] && { timeout 60 umount "$1"; fail "cannot umount $1"; }
    sleep 0.5
  done
}

drop_caches() { must 120 sync; echo 3 > /proc/sys/vm/drop_caches; }

# write_files DIR PREFIX COUNT MB: COUNT files of MB MiB random data, fsync'd
write_files() {
  _i=1
  while [ $_i -le "$3" ]; do
    timeout 120 dd if=/dev/urandom of="$1/$2$_i" bs=1M count="$4" conv=fsync 2>/dev/null \
      || fail "writing $1/$2$_i failed"
    _i=$((_i+1))
  done
}

# host_action WORD [TIMEOUT]: ask run.sh to run the host hook and wait for
# `HOST-DONE WORD RC` on /dev/ttyS1. Prints RC (999 if no answer).
host_action() {
  rm -f /tmp/host-done
  ( stty raw -echo 2>/dev/null; timeout "${2:-150}" head -n1 > /tmp/host-done ) < /dev/ttyS1 &
  _rp=$!
  sleep 0.5
  # to the console, not stdout: callers capture our stdout
  printf '\nHOST-ACTION %s\n' "$1" > /dev/console
  wait $_rp
  _line=$(tr -d '\r' < /tmp/host-done 2>/dev/null)
  set -- $_line
  if [ "${1:-}" = HOST-DONE ] && [ -n "${3:-}" ]; then echo "$3"; else echo 999; fi
}
