//! The VMM child process: forked per VM, placed in the instance cgroup, it builds and runs the VM and
//! exits, so a crash or a kill cannot leave KVM objects, guest memory or vCPU threads in boxbench.
//!
//! Once the VM is built and its vCPU threads have started, the child confines every thread with the
//! run loop's seccomp filter ([`crate::seccomp`]) before the first KVM_RUN. If KVM returns an error,
//! the child reports it as how the VM ended and exits normally.
//!
//! The child reports over two pipes: fixed-size [`ChildEvent`] records (milestones, memory, how the VM
//! ended) and the raw serial output (boxbench's console capture reads it).

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use boxbench_core::MonotonicNs;
use boxbench_core::smaps::ResidentSplit;
use kvm_bindings::CpuId;
use seccompiler::BpfProgram;

use crate::cpuid::CpuidQuirks;
use crate::events::ChildEvent;
use crate::observer::{BuildStep, VmObserver};
use crate::snapshot::{Snapshot, SnapshotFiles};
use crate::vm::{BootPlan, Vm};
use crate::vm_snapshot::SnapshotAtMarker;
use crate::vmm_memory::Smaps;

/// Exit status of a child that reported how its VM ended.
const EXIT_REPORTED: i32 = 0;
/// Exit status of a child that failed (and said why in a `Failed` record).
const EXIT_FAILED: i32 = 1;
/// Exit status of a child that panicked.
const EXIT_PANICKED: i32 = 101;

/// Everything the child needs, prepared by the parent before `fork` so the child allocates as little
/// as possible before it is on its own.
#[derive(Debug)]
pub struct ChildSetup {
    /// The checked boot plan.
    pub plan: BootPlan,
    /// CPUID fixes for this host.
    pub quirks: CpuidQuirks,
    /// The host's KVM_GET_SUPPORTED_CPUID, read once by the launcher.
    pub supported_cpuid: CpuId,
    /// The run loop's seccomp filter, compiled once by the launcher.
    pub filter: BpfProgram,
    /// Files to write a snapshot to when the guest prints its marker.
    pub snapshot_at_marker: Option<SnapshotFiles>,
    /// The snapshot to start the VM from, instead of booting the plan's kernel.
    pub restore: Option<Arc<Snapshot>>,
    /// The instance cgroup's join file, open for writing (the launch boundary's rule, in
    /// `boxbench_core::boundary`: `tasks` on cgroup v1, `cgroup.procs` on v2).
    pub cgroup_join: RawFd,
    /// The parent's pid, to notice a parent that died before `PR_SET_PDEATHSIG` took effect.
    pub parent: libc::pid_t,
}

/// Reports milestones as event records from whichever vCPU thread sees them.
#[derive(Debug)]
struct Reporter {
    events: File,
    smaps: Option<Smaps>,
    guest_ranges: OnceLock<Vec<(usize, usize)>>,
    measured_at_marker: AtomicBool,
    /// Raised at the marker (the snapshot point).
    marker: Arc<AtomicBool>,
}

impl Reporter {
    fn send(&self, event: &ChildEvent) {
        // One write per record (≤ PIPE_BUF: atomic). If the parent stopped reading there is nobody to
        // tell, and PR_SET_PDEATHSIG ends this process if the parent is gone.
        let _ = (&self.events).write(&event.encode());
    }

    fn resident_split(&self) -> Option<ResidentSplit> {
        self.smaps.as_ref()?.resident_split(self.guest_ranges.get()?)
    }
}

impl VmObserver for Reporter {
    fn build_step(&self, step: BuildStep, at: MonotonicNs) {
        self.send(&ChildEvent::BuildStep { step, at });
    }

    fn first_entry(&self, at: MonotonicNs) {
        self.send(&ChildEvent::FirstEntry { at });
    }

    fn boot_timer(&self, at: MonotonicNs) {
        self.send(&ChildEvent::BootTimer { at });
    }

    fn console_marker(&self, at: MonotonicNs) {
        // Measured right here, on the vCPU thread that wrote the marker's last byte, while the guest is
        // stopped on it: the figures are those of the moment the marker appeared.
        let split = self.resident_split();
        let pss_bytes = split.map_or(0, |split| split.pss);
        let overhead_bytes = split.map_or(0, |split| split.overhead());
        self.send(&ChildEvent::MarkerMemory { at, pss_bytes, overhead_bytes });
        self.measured_at_marker.store(true, Ordering::Release);
        self.marker.store(true, Ordering::Release);
    }

    fn vm_ended(&self, at: MonotonicNs) {
        self.send(&ChildEvent::VcpusStopped { at });
        // Reading smaps takes a while; at exit it is only worth it when the marker never came.
        if self.measured_at_marker.load(Ordering::Acquire) {
            return;
        }
        if let Some(split) = self.resident_split() {
            self.send(&ChildEvent::ExitMemory { at, overhead_bytes: split.overhead() });
        }
    }
}

