//! boxbench's own writer of `newc` cpio archives, the format the Linux kernel unpacks as an
//! initramfs. Archives are deterministic: entries in the order given (sorted by the tree walk),
//! modification times 0, owner root, inode numbers assigned in order from 1, no hard links, and the
//! `TRAILER!!!` entry at the end.
//!
//! A newc entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hexadecimal fields), the
//! NUL-terminated name padded to a multiple of 4 bytes, then the data padded to a multiple of 4
//! bytes. A symlink's data is its target.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::tree::{EntryKind, TreeEntry};

/// The magic number of the newc format (no checksums).
pub const NEWC_MAGIC: &[u8; 6] = b"070701";

/// The size of a newc header.
pub const HEADER_LEN: usize = 110;

/// The name of the entry that ends every archive.
pub const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An archive that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// A file to archive could not be read, or the archive could not be written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A file does not fit the format's 32-bit size field.
    #[error("{path}: {size} bytes is too large for a newc cpio entry (4 GiB at most)")]
    TooLarge { path: PathBuf, size: u64 },
    /// A file changed size while it was archived.
    #[error("{path}: changed size while being archived (expected {expected} bytes, read {read})")]
    SizeChanged { path: PathBuf, expected: u64, read: u64 },
}

/// The fields of one newc header that vary between boxbench's entries.
struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    file_size: u32,
    rdev: (u32, u32),
    name: &'a [u8],
}

/// Writes newc entries to `out`, counting bytes to place the padding.
#[derive(Debug)]
pub(crate) struct CpioWriter<W: Write> {
    out: W,
    offset: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        Self { out, offset: 0, next_ino: 1 }
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.offset % 4) as usize) % 4;
        self.write_bytes(&[0u8; 3][..padding])
    }

    fn write_header(&mut self, header: &Header<'_>) -> io::Result<()> {
        // name size counts the terminating NUL.
        let fields = [
            header.ino,
            header.mode,
            0, // uid
            0, // gid
            header.nlink,
            0, // mtime
            header.file_size,
            0, // devmajor
            0, // devminor
            header.rdev.0,
            header.rdev.1,
            header.name.len() as u32 + 1,
            0, // check
        ];
        let mut text = Vec::with_capacity(HEADER_LEN);
        text.extend_from_slice(NEWC_MAGIC);
        for field in fields {
            text.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.write_bytes(&text)?;
        self.write_bytes(header.name)?;
        self.write_bytes(&[0])?;
        self.pad()
    }

    /// Appends `entry`, reading a regular file's data from its source.
    pub(crate) fn append(&mut self, entry: &TreeEntry) -> Result<(), CpioError> {
        let name = entry.path.as_os_str().as_bytes();
        let ino = self.next_ino;
        self.next_ino += 1;
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| CpioError::Io { path, source }
        };
        let archive_err = io_err(&entry.path);
        match &entry.kind {
            EntryKind::Dir => {
                let header = Header { ino, mode: S_IFDIR | entry.mode, nlink: 2, file_size: 0, rdev: (0, 0), name };
                self.write_header(&header).map_err(archive_err)
            }
            EntryKind::CharDevice { major, minor } => {
                let header =
                    Header { ino, mode: S_IFCHR | entry.mode, nlink: 1, file_size: 0, rdev: (*major, *minor), name };
                self.write_header(&header).map_err(archive_err)
            }
            EntryKind::Symlink { target } => {
                let target = target.as_bytes();
                let header =
                    Header { ino, mode: S_IFLNK | 0o777, nlink: 1, file_size: target.len() as u32, rdev: (0, 0), name };
                self.write_header(&header)
                    .and_then(|_| self.write_bytes(target))
                    .and_then(|_| self.pad())
                    .map_err(archive_err)
            }
            EntryKind::File { source, size } => {
                let file_size =
                    u32::try_from(*size).map_err(|_| CpioError::TooLarge { path: source.clone(), size: *size })?;
                let header = Header { ino, mode: S_IFREG | entry.mode, nlink: 1, file_size, rdev: (0, 0), name };
                self.write_header(&header).map_err(io_err(&entry.path))?;
                let file = File::open(source).map_err(io_err(source))?;
                let read = io::copy(&mut io::Read::take(file, *size + 1), &mut self.out).map_err(io_err(source))?;
                self.offset += read;
                if read != *size {
                    return Err(CpioError::SizeChanged { path: source.clone(), expected: *size, read });
                }
                self.pad().map_err(io_err(&entry.path))
            }
        }
    }

    /// Appends a regular file `name` holding `data`, with permission bits `mode`.
    pub(crate) fn append_file(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), CpioError> {
        let path = || PathBuf::from(name);
        let file_size =
            u32::try_from(data.len()).map_err(|_| CpioError::TooLarge { path: path(), size: data.len() as u64 })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let header = Header { ino, mode: S_IFREG | mode, nlink: 1, file_size, rdev: (0, 0), name: name.as_bytes() };
        self.write_header(&header)
            .and_then(|_| self.write_bytes(data))
            .and_then(|_| self.pad())
            .map_err(|source| CpioError::Io { path: path(), source })
    }

    /// Writes the trailer and returns the output.
    pub(crate) fn finish(mut self) -> Result<W, CpioError> {
        let trailer = Header { ino: 0, mode: 0, nlink: 1, file_size: 0, rdev: (0, 0), name: TRAILER.as_bytes() };
        let err = |source| CpioError::Io { path: PathBuf::from(TRAILER), source };
        self.write_header(&trailer).map_err(err)?;
        self.out.flush().map_err(err)?;
        Ok(self.out)
    }
}

