//! The PVH boot structures (Xen's `hvm_start_info` ABI, which Linux and boxbench's guest both accept):
//! the start info handed over in EBX, a module list whose one module is the initrd, and the memory map.
//!
//! PVH enters the kernel in 32-bit protected mode with paging off, so there is no zero page and no
//! real-mode setup code: everything the guest needs is reachable from the start info.

use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot_params::{InitrdRegion, memory_map};
use crate::layout::{CMDLINE_START, PVH_MEMMAP, PVH_MEMMAP_MAX_ENTRIES, PVH_MODLIST, PVH_START_INFO};

/// `hvm_start_info.magic` ("xEn3" with bit 7 of the first byte set).
pub const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Version 1 of the start info has the memory map fields.
const START_INFO_VERSION: u32 = 1;

/// The PVH structures could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PvhError {
    /// More memory ranges than the VMM reserved room for.
    #[error("the PVH memory map has {0} entries, more than the room reserved for it")]
    TooManyMemmapEntries(usize),
    /// Guest memory refused the write.
    #[error("writing the PVH start info at {address:#x}: {source}")]
    Write { address: u64, source: vm_memory::GuestMemoryError },
}

fn write<T: vm_memory::ByteValued>(mem: &GuestMemoryMmap, value: T, address: GuestAddress) -> Result<(), PvhError> {
    mem.write_obj(value, address).map_err(|source| PvhError::Write { address: address.0, source })
}

/// Writes the start info, module list and memory map; returns the start info's address, for EBX.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    initrd: Option<InitrdRegion>,
) -> Result<GuestAddress, PvhError> {
    let map = memory_map(mem_bytes);
    if map.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(PvhError::TooManyMemmapEntries(map.len()));
    }
    for (i, range) in map.iter().enumerate() {
        let entry = hvm_memmap_table_entry { addr: range.address, size: range.size, type_: range.kind, reserved: 0 };
        write(mem, entry, GuestAddress(PVH_MEMMAP.0 + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64))?;
    }
    let mut info = hvm_start_info {
        magic: START_INFO_MAGIC,
        version: START_INFO_VERSION,
        cmdline_paddr: CMDLINE_START.0,
        memmap_paddr: PVH_MEMMAP.0,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(initrd) = initrd {
        let module = hvm_modlist_entry { paddr: initrd.address, size: initrd.size, ..Default::default() };
        write(mem, module, PVH_MODLIST)?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST.0;
    }
    write(mem, info, PVH_START_INFO)?;
    Ok(PVH_START_INFO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_info_points_at_cmdline_module_and_memmap() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let initrd = InitrdRegion { address: 0x3ff_0000, size: 1234 };
        let at = write_start_info(&mem, 64 << 20, Some(initrd)).unwrap();
        let info: hvm_start_info = mem.read_obj(at).unwrap();
        assert_eq!((info.magic, info.version, info.nr_modules), (START_INFO_MAGIC, 1, 1));
        assert_eq!(info.cmdline_paddr, CMDLINE_START.0);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0x3ff_0000, 1234));
        assert_eq!(info.memmap_entries, 3);
        let last: hvm_memmap_table_entry = mem.read_obj(GuestAddress(info.memmap_paddr + 2 * 24)).unwrap();
        assert_eq!((last.addr, last.size, last.type_), (0x10_0000, (64 << 20) - 0x10_0000, 1));
    }

    #[test]
    fn no_initrd_means_no_module() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let info: hvm_start_info = mem.read_obj(write_start_info(&mem, 64 << 20, None).unwrap()).unwrap();
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
    }
}
