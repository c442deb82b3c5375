//! Builds boxbench's guest kernel from guest-images/boxbench-guest with the host's gcc and GNU
//! binutils, into OUT_DIR: `boxbench-guest.elf` (ELF64, PVH note, 64-bit entry as e_entry) and
//! `boxbench-guest.bzImage` (the same flat image behind a Linux setup header, packed here).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the guest is linked and loaded (a Linux kernel's protected-mode load address).
const LOAD_ADDRESS: u64 = 0x10_0000;
/// The 64-bit boot protocol entry, at load address + 0x200 like Linux's startup_64.
const ENTRY64_OFFSET: u64 = 0x200;
/// File offset of the real-mode setup code, past the zero page's e820 table (0x2d0 + 128 * 20).
const SETUP_CODE_OFFSET: usize = 0x1000;
/// The setup code's link address: offsets are relative to CS = setup segment + 0x20.
const SETUP_CODE_LINK: usize = SETUP_CODE_OFFSET - 0x200;
/// The short jump at 0x200 lands here, just past the setup header; a near jump goes on from it.
const SETUP_TRAMPOLINE_OFFSET: usize = 0x270;
const KERNEL_VERSION_OFFSET: usize = 0x280;
const KERNEL_VERSION: &str = concat!("boxbench-guest ", env!("CARGO_PKG_VERSION"));

/// Boot protocol 2.12: the first version with xloadflags' 64-bit entry flag.
const BOOT_PROTOCOL_VERSION: u16 = 0x020c;
const LOADFLAGS_LOADED_HIGH: u8 = 0x01;
const XLF_KERNEL_64: u16 = 0x0001;
const CMDLINE_SIZE: u32 = 4095;
const INITRD_ADDR_MAX: u32 = 0x7fff_ffff;
const KERNEL_ALIGNMENT: u32 = 0x10_0000;
const MIN_ALIGNMENT_LOG2: u8 = 20;

const SOURCES: &[&str] = &["entry.S", "guest.c", "setup.S", "linker.ld"];

const CFLAGS: &[&str] = &[
    "-ffreestanding",
    "-nostdlib",
    "-fno-pic",
    "-fno-pie",
    "-mno-red-zone",
    "-mno-sse",
    "-mno-mmx",
    "-mgeneral-regs-only",
    "-O2",
    "-static",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fcf-protection=none",
    // gcc would otherwise turn the loops of memset/memcpy into calls to themselves.
    "-fno-tree-loop-distribute-patterns",
    // Reading the BIOS data area at 0x40e is intended; gcc would call it an out-of-bounds access.
    "--param=min-pagesize=0",
    "-Wall",
    "-Wextra",
    "-Werror",
];

#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error(
        "`{tool}` not found or not runnable ({source}): building the guest needs gcc and GNU binutils (ld, objcopy); install them (Debian: apt-get install gcc binutils)"
    )]
    ToolMissing { tool: &'static str, source: std::io::Error },
    #[error("`{command}` failed with {status}")]
    ToolFailed { command: String, status: std::process::ExitStatus },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("environment variable {0} not set by cargo")]
    Env(&'static str),
    #[error("{path}: {what}")]
    BadElf { path: PathBuf, what: String },
    #[error("setup code is {0} bytes: too big for the setup sectors")]
    SetupTooBig(usize),
}

