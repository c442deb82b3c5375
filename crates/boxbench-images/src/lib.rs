//! boxbench's guest images, built from Debian packages and the recipe files under
//! `guest-images/rootfs/`, into `guest-images/out/` (git-ignored):
//!
//! | artefact | path under `out/` | used by |
//! |---|---|---|
//! | root filesystem | `bundle/rootfs/` | containers (as a directory) |
//! | OCI runtime bundle | `bundle/` (`config.json` + `rootfs/`) | crun, runc, boxbench's container |
//! | initramfs | `initramfs.cpio.gz`, `initramfs.cpio` | VMs (the uncompressed one for kvm_pvm) |
//! | layer tar | `rootfs.tar` | `docker import`, `podman import` |
//! | OCI image layout | `oci/` | `skopeo`, `podman load` |
//! | Debian cloud kernel (on request) | `debian-cloud/boot/vmlinuz-*` | VMs |
//! | full-OS VM disk (on request) | `full-os/disk.raw`, `disk.qcow2`, `disk-compressed.qcow2` | image-size claim |
//! | L1 host initramfs (on request) | `svm-host/l1-HASH.cpio` | `boxbench svm-host` |
//!
//! The rootfs is Debian's static busybox with a symlink per applet, a minimal `/etc`, empty mount
//! points, `/init` (PID 1 of a VM guest) and the workloads `/boxbench/workloads/{hello,idle,uname}`.
//!
//! Every artefact is rebuilt only when its inputs change: a stamp per artefact holds a hash of the
//! recipe files, the busybox `.deb` file name and [`FORMAT_VERSION`]. Building takes an advisory
//! lock on `out/.lock`, so concurrent builds (two tests, two CLI runs) are safe: the second waits
//! and then finds everything up to date. The library never prints; it reports its steps through
//! [`Progress`].
//!
//! ```no_run
//! use boxbench_images::{ImageBuilder, NoProgress};
//! let images = ImageBuilder::default_dirs().build(&NoProgress)?;
//! let paths = images.image_paths(); // rootfs, bundle and initrd for an InstanceSpec
//! # Ok::<(), boxbench_images::ImageError>(())
//! ```

pub mod bundle;
pub mod command;
pub mod cpio;
pub mod debian;
pub mod full_os;
pub mod full_os_guest;
pub mod kernel;
pub mod l1_initramfs;
pub mod lock;
pub mod microvm_kernel;
pub mod oci;
pub mod progress;
pub mod rootfs;
pub mod sizes;
pub mod tarball;
pub mod tree;

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use boxbench_core::ImagePaths;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

pub use bundle::{BundleError, runtime_config};
pub use command::CommandError;
pub use cpio::CpioError;
pub use debian::DebianError;
pub use full_os::{FullOsDisk, FullOsError, FullOsRecipe, FullOsSizes};
pub use kernel::{DebianKernel, KernelError};
pub use l1_initramfs::{L1InitramfsError, L1Payload, build_l1_initramfs};
pub use lock::LockError;
pub use oci::OciError;
pub use progress::{NoProgress, Progress, StepState};
pub use rootfs::RootfsError;
pub use sizes::{ArtefactSize, SizeError};
pub use tarball::TarError;
pub use tree::TreeError;

/// The kernel command-line parameter `/init` reads the workload name from (`boxbench.workload=NAME`,
/// default `hello`).
pub const WORKLOAD_PARAM: &str = "boxbench.workload";

/// The line `/init` prints on the console after the workload, followed by its exit status, before it
/// reboots the VM (the VM defaults' exit convention, defined in boxbench-core).
pub use boxbench_core::spec::EXIT_STATUS_PREFIX;

/// Bumped whenever the builder's output changes for the same inputs, so old artefacts are rebuilt.
pub const FORMAT_VERSION: u32 = 1;

/// The Debian package the rootfs takes its busybox from.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";

/// The environment variable that overrides the guest-images directory of [`ImageBuilder::default_dirs`].
pub const IMAGES_DIR_ENV: &str = "BOXBENCH_IMAGES_DIR";

/// The images directory of a boxbench checkout, relative to its root.
const IMAGES_DIR: &str = "guest-images";

