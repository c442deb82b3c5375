//! `boxbench svm-host`: a boxbench command run inside an L1 host whose CPU — AMD-V with nested
//! paging included — QEMU's TCG emulates. On hosts without VMX/SVM (these machines' /dev/kvm is
//! kvm_pvm, their cgroups hybrid) it is the way to run what every real user runs: boxbench's VMM
//! booting a stock Linux kernel under hardware-assisted KVM, on a pure cgroup v2 host.
//!
//! This crate owns the L1: what goes into it ([`payload`]), its init ([`init`]), and booting it
//! ([`boot`]). The L1 is Debian's cloud kernel (already fetched for the guests) with its
//! `kvm`/`kvm_amd` modules and an initramfs holding busybox, boxbench, the peers' binaries with
//! their libraries and firmware, and the built guest images, each at its host path; the initramfs
//! is cached by a hash of those inputs.

pub mod boot;
pub mod init;
pub mod payload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use boxbench_images::{DebianKernel, L1InitramfsError};

pub use boot::{BootError, BootOutcome, BootSettings};
pub use payload::{PayloadError, PayloadSources};

/// The smallest and largest L1 memory accepted, in MiB: the initramfs alone is about 100 MB and is
/// held twice while the init moves it into a tmpfs; TCG needs no more than the host can give.
pub const MEMORY_MIB_RANGE: (u32, u32) = (1024, 16384);
/// The most vCPUs an L1 gets: each is a host thread of TCG.
pub const MAX_CPUS: u8 = 8;

