//! Kernel, initrd and command line: checked before anything is created, then loaded into guest memory.
//! What an initrd may be is [`crate::initramfs`]'s to decide.
//!
//! The kernel is either a bzImage (Linux boot protocol: its protected-mode payload loads at
//! `code32_start`, the 64-bit entry is 0x200 into it) or an ELF vmlinux (segments load at their
//! physical addresses; with a Xen PVH note the VMM enters at the note's 32-bit entry, otherwise at
//! `e_entry` in 64-bit mode). linux-loader does the loading; this module first checks what
//! linux-loader takes on trust (machine, truncation, fit in memory), so a bad file fails with its name
//! and nothing half-built.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::bootparam::setup_header;
use linux_loader::loader::{Elf, KernelLoader, PvhBootCapability, bzimage::BzImage};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::boot_params::InitrdRegion;
use crate::initramfs::{self, InitramfsError};
use crate::layout::{BZIMAGE_64BIT_ENTRY_OFFSET, CMDLINE_MAX_SIZE, CMDLINE_START, KERNEL_START};

/// ELF machine number of x86-64.
const EM_X86_64: u16 = 62;
/// ELF class of 64-bit objects.
const ELFCLASS64: u8 = 2;
/// ELF little-endian data encoding.
const ELFDATA2LSB: u8 = 1;
/// Loadable segment.
const PT_LOAD: u32 = 1;
/// "HdrS" at offset 0x202 of a bzImage.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Offset of the setup header in a bzImage.
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// `loadflags` bit: the protected-mode code loads at 1 MiB (a bzImage, not a zImage).
const LOADED_HIGH: u8 = 0x1;
/// `xloadflags` bit: the kernel has the 64-bit entry at 0x200.
const XLF_KERNEL_64: u16 = 0x1;
/// The first boot protocol with `xloadflags` and the 64-bit entry (2.12).
const MIN_64BIT_PROTOCOL: u16 = 0x020c;
/// Initrds are page aligned.
const PAGE: u64 = 0x1000;

/// A kernel, initrd or command line that cannot be booted; each message names the file or setting.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The kernel file does not exist.
    #[error("kernel {0}: no such file")]
    KernelMissing(PathBuf),
    /// The kernel file could not be read.
    #[error("kernel {path}: {source}")]
    KernelRead { path: PathBuf, source: std::io::Error },
    /// Neither an ELF nor a bzImage.
    #[error("kernel {0}: neither an ELF vmlinux nor a bzImage (no ELF magic, no \"HdrS\" at 0x202)")]
    KernelUnknownFormat(PathBuf),
    /// An ELF the VMM cannot boot.
    #[error("kernel {path}: {what}")]
    KernelBadElf { path: PathBuf, what: String },
    /// A bzImage the VMM cannot boot.
    #[error("kernel {path}: {what}")]
    KernelBadBzImage { path: PathBuf, what: String },
    /// linux-loader refused the image.
    #[error("kernel {path}: {source}")]
    KernelLoad { path: PathBuf, source: linux_loader::loader::Error },
    /// The initrd file does not exist.
    #[error("initrd {0}: no such file")]
    InitrdMissing(PathBuf),
    /// The initrd is empty.
    #[error("initrd {0}: empty file")]
    InitrdEmpty(PathBuf),
    /// The initrd could not be read.
    #[error("initrd {path}: {source}")]
    InitrdRead { path: PathBuf, source: std::io::Error },
    /// The initrd is not an initramfs the kernel can unpack.
    #[error("initrd {path}: {source}")]
    InitrdNotInitramfs { path: PathBuf, source: InitramfsError },
    /// The initrd does not fit where the kernel can reach it.
    #[error("initrd {path}: {size} bytes do not fit between the kernel's end ({kernel_end:#x}) and {limit:#x}")]
    InitrdTooBig { path: PathBuf, size: u64, kernel_end: u64, limit: u64 },
    /// The command line is too long or has a NUL.
    #[error("cmdline: {0}")]
    Cmdline(String),
    /// Guest memory refused a write.
    #[error("writing {what} into guest memory: {source}")]
    Write { what: &'static str, source: vm_memory::GuestMemoryError },
}

