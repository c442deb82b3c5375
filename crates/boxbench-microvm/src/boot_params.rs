//! The Linux zero page (`struct boot_params`) and the e820 memory map it carries, for the 64-bit boot
//! protocol (Documentation/arch/x86/boot.rst).
//!
//! A 64-bit entry gets no BIOS to ask about memory, so everything the kernel would have learnt in real
//! mode is in the zero page: the setup header (copied from a bzImage, then the loader's fields filled
//! in), the command line pointer, the initrd location and the e820 map.

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestMemoryMmap};

use crate::layout::{self, CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_END, EBDA_START, KERNEL_START, ZERO_PAGE_START};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// "HdrS": the setup header's magic.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// The boot sector signature the protocol checks in `boot_flag`.
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `type_of_loader` of a boot loader without an assigned id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Alignment a relocatable kernel is told to keep when none came with the image (16 MiB, Linux's
/// default `CONFIG_PHYSICAL_ALIGN` range).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;

/// The initrd as loaded into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdRegion {
    /// Guest-physical start (page aligned).
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// One range of the guest's memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRange {
    /// Guest-physical start.
    pub address: u64,
    /// Length in bytes.
    pub size: u64,
    /// e820 type ([`E820_RAM`] or [`E820_RESERVED`]).
    pub kind: u32,
}

/// The memory map of a guest with `mem_bytes` of RAM, shared by the zero page and the PVH start info:
/// conventional memory up to the EBDA, the EBDA reserved (it holds the MP table), then RAM from 1 MiB
/// split around the MMIO gap. The legacy hole between 640 KiB and 1 MiB is left out (not RAM).
pub fn memory_map(mem_bytes: u64) -> Vec<MemoryRange> {
    let mut map = vec![
        MemoryRange { address: 0, size: EBDA_START.0, kind: E820_RAM },
        MemoryRange { address: EBDA_START.0, size: EBDA_END.0 - EBDA_START.0, kind: E820_RESERVED },
    ];
    for (start, size) in layout::ram_ranges(mem_bytes) {
        let from = start.0.max(KERNEL_START.0);
        let end = start.0 + size;
        if end > from {
            map.push(MemoryRange { address: from, size: end - from, kind: E820_RAM });
        }
    }
    map
}

/// The zero page could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    /// More memory ranges than the zero page's e820 table holds.
    #[error("the e820 map has {0} entries, more than the zero page holds")]
    TooManyE820Entries(usize),
    /// Guest memory refused the write.
    #[error("writing the zero page at {:#x}: {source}", ZERO_PAGE_START.0)]
    Write { source: vm_memory::GuestMemoryError },
}

/// Writes the zero page for a 64-bit entry. `bzimage_header` is the setup header of a bzImage (the
/// protocol wants it copied in), `None` for an ELF kernel; `cmdline_len` excludes the NUL.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
    bzimage_header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdRegion>,
) -> Result<(), BootParamsError> {
    let mut params = boot_params::default();
    let mut hdr = bzimage_header.unwrap_or_default();
    hdr.header = HDRS_MAGIC;
    hdr.boot_flag = BOOT_FLAG_MAGIC;
    hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    if hdr.kernel_alignment == 0 {
        hdr.kernel_alignment = DEFAULT_KERNEL_ALIGNMENT;
    }
    hdr.cmd_line_ptr = CMDLINE_START.0 as u32;
    hdr.cmdline_size = (cmdline_len + 1).min(CMDLINE_MAX_SIZE) as u32;
    if let Some(initrd) = initrd {
        hdr.ramdisk_image = initrd.address as u32;
        hdr.ramdisk_size = initrd.size as u32;
    }
    params.hdr = hdr;

    let map = memory_map(mem_bytes);
    if map.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyE820Entries(map.len()));
    }
    for (slot, range) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr: range.address, size: range.size, r#type: range.kind };
    }
    params.e820_entries = map.len() as u8;
    mem.write_obj(params, ZERO_PAGE_START).map_err(|source| BootParamsError::Write { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_map_of_a_small_guest() {
        let map = memory_map(128 << 20);
        assert_eq!(
            map,
            vec![
                MemoryRange { address: 0, size: 0x9fc00, kind: E820_RAM },
                MemoryRange { address: 0x9fc00, size: 0x400, kind: E820_RESERVED },
                MemoryRange { address: 0x10_0000, size: (128 << 20) - 0x10_0000, kind: E820_RAM },
            ]
        );
    }

    #[test]
    fn memory_map_skips_the_mmio_gap() {
        let map = memory_map(5 << 30);
        assert_eq!(map.len(), 4);
        assert_eq!(map[2], MemoryRange { address: 0x10_0000, size: 0xd000_0000 - 0x10_0000, kind: E820_RAM });
        assert_eq!(map[3], MemoryRange { address: 1 << 32, size: (5 << 30) - 0xd000_0000, kind: E820_RAM });
    }
}
