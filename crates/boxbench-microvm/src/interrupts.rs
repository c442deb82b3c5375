//! The VM's interrupt model: which interrupt controllers and timers KVM emulates in the kernel, chosen
//! from what the guest needs.
//!
//! KVM's full in-kernel irqchip (8259 PICs, IOAPIC, LAPICs) and its 8254 PIT are what a Linux guest
//! boots on: its serial console interrupt goes through the IOAPIC, and it calibrates against the PIT.
//! They are not free: on kvm_pvm hosts the full irqchip adds 13–15 ms to a VM's life, spent when the
//! VM is destroyed, and the PIT 6–8 ms more (shared/notes/emulated-svm-host.md). boxbench's own guest
//! polls its UART and never takes an interrupt from a device, so it needs no PIC, IOAPIC or PIT; it does
//! need the local APICs — its boot CPU starts the others with INIT-SIPI-SIPI and times the waits with
//! the LAPIC timer, and an idle guest halts in the kernel — so it gets KVM's split irqchip: LAPICs in
//! the kernel, PIC and IOAPIC left to userspace, where this VMM has none, at no such cost.

use crate::hypervisor::{HypervisorError, HypervisorVm};
use crate::layout::SERIAL_IRQ;

/// IOAPIC pins reserved for userspace in the split model (an 82093AA has 24).
const SPLIT_IOAPIC_PINS: u32 = 24;

/// Which interrupt controllers and timers KVM emulates for the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptModel {
    /// KVM's PICs, IOAPIC, LAPICs and PIT, the serial port's interrupt wired to IOAPIC pin
    /// [`SERIAL_IRQ`]: what a Linux guest needs.
    InKernelIrqchip,
    /// LAPICs only (KVM_CAP_SPLIT_IRQCHIP), no PIT, no device interrupts: enough for a guest that
    /// polls its devices and uses the LAPIC only to start and time its CPUs.
    SplitLapicOnly,
}

impl InterruptModel {
    /// Creates the controllers on `vm`; must come before any vCPU, which gets its LAPIC at creation.
    pub fn create<V: HypervisorVm>(self, vm: &V) -> Result<(), HypervisorError> {
        match self {
            InterruptModel::InKernelIrqchip => {
                vm.create_irqchip()?;
                vm.create_pit()
            }
            InterruptModel::SplitLapicOnly => vm.create_split_irqchip(SPLIT_IOAPIC_PINS),
        }
    }

    /// The interrupt line the serial port's eventfd raises, if the model has one for it.
    pub fn serial_gsi(self) -> Option<u32> {
        match self {
            InterruptModel::InKernelIrqchip => Some(SERIAL_IRQ),
            InterruptModel::SplitLapicOnly => None,
        }
    }

    /// The name a record's note uses.
    pub fn describe(self) -> &'static str {
        match self {
            InterruptModel::InKernelIrqchip => "KVM in-kernel irqchip (PIC, IOAPIC, LAPIC) and PIT",
            InterruptModel::SplitLapicOnly => "KVM split irqchip (LAPIC only, no IOAPIC, no PIT)",
        }
    }
}
