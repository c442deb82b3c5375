//! Every guest-physical address and I/O port the VMM uses, in one place.
//!
//! The low megabyte follows the PC conventions Linux and boxbench's own guest expect (boot structures
//! below 0x9fc00, the EBDA with the MP table at 0x9fc00, the BIOS hole up to 1 MiB); the kernel loads at
//! 1 MiB; the 32-bit MMIO gap below 4 GiB holds the boot timer, the IOAPIC and the LAPIC, so guest RAM
//! that would overlap it is moved above 4 GiB.

use vm_memory::GuestAddress;

/// The GDT the VMM hands a 64-bit or PVH entry (see [`crate::gdt`] for its entries).
pub const GDT_START: GuestAddress = GuestAddress(0x500);
/// An empty IDT after the GDT: the guest installs its own before enabling interrupts.
pub const IDT_START: GuestAddress = GuestAddress(0x540);

/// PVH `hvm_start_info` (56 bytes), handed to the guest in EBX.
pub const PVH_START_INFO: GuestAddress = GuestAddress(0x6000);
/// PVH module list (one 32-byte entry: the initrd).
pub const PVH_MODLIST: GuestAddress = GuestAddress(0x6040);
/// PVH memory map (24-byte entries; room for 64 before the zero page).
pub const PVH_MEMMAP: GuestAddress = GuestAddress(0x6080);
/// Room for PVH memory map entries before the zero page starts.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = (ZERO_PAGE_START.0 - PVH_MEMMAP.0) as usize / 24;

/// The Linux zero page (`struct boot_params`, 4 KiB), handed to a 64-bit entry in RSI.
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x7000);

/// The initial stack pointer of the boot vCPU (top of the page after the zero page, 16-byte aligned).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;

/// Level-4 page map of the VMM's identity page tables.
pub const PML4_START: GuestAddress = GuestAddress(0x9000);
/// Page-directory-pointer table (one, covering 512 GiB).
pub const PDPTE_START: GuestAddress = GuestAddress(0xa000);
/// Page directories: one per identity-mapped GiB, contiguous.
pub const PDE_START: GuestAddress = GuestAddress(0xb000);
/// How many GiB the VMM's page tables identity-map with 2 MiB pages: all of the 32-bit space, so a
/// 64-bit entry reaches the boot timer and the LAPIC without building its own tables.
pub const IDENTITY_MAPPED_GIB: u64 = 4;

/// Kept free for the guest's AP start-up trampoline (SIPI vector 0x10 → 0x10000), per the contract
/// with boxbench's guest.
pub const AP_TRAMPOLINE_START: GuestAddress = GuestAddress(0x10000);
/// End (exclusive) of the region kept free for the AP trampoline.
pub const AP_TRAMPOLINE_END: GuestAddress = GuestAddress(0x20000);

/// The kernel command line (NUL-terminated).
pub const CMDLINE_START: GuestAddress = GuestAddress(0x20000);
/// The x86 Linux limit on the command line, terminating NUL included (COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// Start of the Extended BIOS Data Area: the top of conventional RAM, reserved in the e820 map. The MP
/// table lives here, where the MP specification says an OS searches first.
pub const EBDA_START: GuestAddress = GuestAddress(0x9fc00);
/// End of the EBDA and start of the legacy VGA/BIOS hole.
pub const EBDA_END: GuestAddress = GuestAddress(0xa0000);

/// Where protected-mode kernels load (Linux's default `code32_start`, boxbench's guest link address);
/// also the start of "high" memory for linux-loader.
pub const KERNEL_START: GuestAddress = GuestAddress(0x10_0000);
/// The 64-bit boot protocol entry is this far into a bzImage's protected-mode payload.
pub const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Start of the 32-bit MMIO gap: no RAM from here to 4 GiB.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End (exclusive) of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 1 << 32;

/// The boot-timer MMIO register: an 8-bit write of [`BOOT_TIMER_MAGIC`] marks guest userspace.
pub const BOOT_TIMER_ADDR: u64 = MMIO_GAP_START;
/// Length of the boot-timer MMIO window.
pub const BOOT_TIMER_LEN: u64 = 0x1000;
/// The value the guest writes to the boot timer (Firecracker's magic value).
pub const BOOT_TIMER_MAGIC: u8 = 123;

/// The first virtio-mmio device's register window, right after the boot timer; device `i` is at
/// `VIRTIO_MMIO_START + i * VIRTIO_MMIO_LEN` (see [`virtio_mmio_slot`]).
pub const VIRTIO_MMIO_START: u64 = BOOT_TIMER_ADDR + BOOT_TIMER_LEN;
/// The length of one virtio-mmio register window: 0x100 of registers and the device's
/// configuration space, rounded to a page as Linux's `virtio_mmio.device=` sizes expect.
pub const VIRTIO_MMIO_LEN: u64 = 0x1000;
/// The ISA interrupt lines of the virtio-mmio devices, in device order: free lines of the PC (COM1
/// has 4; 8 is the RTC's; 9 and up are left alone), each an IOAPIC pin of the MP table's ISA
/// entries (edge-triggered, active high: what an irqfd delivers).
pub const VIRTIO_MMIO_IRQS: [u32; 3] = [5, 6, 7];
/// How many virtio-mmio devices a VM can have: one interrupt line each.
pub const MAX_VIRTIO_DEVICES: usize = VIRTIO_MMIO_IRQS.len();

