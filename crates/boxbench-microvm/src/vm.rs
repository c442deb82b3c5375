//! A whole micro-VM: its configuration, the checks that turn a configuration into a bootable plan,
//! the guest memory prepared for the boot vCPU, and the run of its vCPU threads.
//!
//! Order matters and follows what KVM and the guest need: guest memory is mapped first (cheap before
//! the irqchip exists), the interrupt controllers the guest needs ([`InterruptModel`]) exist before any
//! vCPU (vCPUs get their LAPIC at creation), and
//! the boot vCPU enters only after every vCPU is configured so APs are ready for the guest's SIPIs.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use boxbench_core::MonotonicNs;
use boxbench_core::host::KvmFlavour;
use kvm_bindings::CpuId;
use seccompiler::BpfProgram;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::boot_params::{self, InitrdRegion};
use crate::cpuid::CpuidQuirks;
use crate::devices::serial::{SerialError, SerialPort};
use crate::devices::virtio::{self, VirtioError};
use crate::devices::{Devices, IgnoredAccesses};
use crate::disk::{DiskConfig, DiskError, DiskImage};
use crate::gdt::{self, GdtError};
use crate::hypervisor::{self, Hypervisor, HypervisorError, HypervisorVm, KvmHypervisor, KvmVcpu, KvmVm};
use crate::interrupts::InterruptModel;
use crate::layout::{self, KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::loader::{self, BootEntry, KernelInfo, LoaderError};
use crate::mptable::{self, MpTableError};
use boxbench_core::spec::VM_DEFAULTS;

use crate::msr::{self, MsrError};
use crate::observer::{BuildStep, IgnoreMilestones, VmObserver};
use crate::paging::{self, PagingError};
use crate::pvh::{self, PvhError};
use crate::seccomp::{self, SeccompError};
use crate::snapshot::SnapshotError;
use crate::vcpu::{self, BootState, VmExit};
use crate::vm_snapshot::{Pause, RunEvent, SnapshotAtMarker};

/// Stack of each vCPU thread: the run loop needs little, and a fixed size keeps thread creation from
/// reading `RUST_MIN_STACK` (an environment lock) in a forked child.
const VCPU_THREAD_STACK: usize = 256 * 1024;
/// How often a stopping VM re-kicks a vCPU thread that has not left KVM_RUN yet.
const KICK_INTERVAL: Duration = Duration::from_micros(200);

/// What to boot and how big the machine is.
#[derive(Debug)]
pub struct VmConfig {
    /// The kernel: a bzImage or an ELF (with a PVH note for a PVH entry).
    pub kernel: PathBuf,
    /// The initrd, if any.
    pub initrd: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub vcpus: u8,
    /// The interrupt controllers KVM emulates (what the guest needs).
    pub interrupts: InterruptModel,
    /// Host-specific CPUID fixes.
    pub cpuid_quirks: CpuidQuirks,
    /// Where the serial console's output goes (`None`: discarded).
    pub console: Option<File>,
    /// Who hears of the VM's milestones.
    pub observer: Arc<dyn VmObserver>,
    /// virtio-blk disks, in order (`/dev/vda`, `/dev/vdb`, …).
    pub disks: Vec<DiskConfig>,
}

impl VmConfig {
    /// A configuration with the defaults: VM_DEFAULTS' memory, one vCPU, no initrd, an empty command
    /// line, KVM's full in-kernel irqchip (what any guest can boot on), output discarded, and the CPUID
    /// fixes this host's KVM needs.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            memory_mib: (VM_DEFAULTS.memory_bytes >> 20) as u32,
            vcpus: 1,
            interrupts: InterruptModel::InKernelIrqchip,
            cpuid_quirks: CpuidQuirks { hide_pv_clock_features: KvmFlavour::detect() == KvmFlavour::Pvm },
            console: None,
            observer: Arc::new(IgnoreMilestones),
            disks: Vec::new(),
        }
    }

    /// Checks the files and settings without touching KVM, and works out where everything goes. The
    /// disks are opened and locked here: the plan holds them until the VM is over.
    pub fn plan(&self) -> Result<BootPlan, VmConfigError> {
        if self.vcpus == 0 {
            return Err(VmConfigError::NoVcpus);
        }
        // Each disk is announced to the guest on the command line, after the caller's arguments.
        let mut cmdline = self.cmdline.clone();
        for index in 0..self.disks.len() {
            cmdline.push(' ');
            cmdline.push_str(&virtio::cmdline_arg(index)?);
        }
        loader::check_cmdline(&cmdline)?;
        let kernel = loader::inspect_kernel(&self.kernel)?;
        let mem_bytes = u64::from(self.memory_mib) << 20;
        let low_end = layout::low_ram_end(mem_bytes);
        if kernel.extent_end > low_end {
            return Err(VmConfigError::MemoryTooSmall {
                memory_mib: self.memory_mib,
                kernel: self.kernel.clone(),
                needed_mib: kernel.extent_end.div_ceil(1 << 20),
            });
        }
        let host = host_memory_bytes();
        if host.is_some_and(|host| mem_bytes > host) {
            return Err(VmConfigError::MemoryAboveHost {
                memory_mib: self.memory_mib,
                host_mib: host.unwrap_or(0) >> 20,
            });
        }
        let initrd = match &self.initrd {
            Some(path) => {
                let size = loader::inspect_initrd(path)?;
                Some((path.clone(), loader::place_initrd(path, size, kernel.extent_end, low_end)?))
            }
            None => None,
        };
        let disks = self.disks.iter().map(DiskImage::open).collect::<Result<Vec<_>, _>>()?;
        if !disks.is_empty() && self.interrupts.serial_gsi().is_none() {
            return Err(VmConfigError::DisksWithoutIoapic);
        }
        Ok(BootPlan { kernel, initrd, cmdline, mem_bytes, vcpus: self.vcpus, disks, interrupts: self.interrupts })
    }
}