/// Writes `entries` (parents before children) as a newc archive to `out`.
pub(crate) fn write_archive<W: Write>(entries: &[TreeEntry], out: W) -> Result<W, CpioError> {
    let mut writer = CpioWriter::new(out);
    for entry in entries {
        writer.append(entry)?;
    }
    writer.finish()
}

/// A newc archive, in memory, of regular files given as (name, permission bits, contents): an
/// initramfs without a tree on disk, as tests and fuzzers hand a VMM.
pub fn archive_of_files(files: &[(&str, u32, &[u8])]) -> Result<Vec<u8>, CpioError> {
    let mut writer = CpioWriter::new(Vec::new());
    for (name, mode, data) in files {
        writer.append_file(name, *mode, data)?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A parsed newc header: the thirteen fields and the name.
    fn parse(archive: &[u8]) -> Vec<([u32; 13], String, Vec<u8>)> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            assert_eq!(&archive[at..at + 6], NEWC_MAGIC, "magic at {at}");
            let mut fields = [0u32; 13];
            for (i, field) in fields.iter_mut().enumerate() {
                let text = std::str::from_utf8(&archive[at + 6 + 8 * i..at + 14 + 8 * i]).unwrap();
                *field = u32::from_str_radix(text, 16).unwrap();
            }
            let name_len = fields[11] as usize;
            let name = &archive[at + HEADER_LEN..at + HEADER_LEN + name_len];
            assert_eq!(name.last(), Some(&0), "name is NUL-terminated");
            let name = String::from_utf8(name[..name_len - 1].to_vec()).unwrap();
            let data_at = (at + HEADER_LEN + name_len).next_multiple_of(4);
            let data = archive[data_at..data_at + fields[6] as usize].to_vec();
            at = (data_at + data.len()).next_multiple_of(4);
            let done = name == TRAILER;
            entries.push((fields, name, data));
            if done {
                assert_eq!(at, archive.len(), "nothing after the trailer");
                return entries;
            }
        }
    }

    fn sample_tree() -> (tempfile::TempDir, Vec<TreeEntry>) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::write(dir.path().join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(dir.path().join("bin/tool"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("odd"), b"12345").unwrap();
        std::os::unix::fs::symlink("/bin/tool", dir.path().join("link")).unwrap();
        let entries = crate::tree::walk(dir.path()).unwrap();
        (dir, entries)
    }

    #[test]
    fn header_fields_padding_and_trailer() {
        let (_dir, mut entries) = sample_tree();
        entries.push(TreeEntry {
            path: "console".into(),
            mode: 0o600,
            kind: EntryKind::CharDevice { major: 5, minor: 1 },
        });
        let archive = write_archive(&entries, Vec::new()).unwrap();
        assert_eq!(archive.len() % 4, 0);
        let parsed = parse(&archive);
        let names: Vec<&str> = parsed.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(names, ["bin", "bin/tool", "link", "odd", "console", TRAILER]);
        for (i, (fields, name, _)) in parsed.iter().enumerate().take(5) {
            assert_eq!(fields[0], i as u32 + 1, "{name}: inode in order");
            assert_eq!((fields[2], fields[3], fields[5]), (0, 0, 0), "{name}: root-owned, mtime 0");
        }
        let (bin, tool, link, odd, console) = (&parsed[0].0, &parsed[1], &parsed[2], &parsed[3], &parsed[4].0);
        assert_eq!((bin[1], bin[4]), (S_IFDIR | 0o755, 2));
        assert_eq!(tool.0[1], S_IFREG | 0o755);
        assert_eq!(tool.2, b"#!/bin/sh\necho hi\n");
        assert_eq!(link.0[1], S_IFLNK | 0o777);
        assert_eq!(link.2, b"/bin/tool");
        assert_eq!(odd.2, b"12345");
        assert_eq!((console[1], console[9], console[10]), (S_IFCHR | 0o600, 5, 1));
        assert_eq!(parsed[5].0[0], 0);
    }

    #[test]
    fn files_in_memory_become_entries_and_a_trailer() {
        let archive = archive_of_files(&[("init", 0o755, b"#!/bin/sh\n"), ("empty", 0o644, b"")]).unwrap();
        let entries = parse(&archive);
        let names: Vec<&str> = entries.iter().map(|(_, name, _)| name.as_str()).collect();
        assert_eq!(names, ["init", "empty", TRAILER]);
        assert_eq!(entries[0].0[1], S_IFREG | 0o755);
        assert_eq!((entries[0].0[0], entries[1].0[0]), (1, 2), "inode numbers in order");
        assert_eq!(entries[0].2, b"#!/bin/sh\n");
        assert!(entries[1].2.is_empty());
    }

    #[test]
    fn same_tree_gives_the_same_bytes() {
        let (_dir, entries) = sample_tree();
        assert_eq!(write_archive(&entries, Vec::new()).unwrap(), write_archive(&entries, Vec::new()).unwrap());
    }

    #[test]
    fn gnu_cpio_extracts_what_was_written() {
        boxbench_testkit::require!(
            Path::new("/usr/bin/cpio").exists(),
            "/usr/bin/cpio is not installed (Debian package cpio)"
        );
        let (dir, entries) = sample_tree();
        let archive = write_archive(&entries, Vec::new()).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("/usr/bin/cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(dest.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(crate::tree::walk(dest.path()).unwrap().len(), entries.len());
        assert_eq!(fs::read(dest.path().join("bin/tool")).unwrap(), fs::read(dir.path().join("bin/tool")).unwrap());
        assert_eq!(fs::read(dest.path().join("odd")).unwrap(), b"12345");
        assert_eq!(fs::read_link(dest.path().join("link")).unwrap(), Path::new("/bin/tool"));
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(dest.path().join("bin/tool")).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(fs::metadata(dest.path().join("odd")).unwrap().modified().unwrap(), std::time::UNIX_EPOCH);
    }

    #[test]
    fn unreadable_source_is_named() {
        let entry = TreeEntry {
            path: "gone".into(),
            mode: 0o644,
            kind: EntryKind::File { source: "/nonexistent/gone".into(), size: 3 },
        };
        let err = write_archive(&[entry], Vec::new()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/gone"), "{err}");
    }
}
