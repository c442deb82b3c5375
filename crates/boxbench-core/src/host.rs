//! Facts about the host every figure is labelled with: a boot time measured under a software nested
//! hypervisor means something else than one under VMX, and a reader must be able to tell.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cgroup::{CgroupHost, CgroupMode};

/// What kind of KVM the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvmFlavour {
    /// No usable `/dev/kvm`.
    Absent,
    /// Intel VT-x: guests run on hardware virtualisation.
    Vmx,
    /// AMD-V: guests run on hardware virtualisation.
    Svm,
    /// kvm_pvm, a software nested hypervisor: guest user mode runs natively, guest kernel mode goes
    /// through KVM's instruction emulator. Small guests run; Linux guests crawl or fail.
    Pvm,
    /// `/dev/kvm` exists but its backing is unknown.
    Unknown,
}

impl KvmFlavour {
    /// Detects the flavour from `/dev/kvm`, `/sys/module` and the CPU flags.
    pub fn detect() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Self::classify(Path::new("/dev/kvm").exists(), Path::new("/sys/module/kvm_pvm").exists(), &cpuinfo)
    }

    fn classify(dev_kvm: bool, pvm_module: bool, cpuinfo: &str) -> Self {
        if !dev_kvm {
            return KvmFlavour::Absent;
        }
        if pvm_module {
            return KvmFlavour::Pvm;
        }
        let has_flag = |flag: &str| {
            cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == flag))
        };
        if has_flag("vmx") {
            KvmFlavour::Vmx
        } else if has_flag("svm") {
            KvmFlavour::Svm
        } else {
            KvmFlavour::Unknown
        }
    }

    /// True when guest kernel code runs on hardware virtualisation.
    pub fn is_hardware(self) -> bool {
        matches!(self, KvmFlavour::Vmx | KvmFlavour::Svm)
    }

    /// The short label reports use.
    pub fn label(self) -> &'static str {
        match self {
            KvmFlavour::Absent => "no KVM",
            KvmFlavour::Vmx => "KVM on VMX",
            KvmFlavour::Svm => "KVM on SVM",
            KvmFlavour::Pvm => "kvm_pvm (software nested, guest kernel emulated)",
            KvmFlavour::Unknown => "KVM (unknown backing)",
        }
    }
}

/// The kernel command-line parameter `boxbench svm-host` boots its L1 host with: that host's CPU,
/// SVM included, is emulated by QEMU's TCG, so its absolute times are an emulator's (pure
/// computation runs 20–30× slower than native) and only ratios between its backends compare them.
/// The CPU flags cannot tell: TCG presents a plain `EPYC` with `svm` and `hypervisor`, as a real
/// nested guest would.
pub const EMULATED_CPU_PARAM: &str = "boxbench.emulated_cpu=tcg";

/// True when this kernel was booted with [`EMULATED_CPU_PARAM`] (`cmdline` is `/proc/cmdline`).
fn cpu_emulated(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|word| word == EMULATED_CPU_PARAM)
}

/// The kernel's estimate of memory available for new work without swapping (`MemAvailable` in
/// /proc/meminfo), in bytes.
pub fn mem_available_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_kib(&meminfo, "MemAvailable:").map(|kib| kib * 1024)
}

/// The host's RAM (`MemTotal` in /proc/meminfo), in bytes.
pub fn mem_total_bytes() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_kib(&meminfo, "MemTotal:").map(|kib| kib * 1024)
}

fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| l.strip_prefix(field)?.split_whitespace().next()?.parse::<u64>().ok())
}

/// Where the machine's identity is kept: systemd's file, then D-Bus's older one (machine-id(5)).
const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// The stable identity of a host: `<16 hex digits>/<CPU model>/<kernel>`. The digits are the start
/// of the SHA-256 of the machine id (`machine`, the contents of /etc/machine-id) with a boxbench
/// prefix, as machine-id(5) asks of applications that publish an id derived from it; a machine
/// without one (an initramfs host) is named by its `hostname` instead, marked `h` so the two kinds
/// never collide. The CPU model and kernel are part of it because they decide the figures: the same
/// machine after a kernel upgrade is another column of a fleet report.
pub fn host_id(machine: &str, hostname: &str, cpu_model: &str, kernel: &str) -> String {
    use sha2::{Digest, Sha256};
    let (kind, source) = match machine.trim() {
        "" => ("h", hostname.trim()),
        id => ("m", id),
    };
    let digest = Sha256::digest(format!("boxbench host id {kind}:{source}"));
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{kind}{hex}/{cpu_model}/{kernel}")
}

/// The facts a run is labelled with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Host kernel release.
    pub kernel: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// KVM flavour.
    pub kvm: KvmFlavour,
    /// Mounted cgroup hierarchies (`None` when no memory controller was found).
    pub cgroup_mode: Option<CgroupMode>,
    /// Whether boxbench runs as root.
    pub root: bool,
    /// 1-minute load average when the facts were read.
    pub load_average: f64,
    /// The CPU is emulated (an L1 host of `boxbench svm-host`, booted with [`EMULATED_CPU_PARAM`]).
    #[serde(default)]
    pub cpu_emulated: bool,
    /// The host's stable identity ([`host_id`]): runs of one machine with one CPU model and kernel
    /// share it, so a fleet report merges them. Empty in results written before it existed.
    #[serde(default)]
    pub host_id: String,
}

