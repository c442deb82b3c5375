//! The initramfs of an L1 host: a whole small Linux userspace (busybox, kernel modules, programs
//! with their shared libraries, data files) packed as one uncompressed newc archive that a kernel
//! booted under QEMU unpacks as its root. `boxbench svm-host` fills an [`L1Payload`] with what the
//! inner command needs; this module owns the archive and its cache.
//!
//! The archive is cached by a hash of the payload: every entry's path, mode and kind, and for a
//! file its source path, size and modification time (hashing the content of the ~100 MB of programs
//! on every run would cost more than the check is worth; a rebuilt binary changes its mtime). It
//! is left uncompressed: the L1 kernel's inflate would run on an emulated CPU.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cpio::{CpioError, CpioWriter};
use crate::lock::{DirLock, LockError};
use crate::tree::{EntryKind, TreeEntry};

/// Bumped whenever the archive's layout changes for the same payload.
const L1_FORMAT_VERSION: u32 = 1;

/// The directory under the images output directory that holds the cached archives.
pub const L1_DIR: &str = "svm-host";

/// An L1 initramfs that could not be assembled or written.
#[derive(Debug, thiserror::Error)]
pub enum L1InitramfsError {
    /// A payload file could not be read, or the archive could not be written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A destination path is not absolute or climbs with `..`.
    #[error("{0}: an L1 path must be absolute and plain")]
    BadDestination(PathBuf),
    /// Two sources were given for one destination.
    #[error("{dest}: given twice ({first} and {second})")]
    Conflict { dest: PathBuf, first: String, second: String },
    /// The archive could not be written.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The cache lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> L1InitramfsError + '_ {
    move |source| L1InitramfsError::Io { path: path.to_owned(), source }
}

/// What one path of the L1 root holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Dir,
    File { source: PathBuf, size: u64, mode: u32, mtime_ns: i128 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink { target: PathBuf },
    CharDevice { major: u32, minor: u32 },
}

impl Item {
    fn describe(&self) -> String {
        match self {
            Item::Dir => "a directory".to_owned(),
            Item::File { source, .. } => source.display().to_string(),
            Item::Bytes { .. } => "generated contents".to_owned(),
            Item::Symlink { target } => format!("a link to {}", target.display()),
            Item::CharDevice { major, minor } => format!("device {major}:{minor}"),
        }
    }
}

/// The files of an L1 root, by their absolute path inside it.
#[derive(Debug, Clone, Default)]
pub struct L1Payload {
    items: BTreeMap<PathBuf, Item>,
}

impl L1Payload {
    /// An empty root holding only `/dev/console`, which the kernel opens for PID 1 before it can
    /// mount devtmpfs.
    pub fn new() -> Self {
        let mut payload = Self::default();
        payload.items.insert(PathBuf::from("dev/console"), Item::CharDevice { major: 5, minor: 1 });
        payload.items.insert(PathBuf::from("dev"), Item::Dir);
        payload
    }

    /// The archive path of `dest` (`/usr/bin/x` → `usr/bin/x`), with its parent directories added.
    fn place(&mut self, dest: &Path) -> Result<PathBuf, L1InitramfsError> {
        let plain = dest.is_absolute() && dest.components().skip(1).all(|c| matches!(c, Component::Normal(_)));
        if !plain || dest == Path::new("/") {
            return Err(L1InitramfsError::BadDestination(dest.to_owned()));
        }
        let relative = dest.strip_prefix("/").map_err(|_| L1InitramfsError::BadDestination(dest.to_owned()))?;
        for parent in relative.ancestors().skip(1).filter(|p| !p.as_os_str().is_empty()) {
            self.items.entry(parent.to_owned()).or_insert(Item::Dir);
        }
        Ok(relative.to_owned())
    }

    fn insert(&mut self, dest: &Path, item: Item) -> Result<(), L1InitramfsError> {
        let relative = self.place(dest)?;
        match self.items.get(&relative) {
            Some(existing) if *existing != item => Err(L1InitramfsError::Conflict {
                dest: dest.to_owned(),
                first: existing.describe(),
                second: item.describe(),
            }),
            _ => {
                self.items.insert(relative, item);
                Ok(())
            }
        }
    }

    /// Adds the regular file `source` (a symlink is followed) at `dest`, with its permission bits.
    pub fn add_file(&mut self, dest: &Path, source: &Path) -> Result<(), L1InitramfsError> {
        let meta = fs::metadata(source).map_err(io_err(source))?;
        if !meta.is_file() {
            return Err(io_err(source)(std::io::Error::other("not a regular file")));
        }
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let mode = meta.permissions().mode() & 0o7777;
        self.insert(dest, Item::File { source: source.to_owned(), size: meta.len(), mode, mtime_ns })
    }

