//! The results schema: what one `boxbench compare` run measured on one host, as written to
//! `results.json` and read back by `boxbench report`.
//!
//! # Shape (schema version 1)
//!
//! ```text
//! Results {
//!   schema_version: 1,
//!   generated_at: "2026-11-29T03:10:19Z",        // free-form timestamp the writer chose
//!   host: { label, facts: HostFacts, load_before: {one,five,fifteen}, load_after: {…}, nested },
//!   settings: { command_line: [argv…], runs_per_series, warmup_runs, interleaved,
//!               density_instances, extra: {key: value} },
//!   series: [ { backend, workload, vm_kind: null | "own_guest_floor" | "linux_hardware" | "linux_tcg"
//!               | "linux_pvm_emulated" | "own_guest_other_vmm",
//!               command: null | "qemu-system-x86_64 …", settings: {key: value},
//!               records: [Record…],
//!               phases: { ready_ms, first_output_ms, userspace_ms, workload_ms, exit_ms: Summary|null },
//!               memory: { peak_bytes, pss_bytes, overhead_bytes: Summary|null },
//!               outcomes: {"exited with status 0": 20, …}, notes: [..] } ],
//!   images: [ { name, kind: "micro_vm_kernel_initrd" | "full_os_vm_disk" | "container_image" | "other",
//!               bytes, compressed_bytes, path, description } ],
//!   density: [ { backend, vm_kind, workload, instances, launched, launch_wall_s, launch_rate_per_s,
//!                mem_available_drop_bytes, mem_available_drop_per_instance_bytes,
//!                cgroup_peak_per_instance: Summary|null, curve: [{instances, host_memory_used_bytes}],
//!                command, settings, notes } ],
//!   notes: [..]
//! }
//! Summary = { n, median, p99, min, max }     // milliseconds for phases, bytes for memory
//! ```
//!
//! Every figure is either a [`Summary`] (with its `n`) computed from the raw records kept beside it,
//! or a plain measured value; a figure nobody observed is `null`, never invented. The uname evidence
//! (which kernel each instance saw) is derived from the `uname` series' consoles by
//! [`Results::uname_evidence`], so it cannot disagree with the records.
//!
//! Several hosts' results merge into a [`MultiHost`] comparison (a column per host in the report).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use boxbench_core::host::HostFacts;
use boxbench_core::stats::Summary;
use boxbench_core::{READY_MARKER, Record};
use serde::{Deserialize, Serialize};

/// The version of this schema; bumped on any change a reader of version 1 would misread.
pub const SCHEMA_VERSION: u32 = 1;

/// A results document that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The document was written by a boxbench whose schema this one does not read.
    #[error("schema_version {found} is not supported (this boxbench reads version {SCHEMA_VERSION})")]
    UnsupportedVersion {
        /// The version the document declares.
        found: u32,
    },
    /// A merge was asked for no results at all.
    #[error("no results to merge")]
    NothingToMerge,
}

/// Everything one comparison run measured on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// When the run happened (the writer's timestamp, e.g. RFC 3339 UTC).
    pub generated_at: String,
    /// The host the figures come from.
    pub host: HostSection,
    /// How the run was configured.
    pub settings: RunSettings,
    /// One series per (backend, workload).
    pub series: Vec<Series>,
    /// The sizes of the images the instances ran from.
    pub images: Vec<ImageSize>,
    /// One density step per backend.
    pub density: Vec<DensityResult>,
    /// The container backends whose workload runs on an application kernel in user space (gVisor's
    /// runsc): neither the host's kernel nor a VM's. The claims treat them as a third kind.
    #[serde(default)]
    pub application_kernels: Vec<String>,
    /// The harness's own cost per backend: a trivial program printing the marker, launched through
    /// that backend's harness path (one series per backend, backend name `calibration:<backend>`).
    #[serde(default)]
    pub calibration: Vec<Series>,
    /// The same backends' launches back to back (the warm regime), when the run measured it besides
    /// the regime of [`series`](Self::series) (see [`RunSettings::interleaved`]).
    #[serde(default)]
    pub warm: Vec<Series>,
    /// Claim 7: a `docker run` split into the client's and the daemon's parts, where measured.
    #[serde(default)]
    pub docker_split: Option<crate::docker_split::DockerSplit>,
    /// Facts about the run as a whole a reader needs (e.g. backends skipped and why).
    pub notes: Vec<String>,
}

