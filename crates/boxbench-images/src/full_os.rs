//! The full-OS VM disk, built on request so claim 3 ("VM images reach GB because they carry an OS")
//! rests on a measured disk instead of an assumed one. It owns `out/full-os/`:
//!
//! | file | what |
//! |---|---|
//! | `disk.raw` | raw ext4 filesystem image of the root filesystem (sparse) |
//! | `disk.qcow2` | the same disk converted to qcow2 (`qemu-img convert -O qcow2`) |
//! | `disk-compressed.qcow2` | qcow2 with zlib-compressed clusters (`qemu-img convert -c`) |
//! | `bootable.raw` | the same filesystem as the second partition of a disk with a partition table and SYSLINUX ([`crate::full_os_guest`]) |
//! | `rootfs/` | the same filesystem as a directory tree: the root of the system containers (nspawn, LXC) |
//! | `vmlinuz`, `initrd.img` | copies of the disk's own kernel and initramfs, for direct kernel boot |
//! | `packages.txt` | every installed package with its version |
//! | `build.json` | the build's record: inputs hash, tree measurement, timings (written last) |
//!
//! The root filesystem is Debian `bookworm`, `mmdebstrap --variant=minbase` (Essential and apt only)
//! plus [`DEFAULT_PACKAGES`]: Debian's cloud kernel `linux-image-cloud-amd64` (which pulls in
//! `initramfs-tools`, so `/boot` holds an initramfs made at install time) and `systemd-sysv` (minbase
//! has no init). A real VM disk carries its kernel and modules in `/boot` and `/lib/modules`; Debian's
//! own cloud images additionally carry a boot loader (grub), `cloud-init`, `openssh-server`, `udev`
//! tooling and more, which are left out: this disk is the floor of a bootable full-OS VM disk, so a
//! verdict resting on it errs towards the VM. The mirror is mmdebstrap's default (deb.debian.org, with
//! the updates and security suites of a stable release), the one this host's apt uses.
//!
//! Every boot of the disk (VM or system container) reaches `boxbench-workload.service` after
//! `multi-user.target`, which runs the workload and prints the marker on the console
//! ([`crate::full_os_guest`]). `disk.raw` is a bare filesystem (no partition table, no boot loader):
//! it boots directly with
//! `qemu-system-x86_64 -kernel vmlinuz -initrd initrd.img -drive file=disk.raw,format=raw,if=virtio
//! -append "root=/dev/vda console=ttyS0"`; `/etc/fstab` mounts it by its label [`FILESYSTEM_LABEL`].
//!
//! The build is cached: `build.json` names the hash of the suite, variant, package list, mmdebstrap's
//! version and [`FULL_OS_FORMAT_VERSION`], and is written only after every file is in place, so a
//! half-built disk is never taken as built. Building holds `out/full-os/.lock` (its own lock, so a
//! two-minute mmdebstrap does not stall the busybox images) and stages in `out/full-os/.work/`,
//! removed on success and failure alike, after checking that nothing is still mounted inside it
//! (mmdebstrap bind-mounts the host's `/proc`, `/sys` and `/dev` nodes while it installs). The
//! mmdebstrap tree is measured (sum of files, tar.gz) and then deleted: it is the raw disk's content
//! byte for byte, and keeping it would cost its size again.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lock::{DirLock, LockError};
use crate::progress::{Progress, StepState};
use crate::sizes::{ArtefactSize, MEASURE_GZIP_LEVEL};
use crate::{artefact, hex};
use boxbench_core::mountinfo::mounts_under;

/// The Debian release the disk is built from unless a [`FullOsRecipe`] says otherwise.
pub const DEFAULT_SUITE: &str = "bookworm";

/// The mmdebstrap variant: `Essential: yes` packages and apt, nothing else.
pub const VARIANT: &str = "minbase";

/// The packages installed on top of minbase: the cloud kernel (with its modules and, through
/// `initramfs-tools`, an initramfs) and an init system.
pub const DEFAULT_PACKAGES: &[&str] = &["linux-image-cloud-amd64", "systemd-sysv"];

/// The directory under the output directory that holds the disk.
pub const DIR: &str = "full-os";

/// The ext4 label of the disk's filesystem, which its `/etc/fstab` mounts as `/`.
pub const FILESYSTEM_LABEL: &str = "boxbench-root";

/// The hostname written into the disk's `/etc/hostname`.
pub const HOSTNAME: &str = "boxbench-full-os";

/// Bumped whenever the disk or its measurement changes for the same inputs (mkfs options, files
/// written, how the tree is measured), so an old disk is rebuilt.
pub const FULL_OS_FORMAT_VERSION: u32 = 3;

/// The ext4 block size of the disk.
pub const BLOCK_SIZE: u64 = 4096;

/// Room added to the tree's block-rounded size for ext4's own metadata (inode tables, bitmaps,
/// extent blocks, the 5 % reserved for root) and a little free space: a quarter of the data...
const HEADROOM_DIVISOR: u64 = 4;
/// ...plus this much for the journal (16 MiB at these sizes) and the group descriptors.
const HEADROOM_FIXED_BYTES: u64 = 64 << 20;
/// The disk size is a whole number of these.
const DISK_SIZE_GRANULE: u64 = 1 << 20;

