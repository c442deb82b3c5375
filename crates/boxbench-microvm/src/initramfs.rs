//! What the VMM accepts as an initrd: something the Linux kernel can unpack as an initramfs, checked
//! before anything is created so a wrong file fails with a message naming it instead of a guest that
//! panics (or, under kvm_pvm, spends a minute of emulated boot) looking for `/init`.
//!
//! The kernel's unpacker (init/initramfs.c) takes a sequence of archives: an uncompressed cpio in the
//! `newc` (`070701`) or `crc` (`070702`) format, or a compressed stream it recognises by its first
//! bytes (lib/decompress.c), with NUL padding allowed between archives. An uncompressed cpio is walked
//! here header by header up to its `TRAILER!!!` entry, so a truncated or corrupt one is refused; a
//! compressed stream is recognised by its magic only (it is not inflated here) and ends the walk,
//! since what follows it cannot be found without inflating it.

use std::io::{self, Read, Seek, SeekFrom};

use boxbench_images::cpio::{HEADER_LEN, TRAILER};

/// The kernel refuses entry names longer than this (`PATH_MAX`).
const PATH_MAX: u64 = 4096;
/// The first five bytes of every cpio header the kernel unpacks.
const CPIO_MAGIC_PREFIX: &[u8; 5] = b"07070";
/// The sixth byte: `070701` (newc) or `070702` (crc, newc with a data checksum).
const CPIO_VARIANTS: [u8; 2] = [b'1', b'2'];
/// Names of the thirteen 8-digit hexadecimal header fields, in order.
const FIELDS: [&str; 13] = [
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
];
/// Index of `filesize` in [`FIELDS`].
const FILESIZE: usize = 6;
/// Index of `namesize` in [`FIELDS`].
const NAMESIZE: usize = 11;
/// The leading bytes of the compressed formats the kernel can inflate an initramfs from (the table of
/// lib/decompress.c): gzip (and old gzip's second magic), xz, zstd, bzip2, lzma, lz4 (legacy frame)
/// and lzo.
const COMPRESSED_MAGICS: [&[u8]; 8] = [
    &[0x1f, 0x8b],
    &[0x1f, 0x9e],
    &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
    &[0x28, 0xb5, 0x2f, 0xfd],
    b"BZh",
    &[0x5d, 0x00, 0x00],
    &[0x02, 0x21, 0x4c, 0x18],
    &[0x89, 0x4c, 0x5a, 0x4f],
];

/// Why a file is not an initramfs the kernel can unpack; the caller names the file.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The file starts with neither a cpio header nor a compressed stream.
    #[error("not an initramfs (no cpio or compressed-archive magic)")]
    UnknownFormat,
    /// A cpio archive ends before its `TRAILER!!!` entry, or inside an entry.
    #[error("truncated cpio archive ({0})")]
    Truncated(String),
    /// A cpio header the kernel would refuse, or bytes after an archive that start no other.
    #[error("malformed cpio archive ({0})")]
    Malformed(String),
    /// The file could not be read.
    #[error("reading: {0}")]
    Read(#[from] io::Error),
}

/// What starts at an offset of the file.
enum Archive {
    Cpio,
    Compressed,
}

/// Checks that the `len` bytes of `file` are an initramfs the kernel can unpack.
pub fn check_initramfs<R: Read + Seek>(file: &mut R, len: u64) -> Result<(), InitramfsError> {
    match archive_at(file, 0, len)? {
        Some(Archive::Cpio) => {}
        Some(Archive::Compressed) => return Ok(()),
        None => return Err(InitramfsError::UnknownFormat),
    }
    let mut at = walk_cpio(file, 0, len)?;
    loop {
        at = skip_nul_padding(file, at, len)?;
        if at >= len {
            return Ok(());
        }
        match archive_at(file, at, len)? {
            Some(Archive::Cpio) if at % 4 == 0 => at = walk_cpio(file, at, len)?,
            Some(Archive::Cpio) => {
                return Err(InitramfsError::Malformed(format!("cpio header at offset {at} is not 4-byte aligned")));
            }
            Some(Archive::Compressed) => return Ok(()),
            None => {
                return Err(InitramfsError::Malformed(format!(
                    "{} bytes at offset {at}, after a trailer, are neither a cpio archive nor a compressed one",
                    len - at
                )));
            }
        }
    }
}

