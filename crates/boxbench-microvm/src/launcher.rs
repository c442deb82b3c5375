//! The `microvm` backend: boxbench's own VMM behind [`boxbench_core::Launcher`].
//!
//! `prepare` checks everything that can be checked without starting the VM (files, sizes, KVM's
//! limits) and sets up the instance cgroup (the launch boundary, `boxbench_core::boundary`); `launch`
//! starts the clock and forks the VMM child, which joins the cgroup and boots; `wait` collects the child's event records until it exits or the deadline passes; `finish`
//! reaps it, removes the cgroup and turns what was collected into the record.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use boxbench_core::boundary::{LaunchBoundary, Started};
use boxbench_core::cgroup::{CgroupHost, InstanceCgroup};
use boxbench_core::console::{Console, ConsoleCapture};
use boxbench_core::host::KvmFlavour;
use boxbench_core::spec::{I8042_RESET_ONLY_ARGS, VM_DEFAULTS};
use boxbench_core::{
    Instance, InstanceSpec, LaunchError, Launcher, MemoryUsage, MonotonicNs, Outcome, Phases, READY_MARKER, Record,
    Timeline, Workload,
};

use kvm_bindings::CpuId;
use seccompiler::BpfProgram;

use boxbench_images::microvm_kernel::{KVM_PVM_MEMORY_BYTES, kvm_pvm_cmdline};

use crate::child::{self, ChildSetup};
use crate::cpuid::CpuidQuirks;
use crate::disk::DiskConfig;
use crate::events::{ChildEvent, EventDecoder};
use crate::hypervisor::{Hypervisor, HypervisorError, KvmHypervisor};
use crate::interrupts::InterruptModel;
use crate::mptable;
use crate::observer::BuildStep;
use crate::seccomp;
use crate::snapshot::{self, Snapshot, SnapshotFiles};
use crate::vm::{BootPlan, VmConfig};

/// The backend's name.
pub const BACKEND_NAME: &str = boxbench_core::OWN_VMM_BACKEND;

/// Why a stock Linux guest is refused on kvm_pvm unless forced.
pub const LINUX_ON_PVM_REFUSAL: &str = "guest kernel code runs in kvm_pvm's instruction emulator here: a stock Linux \
                                        kernel does not boot in useful time; boot boxbench's micro-VM kernel, or use \
                                        --force to try anyway";

/// The record note of a VM of boxbench's micro-VM kernel on kvm_pvm starts with this.
pub const PVM_COMPAT_NOTE_PREFIX: &str = "kvm_pvm compatibility: ";

/// `Record::details_ms` key: VMM child forked → the boot vCPU's first KVM_RUN.
pub const DETAIL_VMM_START_TO_FIRST_RUN: &str = "vmm_start_to_first_run_ms";
/// `Record::details_ms` key: VMM child forked → it is in the instance cgroup.
pub const DETAIL_VMM_CGROUP_JOIN: &str = "vmm_cgroup_join_ms";
/// `Record::details_ms` key: in the instance cgroup → first KVM_RUN (KVM objects, memory, boot data,
/// vCPU threads, the seccomp filter).
pub const DETAIL_VM_BUILD: &str = "vm_build_ms";
/// `Record::details_ms` keys of the steps of `vm_build_ms`, each from the previous step's end: the VM
/// created, guest memory mapped, interrupt controllers created, boot data written, vCPUs configured,
/// then vCPU threads started and confined up to the first KVM_RUN.
pub const DETAIL_BUILD_STEPS: [&str; 6] = [
    "build_vm_create_ms",
    "build_memory_map_ms",
    "build_interrupts_ms",
    "build_boot_data_ms",
    "build_vcpu_setup_ms",
    "build_vcpu_start_ms",
];
/// `Record::details_ms` key: the VMM saw the marker's last byte → every vCPU stopped (the at-marker
/// memory measurement, then what the guest does after its marker, up to its reset).
pub const DETAIL_MARKER_TO_STOP: &str = "marker_to_vcpus_stopped_ms";
/// `Record::details_ms` key: every vCPU stopped → KVM objects and guest memory released.
pub const DETAIL_KVM_TEARDOWN: &str = "kvm_teardown_ms";
/// `Record::details_ms` key: the child reported the VM's end → boxbench reaped it.
pub const DETAIL_CHILD_REAP: &str = "child_reap_ms";
/// `Record::details_ms` key: child reaped → instance cgroup removed.
pub const DETAIL_CGROUP_REMOVE: &str = "cgroup_remove_ms";

