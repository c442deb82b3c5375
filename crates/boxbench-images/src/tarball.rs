//! Deterministic tar archives of a tree: the OCI image's layer, `out/rootfs.tar` for
//! `docker import` / `podman import`, and the compressed size of any directory. Entries come in the
//! tree walk's sorted order with modification time 0 and owner root (uid/gid 0), so the same tree
//! always gives the same bytes and the same layer digest.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::tree::{EntryKind, TreeEntry};

/// A tar archive that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct TarError {
    path: PathBuf,
    source: io::Error,
}

fn tar_err(path: &Path) -> impl FnOnce(io::Error) -> TarError + '_ {
    move |source| TarError { path: path.to_owned(), source }
}

/// A GNU tar header with everything but the type, mode and size fixed.
fn header(entry_type: EntryType, mode: u32, size: u64) -> io::Result<Header> {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("root")?;
    header.set_groupname("root")?;
    Ok(header)
}

/// Writes `entries` (parents before children) as a tar archive to `out`. Device nodes are left out:
/// container runtimes create `/dev` themselves.
pub(crate) fn write_archive<W: Write>(entries: &[TreeEntry], out: W) -> Result<W, TarError> {
    let mut builder = tar::Builder::new(out);
    for entry in entries {
        let path = &entry.path;
        match &entry.kind {
            EntryKind::Dir => {
                let mut h = header(EntryType::Directory, entry.mode, 0).map_err(tar_err(path))?;
                builder.append_data(&mut h, path, io::empty()).map_err(tar_err(path))?;
            }
            EntryKind::File { source, .. } => {
                // Read whole, so the header's size is the size of the bytes archived even if the file
                // changed since the tree was walked.
                let data = fs::read(source).map_err(tar_err(source))?;
                let mut h = header(EntryType::Regular, entry.mode, data.len() as u64).map_err(tar_err(path))?;
                builder.append_data(&mut h, path, data.as_slice()).map_err(tar_err(path))?;
            }
            EntryKind::Symlink { target } => {
                let mut h = header(EntryType::Symlink, 0o777, 0).map_err(tar_err(path))?;
                builder.append_link(&mut h, path, target).map_err(tar_err(path))?;
            }
            EntryKind::CharDevice { .. } => {}
        }
    }
    builder.into_inner().map_err(tar_err(Path::new("tar trailer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_reads_back_with_fixed_owner_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let long_dir = "a".repeat(120);
        fs::create_dir_all(dir.path().join(&long_dir)).unwrap();
        fs::write(dir.path().join(&long_dir).join("file"), b"data").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", dir.path().join("sh")).unwrap();
        let entries = crate::tree::walk(dir.path()).unwrap();
        let bytes = write_archive(&entries, Vec::new()).unwrap();
        assert_eq!(bytes, write_archive(&entries, Vec::new()).unwrap(), "deterministic");

        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0, 0, 0));
            seen.push((entry.path().unwrap().into_owned(), h.entry_type()));
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], (PathBuf::from(&long_dir), EntryType::Directory));
        assert_eq!(seen[1], (Path::new(&long_dir).join("file"), EntryType::Regular));
        assert_eq!(seen[2], (PathBuf::from("sh"), EntryType::Symlink));
    }
}