impl Results {
    /// Empty results for `host` and `settings`, to be filled with series, images and density steps.
    pub fn new(generated_at: String, host: HostSection, settings: RunSettings) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            generated_at,
            host,
            settings,
            series: Vec::new(),
            images: Vec::new(),
            density: Vec::new(),
            application_kernels: Vec::new(),
            calibration: Vec::new(),
            warm: Vec::new(),
            docker_split: None,
            notes: Vec::new(),
        }
    }

    /// True when `backend`'s containers run on an application kernel (see
    /// [`application_kernels`](Self::application_kernels)).
    pub fn is_application_kernel(&self, backend: &str) -> bool {
        self.application_kernels.iter().any(|b| b == backend)
    }

    /// Checks that this boxbench can read the document.
    pub fn check_version(&self) -> Result<(), SchemaError> {
        if self.schema_version == SCHEMA_VERSION {
            Ok(())
        } else {
            Err(SchemaError::UnsupportedVersion { found: self.schema_version })
        }
    }

    /// The kernel release each `uname` series saw, beside the host's.
    pub fn uname_evidence(&self) -> Vec<UnameEvidence> {
        self.series
            .iter()
            .filter(|s| s.workload == "uname")
            .map(|s| {
                let seen = s.records.iter().find_map(|r| reported_release(&r.console));
                let uses_host_kernel = seen.as_deref().map(|seen| seen == self.host.facts.kernel);
                UnameEvidence {
                    backend: s.backend.clone(),
                    vm_kind: s.vm_kind,
                    host_kernel: self.host.facts.kernel.clone(),
                    seen,
                    uses_host_kernel,
                }
            })
            .collect()
    }

    /// The one line naming the host, for titles and table captions.
    pub fn host_line(&self) -> String {
        let label = &self.host.label;
        let facts = self.host.facts.label();
        if label.is_empty() { facts } else { format!("{label}: {facts}") }
    }
}

/// What the `uname` workload printed just before its marker: the kernel release it saw (the
/// workload runs `uname -r`, then prints the marker). A guest of boxbench's own prints its own
/// identification line there instead, which is what it runs on.
fn reported_release(console: &str) -> Option<String> {
    let mut previous: Option<&str> = None;
    for line in console.lines().map(|l| l.trim_end_matches('\r').trim()) {
        if line.contains(READY_MARKER) {
            return previous.map(str::to_owned);
        }
        if !line.is_empty() {
            previous = Some(line);
        }
    }
    None
}

/// The host a results document comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSection {
    /// A free-form name the user gave the host (e.g. "ci-runner", "laptop"); may be empty.
    pub label: String,
    /// The facts boxbench detected (kernel, CPU, memory, KVM flavour, cgroup mode).
    pub facts: HostFacts,
    /// The load average before the first launch.
    pub load_before: LoadAverage,
    /// The load average after the last launch.
    pub load_after: LoadAverage,
    /// The host itself runs under a hypervisor (its CPU flags say `hypervisor`): its VMs are nested.
    pub nested: bool,
}

impl HostSection {
    /// The section for this host now: `facts` and `load_before` read at the start of the run, the
    /// load after and the nesting read now.
    pub fn capture(label: String, facts: HostFacts, load_before: LoadAverage) -> Self {
        Self { label, facts, load_before, load_after: LoadAverage::now(), nested: runs_under_hypervisor() }
    }

    /// The highest 1-minute load average seen before or after the run.
    pub fn peak_load(&self) -> f64 {
        self.load_before.one.max(self.load_after.one)
    }
}

/// True when `/proc/cpuinfo` lists the `hypervisor` CPU flag (this host is itself a guest).
pub fn runs_under_hypervisor() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|cpuinfo| {
        cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
    })
}

/// The load average over 1, 5 and 15 minutes (`/proc/loadavg`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadAverage {
    /// Over the last minute.
    pub one: f64,
    /// Over the last 5 minutes.
    pub five: f64,
    /// Over the last 15 minutes.
    pub fifteen: f64,
}