/// The kind of kernel image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A Linux boot protocol image with a setup header.
    BzImage,
    /// An ELF executable (vmlinux or boxbench's guest).
    Elf,
}

/// What the VMM learnt about a kernel before loading it.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    /// The file.
    pub path: PathBuf,
    /// Its format.
    pub format: KernelFormat,
    /// The lowest guest-physical address it needs in RAM beyond (its load address).
    pub load_start: u64,
    /// The end (exclusive) of guest memory the kernel needs: its segments, or for a bzImage its
    /// `init_size` (the room it decompresses and runs in).
    pub extent_end: u64,
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// 64-bit mode with paging on, RSI = zero page (Linux 64-bit boot protocol).
    Linux64 { entry: u64 },
    /// 32-bit protected mode with paging off, EBX = `hvm_start_info` (PVH).
    Pvh { entry: u64 },
}

/// A kernel loaded into guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Where to start the boot vCPU.
    pub entry: BootEntry,
    /// The end (exclusive) of what the kernel occupies.
    pub end: u64,
    /// A bzImage's setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
    file.seek(SeekFrom::Start(offset))?;
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7]])
}

fn open(path: &Path) -> Result<File, LoaderError> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => LoaderError::KernelMissing(path.to_owned()),
        _ => LoaderError::KernelRead { path: path.to_owned(), source },
    })
}

/// Checks that `path` is a kernel this VMM boots (format, machine, completeness) without loading it.
pub fn inspect_kernel(path: &Path) -> Result<KernelInfo, LoaderError> {
    let mut file = open(path)?;
    let read_err = |source| LoaderError::KernelRead { path: path.to_owned(), source };
    let len = file.metadata().map_err(read_err)?.len();
    let mut ident = [0u8; 64];
    let got_elf_header = read_at(&mut file, 0, &mut ident).map_err(read_err)?;
    if ident[..4] == *b"\x7fELF" {
        if !got_elf_header {
            return Err(LoaderError::KernelBadElf { path: path.to_owned(), what: "truncated ELF header".into() });
        }
        return inspect_elf(path, &mut file, &ident, len);
    }
    let mut header = [0u8; 0x80];
    if read_at(&mut file, SETUP_HEADER_OFFSET, &mut header).map_err(read_err)?
        && le32(&header, 0x202 - SETUP_HEADER_OFFSET as usize) == HDRS_MAGIC
    {
        return inspect_bzimage(path, &header, len);
    }
    Err(LoaderError::KernelUnknownFormat(path.to_owned()))
}