fn main() {
    if let Err(error) = build() {
        eprintln!("error: building boxbench-guest: {error}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), BuildError> {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or(BuildError::Env("CARGO_MANIFEST_DIR"))?);
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or(BuildError::Env("OUT_DIR"))?);
    let source_dir = manifest_dir.join("../../guest-images/boxbench-guest");
    println!("cargo:rerun-if-changed=build.rs");
    for source in SOURCES {
        println!("cargo:rerun-if-changed={}", source_dir.join(source).display());
    }

    for tool in ["gcc", "ld", "objcopy"] {
        check_tool(tool)?;
    }

    write_file(&out_dir.join("crc32_table.h"), crc32_table_header().as_bytes())?;

    let guest_o = out_dir.join("guest.o");
    let entry_o = out_dir.join("entry.o");
    let setup_o = out_dir.join("setup.o");
    compile(&source_dir.join("guest.c"), &guest_o, &out_dir)?;
    compile(&source_dir.join("entry.S"), &entry_o, &out_dir)?;
    compile(&source_dir.join("setup.S"), &setup_o, &out_dir)?;

    let elf = out_dir.join("boxbench-guest.elf");
    let mut link = Command::new("ld");
    link.args(["-nostdlib", "-static", "--no-warn-rwx-segments", "-z", "noexecstack", "-T"])
        .arg(source_dir.join("linker.ld"))
        .arg("-o")
        .arg(&elf)
        .arg(&entry_o)
        .arg(&guest_o);
    run(&mut link)?;

    let setup_elf = out_dir.join("setup.elf");
    let mut link_setup = Command::new("ld");
    link_setup
        .args(["-nostdlib", "-static", "-z", "noexecstack", "-e", "setup_start"])
        .arg(format!("-Ttext=0x{SETUP_CODE_LINK:x}"))
        .arg("-o")
        .arg(&setup_elf)
        .arg(&setup_o);
    run(&mut link_setup)?;

    let flat = out_dir.join("boxbench-guest.bin");
    let setup_bin = out_dir.join("setup.bin");
    run(Command::new("objcopy").args(["-O", "binary"]).arg(&elf).arg(&flat))?;
    run(Command::new("objcopy").args(["-O", "binary", "-j", ".text"]).arg(&setup_elf).arg(&setup_bin))?;

    let elf_bytes = read_file(&elf)?;
    let segment = load_segment(&elf_bytes).map_err(|what| BuildError::BadElf { path: elf.clone(), what })?;
    let payload = read_file(&flat)?;
    if payload.len() as u64 != segment.file_size {
        return Err(BuildError::BadElf {
            path: flat,
            what: format!("flat image is {} bytes, the PT_LOAD segment {}", payload.len(), segment.file_size),
        });
    }
    let setup_code = read_file(&setup_bin)?;
    let bzimage = pack_bzimage(&setup_code, &payload, segment.mem_size)?;
    write_file(&out_dir.join("boxbench-guest.bzImage"), &bzimage)?;
    Ok(())
}

fn check_tool(tool: &'static str) -> Result<(), BuildError> {
    let status =
        Command::new(tool).arg("--version").output().map_err(|source| BuildError::ToolMissing { tool, source })?;
    if status.status.success() {
        Ok(())
    } else {
        Err(BuildError::ToolMissing { tool, source: std::io::Error::other(format!("--version: {}", status.status)) })
    }
}

fn compile(source: &Path, object: &Path, include_dir: &Path) -> Result<(), BuildError> {
    let mut gcc = Command::new("gcc");
    gcc.args(CFLAGS).arg("-I").arg(include_dir).arg("-c").arg(source).arg("-o").arg(object);
    run(&mut gcc)
}

fn run(command: &mut Command) -> Result<(), BuildError> {
    let status = command.status().map_err(|source| BuildError::Io { path: command.get_program().into(), source })?;
    if status.success() { Ok(()) } else { Err(BuildError::ToolFailed { command: format!("{command:?}"), status }) }
}

fn read_file(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Io { path: path.to_owned(), source })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    std::fs::write(path, bytes).map_err(|source| BuildError::Io { path: path.to_owned(), source })
}

/// The CRC-32 (IEEE 802.3, reflected polynomial 0xedb88320) byte table, as a C header.
fn crc32_table_header() -> String {
    let mut header = String::from(
        "/* Generated by crates/boxbench-guest/build.rs. */\nstatic const uint32_t crc32_table[256] = {\n",
    );
    for byte in 0u32..256 {
        let mut crc = byte;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
        let _ = writeln!(header, "\t0x{crc:08x},");
    }
    header.push_str("};\n");
    header
}

/// The one PT_LOAD segment of the guest ELF.
struct LoadSegment {
    file_size: u64,
    mem_size: u64,
}

