//! What to launch: the workload, its limits and the images it runs from.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// Kernel parameters every VMM gives a Linux guest: the console on the first serial port, no wait
/// for a reset on panic, and `quiet`. Each console byte is a VM exit; under nested virtualisation a
/// verbose boot log costs seconds, and the workload's marker is printed by userspace either way.
pub const LINUX_GUEST_ARGS: &str = "console=ttyS0 panic=-1 quiet";

/// Kernel parameters for a VMM whose i8042 keyboard controller is there only to reset the machine
/// (boxbench's, Firecracker's): no AUX port, no multiplexer, no PnP lookup, no keyboard probing.
/// Without them Linux's i8042 driver waits out its command timeouts, seconds under nested
/// virtualisation. Firecracker's default command line says the same.
pub const I8042_RESET_ONLY_ARGS: &str = "i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd";

/// The line a VM guest's `/init` prints on its console after the workload, followed by its exit status
/// (`BOXBENCH_EXIT_STATUS=0`), before it resets the VM: how every VM backend learns the status.
pub const EXIT_STATUS_PREFIX: &str = "BOXBENCH_EXIT_STATUS=";

/// What every VMM (boxbench's, QEMU, Firecracker) boots its guest with unless the spec says
/// otherwise: defined once here, passed to each VMM, and shown in the report, so VM figures are
/// compared at the same guest size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmDefaults {
    /// Guest memory when the spec sets none.
    pub memory_bytes: u64,
    /// Virtual CPUs of a new spec.
    pub vcpus: u8,
    /// The kernel command line every Linux guest starts from ([`LINUX_GUEST_ARGS`]); each VMM adds
    /// what its machine needs (reset method, i8042 settings) and the workload's name.
    pub base_cmdline: &'static str,
    /// The line the workload prints when it is ready ([`crate::READY_MARKER`]).
    pub marker: &'static str,
    /// The console line carrying the workload's exit status before the reset ([`EXIT_STATUS_PREFIX`]).
    pub exit_status_prefix: &'static str,
}

/// The one set of VM defaults. 256 MiB: what QEMU and Firecracker were given before (their Linux
/// guest figures stay comparable), and room for the busybox initramfs unpacked in a Linux guest.
pub const VM_DEFAULTS: VmDefaults = VmDefaults {
    memory_bytes: 256 << 20,
    vcpus: 1,
    base_cmdline: LINUX_GUEST_ARGS,
    marker: crate::READY_MARKER,
    exit_status_prefix: EXIT_STATUS_PREFIX,
};

impl VmDefaults {
    /// The guest memory of `spec`: its own, else the default.
    pub fn guest_memory_bytes(&self, spec: &InstanceSpec) -> u64 {
        spec.memory_limit_bytes.unwrap_or(self.memory_bytes)
    }

    /// The exit status a guest printed on `console` before it reset, by the exit convention.
    pub fn exit_status(&self, console: &str) -> Option<i32> {
        console.lines().find_map(|line| line.trim().strip_prefix(self.exit_status_prefix)?.parse().ok())
    }

    /// One line for reports.
    pub fn describe(&self) -> String {
        format!(
            "{} MiB guest memory, {} vCPU, base command line \"{}\", marker {}, exit status line {}N before the reset",
            self.memory_bytes >> 20,
            self.vcpus,
            self.base_cmdline,
            self.marker,
            self.exit_status_prefix
        )
    }
}

/// The workload an instance runs. Named workloads are scripts in the guest image
/// (`/boxbench/workloads/NAME`); a command is run as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Prints the marker and exits 0.
    Hello,
    /// Prints the marker, then sleeps until killed.
    Idle,
    /// Prints `uname -r` (the kernel the workload sees), then the marker.
    Uname,
    /// Reads and writes the VM's first disk (`/dev/vda`) past the page cache, prints the checksum
    /// of what it read and whether the write went through (or was refused, on a read-only disk),
    /// then the marker; fails without a disk, and anywhere but in a VM booted for it.
    Disk,
    /// A user's command and its arguments; its output is the console, its exit status the instance's.
    Command(Vec<String>),
}

impl Workload {
    /// Every named workload, in the order they are documented.
    pub const NAMED: [Workload; 4] = [Workload::Hello, Workload::Idle, Workload::Uname, Workload::Disk];