/// The register window and interrupt line of virtio-mmio device `index` (`None` past
/// [`MAX_VIRTIO_DEVICES`]).
pub fn virtio_mmio_slot(index: usize) -> Option<(u64, u32)> {
    let irq = *VIRTIO_MMIO_IRQS.get(index)?;
    Some((VIRTIO_MMIO_START + index as u64 * VIRTIO_MMIO_LEN, irq))
}

/// The IOAPIC of KVM's in-kernel irqchip, as the MP table advertises it.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// The local APIC base every vCPU starts with.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// The identity-map page KVM needs for its real-mode emulation on VMX, placed in the MMIO gap.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfeff_c000;
/// The three-page TSS KVM needs on VMX, right after its identity-map page.
pub const KVM_TSS_ADDR: u64 = 0xfeff_d000;

/// COM1: the 16550 serial port whose output is the instance console.
pub const SERIAL_PORT_BASE: u16 = 0x3f8;
/// Number of registers of the 16550.
pub const SERIAL_PORT_LEN: u16 = 8;
/// The ISA interrupt line of COM1.
pub const SERIAL_IRQ: u32 = 4;

/// The i8042 data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// The i8042 status (read) and command (write) port.
pub const I8042_COMMAND_PORT: u16 = 0x64;

/// The PC reset-control register (Linux's `reboot=p` path writes here).
pub const RESET_CONTROL_PORT: u16 = 0xcf9;

/// The CMOS real-time clock's index port (bit 7 masks NMIs).
pub const RTC_INDEX_PORT: u16 = 0x70;

/// The CMOS real-time clock's data port: the register the index port selected.
pub const RTC_DATA_PORT: u16 = 0x71;

/// The guest-physical RAM ranges of a guest with `mem_bytes` of memory: everything below the MMIO
/// gap, and what does not fit there above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(GuestAddress, u64)> {
    if mem_bytes <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_bytes)]
    } else {
        vec![(GuestAddress(0), MMIO_GAP_START), (GuestAddress(MMIO_GAP_END), mem_bytes - MMIO_GAP_START)]
    }
}

/// The end (exclusive) of RAM below the MMIO gap: where the initrd is placed under.
pub fn low_ram_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range_and_big_one_skips_the_gap() {
        assert_eq!(ram_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        let big = ram_ranges(4 << 30);
        assert_eq!(big[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(big[1], (GuestAddress(1 << 32), (4 << 30) - MMIO_GAP_START));
        assert_eq!(low_ram_end(4 << 30), MMIO_GAP_START);
    }

    #[test]
    fn virtio_windows_sit_in_the_mmio_gap_apart_from_everything_else() {
        let (last, _) = virtio_mmio_slot(MAX_VIRTIO_DEVICES - 1).unwrap();
        assert!(virtio_mmio_slot(MAX_VIRTIO_DEVICES).is_none());
        const { assert!(VIRTIO_MMIO_START >= BOOT_TIMER_ADDR + BOOT_TIMER_LEN) };
        assert!(last + VIRTIO_MMIO_LEN <= u64::from(IOAPIC_ADDR));
        assert!(!VIRTIO_MMIO_IRQS.contains(&SERIAL_IRQ));
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let regions = [
            (GDT_START.0, crate::gdt::BOOT_GDT.len() as u64 * 8),
            (IDT_START.0, 8),
            (PVH_START_INFO.0, 56),
            (PVH_MODLIST.0, 32),
            (PVH_MEMMAP.0, PVH_MEMMAP_MAX_ENTRIES as u64 * 24),
            (ZERO_PAGE_START.0, 0x1000),
            (PML4_START.0, 0x1000),
            (PDPTE_START.0, 0x1000),
            (PDE_START.0, IDENTITY_MAPPED_GIB * 0x1000),
            (AP_TRAMPOLINE_START.0, AP_TRAMPOLINE_END.0 - AP_TRAMPOLINE_START.0),
            (CMDLINE_START.0, CMDLINE_MAX_SIZE as u64),
            (EBDA_START.0, EBDA_END.0 - EBDA_START.0),
        ];
        for (i, &(a, alen)) in regions.iter().enumerate() {
            for &(b, blen) in &regions[i + 1..] {
                assert!(a + alen <= b || b + blen <= a, "{a:#x}+{alen:#x} overlaps {b:#x}+{blen:#x}");
            }
        }
        const { assert!(PDE_START.0 + IDENTITY_MAPPED_GIB * 0x1000 <= AP_TRAMPOLINE_START.0) };
        // The boot stack grows down from below the page tables, above the zero page.
        const { assert!(BOOT_STACK_POINTER > ZERO_PAGE_START.0 + 0x1000 && BOOT_STACK_POINTER < PML4_START.0) };
    }
}