const RAW_FILE: &str = "disk.raw";
const BOOTABLE_FILE: &str = "bootable.raw";
const ROOTFS_DIR: &str = "rootfs";
const QCOW2_FILE: &str = "disk.qcow2";
const QCOW2_COMPRESSED_FILE: &str = "disk-compressed.qcow2";
const KERNEL_FILE: &str = "vmlinuz";
const INITRD_FILE: &str = "initrd.img";
const PACKAGE_LIST_FILE: &str = "packages.txt";
const RECORD_FILE: &str = "build.json";
const LOCK_FILE: &str = ".lock";
const WORK_DIR: &str = ".work";

/// How many lines of a failed step's output its error carries.
const TAIL_LINES: usize = 6;

/// The full-OS disk could not be built or measured.
#[derive(Debug, thiserror::Error)]
pub enum FullOsError {
    /// The suite is not a Debian suite or codename (it would reach mmdebstrap's command line).
    #[error("full-OS suite {0:?} is not a Debian suite name (lower-case letters, digits, '.', '-', '_')")]
    InvalidSuite(String),
    /// A package name is not a Debian package name.
    #[error("full-OS package {0:?} is not a Debian package name (lower-case letters, digits, '+', '-', '.')")]
    InvalidPackage(String),
    /// A host tool the build runs is not there.
    #[error("cannot run {tool} (install the Debian package {package}): {source}")]
    MissingTool { tool: String, package: &'static str, source: io::Error },
    /// A step of the build ran and failed.
    #[error("full-OS disk step `{step}` failed ({status}){}: {tail}", missing_hint(.missing_package))]
    Step { step: String, status: ExitStatus, tail: String, missing_package: Option<String> },
    /// A file of the build could not be written or read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// Something is still mounted inside the staging directory, which is therefore not removed.
    #[error("{0} is still mounted: not removing the staging directory around it (umount it first)")]
    StillMounted(PathBuf),
    /// The bootable copy of the disk could not be made.
    #[error(transparent)]
    Bootable(#[from] crate::full_os_guest::BootableError),
    /// The disk's lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn missing_hint(package: &Option<String>) -> String {
    package.as_ref().map(|p| format!(": apt has no package {p} in the suite")).unwrap_or_default()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FullOsError + '_ {
    move |source| FullOsError::Io { path: path.to_owned(), source }
}

/// What the disk is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullOsRecipe {
    /// The Debian suite or codename (`bookworm`, `stable`).
    pub suite: String,
    /// The packages installed on top of minbase.
    pub packages: Vec<String>,
}

impl Default for FullOsRecipe {
    fn default() -> Self {
        Self { suite: DEFAULT_SUITE.to_owned(), packages: DEFAULT_PACKAGES.iter().map(|p| (*p).to_owned()).collect() }
    }
}

impl FullOsRecipe {
    /// Refuses a suite or package name that is not one (before anything runs).
    pub fn validate(&self) -> Result<(), FullOsError> {
        let suite_ok = self.suite.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self.suite.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
        if !suite_ok {
            return Err(FullOsError::InvalidSuite(self.suite.clone()));
        }
        for package in &self.packages {
            let ok = package.len() >= 2
                && package.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && package
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
            if !ok {
                return Err(FullOsError::InvalidPackage(package.clone()));
            }
        }
        Ok(())
    }

    /// The mmdebstrap arguments that build this recipe into `target`.
    pub fn mmdebstrap_args(&self, target: &Path) -> Vec<String> {
        let mut args = vec!["--mode=root".to_owned(), "--format=directory".to_owned(), format!("--variant={VARIANT}")];
        if !self.packages.is_empty() {
            args.push(format!("--include={}", self.packages.join(",")));
        }
        args.push(self.suite.clone());
        args.push(target.to_string_lossy().into_owned());
        args
    }

    /// The hash of everything the disk is made from, given mmdebstrap's version line.
    pub fn input_digest(&self, mmdebstrap_version: &str) -> String {
        let mut packages = self.packages.clone();
        packages.sort();
        packages.dedup();
        let mut hasher = Sha256::new();
        hasher.update(format!("boxbench full-os format {FULL_OS_FORMAT_VERSION}\n"));
        hasher.update(format!("suite {}\nvariant {VARIANT}\n", self.suite));
        hasher.update(format!("packages {}\n", packages.join(",")));
        hasher.update(format!("mmdebstrap {}\n", mmdebstrap_version.trim()));
        hasher.update(crate::full_os_guest::digest_input());
        hex(&hasher.finalize())
    }
}

/// What the mmdebstrap tree weighed before it was made into the disk and deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeMeasurement {
    /// The summed size of its regular files (a hard-linked file once).
    pub file_bytes: u64,
    /// The same, each file rounded up to whole [`BLOCK_SIZE`] blocks, plus a block per directory and
    /// long symlink: what the files take in the filesystem.
    pub block_bytes: u64,
    /// Its directories, files, symlinks and device nodes.
    pub entries: u64,
    /// The size of its tar (GNU tar, numeric owners, sorted names) compressed by `gzip -6`
    /// ([`MEASURE_GZIP_LEVEL`]): the same OS as a container layer would carry it.
    pub tar_gz_bytes: u64,
}

/// The record `build.json` keeps: the inputs the disk was built from and what was measured then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BuildRecord {
    inputs: String,
    suite: String,
    requested_packages: Vec<String>,
    mmdebstrap_version: String,
    installed_packages: usize,
    kernel_release: Option<String>,
    tree: TreeMeasurement,
    disk_size_bytes: u64,
    mmdebstrap_seconds: f64,
    build_seconds: f64,
}

