//! The built guest images are what loaders need: the ELF's PVH note and entry (read by hand and
//! by linux-loader), the bzImage's setup header as linux-loader's BzImage loader reads it, and
//! the same code behind both.

use std::fs::File;

use boxbench_guest::{bzimage_path, elf_path};
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const LOAD_ADDRESS: u64 = 0x10_0000;
const ENTRY64: u64 = 0x10_0200;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const GUEST_MEMORY: usize = 16 << 20;

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().unwrap())
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

struct ProgramHeader {
    kind: u32,
    offset: usize,
    paddr: u64,
    file_size: usize,
    mem_size: u64,
}

fn program_headers(elf: &[u8]) -> Vec<ProgramHeader> {
    let phoff = u64_at(elf, 0x20) as usize;
    let phentsize = u16_at(elf, 0x36) as usize;
    (0..u16_at(elf, 0x38) as usize)
        .map(|i| phoff + i * phentsize)
        .map(|ph| ProgramHeader {
            kind: u32_at(elf, ph),
            offset: u64_at(elf, ph + 0x08) as usize,
            paddr: u64_at(elf, ph + 0x18),
            file_size: u64_at(elf, ph + 0x20) as usize,
            mem_size: u64_at(elf, ph + 0x28),
        })
        .collect()
}

/// The descriptors of the notes named `name` with type `kind` in a PT_NOTE segment.
fn notes<'a>(segment: &'a [u8], name: &str, kind: u32) -> Vec<&'a [u8]> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + 12 <= segment.len() {
        let name_size = u32_at(segment, at) as usize;
        let desc_size = u32_at(segment, at + 4) as usize;
        let note_kind = u32_at(segment, at + 8);
        let name_start = at + 12;
        let desc_start = name_start + name_size.next_multiple_of(4);
        let note_name = &segment[name_start..name_start + name_size];
        if note_kind == kind && note_name.strip_suffix(b"\0") == Some(name.as_bytes()) {
            found.push(&segment[desc_start..desc_start + desc_size]);
        }
        at = desc_start + desc_size.next_multiple_of(4);
    }
    found
}

fn guest_memory() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEMORY)]).unwrap()
}

fn elf_bytes() -> Vec<u8> {
    std::fs::read(elf_path()).unwrap()
}

/// The bytes of the ELF's one PT_LOAD segment and its memory size.
fn flat_image(elf: &[u8]) -> (Vec<u8>, u64) {
    let loads: Vec<_> = program_headers(elf).into_iter().filter(|ph| ph.kind == PT_LOAD).collect();
    assert_eq!(loads.len(), 1, "the guest ELF has one PT_LOAD segment");
    let load = &loads[0];
    assert_eq!(load.paddr, LOAD_ADDRESS);
    (elf[load.offset..load.offset + load.file_size].to_vec(), load.mem_size)
}

#[test]
fn elf_has_pvh_note_and_64bit_entry() {
    let elf = elf_bytes();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "ELFCLASS64");
    assert_eq!(u16_at(&elf, 0x12), 62, "EM_X86_64");
    assert_eq!(u64_at(&elf, 0x18), ENTRY64, "e_entry is the 64-bit boot protocol entry");

    let note_segments: Vec<_> = program_headers(&elf).into_iter().filter(|ph| ph.kind == PT_NOTE).collect();
    assert_eq!(note_segments.len(), 1);
    let segment = &elf[note_segments[0].offset..note_segments[0].offset + note_segments[0].file_size];
    let pvh = notes(segment, "Xen", XEN_ELFNOTE_PHYS32_ENTRY);
    assert_eq!(pvh.len(), 1, "one XEN_ELFNOTE_PHYS32_ENTRY note");
    assert_eq!(u32_at(pvh[0], 0) as u64, LOAD_ADDRESS);
}

#[test]
fn linux_loader_loads_the_elf_with_its_pvh_entry() {
    let memory = guest_memory();
    let mut file = File::open(elf_path()).unwrap();
    let loaded = Elf::load(&memory, None, &mut file, Some(GuestAddress(LOAD_ADDRESS))).unwrap();
    assert_eq!(loaded.kernel_load, GuestAddress(ENTRY64));
    assert_eq!(loaded.pvh_boot_cap, PvhBootCapability::PvhEntryPresent(GuestAddress(LOAD_ADDRESS)));
    assert!(loaded.setup_header.is_none());

    let (image, mem_size) = flat_image(&elf_bytes());
    assert_eq!(loaded.kernel_end, LOAD_ADDRESS + mem_size);
    let mut in_memory = vec![0u8; image.len()];
    memory.read_slice(&mut in_memory, GuestAddress(LOAD_ADDRESS)).unwrap();
    assert!(in_memory == image, "guest memory at 0x100000 holds the ELF's PT_LOAD bytes");
}

#[test]
fn linux_loader_loads_the_bzimage_as_a_64bit_kernel() {
    let memory = guest_memory();
    let mut file = File::open(bzimage_path()).unwrap();
    let loaded = BzImage::load(&memory, None, &mut file, Some(GuestAddress(LOAD_ADDRESS))).unwrap();
    assert_eq!(loaded.kernel_load, GuestAddress(LOAD_ADDRESS));
    let header = loaded.setup_header.expect("a bzImage has a setup header");

    // Copies out of the packed header.
    let (boot_flag, magic, version, loadflags) = (header.boot_flag, header.header, header.version, header.loadflags);
    assert_eq!(boot_flag, 0xaa55);
    assert_eq!(magic.to_le_bytes(), *b"HdrS");
    assert!(version >= 0x020c, "boot protocol 0x{version:x} is older than 2.12");
    assert_eq!(loadflags & 0x01, 0x01, "LOADED_HIGH");
    let (code32_start, pref_address, xloadflags) = (header.code32_start, header.pref_address, header.xloadflags);
    assert_eq!(u64::from(code32_start), LOAD_ADDRESS);
    assert_eq!(pref_address, LOAD_ADDRESS);
    assert_eq!(xloadflags & 0x01, 0x01, "XLF_KERNEL_64: 64-bit entry at load address + 0x200");
    let (kernel_alignment, relocatable, cmdline_size) =
        (header.kernel_alignment, header.relocatable_kernel, header.cmdline_size);
    assert!(kernel_alignment.is_power_of_two());
    assert_eq!(relocatable, 0);
    assert!(cmdline_size >= 255);

    // The protected-mode payload is the ELF's PT_LOAD segment, and init_size covers its .bss.
    let (image, mem_size) = flat_image(&elf_bytes());
    let (setup_sects, syssize, init_size) = (header.setup_sects, header.syssize, header.init_size);
    let file_size = std::fs::metadata(bzimage_path()).unwrap().len();
    let payload_size = file_size - (u64::from(setup_sects) + 1) * 512;
    assert_eq!(u64::from(syssize) * 16, payload_size);
    assert_eq!(loaded.kernel_end, LOAD_ADDRESS + payload_size);
    assert!(u64::from(init_size) >= mem_size);
    let mut in_memory = vec![0u8; image.len()];
    memory.read_slice(&mut in_memory, GuestAddress(LOAD_ADDRESS)).unwrap();
    assert!(in_memory == image, "the bzImage payload is the ELF's image");

    // linux-loader refuses to load it below the high-memory start, like a Linux bzImage.
    let mut file = File::open(bzimage_path()).unwrap();
    assert!(BzImage::load(&memory, None, &mut file, Some(GuestAddress(LOAD_ADDRESS + 0x1000))).is_err());
}
