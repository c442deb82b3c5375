//! Identity page tables for a 64-bit entry.
//!
//! Long mode cannot run without paging, so a guest entered straight in 64-bit mode needs page tables
//! before its first instruction. The Linux 64-bit boot protocol asks for an identity map of the kernel,
//! the zero page and the command line; the VMM maps the whole 32-bit space with 2 MiB pages (one PML4
//! entry → one PDPT → four page directories), which also reaches the boot timer and the LAPIC in the
//! MMIO gap.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{IDENTITY_MAPPED_GIB, PDE_START, PDPTE_START, PML4_START};

/// Present + writable.
const PRESENT_WRITABLE: u64 = 0x3;
/// Present + writable + page size (a 2 MiB page in a page directory).
const PRESENT_WRITABLE_HUGE: u64 = 0x83;
/// Bytes mapped by one page-directory entry.
const HUGE_PAGE: u64 = 2 << 20;
/// Entries in every level of the x86-64 page tables.
const ENTRIES: u64 = 512;

/// Could not write a page table.
#[derive(Debug, thiserror::Error)]
#[error("writing the boot page tables at {address:#x}: {source}")]
pub struct PagingError {
    address: u64,
    source: vm_memory::GuestMemoryError,
}

fn write_entry(mem: &GuestMemoryMmap, address: u64, entry: u64) -> Result<(), PagingError> {
    mem.write_obj(entry, GuestAddress(address)).map_err(|source| PagingError { address, source })
}

/// Writes the identity map; returns the value for CR3.
pub fn write_identity_map(mem: &GuestMemoryMmap) -> Result<u64, PagingError> {
    write_entry(mem, PML4_START.0, PDPTE_START.0 | PRESENT_WRITABLE)?;
    let mut directory = vec![0u8; (ENTRIES * 8) as usize];
    for gib in 0..IDENTITY_MAPPED_GIB {
        let pd = PDE_START.0 + gib * 0x1000;
        write_entry(mem, PDPTE_START.0 + gib * 8, pd | PRESENT_WRITABLE)?;
        for (i, slot) in directory.chunks_exact_mut(8).enumerate() {
            let frame = (gib * ENTRIES + i as u64) * HUGE_PAGE;
            slot.copy_from_slice(&(frame | PRESENT_WRITABLE_HUGE).to_le_bytes());
        }
        mem.write_slice(&directory, GuestAddress(pd)).map_err(|source| PagingError { address: pd, source })?;
    }
    Ok(PML4_START.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables the way the MMU does for a 2 MiB mapping.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, virt: u64) -> Option<u64> {
        let pml4e: u64 = mem.read_obj(GuestAddress(cr3 + ((virt >> 39) & 0x1ff) * 8)).ok()?;
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte: u64 = mem.read_obj(GuestAddress((pml4e & !0xfff) + ((virt >> 30) & 0x1ff) * 8)).ok()?;
        if pdpte & 1 == 0 {
            return None;
        }
        let pde: u64 = mem.read_obj(GuestAddress((pdpte & !0xfff) + ((virt >> 21) & 0x1ff) * 8)).ok()?;
        (pde & 0x81 == 0x81).then(|| (pde & !0x1f_ffff) + (virt & 0x1f_ffff))
    }

    #[test]
    fn maps_the_32_bit_space_onto_itself() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_map(&mem).unwrap();
        for addr in [0, 0x10_0200, 0x3fff_ffff, 0x4000_0000, 0xd000_0000, 0xfee0_0000, 0xffff_ffff] {
            assert_eq!(translate(&mem, cr3, addr), Some(addr), "{addr:#x}");
        }
        assert_eq!(translate(&mem, cr3, 1 << 32), None);
    }
}