    /// Adds `data` as the regular file `dest` with permission bits `mode`.
    pub fn add_bytes(&mut self, dest: &Path, data: impl Into<Vec<u8>>, mode: u32) -> Result<(), L1InitramfsError> {
        self.insert(dest, Item::Bytes { data: data.into(), mode })
    }

    /// Adds a symbolic link `dest` pointing at `target`.
    pub fn add_symlink(&mut self, dest: &Path, target: &Path) -> Result<(), L1InitramfsError> {
        self.insert(dest, Item::Symlink { target: target.to_owned() })
    }

    /// Adds an empty directory `dest`.
    pub fn add_dir(&mut self, dest: &Path) -> Result<(), L1InitramfsError> {
        self.insert(dest, Item::Dir)
    }

    /// Adds the tree under `source` at `dest`: directories, regular files and symlinks as they are
    /// (a symlink is kept as a link); other file types are left out.
    pub fn add_tree(&mut self, dest: &Path, source: &Path) -> Result<(), L1InitramfsError> {
        self.add_tree_where(dest, source, &|_| true)
    }

    /// [`add_tree`](Self::add_tree) of the entries whose source path `keep` accepts (a directory it
    /// refuses is left out whole).
    pub fn add_tree_where(
        &mut self,
        dest: &Path,
        source: &Path,
        keep: &dyn Fn(&Path) -> bool,
    ) -> Result<(), L1InitramfsError> {
        self.add_dir(dest)?;
        for dirent in fs::read_dir(source).map_err(io_err(source))? {
            let dirent = dirent.map_err(io_err(source))?;
            let path = dirent.path();
            if !keep(&path) {
                continue;
            }
            let file_type = dirent.file_type().map_err(io_err(&path))?;
            let target = dest.join(dirent.file_name());
            if file_type.is_dir() {
                self.add_tree_where(&target, &path, keep)?;
            } else if file_type.is_symlink() {
                self.add_symlink(&target, &fs::read_link(&path).map_err(io_err(&path))?)?;
            } else if file_type.is_file() {
                self.add_file(&target, &path)?;
            }
        }
        Ok(())
    }

    /// True when `dest` is in the payload.
    pub fn contains(&self, dest: &Path) -> bool {
        dest.strip_prefix("/").is_ok_and(|relative| self.items.contains_key(relative))
    }