fn load_segment(elf: &[u8]) -> Result<LoadSegment, String> {
    const PT_LOAD: u32 = 1;
    let u16_at = |offset: usize| elf.get(offset..offset + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |offset: usize| elf.get(offset..offset + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |offset: usize| {
        elf.get(offset..offset + 8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return Err("not an ELF64 file".into());
    }
    let entry = u64_at(0x18).ok_or("truncated ELF header")?;
    if entry != LOAD_ADDRESS + ENTRY64_OFFSET {
        return Err(format!("e_entry is 0x{entry:x}, expected 0x{:x}", LOAD_ADDRESS + ENTRY64_OFFSET));
    }
    let phoff = u64_at(0x20).ok_or("truncated ELF header")? as usize;
    let phentsize = u16_at(0x36).ok_or("truncated ELF header")? as usize;
    let phnum = u16_at(0x38).ok_or("truncated ELF header")? as usize;
    let mut loads = (0..phnum).map(|i| phoff + i * phentsize).filter(|&ph| u32_at(ph) == Some(PT_LOAD));
    let ph = loads.next().ok_or("no PT_LOAD segment")?;
    if loads.next().is_some() {
        return Err("more than one PT_LOAD segment".into());
    }
    let paddr = u64_at(ph + 0x18).ok_or("truncated program header")?;
    if paddr != LOAD_ADDRESS {
        return Err(format!("PT_LOAD at 0x{paddr:x}, expected 0x{LOAD_ADDRESS:x}"));
    }
    Ok(LoadSegment {
        file_size: u64_at(ph + 0x20).ok_or("truncated program header")?,
        mem_size: u64_at(ph + 0x28).ok_or("truncated program header")?,
    })
}

/// A bzImage: boot sector and setup sectors carrying the Linux setup header (boot.rst), then
/// the flat protected-mode image that loaders copy to code32_start.
fn pack_bzimage(setup_code: &[u8], payload: &[u8], mem_size: u64) -> Result<Vec<u8>, BuildError> {
    let setup_len = (SETUP_CODE_OFFSET + setup_code.len()).next_multiple_of(512);
    let setup_sects = setup_len / 512 - 1;
    let setup_sects = u8::try_from(setup_sects).map_err(|_| BuildError::SetupTooBig(setup_code.len()))?;
    let mut image = vec![0u8; setup_len];
    image[SETUP_CODE_OFFSET..SETUP_CODE_OFFSET + setup_code.len()].copy_from_slice(setup_code);

    let syssize = u32::try_from(payload.len().div_ceil(16)).unwrap_or(u32::MAX);
    let init_size = u32::try_from(mem_size.next_multiple_of(4096)).unwrap_or(u32::MAX);

    image[0x1f1] = setup_sects;
    image[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    // jump: a short jump over the header to the near jump at SETUP_TRAMPOLINE_OFFSET.
    image[0x200] = 0xeb;
    image[0x201] = (SETUP_TRAMPOLINE_OFFSET - 0x202) as u8;
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&BOOT_PROTOCOL_VERSION.to_le_bytes());
    image[0x20e..0x210].copy_from_slice(&((KERNEL_VERSION_OFFSET - 0x200) as u16).to_le_bytes());
    image[0x211] = LOADFLAGS_LOADED_HIGH;
    image[0x214..0x218].copy_from_slice(&(LOAD_ADDRESS as u32).to_le_bytes());
    image[0x22c..0x230].copy_from_slice(&INITRD_ADDR_MAX.to_le_bytes());
    image[0x230..0x234].copy_from_slice(&KERNEL_ALIGNMENT.to_le_bytes());
    image[0x234] = 0; // relocatable_kernel: linked at LOAD_ADDRESS only
    image[0x235] = MIN_ALIGNMENT_LOG2;
    image[0x236..0x238].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
    image[0x238..0x23c].copy_from_slice(&CMDLINE_SIZE.to_le_bytes());
    image[0x258..0x260].copy_from_slice(&LOAD_ADDRESS.to_le_bytes());
    image[0x260..0x264].copy_from_slice(&init_size.to_le_bytes());

    // near jump (relative to the next instruction, IP = file offset - 0x200) to the setup code.
    let next_ip = SETUP_TRAMPOLINE_OFFSET + 3 - 0x200;
    let displacement = (SETUP_CODE_LINK - next_ip) as u16;
    image[SETUP_TRAMPOLINE_OFFSET] = 0xe9;
    image[SETUP_TRAMPOLINE_OFFSET + 1..SETUP_TRAMPOLINE_OFFSET + 3].copy_from_slice(&displacement.to_le_bytes());
    image[KERNEL_VERSION_OFFSET..KERNEL_VERSION_OFFSET + KERNEL_VERSION.len()]
        .copy_from_slice(KERNEL_VERSION.as_bytes());

    image.extend_from_slice(payload);
    image.resize(setup_len + payload.len().next_multiple_of(16), 0);
    Ok(image)
}