/// Forks the VMM child. Returns its pid in the parent; the child never returns.
///
/// `events` and `console` are the write ends of the two pipes; the parent must close its copies after
/// this returns.
pub fn spawn(setup: &ChildSetup, events: &OwnedFd, console: &OwnedFd) -> std::io::Result<libc::pid_t> {
    // SAFETY: fork is called from a possibly multi-threaded process. Only this thread exists in the
    // child, so the child must not wait for a lock another thread may have held at the fork. The child
    // path below takes none that way: glibc's malloc resets its locks in the child (fork-safe), the
    // child never prints through Rust's stdout/stderr locks or reads the environment (vCPU threads are
    // spawned with an explicit stack size, so std does not consult RUST_MIN_STACK), and every other
    // object it uses (files, KVM fds, guest memory, the mutexes of its own devices) is created in the
    // child after the fork. It leaves by `_exit` only, so no destructor of a parent-owned value (the
    // instance cgroup, the parent's pipes) runs in the child.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(std::io::Error::last_os_error()),
        0 => child_main(setup, events.as_raw_fd(), console.as_raw_fd()),
        pid => Ok(pid),
    }
}

fn child_main(setup: &ChildSetup, events_fd: RawFd, console_fd: RawFd) -> ! {
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid have no memory-safety preconditions.
    let orphaned = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        libc::getppid() != setup.parent
    };
    if orphaned {
        exit_now(EXIT_FAILED);
    }
    // The disk images stay open: they were opened and locked before the fork, and the seccomp filter
    // allows no `open` once the VM runs.
    let mut keep = vec![events_fd, console_fd, setup.cgroup_join];
    keep.extend(setup.plan.disks.iter().map(|disk| disk.file().as_raw_fd()));
    keep.extend(setup.snapshot_at_marker.iter().flat_map(SnapshotFiles::raw_fds));
    keep.extend(setup.restore.iter().map(|snapshot| snapshot.memory.as_raw_fd()));
    close_other_fds(&keep);
    // SAFETY: `events_fd` and `console_fd` are open pipe write ends inherited from the parent, and
    // nothing else in this process owns them (the parent's OwnedFds never drop here: the child leaves
    // through _exit).
    let (events, console) = unsafe { (File::from_raw_fd(events_fd), File::from_raw_fd(console_fd)) };
    let reporter = Arc::new(Reporter {
        events,
        // Opened now: the seccomp filter allows no `open` once the VM runs.
        smaps: Smaps::open().ok(),
        guest_ranges: OnceLock::new(),
        measured_at_marker: AtomicBool::new(false),
        marker: Arc::new(AtomicBool::new(false)),
    });
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_vm(setup, console, &reporter)));
    let status = match result {
        Ok(Ok(())) => EXIT_REPORTED,
        Ok(Err(reason)) => {
            reporter.send(&ChildEvent::Failed { reason });
            EXIT_FAILED
        }
        Err(_) => {
            reporter.send(&ChildEvent::Failed { reason: "VMM child panicked".into() });
            EXIT_PANICKED
        }
    };
    exit_now(status)
}

fn run_vm(setup: &ChildSetup, console: File, reporter: &Arc<Reporter>) -> Result<(), String> {
    join_cgroup(setup.cgroup_join)?;
    reporter.send(&ChildEvent::CgroupJoined { at: MonotonicNs::now() });
    let vm = match &setup.restore {
        Some(snapshot) => Vm::restore(snapshot, setup.quirks, &setup.supported_cpuid, Some(console), reporter.clone()),
        None => {
            Vm::build_with_cpuid(&setup.plan, setup.quirks, &setup.supported_cpuid, Some(console), reporter.clone())
        }
    }
    .map_err(|e| e.to_string())?;
    // The guest ranges are known once memory is allocated; the marker measurement needs them.
    let _ = reporter.guest_ranges.set(vm.guest_memory_host_ranges());
    let snapshot =
        setup.snapshot_at_marker.as_ref().map(|files| SnapshotAtMarker { files, marker: reporter.marker.clone() });
    let summary = vm.run_snapshotting(Some(&setup.filter), snapshot).map_err(|e| e.to_string())?;
    // Stamped after `run` released the VM: "VM end" includes KVM's teardown.
    let at = MonotonicNs::now();
    reporter.send(&ChildEvent::Ignored { port_io: summary.ignored.port_io, mmio: summary.ignored.mmio });
    let clean = matches!(summary.exit, crate::vcpu::VmExit::Reset(_));
    reporter.send(&ChildEvent::Exit { at, clean, reason: summary.exit.to_string() });
    Ok(())
}

/// Moves this process into the instance cgroup before it allocates guest memory, so every page the
/// VM touches is charged there. The child is still single-threaded, so on v1 (`tasks`) that moves the
/// whole process; threads it creates later start in the cgroup.
fn join_cgroup(join_fd: RawFd) -> Result<(), String> {
    let joined =
        boxbench_core::boundary::join_writing_task(join_fd).map_err(|e| format!("joining the instance cgroup: {e}"));
    // SAFETY: `join_fd` is this child's inherited copy of the join file, not used afterwards.
    unsafe { libc::close(join_fd) };
    joined
}

/// Closes every inherited descriptor above stderr except `keep`, so pipes of other instances the
/// parent was launching concurrently do not stay open in this child (their readers would never see
/// end of file).
fn close_other_fds(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.sort_unstable();
    let mut first = 3;
    for fd in keep.into_iter().chain(std::iter::once(RawFd::MAX)) {
        if fd > first {
            // SAFETY: close_range only closes descriptors; the ones this child uses are excluded.
            unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, (fd - 1) as libc::c_uint, 0) };
        }
        first = first.max(fd.saturating_add(1));
    }
}

fn exit_now(status: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers or destructors, which belong to
    // the parent's copy of this address space.
    unsafe { libc::_exit(status) }
}
