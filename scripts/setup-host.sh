#!/usr/bin/env bash
# Installs the Debian packages boxbench, its peers and its tests use, then checks that every command
# it promises answers. Run as root on Debian (bookworm); safe to run concurrently (one run at a time).
#
#   scripts/setup-host.sh            install what is missing, then check every promised command
#   scripts/setup-host.sh --list     print each check, one a line: PACKAGE<TAB>COMMAND ARGS (no install)
#   scripts/setup-host.sh PKG...     also install these packages (the tests name one apt cannot install)
#
# Idempotent: a package already installed is left alone, apt's lists are refreshed only when something
# is missing (or there are none: `apt-get download`, which the image builder uses, needs them), and a
# second run installs nothing and says so. Nothing the machine had is removed: an install that apt
# would satisfy by removing a package is refused. A package apt cannot install stops the script with
# apt's last lines and the package's name; a promised command that does not answer stops it with one
# line naming the command and the package providing it. Both exit non-zero.
set -euo pipefail

# busybox-static: the guest rootfs (the image builder downloads its .deb too) and the container tests'
# host busybox; cpio: initramfs checks; crun, runc, runsc (gVisor), podman, docker.io: the real
# container peers; libseccomp-dev, pkg-config: building youki (below);
# gcc, binutils, make: boxbench's own guest; linux-source-6.1, bison, flex, bc, libelf-dev, xz-utils,
# patch: the micro-VM kernel; mmdebstrap, e2fsprogs: the full-OS VM disk; fonts-dejavu-core: report
# plots; chromium: the report's rendering test; iproute2: soak's network-namespace check;
# ansible-core, openssh-server, openssh-client: the fleet playbook (deploy/ansible/) and its test, which
# runs it over real SSH against sshd on loopback addresses; syslinux, syslinux-common, mtools, dosfstools,
# fdisk: the full-OS disk's bootable copy (SYSLINUX on a FAT boot partition, no loop device);
# systemd-container (systemd-nspawn), lxc: the system container peers booting the full-OS disk's tree.
packages=(busybox-static cpio crun runc runsc libseccomp-dev pkg-config podman docker.io gcc binutils make
          linux-source-6.1 bison flex bc libelf-dev xz-utils patch mmdebstrap e2fsprogs fonts-dejavu-core
          chromium iproute2 ansible-core openssh-server openssh-client syslinux syslinux-common mtools
          dosfstools fdisk systemd-container lxc)
# QEMU (the qemu-* peers, and qemu-img for the full-OS disk): qemu-system-x86 and qemu-utils must come
# from one release. These machines ship a newer qemu-utils (bookworm-backports) that bookworm's
# qemu-system-x86 conflicts with; asked for qemu-system-x86 alone, apt removes qemu-utils and qemu-img
# is gone. So both are installed together, pinned to one version (downgrading qemu-utils if need be).
qemu_packages=(qemu-system-x86 qemu-utils)
# youki, the Rust OCI runtime peer: not in Debian, built from the Rust registry into /usr/local/bin
# (12–24 minutes of cargo on 2 shared cores, once: a second run finds this version there and builds
# nothing). Its cgroup v1 and v2 managers, systemd driver and seccomp are features the crate leaves
# off by default; without v1 it cannot run a container on a hybrid or v1 host.
youki_version=0.7.0
youki_features=v1,v2,systemd,seccomp