/// The record note of every VM on a kvm_pvm host: its figures are those of an emulated guest kernel.
pub const PVM_EMULATED_NOTE: &str = "guest kernel code emulated by kvm_pvm";

/// The failure reason of a VMM child its seccomp filter killed.
pub const SECCOMP_KILL_REASON: &str = "VMM child killed by its seccomp filter (SIGSYS): it made a system call \
                                       outside the run loop's allow-list";

/// Which guest the VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestKind {
    /// boxbench's own guest (crate boxbench-guest): boots in milliseconds, even under kvm_pvm.
    #[default]
    Boxbench,
    /// A Linux kernel with an initramfs that runs the workload; on kvm_pvm a stock kernel is refused
    /// unless forced ([`LINUX_ON_PVM_REFUSAL`]).
    Linux,
    /// boxbench's micro-VM kernel (`boxbench_images::microvm_kernel`), built with the kvm_pvm
    /// compatibility patch, with an initramfs that runs the workload. The caller says so when it passes
    /// that kernel (nothing is guessed from the file). On kvm_pvm the VM gets
    /// [`boxbench_images::microvm_kernel::kvm_pvm_cmdline`] (with `reboot=p` instead of `reboot=k`) and,
    /// unless the spec sets `memory_limit_bytes`, [`boxbench_images::microvm_kernel::KVM_PVM_MEMORY_BYTES`]
    /// of memory, and its record says so; elsewhere it boots like any Linux kernel.
    MicroVmLinux,
}

/// The interrupt model each guest needs: see [`crate::interrupts`].
impl From<GuestKind> for InterruptModel {
    fn from(guest: GuestKind) -> Self {
        match guest {
            // Polls its UART, starts its APs through the LAPIC: no PIC, IOAPIC or PIT.
            GuestKind::Boxbench => InterruptModel::SplitLapicOnly,
            // Its console and timers take interrupts through the IOAPIC and PIT.
            GuestKind::Linux | GuestKind::MicroVmLinux => InterruptModel::InKernelIrqchip,
        }
    }
}

impl GuestKind {
    /// A Linux kernel of either kind.
    pub fn is_linux(self) -> bool {
        matches!(self, GuestKind::Linux | GuestKind::MicroVmLinux)
    }
}

/// How the `microvm` backend is configured.
#[derive(Debug, Clone, Default)]
pub struct MicroVmOptions {
    /// The guest kind.
    pub guest: GuestKind,
    /// Boot a stock Linux guest even where it cannot boot in useful time (kvm_pvm).
    pub force: bool,
    /// The kernel, overriding the spec's `images.kernel`.
    pub kernel: Option<PathBuf>,
    /// The initrd, overriding the spec's `images.initrd`.
    pub initrd: Option<PathBuf>,
    /// Appended to the command line.
    pub cmdline_extra: String,
    /// virtio-blk disks, in order (`/dev/vda` first).
    pub disks: Vec<DiskConfig>,
    /// The guest device the kernel mounts as its root filesystem (`root=DEVICE`, read-write unless
    /// the first disk is read-only); `None`: the initramfs is the root.
    pub root: Option<String>,
    /// Write a snapshot of the VM into this directory when its guest prints the marker (boxbench's
    /// own guest only; see [`crate::snapshot`]).
    pub snapshot_at_marker: Option<PathBuf>,
    /// Start each VM from the snapshot in this directory instead of booting (boxbench's own guest).
    pub restore: Option<PathBuf>,
}

/// Why a snapshot option is refused for a Linux guest.
pub const SNAPSHOT_OWN_GUEST_ONLY: &str = "microvm: snapshots are of boxbench's own guest without disks only (--guest boxbench, no --disk), whose interrupt model is the LAPIC alone";

/// boxbench's own micro-VM monitor as a backend.
#[derive(Debug)]
pub struct MicroVmLauncher {
    options: MicroVmOptions,
    kvm: KvmFlavour,
    /// What every VM's child needs and is the same for all: read and compiled once, before any clock.
    shared: OnceLock<SharedSetup>,
}

/// The parts of a child's set-up that do not change between VMs.
#[derive(Debug, Clone)]
struct SharedSetup {
    supported_cpuid: CpuId,
    filter: BpfProgram,
}

impl MicroVmLauncher {
    /// A launcher with `options`, for this host's KVM.
    pub fn new(options: MicroVmOptions) -> Self {
        Self { options, kvm: KvmFlavour::detect(), shared: OnceLock::new() }
    }

