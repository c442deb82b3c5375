//! A VM's disk on the host: a raw image file, checked and locked before the VM is built.
//!
//! A disk must be a regular file whose size is a whole, non-zero number of 512-byte sectors (what
//! virtio-blk counts its capacity in). While a VM uses it the file is locked with `flock(2)`:
//! exclusively for a writable disk, shared for a read-only one, so two VMs never write the same
//! image, and several may read one. The lock belongs to the open file, which the VMM child inherits:
//! it holds until both boxbench's instance and the child have closed it, even if the child is
//! killed.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sector size virtio-blk counts capacity and request offsets in: 512 bytes, whatever the
/// device's block size (virtio specification, 5.2.6).
pub const SECTOR_SIZE: u64 = 512;

/// What a disk is made of, as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The raw image file.
    pub path: PathBuf,
    /// The guest may read it only (virtio-blk's `VIRTIO_BLK_F_RO`; the file is opened read-only).
    pub read_only: bool,
}

/// A disk image that passed its checks, open and locked. Clones share the open file (and its lock).
#[derive(Debug, Clone)]
pub struct DiskImage {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

/// A disk that cannot be used; each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// No such file.
    #[error("disk {}: no such file", .0.display())]
    Missing(PathBuf),
    /// Not a regular file (a directory, a device, a socket…).
    #[error("disk {}: not a regular file (a disk is a raw image file)", .0.display())]
    NotRegularFile(PathBuf),
    /// An empty file.
    #[error("disk {}: empty file (a disk image has at least one 512-byte sector)", .0.display())]
    Empty(PathBuf),
    /// A size that is not a whole number of sectors.
    #[error("disk {}: {size} bytes is not a multiple of 512 (not a raw disk image)", path.display())]
    NotSectors { path: PathBuf, size: u64 },
    /// Another VM holds the lock.
    #[error("disk {}: in use by another VM (locked)", .0.display())]
    Locked(PathBuf),
    /// Opening, inspecting or locking failed otherwise.
    #[error("disk {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl DiskImage {
    /// Opens `config`'s file (read-only if the disk is), checks it is a raw image and locks it.
    pub fn open(config: &DiskConfig) -> Result<Self, DiskError> {
        let path = config.path.clone();
        let io = |source: std::io::Error| DiskError::Io { path: config.path.clone(), source };
        // Checked before opening: opening a FIFO would block, and a directory cannot be opened for
        // writing at all.
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DiskError::Missing(path)),
            Err(e) => return Err(io(e)),
        };
        if !metadata.is_file() {
            return Err(DiskError::NotRegularFile(path));
        }
        let file = OpenOptions::new().read(true).write(!config.read_only).open(&path).map_err(io)?;
        // The size of the file that was opened, not of whatever the path named a moment earlier.
        let metadata = file.metadata().map_err(io)?;
        if !metadata.is_file() {
            return Err(DiskError::NotRegularFile(path));
        }
        let size = metadata.len();
        if size == 0 {
            return Err(DiskError::Empty(path));
        }
        if size % SECTOR_SIZE != 0 {
            return Err(DiskError::NotSectors { path, size });
        }
        let mode = if config.read_only { libc::LOCK_SH } else { libc::LOCK_EX };
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                DiskError::Locked(path)
            } else {
                io(error)
            });
        }
        Ok(Self { file: Arc::new(file), path, size, read_only: config.read_only })
    }

    /// The open image file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes (a whole number of sectors).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.size / SECTOR_SIZE
    }

    /// The guest may only read it.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &Path, read_only: bool) -> DiskConfig {
        DiskConfig { path: path.to_owned(), read_only }
    }

    #[test]
    fn bad_disks_are_named_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.img");
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        let odd = dir.path().join("odd.img");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        for (path, expected) in [
            (&missing, "no such file"),
            (&dir.path().to_owned(), "not a regular file"),
            (&empty, "empty file"),
            (&odd, "1000 bytes is not a multiple of 512"),
        ] {
            let error = DiskImage::open(&config(path, false)).unwrap_err().to_string();
            assert!(error.starts_with(&format!("disk {}: ", path.display())), "{error}");
            assert!(error.contains(expected) && !error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn a_writable_disk_is_exclusive_and_read_only_ones_share() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let writer = DiskImage::open(&config(&path, false)).unwrap();
        assert_eq!((writer.size(), writer.sectors(), writer.read_only()), (4096, 8, false));
        for read_only in [false, true] {
            let error = DiskImage::open(&config(&path, read_only)).unwrap_err();
            assert_eq!(error.to_string(), format!("disk {}: in use by another VM (locked)", path.display()));
        }
        // A clone shares the lock; it goes with the last of them.
        let clone = writer.clone();
        drop(writer);
        assert!(matches!(DiskImage::open(&config(&path, true)), Err(DiskError::Locked(_))));
        drop(clone);
        let first_reader = DiskImage::open(&config(&path, true)).unwrap();
        let second_reader = DiskImage::open(&config(&path, true)).unwrap();
        assert!(matches!(DiskImage::open(&config(&path, false)), Err(DiskError::Locked(_))));
        drop((first_reader, second_reader));
        DiskImage::open(&config(&path, false)).unwrap();
    }
}