/// The boxbench checkout this run belongs to, decided at run time: the nearest ancestor of the
/// current directory, else of the running executable (`target/release/boxbench` run from anywhere),
/// that holds `guest-images/rootfs`, the image recipes.
pub fn checkout_root() -> Option<PathBuf> {
    let is_checkout = |dir: &Path| dir.join(IMAGES_DIR).join("rootfs").is_dir();
    let from_cwd =
        std::env::current_dir().ok().and_then(|cwd| cwd.ancestors().find(|d| is_checkout(d)).map(Path::to_owned));
    from_cwd.or_else(|| {
        let exe = std::env::current_exe().ok()?;
        exe.ancestors().skip(1).find(|d| is_checkout(d)).map(Path::to_owned)
    })
}

/// The names of the artefacts, as [`Progress`] steps and size listings give them.
pub mod artefact {
    /// The busybox-static `.deb`.
    pub const BUSYBOX: &str = "busybox";
    /// The root filesystem directory.
    pub const ROOTFS: &str = "rootfs";
    /// The OCI runtime bundle's `config.json`.
    pub const BUNDLE: &str = "bundle";
    /// The initramfs (`initramfs.cpio` and `initramfs.cpio.gz`).
    pub const INITRAMFS: &str = "initramfs";
    /// The uncompressed layer tar `rootfs.tar`.
    pub const ROOTFS_TAR: &str = "rootfs.tar";
    /// The OCI image layout.
    pub const OCI_IMAGE: &str = "oci-image";
    /// Debian's cloud kernel bzImage.
    pub const DEBIAN_KERNEL: &str = "debian-cloud-vmlinuz";
    /// Debian's cloud kernel's modules tree.
    pub const DEBIAN_KERNEL_MODULES: &str = "debian-cloud-modules";
    /// The full-OS VM disk as a whole (its build step).
    pub const FULL_OS_DISK: &str = "full-os-disk";
    /// The full-OS disk's mmdebstrap tree (measured when built).
    pub const FULL_OS_TREE: &str = "full-os-tree";
    /// The full-OS disk as a raw ext4 image.
    pub const FULL_OS_RAW: &str = "full-os-raw-ext4";
    /// The full-OS disk as qcow2 (plain and compressed).
    pub const FULL_OS_QCOW2: &str = "full-os-qcow2";
}

/// The gzip level of `initramfs.cpio.gz`.
pub const INITRAMFS_GZIP_LEVEL: u32 = 9;

