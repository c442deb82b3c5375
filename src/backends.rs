//! Which backends boxbench offers, how each is constructed from the command line, and which images it
//! runs from when the user names none (the defaults are built on first use).

use std::path::PathBuf;

use boxbench_core::host::KvmFlavour;
use boxbench_core::{ImagePaths, LaunchError, Launcher};
use boxbench_images::{ImageBuilder, ImageError};
use boxbench_microvm::disk::DiskConfig;
use boxbench_microvm::{MicroVmLauncher, MicroVmOptions};
use boxbench_peers::{
    Accel, CalibrationLauncher, DockerLauncher, DockerOptions, FirecrackerLauncher, FirecrackerOptions, Machine,
    OciRuntime, OciRuntimeLauncher, PodmanLauncher, PodmanOptions, PvmCompat, QemuLauncher, QemuOptions,
    SystemContainer, SystemContainerLauncher,
};
use clap::{Args, ValueEnum};

/// A backend that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The micro-VM kernel could not be built.
    #[error("building the micro-VM kernel: {0}")]
    Kernel(#[from] boxbench_images::microvm_kernel::MicroVmKernelError),
    /// The backend refused its options or the host cannot run it.
    #[error("{backend}: {source}")]
    Launcher { backend: &'static str, source: LaunchError },
    /// The default images could not be built.
    #[error("building the default guest images: {0}")]
    Images(#[from] ImageError),
}

/// The `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum BackendChoice {
    /// boxbench's own namespace container launcher.
    Container,
    /// boxbench's own KVM micro-VM monitor.
    Microvm,
    /// crun running the OCI bundle.
    Crun,
    /// runc running the OCI bundle.
    Runc,
    /// youki running the OCI bundle.
    Youki,
    /// gVisor's runsc running the OCI bundle (an application kernel in user space).
    Runsc,
    /// podman running the rootfs imported as an image.
    Podman,
    /// Docker running the rootfs imported as an image.
    Docker,
    /// QEMU's microvm machine.
    QemuMicrovm,
    /// QEMU's q35 machine.
    QemuQ35,
    /// Firecracker (only where a binary is given or on PATH).
    Firecracker,
    /// systemd-nspawn booting the full-OS disk's tree (a system container).
    Nspawn,
    /// LXC booting the full-OS disk's tree (a system container).
    Lxc,
}

impl BackendChoice {
    /// Every backend, containers first.
    pub const ALL: [BackendChoice; 13] = [
        BackendChoice::Container,
        BackendChoice::Crun,
        BackendChoice::Runc,
        BackendChoice::Youki,
        BackendChoice::Runsc,
        BackendChoice::Podman,
        BackendChoice::Docker,
        BackendChoice::Nspawn,
        BackendChoice::Lxc,
        BackendChoice::Microvm,
        BackendChoice::QemuMicrovm,
        BackendChoice::QemuQ35,
        BackendChoice::Firecracker,
    ];

    /// The name `--backend` takes and records carry.
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Container => "container",
            BackendChoice::Microvm => "microvm",
            BackendChoice::Crun => "crun",
            BackendChoice::Runc => "runc",
            BackendChoice::Youki => "youki",
            BackendChoice::Runsc => "runsc",
            BackendChoice::Podman => "podman",
            BackendChoice::Docker => "docker",
            BackendChoice::QemuMicrovm => "qemu-microvm",
            BackendChoice::QemuQ35 => "qemu-q35",
            BackendChoice::Firecracker => "firecracker",
            BackendChoice::Nspawn => "nspawn",
            BackendChoice::Lxc => "lxc",
        }
    }

    /// The OCI runtime this backend drives directly, if it is one.
    pub fn oci_runtime(self) -> Option<OciRuntime> {
        match self {
            BackendChoice::Crun => Some(OciRuntime::Crun),
            BackendChoice::Runc => Some(OciRuntime::Runc),
            BackendChoice::Youki => Some(OciRuntime::Youki),
            BackendChoice::Runsc => Some(OciRuntime::Runsc),
            _ => None,
        }
    }

    /// True for the backends whose container runs on a kernel of its own in user space (gVisor).
    pub fn is_application_kernel(self) -> bool {
        self.oci_runtime().is_some_and(OciRuntime::is_application_kernel)
    }

    /// The system container manager this backend drives, if it is one: it boots the full-OS disk's
    /// tree, never the busybox root filesystem.
    pub fn system_container(self) -> Option<SystemContainer> {
        match self {
            BackendChoice::Nspawn => Some(SystemContainer::Nspawn),
            BackendChoice::Lxc => Some(SystemContainer::Lxc),
            _ => None,
        }
    }

    /// True for the backends that boot a virtual machine.
    pub fn is_vm(self) -> bool {
        matches!(
            self,
            BackendChoice::Microvm | BackendChoice::QemuMicrovm | BackendChoice::QemuQ35 | BackendChoice::Firecracker
        )
    }
}