/// A built full-OS VM disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FullOsDisk {
    /// The directory holding it (`out/full-os`).
    pub dir: PathBuf,
    /// The raw ext4 image (sparse).
    pub raw: PathBuf,
    /// The bootable disk: partition table, SYSLINUX, a FAT `/boot` partition and the ext4 root
    /// partition ([`crate::full_os_guest`]).
    pub bootable: PathBuf,
    /// The disk's root filesystem as a directory tree (the root of the system containers).
    pub rootfs: PathBuf,
    /// The qcow2 image.
    pub qcow2: PathBuf,
    /// The qcow2 image with compressed clusters.
    pub qcow2_compressed: PathBuf,
    /// A copy of the disk's kernel, when a kernel package was installed.
    pub kernel: Option<PathBuf>,
    /// A copy of the disk's initramfs, when the kernel package made one.
    pub initrd: Option<PathBuf>,
    /// The kernel release (`6.1.0-NN-cloud-amd64`), when a kernel was installed.
    pub kernel_release: Option<String>,
    /// Every installed package, one `NAME VERSION` per line.
    pub package_list: PathBuf,
    /// How many packages the disk holds (installed, by dpkg's status).
    pub packages: usize,
    /// The suite it was built from.
    pub suite: String,
    /// The packages asked for on top of minbase.
    pub requested_packages: Vec<String>,
    /// `mmdebstrap --version` of the build.
    pub mmdebstrap_version: String,
    /// The mmdebstrap tree, measured before it was deleted.
    pub tree: TreeMeasurement,
    /// The disk's apparent size as chosen from the tree ([`disk_size_bytes`]).
    pub disk_size_bytes: u64,
    /// How long mmdebstrap took (download and install), in seconds.
    pub mmdebstrap_seconds: f64,
    /// How long the whole build took, in seconds.
    pub build_seconds: f64,
}

impl FullOsDisk {
    fn from_record(dir: &Path, record: BuildRecord) -> Self {
        let kernel = Some(dir.join(KERNEL_FILE)).filter(|p| p.is_file());
        let initrd = Some(dir.join(INITRD_FILE)).filter(|p| p.is_file());
        Self {
            dir: dir.to_owned(),
            raw: dir.join(RAW_FILE),
            bootable: dir.join(BOOTABLE_FILE),
            rootfs: dir.join(ROOTFS_DIR),
            qcow2: dir.join(QCOW2_FILE),
            qcow2_compressed: dir.join(QCOW2_COMPRESSED_FILE),
            kernel,
            initrd,
            kernel_release: record.kernel_release,
            package_list: dir.join(PACKAGE_LIST_FILE),
            packages: record.installed_packages,
            suite: record.suite,
            requested_packages: record.requested_packages,
            mmdebstrap_version: record.mmdebstrap_version,
            tree: record.tree,
            disk_size_bytes: record.disk_size_bytes,
            mmdebstrap_seconds: record.mmdebstrap_seconds,
            build_seconds: record.build_seconds,
        }
    }
}

/// The disk's apparent size for a tree whose files take `block_bytes` in the filesystem: that plus a
/// quarter (metadata, reserved blocks, some free space) plus 64 MiB (journal), rounded up to a MiB.
pub fn disk_size_bytes(block_bytes: u64) -> u64 {
    let wanted = block_bytes + block_bytes / HEADROOM_DIVISOR + HEADROOM_FIXED_BYTES;
    wanted.div_ceil(DISK_SIZE_GRANULE) * DISK_SIZE_GRANULE
}

/// The inodes the filesystem is made with for a tree of `entries`: half as many again, plus 1024,
/// so the running system can create files.
pub fn inode_count(entries: u64) -> u64 {
    entries + entries / 2 + 1024
}

/// The disk in `out_dir` as last built, if its record and files are there (no tools run, no lock).
pub(crate) fn built(out_dir: &Path) -> Option<FullOsDisk> {
    let dir = out_dir.join(DIR);
    let record: BuildRecord = serde_json::from_slice(&fs::read(dir.join(RECORD_FILE)).ok()?).ok()?;
    let disk = FullOsDisk::from_record(&dir, record);
    let files = [&disk.raw, &disk.qcow2, &disk.qcow2_compressed].iter().all(|p| p.is_file())
        && (disk.kernel.is_none() || disk.bootable.is_file());
    (files && disk.rootfs.join("boxbench/run-workload").is_file()).then_some(disk)
}

/// The disk's figures, each named for what it is (the [`ArtefactSize`] listing has only an
/// "uncompressed" and a "compressed" slot, which the raw disk's allocated bytes do not fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FullOsSizes {
    /// The mmdebstrap tree's summed file sizes.
    pub tree_file_bytes: u64,
    /// The tree as a tar compressed by `gzip -6`.
    pub tree_tar_gz_bytes: u64,
    /// The raw ext4 disk's length (what a copy without sparse-file support writes).
    pub raw_apparent_bytes: u64,
    /// The raw ext4 disk's bytes allocated on the host (it is sparse): what it takes as stored.
    pub raw_allocated_bytes: u64,
    /// The qcow2 file's length.
    pub qcow2_bytes: u64,
    /// The qcow2 with compressed clusters, its file length.
    pub qcow2_compressed_bytes: u64,
}