/// An image that could not be built, fetched or measured.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file or directory of the output could not be written or read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The busybox-static package holds no `bin/busybox`.
    #[error("{0} holds no bin/busybox")]
    NoBusybox(PathBuf),
    /// The output directory's lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A Debian package could not be resolved, downloaded or unpacked.
    #[error(transparent)]
    Debian(#[from] DebianError),
    /// The rootfs could not be assembled.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The bundle's configuration could not be written.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A tree (recipes, rootfs) could not be read.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The initramfs could not be written.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The layer tar could not be written.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// The OCI image layout could not be written.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// Debian's cloud kernel could not be fetched.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// An artefact could not be measured.
    #[error(transparent)]
    Size(#[from] SizeError),
    /// The full-OS VM disk could not be built or measured.
    #[error(transparent)]
    FullOs(#[from] FullOsError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.to_owned(), source }
}

/// A name beside `path` for a temporary file, unique to this process and call (threads of one
/// process may write the same file).
pub(crate) fn temporary_sibling(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    PathBuf::from(name)
}

/// Writes `bytes` to `path` through a temporary file renamed into place, so a reader never sees a
/// half-written file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_sibling(path);
    let result = fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes)).and_then(|_| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `path` through a temporary file: `fill` writes the content, which is renamed into place
/// only if it succeeded.
fn write_file_with(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<fs::File>) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let tmp = temporary_sibling(path);
    let result = (|| {
        let mut writer = BufWriter::new(fs::File::create(&tmp).map_err(io_err(&tmp))?);
        fill(&mut writer)?;
        writer.flush().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Builds boxbench's guest images into an output directory from a recipe directory.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    out_dir: PathBuf,
    recipes_dir: PathBuf,
    cache_dir: PathBuf,
}

/// The paths of a built set of images.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuiltImages {
    /// The root filesystem directory (`out/bundle/rootfs`).
    pub rootfs: PathBuf,
    /// The OCI runtime bundle directory (`out/bundle`: `config.json` and `rootfs/`).
    pub bundle: PathBuf,
    /// The gzip-compressed newc initramfs of the rootfs (`out/initramfs.cpio.gz`).
    pub initramfs_gz: PathBuf,
    /// The same initramfs uncompressed (`out/initramfs.cpio`).
    pub initramfs_cpio: PathBuf,
    /// The OCI image layout directory (`out/oci`).
    pub oci_layout: PathBuf,
    /// The uncompressed layer: a tar of the rootfs (`out/rootfs.tar`).
    pub rootfs_tar: PathBuf,
}

impl BuiltImages {
    /// The images as an [`InstanceSpec`](boxbench_core::InstanceSpec) takes them (no kernel: VM
    /// backends bring their own or use [`ImageBuilder::fetch_debian_cloud_kernel`]).
    pub fn image_paths(&self) -> ImagePaths {
        ImagePaths {
            rootfs: Some(self.rootfs.clone()),
            bundle: Some(self.bundle.clone()),
            kernel: None,
            initrd: Some(self.initramfs_gz.clone()),
            disk: None,
        }
    }
}

impl ImageBuilder {
    /// A builder writing into `out_dir` from the recipe tree `recipes_dir` (the files copied into the
    /// rootfs: `init`, `boxbench/workloads/*`, `etc/*`). Downloaded packages are cached in
    /// `out_dir/cache` unless [`with_cache_dir`](Self::with_cache_dir) says otherwise.
    pub fn new(out_dir: PathBuf, recipes_dir: PathBuf) -> Self {
        let cache_dir = out_dir.join("cache");
        Self { out_dir, recipes_dir, cache_dir }
    }

    /// `$BOXBENCH_IMAGES_DIR`, else the `guest-images/` of the boxbench checkout found at run time
    /// ([`checkout_root`]), else `guest-images/` in the current directory: output in `out/`, recipes
    /// in `rootfs/`.
    pub fn default_dirs() -> Self {
        let images_dir = std::env::var_os(IMAGES_DIR_ENV)
            .map(PathBuf::from)
            .or_else(|| checkout_root().map(|root| root.join(IMAGES_DIR)))
            .unwrap_or_else(|| PathBuf::from(IMAGES_DIR));
        Self::new(images_dir.join("out"), images_dir.join("rootfs"))
    }

    /// Caches downloaded `.deb` files in `cache_dir` instead of `out_dir/cache` (tests share one).
    pub fn with_cache_dir(mut self, cache_dir: PathBuf) -> Self {
        self.cache_dir = cache_dir;
        self
    }

    /// The output directory.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// The recipe directory.
    pub fn recipes_dir(&self) -> &Path {
        &self.recipes_dir
    }

    /// The images directory: the output directory's parent, which in a checkout also holds the
    /// recipes (what an L1 host carries at its host path).
    pub fn images_dir(&self) -> &Path {
        self.out_dir.parent().unwrap_or(&self.out_dir)
    }

    /// The micro-VM kernel's recipe, `linux/` beside the rootfs recipe.
    pub fn microvm_kernel_recipe(&self) -> PathBuf {
        self.recipes_dir.parent().unwrap_or(&self.recipes_dir).join("linux")
    }

    /// Where the artefacts are (built or not).
    pub fn paths(&self) -> BuiltImages {
        let bundle = self.out_dir.join("bundle");
        BuiltImages {
            rootfs: bundle.join(bundle::ROOTFS_DIR),
            bundle,
            initramfs_gz: self.out_dir.join("initramfs.cpio.gz"),
            initramfs_cpio: self.out_dir.join("initramfs.cpio"),
            oci_layout: self.out_dir.join("oci"),
            rootfs_tar: self.out_dir.join("rootfs.tar"),
        }
    }

    /// Builds every artefact that is missing or out of date and returns their paths.
    pub fn build(&self, progress: &dyn Progress) -> Result<BuiltImages, ImageError> {
        rootfs::check_recipes(&self.recipes_dir)?;
        fs::create_dir_all(&self.out_dir).map_err(io_err(&self.out_dir))?;
        let _lock = lock::DirLock::acquire(&self.out_dir.join(".lock"), || {
            progress.step(artefact::ROOTFS, StepState::WaitingForLock)
        })?;
        let paths = self.paths();

        let mut downloaded = false;
        let deb = debian::fetch_deb(BUSYBOX_PACKAGE, &self.cache_dir, || {
            downloaded = true;
            progress.step(artefact::BUSYBOX, StepState::Downloading);
        })?;
        progress.step(artefact::BUSYBOX, if downloaded { StepState::Built } else { StepState::UpToDate });
        let inputs = self.input_digest(&deb)?;
        let stamps = Stamps::new(self.out_dir.join(".stamps"), inputs);

        stamps.refresh(progress, artefact::ROOTFS, &[&paths.rootfs], || self.build_rootfs(&deb, &paths.rootfs))?;
        stamps.refresh(progress, artefact::BUNDLE, &[&paths.bundle.join("config.json")], || {
            bundle::write_config(&paths.bundle).map(drop).map_err(ImageError::from)
        })?;

        // The archives are made from the rootfs as built; its tree is walked once, when needed.
        let mut rootfs_entries = None;
        let mut entries = || -> Result<Vec<tree::TreeEntry>, ImageError> {
            match &rootfs_entries {
                Some(entries) => Ok(Clone::clone(entries)),
                None => Ok(rootfs_entries.insert(tree::walk(&paths.rootfs)?).clone()),
            }
        };
        stamps.refresh(progress, artefact::INITRAMFS, &[&paths.initramfs_cpio, &paths.initramfs_gz], || {
            write_initramfs(entries()?, &paths.initramfs_cpio, &paths.initramfs_gz)
        })?;
        stamps.refresh(progress, artefact::ROOTFS_TAR, &[&paths.rootfs_tar], || {
            let entries = entries()?;
            write_file_with(&paths.rootfs_tar, |w| {
                tarball::write_archive(&entries, w).map(drop).map_err(ImageError::from)
            })
        })?;
        stamps.refresh(progress, artefact::OCI_IMAGE, &[&paths.oci_layout.join("index.json")], || {
            let work = WorkDir::create(&self.out_dir)?;
            let fresh = work.path().join("oci");
            oci::write_layout(&paths.rootfs_tar, &fresh)?;
            replace_dir(&fresh, &paths.oci_layout)
        })?;
        Ok(paths)
    }

    /// Fetches Debian's cloud kernel into `out/debian-cloud/` (the `.deb` into the package cache),
    /// unless the package `linux-image-cloud-amd64` currently depends on is there already. Without
    /// package lists, a kernel fetched before is returned as it is.
    pub fn fetch_debian_cloud_kernel(&self, progress: &dyn Progress) -> Result<DebianKernel, ImageError> {
        fs::create_dir_all(&self.out_dir).map_err(io_err(&self.out_dir))?;
        let _lock = lock::DirLock::acquire(&self.out_dir.join(".lock"), || {
            progress.step(artefact::DEBIAN_KERNEL, StepState::WaitingForLock)
        })?;
        let existing = kernel::fetched(&self.out_dir);
        let package = match (kernel::resolve(&self.cache_dir), existing.as_ref()) {
            (Ok(package), _) => package,
            (Err(_), Some(existing)) => {
                progress.step(artefact::DEBIAN_KERNEL, StepState::UpToDate);
                return Ok(existing.clone());
            }
            (Err(err), None) => return Err(err.into()),
        };
        if let Some(existing) = existing.filter(|k| k.package == package) {
            progress.step(artefact::DEBIAN_KERNEL, StepState::UpToDate);
            return Ok(existing);
        }
        progress.step(artefact::DEBIAN_KERNEL, StepState::Building);
        let work = WorkDir::create(&self.out_dir)?;
        let fetched =
            kernel::fetch(&package, &self.cache_dir, &self.out_dir, &work.path().join(kernel::UNPACK_DIR), || {
                progress.step(artefact::DEBIAN_KERNEL, StepState::Downloading)
            })?;
        progress.step(artefact::DEBIAN_KERNEL, StepState::Built);
        Ok(fetched)
    }

    /// Debian's cloud kernel if it was fetched into this output directory before (no apt, no lock).
    pub fn debian_cloud_kernel(&self) -> Option<DebianKernel> {
        kernel::fetched(&self.out_dir)
    }

    /// Builds the full-OS VM disk (Debian bookworm minbase with the cloud kernel and systemd, as raw
    /// ext4 and qcow2) into `out/full-os/`, unless it was built from the same inputs; see
    /// [`full_os`]. Opt-in: [`build`](Self::build) never makes it. Needs root, mmdebstrap, e2fsprogs
    /// and qemu-utils, and downloads about 120 packages.
    pub fn build_full_os_disk(&self, progress: &dyn Progress) -> Result<FullOsDisk, ImageError> {
        self.build_full_os_disk_from(&FullOsRecipe::default(), progress)
    }

    /// [`build_full_os_disk`](Self::build_full_os_disk) from another suite or package list.
    pub fn build_full_os_disk_from(
        &self,
        recipe: &FullOsRecipe,
        progress: &dyn Progress,
    ) -> Result<FullOsDisk, ImageError> {
        Ok(full_os::build(recipe, &self.out_dir, progress)?)
    }

    /// The full-OS VM disk if it was built into this output directory before (no tools run, no lock).
    pub fn full_os_disk(&self) -> Option<FullOsDisk> {
        full_os::built(&self.out_dir)
    }

    /// The size of every built artefact, of Debian's cloud kernel when it was fetched and of the
    /// full-OS disk when it was built. Fails, naming the file, if an artefact was not built.
    pub fn sizes(&self) -> Result<Vec<ArtefactSize>, ImageError> {
        let paths = self.paths();
        let mut list = vec![
            sizes::directory(artefact::ROOTFS, &paths.rootfs)?,
            sizes::file_pair(artefact::INITRAMFS, &paths.initramfs_cpio, &paths.initramfs_gz)?,
            sizes::oci_layout(artefact::OCI_IMAGE, &paths.oci_layout, &paths.rootfs_tar)?,
        ];
        if let Some(kernel) = self.debian_cloud_kernel() {
            list.push(sizes::compressed_file(artefact::DEBIAN_KERNEL, &kernel.vmlinuz, "bzImage")?);
            // The modules tree never changes once unpacked, and gzipping 90 MB takes a while: its
            // measurement is kept beside it.
            let cached = self.out_dir.join(kernel::UNPACK_DIR).join(kernel::MODULES_SIZE_CACHE);
            let size = match fs::read(&cached).ok().and_then(|b| serde_json::from_slice::<ArtefactSize>(&b).ok()) {
                Some(size) => ArtefactSize { path: kernel.modules_dir.clone(), ..size },
                None => {
                    let size = sizes::directory(artefact::DEBIAN_KERNEL_MODULES, &kernel.modules_dir)?;
                    let json = serde_json::to_vec(&size).map_err(|e| io_err(&cached)(e.into()))?;
                    write_atomically(&cached, &json).map_err(io_err(&cached))?;
                    size
                }
            };
            list.push(size);
        }
        list.extend(full_os::sizes(&self.out_dir)?);
        Ok(list)
    }

    /// The hash of everything the artefacts are made from.
    fn input_digest(&self, busybox_deb: &Path) -> Result<String, ImageError> {
        let mut hasher = Sha256::new();
        hasher.update(format!("boxbench-images format {FORMAT_VERSION}\n"));
        hasher.update(busybox_deb.file_name().map(|n| n.as_bytes()).unwrap_or_default());
        hasher.update(b"\n");
        for entry in tree::walk(&self.recipes_dir)? {
            hasher.update(entry.path.as_os_str().as_bytes());
            match &entry.kind {
                tree::EntryKind::File { source, .. } => {
                    hasher.update(if entry.mode & 0o111 != 0 { b"\0x\0" } else { b"\0f\0" });
                    hasher.update(fs::read(source).map_err(io_err(source))?);
                }
                tree::EntryKind::Symlink { target } => {
                    hasher.update(b"\0l\0");
                    hasher.update(target.as_bytes());
                }
                tree::EntryKind::Dir | tree::EntryKind::CharDevice { .. } => hasher.update(b"\0d\0"),
            }
            hasher.update(b"\n");
        }
        Ok(hex(&hasher.finalize()))
    }

    /// Extracts busybox from `deb` and assembles a fresh rootfs in place of `rootfs`.
    fn build_rootfs(&self, deb: &Path, rootfs: &Path) -> Result<(), ImageError> {
        let work = WorkDir::create(&self.out_dir)?;
        let unpacked = work.path().join("busybox-static");
        debian::extract(deb, &unpacked)?;
        let busybox = unpacked.join("bin/busybox");
        if !busybox.is_file() {
            return Err(ImageError::NoBusybox(deb.to_owned()));
        }
        let fresh = work.path().join("rootfs");
        rootfs::assemble(&busybox, &self.recipes_dir, &fresh)?;
        replace_dir(&fresh, rootfs)
    }
}

/// The staging directory `out/.work`: emptied when created (whatever is there is from an interrupted
/// build, since the builder holds the lock) and removed when dropped, so neither success nor failure
/// leaves it behind.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(out_dir: &Path) -> Result<Self, ImageError> {
        let path = out_dir.join(".work");
        if path.exists() {
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
        }
        fs::create_dir_all(&path).map_err(io_err(&path))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Moves the directory `fresh` to `dest`, replacing what was there.
fn replace_dir(fresh: &Path, dest: &Path) -> Result<(), ImageError> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(io_err(dest))?;
    }
    fs::rename(fresh, dest).map_err(io_err(dest))
}

