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
use crate::vm_snapshot::Pause;

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
    pause: Option<&Pause>,
) -> Option<VmExit> {
    if id == 0 {
        observer.first_entry(MonotonicNs::now());
    }
    while !stop.load(Ordering::Acquire) {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) => return Some(VmExit::RunFailed { vcpu: id, error: e.to_string() }),
        };
        if let Some(end) = handle_exit(exit, id, devices) {
            return Some(end);
        }
        if let Some(end) = pause.and_then(|pause| pause.check(vcpu, id, devices)) {
            return Some(end);
        }
    }
    None
}

/// The exit dispatcher: serves one exit of vCPU `id` (port I/O and MMIO go to `devices`, whatever the
/// port, address, size or data) and returns how the VM ends if this exit ends it.
pub fn handle_exit(exit: VcpuExit<'_>, id: u8, devices: &Devices) -> Option<VmExit> {
    match exit {
        VcpuExit::PortIn { port, data } => devices.port_read(port, data),
        VcpuExit::PortOut { port, data } => return devices.port_write(port, data).map(VmExit::Reset),
        VcpuExit::MmioRead { address, data } => devices.mmio_read(address, data),
        VcpuExit::MmioWrite { address, data } => devices.mmio_write(address, data),
        VcpuExit::Interrupted => {}
        VcpuExit::Shutdown => return Some(VmExit::TripleFault { vcpu: id }),
        VcpuExit::InternalError { suberror } => return Some(VmExit::InternalError { vcpu: id, suberror }),
        VcpuExit::FailEntry { reason, .. } => return Some(VmExit::FailEntry { vcpu: id, reason }),
        VcpuExit::Halted => return Some(VmExit::UnhandledExit { vcpu: id, exit: "KVM_EXIT_HLT" }),
        VcpuExit::Unsupported(exit) => return Some(VmExit::UnhandledExit { vcpu: id, exit }),
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::devices::IgnoredAccesses;
    use crate::devices::serial::SerialPort;
    use crate::layout::{
        BOOT_TIMER_ADDR, BOOT_TIMER_LEN, I8042_COMMAND_PORT, I8042_DATA_PORT, RESET_CONTROL_PORT, RTC_DATA_PORT,
        RTC_INDEX_PORT, SERIAL_PORT_BASE, SERIAL_PORT_LEN,
    };
    use crate::observer::IgnoreMilestones;

    fn devices() -> Devices {
        let serial = SerialPort::new(None, Arc::new(IgnoreMilestones)).unwrap();
        Devices::new(serial, Arc::new(IgnoreMilestones))
    }

    fn is_device_port(port: u16) -> bool {
        (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_LEN).contains(&port)
            || [I8042_DATA_PORT, I8042_COMMAND_PORT, RESET_CONTROL_PORT, RTC_INDEX_PORT, RTC_DATA_PORT].contains(&port)
    }

    #[test]
    fn every_port_of_every_size_is_served_without_panic() {
        let devices = devices();
        let mut unknown_accesses = 0;
        for size in [1usize, 2, 4] {
            for port in 0..=u16::MAX {
                let mut data = [0x5au8; 4];
                assert_eq!(handle_exit(VcpuExit::PortIn { port, data: &mut data[..size] }, 0, &devices), None);
                if is_device_port(port) {
                    assert!(data[1..size].iter().all(|&b| b == 0), "port {port:#x} size {size}: {data:?}");
                } else {
                    assert!(data[..size].iter().all(|&b| b == 0xff), "port {port:#x} size {size}: {data:?}");
                    unknown_accesses += 1;
                }
                assert_eq!(data[size..].iter().filter(|&&b| b != 0x5a).count(), 0, "wrote past the access");
                // Data that is no reset request on any device (bit 2 clear for 0xcf9, not 0xfe for
                // the i8042, reset line high for its output port), derived from the port.
                let written = [0x01 | (port as u8 & 0x3a), (port >> 8) as u8, 0xa5, 0x5a];
                let end = handle_exit(VcpuExit::PortOut { port, data: &written[..size] }, 0, &devices);
                assert_eq!(end, None, "port {port:#x} size {size}");
                if !is_device_port(port) {
                    unknown_accesses += 1;
                }
            }
        }
        assert_eq!(devices.ignored(), IgnoredAccesses { port_io: unknown_accesses, mmio: 0 });
        // 8 serial ports, 2 of the i8042, the reset-control port and 2 of the real-time clock.
        assert_eq!(unknown_accesses, 3 * 2 * (0x1_0000 - 13));
    }

    #[test]
    fn odd_sizes_and_any_address_are_served_without_panic() {
        let devices = devices();
        let addresses = [0, 0xfff, BOOT_TIMER_ADDR - 1, BOOT_TIMER_ADDR, BOOT_TIMER_ADDR + BOOT_TIMER_LEN - 1];
        let addresses = addresses.into_iter().chain([BOOT_TIMER_ADDR + BOOT_TIMER_LEN, u64::MAX - 3, u64::MAX]);
        let mut unknown_mmio = 0;
        for address in addresses {
            for size in 0..=16 {
                let mut data = vec![0x11u8; size];
                handle_exit(VcpuExit::MmioRead { address, data: &mut data }, 1, &devices);
                handle_exit(VcpuExit::MmioWrite { address, data: &vec![0xee; size] }, 1, &devices);
                if !(BOOT_TIMER_ADDR..BOOT_TIMER_ADDR + BOOT_TIMER_LEN).contains(&address) {
                    assert!(data.iter().all(|&b| b == 0xff));
                    unknown_mmio += 2;
                }
            }
        }
        for port in [0u16, SERIAL_PORT_BASE, I8042_COMMAND_PORT, RESET_CONTROL_PORT, u16::MAX] {
            for size in [0usize, 3, 5, 8, 16] {
                let mut data = vec![0u8; size];
                handle_exit(VcpuExit::PortIn { port, data: &mut data }, 1, &devices);
                assert_eq!(handle_exit(VcpuExit::PortOut { port, data: &vec![0x01; size] }, 1, &devices), None);
            }
        }
        assert_eq!(devices.ignored().mmio, unknown_mmio);
    }

    #[test]
    fn exits_that_end_the_vm_say_how() {
        let devices = devices();
        let reset = [0xfe];
        let end = handle_exit(VcpuExit::PortOut { port: I8042_COMMAND_PORT, data: &reset }, 0, &devices);
        assert_eq!(end, Some(VmExit::Reset(ResetSource::I8042)));
        assert_eq!(handle_exit(VcpuExit::Shutdown, 2, &devices), Some(VmExit::TripleFault { vcpu: 2 }));
        let end = handle_exit(VcpuExit::InternalError { suberror: 1 }, 0, &devices);
        assert_eq!(
            end.map(|e| e.to_string()).as_deref(),
            Some("KVM internal error on vCPU 0, suberror 1 (emulation failure)")
        );
        assert_eq!(handle_exit(VcpuExit::Interrupted, 0, &devices), None);
    }
}