    /// Checks the host for `vcpus` and returns the set-up every child shares.
    fn shared_setup(&self, vcpus: u8) -> Result<&SharedSetup, LaunchError> {
        let kvm = check_host(vcpus)?;
        if let Some(shared) = self.shared.get() {
            return Ok(shared);
        }
        let supported_cpuid = kvm.supported_cpuid().map_err(LaunchError::backend)?;
        let filter = if self.options.snapshot_at_marker.is_some() {
            seccomp::snapshot_filter()
        } else {
            seccomp::run_loop_filter()
        }
        .map_err(LaunchError::backend)?;
        Ok(self.shared.get_or_init(|| SharedSetup { supported_cpuid, filter }))
    }

    /// True when this host's KVM is kvm_pvm and the guest is boxbench's micro-VM kernel: the VM then
    /// gets the kvm_pvm compatibility settings.
    fn pvm_compat(&self) -> bool {
        self.kvm == KvmFlavour::Pvm && self.options.guest == GuestKind::MicroVmLinux
    }

    /// The command line for `workload`: what every VMM gives a Linux guest
    /// ([`LINUX_GUEST_ARGS`]), the i8042 settings of a reset-only controller, the workload's name,
    /// how to reboot (through the keyboard controller, or on kvm_pvm with boxbench's micro-VM kernel its
    /// whole compatibility set with `reboot=p`, the reset-control port; the VMM treats both as a clean
    /// exit), the root device if the root is on a disk, then the user's additions. The disks are announced
    /// after all of it ([`VmConfig::plan`]).
    pub fn cmdline(&self, workload: &Workload) -> String {
        let reboot = if self.pvm_compat() { kvm_pvm_cmdline() } else { "reboot=k" };
        let mut cmdline = format!(
            "{} {I8042_RESET_ONLY_ARGS} boxbench.workload={} {reboot}",
            VM_DEFAULTS.base_cmdline,
            workload.name()
        );
        if let Some(root) = &self.options.root {
            let mode = if self.options.disks.first().is_some_and(|disk| disk.read_only) { "ro" } else { "rw" };
            cmdline.push_str(&format!(" root={root} {mode}"));
        }
        let extra = self.options.cmdline_extra.trim();
        if !extra.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(extra);
        }
        cmdline
    }
}