/// Recognises the archive starting at `at` by its first bytes; `None` when nothing matches.
fn archive_at<R: Read + Seek>(file: &mut R, at: u64, len: u64) -> Result<Option<Archive>, InitramfsError> {
    let mut head = [0u8; 6];
    let got = read_upto(file, at, &mut head)?;
    let head = &head[..got.min(usize::try_from(len.saturating_sub(at)).unwrap_or(usize::MAX))];
    if head.starts_with(CPIO_MAGIC_PREFIX) {
        return Ok(Some(Archive::Cpio));
    }
    Ok(COMPRESSED_MAGICS.iter().any(|magic| head.starts_with(magic)).then_some(Archive::Compressed))
}

/// Walks the cpio archive starting at `start` to its `TRAILER!!!` entry; returns the offset just
/// after the trailer's name.
fn walk_cpio<R: Read + Seek>(file: &mut R, start: u64, len: u64) -> Result<u64, InitramfsError> {
    let mut at = start;
    let mut previous: Option<String> = None;
    loop {
        let mut header = [0u8; HEADER_LEN];
        let got = read_upto(file, at, &mut header)?;
        if got < HEADER_LEN {
            let after = match &previous {
                Some(name) => format!("after entry {name:?}"),
                None => "at its start".to_owned(),
            };
            return Err(InitramfsError::Truncated(match got {
                0 => format!("the file ends at {len} bytes {after}, with no {TRAILER} entry"),
                _ => format!("the header at offset {at} {after} is cut off after {got} of {HEADER_LEN} bytes"),
            }));
        }
        if !header.starts_with(CPIO_MAGIC_PREFIX) || !CPIO_VARIANTS.contains(&header[5]) {
            return Err(InitramfsError::Malformed(format!(
                "magic {:?} at offset {at}, where the kernel takes 070701 (newc) or 070702 (crc)",
                String::from_utf8_lossy(&header[..6])
            )));
        }
        let mut fields = [0u64; FIELDS.len()];
        for (i, field) in fields.iter_mut().enumerate() {
            let text = &header[6 + 8 * i..14 + 8 * i];
            *field = parse_hex(text).ok_or_else(|| {
                InitramfsError::Malformed(format!(
                    "header at offset {at}: {} is {:?}, not 8 hexadecimal digits",
                    FIELDS[i],
                    String::from_utf8_lossy(text)
                ))
            })?;
        }
        let name_size = fields[NAMESIZE];
        if name_size == 0 || name_size > PATH_MAX {
            return Err(InitramfsError::Malformed(format!(
                "header at offset {at}: name size {name_size}, not between 1 and {PATH_MAX}"
            )));
        }
        let name_at = at + HEADER_LEN as u64;
        // At most PATH_MAX bytes, checked above.
        let mut name = vec![0u8; name_size as usize];
        let got = read_upto(file, name_at, &mut name)?;
        if got < name.len() {
            return Err(InitramfsError::Truncated(format!(
                "the name of the entry at offset {at} is cut off after {got} of {name_size} bytes"
            )));
        }
        if name.pop() != Some(0) {
            return Err(InitramfsError::Malformed(format!(
                "the name of the entry at offset {at} has no NUL at its end"
            )));
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        let name_end = name_at + name_size;
        if name == TRAILER {
            return Ok(name_end);
        }
        let data_size = fields[FILESIZE];
        let data_end = name_end.next_multiple_of(4) + data_size;
        if data_end > len {
            return Err(InitramfsError::Truncated(format!(
                "entry {name:?} at offset {at} has {data_size} bytes of data ending at {data_end}, past the file's {len}"
            )));
        }
        at = data_end.next_multiple_of(4);
        previous = Some(name);
    }
}

/// Skips the NUL bytes the kernel allows between archives; returns the first offset that is not one.
fn skip_nul_padding<R: Read + Seek>(file: &mut R, mut at: u64, len: u64) -> Result<u64, InitramfsError> {
    let mut chunk = [0u8; 4096];
    while at < len {
        let got = read_upto(file, at, &mut chunk)?;
        if got == 0 {
            return Ok(len);
        }
        match chunk[..got].iter().position(|&b| b != 0) {
            Some(i) => return Ok(at + i as u64),
            None => at += got as u64,
        }
    }
    Ok(at)
}

/// Reads into `buf` from `at` until it is full or the file ends; returns the bytes read.
fn read_upto<R: Read + Seek>(file: &mut R, at: u64, buf: &mut [u8]) -> io::Result<usize> {
    file.seek(SeekFrom::Start(at))?;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// ASCII hexadecimal digits (either case, as the kernel's parser takes them).
fn parse_hex(text: &[u8]) -> Option<u64> {
    text.iter().try_fold(0u64, |value, &digit| Some(value * 16 + u64::from(char::from(digit).to_digit(16)?)))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A newc archive of regular files, with its trailer.
    fn newc(files: &[(&str, &[u8])]) -> Vec<u8> {
        let files: Vec<(&str, u32, &[u8])> = files.iter().map(|&(name, data)| (name, 0o644, data)).collect();
        boxbench_images::cpio::archive_of_files(&files).unwrap()
    }

    fn check(bytes: &[u8]) -> Result<(), InitramfsError> {
        check_initramfs(&mut Cursor::new(bytes), bytes.len() as u64)
    }

    fn message(bytes: &[u8]) -> String {
        check(bytes).unwrap_err().to_string()
    }

    fn sample() -> Vec<u8> {
        newc(&[("init", b"#!/bin/sh\necho hi\n"), ("etc/hostname", b"box\n")])
    }

    #[test]
    fn a_newc_archive_and_compressed_streams_pass() {
        check(&sample()).unwrap();
        let mut crc = sample();
        crc[5] = b'2';
        check(&crc).unwrap();
        for magic in COMPRESSED_MAGICS {
            let mut stream = magic.to_vec();
            stream.extend_from_slice(&[0x5a; 64]);
            check(&stream).unwrap();
        }
    }

    #[test]
    fn archives_may_follow_each_other_with_nul_padding() {
        let mut two = sample();
        two.extend_from_slice(&[0; 512]);
        two.extend_from_slice(&sample());
        check(&two).unwrap();
        let mut then_gzip = sample();
        then_gzip.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0]);
        check(&then_gzip).unwrap();
        let mut padded = sample();
        padded.extend_from_slice(&[0; 3]);
        check(&padded).unwrap();
    }

    #[test]
    fn no_magic_is_not_an_initramfs() {
        for bytes in [&b"this is not a kernel\n"[..], &[0u8; 64][..], &[0x5a; 4096][..], &b"0707"[..]] {
            assert!(matches!(check(bytes), Err(InitramfsError::UnknownFormat)), "{bytes:?}");
        }
        assert_eq!(message(b"text\n"), "not an initramfs (no cpio or compressed-archive magic)");
    }

    #[test]
    fn every_truncation_of_a_newc_archive_is_refused() {
        let archive = sample();
        // The trailer's name ends 3 bytes before the end (the padding after it may be missing); a cut
        // shorter than the 5-byte magic prefix is no cpio at all.
        let trailer_name_end = archive.len() - 3;
        for cut in CPIO_MAGIC_PREFIX.len()..trailer_name_end {
            let err = check(&archive[..cut]).unwrap_err();
            assert!(matches!(err, InitramfsError::Truncated(_)), "cut at {cut}: {err}");
        }
        let err = message(&archive[..110 + 8]);
        assert!(err.starts_with("truncated cpio archive (entry \"init\" at offset 0 has 18 bytes"), "{err}");
        let without_trailer = newc(&[("init", b"x")]);
        let err = message(&without_trailer[..without_trailer.len() - 124]);
        assert_eq!(
            err,
            "truncated cpio archive (the file ends at 120 bytes after entry \"init\", with no TRAILER!!! entry)"
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let mut odc = sample();
        odc[5] = b'7';
        assert!(message(&odc).contains("magic \"070707\" at offset 0"), "{}", message(&odc));
        let mut bad_digit = sample();
        bad_digit[6 + 8 * FILESIZE] = b'g';
        assert!(message(&bad_digit).contains("filesize is \"g0000012\""), "{}", message(&bad_digit));
        let mut no_nul = sample();
        no_nul[110 + 4] = b'!';
        assert!(message(&no_nul).contains("has no NUL at its end"), "{}", message(&no_nul));
        let mut huge_name = sample();
        huge_name[6 + 8 * NAMESIZE..14 + 8 * NAMESIZE].copy_from_slice(b"00001001");
        assert!(message(&huge_name).contains("name size 4097"), "{}", message(&huge_name));
        let mut junk_after = sample();
        junk_after.extend_from_slice(b"junk");
        assert!(message(&junk_after).contains("4 bytes at offset"), "{}", message(&junk_after));
    }
}