# Every command (or file) the project runs, how to ask it to answer, and the package providing it.
# Format: PACKAGE<TAB>COMMAND ARGS...; a COMMAND of `test` checks a file.
checks=$(cat <<'EOF'
qemu-utils	qemu-img --version
qemu-system-x86	qemu-system-x86_64 --version
crun	crun --version
runc	runc --version
runsc	runsc --version
cargo:youki	youki --version
libseccomp-dev	test -f /usr/include/seccomp.h
pkg-config	pkg-config --version
podman	podman --version
docker.io	/usr/bin/docker --version
docker.io	dockerd --version
containerd	containerd --version
mmdebstrap	mmdebstrap --version
e2fsprogs	mkfs.ext4 -V
syslinux	syslinux --version
syslinux-common	test -f /usr/lib/syslinux/mbr/mbr.bin
mtools	mcopy --version
dosfstools	mkfs.vfat --help
fdisk	sfdisk --version
systemd-container	systemd-nspawn --version
lxc	lxc-start --version
chromium	chromium --version
cpio	cpio --version
busybox-static	/bin/busybox --help
gcc	gcc --version
binutils	ld --version
binutils	objcopy --version
make	make --version
bison	bison --version
flex	flex --version
bc	bc --version
xz-utils	xz --version
patch	patch --version
tar	tar --version
gzip	gzip --version
iproute2	ip -V
ansible-core	ansible-playbook --version
ansible-core	ansible --version
openssh-server	/usr/sbin/sshd -V
openssh-client	ssh -V
openssh-client	test -x /usr/bin/ssh-keygen
util-linux	setpriv --version
apt	apt-get --version
dpkg	dpkg-query --version
libelf-dev	test -f /usr/include/gelf.h
linux-source-6.1	test -f /usr/src/linux-source-6.1.tar.xz
fonts-dejavu-core	test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
EOF
)

if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "$checks"
    exit 0
fi
packages+=("$@")