impl Launcher for MicroVmLauncher {
    fn name(&self) -> &str {
        BACKEND_NAME
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        if let Workload::Command(_) = spec.workload {
            return Err(LaunchError::InvalidSpec(
                "microvm: runs named workloads only (hello, idle, uname, disk), not a command".into(),
            ));
        }
        if self.options.guest == GuestKind::Linux && self.kvm == KvmFlavour::Pvm && !self.options.force {
            return Err(LaunchError::Unsupported(LINUX_ON_PVM_REFUSAL.into()));
        }
        let pvm_compat = self.pvm_compat();
        let snapshotting = self.options.snapshot_at_marker.is_some() || self.options.restore.is_some();
        if snapshotting && (self.options.guest != GuestKind::Boxbench || !self.options.disks.is_empty()) {
            return Err(LaunchError::InvalidSpec(SNAPSHOT_OWN_GUEST_ONLY.into()));
        }
        if self.options.snapshot_at_marker.is_some() && self.options.restore.is_some() {
            return Err(LaunchError::InvalidSpec(
                "microvm: --snapshot-at-marker and --restore do not go together (a restored guest's marker was printed before its snapshot)".into(),
            ));
        }
        let restore = match &self.options.restore {
            Some(dir) => {
                let snapshot = Snapshot::open(dir).map_err(|e| LaunchError::InvalidSpec(e.to_string()))?;
                snapshot
                    .check_machine(spec.memory_limit_bytes, spec.vcpus)
                    .map_err(|e| LaunchError::InvalidSpec(e.to_string()))?;
                Some(Arc::new(snapshot))
            }
            None => None,
        };
        let kernel = self.options.kernel.clone().or_else(|| spec.images.kernel.clone()).ok_or_else(|| {
            LaunchError::InvalidSpec("microvm: no kernel given (images.kernel or the launcher's kernel)".into())
        })?;
        // On kvm_pvm, every MiB of boxbench's micro-VM kernel costs emulated memmap set-up: it gets
        // 64 MiB unless the spec asks for a size.
        let memory_mib = match spec.memory_limit_bytes {
            _ if restore.is_some() => restore.as_ref().map_or(0, |s| (s.state.mem_bytes >> 20) as u32),
            Some(bytes) => u32::try_from(bytes.div_ceil(1 << 20)).map_err(|_| {
                LaunchError::InvalidSpec(format!("memory_limit_bytes: {bytes} is beyond what a VM can have"))
            })?,
            None if pvm_compat => PVM_COMPAT_MEMORY_MIB,
            None => (VM_DEFAULTS.memory_bytes >> 20) as u32,
        };
        let initrd = self.options.initrd.clone().or_else(|| spec.images.initrd.clone());
        let mut notes = Vec::new();
        if pvm_compat {
            notes.push(pvm_compat_note(memory_mib, initrd.as_deref()));
        }
        let config = VmConfig {
            initrd,
            cmdline: self.cmdline(&spec.workload),
            memory_mib,
            vcpus: spec.vcpus,
            disks: self.options.disks.clone(),
            // A virtio-blk disk interrupts through the IOAPIC: a VM with disks gets the full irqchip,
            // whatever its guest.
            interrupts: if self.options.disks.is_empty() {
                InterruptModel::from(self.options.guest)
            } else {
                InterruptModel::InKernelIrqchip
            },
            ..VmConfig::new(kernel)
        };
        let plan = config.plan().map_err(|e| LaunchError::InvalidSpec(e.to_string()))?;
        let shared = self.shared_setup(plan.vcpus)?.clone();
        if let Some(snapshot) = &restore {
            notes.push(format!("restored from snapshot {}", snapshot.dir.display()));
        }
        let snapshot_at_marker = match &self.options.snapshot_at_marker {
            Some(dir) => Some(PendingSnapshot::create(dir)?),
            None => None,
        };
        let boundary = (|| -> Result<LaunchBoundary, LaunchError> {
            Ok(LaunchBoundary::prepare(&CgroupHost::detect()?, BACKEND_NAME, false, None)?)
        })();
        let boundary = match boundary {
            Ok(boundary) => boundary,
            Err(error) => {
                if let Some(pending) = snapshot_at_marker {
                    pending.discard();
                }
                return Err(error);
            }
        };
        Ok(Box::new(MicroVmInstance {
            plan,
            quirks: config.cpuid_quirks,
            shared,
            restore,
            snapshot_at_marker,
            boundary: Some(boundary),
            kvm: self.kvm,
            guest: self.options.guest,
            notes,
            running: None,
        }))
    }
}

/// A snapshot directory prepared for a launch: its files created (or emptied) before the clock, and
/// whether boxbench made the directory (to remove it when no snapshot came).
#[derive(Debug)]
struct PendingSnapshot {
    dir: PathBuf,
    created_dir: bool,
    /// Handed to the child at launch.
    files: Option<SnapshotFiles>,
}

impl PendingSnapshot {
    fn create(dir: &Path) -> Result<Self, LaunchError> {
        let created_dir = !dir.exists();
        let files = SnapshotFiles::create(dir).map_err(|e| LaunchError::InvalidSpec(e.to_string()))?;
        Ok(Self { dir: dir.to_owned(), created_dir, files: Some(files) })
    }

    /// Removes what [`PendingSnapshot::create`] made.
    fn discard(self) {
        drop(self.files);
        let _ = std::fs::remove_file(self.dir.join(snapshot::STATE_FILE));
        let _ = std::fs::remove_file(self.dir.join(snapshot::MEMORY_FILE));
        if self.created_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }

    /// After the VM: the record's note, the files removed when no snapshot was written (the child
    /// writes the state file last, only once memory is written).
    fn conclude(self) -> String {
        let written = std::fs::metadata(self.dir.join(snapshot::STATE_FILE)).is_ok_and(|m| m.len() > 0);
        let dir = self.dir.display().to_string();
        if written {
            format!("snapshot written to {dir} at the marker")
        } else {
            self.discard();
            format!("no snapshot written to {dir}: the VM ended before its snapshot was complete")
        }
    }
}

/// The memory boxbench's micro-VM kernel gets on kvm_pvm when the spec asks for none.
const PVM_COMPAT_MEMORY_MIB: u32 = (KVM_PVM_MEMORY_BYTES >> 20) as u32;

