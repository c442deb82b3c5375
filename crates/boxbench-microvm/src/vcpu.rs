//! One vCPU: its boot state, and the loop that runs it on its own thread and turns exits into device
//! accesses or the end of the VM.

use std::sync::atomic::{AtomicBool, Ordering};

use boxbench_core::MonotonicNs;
use kvm_bindings::{CpuId, Msrs};

use crate::cpuid::{self, CpuidQuirks};
use crate::devices::{Devices, ResetSource};
use crate::fpu;
use crate::hypervisor::{HypervisorError, HypervisorVcpu, VcpuExit};
use crate::loader::BootEntry;
use crate::observer::VmObserver;
use crate::regs;

/// How the VM ended, as the vCPU that ended it saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest asked for a reset: boxbench's and Linux's way to end cleanly.
    Reset(ResetSource),
    /// A vCPU shut down (KVM_EXIT_SHUTDOWN): the guest triple-faulted.
    TripleFault { vcpu: u8 },
    /// KVM could not run the guest (KVM_EXIT_INTERNAL_ERROR) with this suberror.
    InternalError { vcpu: u8, suberror: u32 },
    /// VM entry failed (KVM_EXIT_FAIL_ENTRY) with this hardware reason.
    FailEntry { vcpu: u8, reason: u64 },
    /// An exit the VMM does not handle.
    UnhandledExit { vcpu: u8, exit: &'static str },
    /// KVM_RUN itself failed.
    RunFailed { vcpu: u8, error: String },
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Reset(ResetSource::I8042) => f.write_str("guest reboot (i8042 reset)"),
            VmExit::Reset(ResetSource::ResetControl) => f.write_str("guest reboot (reset control 0xcf9)"),
            VmExit::TripleFault { vcpu } => write!(f, "triple fault on vCPU {vcpu} (KVM_EXIT_SHUTDOWN)"),
            VmExit::InternalError { vcpu, suberror } => {
                write!(f, "KVM internal error on vCPU {vcpu}, suberror {suberror} ({})", suberror_name(*suberror))
            }
            VmExit::FailEntry { vcpu, reason } => {
                write!(f, "KVM entry failure on vCPU {vcpu}, hardware reason {reason:#x}")
            }
            VmExit::UnhandledExit { vcpu, exit } => write!(f, "unhandled {exit} on vCPU {vcpu}"),
            VmExit::RunFailed { vcpu, error } => write!(f, "vCPU {vcpu}: {error}"),
        }
    }
}

fn suberror_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "emulation failure",
        2 => "simultaneous exceptions",
        3 => "delivery event",
        4 => "unexpected exit reason",
        _ => "unknown",
    }
}

/// What a vCPU starts with beyond KVM's reset state.
#[derive(Debug, Clone, Copy)]
pub struct BootState {
    /// Where and how the boot vCPU enters the guest.
    pub entry: BootEntry,
    /// The PVH start info address (EBX of a PVH entry).
    pub start_info: u64,
    /// CR3 for a 64-bit entry.
    pub page_table: u64,
}

/// Sets up vCPU `id` of `vcpus`: CPUID, MSRs, FPU, LAPIC wiring, and for the boot vCPU (id 0) the
/// entry registers. Application processors keep their reset state: the in-kernel irqchip holds them
/// in wait-for-SIPI until the guest starts them.
pub fn configure<V: HypervisorVcpu>(
    vcpu: &V,
    id: u8,
    vcpus: u8,
    supported_cpuid: &CpuId,
    quirks: CpuidQuirks,
    msrs: &Msrs,
    boot: &BootState,
) -> Result<(), HypervisorError> {
    let mut cpuid = supported_cpuid.clone();
    cpuid::adjust_for_vcpu(&mut cpuid, id, vcpus, quirks);
    vcpu.set_cpuid(&cpuid)?;
    vcpu.set_msrs(msrs)?;
    vcpu.set_fpu(&fpu::boot_fpu())?;
    vcpu.set_lapic(&regs::wire_local_interrupts(vcpu.lapic()?))?;
    if id == 0 {
        vcpu.set_regs(&regs::boot_regs(boot.entry, boot.start_info))?;
        let sregs = regs::boot_sregs(vcpu.sregs()?, boot.entry, boot.page_table);
        vcpu.set_sregs(&sregs)?;
    }
    Ok(())
}

/// Runs vCPU `id` until the VM ends or `stop` is set; returns the exit that ended the VM, or `None`
/// when it was stopped from outside.
pub fn run<V: HypervisorVcpu>(
    vcpu: &mut V,
    id: u8,
    devices: &Devices,
    observer: &dyn VmObserver,
    stop: &AtomicBool,
) -> Option<VmExit> {
    if id == 0 {
        observer.first_entry(MonotonicNs::now());
    }
    while !stop.load(Ordering::Acquire) {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) => return Some(VmExit::RunFailed { vcpu: id, error: e.to_string() }),
        };
        match exit {
            VcpuExit::PortIn { port, data } => devices.port_read(port, data),
            VcpuExit::PortOut { port, data } => {
                if let Some(source) = devices.port_write(port, data) {
                    return Some(VmExit::Reset(source));
                }
            }
            VcpuExit::MmioRead { address, data } => devices.mmio_read(address, data),
            VcpuExit::MmioWrite { address, data } => devices.mmio_write(address, data),
            VcpuExit::Interrupted => {}
            VcpuExit::Shutdown => return Some(VmExit::TripleFault { vcpu: id }),
            VcpuExit::InternalError { suberror } => return Some(VmExit::InternalError { vcpu: id, suberror }),
            VcpuExit::FailEntry { reason, .. } => return Some(VmExit::FailEntry { vcpu: id, reason }),
            VcpuExit::Halted => return Some(VmExit::UnhandledExit { vcpu: id, exit: "KVM_EXIT_HLT" }),
            VcpuExit::Unsupported(exit) => return Some(VmExit::UnhandledExit { vcpu: id, exit }),
        }
    }
    None
}
