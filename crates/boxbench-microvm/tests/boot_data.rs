//! What the VMM writes into guest memory before the first instruction, read back from guest memory
//! (no KVM needed): zero page, command line, GDT, page tables, MP table, PVH start info, initrd.

mod common;

use std::path::{Path, PathBuf};

use boxbench_core::spec::VM_DEFAULTS;
use boxbench_microvm::layout::{CMDLINE_START, EBDA_START, GDT_START, PVH_START_INFO, ZERO_PAGE_START};
use boxbench_microvm::loader::BootEntry;
use boxbench_microvm::vm::{allocate_guest_memory, write_boot_data};
use boxbench_microvm::{BootPlan, VmConfig};
use common::Behaviour;
use linux_loader::bootparam::boot_params;
use linux_loader::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 boxbench.workload=hello";

fn plan(kernel: &Path, initrd: Option<PathBuf>, vcpus: u8) -> BootPlan {
    let mut config = VmConfig::new(kernel);
    config.initrd = initrd;
    config.cmdline = CMDLINE.to_owned();
    config.vcpus = vcpus;
    config.plan().unwrap()
}

fn read_cstr(mem: &GuestMemoryMmap, at: u64) -> String {
    let mut bytes = vec![0u8; 2048];
    mem.read_slice(&mut bytes, GuestAddress(at)).unwrap();
    let end = bytes.iter().position(|&b| b == 0).expect("NUL-terminated");
    String::from_utf8(bytes[..end].to_vec()).unwrap()
}