fn inspect_elf(path: &Path, file: &mut File, ehdr: &[u8; 64], len: u64) -> Result<KernelInfo, LoaderError> {
    let bad = |what: String| LoaderError::KernelBadElf { path: path.to_owned(), what };
    if ehdr[4] != ELFCLASS64 || ehdr[5] != ELFDATA2LSB {
        return Err(bad("not a 64-bit little-endian ELF".into()));
    }
    let machine = le16(ehdr, 18);
    if machine != EM_X86_64 {
        return Err(bad(format!("ELF for machine {machine}, not x86-64 ({EM_X86_64})")));
    }
    let phoff = le64(ehdr, 32);
    let phentsize = le16(ehdr, 54) as u64;
    let phnum = le16(ehdr, 56) as u64;
    if phentsize != 56 || phnum == 0 {
        return Err(bad(format!("{phnum} program headers of {phentsize} bytes (expected 56-byte headers)")));
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    let complete =
        read_at(file, phoff, &mut table).map_err(|source| LoaderError::KernelRead { path: path.to_owned(), source })?;
    if !complete {
        return Err(bad("truncated: program headers past the end of the file".into()));
    }
    let mut load_start = u64::MAX;
    let mut extent_end = 0;
    for phdr in table.chunks_exact(56) {
        if le32(phdr, 0) != PT_LOAD {
            continue;
        }
        let (offset, paddr, filesz, memsz) = (le64(phdr, 8), le64(phdr, 24), le64(phdr, 32), le64(phdr, 40));
        if offset.checked_add(filesz).is_none_or(|end| end > len) {
            return Err(bad(format!("truncated: a segment ends past the file's {len} bytes")));
        }
        if paddr < KERNEL_START.0 {
            return Err(bad(format!("a segment loads at {paddr:#x}, below 1 MiB where the VMM's boot data lives")));
        }
        load_start = load_start.min(paddr);
        extent_end = extent_end.max(paddr.saturating_add(memsz.max(filesz)));
    }
    if extent_end == 0 {
        return Err(bad("no loadable segment".into()));
    }
    Ok(KernelInfo { path: path.to_owned(), format: KernelFormat::Elf, load_start, extent_end })
}

fn inspect_bzimage(path: &Path, header: &[u8], len: u64) -> Result<KernelInfo, LoaderError> {
    let bad = |what: String| LoaderError::KernelBadBzImage { path: path.to_owned(), what };
    let at = |offset: usize| offset - SETUP_HEADER_OFFSET as usize;
    let setup_sects = match header[at(0x1f1)] {
        0 => 4,
        n => n as u64,
    };
    let syssize = le32(header, at(0x1f4)) as u64;
    let version = le16(header, at(0x206));
    let loadflags = header[at(0x211)];
    let code32_start = le32(header, at(0x214)) as u64;
    let xloadflags = le16(header, at(0x236));
    let init_size = le32(header, at(0x260)) as u64;
    if version < MIN_64BIT_PROTOCOL {
        return Err(bad(format!("boot protocol {}.{}, older than 2.12", version >> 8, version & 0xff)));
    }
    if loadflags & LOADED_HIGH == 0 {
        return Err(bad("a zImage (LOADED_HIGH clear), not a bzImage".into()));
    }
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(bad("no 64-bit entry point (XLF_KERNEL_64 clear)".into()));
    }
    let payload_offset = (setup_sects + 1) * 512;
    let payload_len = syssize * 16;
    if payload_offset + payload_len > len {
        return Err(bad(format!(
            "truncated: the header announces {} bytes, the file has {len}",
            payload_offset + payload_len
        )));
    }
    let load_start = code32_start.max(KERNEL_START.0);
    Ok(KernelInfo {
        path: path.to_owned(),
        format: KernelFormat::BzImage,
        load_start,
        extent_end: load_start + init_size.max(len - payload_offset),
    })
}

/// Loads an inspected kernel into guest memory.
pub fn load_kernel(mem: &GuestMemoryMmap, kernel: &KernelInfo) -> Result<LoadedKernel, LoaderError> {
    let mut file = open(&kernel.path)?;
    let load_err = |source| LoaderError::KernelLoad { path: kernel.path.clone(), source };
    match kernel.format {
        KernelFormat::BzImage => {
            let loaded = BzImage::load(mem, None, &mut file, Some(KERNEL_START)).map_err(load_err)?;
            Ok(LoadedKernel {
                entry: BootEntry::Linux64 { entry: loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET },
                end: loaded.kernel_end.max(kernel.extent_end),
                setup_header: loaded.setup_header,
            })
        }
        KernelFormat::Elf => {
            let loaded = Elf::load(mem, None, &mut file, Some(KERNEL_START)).map_err(load_err)?;
            let entry = match loaded.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(entry) => BootEntry::Pvh { entry: entry.0 },
                _ => BootEntry::Linux64 { entry: loaded.kernel_load.0 },
            };
            Ok(LoadedKernel { entry, end: loaded.kernel_end.max(kernel.extent_end), setup_header: None })
        }
    }
}

/// Checks the initrd: it exists, is not empty, and is an initramfs the kernel can unpack (a whole
/// cpio archive, or a compressed stream the kernel inflates); returns its size.
pub fn inspect_initrd(path: &Path) -> Result<u64, LoaderError> {
    let read_err = |source| LoaderError::InitrdRead { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => LoaderError::InitrdMissing(path.to_owned()),
        _ => read_err(source),
    })?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")));
    }
    let size = meta.len();
    if size == 0 {
        return Err(LoaderError::InitrdEmpty(path.to_owned()));
    }
    initramfs::check_initramfs(&mut file, size)
        .map_err(|source| LoaderError::InitrdNotInitramfs { path: path.to_owned(), source })?;
    Ok(size)
}