/// The record note saying what the kvm_pvm compatibility settings were.
fn pvm_compat_note(memory_mib: u32, initrd: Option<&Path>) -> String {
    let initrd = match initrd {
        Some(path) if is_gzip(path) => format!("initramfs {} (gzip: unpacking it is emulated too)", path.display()),
        Some(path) => format!("uncompressed initramfs {}", path.display()),
        None => "no initramfs".to_owned(),
    };
    format!("{PVM_COMPAT_NOTE_PREFIX}`{}` appended, {memory_mib} MiB guest memory, {initrd} applied", kvm_pvm_cmdline())
}

/// True when the file starts with the gzip magic (only for the note: the kernel takes either).
fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    File::open(path).and_then(|mut file| file.read_exact(&mut magic)).is_ok() && magic == [0x1f, 0x8b]
}

/// Checks what only the host can say: KVM is there, usable, and takes this many vCPUs.
fn check_host(vcpus: u8) -> Result<KvmHypervisor, LaunchError> {
    let kvm = KvmHypervisor::open().map_err(|e| match e {
        HypervisorError::NoKvm(_) | HypervisorError::KvmPermission(_) => LaunchError::Unsupported(e.to_string()),
        other => LaunchError::backend(other),
    })?;
    let max = kvm.max_vcpus();
    if usize::from(vcpus) > max {
        return Err(LaunchError::InvalidSpec(format!(
            "vcpus: {vcpus} is more than KVM_CAP_MAX_VCPUS ({max}) on this host"
        )));
    }
    if vcpus > mptable::max_cpus() {
        return Err(LaunchError::InvalidSpec(format!(
            "vcpus: {vcpus} do not fit in the MP table (at most {})",
            mptable::max_cpus()
        )));
    }
    Ok(kvm)
}

/// What the child reported, gathered as it arrives.
#[derive(Debug, Default)]
struct Reported {
    cgroup_joined: Option<MonotonicNs>,
    vcpus_stopped: Option<MonotonicNs>,
    build_steps: [Option<MonotonicNs>; BuildStep::ALL.len()],
    first_entry: Option<MonotonicNs>,
    boot_timer: Option<MonotonicNs>,
    marker_memory: Option<(u64, u64)>,
    marker_at: Option<MonotonicNs>,
    exit_overhead: Option<u64>,
    ignored: Option<(u64, u64)>,
    exit: Option<(bool, String, MonotonicNs)>,
    failure: Option<String>,
}

impl Reported {
    fn absorb(&mut self, event: ChildEvent) {
        match event {
            ChildEvent::CgroupJoined { at } => self.cgroup_joined = Some(at),
            ChildEvent::VcpusStopped { at } => self.vcpus_stopped = Some(at),
            ChildEvent::BuildStep { step, at } => {
                if let Some(index) = BuildStep::ALL.iter().position(|&s| s == step) {
                    self.build_steps[index] = Some(at);
                }
            }
            ChildEvent::FirstEntry { at } => self.first_entry = Some(at),
            ChildEvent::BootTimer { at } => {
                self.boot_timer.get_or_insert(at);
            }
            ChildEvent::MarkerMemory { at, pss_bytes, overhead_bytes } => {
                self.marker_at = Some(at);
                self.marker_memory = Some((pss_bytes, overhead_bytes));
            }
            ChildEvent::ExitMemory { overhead_bytes, .. } => self.exit_overhead = Some(overhead_bytes),
            ChildEvent::Ignored { port_io, mmio } => self.ignored = Some((port_io, mmio)),
            ChildEvent::Exit { at, clean, reason } => self.exit = Some((clean, reason, at)),
            ChildEvent::Failed { reason } => self.failure = Some(reason),
        }
    }
}

/// `launch` was called a second time on one instance.
#[derive(Debug, thiserror::Error)]
#[error("microvm instance was already launched")]
struct LaunchedTwice;

/// A launched VMM child.
#[derive(Debug)]
struct Running {
    timeline: Timeline,
    forked_at: MonotonicNs,
    pid: libc::pid_t,
    cgroup: Arc<InstanceCgroup>,
    events: File,
    decoder: EventDecoder,
    events_closed: bool,
    console: Option<ConsoleCapture>,
    reported: Reported,
    status: Option<ChildStatus>,
    reaped_at: Option<MonotonicNs>,
}

/// How the child process ended.
#[derive(Debug, Clone, Copy)]
enum ChildStatus {
    Exited(i32),
    Signaled(i32),
}