impl LoadAverage {
    /// Reads `/proc/loadavg`; zeros where it cannot be read (the figure is informative only).
    pub fn now() -> Self {
        std::fs::read_to_string("/proc/loadavg").map(|text| Self::parse(&text)).unwrap_or_default()
    }

    fn parse(text: &str) -> Self {
        let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().unwrap_or(0.0));
        Self {
            one: fields.next().unwrap_or(0.0),
            five: fields.next().unwrap_or(0.0),
            fifteen: fields.next().unwrap_or(0.0),
        }
    }
}

impl fmt::Display for LoadAverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} {:.2} {:.2}", self.one, self.five, self.fifteen)
    }
}

/// How the run was configured: the exact command line and the settings it resolved to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// The command line that produced the results, argument by argument.
    pub command_line: Vec<String>,
    /// Measured launches per series (warm-up runs excluded).
    pub runs_per_series: usize,
    /// Warm-up launches per series, discarded.
    pub warmup_runs: usize,
    /// Whether the launches of [`Results::series`], which the verdicts use, were interleaved across
    /// backends (A B A B …: the interleaved regime) rather than back to back (the warm regime).
    pub interleaved: bool,
    /// Instances launched at once in the density step, if it ran.
    pub density_instances: Option<usize>,
    /// Any other setting (memory per instance, vCPUs, deadline, image paths), by name.
    pub extra: BTreeMap<String, String>,
}

/// Which kind of virtual machine a series ran, so each figure says what it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmKind {
    /// boxbench's own VMM running its own minimal guest: the floor a VM can approach.
    OwnGuestFloor,
    /// A Linux guest on hardware-virtualised KVM (VMX/SVM).
    LinuxHardware,
    /// A Linux guest on KVM over SVM that QEMU's TCG emulates: the L1 host of `boxbench svm-host`,
    /// whose absolute times are an emulator's.
    LinuxSvmEmulated,
    /// A Linux guest under QEMU's TCG emulator (no KVM).
    LinuxTcg,
    /// A Linux guest under kvm_pvm, whose guest kernel code is emulated instruction by instruction.
    LinuxPvmEmulated,
    /// boxbench's own minimal guest under another VMM (QEMU, Firecracker).
    OwnGuestOtherVmm,
    /// boxbench's own VMM starting its own guest from a snapshot taken at the guest's marker.
    OwnGuestFromSnapshot,
    /// The VM the claims are about: boxbench's full-OS disk (Debian, systemd) booted through firmware
    /// and its boot loader, on hardware-virtualised KVM.
    FullOsHardware,
    /// The full-OS disk on KVM over SVM that QEMU's TCG emulates (the L1 of `boxbench svm-host`).
    FullOsSvmEmulated,
    /// The full-OS disk under QEMU's TCG emulator.
    FullOsTcg,
}

/// Which kind of container a series ran, where it is not an application container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerKind {
    /// A system container: a whole OS (the full-OS disk's tree) booted by its own systemd, by
    /// systemd-nspawn or LXC.
    System,
}

impl ContainerKind {
    /// The label reports use (also the group a verdict names).
    pub fn label(self) -> &'static str {
        match self {
            ContainerKind::System => "system container (whole OS booted, no VM)",
        }
    }
}

impl VmKind {
    /// Every kind, from the VM floor to the Linux guests.
    pub const ALL: [VmKind; 10] = [
        VmKind::OwnGuestFloor,
        VmKind::OwnGuestFromSnapshot,
        VmKind::OwnGuestOtherVmm,
        VmKind::LinuxHardware,
        VmKind::LinuxSvmEmulated,
        VmKind::LinuxPvmEmulated,
        VmKind::LinuxTcg,
        VmKind::FullOsHardware,
        VmKind::FullOsSvmEmulated,
        VmKind::FullOsTcg,
    ];

    /// True for the kinds whose guest code QEMU's TCG translates (directly, or the L1 host's).
    pub fn is_tcg(self) -> bool {
        matches!(self, VmKind::LinuxTcg | VmKind::FullOsTcg)
    }