    /// The summed size of the payload's files.
    pub fn file_bytes(&self) -> u64 {
        self.items
            .values()
            .map(|item| match item {
                Item::File { size, .. } => *size,
                Item::Bytes { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// The hash the archive is cached by.
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!("boxbench L1 initramfs format {L1_FORMAT_VERSION}\n"));
        for (path, item) in &self.items {
            hasher.update(path.as_os_str().as_bytes());
            hasher.update(b"\0");
            match item {
                Item::Dir => hasher.update(b"dir"),
                Item::File { source, size, mode, mtime_ns } => {
                    hasher.update(source.as_os_str().as_bytes());
                    hasher.update(format!("\0{size} {mode:o} {mtime_ns}"));
                }
                Item::Bytes { data, mode } => {
                    hasher.update(format!("bytes {mode:o} {}\0", data.len()));
                    hasher.update(data);
                }
                Item::Symlink { target } => {
                    hasher.update(b"link ");
                    hasher.update(target.as_os_str().as_bytes());
                }
                Item::CharDevice { major, minor } => hasher.update(format!("chr {major}:{minor}")),
            }
            hasher.update(b"\n");
        }
        crate::hex(&hasher.finalize())
    }

    /// Writes the archive to `out`; entries are in path-byte order, so every parent precedes its
    /// children.
    fn write_to<W: Write>(&self, out: W) -> Result<W, L1InitramfsError> {
        let mut writer = CpioWriter::new(out);
        for (path, item) in &self.items {
            let entry = |mode: u32, kind: EntryKind| TreeEntry { path: path.clone(), mode, kind };
            match item {
                Item::Dir => writer.append(&entry(0o755, EntryKind::Dir))?,
                Item::File { source, size, mode, .. } => {
                    writer.append(&entry(*mode, EntryKind::File { source: source.clone(), size: *size }))?
                }
                Item::Bytes { data, mode } => writer.append_file(&path.to_string_lossy(), *mode, data)?,
                Item::Symlink { target } => {
                    writer.append(&entry(0o777, EntryKind::Symlink { target: target.as_os_str().to_owned() }))?
                }
                Item::CharDevice { major, minor } => {
                    writer.append(&entry(0o600, EntryKind::CharDevice { major: *major, minor: *minor }))?
                }
            }
        }
        Ok(writer.finish()?)
    }
}

/// Writes the archive of `payload` into `out_dir/svm-host/l1-HASH.cpio` unless it is there already,
/// removing the archives of older payloads; returns its path and whether it was written now.
/// Concurrent callers take turns on `out_dir/svm-host/.lock`.
pub fn build_l1_initramfs(out_dir: &Path, payload: &L1Payload) -> Result<(PathBuf, bool), L1InitramfsError> {
    let dir = out_dir.join(L1_DIR);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let _lock = DirLock::acquire(&dir.join(".lock"), || {})?;
    let name = format!("l1-{}.cpio", &payload.digest()[..16]);
    let path = dir.join(&name);
    if path.is_file() {
        return Ok((path, false));
    }
    let tmp = crate::temporary_sibling(&path);
    let written = (|| {
        let file = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = payload.write_to(BufWriter::new(file))?;
        out.flush().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    })();
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    // Older payloads' archives are 100 MB each: only the current one is kept.
    for dirent in fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
        let old = dirent.file_name();
        let old = old.to_string_lossy();
        if old.starts_with("l1-") && old.ends_with(".cpio") && old != name {
            let _ = fs::remove_file(dirent.path());
        }
    }
    Ok((path, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry names of a newc archive, in order.
    fn names(archive: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        let mut at = 0;
        while at + crate::cpio::HEADER_LEN <= archive.len() {
            let field = |i: usize| {
                let text = std::str::from_utf8(&archive[at + 6 + i * 8..at + 14 + i * 8]).unwrap();
                usize::from_str_radix(text, 16).unwrap()
            };
            let (file_size, name_size) = (field(6), field(11));
            let name_start = at + crate::cpio::HEADER_LEN;
            let name = String::from_utf8(archive[name_start..name_start + name_size - 1].to_vec()).unwrap();
            let data_start = (name_start + name_size).next_multiple_of(4);
            at = (data_start + file_size).next_multiple_of(4);
            let done = name == crate::cpio::TRAILER;
            names.push(name);
            if done {
                break;
            }
        }
        names
    }

    #[test]
    fn parents_precede_children_and_the_console_node_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("prog");
        fs::write(&source, b"#!/bin/sh\n").unwrap();
        let mut payload = L1Payload::new();
        payload.add_file(Path::new("/usr/local/bin/prog"), &source).unwrap();
        payload.add_bytes(Path::new("/init"), "#!/bin/busybox sh\n", 0o755).unwrap();
        payload.add_symlink(Path::new("/bin/sh"), Path::new("busybox")).unwrap();
        let archive = payload.write_to(Vec::new()).unwrap();
        let names = names(&archive);
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "usr",
                "usr/local",
                "usr/local/bin",
                "usr/local/bin/prog",
                "TRAILER!!!"
            ]
        );
    }

    #[test]
    fn destinations_must_be_absolute_and_plain() {
        let mut payload = L1Payload::new();
        for bad in ["relative", "/a/../b", "/"] {
            let err = payload.add_bytes(Path::new(bad), "x", 0o644).unwrap_err();
            assert!(matches!(err, L1InitramfsError::BadDestination(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn one_destination_takes_one_source() {
        let mut payload = L1Payload::new();
        payload.add_bytes(Path::new("/etc/x"), "a", 0o644).unwrap();
        payload.add_bytes(Path::new("/etc/x"), "a", 0o644).unwrap();
        let err = payload.add_bytes(Path::new("/etc/x"), "b", 0o644).unwrap_err();
        assert!(err.to_string().contains("/etc/x: given twice"), "{err}");
    }

    #[test]
    fn the_archive_is_cached_by_the_payload_and_older_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut payload = L1Payload::new();
        payload.add_bytes(Path::new("/init"), "one", 0o755).unwrap();
        let (first, written) = build_l1_initramfs(dir.path(), &payload).unwrap();
        assert!(written);
        assert_eq!(build_l1_initramfs(dir.path(), &payload).unwrap(), (first.clone(), false));
        payload.add_bytes(Path::new("/etc/hostname"), "l1\n", 0o644).unwrap();
        let (second, written) = build_l1_initramfs(dir.path(), &payload).unwrap();
        assert!(written && second != first && !first.exists() && second.exists());
    }
}
