//! The boot vCPU's registers for each entry, and the local APIC wiring every vCPU gets.
//!
//! The 64-bit boot protocol starts the kernel in long mode: CR0.PE+PG, CR4.PAE, EFER.LME+LMA, CR3 at the
//! identity map, CS = `__BOOT_CS` (64-bit code), the data selectors = `__BOOT_DS`, RSI = zero page.
//! PVH starts it in 32-bit protected mode with paging off: CR0.PE only, flat 32-bit CS, EBX = start info.
//! APs get nothing here: with the in-kernel irqchip they wait for INIT-SIPI-SIPI from the guest, which
//! puts them in real mode at the SIPI vector itself.

use kvm_bindings::{kvm_lapic_state, kvm_regs, kvm_sregs};

use crate::gdt::{self, BOOT_GDT};
use crate::layout::{BOOT_STACK_POINTER, GDT_START, IDT_START, ZERO_PAGE_START};
use crate::loader::BootEntry;

/// CR0.PE: protected mode.
const CR0_PE: u64 = 1 << 0;
/// CR0.ET: the 387 coprocessor type bit, hard-wired to 1 on every CPU since the 486.
const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension, required for long mode.
const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set; interrupts stay off (IF clear) until the guest is ready.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Offset of the LVT LINT0 register in the LAPIC register page.
const APIC_LVT_LINT0: usize = 0x350;
/// Offset of the LVT LINT1 register.
const APIC_LVT_LINT1: usize = 0x360;
/// Delivery-mode field of an LVT entry (bits 8–10).
const APIC_DELIVERY_MODE_MASK: u32 = 0x700;
/// Delivery mode ExtINT: the 8259 PIC's interrupts reach the CPU through LINT0.
const APIC_MODE_EXTINT: u32 = 0x700;
/// Delivery mode NMI.
const APIC_MODE_NMI: u32 = 0x400;

/// General-purpose registers for the boot vCPU's entry.
pub fn boot_regs(entry: BootEntry, start_info: u64) -> kvm_regs {
    let mut regs = kvm_regs { rflags: RFLAGS_RESERVED, ..Default::default() };
    match entry {
        BootEntry::Linux64 { entry } => {
            regs.rip = entry;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START.0;
        }
        BootEntry::Pvh { entry } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
    }
    regs
}

/// Special registers for the boot vCPU's entry, on top of what KVM reset it to (`sregs`).
pub fn boot_sregs(mut sregs: kvm_sregs, entry: BootEntry, cr3: u64) -> kvm_sregs {
    let data = gdt::segment(3);
    let code = match entry {
        BootEntry::Linux64 { .. } => gdt::segment(2),
        BootEntry::Pvh { .. } => gdt::segment(1),
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = gdt::segment(4);
    sregs.gdt.base = GDT_START.0;
    sregs.gdt.limit = (BOOT_GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_START.0;
    sregs.idt.limit = 7;
    match entry {
        BootEntry::Linux64 { .. } => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = cr3;
            sregs.cr4 = CR4_PAE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        BootEntry::Pvh { .. } => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer &= !(EFER_LME | EFER_LMA);
        }
    }
    sregs
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (slot, byte) in lapic.regs[offset..offset + 4].iter_mut().zip(value.to_le_bytes()) {
        *slot = byte as std::os::raw::c_char;
    }
}

/// Wires LINT0 as ExtINT (the PIC's output) and LINT1 as NMI, as a PC BIOS leaves every local APIC
/// and as the MP table's local interrupt entries say.
pub fn wire_local_interrupts(mut lapic: kvm_lapic_state) -> kvm_lapic_state {
    for (offset, mode) in [(APIC_LVT_LINT0, APIC_MODE_EXTINT), (APIC_LVT_LINT1, APIC_MODE_NMI)] {
        let value = lapic_reg(&lapic, offset);
        set_lapic_reg(&mut lapic, offset, (value & !APIC_DELIVERY_MODE_MASK) | mode);
    }
    lapic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_entry_registers() {
        let entry = BootEntry::Linux64 { entry: 0x10_0200 };
        let regs = boot_regs(entry, 0);
        assert_eq!((regs.rip, regs.rsi, regs.rflags), (0x10_0200, ZERO_PAGE_START.0, 2));
        let sregs = boot_sregs(kvm_sregs::default(), entry, 0x9000);
        assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!((sregs.cr3, sregs.cs.selector, sregs.ds.selector, sregs.cs.l), (0x9000, 0x10, 0x18, 1));
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
    }

    #[test]
    fn pvh_entry_registers() {
        let entry = BootEntry::Pvh { entry: 0x10_0000 };
        let regs = boot_regs(entry, 0x6000);
        assert_eq!((regs.rip, regs.rbx), (0x10_0000, 0x6000));
        let sregs = boot_sregs(kvm_sregs { efer: EFER_LME, ..Default::default() }, entry, 0x9000);
        assert_eq!((sregs.cr0 & CR0_PG, sregs.cr4, sregs.efer & EFER_LME), (0, 0, 0));
        assert_eq!((sregs.cs.selector, sregs.cs.db, sregs.cs.l), (0x08, 1, 0));
    }

    #[test]
    fn lint0_extint_lint1_nmi() {
        let mut lapic = kvm_lapic_state { regs: [0; 1024] };
        set_lapic_reg(&mut lapic, APIC_LVT_LINT0, 0x0001_0000);
        let lapic = wire_local_interrupts(lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT_LINT0), 0x0001_0700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT_LINT1), 0x400);
    }
}
