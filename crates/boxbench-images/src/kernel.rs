//! Debian's cloud kernel (`linux-image-cloud-amd64`), fetched on request for the VM backends: the
//! metapackage is resolved to the real package (`linux-image-6.1.0-NN-cloud-amd64`), its `.deb` is
//! downloaded once into the package cache and unpacked into `out/debian-cloud/`, which keeps it
//! until the metapackage points at a newer kernel.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::debian::{self, DebianError};
use crate::tree::{self, TreeError};

/// The metapackage that always depends on Debian's current cloud kernel.
pub const CLOUD_KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// The directory under the output directory the kernel package is unpacked into.
pub const UNPACK_DIR: &str = "debian-cloud";

/// The file, inside the unpacked directory, that keeps the measured size of the modules tree.
pub(crate) const MODULES_SIZE_CACHE: &str = ".modules-size.json";

/// The file, inside the unpacked directory, naming the package that was unpacked there.
const PACKAGE_STAMP: &str = ".package";

/// A kernel that could not be fetched or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The package could not be resolved, downloaded or unpacked.
    #[error(transparent)]
    Debian(#[from] DebianError),
    /// The unpacked package holds no `boot/vmlinuz-RELEASE`.
    #[error("{0} is missing from the unpacked kernel package")]
    NoVmlinuz(PathBuf),
    /// A file of the unpacked tree could not be written or read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The modules tree could not be walked.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io { path: path.to_owned(), source }
}

/// Debian's cloud kernel, unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebianKernel {
    /// The real package, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// The kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The bzImage (`boot/vmlinuz-RELEASE`).
    pub vmlinuz: PathBuf,
    /// The kernel's build configuration (`boot/config-RELEASE`), if the package has one.
    pub config: Option<PathBuf>,
    /// The modules tree (`lib/modules/RELEASE`).
    pub modules_dir: PathBuf,
    /// The summed size of the files under `modules_dir`.
    pub modules_bytes: u64,
}

impl DebianKernel {
    /// The kernel unpacked under `unpacked` from `package`, if it is there.
    fn at(unpacked: &Path, package: &str) -> Result<Self, KernelError> {
        let release = package.strip_prefix("linux-image-").unwrap_or(package).to_owned();
        let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
        if !vmlinuz.is_file() {
            return Err(KernelError::NoVmlinuz(vmlinuz));
        }
        let config = Some(unpacked.join("boot").join(format!("config-{release}"))).filter(|p| p.is_file());
        let modules_dir = unpacked.join("lib/modules").join(&release);
        let modules_bytes = if modules_dir.is_dir() { tree::file_bytes(&tree::walk(&modules_dir)?) } else { 0 };
        Ok(Self { package: package.to_owned(), release, vmlinuz, config, modules_dir, modules_bytes })
    }
}

/// The kernel already unpacked into `out_dir`, if one is (no network, no apt).
pub(crate) fn fetched(out_dir: &Path) -> Option<DebianKernel> {
    let unpacked = out_dir.join(UNPACK_DIR);
    let package = fs::read_to_string(unpacked.join(PACKAGE_STAMP)).ok()?;
    DebianKernel::at(&unpacked, package.trim()).ok()
}

/// The real package behind the cloud kernel metapackage (apt's answer is remembered in `cache_dir`).
pub(crate) fn resolve(cache_dir: &Path) -> Result<String, KernelError> {
    Ok(debian::dependency_with_prefix(CLOUD_KERNEL_METAPACKAGE, "linux-image-", cache_dir)?)
}

/// Downloads `package` into `cache_dir` and unpacks it into `out_dir/debian-cloud`, replacing what
/// was there (staged in `work`, which must not exist).
pub(crate) fn fetch(
    package: &str,
    cache_dir: &Path,
    out_dir: &Path,
    work: &Path,
    on_download: impl FnOnce(),
) -> Result<DebianKernel, KernelError> {
    let deb = debian::fetch_deb(package, cache_dir, on_download)?;
    debian::extract(&deb, work)?;
    fs::write(work.join(PACKAGE_STAMP), format!("{package}\n")).map_err(io_err(work))?;
    DebianKernel::at(work, package)?;
    let unpacked = out_dir.join(UNPACK_DIR);
    if unpacked.exists() {
        fs::remove_dir_all(&unpacked).map_err(io_err(&unpacked))?;
    }
    fs::rename(work, &unpacked).map_err(io_err(&unpacked))?;
    DebianKernel::at(&unpacked, package)
}