/// One VM of the `microvm` backend.
#[derive(Debug)]
struct MicroVmInstance {
    plan: BootPlan,
    quirks: CpuidQuirks,
    shared: SharedSetup,
    /// The snapshot each launch starts from.
    restore: Option<Arc<Snapshot>>,
    /// The snapshot to take at the marker.
    snapshot_at_marker: Option<PendingSnapshot>,
    /// The cgroup set up before the clock, until the launch starts the clock.
    boundary: Option<LaunchBoundary>,
    kvm: KvmFlavour,
    guest: GuestKind,
    notes: Vec<String>,
    running: Option<Running>,
}

/// A pipe whose ends are closed on exec (the child is forked, not exec'd, and closes what it does not
/// use itself).
fn pipe() -> Result<(File, OwnedFd), LaunchError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(LaunchError::backend)?;
    Ok((File::from(read), write))
}

impl Instance for MicroVmInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        let boundary = self.boundary.take().ok_or_else(|| LaunchError::backend(LaunchedTwice))?;
        let (events, events_child) = pipe()?;
        let (console, console_child) = pipe()?;
        let started = boundary.start();
        self.notes.push(started.note());
        let Started { timeline, cgroup, join_file, .. } = started;
        let setup = ChildSetup {
            plan: self.plan.clone(),
            quirks: self.quirks,
            supported_cpuid: self.shared.supported_cpuid.clone(),
            filter: self.shared.filter.clone(),
            snapshot_at_marker: self.snapshot_at_marker.as_mut().and_then(|pending| pending.files.take()),
            restore: self.restore.clone(),
            cgroup_join: join_file.as_raw_fd(),
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
        };
        let forked_at = MonotonicNs::now();
        let pid = child::spawn(&setup, &events_child, &console_child).map_err(LaunchError::backend)?;
        // The child has its own copies; closing ours lets end of file mean "the child is gone".
        drop((events_child, console_child, join_file));
        let console = match ConsoleCapture::spawn(console, READY_MARKER, || None) {
            Ok(console) => console,
            Err(e) => {
                // SAFETY: kill and waitpid on the child just forked, which nothing else reaps.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(LaunchError::backend(e));
            }
        };
        self.running = Some(Running {
            timeline,
            forked_at,
            pid,
            cgroup,
            events,
            decoder: EventDecoder::default(),
            events_closed: false,
            console: Some(console),
            reported: Reported::default(),
            status: None,
            reaped_at: None,
        });
        Ok(())
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        let running =
            self.running.as_mut().ok_or_else(|| LaunchError::InvalidSpec("microvm: wait before launch".into()))?;
        while !running.events_closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut poll = [nix::poll::PollFd::new(running.events.as_fd(), nix::poll::PollFlags::POLLIN)];
            let timeout = nix::poll::PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                .unwrap_or(nix::poll::PollTimeout::MAX);
            match nix::poll::poll(&mut poll, timeout) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(LaunchError::backend(e)),
            }
            let mut buf = [0u8; 4096];
            match running.events.read(&mut buf) {
                Ok(0) => running.events_closed = true,
                Ok(n) => {
                    for event in running.decoder.feed(&buf[..n]) {
                        running.reported.absorb(event);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LaunchError::backend(e)),
            }
        }
        running.reap()?;
        Ok(Some(running.outcome()))
    }

    fn marker_seen(&self) -> bool {
        self.running.as_ref().and_then(|r| r.console.as_ref()).is_some_and(ConsoleCapture::marker_seen)
    }

    fn kill(&mut self) -> Result<(), LaunchError> {
        if let Some(running) = &self.running {
            if running.status.is_none() {
                // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child, so it
                // cannot name another process.
                unsafe { libc::kill(running.pid, libc::SIGKILL) };
            }
            running.cgroup.kill_all();
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, outcome: Outcome) -> Result<Record, LaunchError> {
        let Some(mut running) = self.running.take() else {
            return Err(LaunchError::InvalidSpec("microvm: finish before launch".into()));
        };
        if running.status.is_none() {
            // SAFETY: as in `kill`: our own unreaped child.
            unsafe { libc::kill(running.pid, libc::SIGKILL) };
            running.reap()?;
        }
        let console = running.console.take().map(ConsoleCapture::join).unwrap_or_default();
        let peak_bytes = running.cgroup.peak_bytes();
        let Running { timeline, forked_at, cgroup, reported, reaped_at, .. } = running;
        if let Some(pending) = self.snapshot_at_marker.take() {
            self.notes.push(pending.conclude());
        }
        // The only reference: the console thread, now joined, never held one.
        if let Ok(cgroup) = Arc::try_unwrap(cgroup) {
            cgroup.remove()?;
        }
        // A Linux guest's /init prints the workload's status before it resets the VM: a clean reset
        // exits with that status, and one without it did not finish its workload.
        let outcome = match outcome {
            Outcome::Exited { code: 0 } if self.guest.is_linux() => match VM_DEFAULTS.exit_status(&console.text) {
                Some(code) => Outcome::Exited { code },
                None => Outcome::Failed {
                    reason: format!("guest reset without printing {}N", VM_DEFAULTS.exit_status_prefix),
                },
            },
            other => other,
        };
        let finished =
            Finished { timeline, forked_at, reported, console, peak_bytes, reaped_at, removed_at: MonotonicNs::now() };
        Ok(finished.record(outcome, self.kvm, std::mem::take(&mut self.notes)))
    }
}