impl HostFacts {
    /// Reads the facts of this host now.
    pub fn detect() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo_kib(&meminfo, "MemTotal:").map_or(0, |kib| kib * 1024);
        let load_average = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
        let machine = MACHINE_ID_FILES.iter().find_map(|path| fs::read_to_string(path).ok()).unwrap_or_default();
        let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host_id = host_id(&machine, &hostname, &cpu_model, &kernel);
        Self {
            kernel,
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            kvm: KvmFlavour::detect(),
            cgroup_mode: CgroupHost::detect().ok().map(|h| h.mode),
            root: nix::unistd::geteuid().is_root(),
            load_average,
            cpu_emulated: cpu_emulated(&fs::read_to_string("/proc/cmdline").unwrap_or_default()),
            host_id,
        }
    }

    /// One line naming the host, printed under every table and plot title.
    pub fn label(&self) -> String {
        format!(
            "Linux {} x86_64, {} CPUs{}, {:.0} GiB, {}, cgroup {}, load {:.2}",
            self.kernel,
            self.cpus,
            if self.cpu_emulated { " (emulated by QEMU TCG)" } else { "" },
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.kvm.label(),
            self.cgroup_mode.map_or_else(|| "none".to_owned(), |m| m.to_string()),
            self.load_average
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_module_wins_over_cpu_flags() {
        assert_eq!(KvmFlavour::classify(true, true, "flags : fpu vmx"), KvmFlavour::Pvm);
    }

    #[test]
    fn flavour_from_cpu_flags() {
        assert_eq!(KvmFlavour::classify(true, false, "flags\t\t: fpu vme svm lm\n"), KvmFlavour::Svm);
        assert_eq!(KvmFlavour::classify(true, false, "flags\t\t: fpu vmx lm\n"), KvmFlavour::Vmx);
        assert_eq!(KvmFlavour::classify(true, false, "flags\t\t: fpu lm\n"), KvmFlavour::Unknown);
        assert_eq!(KvmFlavour::classify(false, true, ""), KvmFlavour::Absent);
        assert!(KvmFlavour::Vmx.is_hardware() && !KvmFlavour::Pvm.is_hardware());
    }

    #[test]
    fn meminfo_fields_are_read_in_kib() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemAvailable:"), Some(20_000_000));
        assert_eq!(meminfo_kib(meminfo, "Cached:"), None);
        assert!(mem_available_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn an_emulated_cpu_is_told_by_the_whole_parameter() {
        assert!(cpu_emulated("console=ttyS0 boxbench.emulated_cpu=tcg quiet"));
        assert!(!cpu_emulated("console=ttyS0 boxbench.emulated_cpu=tcgx"));
        assert!(!cpu_emulated(""));
    }

    #[test]
    fn host_id_is_stable_and_names_machine_cpu_and_kernel() {
        let id = host_id("0123456789abcdef0123456789abcdef\n", "box", "AMD EPYC 7B13", "6.1.0-28-amd64");
        assert_eq!(id, host_id("0123456789abcdef0123456789abcdef", "other", "AMD EPYC 7B13", "6.1.0-28-amd64"));
        assert!(id.ends_with("/AMD EPYC 7B13/6.1.0-28-amd64"), "{id}");
        let machine_part = id.split('/').next().unwrap_or_default();
        assert_eq!(machine_part.len(), 17, "{id}");
        assert!(machine_part.starts_with('m') && machine_part[1..].chars().all(|c| c.is_ascii_hexdigit()));
        // The machine id itself is not published.
        assert!(!id.contains("0123456789abcdef"));
        // Another machine, kernel or CPU is another host.
        assert_ne!(id, host_id("fedcba9876543210fedcba9876543210", "box", "AMD EPYC 7B13", "6.1.0-28-amd64"));
        assert_ne!(id, host_id("0123456789abcdef0123456789abcdef", "box", "AMD EPYC 7B13", "6.1.0-29-amd64"));
        assert_ne!(id, host_id("0123456789abcdef0123456789abcdef", "box", "Intel Xeon", "6.1.0-28-amd64"));
    }

    #[test]
    fn a_host_without_machine_id_is_named_by_its_hostname() {
        let a = host_id("", "l1-a\n", "QEMU", "6.1.0");
        assert!(a.starts_with('h'), "{a}");
        assert_eq!(a, host_id(" ", "l1-a", "QEMU", "6.1.0"));
        assert_ne!(a, host_id("", "l1-b", "QEMU", "6.1.0"));
    }

    #[test]
    fn detected_facts_carry_this_hosts_id() {
        let facts = HostFacts::detect();
        assert!(facts.host_id.ends_with(&format!("/{}/{}", facts.cpu_model, facts.kernel)), "{}", facts.host_id);
        assert_eq!(facts.host_id, HostFacts::detect().host_id);
    }

    #[test]
    fn label_names_kernel_and_kvm() {
        let facts = HostFacts::detect();
        let label = facts.label();
        assert!(label.contains(&facts.kernel));
        assert!(label.contains(facts.kvm.label()));
    }
}