/// An svm-host run that could not be set up or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SvmHostError {
    /// A setting is out of range.
    #[error("{setting}: {reason}")]
    Setting { setting: &'static str, reason: String },
    /// QEMU is not installed.
    #[error("{0} not found (install the Debian package qemu-system-x86)")]
    NoQemu(PathBuf),
    /// The payload could not be gathered.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The initramfs could not be written.
    #[error("building the L1 initramfs: {0}")]
    Initramfs(#[from] L1InitramfsError),
    /// The L1 did not run the command to its end.
    #[error(transparent)]
    Boot(#[from] BootError),
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct SvmHostRequest {
    /// The L1's vCPUs.
    pub cpus: u8,
    /// The L1's memory in MiB.
    pub memory_mib: u32,
    /// The whole run's deadline.
    pub timeout: Duration,
    /// The deadline for the L1 to reach its init.
    pub boot_timeout: Duration,
    /// How long the L1's heartbeat may be silent before the L1 counts as stopped.
    pub stall_timeout: Duration,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// Host files copied into the L1's working directory before the command runs (e.g. a disk
    /// image); they come back with everything else the command leaves there.
    pub files: Vec<PathBuf>,
}

/// The longest file name `--file` carries: QEMU's fw_cfg names are at most 55 bytes, and
/// [`init::FILES_FW_CFG_DIR`] and a slash come first.
pub const MAX_FILE_NAME_LEN: usize = 55 - init::FILES_FW_CFG_DIR.len() - 1;

/// A checked request.
#[derive(Debug, Clone)]
pub struct SvmHostConfig {
    request: SvmHostRequest,
}

impl TryFrom<SvmHostRequest> for SvmHostConfig {
    type Error = SvmHostError;

    fn try_from(request: SvmHostRequest) -> Result<Self, Self::Error> {
        let setting = |setting: &'static str, reason: String| SvmHostError::Setting { setting, reason };
        if request.cpus == 0 || request.cpus > MAX_CPUS {
            return Err(setting("--cpus", format!("{} is out of range (1 to {MAX_CPUS})", request.cpus)));
        }
        let (low, high) = MEMORY_MIB_RANGE;
        if !(low..=high).contains(&request.memory_mib) {
            return Err(setting("--memory", format!("{} MiB is out of range ({low} to {high})", request.memory_mib)));
        }
        if request.timeout.is_zero() {
            return Err(setting("--timeout", "must be positive".to_owned()));
        }
        if request.boot_timeout.is_zero() {
            return Err(setting("--boot-timeout", "must be positive".to_owned()));
        }
        if request.stall_timeout < boot::MIN_STALL_TIMEOUT {
            return Err(setting(
                "--stall-timeout",
                format!(
                    "must be at least {} s (the heartbeat comes every few seconds)",
                    boot::MIN_STALL_TIMEOUT.as_secs()
                ),
            ));
        }
        if !request.qemu.is_file() {
            return Err(SvmHostError::NoQemu(request.qemu));
        }
        let mut names = std::collections::BTreeSet::new();
        for file in &request.files {
            let bad = |reason: &str| setting("--file", format!("{}: {reason}", file.display()));
            if !file.is_file() {
                return Err(bad("not a regular file"));
            }
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.is_empty() || name.len() > MAX_FILE_NAME_LEN || name.contains(',') {
                return Err(bad(&format!("its name must be 1 to {MAX_FILE_NAME_LEN} bytes of UTF-8 without a comma")));
            }
            if !names.insert(name.to_owned()) {
                return Err(bad("another --file has the same name"));
            }
        }
        Ok(Self { request })
    }
}

/// A prepared L1: its kernel and initramfs.
#[derive(Debug, Clone)]
pub struct L1Image {
    /// The kernel the L1 boots.
    pub kernel: DebianKernel,
    /// The initramfs.
    pub initramfs: PathBuf,
    /// Whether the initramfs was written now (not taken from the cache).
    pub built_now: bool,
    /// The payload's file bytes.
    pub payload_bytes: u64,
    /// The guest-images directory it carries, at its host path (the inner command is told it).
    pub images_dir: PathBuf,
}

/// Gathers `sources` into the cached L1 initramfs under `images_out`.
pub fn prepare(sources: &PayloadSources, images_out: &Path) -> Result<L1Image, SvmHostError> {
    let payload = payload::assemble(sources)?;
    let (initramfs, built_now) = boxbench_images::build_l1_initramfs(images_out, &payload)?;
    Ok(L1Image {
        kernel: sources.kernel.clone(),
        initramfs,
        built_now,
        payload_bytes: payload.file_bytes(),
        images_dir: sources.images_dir.clone(),
    })
}

impl SvmHostConfig {
    /// Boots `image`, runs `program args...` inside it with its console streamed to `console`, and
    /// brings back what it wrote in its working directory into `out_dir`.
    pub fn run(
        &self,
        image: &L1Image,
        program: &Path,
        args: &[String],
        out_dir: &Path,
        console: &mut dyn std::io::Write,
    ) -> Result<BootOutcome, SvmHostError> {
        let settings = BootSettings {
            qemu: self.request.qemu.clone(),
            kernel: image.kernel.vmlinuz.clone(),
            initramfs: image.initramfs.clone(),
            cpus: self.request.cpus,
            memory_mib: self.request.memory_mib,
            boot_timeout: self.request.boot_timeout,
            timeout: self.request.timeout,
            stall_timeout: self.request.stall_timeout,
            files: self.request.files.clone(),
        };
        Ok(boot::run(
            &settings,
            &init::command_script(program, args, &image.images_dir, self.request.timeout.as_secs()),
            out_dir,
            console,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SvmHostRequest {
        SvmHostRequest {
            cpus: 2,
            memory_mib: 4096,
            timeout: Duration::from_secs(600),
            boot_timeout: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(120),
            qemu: PathBuf::from("/bin/sh"),
            files: Vec::new(),
        }
    }

    #[test]
    fn settings_out_of_range_are_named() {
        let cases: [(SvmHostRequest, &str); 6] = [
            (SvmHostRequest { cpus: 0, ..request() }, "--cpus: 0 is out of range (1 to 8)"),
            (SvmHostRequest { memory_mib: 64, ..request() }, "--memory: 64 MiB is out of range (1024 to 16384)"),
            (SvmHostRequest { timeout: Duration::ZERO, ..request() }, "--timeout: must be positive"),
            (SvmHostRequest { boot_timeout: Duration::ZERO, ..request() }, "--boot-timeout: must be positive"),
            (
                SvmHostRequest { stall_timeout: Duration::from_secs(5), ..request() },
                "--stall-timeout: must be at least 30 s (the heartbeat comes every few seconds)",
            ),
            (
                SvmHostRequest { qemu: PathBuf::from("/nonexistent/qemu"), ..request() },
                "/nonexistent/qemu not found (install the Debian package qemu-system-x86)",
            ),
        ];
        for (bad, message) in cases {
            assert_eq!(SvmHostConfig::try_from(bad).unwrap_err().to_string(), message);
        }
        let missing = SvmHostRequest { files: vec![PathBuf::from("/nonexistent/disk.img")], ..request() };
        assert_eq!(
            SvmHostConfig::try_from(missing).unwrap_err().to_string(),
            "--file: /nonexistent/disk.img: not a regular file"
        );
        let twice = SvmHostRequest { files: vec![PathBuf::from("/bin/sh"), PathBuf::from("/usr/bin/sh")], ..request() };
        assert!(SvmHostConfig::try_from(twice).unwrap_err().to_string().contains("the same name"));
        assert!(SvmHostConfig::try_from(request()).is_ok());
    }
}