/// Everything known about an instance once it is gone.
#[derive(Debug)]
struct Finished {
    timeline: Timeline,
    forked_at: MonotonicNs,
    reported: Reported,
    console: Console,
    peak_bytes: Option<u64>,
    reaped_at: Option<MonotonicNs>,
    removed_at: MonotonicNs,
}

impl Finished {
    fn record(self, outcome: Outcome, kvm: KvmFlavour, launch_notes: Vec<String>) -> Record {
        let Finished { timeline, forked_at, reported, console, peak_bytes, reaped_at, removed_at } = self;
        let mut notes = Vec::new();
        if kvm == KvmFlavour::Pvm {
            notes.push(PVM_EMULATED_NOTE.to_owned());
        }
        notes.extend(launch_notes);
        let mut details_ms = BTreeMap::new();
        let mut detail = |key: &str, span: Option<(MonotonicNs, MonotonicNs)>| {
            if let Some((from, to)) = span {
                details_ms.insert(key.to_owned(), to.millis_since(from));
            }
        };
        let exited_at = reported.exit.as_ref().map(|(_, _, at)| *at);
        detail(DETAIL_VMM_START_TO_FIRST_RUN, reported.first_entry.map(|entry| (forked_at, entry)));
        detail(DETAIL_VMM_CGROUP_JOIN, reported.cgroup_joined.map(|joined| (forked_at, joined)));
        detail(DETAIL_VM_BUILD, reported.cgroup_joined.zip(reported.first_entry));
        let step_ends = reported.build_steps.iter().copied().chain([reported.first_entry]);
        let step_starts = std::iter::once(reported.cgroup_joined).chain(reported.build_steps.iter().copied());
        for ((key, start), end) in DETAIL_BUILD_STEPS.into_iter().zip(step_starts).zip(step_ends) {
            detail(key, start.zip(end));
        }
        detail(DETAIL_MARKER_TO_STOP, reported.marker_at.zip(reported.vcpus_stopped));
        detail(DETAIL_KVM_TEARDOWN, reported.vcpus_stopped.zip(exited_at));
        detail(DETAIL_CHILD_REAP, exited_at.zip(reaped_at));
        detail(DETAIL_CGROUP_REMOVE, reaped_at.map(|reaped| (reaped, removed_at)));
        if let Some((port_io, mmio)) = reported.ignored.filter(|&(p, m)| p + m > 0) {
            notes.push(format!("guest accesses to absent devices ignored: {port_io} port I/O, {mmio} MMIO"));
        }
        let (pss_bytes, marker_overhead) = reported.marker_memory.map_or((None, None), |(p, o)| (Some(p), Some(o)));
        let overhead_bytes = marker_overhead.or(reported.exit_overhead).filter(|&b| b > 0);
        if overhead_bytes.is_some() {
            notes.push(boxbench_core::smaps::OVERHEAD_NOTE.to_owned());
        }
        Record {
            backend: BACKEND_NAME.to_owned(),
            phases: Phases {
                ready_ms: timeline.ms(reported.first_entry),
                userspace_ms: timeline.ms(reported.boot_timer),
                workload_ms: timeline.ms(console.marker_at),
                exit_ms: Some(removed_at.millis_since(timeline.started_at())),
                first_output_ms: timeline.ms(console.first_byte_at),
            },
            exit_code: outcome.exit_code(),
            outcome,
            console: console.text,
            memory: MemoryUsage {
                peak_bytes,
                pss_bytes: pss_bytes.filter(|&b| b > 0),
                overhead_bytes,
                shared_daemons_pss_bytes: None,
            },
            notes,
            details_ms,
        }
    }
}