impl FullOsDisk {
    /// Measures the disk's files now (the tree's figures are those recorded when it was built).
    pub fn sizes(&self) -> Result<FullOsSizes, FullOsError> {
        let meta = |path: &Path| fs::metadata(path).map_err(io_err(path));
        let raw = meta(&self.raw)?;
        Ok(FullOsSizes {
            tree_file_bytes: self.tree.file_bytes,
            tree_tar_gz_bytes: self.tree.tar_gz_bytes,
            raw_apparent_bytes: raw.len(),
            raw_allocated_bytes: raw.blocks() * 512,
            qcow2_bytes: meta(&self.qcow2)?.len(),
            qcow2_compressed_bytes: meta(&self.qcow2_compressed)?.len(),
        })
    }
}

/// The sizes of the disk in `out_dir`, if it was built: the tree, the raw image and the qcow2 pair.
pub(crate) fn sizes(out_dir: &Path) -> Result<Vec<ArtefactSize>, FullOsError> {
    let Some(disk) = built(out_dir) else { return Ok(Vec::new()) };
    let sizes = disk.sizes()?;
    let os =
        format!("Debian {} {VARIANT} + {} ({} packages)", disk.suite, disk.requested_packages.join(","), disk.packages);
    Ok(vec![
        ArtefactSize {
            name: artefact::FULL_OS_TREE.to_owned(),
            path: disk.dir.clone(),
            uncompressed_bytes: sizes.tree_file_bytes,
            compressed_bytes: sizes.tree_tar_gz_bytes,
            method: format!(
                "{os} mmdebstrap tree, measured before it was deleted: sum of file sizes; \
                 tar.gz (gzip -{MEASURE_GZIP_LEVEL}) of the tree"
            ),
        },
        ArtefactSize {
            name: artefact::FULL_OS_RAW.to_owned(),
            path: disk.raw.clone(),
            uncompressed_bytes: sizes.raw_apparent_bytes,
            compressed_bytes: sizes.raw_allocated_bytes,
            method: format!(
                "{os} as a raw ext4 disk (mkfs.ext4 -d): apparent size (file length); \
                 second figure is NOT compressed: bytes allocated on the host (sparse file)"
            ),
        },
        ArtefactSize {
            name: artefact::FULL_OS_QCOW2.to_owned(),
            path: disk.qcow2.clone(),
            uncompressed_bytes: sizes.qcow2_bytes,
            compressed_bytes: sizes.qcow2_compressed_bytes,
            method: format!(
                "{os} as qcow2: file size of qemu-img convert -O qcow2; \
                 file size of qemu-img convert -c -O qcow2 (zlib-compressed clusters)"
            ),
        },
    ])
}

/// Builds the disk for `recipe` into `out_dir/full-os` unless it is there from the same inputs.
pub(crate) fn build(recipe: &FullOsRecipe, out_dir: &Path, progress: &dyn Progress) -> Result<FullOsDisk, FullOsError> {
    recipe.validate()?;
    let mmdebstrap_version = tool_output("mmdebstrap", "mmdebstrap", &["--version"])?;
    let inputs = recipe.input_digest(&mmdebstrap_version);

    let dir = out_dir.join(DIR);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let _lock =
        DirLock::acquire(&dir.join(LOCK_FILE), || progress.step(artefact::FULL_OS_DISK, StepState::WaitingForLock))?;
    if let Some(disk) = current(&dir, &inputs) {
        progress.step(artefact::FULL_OS_DISK, StepState::UpToDate);
        return Ok(disk);
    }
    // Found missing now rather than after minutes of mmdebstrap.
    tool_output("mkfs.ext4", "e2fsprogs", &["-V"])?;
    tool_output("qemu-img", "qemu-utils", &["--version"])?;
    tool_output("tar", "tar", &["--version"])?;
    tool_output("gzip", "gzip", &["--version"])?;
    tool_output("mkfs.vfat", "dosfstools", &["--help"])?;
    tool_output("mcopy", "mtools", &["--version"])?;
    tool_output("syslinux", "syslinux", &["--version"])?;
    tool_output("sfdisk", "fdisk", &["--version"])?;
    progress.step(artefact::FULL_OS_DISK, StepState::Building);
    let record_path = dir.join(RECORD_FILE);
    match fs::remove_file(&record_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&record_path)(e)),
        _ => {}
    }
    let started = Instant::now();
    let staging = Staging::create(dir.join(WORK_DIR))?;
    let record = build_in(recipe, &staging, &inputs, mmdebstrap_version.trim(), started)?;

    let rootfs = dir.join(ROOTFS_DIR);
    if rootfs.exists() {
        remove_unmounted(&rootfs)?;
    }
    fs::rename(staging.path().join(ROOTFS_DIR), &rootfs).map_err(io_err(&rootfs))?;
    for name in
        [RAW_FILE, BOOTABLE_FILE, QCOW2_FILE, QCOW2_COMPRESSED_FILE, PACKAGE_LIST_FILE, KERNEL_FILE, INITRD_FILE]
    {
        let (from, to) = (staging.path().join(name), dir.join(name));
        if from.exists() {
            fs::rename(&from, &to).map_err(io_err(&to))?;
        } else if to.exists() {
            fs::remove_file(&to).map_err(io_err(&to))?;
        }
    }
    let json = serde_json::to_vec_pretty(&record).map_err(|e| io_err(&record_path)(e.into()))?;
    crate::write_atomically(&record_path, &json).map_err(io_err(&record_path))?;
    drop(staging);
    progress.step(artefact::FULL_OS_DISK, StepState::Built);
    Ok(FullOsDisk::from_record(&dir, record))
}