/// Writes the newc archive of the rootfs `entries`, plus the `/dev/console` node the kernel opens
/// for PID 1 before `/init` can mount devtmpfs, to `cpio_path`, and its gzip to `gz_path`.
fn write_initramfs(mut entries: Vec<tree::TreeEntry>, cpio_path: &Path, gz_path: &Path) -> Result<(), ImageError> {
    entries.push(tree::TreeEntry {
        path: PathBuf::from("dev/console"),
        mode: 0o600,
        kind: tree::EntryKind::CharDevice { major: 5, minor: 1 },
    });
    entries.sort_by(|a, b| a.path.as_os_str().as_bytes().cmp(b.path.as_os_str().as_bytes()));
    write_file_with(cpio_path, |w| cpio::write_archive(&entries, w).map(drop).map_err(ImageError::from))?;
    write_file_with(gz_path, |w| {
        let mut cpio = fs::File::open(cpio_path).map_err(io_err(cpio_path))?;
        let mut gz = GzEncoder::new(w, Compression::new(INITRAMFS_GZIP_LEVEL));
        std::io::copy(&mut cpio, &mut gz).map_err(io_err(gz_path))?;
        gz.finish().map_err(io_err(gz_path))?;
        Ok(())
    })
}

/// Lower-case hexadecimal of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One stamp file per artefact, holding the input hash it was built from.
#[derive(Debug)]
struct Stamps {
    dir: PathBuf,
    inputs: String,
}