/// A configuration that passed its checks: everything the boot data is written from.
#[derive(Debug, Clone)]
pub struct BootPlan {
    /// The inspected kernel.
    pub kernel: KernelInfo,
    /// The initrd file and where it goes.
    pub initrd: Option<(PathBuf, InitrdRegion)>,
    /// The command line.
    pub cmdline: String,
    /// Guest memory in bytes.
    pub mem_bytes: u64,
    /// Virtual CPUs.
    pub vcpus: u8,
    /// The disks, open and locked.
    pub disks: Vec<DiskImage>,
    /// The interrupt controllers KVM emulates.
    pub interrupts: InterruptModel,
}

/// A configuration that cannot become a VM; each message names the setting or file.
#[derive(Debug, thiserror::Error)]
pub enum VmConfigError {
    /// Zero vCPUs.
    #[error("vcpus: 0 (a VM needs at least one)")]
    NoVcpus,
    /// Disks asked for with an interrupt model that has no IOAPIC to raise their interrupts.
    #[error("disks: virtio-blk needs the in-kernel IOAPIC, which boxbench's own guest's interrupt model leaves out")]
    DisksWithoutIoapic,
    /// More vCPUs than KVM allows.
    #[error("vcpus: {vcpus} is more than KVM_CAP_MAX_VCPUS ({max}) on this host")]
    TooManyVcpus { vcpus: u8, max: usize },
    /// More vCPUs than the MP table can describe.
    #[error(transparent)]
    MpTable(#[from] MpTableError),
    /// Guest memory smaller than the kernel needs.
    #[error("memory_mib: {memory_mib} MiB is too small for kernel {}, which needs {needed_mib} MiB", kernel.display())]
    MemoryTooSmall { memory_mib: u32, kernel: PathBuf, needed_mib: u64 },
    /// Guest memory larger than the host.
    #[error("memory_mib: {memory_mib} MiB is more than this host's {host_mib} MiB")]
    MemoryAboveHost { memory_mib: u32, host_mib: u64 },
    /// A kernel, initrd or command line problem.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// A disk that cannot be used.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// More disks than the machine has room for.
    #[error(transparent)]
    Virtio(#[from] VirtioError),
    /// KVM is missing or refused.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
}

/// Building or running the VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] VmConfigError),
    /// A KVM call failed.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// Guest memory could not be allocated.
    #[error("allocating {mib} MiB of guest memory: {source}")]
    Memory { mib: u64, source: vm_memory::mmap::FromRangesError },
    /// Loading the kernel, initrd or command line failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Writing the zero page failed.
    #[error(transparent)]
    BootParams(#[from] boot_params::BootParamsError),
    /// Writing the PVH start info failed.
    #[error(transparent)]
    Pvh(#[from] PvhError),
    /// Writing the GDT failed.
    #[error(transparent)]
    Gdt(#[from] GdtError),
    /// Writing the page tables failed.
    #[error(transparent)]
    Paging(#[from] PagingError),
    /// Writing the MP table failed.
    #[error(transparent)]
    MpTable(#[from] MpTableError),
    /// The boot MSR list could not be built.
    #[error(transparent)]
    Msr(#[from] MsrError),
    /// The serial port could not be created.
    #[error(transparent)]
    Serial(#[from] SerialError),
    /// A virtio device could not be attached.
    #[error(transparent)]
    VirtioDevice(#[from] VirtioError),
    /// The snapshot could not be taken, written or restored.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A vCPU thread could not be started.
    #[error("starting the thread of vCPU {vcpu}: {source}")]
    Thread { vcpu: u8, source: std::io::Error },
    /// The seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// The kick signal handler could not be installed.
    #[error("installing the vCPU kick signal handler: {0}")]
    KickHandler(std::io::Error),
}

/// How a VM run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The exit that ended it.
    pub exit: VmExit,
    /// Guest accesses to devices that do not exist.
    pub ignored: IgnoredAccesses,
}

/// Writes everything the guest needs in memory before its first instruction: the kernel, initrd and
/// command line, the GDT, page tables and MP table, and the zero page or PVH start info. Returns the
/// boot vCPU's starting state. Needs no KVM: tests read the result back from `mem`.
pub fn write_boot_data(mem: &GuestMemoryMmap, plan: &BootPlan) -> Result<BootState, VmError> {
    let kernel = loader::load_kernel(mem, &plan.kernel)?;
    let initrd = match &plan.initrd {
        Some((path, region)) => {
            loader::load_initrd(mem, path, *region)?;
            Some(*region)
        }
        None => None,
    };
    loader::load_cmdline(mem, &plan.cmdline)?;
    gdt::write_gdt_and_idt(mem)?;
    let page_table = paging::write_identity_map(mem)?;
    mptable::write_mptable(mem, plan.vcpus)?;
    let start_info = match kernel.entry {
        BootEntry::Linux64 { .. } => {
            boot_params::write_zero_page(mem, plan.mem_bytes, kernel.setup_header, plan.cmdline.len(), initrd)?;
            0
        }
        BootEntry::Pvh { .. } => pvh::write_start_info(mem, plan.mem_bytes, initrd)?.0,
    };
    Ok(BootState { entry: kernel.entry, start_info, page_table })
}

/// Allocates guest memory for `mem_bytes` (anonymous, untouched until the guest uses it).
pub fn allocate_guest_memory(mem_bytes: u64) -> Result<GuestMemoryMmap, VmError> {
    let ranges: Vec<(GuestAddress, usize)> =
        layout::ram_ranges(mem_bytes).into_iter().map(|(start, size)| (start, size as usize)).collect();
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| VmError::Memory { mib: mem_bytes >> 20, source })
}

/// A VM ready to run: memory written, devices created, vCPUs configured.
#[derive(Debug)]
pub struct Vm {
    // Field order is drop order: vCPUs and the VM fd go before the memory they map.
    pub(crate) vcpus: Vec<KvmVcpu>,
    pub(crate) vm: KvmVm,
    pub(crate) devices: Arc<Devices>,
    pub(crate) observer: Arc<dyn VmObserver>,
    pub(crate) memory: GuestMemoryMmap,
    /// How the boot vCPU entered the guest (`None` for a VM restored from a snapshot).
    pub(crate) entry: Option<BootEntry>,
}

impl TryFrom<VmConfig> for Vm {
    type Error = VmError;

    fn try_from(config: VmConfig) -> Result<Self, VmError> {
        let plan = config.plan()?;
        Vm::build(&plan, config.cpuid_quirks, config.console, config.observer)
    }
}

impl Vm {
    /// Builds a VM from a checked plan (what `TryFrom<VmConfig>` does after [`VmConfig::plan`]).
    pub fn build(
        plan: &BootPlan,
        quirks: CpuidQuirks,
        console: Option<File>,
        observer: Arc<dyn VmObserver>,
    ) -> Result<Self, VmError> {
        let supported = KvmHypervisor::open().map_err(VmConfigError::from)?.supported_cpuid()?;
        Self::build_with_cpuid(plan, quirks, &supported, console, observer)
    }

    /// [`Vm::build`] with the host's KVM_GET_SUPPORTED_CPUID already read: it is the same for every
    /// VM, and reading it takes about 0.3 ms on kvm_pvm hosts, so a launcher reads it once.
    pub fn build_with_cpuid(
        plan: &BootPlan,
        quirks: CpuidQuirks,
        supported: &CpuId,
        console: Option<File>,
        observer: Arc<dyn VmObserver>,
    ) -> Result<Self, VmError> {
        let kvm = KvmHypervisor::open().map_err(VmConfigError::from)?;
        let max = kvm.max_vcpus();
        if usize::from(plan.vcpus) > max {
            return Err(VmConfigError::TooManyVcpus { vcpus: plan.vcpus, max }.into());
        }
        if plan.vcpus > mptable::max_cpus() {
            return Err(VmConfigError::MpTable(MpTableError::TooManyCpus {
                vcpus: plan.vcpus,
                max: mptable::max_cpus(),
            })
            .into());
        }
        let vm = kvm.create_vm()?;
        observer.build_step(BuildStep::VmCreated, MonotonicNs::now());
        // On VMX, KVM emulates real mode with a TSS and an identity-map page it needs placed in guest
        // address space outside RAM; elsewhere these calls are harmless.
        vm.set_system_pages(KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR)?;
        // Memory slots go in before the irqchip: once the irqchip exists every slot update waits for
        // KVM's SRCU readers (measured here: 0.1 ms before, 6–7 ms after, for 128 MiB).
        let memory = allocate_guest_memory(plan.mem_bytes)?;
        for (slot, region) in memory.iter().enumerate() {
            // SAFETY: `region` belongs to `memory`, which the returned Vm owns and drops after the VM
            // fd and vCPUs (field order), so the mapping outlives its use as guest memory; nothing else
            // in the VMM uses it but through vm-memory's checked accessors.
            unsafe {
                vm.map_memory(slot as u32, region.start_addr().0, region.len(), region.as_ptr() as u64)?;
            }
        }
        observer.build_step(BuildStep::MemoryMapped, MonotonicNs::now());
        // The interrupt controllers must exist before the first vCPU, which gets its LAPIC at creation.
        plan.interrupts.create(&vm)?;
        observer.build_step(BuildStep::InterruptsCreated, MonotonicNs::now());
        let boot = write_boot_data(&memory, plan)?;

        let serial = SerialPort::new(console, observer.clone())?;
        if let Some(gsi) = plan.interrupts.serial_gsi() {
            vm.register_irqfd(serial.irq_eventfd(), gsi)?;
        }
        let disks = virtio::attach_disks(&vm, &memory, &plan.disks)?;
        let devices = Arc::new(Devices::new(serial, observer.clone()).with_virtio(disks));
        observer.build_step(BuildStep::BootDataWritten, MonotonicNs::now());

        let msrs = msr::boot_msrs()?;
        let mut vcpus = Vec::with_capacity(plan.vcpus.into());
        for id in 0..plan.vcpus {
            let vcpu = vm.create_vcpu(id)?;
            vcpu::configure(&vcpu, id, plan.vcpus, supported, quirks, &msrs, &boot)?;
            vcpus.push(vcpu);
        }
        observer.build_step(BuildStep::VcpusConfigured, MonotonicNs::now());
        Ok(Self { vcpus, vm, devices, observer, memory, entry: Some(boot.entry) })
    }

    /// The guest's memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// How the boot vCPU enters the guest (`None` for a VM restored from a snapshot).
    pub fn entry(&self) -> Option<BootEntry> {
        self.entry
    }

    /// Host virtual address ranges (start, length) of guest RAM.
    pub fn guest_memory_host_ranges(&self) -> Vec<(usize, usize)> {
        self.memory.iter().map(|region| (region.as_ptr() as usize, region.len() as usize)).collect()
    }

    /// Runs every vCPU on its own thread until one of them ends the VM, then stops the others and
    /// returns how it ended. The boot vCPU enters first thing; APs wait for the guest's SIPIs.
    ///
    /// Stopping uses a signal ([`hypervisor::kick_signal`]) whose do-nothing handler this installs for
    /// the whole process.
    pub fn run(self) -> Result<RunSummary, VmError> {
        self.run_confined(None)
    }

    /// [`Vm::run`], with every thread of the process confined by the seccomp `filter` (see
    /// [`crate::seccomp`]) once the vCPU threads have started and before any of them enters the guest.
    pub fn run_confined(self, filter: Option<&BpfProgram>) -> Result<RunSummary, VmError> {
        self.run_snapshotting(filter, None)
    }

    /// [`Vm::run_confined`], and when the guest prints its marker, every vCPU is paused at an
    /// instruction boundary, the VM is written to `snapshot`'s files, and the guest carries on.
    pub fn run_snapshotting(
        self,
        filter: Option<&BpfProgram>,
        snapshot: Option<SnapshotAtMarker<'_>>,
    ) -> Result<RunSummary, VmError> {
        hypervisor::install_kick_handler().map_err(VmError::KickHandler)?;
        let Vm { vcpus, vm, devices, observer, memory, entry: _ } = self;
        let stop = Arc::new(AtomicBool::new(false));
        let (ended, first_exit) = mpsc::channel::<RunEvent>();
        let (pause, snapshot_files) = match snapshot {
            Some(SnapshotAtMarker { files, marker }) => {
                (Some(Arc::new(Pause::new(marker, vcpus.len(), ended.clone())?)), Some(files))
            }
            None => (None, None),
        };
        // Each thread says it has started (its start-up system calls are behind it) and waits for the
        // go, which comes once the filter is in place; a dropped go means "do not run".
        let (started, all_started) = mpsc::channel::<()>();
        let mut go = Vec::with_capacity(vcpus.len());
        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(vcpus.len());
        let mut spawn_error = None;
        for (id, mut vcpu) in vcpus.into_iter().enumerate() {
            let id = id as u8;
            let (devices, observer, stop, ended) = (devices.clone(), observer.clone(), stop.clone(), ended.clone());
            let pause = pause.clone();
            let started = started.clone();
            let (go_sender, go_receiver) = mpsc::channel::<()>();
            let spawned =
                std::thread::Builder::new().name(format!("vcpu{id}")).stack_size(VCPU_THREAD_STACK).spawn(move || {
                    let _ = started.send(());
                    if go_receiver.recv().is_err() {
                        return;
                    }
                    if let Some(exit) = vcpu::run(&mut vcpu, id, &devices, observer.as_ref(), &stop, pause.as_deref()) {
                        // The receiver only goes away once the VM is over; nothing to tell then.
                        let _ = ended.send(RunEvent::Ended(exit));
                    }
                });
            match spawned {
                Ok(handle) => {
                    threads.push(handle);
                    go.push(go_sender);
                }
                Err(source) => {
                    spawn_error = Some(VmError::Thread { vcpu: id, source });
                    break;
                }
            }
        }
        drop((ended, started));
        let mut snapshot_error = None;
        for _ in &threads {
            // A thread that died before saying so has nothing to wait for.
            let _ = all_started.recv();
        }
        let error = match (spawn_error, filter) {
            (Some(error), _) => Some(error),
            (None, Some(filter)) => seccomp::confine_all_threads(filter).err().map(VmError::from),
            (None, None) => None,
        };
        let exit = match error {
            Some(_) => {
                drop(go);
                None
            }
            None => {
                for sender in &go {
                    let _ = sender.send(());
                }
                loop {
                    match first_exit.recv() {
                        Ok(RunEvent::Ended(exit)) => break Some(exit),
                        Ok(RunEvent::SnapshotPoint) => {
                            if let (Some(pause), Some(files)) = (&pause, snapshot_files) {
                                let written = pause.snapshot(&threads, &vm, &devices, &memory, files);
                                snapshot_error = written.err();
                            }
                        }
                        Err(_) => break None,
                    }
                }
            }
        };
        stop_vcpus(&stop, threads);
        observer.vm_ended(MonotonicNs::now());
        drop(vm);
        drop(memory);
        if let Some(error) = error.or(snapshot_error) {
            return Err(error);
        }
        let exit = exit.unwrap_or(VmExit::RunFailed { vcpu: 0, error: "every vCPU thread ended".into() });
        Ok(RunSummary { exit, ignored: devices.ignored() })
    }
}

/// Sets `stop` and kicks every vCPU thread out of KVM_RUN until it has finished, then joins it.
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    use std::os::unix::thread::JoinHandleExt;
    stop.store(true, Ordering::Release);
    for thread in threads {
        while !thread.is_finished() {
            // SAFETY: the pthread_t comes from a JoinHandle not yet joined, so it names a live (or
            // finished but unjoined) thread; the kick signal has a do-nothing handler installed.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), hypervisor::kick_signal()) };
            std::thread::sleep(KICK_INTERVAL);
        }
        // A vCPU thread that panicked has nothing more to report than the exit already chosen.
        let _ = thread.join();
    }
}

/// Physical memory of the host, from /proc/meminfo.
fn host_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok())?;
    Some(kib * 1024)
}
