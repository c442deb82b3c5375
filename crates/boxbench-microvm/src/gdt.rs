//! The boot GDT: flat segments for both entries the VMM uses, and their register form for KVM.
//!
//! A CPU in protected or long mode caches each segment register's descriptor; KVM takes that cached
//! form (`kvm_segment`) directly, but the guest may reload a selector at any time, so the same
//! descriptors must also sit in a GDT in guest memory. One table serves both boot paths: the Linux
//! 64-bit boot protocol wants `__BOOT_CS` = 0x10 (64-bit code) and `__BOOT_DS` = 0x18 (data), the PVH
//! ABI wants a flat 32-bit code segment (any selector: 0x08 here).

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestMemoryMmap};

use crate::layout::{GDT_START, IDT_START};

/// Access byte + flags of a present, ring-0, 4 GiB flat 32-bit code segment (execute/read, D=1, G=1).
const CODE32_FLAGS: u16 = 0xc09b;
/// A present ring-0 64-bit code segment (execute/read, L=1, G=1).
const CODE64_FLAGS: u16 = 0xa09b;
/// A present ring-0 4 GiB flat data segment (read/write, B=1, G=1).
const DATA_FLAGS: u16 = 0xc093;
/// A present 64-bit busy TSS (type 0xb): VMX refuses to enter a guest whose TR is not a busy TSS.
const TSS_FLAGS: u16 = 0x808b;

/// Selector of the 32-bit code segment (PVH entry).
pub const CODE32_SELECTOR: u16 = 0x08;
/// Selector of the 64-bit code segment (Linux `__BOOT_CS`).
pub const CODE64_SELECTOR: u16 = 0x10;
/// Selector of the data segment (Linux `__BOOT_DS`).
pub const DATA_SELECTOR: u16 = 0x18;
/// Selector of the task-state segment.
pub const TSS_SELECTOR: u16 = 0x20;

/// The boot GDT, entry `i` at selector `8 * i`.
pub const BOOT_GDT: [u64; 5] = [
    0,
    descriptor(CODE32_FLAGS, 0, 0xfffff),
    descriptor(CODE64_FLAGS, 0, 0xfffff),
    descriptor(DATA_FLAGS, 0, 0xfffff),
    descriptor(TSS_FLAGS, 0, 0xfffff),
];

/// Could not write the GDT or IDT.
#[derive(Debug, thiserror::Error)]
#[error("writing the boot GDT/IDT at {address:#x}: {source}")]
pub struct GdtError {
    address: u64,
    source: vm_memory::GuestMemoryError,
}

/// Packs a segment descriptor: `flags` is the access byte in bits 0–7 and the G/D/L/AVL nibble in
/// bits 12–15, as the descriptor format splits them around the limit's top nibble.
pub const fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let base = base as u64;
    let limit = limit as u64;
    let flags = flags as u64;
    ((base & 0xff00_0000) << (56 - 24))
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << (48 - 16))
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// The cached (register) form of descriptor `index` of [`BOOT_GDT`].
pub fn segment(index: usize) -> kvm_segment {
    let entry = BOOT_GDT[index];
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    let granularity = ((entry >> 55) & 1) as u8;
    // With G set the limit counts 4 KiB pages; the register holds it in bytes.
    let limit = if granularity == 1 { (raw_limit << 12) | 0xfff } else { raw_limit };
    kvm_segment {
        base,
        limit,
        selector: (index * 8) as u16,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granularity,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from((entry >> 47) & 1 == 0),
        padding: 0,
    }
}

/// Writes the boot GDT and an empty IDT into guest memory.
pub fn write_gdt_and_idt(mem: &GuestMemoryMmap) -> Result<(), GdtError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        let address = GDT_START.0 + 8 * i as u64;
        mem.write_obj(*entry, vm_memory::GuestAddress(address)).map_err(|source| GdtError { address, source })?;
    }
    mem.write_obj(0u64, IDT_START).map_err(|source| GdtError { address: IDT_START.0, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_their_well_known_encodings() {
        // The encodings every x86 boot loader uses for flat segments.
        assert_eq!(BOOT_GDT[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[3], 0x00cf_9300_0000_ffff);
        assert_eq!(BOOT_GDT[4], 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn register_form_of_code64_is_long_mode_flat() {
        let cs = segment(2);
        assert_eq!((cs.selector, cs.base, cs.limit), (CODE64_SELECTOR, 0, 0xffff_ffff));
        assert_eq!((cs.type_, cs.present, cs.dpl, cs.s, cs.l, cs.db, cs.g), (0xb, 1, 0, 1, 1, 0, 1));
        let cs32 = segment(1);
        assert_eq!((cs32.selector, cs32.l, cs32.db), (CODE32_SELECTOR, 0, 1));
        let tss = segment(4);
        assert_eq!((tss.selector, tss.s, tss.type_), (TSS_SELECTOR, 0, 0xb));
        assert_eq!(segment(0).unusable, 1);
    }
}