impl Stamps {
    fn new(dir: PathBuf, inputs: String) -> Self {
        Self { dir, inputs }
    }

    /// True when `artefact` exists at `path` and was built from the current inputs.
    fn is_current(&self, artefact: &str, path: &Path) -> bool {
        path.exists() && fs::read_to_string(self.dir.join(artefact)).is_ok_and(|s| s.trim() == self.inputs)
    }

    /// Forgets `artefact`'s stamp before it is rebuilt, so an interrupted build is not taken as done.
    fn invalidate(&self, artefact: &str) -> Result<(), ImageError> {
        let path = self.dir.join(artefact);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// Rebuilds `artefact` (whose files are `outputs`) with `build` unless it is up to date, telling
    /// `progress` which it was.
    fn refresh(
        &self,
        progress: &dyn Progress,
        artefact: &str,
        outputs: &[&Path],
        build: impl FnOnce() -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        if outputs.iter().all(|p| self.is_current(artefact, p)) {
            progress.step(artefact, StepState::UpToDate);
            return Ok(());
        }
        progress.step(artefact, StepState::Building);
        self.invalidate(artefact)?;
        build()?;
        self.record(artefact)?;
        progress.step(artefact, StepState::Built);
        Ok(())
    }

    /// Records that `artefact` was built from the current inputs.
    fn record(&self, artefact: &str) -> Result<(), ImageError> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let path = self.dir.join(artefact);
        write_atomically(&path, format!("{}\n", self.inputs).as_bytes()).map_err(io_err(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_is_found_from_the_current_directory_at_run_time() {
        // cargo runs a crate's tests in that crate's directory, two levels below the checkout.
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(checkout_root().as_deref(), crate_dir.ancestors().nth(2));
        if std::env::var_os(IMAGES_DIR_ENV).is_none() {
            assert_eq!(
                ImageBuilder::default_dirs().recipes_dir(),
                crate_dir.join("../../guest-images/rootfs").as_path().canonicalize().unwrap()
            );
        }
    }
}