/// APIC ids and BSP flags of the MP table's processor entries, after checking both checksums.
fn mp_processors(mem: &GuestMemoryMmap) -> Vec<(u8, bool)> {
    let mut pointer = [0u8; 16];
    mem.read_slice(&mut pointer, EBDA_START).unwrap();
    assert_eq!(&pointer[..4], b"_MP_");
    assert_eq!(pointer.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
    let table_at = u32::from_le_bytes(pointer[4..8].try_into().unwrap()) as u64;
    let mut header = [0u8; 44];
    mem.read_slice(&mut header, GuestAddress(table_at)).unwrap();
    assert_eq!(&header[..4], b"PCMP");
    let mut table = vec![0u8; u16::from_le_bytes([header[4], header[5]]) as usize];
    mem.read_slice(&mut table, GuestAddress(table_at)).unwrap();
    assert_eq!(table.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
    let mut at = 44;
    let mut cpus = Vec::new();
    while at < table.len() {
        if table[at] == 0 {
            cpus.push((table[at + 1], table[at + 3] & 2 != 0));
            at += 20;
        } else {
            at += 8;
        }
    }
    cpus
}

fn check_common(mem: &GuestMemoryMmap, vcpus: u8) {
    assert_eq!(read_cstr(mem, CMDLINE_START.0), CMDLINE);
    let code64: u64 = mem.read_obj(GuestAddress(GDT_START.0 + 0x10)).unwrap();
    let data: u64 = mem.read_obj(GuestAddress(GDT_START.0 + 0x18)).unwrap();
    assert_eq!((code64, data), (0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff));
    let expected: Vec<(u8, bool)> = (0..vcpus).map(|id| (id, id == 0)).collect();
    assert_eq!(mp_processors(mem), expected);
}

fn initrd_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let bytes = common::newc_initrd("payload", &payload);
    (common::write(dir, "initrd.cpio", &bytes), bytes)
}

#[test]
fn bzimage_gets_a_zero_page_with_cmdline_initrd_and_e820() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "bzImage", &common::bzimage(Behaviour::Reboot));
    let (initrd, initrd_bytes) = initrd_file(dir.path());
    let plan = plan(&kernel, Some(initrd), 2);
    let mem = allocate_guest_memory(plan.mem_bytes).unwrap();
    let boot = write_boot_data(&mem, &plan).unwrap();
    assert_eq!(boot.entry, BootEntry::Linux64 { entry: 0x10_0200 });

    let params: boot_params = mem.read_obj(ZERO_PAGE_START).unwrap();
    let hdr = params.hdr;
    assert_eq!(&hdr.header.to_le_bytes(), b"HdrS");
    assert_eq!((hdr.type_of_loader, hdr.boot_flag), (0xff, 0xaa55));
    let version = hdr.version;
    assert_eq!(version, 0x020f, "setup header copied from the image");
    assert_eq!(hdr.cmd_line_ptr as u64, CMDLINE_START.0);
    assert_eq!(hdr.ramdisk_size as usize, initrd_bytes.len());
    let mut loaded = vec![0u8; initrd_bytes.len()];
    mem.read_slice(&mut loaded, GuestAddress(hdr.ramdisk_image.into())).unwrap();
    assert_eq!(crc32fast::hash(&loaded), crc32fast::hash(&initrd_bytes));
    assert_eq!(hdr.ramdisk_image % 4096, 0);

    let e820: Vec<(u64, u64, u32)> =
        params.e820_table[..params.e820_entries as usize].iter().map(|e| (e.addr, e.size, e.r#type)).collect();
    assert_eq!(e820, vec![(0, 0x9fc00, 1), (0x9fc00, 0x400, 2), (0x10_0000, VM_DEFAULTS.memory_bytes - 0x10_0000, 1)]);
    let ram_mib = e820.iter().filter(|e| e.2 == 1).map(|e| e.1).sum::<u64>().div_ceil(1 << 20);
    assert_eq!(ram_mib, VM_DEFAULTS.memory_bytes >> 20, "what the guest reports as mem_mib");

    // The kernel image itself sits at 1 MiB, its 64-bit entry at +0x200.
    let mut entry = [0u8; 4];
    mem.read_slice(&mut entry, GuestAddress(0x10_0200)).unwrap();
    assert_eq!(entry, [0x66, 0xba, 0xf8, 0x03]);

    // Page tables: PML4[0] → PDPT, PDPT[3] → the fourth page directory, whose last entry maps
    // 0xffe00000 as a 2 MiB page.
    let cr3 = boot.page_table;
    let pml4e: u64 = mem.read_obj(GuestAddress(cr3)).unwrap();
    let pdpte: u64 = mem.read_obj(GuestAddress((pml4e & !0xfff) + 3 * 8)).unwrap();
    let pde: u64 = mem.read_obj(GuestAddress((pdpte & !0xfff) + 511 * 8)).unwrap();
    assert_eq!(pde, 0xffe0_0000 | 0x83);
    check_common(&mem, 2);
}

#[test]
fn pvh_elf_gets_start_info_with_module_and_memmap() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "guest.elf", &common::elf(Behaviour::Reboot, true));
    let (initrd, initrd_bytes) = initrd_file(dir.path());
    let plan = plan(&kernel, Some(initrd), 1);
    let mem = allocate_guest_memory(plan.mem_bytes).unwrap();
    let boot = write_boot_data(&mem, &plan).unwrap();
    assert_eq!(boot.entry, BootEntry::Pvh { entry: 0x10_0000 });
    assert_eq!(boot.start_info, PVH_START_INFO.0);

    let info: hvm_start_info = mem.read_obj(PVH_START_INFO).unwrap();
    assert_eq!((info.magic, info.version, info.nr_modules), (0x336e_c578, 1, 1));
    assert_eq!(read_cstr(&mem, info.cmdline_paddr), CMDLINE);
    let module: hvm_modlist_entry = mem.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
    assert_eq!(module.size as usize, initrd_bytes.len());
    let mut loaded = vec![0u8; initrd_bytes.len()];
    mem.read_slice(&mut loaded, GuestAddress(module.paddr)).unwrap();
    assert_eq!(loaded, initrd_bytes);
    let memmap: Vec<(u64, u64, u32)> = (0..info.memmap_entries as u64)
        .map(|i| mem.read_obj::<hvm_memmap_table_entry>(GuestAddress(info.memmap_paddr + i * 24)).unwrap())
        .map(|e| (e.addr, e.size, e.type_))
        .collect();
    assert_eq!(
        memmap,
        vec![(0, 0x9fc00, 1), (0x9fc00, 0x400, 2), (0x10_0000, VM_DEFAULTS.memory_bytes - 0x10_0000, 1)]
    );
    // No zero page for a PVH boot.
    let params: boot_params = mem.read_obj(ZERO_PAGE_START).unwrap();
    let header = params.hdr.header;
    assert_eq!(header, 0);
    check_common(&mem, 1);
}

#[test]
fn elf_without_note_uses_the_64_bit_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "guest.elf", &common::elf(Behaviour::Reboot, false));
    let plan = plan(&kernel, None, 1);
    let mem = allocate_guest_memory(plan.mem_bytes).unwrap();
    let boot = write_boot_data(&mem, &plan).unwrap();
    assert_eq!(boot.entry, BootEntry::Linux64 { entry: 0x10_0200 });
    let params: boot_params = mem.read_obj(ZERO_PAGE_START).unwrap();
    assert_eq!(&params.hdr.header.to_le_bytes(), b"HdrS");
    assert_eq!((params.hdr.ramdisk_image, params.hdr.ramdisk_size), (0, 0));
}

/// The real Debian kernel the images helper fetched, or why there is none.
fn debian_bzimage() -> Result<PathBuf, String> {
    let boot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-images/out/debian-cloud/boot");
    std::fs::read_dir(&boot)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .ok_or_else(|| format!("no Debian kernel under {} (`boxbench images build` fetches it)", boot.display()))
}