    /// The label reports use.
    pub fn label(self) -> &'static str {
        match self {
            VmKind::OwnGuestFloor => "boxbench's own VMM + minimal guest (the VM floor)",
            VmKind::LinuxHardware => "Linux guest on hardware KVM (VMX/SVM)",
            VmKind::LinuxSvmEmulated => "Linux guest on KVM over SVM emulated by QEMU TCG (nested)",
            VmKind::LinuxTcg => "Linux guest under QEMU TCG emulation",
            VmKind::LinuxPvmEmulated => "Linux guest under kvm_pvm (guest kernel emulated)",
            VmKind::OwnGuestOtherVmm => "boxbench's minimal guest under QEMU/Firecracker",
            VmKind::OwnGuestFromSnapshot => "boxbench's own VMM + minimal guest, VM from snapshot",
            VmKind::FullOsHardware => "full-OS VM (Debian + systemd, firmware boot) on hardware KVM",
            VmKind::FullOsSvmEmulated => "full-OS VM (Debian + systemd, firmware boot) on emulated SVM (nested)",
            VmKind::FullOsTcg => "full-OS VM (Debian + systemd, firmware boot) under QEMU TCG emulation",
        }
    }

    /// Which guest the VM boots and, where it is not hardware KVM, how its code runs; short: it tells
    /// apart the series of one VMM (QEMU booting the own guest, Linux under TCG, Linux under kvm_pvm).
    pub fn guest(self) -> &'static str {
        match self {
            VmKind::OwnGuestFloor | VmKind::OwnGuestOtherVmm => "own guest",
            VmKind::OwnGuestFromSnapshot => "own guest, from snapshot",
            VmKind::LinuxHardware => "Linux",
            VmKind::LinuxSvmEmulated => "Linux, emulated SVM",
            VmKind::LinuxTcg => "Linux, TCG",
            VmKind::LinuxPvmEmulated => "Linux, kvm_pvm",
            VmKind::FullOsHardware => "full OS",
            VmKind::FullOsSvmEmulated => "full OS, emulated SVM",
            VmKind::FullOsTcg => "full OS, TCG",
        }
    }

    /// The backend for a container, "backend (guest)" for a VM.
    pub fn backend_name(kind: Option<VmKind>, backend: &str) -> String {
        match kind {
            None => backend.to_owned(),
            Some(kind) => format!("{backend} ({})", kind.guest()),
        }
    }

    /// "backend × workload" for a container, "backend (guest) × workload" for a VM.
    pub fn instance_name(kind: Option<VmKind>, backend: &str, workload: &str) -> String {
        format!("{} × {workload}", Self::backend_name(kind, backend))
    }
}

impl fmt::Display for VmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The launches of one backend running one workload, with their statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The backend's name (as its launcher calls itself).
    pub backend: String,
    /// The workload's name (`hello`, `idle`, `uname`, or `command`).
    pub workload: String,
    /// `None` for containers; for VMs, which kind.
    pub vm_kind: Option<VmKind>,
    /// For containers that are not application containers, which kind (`None`: an application
    /// container, or a VM).
    #[serde(default)]
    pub container_kind: Option<ContainerKind>,
    /// The exact command a real tool was run with, where there is one (e.g. QEMU's argv).
    pub command: Option<String>,
    /// The settings of the launches (memory, vCPUs, images, deadline), by name.
    pub settings: BTreeMap<String, String>,
    /// Every measured launch.
    pub records: Vec<Record>,
    /// Per phase, statistics over the launches that observed it (milliseconds).
    pub phases: PhaseSummaries,
    /// Per memory figure, statistics over the launches that measured it (bytes).
    pub memory: MemorySummaries,
    /// Per backend-specific sub-phase (the records' `details_ms`), statistics over the launches that
    /// timed it (milliseconds).
    #[serde(default)]
    pub details: BTreeMap<String, Summary>,
    /// How many launches ended each way ("exited with status 0": 20, …).
    pub outcomes: BTreeMap<String, usize>,
    /// The records' notes, each once.
    pub notes: Vec<String>,
}

impl Series {
    /// The summary of figure `name`: a phase (milliseconds) or a memory figure (bytes).
    pub fn figure(&self, name: &str) -> Option<Summary> {
        self.phases.get(name).or_else(|| self.memory.get(name))
    }

