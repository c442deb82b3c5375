//! A directory tree read into the ordered list of entries the archive writers (cpio, tar) emit:
//! sorted by path bytes so every parent precedes its children and two walks of the same tree give
//! the same archive, whatever order the filesystem lists it in.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A tree that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A socket, FIFO or device node: the archives carry only what boxbench's trees hold.
    #[error("{0}: unsupported file type (only directories, regular files and symlinks are archived)")]
    Unsupported(PathBuf),
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file, read from `source` when archived.
    File { source: PathBuf, size: u64 },
    /// A symbolic link to `target`.
    Symlink { target: OsString },
    /// A character device node (added to the initramfs, never read from a tree).
    CharDevice { major: u32, minor: u32 },
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    /// The path relative to the tree's root, without a leading `/`.
    pub path: PathBuf,
    /// Permission bits, with setuid/setgid/sticky (`0o7777` at most).
    pub mode: u32,
    pub kind: EntryKind,
}

/// Every entry under `root` (not `root` itself), sorted by path bytes.
pub(crate) fn walk(root: &Path) -> Result<Vec<TreeEntry>, TreeError> {
    let mut entries = Vec::new();
    walk_into(root, Path::new(""), &mut entries)?;
    entries.sort_by(|a, b| a.path.as_os_str().as_bytes().cmp(b.path.as_os_str().as_bytes()));
    Ok(entries)
}

fn walk_into(dir: &Path, relative: &Path, entries: &mut Vec<TreeEntry>) -> Result<(), TreeError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TreeError::Io { path, source }
    };
    for dirent in fs::read_dir(dir).map_err(io_err(dir))? {
        let dirent = dirent.map_err(io_err(dir))?;
        let source = dirent.path();
        let meta = fs::symlink_metadata(&source).map_err(io_err(&source))?;
        let path = relative.join(dirent.file_name());
        let mode = meta.permissions().mode() & 0o7777;
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_file() {
            EntryKind::File { source: source.clone(), size: meta.len() }
        } else if file_type.is_symlink() {
            EntryKind::Symlink { target: fs::read_link(&source).map_err(io_err(&source))?.into_os_string() }
        } else {
            return Err(TreeError::Unsupported(source));
        };
        let is_dir = kind == EntryKind::Dir;
        entries.push(TreeEntry { path: path.clone(), mode, kind });
        if is_dir {
            walk_into(&source, &path, entries)?;
        }
    }
    Ok(())
}

/// The summed size of the regular files among `entries`.
pub(crate) fn file_bytes(entries: &[TreeEntry]) -> u64 {
    entries.iter().map(|e| if let EntryKind::File { size, .. } = e.kind { size } else { 0 }).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_order_is_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::write(dir.path().join("a-x"), b"12").unwrap();
        fs::write(dir.path().join("a/b/f"), b"123").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", dir.path().join("sh")).unwrap();
        let entries = walk(dir.path()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.to_str().unwrap()).collect();
        assert_eq!(paths, ["a", "a-x", "a/b", "a/b/f", "sh"]);
        assert_eq!(entries[4].kind, EntryKind::Symlink { target: "/bin/busybox".into() });
        assert_eq!(file_bytes(&entries), 5);
    }

    #[test]
    fn fifo_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = walk(dir.path()).unwrap_err();
        assert!(err.to_string().contains("pipe"), "{err}");
    }
}