/// The disk in `dir` if it was built from `inputs`.
fn current(dir: &Path, inputs: &str) -> Option<FullOsDisk> {
    let out_dir = dir.parent()?;
    let record: BuildRecord = serde_json::from_slice(&fs::read(dir.join(RECORD_FILE)).ok()?).ok()?;
    (record.inputs == inputs).then_some(())?;
    built(out_dir)
}

/// Every step from mmdebstrap to the compressed qcow2, writing the outputs into `staging`; the build
/// began at `started`.
fn build_in(
    recipe: &FullOsRecipe,
    staging: &Staging,
    inputs: &str,
    mmdebstrap_version: &str,
    started: Instant,
) -> Result<BuildRecord, FullOsError> {
    let work = staging.path();
    let tree = work.join("tree");
    let mmdebstrap_started = Instant::now();
    run_step("mmdebstrap", "mmdebstrap", Command::new("mmdebstrap").args(recipe.mmdebstrap_args(&tree)))?;
    let mmdebstrap_seconds = mmdebstrap_started.elapsed().as_secs_f64();
    staging.check_unmounted()?;

    configure_tree(&tree)?;
    let status_path = tree.join("var/lib/dpkg/status");
    let status = fs::read_to_string(&status_path).map_err(io_err(&status_path))?;
    let installed = installed_packages(&status);
    let list: String = installed.iter().map(|(name, version)| format!("{name} {version}\n")).collect();
    let list_path = work.join(PACKAGE_LIST_FILE);
    fs::write(&list_path, list).map_err(io_err(&list_path))?;
    let kernel_release = copy_boot_files(&tree, work)?;

    let mut measured = measure_tree(&tree)?;
    measured.tar_gz_bytes = tar_gz_bytes(&tree)?;

    let raw = work.join(RAW_FILE);
    let disk_size = disk_size_bytes(measured.block_bytes);
    let file = fs::File::create(&raw).map_err(io_err(&raw))?;
    file.set_len(disk_size).map_err(io_err(&raw))?;
    drop(file);
    run_step("mkfs.ext4", "e2fsprogs", Command::new("mkfs.ext4").args(mkfs_args(&tree, &raw, measured.entries)))?;
    // The tree stays as the system containers' root, the same bytes as the disk's filesystem.
    let rootfs = work.join(ROOTFS_DIR);
    fs::rename(&tree, &rootfs).map_err(io_err(&rootfs))?;
    if kernel_release.is_some() && work.join(INITRD_FILE).is_file() {
        crate::full_os_guest::make_bootable_disk(
            &raw,
            &work.join(KERNEL_FILE),
            &work.join(INITRD_FILE),
            FILESYSTEM_LABEL,
            work,
            &work.join(BOOTABLE_FILE),
        )?;
    }

    let qcow2 = work.join(QCOW2_FILE);
    let compressed = work.join(QCOW2_COMPRESSED_FILE);
    run_step("qemu-img convert", "qemu-utils", Command::new("qemu-img").args(qemu_img_args(&raw, &qcow2, false)))?;
    run_step(
        "qemu-img convert -c",
        "qemu-utils",
        Command::new("qemu-img").args(qemu_img_args(&raw, &compressed, true)),
    )?;
    Ok(BuildRecord {
        inputs: inputs.to_owned(),
        suite: recipe.suite.clone(),
        requested_packages: recipe.packages.clone(),
        mmdebstrap_version: mmdebstrap_version.to_owned(),
        installed_packages: installed.len(),
        kernel_release,
        tree: measured,
        disk_size_bytes: disk_size,
        mmdebstrap_seconds,
        build_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The `mkfs.ext4` arguments that make `raw` (already at its size) from `tree`.
pub fn mkfs_args(tree: &Path, raw: &Path, entries: u64) -> Vec<String> {
    [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        &BLOCK_SIZE.to_string(),
        "-N",
        &inode_count(entries).to_string(),
        "-L",
        FILESYSTEM_LABEL,
        "-d",
        &tree.to_string_lossy(),
        &raw.to_string_lossy(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The `qemu-img convert` arguments from the raw disk to `dest`, with compressed clusters if asked.
pub fn qemu_img_args(raw: &Path, dest: &Path, compress: bool) -> Vec<String> {
    let mut args = vec!["convert".to_owned()];
    if compress {
        args.push("-c".to_owned());
    }
    args.extend(["-f", "raw", "-O", "qcow2"].map(str::to_owned));
    args.push(raw.to_string_lossy().into_owned());
    args.push(dest.to_string_lossy().into_owned());
    args
}

/// What makes the tree a disk of its own: `/etc/fstab` mounting it by label, a hostname.
fn configure_tree(tree: &Path) -> Result<(), FullOsError> {
    let fstab = tree.join("etc/fstab");
    fs::write(&fstab, format!("LABEL={FILESYSTEM_LABEL} / ext4 errors=remount-ro 0 1\n")).map_err(io_err(&fstab))?;
    let hostname = tree.join("etc/hostname");
    fs::write(&hostname, format!("{HOSTNAME}\n")).map_err(io_err(&hostname))?;
    crate::full_os_guest::install_guest_files(tree).map_err(io_err(tree))
}

/// Copies the tree's `boot/vmlinuz-RELEASE` and `boot/initrd.img-RELEASE` (the newest release, if
/// several) into `dest`, returning the release; `None` when no kernel is installed.
fn copy_boot_files(tree: &Path, dest: &Path) -> Result<Option<String>, FullOsError> {
    let boot = tree.join("boot");
    let mut releases: Vec<String> = match fs::read_dir(&boot) {
        Ok(dir) => {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("vmlinuz-").map(str::to_owned)).collect()
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&boot)(e)),
    };
    releases.sort();
    let Some(release) = releases.pop() else { return Ok(None) };
    let vmlinuz = boot.join(format!("vmlinuz-{release}"));
    fs::copy(&vmlinuz, dest.join(KERNEL_FILE)).map_err(io_err(&vmlinuz))?;
    let initrd = boot.join(format!("initrd.img-{release}"));
    if initrd.is_file() {
        fs::copy(&initrd, dest.join(INITRD_FILE)).map_err(io_err(&initrd))?;
    }
    Ok(Some(release))
}

/// The installed packages of a dpkg `status` file, as (name, version), in the file's order.
fn installed_packages(status: &str) -> Vec<(String, String)> {
    status
        .split("\n\n")
        .filter_map(|paragraph| {
            let field =
                |name: &str| paragraph.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim);
            let installed = field("Status")?.split_whitespace().last() == Some("installed");
            installed.then(|| {
                (field("Package").unwrap_or_default().to_owned(), field("Version").unwrap_or_default().to_owned())
            })
        })
        .filter(|(name, _)| !name.is_empty())
        .collect()
}

/// Measures the tree under `root` (all but its tar.gz, which the build adds).
fn measure_tree(root: &Path) -> Result<TreeMeasurement, FullOsError> {
    let mut measured = TreeMeasurement { file_bytes: 0, block_bytes: 0, entries: 0, tar_gz_bytes: 0 };
    let mut seen_links = HashSet::new();
    let mut pending = vec![root.to_owned()];
    let round = |bytes: u64| bytes.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    while let Some(dir) = pending.pop() {
        for dirent in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let path = dirent.map_err(io_err(&dir))?.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            measured.entries += 1;
            let file_type = meta.file_type();
            if file_type.is_dir() {
                measured.block_bytes += round(meta.len().max(BLOCK_SIZE));
                pending.push(path);
            } else if file_type.is_file() {
                if meta.nlink() > 1 && !seen_links.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                measured.file_bytes += meta.len();
                measured.block_bytes += round(meta.len());
            } else if file_type.is_symlink() && meta.len() >= 60 {
                // ext4 keeps a symlink target under 60 bytes inside the inode.
                measured.block_bytes += BLOCK_SIZE;
            }
        }
    }
    Ok(measured)
}

/// A writer that only counts what it is given.
#[derive(Debug, Default)]
struct ByteCounter(u64);

impl Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The size of the tree's tar (GNU tar: it archives the device nodes boxbench's own writer refuses)
/// compressed by `gzip -6 -n` (the host's gzip: flate2 in a debug build takes minutes over 300 MB),
/// counted without being stored.
fn tar_gz_bytes(tree: &Path) -> Result<u64, FullOsError> {
    let tree_arg = tree.to_string_lossy();
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--sort=name", "-C", &tree_arg, "-cf", "-", "."])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FullOsError::MissingTool { tool: "tar".to_owned(), package: "tar", source })?;
    let tar_stderr = stderr_reader(&mut tar);
    let gzip = match tar.stdout.take() {
        Some(tar_out) => Command::new("gzip")
            .args([format!("-{MEASURE_GZIP_LEVEL}"), "-n".to_owned()])
            .stdin(Stdio::from(tar_out))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| FullOsError::MissingTool { tool: "gzip".to_owned(), package: "gzip", source }),
        None => Err(io_err(tree)(io::Error::other("tar's output was not captured"))),
    };
    let mut gzip = match gzip {
        Ok(gzip) => gzip,
        Err(err) => {
            let _ = tar.kill();
            let _ = tar.wait();
            return Err(err);
        }
    };
    let gzip_stderr = stderr_reader(&mut gzip);
    let mut counter = ByteCounter::default();
    let copied = match gzip.stdout.take() {
        Some(mut compressed) => io::copy(&mut compressed, &mut counter).map(drop),
        None => Ok(()),
    };
    let tar_status = tar.wait().map_err(io_err(tree))?;
    let gzip_status = gzip.wait().map_err(io_err(tree))?;
    copied.map_err(io_err(tree))?;
    for (step, status, stderr) in [("tar", tar_status, tar_stderr), ("gzip", gzip_status, gzip_stderr)] {
        if !status.success() {
            let tail = tail(&stderr.join().unwrap_or_default());
            return Err(FullOsError::Step { step: step.to_owned(), status, tail, missing_package: None });
        }
    }
    Ok(counter.0)
}