    /// Every launch's value of figure `name` (as [`figure`](Self::figure) names it), in launch order.
    pub fn samples(&self, name: &str) -> Vec<f64> {
        self.records
            .iter()
            .filter_map(|r| {
                r.phases.get(name).or_else(|| {
                    let memory = &r.memory;
                    match name {
                        "peak_bytes" => memory.peak_bytes,
                        "pss_bytes" => memory.pss_bytes,
                        "overhead_bytes" => memory.overhead_bytes,
                        "shared_daemons_pss_bytes" => memory.shared_daemons_pss_bytes,
                        _ => None,
                    }
                    .map(|bytes| bytes as f64)
                })
            })
            .collect()
    }

    /// A series of `records`, with its summaries, outcome counts and notes computed from them.
    pub fn new(backend: String, workload: String, vm_kind: Option<VmKind>, records: Vec<Record>) -> Self {
        let phases = PhaseSummaries::of(&records);
        let memory = MemorySummaries::of(&records);
        let mut detail_samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (name, ms) in records.iter().flat_map(|r| &r.details_ms) {
            detail_samples.entry(name.clone()).or_default().push(*ms);
        }
        let details = detail_samples.into_iter().filter_map(|(name, v)| Some((name, Summary::of(&v)?))).collect();
        let mut outcomes = BTreeMap::new();
        for record in &records {
            *outcomes.entry(record.outcome.to_string()).or_insert(0) += 1;
        }
        let mut notes: Vec<String> = records.iter().flat_map(|r| r.notes.iter().cloned()).collect();
        notes.sort();
        notes.dedup();
        Self {
            backend,
            workload,
            vm_kind,
            container_kind: None,
            command: None,
            settings: BTreeMap::new(),
            records,
            phases,
            memory,
            details,
            outcomes,
            notes,
        }
    }

    /// Sets the exact command the launches ran.
    pub fn with_command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// Adds a setting.
    pub fn with_setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(name.into(), value.into());
        self
    }

    /// "backend × workload", with the guest for a VM ("qemu-microvm (Linux, TCG) × hello").
    pub fn name(&self) -> String {
        VmKind::instance_name(self.vm_kind, &self.backend, &self.workload)
    }

    /// Launches that did not end with a clean exit 0.
    pub fn failures(&self) -> usize {
        self.records.iter().filter(|r| !r.outcome.is_success()).count()
    }

    /// The samples of phase `name` (one of [`boxbench_core::Phases::NAMES`]), in launch order.
    pub fn phase_samples(&self, name: &str) -> Vec<f64> {
        self.records.iter().filter_map(|r| r.phases.get(name)).collect()
    }

    /// "container", the container kind's label, or the VM kind's label.
    pub fn kind_label(&self) -> &'static str {
        match (self.vm_kind, self.container_kind) {
            (Some(kind), _) => kind.label(),
            (None, Some(kind)) => kind.label(),
            (None, None) => "container",
        }
    }

    /// Marks the series as one of `kind` containers.
    pub fn with_container_kind(mut self, kind: Option<ContainerKind>) -> Self {
        self.container_kind = kind;
        self
    }
}

/// Statistics of each phase (milliseconds since launch start), `None` where no launch observed it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummaries {
    /// Runtime or VMM set up.
    pub ready_ms: Option<Summary>,
    /// First console byte.
    pub first_output_ms: Option<Summary>,
    /// First userspace instruction.
    pub userspace_ms: Option<Summary>,
    /// The workload's marker.
    pub workload_ms: Option<Summary>,
    /// Everything released.
    pub exit_ms: Option<Summary>,
}

impl PhaseSummaries {
    /// Summarises the phases of `records`.
    pub fn of(records: &[Record]) -> Self {
        let summary =
            |name: &str| Summary::of(&records.iter().filter_map(|r| r.phases.get(name)).collect::<Vec<f64>>());
        Self {
            ready_ms: summary("ready_ms"),
            first_output_ms: summary("first_output_ms"),
            userspace_ms: summary("userspace_ms"),
            workload_ms: summary("workload_ms"),
            exit_ms: summary("exit_ms"),
        }
    }

    /// The summary of phase `name` (one of [`boxbench_core::Phases::NAMES`]).
    pub fn get(&self, name: &str) -> Option<Summary> {
        match name {
            "ready_ms" => self.ready_ms,
            "first_output_ms" => self.first_output_ms,
            "userspace_ms" => self.userspace_ms,
            "workload_ms" => self.workload_ms,
            "exit_ms" => self.exit_ms,
            _ => None,
        }
    }
}

