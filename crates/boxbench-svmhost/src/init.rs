//! The L1 host's init, in two stages of busybox shell, and the markers it prints for the host.
//!
//! Stage 1 (`/init`) leaves the initramfs: the kernel unpacks it into `rootfs`, which `pivot_root(2)`
//! refuses to leave (EINVAL), and every container runtime pivots — so the root is copied into a
//! tmpfs and `switch_root` runs stage 2 there. Stage 2 (`/sbin/l1-init`) sets up what a real
//! user's host has (proc, sysfs, devtmpfs, devpts, cgroup v2 alone at `/sys/fs/cgroup` with the
//! controllers a systemd host enables, loopback), loads the KVM modules, reads the command from
//! QEMU's fw_cfg, copies the host files fw_cfg carries into `/out`, runs the command there while a
//! heartbeat goes out on the third serial port, sends `/out` back as a base64 tar on the second
//! serial port, and powers off.

use std::path::Path;

use boxbench_images::IMAGES_DIR_ENV;

/// Printed on the console once the modules are loaded and /dev/kvm exists, before the command.
pub const READY_MARKER: &str = "BOXBENCH_L1_READY";
/// Printed on the console after the command, followed by its exit status.
pub const EXIT_MARKER: &str = "BOXBENCH_L1_EXIT=";
/// Printed on the console, followed by what failed, when the L1 cannot run the command.
pub const FAILED_MARKER: &str = "BOXBENCH_L1_FAILED: ";
/// Written to the third serial port every [`HEARTBEAT_INTERVAL_S`] seconds once the L1 is ready, so
/// the host can tell an L1 whose clock or CPUs stopped from a command that is merely quiet.
pub const HEARTBEAT: &str = "BOXBENCH_L1_ALIVE";
/// Seconds between two heartbeats.
pub const HEARTBEAT_INTERVAL_S: u64 = 5;
/// Brackets the base64 tar of `/out` on the second serial port.
pub const OUT_BEGIN: &str = "BOXBENCH_OUT_BEGIN";
/// Ends the base64 tar of `/out` on the second serial port.
pub const OUT_END: &str = "BOXBENCH_OUT_END";
/// The fw_cfg file that carries the command script (QEMU's `-fw_cfg name=...`).
pub const COMMAND_FW_CFG: &str = "opt/boxbench/command";
/// The fw_cfg directory of the host files copied into [`OUT_DIR`] before the command (QEMU's
/// `-fw_cfg name=opt/boxbench/files/NAME,file=PATH`).
pub const FILES_FW_CFG_DIR: &str = "opt/boxbench/files";
/// The directory the command runs in and whose contents come back to the host.
pub const OUT_DIR: &str = "/out";
/// The environment variable that points `compare`'s default report directory into [`OUT_DIR`].
pub const REPORTS_DIR_ENV: &str = "BOXBENCH_REPORTS_DIR";

/// The first stage, `/init`: copies the root into a tmpfs and switches to it.
pub fn stage1() -> String {
    "#!/bin/busybox sh
# The initramfs is the kernel's rootfs, which pivot_root cannot leave: container runtimes need a
# real mount as /, so the root moves into a tmpfs first.
/bin/busybox mkdir -p /l1root
/bin/busybox mount -t tmpfs -o mode=0755 l1root /l1root
for entry in /*; do
    case $entry in
        /l1root|/proc|/sys|/dev|/init) ;;
        *) /bin/busybox cp -a \"$entry\" /l1root/ ;;
    esac
done
/bin/busybox mkdir -p /l1root/proc /l1root/sys /l1root/dev
exec /bin/busybox switch_root /l1root /sbin/l1-init
"
    .to_owned()
}

/// The second stage, `/sbin/l1-init`, loading `modules` (paths inside the L1) in order.
pub fn stage2(modules: &[&Path]) -> String {
    let modules: Vec<String> = modules.iter().map(|m| shell_quote(&m.to_string_lossy())).collect();
    format!(
        "#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
fail() {{ echo \"{FAILED_MARKER}$*\"; poweroff -f; sleep 60; }}
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev \\
    || fail 'mounting /proc, /sys and /dev'
# The root is a tmpfs already: /tmp and /run stay directories of it, so programs the payload carries
# under them (a boxbench binary in /tmp) stay visible.
mkdir -p /dev/pts /dev/shm /dev/mqueue /tmp /run /root {OUT_DIR}
chmod 1777 /tmp
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t mqueue mqueue /dev/mqueue
# cgroup v2 alone, as on most users' hosts, with the controllers systemd enables for its children.
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail 'mounting cgroup2 at /sys/fs/cgroup'
for controller in cpu io memory pids; do
    echo \"+$controller\" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
ip link set lo up
hostname boxbench-l1
for module in {modules}; do
    insmod \"$module\" || fail \"loading $module\"
done
[ -c /dev/kvm ] || fail '/dev/kvm is missing after loading kvm_amd'
command=/sys/firmware/qemu_fw_cfg/by_name/{COMMAND_FW_CFG}/raw
[ -r \"$command\" ] || fail \"no command in fw_cfg ($command)\"
cp \"$command\" /run/command.sh
for file in /sys/firmware/qemu_fw_cfg/by_name/{FILES_FW_CFG_DIR}/*/raw; do
    [ -r \"$file\" ] || continue
    name=${{file%/raw}}
    cp \"$file\" \"{OUT_DIR}/${{name##*/}}\" || fail \"copying $file into {OUT_DIR}\"
done
echo {READY_MARKER}
# A heartbeat the host watches: it stops only if the L1 itself stops (its clock or its CPUs).
while :; do echo {HEARTBEAT}; sleep {HEARTBEAT_INTERVAL_S}; done > /dev/ttyS2 2>/dev/null &
cd {OUT_DIR}
# Through a pipe, as from a CI job: the console is a terminal, and progress bars would redraw on it.
set -o pipefail
{REPORTS_DIR_ENV}={OUT_DIR} sh /run/command.sh </dev/null 2>&1 | cat
echo \"{EXIT_MARKER}$?\"
stty -F /dev/ttyS1 raw -echo 2>/dev/null
{{ echo {OUT_BEGIN}; tar -C {OUT_DIR} -cf - . | base64; echo {OUT_END}; }} > /dev/ttyS1
sync
poweroff -f
",
        modules = modules.join(" ")
    )
}