/// A thread collecting what `child` prints on its standard error (so a chatty child never blocks).
fn stderr_reader(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take();
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    })
}

/// Runs `tool args` and returns what it printed (both streams: some tools print their version on
/// stderr), naming `package` if the tool is not installed.
fn tool_output(tool: &str, package: &'static str, args: &[&str]) -> Result<String, FullOsError> {
    let output = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| FullOsError::MissingTool { tool: tool.to_owned(), package, source })?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(FullOsError::Step {
            step: format!("{tool} {}", args.join(" ")),
            status: output.status,
            tail: tail(&text),
            missing_package: None,
        });
    }
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// Runs one step of the build; on failure its error names the step, the last lines of its output
/// and the package apt could not find, if that was the cause.
fn run_step(step: &str, package: &'static str, command: &mut Command) -> Result<(), FullOsError> {
    let tool = command.get_program().to_string_lossy().into_owned();
    let output = command
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| FullOsError::MissingTool { tool, package, source })?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Err(FullOsError::Step {
        step: step.to_owned(),
        status: output.status,
        tail: tail(&text),
        missing_package: missing_package(&text),
    })
}

/// The last [`TAIL_LINES`] non-empty lines of `text`, joined with " / ".
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join(" / ")
}

/// The package apt said it could not find, in `output`.
fn missing_package(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let line = line.trim().strip_prefix("E: ").unwrap_or(line.trim());
        let name = if let Some(rest) = line.strip_prefix("Unable to locate package ") {
            rest.trim()
        } else if let Some(rest) = line.strip_prefix("Package '") {
            rest.split_once("' has no installation candidate")?.0
        } else if let Some(rest) = line.strip_prefix("Couldn't find any package by ") {
            rest.split_once('\'')?.1.trim_end_matches('\'')
        } else {
            return None;
        };
        Some(name.to_owned()).filter(|n| !n.is_empty())
    })
}

