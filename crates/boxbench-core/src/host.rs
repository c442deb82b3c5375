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
        Self {
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default(),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            kvm: KvmFlavour::detect(),
            cgroup_mode: CgroupHost::detect().ok().map(|h| h.mode),
            root: nix::unistd::geteuid().is_root(),
            load_average,
            cpu_emulated: cpu_emulated(&fs::read_to_string("/proc/cmdline").unwrap_or_default()),
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
    fn label_names_kernel_and_kvm() {
        let facts = HostFacts::detect();
        let label = facts.label();
        assert!(label.contains(&facts.kernel));
        assert!(label.contains(facts.kvm.label()));
    }
}