/// Where an initrd of `size` bytes goes: page aligned, as high as possible below `limit` (the end of
/// low RAM, or the kernel's `initrd_addr_max`), so it stays clear of the kernel growing upwards.
pub fn place_initrd(path: &Path, size: u64, kernel_end: u64, limit: u64) -> Result<InitrdRegion, LoaderError> {
    let too_big = || LoaderError::InitrdTooBig { path: path.to_owned(), size, kernel_end, limit };
    let address = limit.checked_sub(size).ok_or_else(too_big)? & !(PAGE - 1);
    if address < kernel_end {
        return Err(too_big());
    }
    Ok(InitrdRegion { address, size })
}

/// Copies the initrd file into guest memory at `region`.
pub fn load_initrd(mem: &GuestMemoryMmap, path: &Path, region: InitrdRegion) -> Result<(), LoaderError> {
    let read_err = |source| LoaderError::InitrdRead { path: path.to_owned(), source };
    let mut file = File::open(path).map_err(read_err)?;
    mem.read_exact_volatile_from(GuestAddress(region.address), &mut file, region.size as usize)
        .map_err(|e| LoaderError::InitrdRead { path: path.to_owned(), source: std::io::Error::other(e.to_string()) })
}

/// Checks a command line: no NUL inside, and it fits in Linux's 2048 bytes with its NUL.
pub fn check_cmdline(cmdline: &str) -> Result<(), LoaderError> {
    if cmdline.contains('\0') {
        return Err(LoaderError::Cmdline("contains a NUL byte".into()));
    }
    if cmdline.len() + 1 > CMDLINE_MAX_SIZE {
        return Err(LoaderError::Cmdline(format!(
            "{} bytes, more than the {} the kernel takes",
            cmdline.len(),
            CMDLINE_MAX_SIZE - 1
        )));
    }
    Ok(())
}

/// Writes the NUL-terminated command line where the zero page and PVH start info point.
pub fn load_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), LoaderError> {
    check_cmdline(cmdline)?;
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    mem.write_slice(&bytes, CMDLINE_START).map_err(|source| LoaderError::Write { what: "the command line", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    #[test]
    fn random_bytes_are_neither_elf_nor_bzimage() {
        let file = file_with(&[0x5a; 4096]);
        let err = inspect_kernel(file.path()).unwrap_err();
        assert!(matches!(err, LoaderError::KernelUnknownFormat(_)));
        assert!(err.to_string().contains(&file.path().display().to_string()));
    }

    #[test]
    fn missing_kernel_and_initrd_are_named() {
        let err = inspect_kernel(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert_eq!(err.to_string(), "kernel /nonexistent/vmlinux: no such file");
        let err = inspect_initrd(Path::new("/nonexistent/initrd")).unwrap_err();
        assert_eq!(err.to_string(), "initrd /nonexistent/initrd: no such file");
        let empty = file_with(&[]);
        assert!(matches!(inspect_initrd(empty.path()), Err(LoaderError::InitrdEmpty(_))));
    }

    #[test]
    fn elf_for_another_machine_is_refused() {
        let mut ehdr = [0u8; 64];
        ehdr[..4].copy_from_slice(b"\x7fELF");
        ehdr[4] = ELFCLASS64;
        ehdr[5] = ELFDATA2LSB;
        ehdr[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        let file = file_with(&ehdr);
        let err = inspect_kernel(file.path()).unwrap_err();
        assert!(err.to_string().contains("machine 183"), "{err}");
    }

    #[test]
    fn initrd_goes_high_and_page_aligned_or_is_refused() {
        let region = place_initrd(Path::new("i"), 5000, 0x20_0000, 0x800_0000).unwrap();
        assert_eq!(region.address, (0x800_0000 - 5000) & !0xfff);
        assert!(region.address + 5000 <= 0x800_0000);
        let err = place_initrd(Path::new("i"), 0x800_0000, 0x20_0000, 0x800_0000).unwrap_err();
        assert!(err.to_string().starts_with("initrd i: "), "{err}");
    }

    #[test]
    fn cmdline_limits() {
        check_cmdline("console=ttyS0").unwrap();
        assert!(check_cmdline("a\0b").is_err());
        assert!(check_cmdline(&"x".repeat(2048)).unwrap_err().to_string().starts_with("cmdline: 2048 bytes"));
    }
}
