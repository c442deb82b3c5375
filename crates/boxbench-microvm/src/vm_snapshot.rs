//! Taking a running VM's snapshot at its marker, and building a VM from a snapshot.
//!
//! Taking: the vCPU thread that wrote the marker's last byte tells the VMM's main thread, which asks
//! every vCPU to pause and kicks them out of KVM_RUN. Each vCPU thread re-enters KVM_RUN once with
//! `immediate_exit`, so KVM completes the I/O instruction the guest is in the middle of (the marker
//! byte's `out`) and stops at the next instruction boundary; it then saves its state and waits. The
//! main thread writes the state and guest memory ([`crate::snapshot`]) and lets the vCPUs carry on.
//!
//! Restoring: a new VM of the same size, its memory mapped MAP_PRIVATE from the snapshot's memory file
//! (copy-on-write: the file is never written), the same interrupt model (LAPICs only, saved per vCPU),
//! each vCPU given the booted VM's CPUID plus [`crate::snapshot::LEAF_RESTORED`] and its saved state.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use boxbench_core::MonotonicNs;
use kvm_bindings::{CpuId, kvm_cpuid_entry2};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::cpuid::{self, CpuidQuirks};
use crate::devices::Devices;
use crate::devices::serial::SerialPort;
use crate::hypervisor::{self, Hypervisor, HypervisorVcpu, HypervisorVm, KvmHypervisor, KvmVm};
use crate::interrupts::InterruptModel;
use crate::layout::{self, KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR};
use crate::msr;
use crate::observer::{BuildStep, VmObserver};
use crate::snapshot::{LEAF_RESTORED, RESTORED_MAGIC, Snapshot, SnapshotError, SnapshotFiles, VcpuState, VmState};
use crate::vcpu::{VmExit, handle_exit};
use crate::vm::{Vm, VmConfigError, VmError};

/// How often the main thread re-kicks vCPUs that have not paused yet.
const PAUSE_KICK_INTERVAL: Duration = Duration::from_micros(200);

/// A snapshot to take when the guest prints its marker: the files (created before the VM runs, as
/// the confined VMM may open none) and the flag the console's observer raises at the marker.
#[derive(Debug)]
pub struct SnapshotAtMarker<'a> {
    /// Where the snapshot goes.
    pub files: &'a SnapshotFiles,
    /// Raised once the marker has been printed.
    pub marker: Arc<AtomicBool>,
}

/// What a vCPU thread tells the VMM's main thread.
#[derive(Debug)]
pub(crate) enum RunEvent {
    /// This exit ends the VM.
    Ended(VmExit),
    /// The marker was printed: time to take the snapshot.
    SnapshotPoint,
}

#[derive(Debug, Default)]
struct PauseState {
    requested: bool,
    states: Vec<Option<Result<VcpuState, String>>>,
}

/// The pause of every vCPU for a snapshot, shared by the vCPU threads and the main thread.
#[derive(Debug)]
pub struct Pause {
    marker: Arc<AtomicBool>,
    /// Set once the snapshot point was reported (it is taken once).
    reported: AtomicBool,
    /// Mirrors `state.requested` for the vCPU loop's cheap check.
    requested: AtomicBool,
    state: Mutex<PauseState>,
    changed: Condvar,
    msr_indices: Vec<u32>,
    events: Mutex<Sender<RunEvent>>,
}

impl Pause {
    pub(crate) fn new(marker: Arc<AtomicBool>, vcpus: usize, events: Sender<RunEvent>) -> Result<Self, VmError> {
        let msr_indices = msr::boot_msrs()?.as_slice().iter().map(|entry| entry.index).collect();
        Ok(Self {
            marker,
            reported: AtomicBool::new(false),
            requested: AtomicBool::new(false),
            state: Mutex::new(PauseState { requested: false, states: vec![None; vcpus] }),
            changed: Condvar::new(),
            msr_indices,
            events: Mutex::new(events),
        })
    }

