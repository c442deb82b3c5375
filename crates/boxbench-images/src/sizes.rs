//! What each artefact weighs, uncompressed and compressed, measured on the files as built: the
//! figures `boxbench images sizes` prints. An artefact that is not compressed is compressed here with
//! gzip level 6 (gzip's default); a directory counts the sum of its files and the size of its
//! deterministic tar, gzipped.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::tarball::{self, TarError};
use crate::tree::{self, TreeError};

/// The gzip level artefacts that are not compressed already are measured with.
pub const MEASURE_GZIP_LEVEL: u32 = 6;

/// An artefact that could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    /// The artefact does not exist (not built, or not fetched).
    #[error("{0} does not exist (build the images first)")]
    Missing(PathBuf),
    /// The artefact could not be read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A directory could not be walked.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A directory could not be archived.
    #[error(transparent)]
    Tar(#[from] TarError),
}

/// The size of one artefact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtefactSize {
    /// The artefact's name (one of [`crate::artefact`]).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Its size uncompressed, in bytes.
    pub uncompressed_bytes: u64,
    /// Its size compressed, in bytes.
    pub compressed_bytes: u64,
    /// How the two figures were obtained.
    pub method: String,
}

/// A writer that only counts.
#[derive(Debug, Default)]
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn file_len(path: &Path) -> Result<u64, SizeError> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|_| SizeError::Missing(path.to_owned()))
}

/// A directory: the sum of its files, and its tar gzipped.
pub(crate) fn directory(name: &str, dir: &Path) -> Result<ArtefactSize, SizeError> {
    if !dir.is_dir() {
        return Err(SizeError::Missing(dir.to_owned()));
    }
    let entries = tree::walk(dir)?;
    let gz = GzEncoder::new(CountingSink::default(), Compression::new(MEASURE_GZIP_LEVEL));
    let gz = tarball::write_archive(&entries, gz)?;
    let compressed = gz.finish().map_err(|source| SizeError::Io { path: dir.to_owned(), source })?.0;
    Ok(ArtefactSize {
        name: name.to_owned(),
        path: dir.to_owned(),
        uncompressed_bytes: tree::file_bytes(&entries),
        compressed_bytes: compressed,
        method: format!("sum of file sizes; tar.gz (gzip -{MEASURE_GZIP_LEVEL}) of the tree"),
    })
}

/// A file and a compressed copy of it that both exist.
pub(crate) fn file_pair(name: &str, plain: &Path, compressed: &Path) -> Result<ArtefactSize, SizeError> {
    Ok(ArtefactSize {
        name: name.to_owned(),
        path: compressed.to_owned(),
        uncompressed_bytes: file_len(plain)?,
        compressed_bytes: file_len(compressed)?,
        method: format!("{} and {}", display_name(plain), display_name(compressed)),
    })
}

/// A file that is compressed already (a bzImage): both figures are its size.
pub(crate) fn compressed_file(name: &str, path: &Path, what: &str) -> Result<ArtefactSize, SizeError> {
    let len = file_len(path)?;
    Ok(ArtefactSize {
        name: name.to_owned(),
        path: path.to_owned(),
        uncompressed_bytes: len,
        compressed_bytes: len,
        method: format!("file size ({what}: compressed already)"),
    })
}

/// An OCI image layout: the uncompressed layer, and the sum of its blobs as a registry stores them.
pub(crate) fn oci_layout(name: &str, layout: &Path, uncompressed_layer: &Path) -> Result<ArtefactSize, SizeError> {
    let blobs = layout.join("blobs/sha256");
    if !blobs.is_dir() {
        return Err(SizeError::Missing(blobs));
    }
    let compressed = tree::file_bytes(&tree::walk(&blobs)?);
    Ok(ArtefactSize {
        name: name.to_owned(),
        path: layout.to_owned(),
        uncompressed_bytes: file_len(uncompressed_layer)?,
        compressed_bytes: compressed,
        method: "uncompressed layer tar; sum of blobs (gzip layer, config, manifest)".to_owned(),
    })
}

fn display_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_counts_files_and_its_compressed_tar() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("zeros"), vec![0u8; 100_000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/text"), b"hello").unwrap();
        let size = directory("test", dir.path()).unwrap();
        assert_eq!(size.uncompressed_bytes, 100_005);
        assert!(size.compressed_bytes > 0 && size.compressed_bytes < 10_000, "{size:?}");
    }

    #[test]
    fn missing_artefact_is_named() {
        let err = directory("test", Path::new("/nonexistent/rootfs")).unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent/rootfs does not exist (build the images first)");
        let err = file_pair("initramfs", Path::new("/nonexistent/x.cpio"), Path::new("/nonexistent/x.cpio.gz"));
        assert!(err.unwrap_err().to_string().contains("x.cpio"));
    }
}
