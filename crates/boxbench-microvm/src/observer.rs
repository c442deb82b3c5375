//! What a running VM reports as it happens: the moments boxbench turns into boot phases.
//!
//! The VMM calls these from its vCPU threads, synchronously, so a callback sees the guest exactly at
//! that point (the guest is stopped on that vCPU until it returns).

use std::fmt;

use boxbench_core::MonotonicNs;

/// A step of building a VM, reported as it completes (the VMM's own cost, step by step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStep {
    /// /dev/kvm opened and the VM created.
    VmCreated,
    /// Guest memory allocated and registered with KVM.
    MemoryMapped,
    /// The interrupt controllers of the VM's interrupt model created.
    InterruptsCreated,
    /// Kernel, initrd, command line and boot tables written to guest memory; devices created.
    BootDataWritten,
    /// Every vCPU created and configured.
    VcpusConfigured,
}

impl BuildStep {
    /// Every step, in the order a build reports them.
    pub const ALL: [BuildStep; 5] = [
        BuildStep::VmCreated,
        BuildStep::MemoryMapped,
        BuildStep::InterruptsCreated,
        BuildStep::BootDataWritten,
        BuildStep::VcpusConfigured,
    ];
}

/// Receives a running VM's milestones.
pub trait VmObserver: Send + Sync + fmt::Debug {
    /// A step of building the VM completed.
    fn build_step(&self, _step: BuildStep, _at: MonotonicNs) {}
    /// The boot vCPU is about to enter the guest for the first time.
    fn first_entry(&self, _at: MonotonicNs) {}
    /// The guest wrote the boot-timer magic: its userspace (or equivalent) is running.
    fn boot_timer(&self, _at: MonotonicNs) {}
    /// The guest printed the ready marker on its serial console.
    fn console_marker(&self, _at: MonotonicNs) {}
    /// Every vCPU has stopped; guest memory is still mapped (the last moment to measure it).
    fn vm_ended(&self, _at: MonotonicNs) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct IgnoreMilestones;

impl VmObserver for IgnoreMilestones {}