say() { echo "setup-host: $*"; }
fail() { echo "setup-host: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs Debian packages)"

# One run at a time: concurrent runs would race apt and each other's checks.
lock_dir=/run/lock
[ -d "$lock_dir" ] || lock_dir=/tmp
exec 9>"$lock_dir/boxbench-setup-host.lock"
flock 9

export DEBIAN_FRONTEND=noninteractive
# Wait for another apt or dpkg (an unattended upgrade, a peer's install) instead of failing at once.
apt_opts=(-q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }
candidate_version() { apt-cache policy "$1" 2>/dev/null | sed -n 's/^  Candidate: //p'; }

# Prints apt's last lines, indented, from the file $1.
apt_tail() { { grep -v '^\s*$' "$1" || true; } | tail -n "${2:-8}" | sed 's/^/    /' >&2; }

work=$(mktemp -d /tmp/boxbench-setup-host.XXXXXX)
trap 'rm -rf "$work"' EXIT

missing=()
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
qemu_missing=()
for pkg in "${qemu_packages[@]}"; do
    installed "$pkg" || qemu_missing+=("$pkg")
done
lists_empty=0
compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || lists_empty=1

if [ ${#missing[@]} -eq 0 ] && [ ${#qemu_missing[@]} -eq 0 ]; then
    say "nothing to install: all $(( ${#packages[@]} + ${#qemu_packages[@]} )) packages are installed"
fi

if [ ${#missing[@]} -gt 0 ] || [ ${#qemu_missing[@]} -gt 0 ] || [ $lists_empty -eq 1 ]; then
    say "refreshing apt's package lists"
    if ! apt-get "${apt_opts[@]}" update >"$work/update.log" 2>&1; then
        echo "setup-host: apt-get update failed; apt's last lines:" >&2
        apt_tail "$work/update.log"
        exit 1
    fi
fi

if [ ${#missing[@]} -gt 0 ] || [ ${#qemu_missing[@]} -gt 0 ]; then
    want=("${missing[@]}")
    if [ ${#qemu_missing[@]} -gt 0 ]; then
        # The version qemu-system-x86 has (if installed) or would get; qemu-utils follows it.
        if installed qemu-system-x86; then
            qemu_version=$(installed_version qemu-system-x86)
        else
            qemu_version=$(candidate_version qemu-system-x86)
        fi
        case "$qemu_version" in
            ""|"(none)") fail "apt has no qemu-system-x86 to install (package qemu-system-x86; is this Debian with main enabled?)" ;;
        esac
        if ! apt-cache madison qemu-utils | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$qemu_version"; then
            fail "apt has no qemu-utils $qemu_version to match qemu-system-x86 $qemu_version (package qemu-utils)"
        fi
        for pkg in "${qemu_packages[@]}"; do
            if ! installed "$pkg" || [ "$(installed_version "$pkg")" != "$qemu_version" ]; then
                want+=("$pkg=$qemu_version")
            fi
        done
    fi
    install=(apt-get "${apt_opts[@]}" install -y --no-install-recommends --allow-downgrades)

    # Ask apt first what it would do: a package it cannot install is named before anything changes.
    if ! "${install[@]}" -s "${want[@]}" >"$work/plan.log" 2>&1; then
        for spec in "${want[@]}"; do
            if ! "${install[@]}" -s "$spec" >"$work/one.log" 2>&1; then
                echo "setup-host: apt cannot install ${spec%%=*}; apt's last lines:" >&2
                apt_tail "$work/one.log"
                exit 1
            fi
        done
        echo "setup-host: apt cannot install ${want[*]} together; apt's last lines:" >&2
        apt_tail "$work/plan.log"
        exit 1
    fi
    # Nothing the machine had may go (this is how qemu-img was lost).
    removed=$(sed -n 's/^Remv \([^ ]*\).*/\1/p' "$work/plan.log" | tr '\n' ' ')
    if [ -n "$removed" ]; then
        fail "installing ${want[*]} would remove ${removed% }; refusing (install them by hand from one release)"
    fi

    say "installing ${want[*]}"
    if ! "${install[@]}" "${want[@]}" >"$work/install.log" 2>&1; then
        # Name the package: dpkg lists those it failed on; a failed download names its .deb.
        culprits=$(sed -n '/^Errors were encountered while processing:/,$ s/^ \([a-z0-9][a-z0-9.+-]*\)$/\1/p' \
                       "$work/install.log" | tr '\n' ' ')
        [ -n "$culprits" ] || culprits=$(sed -n 's|^E: Failed to fetch .*/\([^/_]*\)_[^/]*\.deb .*|\1|p' \
                                             "$work/install.log" | tr '\n' ' ')
        [ -n "$culprits" ] || culprits="${want[*]}"
        echo "setup-host: apt-get install failed for ${culprits% }; apt's last lines:" >&2
        apt_tail "$work/install.log" 12
        exit 1
    fi
    say "installed ${want[*]}"
fi

# youki from the Rust registry, unless this version with both cgroup managers is already on PATH
# (`youki features` says which it was built with).
youki_ready() {
    [ "$(youki --version 2>/dev/null | sed -n 's/^youki version:* *//p' | head -n 1)" = "$youki_version" ] &&
        youki features 2>/dev/null | tr -d ' \n' | grep -q '"cgroup":{"v1":true,"v2":true'
}
if youki_ready; then
    say "youki $youki_version present: no build"
else
    command -v cargo >/dev/null 2>&1 || fail "cargo not found: youki is built with \`cargo install\` (install Rust first)"
    say "building youki $youki_version (cargo install --locked, features $youki_features; 12–24 minutes, once)"
    if ! cargo install -q --locked --root /usr/local --features "$youki_features" "youki@$youki_version" \
           >"$work/youki.log" 2>&1; then
        echo "setup-host: cargo install youki@$youki_version failed; cargo's last lines:" >&2
        apt_tail "$work/youki.log" 12
        exit 1
    fi
    say "built youki $youki_version into /usr/local/bin"
fi

# Every promised command answers. One line for whatever does not, with its package.
broken=()
count=0
while IFS=$'\t' read -r package command_line; do
    [ -n "$package" ] || continue
    count=$((count + 1))
    read -r -a argv <<<"$command_line"
    if [ "${argv[0]}" = test ]; then
        "${argv[@]}" || broken+=("${argv[2]} is missing (package $package)")
        continue
    fi
    if ! command -v "${argv[0]}" >/dev/null 2>&1; then
        broken+=("${argv[0]} not found (package $package)")
    elif ! timeout 120 "${argv[@]}" </dev/null >"$work/check.log" 2>&1; then
        broken+=("\`$command_line\` failed: $({ grep -v '^\s*$' "$work/check.log" || true; } | tail -n 1) (package $package)")
    fi
done <<<"$checks"
if [ ${#broken[@]} -gt 0 ]; then
    line=$(printf '%s; ' "${broken[@]}")
    fail "not working: ${line%; }"
fi
say "all $count promised commands and files answer"
