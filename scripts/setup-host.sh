#!/usr/bin/env bash
# Installs the Debian packages boxbench's tests and peers need. Idempotent: a package already
# installed is left alone, and apt's lists are refreshed only when something is missing.
set -euo pipefail

# busybox-static: the guest rootfs (the image builder downloads its .deb too); cpio: initramfs checks;
# crun, runc, podman, docker.io: the real container peers; gcc/binutils/make: boxbench's own guest;
# linux-source-6.1, bison, flex, bc, libelf-dev, xz-utils, patch: the micro-VM kernel;
# mmdebstrap, e2fsprogs: the full-OS VM disk; fonts-dejavu-core: report plots; chromium: the
# report's rendering test.
packages=(busybox-static cpio crun runc podman docker.io gcc binutils make linux-source-6.1 bison flex bc
          libelf-dev xz-utils patch mmdebstrap e2fsprogs fonts-dejavu-core chromium)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# QEMU: these machines ship a newer qemu-utils that bookworm's qemu-system-x86 conflicts with, so both
# come from the configured bookworm release together (no extra apt source).
qemu_missing=0
dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed" || qemu_missing=1

# The image builder fetches .debs with `apt-get download`, which needs apt's lists even when every
# package above is installed: refresh them when there are none.
lists_empty=0
compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || lists_empty=1

if [ ${#missing[@]} -gt 0 ] || [ $qemu_missing -eq 1 ] || [ $lists_empty -eq 1 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup-host: installing ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    if [ $qemu_missing -eq 1 ]; then
        echo "setup-host: installing qemu-system-x86"
        if ! apt-get install -y -qq --no-install-recommends qemu-system-x86; then
            apt-get install -y -qq --no-install-recommends --allow-downgrades qemu-system-x86 qemu-utils/bookworm
        fi
    fi
fi
echo "setup-host: packages ready"