impl Running {
    /// Waits for the child to be gone (it is, or is about to be, once its pipes closed).
    fn reap(&mut self) -> Result<(), LaunchError> {
        if self.status.is_some() {
            return Ok(());
        }
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid out-pointer; the pid is our own child.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc == self.pid {
                break;
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(LaunchError::backend(error));
            }
        }
        self.reaped_at = Some(MonotonicNs::now());
        self.status = Some(if libc::WIFSIGNALED(status) {
            ChildStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ChildStatus::Exited(libc::WEXITSTATUS(status))
        });
        Ok(())
    }

    /// How the instance ended, from what the child reported and how it exited.
    fn outcome(&self) -> Outcome {
        match (&self.reported.exit, &self.reported.failure) {
            (Some((true, _, _)), _) => Outcome::Exited { code: 0 },
            (Some((false, reason, _)), _) => Outcome::Failed { reason: reason.clone() },
            (None, Some(reason)) => Outcome::Failed { reason: reason.clone() },
            (None, None) if self.cgroup.oom_killed() => Outcome::OutOfMemory,
            (None, None) => match self.status {
                Some(ChildStatus::Signaled(libc::SIGSYS)) => Outcome::Failed { reason: SECCOMP_KILL_REASON.into() },
                Some(ChildStatus::Signaled(signal)) => Outcome::Signaled { signal },
                Some(ChildStatus::Exited(code)) => Outcome::Failed {
                    reason: format!("VMM child exited with status {code} without saying how the VM ended"),
                },
                None => Outcome::Failed { reason: "VMM child still running".into() },
            },
        }
    }
}

impl Drop for MicroVmInstance {
    fn drop(&mut self) {
        let Some(running) = &mut self.running else { return };
        if running.status.is_none() {
            // SAFETY: as in `kill`: our own unreaped child.
            unsafe { libc::kill(running.pid, libc::SIGKILL) };
            // Drop cannot report; the cgroup's own Drop removes it after this.
            let _ = running.reap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_comes_from_the_console_line() {
        let console = "6.1.192-boxbench\nBOXBENCH_READY\nBOXBENCH_EXIT_STATUS=3\r\n[ 1.0] reboot: Restarting system\n";
        assert_eq!(VM_DEFAULTS.exit_status(console), Some(3));
        assert_eq!(VM_DEFAULTS.exit_status("BOXBENCH_READY\n"), None);
        assert_eq!(VM_DEFAULTS.exit_status("BOXBENCH_EXIT_STATUS=x\n"), None);
    }

    #[test]
    fn a_root_on_the_disk_is_mounted_read_write_unless_the_disk_is_read_only() {
        for (read_only, mode) in [(false, "rw"), (true, "ro")] {
            let launcher = MicroVmLauncher::new(MicroVmOptions {
                guest: GuestKind::Linux,
                disks: vec![DiskConfig { path: "disk.img".into(), read_only }],
                root: Some("/dev/vda".into()),
                cmdline_extra: "quiet=0".into(),
                ..MicroVmOptions::default()
            });
            let cmdline = launcher.cmdline(&Workload::Hello);
            assert!(cmdline.ends_with(&format!(" root=/dev/vda {mode} quiet=0")), "{cmdline}");
        }
        let without = MicroVmLauncher::new(MicroVmOptions::default()).cmdline(&Workload::Hello);
        assert!(!without.contains("root="), "{without}");
    }

    #[test]
    fn the_compat_note_names_cmdline_memory_and_initramfs() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, gzip) = (dir.path().join("initramfs.cpio"), dir.path().join("initramfs.cpio.gz"));
        std::fs::write(&plain, b"070701").unwrap();
        std::fs::write(&gzip, [0x1f, 0x8b, 8, 0]).unwrap();
        let note = pvm_compat_note(64, Some(&plain));
        assert!(note.starts_with(PVM_COMPAT_NOTE_PREFIX) && note.ends_with(" applied"), "{note}");
        assert!(note.contains(kvm_pvm_cmdline()) && note.contains("64 MiB guest memory"), "{note}");
        assert!(note.contains(&format!("uncompressed initramfs {}", plain.display())), "{note}");
        assert!(pvm_compat_note(64, Some(&gzip)).contains("(gzip: "));
        assert!(pvm_compat_note(96, None).contains("96 MiB guest memory, no initramfs"));
    }
}
