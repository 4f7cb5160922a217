#!/usr/bin/env bash
# Build the ironlun real-initiator test guest: a Debian kernel plus an initramfs
# holding busybox, open-iscsi, e2fsprogs, fio and multipath-tools (dm-multipath with
# the ALUA device handler), assembled from Debian packages
# only (apt-get download + dpkg-deb -x; nothing is installed on the host).
#
# Usage: scripts/guest/build.sh            (prints kernel=, initrd=, busybox= lines)
# Env:   IRONLUN_GUEST_CACHE   cache dir (default ~/.cache/ironlun/guest)
#        IRONLUN_GUEST_KERNEL_PKG   kernel image package (default: what
#                              linux-image-amd64 depends on)
#        GUEST_REBUILD=1       ignore a cached initramfs and rebuild it
#
# Everything is cached under $IRONLUN_GUEST_CACHE keyed by the package versions
# and this script's own hash, so a second run only resolves versions (seconds).
# Diagnostics go to stderr; stdout carries only the key=value result lines.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
CACHE=${IRONLUN_GUEST_CACHE:-$HOME/.cache/ironlun/guest}
DEBS=$CACHE/debs
XTRACT=$CACHE/extract

log() { printf '[guest-build] %s\n' "$*" >&2; }
die() { printf '[guest-build] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- host tools
need_tools=(apt-get apt-cache dpkg-deb gzip sha256sum find sort awk sed readelf)
missing=()
for t in "${need_tools[@]}"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
if ((${#missing[@]})); then
  if [[ " ${missing[*]} " == *" readelf "* && ${#missing[@]} -eq 1 && $(id -u) -eq 0 ]]; then
    log "readelf missing: installing binutils from Debian"
    apt-get install -y -q binutils >&2 || die "could not install binutils (needed for readelf)"
  else
    die "missing host tools: ${missing[*]} (Debian: apt-get install binutils dpkg apt gzip coreutils findutils)"
  fi
fi
mkdir -p "$DEBS" "$XTRACT" || die "cannot create cache dir $CACHE"
# one build at a time per cache
exec 8>"$CACHE/.lock"
command -v flock >/dev/null 2>&1 && flock 8

# ---------------------------------------------------------- package resolution
# Root packages; their library dependencies (lib*, zlib1g) are followed
# recursively. Only the shared objects that the shipped binaries actually need
# (ELF NEEDED closure) end up in the initramfs.
ROOT_PKGS=(busybox-static open-iscsi e2fsprogs fio libaio1 libgcc-s1 multipath-tools dmsetup)

apt_updated=0
apt_refresh() {
  ((apt_updated)) && return 1
  apt_updated=1
  [[ $(id -u) -eq 0 ]] || return 1
  log "package lists look stale or empty: running apt-get update"
  apt-get update -q >&2 || die "apt-get update failed"
}

# The resolution below costs several apt-cache runs; it is remembered per
# state of the apt lists (changed only by apt-get update) and of this script.
declare -A VER=()
order=()
FP=$( { ls -l --time-style=+%s /var/lib/apt/lists/ 2>/dev/null; sha256sum "$SELF";
        echo "${IRONLUN_GUEST_KERNEL_PKG:-}"; } | sha256sum | cut -c1-16)
RESOLVED=$CACHE/resolved-$FP
if [[ ${GUEST_REBUILD:-0} != 1 && -s $RESOLVED ]]; then
  KPKG=$(sed -n 's/^kernel //p' "$RESOLVED")
  while read -r p v; do VER[$p]=$v; order+=("$p"); done < <(grep -v '^kernel ' "$RESOLVED")
else
  # kernel image package
  KPKG=${IRONLUN_GUEST_KERNEL_PKG:-}
  if [[ -z $KPKG ]]; then
    for _ in 1 2; do
      KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/^ *Depends: linux-image-[0-9]/{print $2; exit}')
      [[ -n $KPKG ]] && break
      apt_refresh || break
    done
    [[ -n $KPKG ]] || die "cannot resolve the kernel package behind linux-image-amd64 (apt-cache depends linux-image-amd64 gave nothing; run apt-get update?)"
  fi

  # "pkg version" for every package, with BFS over Depends/Pre-Depends (libs only)
  resolve_level() { # args: packages; prints "pkg<TAB>version<TAB>deps..." lines
    apt-cache show --no-all-versions "$@" 2>/dev/null | awk '
      function flush() { if (p != "") print p "\t" v "\t" d; p=""; v=""; d="" }
      /^Package: /     { flush(); p=$2 }
      /^Version: /     { v=$2 }
      /^(Pre-)?Depends: / { sub(/^[^:]*: /, ""); d = d "," $0 }
      END { flush() }' || true
  }
  queue=("${ROOT_PKGS[@]}" "$KPKG")
  while ((${#queue[@]})); do
    todo=()
    for p in "${queue[@]}"; do [[ -z ${VER[$p]:-} ]] && todo+=("$p"); done
    ((${#todo[@]})) || break
    mapfile -t todo < <(printf '%s\n' "${todo[@]}" | sort -u)
    out=$(resolve_level "${todo[@]}")
    if [[ -z $out && $apt_updated -eq 0 ]]; then apt_refresh && continue; fi
    queue=()
    while IFS=$'\t' read -r p v deps; do
      [[ -n $p && -z ${VER[$p]:-} ]] || continue
      VER[$p]=$v; order+=("$p")
      [[ $p == "$KPKG" ]] && continue          # do not follow the kernel's deps
      while read -r d; do
        case $d in
          *-dev|*-doc|libc-bin|libc-l10n) ;;
          lib*|zlib1g) queue+=("$d") ;;
        esac
      done < <(tr ',' '\n' <<<"$deps" | sed 's/|.*//; s/(.*)//; s/:any//; s/[[:space:]]//g' | grep -v '^$' || true)
    done <<<"$out"
    for p in "${todo[@]}"; do
      if [[ -z ${VER[$p]:-} ]]; then
        case " ${ROOT_PKGS[*]} $KPKG " in
          *" $p "*) die "package $p has no installable candidate (apt-cache show $p); run apt-get update?" ;;
          *) log "note: dependency $p is virtual or unavailable; skipped (the ELF check below catches real gaps)"; VER[$p]=none ;;
        esac
      fi
    done
  done

  rm -f "$CACHE"/resolved-*
  { echo "kernel $KPKG"; for p in "${order[@]}"; do echo "$p ${VER[$p]}"; done; } > "$RESOLVED.tmp"
  mv "$RESOLVED.tmp" "$RESOLVED"
fi

manifest=$(for p in "${order[@]}"; do printf '%s=%s\n' "$p" "${VER[$p]}"; done | sort)
KEY=$( { printf '%s\n' "$manifest"; sha256sum "$SELF"; } | sha256sum | cut -c1-16)
OUT=$CACHE/base-$KEY

emit() {
  printf 'kernel=%s\ninitrd=%s\nbusybox=%s\nkey=%s\n' "$OUT/vmlinuz" "$OUT/initramfs.gz" "$OUT/busybox" "$KEY"
}
if [[ ${GUEST_REBUILD:-0} != 1 && -s $OUT/initramfs.gz && -s $OUT/vmlinuz && -x $OUT/busybox && -f $OUT/complete ]]; then
  log "cached guest $KEY ($KPKG ${VER[$KPKG]})"
  ln -sfn "base-$KEY" "$CACHE/latest"
  emit
  exit 0
fi

log "building guest $KEY: kernel $KPKG ${VER[$KPKG]}, ${#order[@]} packages"

# ------------------------------------------------------------------- download
deb_of() { # pkg -> cached .deb path (empty if absent)
  local p=$1 v=${VER[$1]} f
  v=${v//:/%3a}
  for f in "$DEBS/${p}_${v}_"*.deb; do [[ -s $f ]] && { echo "$f"; return 0; }; done
  return 0
}
need_dl=()
for p in "${order[@]}"; do
  [[ ${VER[$p]} == none ]] && continue
  [[ -n $(deb_of "$p") ]] || need_dl+=("$p=${VER[$p]}")
done
if ((${#need_dl[@]})); then
  log "downloading ${#need_dl[@]} packages into $DEBS"
  (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "${need_dl[@]}" >&2) \
    || die "apt-get download failed for: ${need_dl[*]}"
fi

# -------------------------------------------------------------------- extract
declare -A ROOT=()
for p in "${order[@]}"; do
  [[ ${VER[$p]} == none ]] && continue
  deb=$(deb_of "$p"); [[ -n $deb ]] || die "download of $p ${VER[$p]} did not produce a .deb in $DEBS"
  d=$XTRACT/$(basename "$deb" .deb)
  if [[ ! -f $d/.done ]]; then
    rm -rf "$d"; mkdir -p "$d"
    dpkg-deb -x "$deb" "$d" || die "dpkg-deb -x $deb failed"
    touch "$d/.done"
  fi
  ROOT[$p]=$d
done

# ------------------------------------------------------------------- staging
STAGE=$(mktemp -d "$CACHE/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
S=$STAGE/root
LIBDIR=/lib/x86_64-linux-gnu
mkdir -p "$S"/{bin,sbin,usr/bin,usr/sbin,lib64,proc,sys,dev,run,tmp,mnt,root,var/lib,etc/iscsi,etc/multipath,lib/modules,lib/multipath} "$S$LIBDIR"
ln -s ../lib "$S/usr/lib"        # one library dir for everything (no ld.so.cache needed)
chmod 1777 "$S/tmp"

# busybox + applet links
BB=${ROOT[busybox-static]}/bin/busybox
[[ -x $BB ]] || die "busybox-static did not contain bin/busybox"
cp "$BB" "$S/bin/busybox"
while read -r a; do
  [[ $a == bin/busybox || -e $S/$a || -L $S/$a ]] && continue
  mkdir -p "$S/$(dirname "$a")"
  ln -s /bin/busybox "$S/$a"
done < <("$BB" --list-full)

# real binaries (replace busybox applets of the same name)
put() { # src dst
  [[ -e $1 ]] || die "expected file $1 is missing from the extracted package"
  rm -f "$2"; mkdir -p "$(dirname "$2")"; cp -L "$1" "$2"
}
OI=${ROOT[open-iscsi]}; E2=${ROOT[e2fsprogs]}; FIO=${ROOT[fio]}
put "$OI/sbin/iscsid" "$S/sbin/iscsid"
put "$OI/sbin/iscsiadm" "$S/sbin/iscsiadm"
put "$OI/sbin/iscsi-iname" "$S/sbin/iscsi-iname"
for b in mke2fs e2fsck dumpe2fs tune2fs; do put "$E2/sbin/$b" "$S/sbin/$b"; done
for l in mkfs.ext4:mke2fs mkfs.ext2:mke2fs fsck.ext4:e2fsck; do
  rm -f "$S/sbin/${l%%:*}"; ln -s "${l#*:}" "$S/sbin/${l%%:*}"
done
put "$E2/etc/mke2fs.conf" "$S/etc/mke2fs.conf"
put "$FIO/usr/bin/fio" "$S/usr/bin/fio"
# dm-multipath userspace (no udev in the guest: see scenarios/multipath-failover.sh)
MP=${ROOT[multipath-tools]}
for b in multipath multipathd; do put "$MP/sbin/$b" "$S/sbin/$b"; done
put "${ROOT[dmsetup]}/sbin/dmsetup" "$S/sbin/dmsetup"
# path checkers and prioritizers are dlopen()ed from /lib/multipath
MP_PLUGINS=(libchecktur.so libcheckdirectio.so libcheckreadsector0.so libprioalua.so libprioconst.so libpriosysfs.so)
for l in "${MP_PLUGINS[@]}"; do put "$MP/lib/multipath/$l" "$S/lib/multipath/$l"; done

# iscsid.conf: Debian's defaults, but never try to start iscsid via systemctl
sed 's|^iscsid.startup = .*|iscsid.startup = /bin/true|' "$OI/etc/iscsi/iscsid.conf" > "$S/etc/iscsi/iscsid.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$S/etc/passwd"
printf 'root:x:0:\n' > "$S/etc/group"
printf '127.0.0.1 localhost\n' > "$S/etc/hosts"

# ----------------------------------------------------- shared library closure
# index soname -> file, first hit in BFS order wins
declare -A LIBIDX=()
for p in "${order[@]}"; do
  [[ ${VER[$p]} == none || $p == "$KPKG" ]] && continue
  while read -r f; do
    n=${f##*/}
    [[ -z ${LIBIDX[$n]:-} ]] && LIBIDX[$n]=$f
  done < <(find "${ROOT[$p]}" \( -type f -o -type l \) -name '*.so*' \
             \( -path '*/lib/*' -o -path '*/lib64/*' \) 2>/dev/null | sort)
done
ldso=${LIBIDX[ld-linux-x86-64.so.2]:-}
[[ -n $ldso ]] || die "libc6 did not provide ld-linux-x86-64.so.2"
cp -L "$ldso" "$S$LIBDIR/ld-linux-x86-64.so.2"
ln -s "$LIBDIR/ld-linux-x86-64.so.2" "$S/lib64/ld-linux-x86-64.so.2"

declare -A HAVE=([ld-linux-x86-64.so.2]=1)
work=("$S/sbin/iscsid" "$S/sbin/iscsiadm" "$S/sbin/iscsi-iname" "$S/sbin/mke2fs" "$S/sbin/e2fsck"
      "$S/sbin/dumpe2fs" "$S/sbin/tune2fs" "$S/usr/bin/fio"
      "$S/sbin/multipath" "$S/sbin/multipathd" "$S/sbin/dmsetup")
for l in "${MP_PLUGINS[@]}"; do work+=("$S/lib/multipath/$l"); done
# dlopen()ed by glibc (pthread_cancel / unwinding): not visible as NEEDED
for extra in libgcc_s.so.1; do
  [[ -n ${LIBIDX[$extra]:-} ]] || die "library $extra not found in the downloaded packages"
  cp -L "${LIBIDX[$extra]}" "$S$LIBDIR/$extra"; HAVE[$extra]=1; work+=("$S$LIBDIR/$extra")
done
unresolved=()
while ((${#work[@]})); do
  f=${work[0]}; work=("${work[@]:1}")
  while read -r need; do
    [[ -n $need && -z ${HAVE[$need]:-} ]] || continue
    src=${LIBIDX[$need]:-}
    if [[ -z $src ]]; then unresolved+=("$need (needed by ${f#$S})"); HAVE[$need]=missing; continue; fi
    cp -L "$src" "$S$LIBDIR/$need"
    HAVE[$need]=1; work+=("$S$LIBDIR/$need")
  done < <(readelf -d "$f" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done
((${#unresolved[@]} == 0)) || die "unresolved shared libraries (add the providing package to ROOT_PKGS): ${unresolved[*]}"
log "$(( ${#HAVE[@]} )) shared objects copied"

# -------------------------------------------------------------- kernel modules
K=${ROOT[$KPKG]}
KVER=$(ls "$K/lib/modules" | head -1)
[[ -n $KVER && -d $K/lib/modules/$KVER/kernel ]] || die "$KPKG has no lib/modules/<version>/kernel"
VMLINUZ=$K/boot/vmlinuz-$KVER
[[ -s $VMLINUZ ]] || die "$KPKG has no boot/vmlinuz-$KVER"
KM=$K/lib/modules/$KVER
if [[ ! -s $KM/modules.dep ]]; then  # Debian generates modules.dep in postinst
  log "running busybox depmod for $KVER (once)"
  "$BB" depmod -b "$K" "$KVER" || die "busybox depmod failed on $KM"
fi
# Modules the guest loads, in this order after dependency expansion. Optional
# ones (prefix ?) may fail to load (e.g. crc32c-intel without SSE4.2).
WANT_MODULES=(configfs virtio_pci virtio_net ?e1000 scsi_mod sd_mod ?sg crc32c_generic ?crc32c-intel
              libcrc32c crct10dif_generic scsi_transport_iscsi libiscsi libiscsi_tcp iscsi_tcp
              jbd2 mbcache ext4 dm-mod dm-multipath dm-round-robin dm-service-time scsi_dh_alua)
declare -A MPATH=()
while IFS= read -r line; do
  m=${line%%:*}; n=${m##*/}; n=${n%.ko*}; MPATH[${n//-/_}]=$m
done < "$KM/modules.dep"
declare -A MDONE=()
MORDER=(); MOPT=()
add_mod() { # name(normalized) optional-flag
  local n=$1 opt=$2 rel deps d dn
  [[ -n ${MDONE[$n]:-} ]] && return 0
  MDONE[$n]=1
  rel=${MPATH[$n]:-}
  if [[ -z $rel ]]; then
    if grep -q "/${1//_/[-_]}\.ko" "$KM/modules.builtin" 2>/dev/null; then return 0; fi
    [[ $opt == 1 ]] && { log "note: optional module $n not found"; return 0; }
    die "kernel module $n is neither a module nor built-in in $KVER"
  fi
  deps=$(grep -m1 "^$rel:" "$KM/modules.dep" | cut -d: -f2-)
  for d in $deps; do dn=${d##*/}; dn=${dn%.ko*}; add_mod "${dn//-/_}" 0; done
  MORDER+=("$rel"); MOPT+=("$opt")
}
for w in "${WANT_MODULES[@]}"; do
  opt=0; [[ $w == \?* ]] && { opt=1; w=${w#\?}; }
  add_mod "${w//-/_}" "$opt"
done
SM=$S/lib/modules/$KVER
mkdir -p "$SM"
: > "$S/etc/modules.load"
for i in "${!MORDER[@]}"; do
  rel=${MORDER[$i]}
  mkdir -p "$SM/$(dirname "$rel")"
  cp "$KM/$rel" "$SM/$rel"
  printf '%s %s\n' "${MOPT[$i]}" "$rel" >> "$S/etc/modules.load"
done
cp "$KM/modules.builtin" "$KM/modules.order" "$SM/" 2>/dev/null || true
"$BB" depmod -b "$S" "$KVER" || die "busybox depmod failed on the staged modules"
log "${#MORDER[@]} kernel modules staged for $KVER"

# ----------------------------------------------------------------------- init
cat > "$S/init" <<'INIT'
#!/bin/busybox sh
# ironlun guest init: mount, load modules, network, iscsid, /scenario.sh, poweroff
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=dumb
mkdir -p /dev/pts /dev/shm
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock/iscsi /var/lib/iscsi /etc/iscsi/nodes /etc/iscsi/send_targets /etc/iscsi/ifaces
ln -sf /proc/self/fd /dev/fd 2>/dev/null
echo "[init] ironlun guest, kernel $(uname -r)"
echo 4 > /proc/sys/kernel/printk  # keep the console readable; dmesg keeps the rest
while read -r opt rel; do
  out=$(insmod "/lib/modules/$(uname -r)/$rel" 2>&1) || {
    case $out in *"File exists"*) ;; *)
      if [ "$opt" = 1 ]; then echo "[init] optional module $rel not loaded: $out"
      else echo "[init] ERROR: insmod $rel: $out"; fi ;;
    esac
  }
done < /etc/modules.load
mount -t configfs configfs /sys/kernel/config 2>/dev/null || echo "[init] warning: configfs not mounted"

set -a; [ -f /env ] && . /env; set +a
SCENARIO_NAME=${SCENARIO_NAME:-scenario}

# network: QEMU user-mode networking defaults
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  ip addr add 10.0.2.15/24 dev eth0
  ip link set eth0 up
  ip route add default via 10.0.2.2
else
  echo "[init] ERROR: no eth0"
fi

echo "InitiatorName=${INITIATOR_NAME:-iqn.2026-11.io.ironlun:guest-$SCENARIO_NAME}" > /etc/iscsi/initiatorname.iscsi
iscsid -f -d "${ISCSID_DEBUG:-0}" >/run/iscsid.log 2>&1 &
i=0; while [ ! -e /run/iscsid.pid ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done

rc=99
if [ -f /scenario.sh ]; then
  echo "[init] running scenario $SCENARIO_NAME"
  cd /tmp
  sh /scenario.sh
  rc=$?
else
  echo "[init] ERROR: no /scenario.sh in the initramfs"
fi
cd /
sync
echo "SCENARIO-EXIT $rc"
poweroff -f
INIT
chmod 755 "$S/init"

# ------------------------------------------------------------------- archive
log "creating initramfs"
mkdir -p "$STAGE/out"
(cd "$S" && find . -mindepth 1 | LC_ALL=C sort | "$BB" cpio -o -H newc -R 0:0 2>/dev/null) \
  | gzip -6 > "$STAGE/out/initramfs.gz" || die "cpio/gzip of the initramfs failed"
# pad to 512 bytes so appended archives start aligned
sz=$(stat -c %s "$STAGE/out/initramfs.gz"); pad=$(( (512 - sz % 512) % 512 ))
((pad)) && head -c "$pad" /dev/zero >> "$STAGE/out/initramfs.gz"
cp "$VMLINUZ" "$STAGE/out/vmlinuz"
cp "$BB" "$STAGE/out/busybox"
printf '%s\n' "$manifest" > "$STAGE/out/manifest"
touch "$STAGE/out/complete"
rm -rf "$OUT"
mv "$STAGE/out" "$OUT"
ln -sfn "base-$KEY" "$CACHE/latest"
log "guest ready: $OUT ($(du -h "$OUT/initramfs.gz" | cut -f1) initramfs)"
# keep the three newest builds
ls -dt "$CACHE"/base-* 2>/dev/null | tail -n +4 | while read -r old; do rm -rf "$old"; done
emit