/// The `--guest` values: what a VM backend boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuestChoice {
    /// boxbench's own minimal guest: checks the boot protocol, prints the marker, reboots (the VM floor).
    Boxbench,
    /// A Linux kernel with boxbench's busybox initramfs running the workload.
    Linux,
    /// boxbench's full-OS disk (Debian with systemd), which qemu-q35 boots through SeaBIOS and its boot
    /// loader.
    FullOs,
}

/// The `--kernel` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// boxbench's micro-VM kernel (tinyconfig plus a fragment, with the opt-in kvm_pvm patch).
    MicroVm,
    /// Debian's cloud kernel (`linux-image-cloud-amd64`).
    DebianCloud,
    /// A kernel file of the user's.
    Path(PathBuf),
}

fn parse_kernel(text: &str) -> Result<KernelChoice, String> {
    Ok(match text {
        "microvm" => KernelChoice::MicroVm,
        "debian-cloud" => KernelChoice::DebianCloud,
        path => KernelChoice::Path(PathBuf::from(path)),
    })
}

/// The `--accel` values of the QEMU backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    /// KVM where it can run the guest, TCG otherwise (Linux guests on a kvm_pvm host).
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG: guest code emulated.
    Tcg,
}

/// Options that select a backend's images and settings.
#[derive(Debug, Clone, Args)]
pub struct BackendOptions {
    /// A root filesystem directory to run (containers); default: the built busybox rootfs.
    #[arg(long, conflicts_with = "bundle")]
    pub rootfs: Option<PathBuf>,
    /// An OCI runtime bundle directory (`config.json` + its root) to run (container, crun, runc, youki,
    /// runsc).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// What a VM boots; default: boxbench's own guest on hosts without hardware virtualisation (such
    /// as kvm_pvm), Linux on VMX/SVM hosts.
    #[arg(long, value_enum)]
    pub guest: Option<GuestChoice>,
    /// The VM kernel: `microvm` (boxbench's micro-VM kernel, built from Debian's linux-source; the
    /// default Linux guest), `debian-cloud` (Debian's cloud kernel, the distribution comparison), or the
    /// path of a bzImage or ELF vmlinux; default for `--guest boxbench`: the guest's own ELF.
    #[arg(long, value_parser = parse_kernel)]
    pub kernel: Option<KernelChoice>,
    /// The VM initramfs; default: none for boxbench's guest, the busybox initramfs for Linux.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Arguments appended to the VM's kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Boot a Linux guest in boxbench's VMM even on a kvm_pvm host, where it is refused by default.
    #[arg(long)]
    pub force: bool,
    /// A raw disk image the VM gets as a virtio-blk disk (`/dev/vda`), locked while the VM runs
    /// (microvm backend).
    #[arg(long, value_name = "PATH")]
    pub disk: Option<PathBuf>,
    /// The guest may only read the disk (virtio-blk's read-only feature: writes fail in the guest).
    #[arg(long, requires = "disk")]
    pub disk_read_only: bool,
    /// The guest device the kernel mounts as its root filesystem (e.g. /dev/vda) instead of running
    /// the busybox initramfs: `root=DEVICE` on the command line, no initramfs unless --initrd.
    #[arg(long, value_name = "DEVICE", requires = "disk")]
    pub root: Option<String>,
    /// The QEMU accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelChoice,
    /// The Firecracker binary (default: `firecracker` on PATH).
    #[arg(long, value_name = "PATH")]
    pub firecracker: Option<PathBuf>,
    /// Start a private dockerd when no Docker daemon runs (stopped afterwards).
    #[arg(long)]
    pub start_dockerd: bool,
    /// The Docker daemon to use, as docker's `-H` (default: $DOCKER_HOST, else
    /// unix:///var/run/docker.sock).
    #[arg(long, value_name = "URL", env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// microvm with boxbench's own guest: when the guest prints its marker, write a snapshot of the
    /// VM (guest memory, vCPU, LAPIC and serial state) into DIR; the guest then carries on.
    #[arg(long, value_name = "DIR", conflicts_with = "restore")]
    pub snapshot_at_marker: Option<PathBuf>,
    /// microvm with boxbench's own guest: start each VM from the snapshot in DIR (its memory mapped
    /// copy-on-write from the snapshot) instead of booting; the guest carries on to its exit.
    #[arg(long, value_name = "DIR")]
    pub restore: Option<PathBuf>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            rootfs: None,
            bundle: None,
            guest: None,
            kernel: None,
            initrd: None,
            cmdline: String::new(),
            force: false,
            disk: None,
            disk_read_only: false,
            root: None,
            accel: AccelChoice::Auto,
            firecracker: None,
            start_dockerd: false,
            docker_host: None,
            snapshot_at_marker: None,
            restore: None,
        }
    }
}

