#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when they are missing.
set -euo pipefail

SUDO=
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
    if [[ $updated -eq 0 ]]; then
        $SUDO apt-get update -qq
        updated=1
    fi
}
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

need=()
command -v iscsi-test-cu >/dev/null || need+=(libiscsi-bin)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
# tgt, the reference target (remote mirrors to tgt, the guest tier's reference runs, the
# benchmark) and iperf3 (the benchmark's loopback limit)
command -v tgtd >/dev/null || need+=(tgt)
command -v iperf3 >/dev/null || need+=(iperf3)
# libFuzzer (the fuzz smoke run) is C++, built by libfuzzer-sys
command -v c++ >/dev/null || need+=(g++)
# the real-initiator guest (scripts/guest/build.sh): readelf for the shared-library closure
command -v readelf >/dev/null || need+=(binutils)
# the disk-fault tests' FUSE file system (tests/support/faultfs.py), run by Debian's python3
/usr/bin/python3 -c 'import fusepy' 2>/dev/null || need+=(python3-fusepy fuse3)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "install-deps: installing ${need[*]}"
    apt_update
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# QEMU's iscsi:// driver. qemu-block-extra pins qemu-utils to its own version, which may be
# older than the preinstalled qemu-utils: install both at the driver's version. Installing
# qemu-system-x86 above pulls in qemu-block-extra as a recommendation and removes a newer
# qemu-utils on the way, so qemu-img is checked too.
if ! have_pkg qemu-block-extra || ! command -v qemu-img >/dev/null; then
    echo "install-deps: installing qemu-block-extra and the matching qemu-utils"
    apt_update
    v=$(apt-cache show qemu-block-extra | awk '/^Version/{print $2; exit}')
    $SUDO apt-get install -y -qq --allow-downgrades qemu-block-extra "qemu-utils=$v" >/dev/null
fi
echo "install-deps: ok"