    /// The workload's name as the guest image and the CLI know it (`command` for a custom one).
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Hello => "hello",
            Workload::Idle => "idle",
            Workload::Uname => "uname",
            Workload::Disk => "disk",
            Workload::Command(_) => "command",
        }
    }

    /// The argv that runs this workload inside the guest image's root filesystem.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Workload::Command(argv) => argv.clone(),
            named => vec![format!("/boxbench/workloads/{}", named.name())],
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Command(argv) => write!(f, "command `{}`", argv.join(" ")),
            named => f.write_str(named.name()),
        }
    }
}

/// A workload name that is not one of the named workloads.
#[derive(Debug, thiserror::Error)]
#[error("unknown workload `{0}` (expected hello, idle, uname or disk)")]
pub struct UnknownWorkload(String);

impl FromStr for Workload {
    type Err = UnknownWorkload;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::NAMED.into_iter().find(|w| w.name() == s).ok_or_else(|| UnknownWorkload(s.to_owned()))
    }
}

/// Where an instance's images are. Each backend uses the ones that apply to it and says which it
/// needs when one is missing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImagePaths {
    /// A root filesystem directory (containers).
    pub rootfs: Option<PathBuf>,
    /// An OCI runtime bundle directory: `config.json` and its root (containers, crun, runc).
    pub bundle: Option<PathBuf>,
    /// A kernel: bzImage or ELF vmlinux (VMs).
    pub kernel: Option<PathBuf>,
    /// An initramfs (VMs).
    pub initrd: Option<PathBuf>,
    /// A disk image a VM boots from (the full-OS disk: partitioned with a boot loader for a firmware
    /// boot, or its bare root filesystem beside `kernel` and `initrd` for a direct boot).
    pub disk: Option<PathBuf>,
}

/// Everything a backend needs to prepare one instance.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceSpec {
    /// What runs inside.
    pub workload: Workload,
    /// The instance's memory: a VM's guest memory size, a container's cgroup limit (none: no limit).
    pub memory_limit_bytes: Option<u64>,
    /// Virtual CPUs, where the backend has them.
    pub vcpus: u8,
    /// The images the instance runs from.
    pub images: ImagePaths,
    /// The deadline of the whole launch, from launch start to exit.
    #[serde(serialize_with = "serialize_secs")]
    pub timeout: Duration,
    /// The hostname the instance is given, where it has one.
    pub hostname: String,
}

fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl InstanceSpec {
    /// A spec for `workload` with boxbench's defaults: no memory limit (a VM gets
    /// [`VM_DEFAULTS`]'s), [`VM_DEFAULTS`]'s vCPUs, a 30 s deadline.
    pub fn new(workload: Workload, images: ImagePaths) -> Self {
        Self {
            workload,
            memory_limit_bytes: None,
            vcpus: VM_DEFAULTS.vcpus,
            images,
            timeout: Duration::from_secs(30),
            hostname: "boxbench".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_defaults_give_the_spec_s_memory_or_the_default_and_read_the_exit_status() {
        let mut spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
        assert_eq!(spec.vcpus, VM_DEFAULTS.vcpus);
        assert_eq!(VM_DEFAULTS.guest_memory_bytes(&spec), 256 << 20);
        spec.memory_limit_bytes = Some(64 << 20);
        assert_eq!(VM_DEFAULTS.guest_memory_bytes(&spec), 64 << 20);
        assert_eq!(VM_DEFAULTS.exit_status("boot\nBOXBENCH_READY\n BOXBENCH_EXIT_STATUS=3\r\n"), Some(3));
        assert_eq!(VM_DEFAULTS.exit_status("BOXBENCH_READY\n"), None);
        assert!(VM_DEFAULTS.describe().starts_with("256 MiB guest memory, 1 vCPU, base command line \"console=ttyS0"));
    }

    #[test]
    fn named_workloads_parse_and_run_their_script() {
        let w: Workload = "uname".parse().unwrap();
        assert_eq!(w, Workload::Uname);
        assert_eq!(w.argv(), vec!["/boxbench/workloads/uname"]);
        let custom = Workload::Command(vec!["/bin/echo".into(), "hi".into()]);
        assert_eq!(custom.argv(), vec!["/bin/echo", "hi"]);
    }

    #[test]
    fn unknown_workload_is_named_in_the_error() {
        let err = "sleepy".parse::<Workload>().unwrap_err();
        assert_eq!(err.to_string(), "unknown workload `sleepy` (expected hello, idle, uname or disk)");
    }
}