    /// Called by vCPU `id`'s thread after every exit: reports the marker once, and when a pause is
    /// requested brings the vCPU to an instruction boundary, hands over its state and waits until
    /// the snapshot is written. Returns how the VM ended if that happened meanwhile.
    pub(crate) fn check<V: HypervisorVcpu>(&self, vcpu: &mut V, id: u8, devices: &Devices) -> Option<VmExit> {
        if self.marker.load(Ordering::Acquire) && !self.reported.swap(true, Ordering::AcqRel) {
            // This vCPU pauses right away: were it to run on until the main thread asks, the guest
            // could reach its end first.
            self.state.lock().unwrap_or_else(PoisonError::into_inner).requested = true;
            self.requested.store(true, Ordering::Release);
            let _ = self.events.lock().unwrap_or_else(PoisonError::into_inner).send(RunEvent::SnapshotPoint);
        }
        if !self.requested.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.requested || state.states[usize::from(id)].is_some() {
            return None;
        }
        drop(state);
        vcpu.set_immediate_exit(true);
        let settled = loop {
            match vcpu.run() {
                Ok(crate::hypervisor::VcpuExit::Interrupted) => break Ok(()),
                Ok(exit) => {
                    if let Some(end) = handle_exit(exit, id, devices) {
                        break Err(end);
                    }
                }
                Err(error) => break Err(VmExit::RunFailed { vcpu: id, error: error.to_string() }),
            }
        };
        vcpu.set_immediate_exit(false);
        let saved = match &settled {
            Ok(()) => vcpu.save_state(&self.msr_indices).map_err(|e| e.to_string()),
            Err(end) => Err(format!("vCPU {id} ended while pausing: {end}")),
        };
        state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.states[usize::from(id)] = Some(saved);
        self.changed.notify_all();
        while state.requested {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        settled.err()
    }

    /// On the main thread: pauses every vCPU, writes the snapshot, lets the vCPUs carry on.
    pub(crate) fn snapshot(
        &self,
        threads: &[JoinHandle<()>],
        vm: &KvmVm,
        devices: &Devices,
        memory: &GuestMemoryMmap,
        files: &SnapshotFiles,
    ) -> Result<(), VmError> {
        use std::os::unix::thread::JoinHandleExt;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.requested = true;
        self.requested.store(true, Ordering::Release);
        while state.states.iter().any(Option::is_none) && !threads.iter().all(|t| t.is_finished()) {
            for thread in threads.iter().filter(|t| !t.is_finished()) {
                // SAFETY: the pthread_t comes from a JoinHandle not yet joined; the kick signal has a
                // do-nothing handler installed.
                unsafe { libc::pthread_kill(thread.as_pthread_t(), hypervisor::kick_signal()) };
            }
            state = self.changed.wait_timeout(state, PAUSE_KICK_INTERVAL).unwrap_or_else(PoisonError::into_inner).0;
        }
        let written = (|| {
            let mut vcpus = Vec::with_capacity(state.states.len());
            for (id, saved) in state.states.iter().enumerate() {
                match saved {
                    Some(Ok(vcpu)) => vcpus.push(vcpu.clone()),
                    Some(Err(reason)) => return Err(SnapshotError::Vcpu { id, reason: reason.clone() }.into()),
                    None => return Err(SnapshotError::Vcpu { id, reason: "did not pause".into() }.into()),
                }
            }
            let mem_bytes = vm_memory::GuestMemoryBackend::iter(memory).map(vm_memory::GuestMemoryRegion::len).sum();
            let clock = vm.clock()?;
            let vm_state = VmState { mem_bytes, vcpus, clock, serial: devices.serial_state() };
            let regions: Vec<(usize, usize)> = vm_memory::GuestMemoryBackend::iter(memory)
                .map(|region| (region.as_ptr() as usize, vm_memory::GuestMemoryRegion::len(region) as usize))
                .collect();
            // SAFETY: the regions are `memory`'s mappings, alive for this call; every vCPU is paused
            // (or finished), so nothing writes guest memory meanwhile.
            unsafe { files.write(&vm_state, &regions) }?;
            Ok(())
        })();
        state.requested = false;
        self.requested.store(false, Ordering::Release);
        self.changed.notify_all();
        written
    }
}

impl Vm {
    /// A VM from `snapshot`, its console going to `console`; milestones to `observer`. Its memory is
    /// the snapshot's memory file mapped MAP_PRIVATE.
    pub fn restore(
        snapshot: &Snapshot,
        quirks: CpuidQuirks,
        supported: &CpuId,
        console: Option<File>,
        observer: Arc<dyn VmObserver>,
    ) -> Result<Self, VmError> {
        let state = &snapshot.state;
        let kvm = KvmHypervisor::open().map_err(VmConfigError::from)?;
        let vm = kvm.create_vm()?;
        vm.set_system_pages(KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR)?;
        observer.build_step(BuildStep::VmCreated, MonotonicNs::now());
        let memory = map_snapshot_memory(&snapshot.memory, state.mem_bytes)
            .map_err(|source| SnapshotError::Io { path: snapshot.dir.join(crate::snapshot::MEMORY_FILE), source })?;
        for (slot, region) in vm_memory::GuestMemoryBackend::iter(&memory).enumerate() {
            use vm_memory::GuestMemoryRegion;
            // SAFETY: as in Vm::build: `region` belongs to `memory`, which the returned Vm owns and
            // drops after the VM fd and vCPUs.
            unsafe {
                vm.map_memory(slot as u32, region.start_addr().0, region.len(), region.as_ptr() as u64)?;
            }
        }
        observer.build_step(BuildStep::MemoryMapped, MonotonicNs::now());
        // A snapshot is only ever taken of boxbench's own guest, whose model this is.
        InterruptModel::SplitLapicOnly.create(&vm)?;
        vm.set_clock(&state.clock)?;
        observer.build_step(BuildStep::InterruptsCreated, MonotonicNs::now());
        let serial = SerialPort::from_state(&state.serial, console, observer.clone())?;
        let devices = Arc::new(Devices::new(serial, observer.clone()));
        observer.build_step(BuildStep::BootDataWritten, MonotonicNs::now());
        let count = state.vcpus.len() as u8;
        let mut vcpus = Vec::with_capacity(state.vcpus.len());
        for (id, saved) in state.vcpus.iter().enumerate() {
            let vcpu = vm.create_vcpu(id as u8)?;
            let mut cpuid = supported.clone();
            cpuid::adjust_for_vcpu(&mut cpuid, id as u8, count, quirks);
            let restored = kvm_cpuid_entry2 { function: LEAF_RESTORED, eax: RESTORED_MAGIC, ..Default::default() };
            cpuid.push(restored).map_err(|_| SnapshotError::Vcpu { id, reason: "CPUID table full".into() })?;
            vcpu.set_cpuid(&cpuid)?;
            vcpu.restore_state(saved)?;
            vcpus.push(vcpu);
        }
        observer.build_step(BuildStep::VcpusConfigured, MonotonicNs::now());
        Ok(Self { vcpus, vm, devices, observer, memory, entry: None })
    }
}

/// Guest RAM for `mem_bytes`, each region mapped MAP_PRIVATE from `file` at its offset (regions lie
/// one after another in the file).
fn map_snapshot_memory(file: &File, mem_bytes: u64) -> std::io::Result<GuestMemoryMmap> {
    let mut regions = Vec::new();
    let mut offset = 0u64;
    for (start, size) in layout::ram_ranges(mem_bytes) {
        let file_offset = FileOffset::new(file.try_clone()?, offset);
        let mapping = MmapRegionBuilder::<()>::new(size as usize)
            .with_file_offset(file_offset)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(std::io::Error::other)?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(start.0))
            .ok_or_else(|| std::io::Error::other("guest memory region wraps around"))?;
        regions.push(region);
        offset += size;
    }
    GuestMemoryMmap::from_regions(regions).map_err(std::io::Error::other)
}