#[test]
fn debian_bzimage_loads_with_its_own_setup_header() {
    let kernel = boxbench_testkit::require!(debian_bzimage());
    let dir = tempfile::tempdir().unwrap();
    let (initrd, initrd_bytes) = initrd_file(dir.path());
    let mut config = VmConfig::new(&kernel);
    config.initrd = Some(initrd);
    config.cmdline = CMDLINE.to_owned();
    config.memory_mib = 512;
    let plan = config.plan().unwrap();
    let mem = allocate_guest_memory(plan.mem_bytes).unwrap();
    let boot = write_boot_data(&mem, &plan).unwrap();
    let params: boot_params = mem.read_obj(ZERO_PAGE_START).unwrap();
    let hdr = params.hdr;
    assert_eq!(&hdr.header.to_le_bytes(), b"HdrS");
    let (version, xloadflags) = (hdr.version, hdr.xloadflags);
    assert!(version >= 0x020c, "a 64-bit capable protocol");
    assert_ne!(xloadflags & 1, 0, "XLF_KERNEL_64");
    assert_eq!(boot.entry, BootEntry::Linux64 { entry: u64::from(hdr.code32_start) + 0x200 });
    assert_eq!(hdr.cmd_line_ptr as u64, CMDLINE_START.0);
    assert_eq!(hdr.ramdisk_size as usize, initrd_bytes.len());
    assert!(u64::from(hdr.ramdisk_image) >= u64::from(hdr.code32_start) + u64::from(hdr.init_size));
    assert_eq!(hdr.ramdisk_image % 4096, 0);
    assert_eq!((hdr.type_of_loader, hdr.boot_flag), (0xff, 0xaa55));
    let mut loaded = vec![0u8; initrd_bytes.len()];
    mem.read_slice(&mut loaded, GuestAddress(hdr.ramdisk_image.into())).unwrap();
    assert_eq!(crc32fast::hash(&loaded), crc32fast::hash(&initrd_bytes), "initrd contents");

    // The protected-mode kernel (the file after its setup sectors) is loaded at code32_start.
    let image = std::fs::read(&kernel).unwrap();
    let setup_sectors = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let payload = &image[(setup_sectors + 1) * 512..];
    let mut at_code32 = vec![0u8; payload.len().min(64 << 10)];
    mem.read_slice(&mut at_code32, GuestAddress(hdr.code32_start.into())).unwrap();
    assert_eq!(at_code32, payload[..at_code32.len()], "kernel payload at code32_start");

    // 512 MiB: low RAM below the EBDA, the EBDA reserved, the rest from 1 MiB.
    let e820: Vec<(u64, u64, u32)> =
        params.e820_table[..params.e820_entries as usize].iter().map(|e| (e.addr, e.size, e.r#type)).collect();
    assert_eq!(e820, vec![(0, 0x9fc00, 1), (0x9fc00, 0x400, 2), (0x10_0000, (512 << 20) - 0x10_0000, 1)]);

    // The identity map reaches the top of the first 4 GiB (2 MiB pages), as for any kernel.
    let pml4e: u64 = mem.read_obj(GuestAddress(boot.page_table)).unwrap();
    let pdpte: u64 = mem.read_obj(GuestAddress((pml4e & !0xfff) + 3 * 8)).unwrap();
    let pde: u64 = mem.read_obj(GuestAddress((pdpte & !0xfff) + 511 * 8)).unwrap();
    assert_eq!(pde, 0xffe0_0000 | 0x83);
    check_common(&mem, 1);
}

#[test]
fn own_guest_images_get_their_boot_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let (initrd, initrd_bytes) = initrd_file(dir.path());

    let plan_bz = plan(boxbench_guest::bzimage_path(), Some(initrd.clone()), 2);
    let mem = allocate_guest_memory(plan_bz.mem_bytes).unwrap();
    let boot = write_boot_data(&mem, &plan_bz).unwrap();
    assert_eq!(boot.entry, BootEntry::Linux64 { entry: 0x10_0200 });
    let params: boot_params = mem.read_obj(ZERO_PAGE_START).unwrap();
    let (header, version, cmd_line_ptr, ramdisk_size) =
        (params.hdr.header, params.hdr.version, params.hdr.cmd_line_ptr, params.hdr.ramdisk_size);
    assert_eq!(&header.to_le_bytes(), b"HdrS");
    assert!(version >= 0x020c);
    assert_eq!((cmd_line_ptr as u64, ramdisk_size as usize), (CMDLINE_START.0, initrd_bytes.len()));
    check_common(&mem, 2);

    let plan_elf = plan(boxbench_guest::elf_path(), Some(initrd), 1);
    let mem = allocate_guest_memory(plan_elf.mem_bytes).unwrap();
    let boot = write_boot_data(&mem, &plan_elf).unwrap();
    assert_eq!(boot.entry, BootEntry::Pvh { entry: 0x10_0000 });
    let info: hvm_start_info = mem.read_obj(PVH_START_INFO).unwrap();
    assert_eq!((info.magic, info.nr_modules), (0x336e_c578, 1));
    check_common(&mem, 1);
}
