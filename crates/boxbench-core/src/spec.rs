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
    /// A user's command and its arguments; its output is the console, its exit status the instance's.
    Command(Vec<String>),
}

impl Workload {
    /// Every named workload, in the order they are documented.
    pub const NAMED: [Workload; 3] = [Workload::Hello, Workload::Idle, Workload::Uname];

    /// The workload's name as the guest image and the CLI know it (`command` for a custom one).
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Hello => "hello",
            Workload::Idle => "idle",
            Workload::Uname => "uname",
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
#[error("unknown workload `{0}` (expected hello, idle or uname)")]
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
    /// A spec for `workload` with boxbench's defaults: no memory limit, one vCPU, a 30 s deadline.
    pub fn new(workload: Workload, images: ImagePaths) -> Self {
        Self {
            workload,
            memory_limit_bytes: None,
            vcpus: 1,
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
        assert_eq!(err.to_string(), "unknown workload `sleepy` (expected hello, idle or uname)");
    }
}