impl BackendOptions {
    /// The guest a VM backend boots: the user's choice, else what this host runs usefully.
    pub fn guest(&self) -> GuestChoice {
        self.guest.unwrap_or(if KvmFlavour::detect().is_hardware() {
            GuestChoice::Linux
        } else {
            GuestChoice::Boxbench
        })
    }

    /// True when boxbench's VMM boots its micro-VM kernel on a kvm_pvm host, with the compatibility
    /// parameters of the kernel's opt-in patch.
    pub fn pvm_compat(&self) -> bool {
        self.guest() == GuestChoice::Linux
            && matches!(self.kernel, None | Some(KernelChoice::MicroVm))
            && KvmFlavour::detect() == KvmFlavour::Pvm
    }

    fn peer_guest(&self) -> boxbench_peers::GuestKind {
        match self.guest() {
            GuestChoice::Boxbench => boxbench_peers::GuestKind::Boxbench,
            GuestChoice::Linux => boxbench_peers::GuestKind::Linux,
            GuestChoice::FullOs => boxbench_peers::GuestKind::FullOs,
        }
    }

    fn extra_kernel_args(&self) -> Vec<String> {
        self.cmdline.split_whitespace().map(str::to_owned).collect()
    }
}

/// Constructs the launcher of `choice`.
pub fn launcher(choice: BackendChoice, options: &BackendOptions) -> Result<Box<dyn Launcher>, BackendError> {
    let wrap = |source: LaunchError| BackendError::Launcher { backend: choice.name(), source };
    let qemu = |machine: Machine| {
        let accel = match options.accel {
            AccelChoice::Auto => Accel::Auto,
            AccelChoice::Kvm => Accel::Kvm,
            AccelChoice::Tcg => Accel::Tcg,
        };
        QemuLauncher::new(QemuOptions {
            machine,
            accel,
            guest: options.peer_guest(),
            binary: None,
            extra_kernel_args: options.extra_kernel_args(),
            pvm_compat: options.pvm_compat().then(|| PvmCompat {
                cmdline: boxbench_images::microvm_kernel::kvm_pvm_cmdline().to_owned(),
                memory_bytes: boxbench_images::microvm_kernel::KVM_PVM_MEMORY_BYTES,
            }),
        })
    };
    if options.disk.is_some() && choice != BackendChoice::Microvm {
        return Err(wrap(LaunchError::InvalidSpec(format!(
            "--disk: only the microvm backend takes a disk, not {}",
            choice.name()
        ))));
    }
    if options.guest() == GuestChoice::FullOs && choice.is_vm() && choice != BackendChoice::QemuQ35 {
        return Err(wrap(LaunchError::InvalidSpec(format!(
            "--guest full-os: {} does not boot the full-OS disk (qemu-q35 does; nspawn and lxc boot its tree)",
            choice.name()
        ))));
    }
    let launcher: Box<dyn Launcher> = match choice {
        BackendChoice::Container => Box::new(
            boxbench_container::ContainerLauncher::new().map_err(|e| wrap(LaunchError::Unsupported(e.to_string())))?,
        ),
        BackendChoice::Microvm => Box::new(MicroVmLauncher::new(MicroVmOptions {
            guest: match options.guest() {
                GuestChoice::Boxbench => boxbench_microvm::GuestKind::Boxbench,
                // boxbench's micro-VM kernel carries the opt-in kvm_pvm compatibility patch: the VMM
                // may boot it on a kvm_pvm host, with the patch's parameters.
                GuestChoice::Linux if matches!(options.kernel, None | Some(KernelChoice::MicroVm)) => {
                    boxbench_microvm::GuestKind::MicroVmLinux
                }
                GuestChoice::Linux | GuestChoice::FullOs => boxbench_microvm::GuestKind::Linux,
            },
            force: options.force,
            kernel: None,
            initrd: None,
            cmdline_extra: options.cmdline.clone(),
            disks: options
                .disk
                .iter()
                .map(|path| DiskConfig { path: path.clone(), read_only: options.disk_read_only })
                .collect(),
            root: options.root.clone(),
            snapshot_at_marker: options.snapshot_at_marker.clone(),
            restore: options.restore.clone(),
        })),
        BackendChoice::Crun => Box::new(OciRuntimeLauncher::new(OciRuntime::Crun).map_err(wrap)?),
        BackendChoice::Runc => Box::new(OciRuntimeLauncher::new(OciRuntime::Runc).map_err(wrap)?),
        BackendChoice::Youki => Box::new(OciRuntimeLauncher::new(OciRuntime::Youki).map_err(wrap)?),
        BackendChoice::Runsc => Box::new(OciRuntimeLauncher::new(OciRuntime::Runsc).map_err(wrap)?),
        BackendChoice::Podman => Box::new(PodmanLauncher::new(PodmanOptions::default()).map_err(wrap)?),
        BackendChoice::Docker => Box::new(
            DockerLauncher::new(DockerOptions {
                start_dockerd: options.start_dockerd,
                host: options.docker_host.clone(),
                ..DockerOptions::default()
            })
            .map_err(wrap)?,
        ),
        BackendChoice::QemuMicrovm => Box::new(qemu(Machine::Microvm).map_err(wrap)?),
        BackendChoice::QemuQ35 => Box::new(qemu(Machine::Q35).map_err(wrap)?),
        BackendChoice::Firecracker => Box::new(
            FirecrackerLauncher::new(FirecrackerOptions {
                binary: options.firecracker.clone(),
                guest: options.peer_guest(),
            })
            .map_err(wrap)?,
        ),
        BackendChoice::Nspawn => Box::new(SystemContainerLauncher::new(SystemContainer::Nspawn).map_err(wrap)?),
        BackendChoice::Lxc => Box::new(SystemContainerLauncher::new(SystemContainer::Lxc).map_err(wrap)?),
    };
    Ok(launcher)
}