/// The staging directory `out/full-os/.work`: emptied when created (what is there is from an
/// interrupted build, since the builder holds the lock) and removed when dropped, but never while
/// something is mounted inside it.
#[derive(Debug)]
struct Staging(PathBuf);

impl Staging {
    fn create(path: PathBuf) -> Result<Self, FullOsError> {
        if path.exists() {
            remove_unmounted(&path)?;
        }
        fs::create_dir_all(&path).map_err(io_err(&path))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn check_unmounted(&self) -> Result<(), FullOsError> {
        match mounts_under(&self.0).into_iter().next() {
            Some(mount_point) => Err(FullOsError::StillMounted(mount_point)),
            None => Ok(()),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_unmounted(&self.0);
    }
}

/// Removes `dir` unless something is mounted at or under it.
fn remove_unmounted(dir: &Path) -> Result<(), FullOsError> {
    if let Some(mount_point) = mounts_under(dir).into_iter().next() {
        return Err(FullOsError::StillMounted(mount_point));
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_size_adds_a_quarter_and_the_journal_rounded_to_a_mib() {
        assert_eq!(disk_size_bytes(0), 64 << 20);
        let size = disk_size_bytes(364_000_000);
        assert_eq!(size % (1 << 20), 0);
        assert!(size >= 364_000_000 + 91_000_000 + (64 << 20), "{size}");
        assert!(size < 364_000_000 + 91_000_000 + (65 << 20), "{size}");
        assert_eq!(disk_size_bytes(1), 65 << 20);
        assert_eq!(inode_count(10_000), 16_024);
    }

    #[test]
    fn recipe_arguments_name_variant_packages_suite_and_target() {
        let recipe = FullOsRecipe::default();
        let args = recipe.mmdebstrap_args(Path::new("/x/tree"));
        assert_eq!(
            args,
            [
                "--mode=root",
                "--format=directory",
                "--variant=minbase",
                "--include=linux-image-cloud-amd64,systemd-sysv",
                "bookworm",
                "/x/tree"
            ]
        );
        let bare = FullOsRecipe { suite: "trixie".into(), packages: vec![] };
        assert!(!bare.mmdebstrap_args(Path::new("/t")).iter().any(|a| a.starts_with("--include")));
    }

    #[test]
    fn digest_follows_packages_and_mmdebstrap_version_not_their_order() {
        let recipe = FullOsRecipe::default();
        let base = recipe.input_digest("mmdebstrap 1.3.5");
        assert_eq!(base.len(), 64);
        let reordered = FullOsRecipe { packages: recipe.packages.iter().rev().cloned().collect(), ..recipe.clone() };
        assert_eq!(reordered.input_digest("mmdebstrap 1.3.5\n"), base);
        assert_ne!(recipe.input_digest("mmdebstrap 1.4.0"), base);
        let more = FullOsRecipe { packages: vec!["systemd-sysv".into()], ..recipe.clone() };
        assert_ne!(more.input_digest("mmdebstrap 1.3.5"), base);
        let suite = FullOsRecipe { suite: "trixie".into(), ..recipe };
        assert_ne!(suite.input_digest("mmdebstrap 1.3.5"), base);
    }

    #[test]
    fn bad_suite_and_package_names_are_refused() {
        for suite in ["", "-x", "../etc", "Bookworm", "a b", "bookworm --foo"] {
            let recipe = FullOsRecipe { suite: suite.into(), ..FullOsRecipe::default() };
            assert!(matches!(recipe.validate(), Err(FullOsError::InvalidSuite(_))), "{suite:?}");
        }
        for package in ["", "x", "-x", "a,b", "Pkg", "a b"] {
            let recipe = FullOsRecipe { packages: vec![package.into()], ..FullOsRecipe::default() };
            let err = recipe.validate().unwrap_err();
            assert!(err.to_string().contains(&format!("{package:?}")), "{err}");
        }
        FullOsRecipe::default().validate().unwrap();
        FullOsRecipe { suite: "bookworm-backports".into(), packages: vec!["g++".into(), "libc6.1".into()] }
            .validate()
            .unwrap();
    }

    #[test]
    fn mkfs_and_qemu_img_arguments() {
        let mkfs = mkfs_args(Path::new("/w/tree"), Path::new("/w/disk.raw"), 10_000);
        assert_eq!(mkfs.join(" "), "-q -F -t ext4 -b 4096 -N 16024 -L boxbench-root -d /w/tree /w/disk.raw");
        let plain = qemu_img_args(Path::new("/w/disk.raw"), Path::new("/w/disk.qcow2"), false);
        assert_eq!(plain.join(" "), "convert -f raw -O qcow2 /w/disk.raw /w/disk.qcow2");
        let compressed = qemu_img_args(Path::new("/w/disk.raw"), Path::new("/w/c.qcow2"), true);
        assert_eq!(compressed.join(" "), "convert -c -f raw -O qcow2 /w/disk.raw /w/c.qcow2");
    }

    #[test]
    fn installed_packages_come_from_dpkg_status() {
        let status = "Package: base-files\nStatus: install ok installed\nVersion: 12.4+deb12u9\n\n\
                      Package: removed\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: libc6\nStatus: install ok installed\nMulti-Arch: same\nVersion: 2.36-9\n\
                      Description: GNU C Library\n more text\n";
        assert_eq!(
            installed_packages(status),
            [("base-files".to_owned(), "12.4+deb12u9".to_owned()), ("libc6".to_owned(), "2.36-9".to_owned())]
        );
        assert!(installed_packages("").is_empty());
    }

    #[test]
    fn missing_package_is_found_in_apt_output() {
        let out = "I: running apt-get update...\nE: Unable to locate package boxbench-nope\nE: setup failed";
        assert_eq!(missing_package(out).as_deref(), Some("boxbench-nope"));
        let out = "E: Package 'oldpkg' has no installation candidate";
        assert_eq!(missing_package(out).as_deref(), Some("oldpkg"));
        let out = "E: Couldn't find any package by glob 'foo*'";
        assert_eq!(missing_package(out).as_deref(), Some("foo*"));
        assert_eq!(missing_package("E: The repository does not have a Release file."), None);
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let text = (1..=10).map(|i| format!("line {i}\n\n")).collect::<String>();
        assert_eq!(tail(&text), "line 5 / line 6 / line 7 / line 8 / line 9 / line 10");
        assert_eq!(tail("one\n"), "one");
    }

    #[test]
    fn tree_measurement_counts_hard_links_once_and_rounds_to_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), vec![1u8; 5000]).unwrap();
        fs::hard_link(root.join("sub/a"), root.join("a-link")).unwrap();
        fs::write(root.join("small"), b"hi").unwrap();
        std::os::unix::fs::symlink("short", root.join("s")).unwrap();
        std::os::unix::fs::symlink("l".repeat(80), root.join("long")).unwrap();
        nix::unistd::mkfifo(&root.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let measured = measure_tree(root).unwrap();
        assert_eq!(measured.file_bytes, 5002);
        assert_eq!(measured.entries, 7);
        // sub/ (one block), a (two blocks), small (one block), the long symlink (one block).
        assert_eq!(measured.block_bytes, 5 * BLOCK_SIZE);
    }

    #[test]
    fn tar_gz_of_a_tree_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("zeros"), vec![0u8; 1_000_000]).unwrap();
        let bytes = tar_gz_bytes(dir.path()).unwrap();
        assert!(bytes > 0 && bytes < 20_000, "{bytes}");
        let err = tar_gz_bytes(Path::new("/nonexistent/tree")).unwrap_err();
        assert!(err.to_string().contains("`tar`"), "{err}");
    }

    #[test]
    fn a_missing_tool_names_its_package_and_a_failing_step_its_output() {
        let err = run_step("frobnicate", "boxbench-frob", &mut Command::new("/nonexistent/frob")).unwrap_err();
        assert!(err.to_string().contains("install the Debian package boxbench-frob"), "{err}");
        let err = run_step(
            "mmdebstrap",
            "mmdebstrap",
            Command::new("sh").args(["-c", "echo 'E: Unable to locate package nope' >&2; exit 25"]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("full-OS disk step `mmdebstrap` failed"), "{text}");
        assert!(text.contains("apt has no package nope in the suite"), "{text}");
        assert!(text.contains("Unable to locate package nope"), "{text}");
    }

    #[test]
    fn staging_is_removed_but_not_through_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".work");
        fs::create_dir_all(path.join("stale")).unwrap();
        let staging = Staging::create(path.clone()).unwrap();
        assert!(!path.join("stale").exists());
        fs::write(staging.path().join("f"), b"x").unwrap();
        drop(staging);
        assert!(!path.exists());
    }

    #[test]
    fn a_tree_with_a_mount_inside_is_not_removed() {
        boxbench_testkit::require!(nix::unistd::geteuid().is_root(), "mounting a tmpfs needs root");
        use nix::mount::{MntFlags, MsFlags, mount, umount2};
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("tree/proc");
        fs::create_dir_all(&inner).unwrap();
        mount(Some("tmpfs"), &inner, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        fs::write(inner.join("kept"), b"x").unwrap();
        let result = remove_unmounted(&dir.path().join("tree"));
        let kept = inner.join("kept").exists();
        umount2(&inner, MntFlags::empty()).unwrap();
        assert!(matches!(result, Err(FullOsError::StillMounted(ref p)) if *p == inner), "{result:?}");
        assert!(kept, "a file on the mount was removed");
        remove_unmounted(&dir.path().join("tree")).unwrap();
        assert!(!dir.path().join("tree").exists());
    }

    #[test]
    fn nothing_built_means_no_sizes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(built(dir.path()).is_none());
        assert!(sizes(dir.path()).unwrap().is_empty());
    }
}