/// How long the command script waits for the keeper VM to exist, in tenths of a second.
const KEEPER_WAIT_TENTHS: u32 = 100;

/// The command script: `program` with `args`, each quoted for the shell, beside a keeper VM.
///
/// The keeper is one idle VM of boxbench's own guest (`program run -b microvm --guest boxbench
/// --workload idle`) that lives as long as the command, `keeper_timeout_s` at most. It is there for
/// QEMU's TCG, not for the measurement: KVM turns the scheduler's `preempt_notifier_key` static
/// branch on when the first VM is created and off when the last is destroyed, Linux live-patches
/// `__schedule` through an int3 each time, and multi-threaded TCG (QEMU 7.2) can keep running a
/// stale translation of that int3 on another vCPU after the patch is done — the int3 handler finds
/// no int3 in memory and returns to it, forever, holding the runqueue lock the other vCPU then
/// spins on with interrupts off, and the L1 stops as a whole (seen with QEMU's monitor, twice;
/// reproduced within 20 short-lived VMs beside busy vCPUs). With a VM always there, the key never
/// flips and nothing is patched; 300 such launches ran through. (Single-threaded TCG avoids the
/// stale translation too, but stalled Linux guests inside.)
pub fn command_script(program: &Path, args: &[String], images_dir: &Path, keeper_timeout_s: u64) -> String {
    let program = shell_quote(&program.to_string_lossy());
    let images_dir = shell_quote(&images_dir.to_string_lossy());
    let mut line = program.clone();
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    format!(
        "#!/bin/sh
# The images the L1 carries, wherever the host's boxbench found them.
export {IMAGES_DIR_ENV}={images_dir}
{program} run -b microvm --guest boxbench --workload idle --timeout {keeper_timeout_s} >/dev/null 2>&1 &
keeper=$!
waited=0
until ls -l /proc/[0-9]*/fd/ 2>/dev/null | grep -q 'anon_inode:kvm-vm'; do
    if [ $waited -ge {KEEPER_WAIT_TENTHS} ] || ! kill -0 $keeper 2>/dev/null; then
        echo 'svm-host: the keeper VM did not start; the L1 may stop when KVM patches its scheduler' >&2
        break
    fi
    sleep 0.1
    waited=$((waited + 1))
done
{line}
status=$?
kill $keeper 2>/dev/null
wait $keeper
exit $status
"
    )
}

/// `text` in single quotes, a quote inside it as `'\''`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_command_script_passes_every_argument_through_unchanged() {
        let args: Vec<String> =
            ["compare", "-n", "2", "it's", "two words", "$HOME", "`id`", "a\\b", ""].map(str::to_owned).to_vec();
        let script = command_script(
            Path::new("/usr/bin/printf"),
            &[vec!["%s\\n".to_owned()], args.clone()].concat(),
            Path::new("/srv/guest-images"),
            1,
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(script.contains("'/usr/bin/printf' run -b microvm --guest boxbench --workload idle --timeout 1 "));
        assert!(script.contains("kill $keeper"), "the keeper VM outlives the command");
        let printed = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = printed.split('\n').collect();
        assert_eq!(&lines[..args.len()], args.iter().map(String::as_str).collect::<Vec<_>>().as_slice());
    }

    #[test]
    fn the_command_is_told_where_the_carried_images_are() {
        let args = ["-c".to_owned(), format!("printf %s \"${IMAGES_DIR_ENV}\"")];
        let script = command_script(Path::new("/bin/sh"), &args, Path::new("/work/it's here/guest-images"), 1);
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "/work/it's here/guest-images");
    }

    #[test]
    fn stage2_loads_the_modules_in_order_and_brackets_the_output() {
        let script = stage2(&[Path::new("/lib/modules/r/irqbypass.ko"), Path::new("/lib/modules/r/kvm.ko")]);
        assert!(script.contains("for module in '/lib/modules/r/irqbypass.ko' '/lib/modules/r/kvm.ko'; do"));
        assert!(script.contains(READY_MARKER) && script.contains(EXIT_MARKER) && script.contains(OUT_END));
        assert!(script.contains(&format!("echo {HEARTBEAT}; sleep {HEARTBEAT_INTERVAL_S}; done > /dev/ttyS2")));
        assert!(script.contains("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
        let checked = Command::new("sh").arg("-n").arg("-c").arg(&script).status().unwrap();
        assert!(checked.success(), "stage 2 is not valid shell");
        let checked = Command::new("sh").arg("-n").arg("-c").arg(stage1()).status().unwrap();
        assert!(checked.success(), "stage 1 is not valid shell");
    }
}