/// Statistics of each memory figure (bytes), `None` where no launch measured it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySummaries {
    /// Peak of the per-instance cgroup.
    pub peak_bytes: Option<Summary>,
    /// Proportional set size at the marker.
    pub pss_bytes: Option<Summary>,
    /// The runtime's or VMM's own cost.
    pub overhead_bytes: Option<Summary>,
    /// The daemons every instance shares (dockerd, containerd).
    #[serde(default)]
    pub shared_daemons_pss_bytes: Option<Summary>,
}

impl MemorySummaries {
    /// The memory figures' names, as in [`boxbench_core::MemoryUsage`].
    pub const NAMES: [&'static str; 4] = ["peak_bytes", "pss_bytes", "overhead_bytes", "shared_daemons_pss_bytes"];

    /// Summarises the memory of `records`.
    pub fn of(records: &[Record]) -> Self {
        let summary = |get: fn(&Record) -> Option<u64>| {
            Summary::of(&records.iter().filter_map(get).map(|b| b as f64).collect::<Vec<f64>>())
        };
        Self {
            peak_bytes: summary(|r| r.memory.peak_bytes),
            pss_bytes: summary(|r| r.memory.pss_bytes),
            overhead_bytes: summary(|r| r.memory.overhead_bytes),
            shared_daemons_pss_bytes: summary(|r| r.memory.shared_daemons_pss_bytes),
        }
    }

    /// The summary of the figure called `name` (one of [`MemorySummaries::NAMES`]).
    pub fn get(&self, name: &str) -> Option<Summary> {
        match name {
            "peak_bytes" => self.peak_bytes,
            "pss_bytes" => self.pss_bytes,
            "overhead_bytes" => self.overhead_bytes,
            "shared_daemons_pss_bytes" => self.shared_daemons_pss_bytes,
            _ => None,
        }
    }
}

/// What an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// A kernel plus initramfs, booted without a disk: the whole image of a micro-VM.
    MicroVmKernelInitrd,
    /// A full-OS VM disk (e.g. a Debian root filesystem as raw ext4 or qcow2).
    FullOsVmDisk,
    /// A container image (root filesystem or OCI layer).
    ContainerImage,
    /// Anything else measured.
    Other,
}

impl ImageKind {
    /// The label reports use.
    pub fn label(self) -> &'static str {
        match self {
            ImageKind::MicroVmKernelInitrd => "VM kernel + initramfs, no disk (a micro-VM's whole image)",
            ImageKind::FullOsVmDisk => "full-OS VM disk",
            ImageKind::ContainerImage => "container image",
            ImageKind::Other => "other",
        }
    }
}

/// The size of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSize {
    /// A short name ("busybox rootfs", "debian minbase qcow2").
    pub name: String,
    /// What it is.
    pub kind: ImageKind,
    /// Its size as stored on disk, in bytes (for a sparse disk: the allocated bytes).
    pub bytes: u64,
    /// Its size compressed (gzip, zstd or the format's own), where measured.
    pub compressed_bytes: Option<u64>,
    /// Where it is, if it is one file or directory.
    pub path: Option<PathBuf>,
    /// How it was built and what it holds.
    pub description: String,
}

/// The density step of one backend: K instances of the `idle` workload at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensityResult {
    /// The backend.
    pub backend: String,
    /// `None` for containers.
    pub vm_kind: Option<VmKind>,
    /// The workload the instances ran (normally `idle`).
    pub workload: String,
    /// Instances asked for.
    pub instances: usize,
    /// Instances that reached their marker.
    pub launched: usize,
    /// Wall time from the first launch to the last marker, in seconds.
    pub launch_wall_s: Option<f64>,
    /// Instances launched per second (`launched / launch_wall_s`).
    pub launch_rate_per_s: Option<f64>,
    /// The host's MemAvailable drop with all instances running, in bytes.
    pub mem_available_drop_bytes: Option<u64>,
    /// That drop divided by the instances launched.
    pub mem_available_drop_per_instance_bytes: Option<f64>,
    /// Statistics of the instances' cgroup peaks (bytes).
    pub cgroup_peak_per_instance: Option<Summary>,
    /// The host memory used as instances were added: one point per instance count measured.
    pub curve: Vec<DensityPoint>,
    /// The exact command or settings of the step.
    pub command: Option<String>,
    /// The settings, by name.
    pub settings: BTreeMap<String, String>,
    /// What a reader needs to weigh the figures.
    pub notes: Vec<String>,
}