/// The harness calibration of `choice` ([`boxbench_peers::calibration`]): the default container root
/// filesystem's busybox printing the marker through that backend's harness path.
pub fn calibration(choice: BackendChoice, options: &BackendOptions) -> Result<CalibrationLauncher, BackendError> {
    let launcher_error = |source| BackendError::Launcher { backend: choice.name(), source };
    let rootfs = image_paths(BackendChoice::Container, options)?.rootfs.ok_or_else(|| {
        launcher_error(LaunchError::InvalidSpec("no container root filesystem to calibrate with".to_owned()))
    })?;
    CalibrationLauncher::for_backend(choice.name(), &rootfs.join("bin/busybox")).map_err(launcher_error)
}

/// The images an instance of `choice` runs from: the user's, else the built defaults (built, and
/// Debian's kernel fetched, on first use).
pub fn image_paths(choice: BackendChoice, options: &BackendOptions) -> Result<ImagePaths, BackendError> {
    let builder = ImageBuilder::default_dirs();
    if choice.is_vm() && options.guest() == GuestChoice::FullOs {
        let built = builder.build_full_os_disk(&crate::images::ProgressLines::new(false))?;
        return Ok(ImagePaths { disk: Some(built.bootable), ..ImagePaths::default() });
    }
    if choice.is_vm() {
        let (kernel, initrd) = match options.guest() {
            GuestChoice::Boxbench => {
                let kernel = match &options.kernel {
                    Some(KernelChoice::Path(path)) => path.clone(),
                    _ => boxbench_guest::elf_path().to_owned(),
                };
                (kernel, options.initrd.clone())
            }
            GuestChoice::Linux | GuestChoice::FullOs => {
                let progress = crate::images::ProgressLines::new(false);
                let kernel = match options.kernel.clone().unwrap_or(KernelChoice::MicroVm) {
                    KernelChoice::Path(path) => path,
                    KernelChoice::DebianCloud => builder.fetch_debian_cloud_kernel(&progress)?.vmlinuz,
                    KernelChoice::MicroVm => crate::images::build_microvm_kernel(&progress)?.vmlinux,
                };
                let initrd = match &options.initrd {
                    Some(initrd) => Some(initrd.clone()),
                    // The kernel mounts its root from the disk and runs the disk's init.
                    None if options.root.is_some() => None,
                    None => Some({
                        let built = crate::images::build_default(false)?;
                        // Inflating a gzip initramfs costs about a minute of emulated kernel code
                        // under kvm_pvm: a VMM booting the patched kernel under KVM there (ours, or
                        // QEMU asked for KVM) hands it the cpio as it is.
                        let under_pvm_kvm = choice == BackendChoice::Microvm || options.accel == AccelChoice::Kvm;
                        if under_pvm_kvm && options.pvm_compat() { built.initramfs_cpio } else { built.initramfs_gz }
                    }),
                };
                (kernel, initrd)
            }
        };
        return Ok(ImagePaths { kernel: Some(kernel), initrd, ..ImagePaths::default() });
    }
    if choice.system_container().is_some() {
        let rootfs = match &options.rootfs {
            Some(rootfs) => rootfs.clone(),
            None => builder.build_full_os_disk(&crate::images::ProgressLines::new(false))?.rootfs,
        };
        return Ok(ImagePaths { rootfs: Some(rootfs), ..ImagePaths::default() });
    }
    if options.rootfs.is_some() || options.bundle.is_some() {
        return Ok(ImagePaths {
            rootfs: options.rootfs.clone(),
            bundle: options.bundle.clone(),
            ..ImagePaths::default()
        });
    }
    let built = crate::images::build_default(false)?;
    Ok(match choice {
        // The OCI runtimes run the bundle as crun and runc users do; the others take the rootfs.
        _ if choice.oci_runtime().is_some() => {
            ImagePaths { rootfs: Some(built.rootfs), bundle: Some(built.bundle), ..ImagePaths::default() }
        }
        _ => ImagePaths { rootfs: Some(built.rootfs), ..ImagePaths::default() },
    })
}