/// Host memory used with a given number of instances running.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DensityPoint {
    /// Instances running.
    pub instances: usize,
    /// The host's MemAvailable drop since before the first instance, in bytes.
    pub host_memory_used_bytes: u64,
}

/// Which kernel an instance saw, from its `uname` console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnameEvidence {
    /// The backend.
    pub backend: String,
    /// `None` for containers.
    pub vm_kind: Option<VmKind>,
    /// The host's kernel release.
    pub host_kernel: String,
    /// What the workload printed before its marker (`None`: no launch reached the marker).
    pub seen: Option<String>,
    /// Whether that is the host's release (`None` when nothing was seen).
    pub uses_host_kernel: Option<bool>,
}

/// Several hosts' results, to compare side by side (a column per host).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiHost {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// One results document per host (its runs merged), ordered by [`crate::fleet::HostGroup`].
    pub hosts: Vec<Results>,
    /// Hosts of the fleet that sent no usable results, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<crate::fleet::MissingHost>,
}

impl MultiHost {
    /// Merges `results` (each checked for its version) into one comparison: the runs of one host
    /// ([`crate::fleet::merge_runs`]) become one column.
    pub fn merge(results: Vec<Results>) -> Result<Self, SchemaError> {
        if results.is_empty() {
            return Err(SchemaError::NothingToMerge);
        }
        for r in &results {
            r.check_version()?;
        }
        Ok(Self { schema_version: SCHEMA_VERSION, hosts: crate::fleet::merge_runs(results), missing: Vec::new() })
    }

    /// A column heading for each host: its label, or its kernel and CPU count, made unique.
    pub fn column_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (i, r) in self.hosts.iter().enumerate() {
            let base = if r.host.label.is_empty() {
                format!("{} ({} CPUs)", r.host.facts.kernel, r.host.facts.cpus)
            } else {
                r.host.label.clone()
            };
            let name = if names.contains(&base) { format!("{base} #{}", i + 1) } else { base };
            names.push(name);
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_is_the_line_before_the_marker() {
        assert_eq!(reported_release("6.18.0\nBOXBENCH_READY\n").as_deref(), Some("6.18.0"));
        assert_eq!(
            reported_release("[ 0.1] booting\r\n6.1.0-tiny\r\n\r\nBOXBENCH_READY\r\n").as_deref(),
            Some("6.1.0-tiny")
        );
        assert_eq!(reported_release("6.18.0\n"), None);
        assert_eq!(reported_release("BOXBENCH_READY\n"), None);
    }

    #[test]
    fn series_summarises_each_sub_phase_over_the_launches_that_timed_it() {
        let record = |details: &[(&str, f64)]| Record {
            backend: "microvm".into(),
            phases: boxbench_core::Phases::default(),
            exit_code: Some(0),
            outcome: boxbench_core::Outcome::Exited { code: 0 },
            console: String::new(),
            memory: boxbench_core::MemoryUsage::default(),
            notes: vec![],
            details_ms: details.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        };
        let records = vec![
            record(&[("vm_build_ms", 2.0), ("kvm_teardown_ms", 1.0)]),
            record(&[("vm_build_ms", 4.0)]),
            record(&[("vm_build_ms", 3.0)]),
        ];
        let series = Series::new("microvm".into(), "hello".into(), Some(VmKind::OwnGuestFloor), records);
        let build = series.details["vm_build_ms"];
        assert_eq!((build.n, build.median, build.min, build.max), (3, 3.0, 2.0, 4.0));
        assert_eq!(series.details["kvm_teardown_ms"].n, 1);
        assert_eq!(series.name(), "microvm (own guest) × hello");
    }

    #[test]
    fn load_average_parses_the_three_figures() {
        let load = LoadAverage::parse("0.52 1.25 2.00 1/234 5678\n");
        assert_eq!(load, LoadAverage { one: 0.52, five: 1.25, fifteen: 2.0 });
        assert_eq!(LoadAverage::parse(""), LoadAverage::default());
    }
}
