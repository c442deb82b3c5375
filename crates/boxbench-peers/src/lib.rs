//! Real container and VM tools driven behind boxbench's [`boxbench_core::Launcher`], so that the
//! tools people use instead of boxbench's own launchers are measured exactly like them: the same
//! per-instance memory cgroup, the same console capture and marker timing, the same record.
//!
//! Every backend runs its tool's process inside the instance's cgroup from before the tool executes
//! ([`process`]), nests the container's or VM's cgroup under it where the tool makes one, reports the
//! phases it cannot observe as `None`, and removes everything it made (containers, images, state
//! directories, cgroups in every hierarchy) on every path. [`probe_all`] says which tools this host
//! has, for `boxbench doctor`.

pub mod calibration;
pub mod docker;
pub mod docker_api;
pub mod engine;
pub mod engine_api;
pub mod firecracker;
pub mod full_os_boot;
pub mod hierarchies;
pub mod oci_runtime;
pub mod podman;
pub mod probe;
pub mod process;
pub mod qemu;
pub mod qemu_full_os;
pub mod run;
pub mod system_container;
pub mod tool;

pub use calibration::{CalibrationLauncher, HarnessPath};
pub use docker::{DaemonPlan, DockerLauncher, DockerOptions, DockerVersions, daemon_plan, docker_versions};
pub use docker_api::{API_BACKEND, CLIENT_BACKEND, ClientStartupLauncher, DockerApiLauncher, TappedCliLauncher};
pub use firecracker::{FirecrackerLauncher, FirecrackerOptions};
pub use oci_runtime::{OciRuntime, OciRuntimeLauncher, RUNSC_PLATFORM, YOUKI_VERSION};
pub use podman::{PodmanLauncher, PodmanOptions};
pub use probe::{PeerStatus, probe_all};
pub use qemu::{Accel, GuestKind, Machine, PvmCompat, QemuLauncher, QemuOptions};
pub use system_container::{SystemContainer, SystemContainerLauncher};

use boxbench_core::{LaunchError, Launcher};

/// The backend names this crate provides, as `--backend` takes them.
pub const BACKENDS: [&str; 11] =
    ["crun", "runc", "youki", "runsc", "podman", "docker", "qemu-microvm", "qemu-q35", "firecracker", "nspawn", "lxc"];

/// The launcher of the backend called `name` (one of [`BACKENDS`]) with its default options (docker:
/// an already running daemon only). Engines import a root filesystem on its first `prepare`.
pub fn launcher_by_name(name: &str) -> Result<Box<dyn Launcher>, LaunchError> {
    match name {
        "crun" => Ok(Box::new(OciRuntimeLauncher::new(OciRuntime::Crun)?)),
        "runc" => Ok(Box::new(OciRuntimeLauncher::new(OciRuntime::Runc)?)),
        "youki" => Ok(Box::new(OciRuntimeLauncher::new(OciRuntime::Youki)?)),
        "runsc" => Ok(Box::new(OciRuntimeLauncher::new(OciRuntime::Runsc)?)),
        "podman" => Ok(Box::new(PodmanLauncher::new(PodmanOptions::default())?)),
        "docker" => Ok(Box::new(DockerLauncher::new(DockerOptions::default())?)),
        "qemu-microvm" => {
            Ok(Box::new(QemuLauncher::new(QemuOptions { machine: Machine::Microvm, ..Default::default() })?))
        }
        "qemu-q35" => Ok(Box::new(QemuLauncher::new(QemuOptions { machine: Machine::Q35, ..Default::default() })?)),
        "firecracker" => Ok(Box::new(FirecrackerLauncher::new(FirecrackerOptions::default())?)),
        "nspawn" => Ok(Box::new(SystemContainerLauncher::new(SystemContainer::Nspawn)?)),
        "lxc" => Ok(Box::new(SystemContainerLauncher::new(SystemContainer::Lxc)?)),
        other => Err(LaunchError::InvalidSpec(format!(
            "unknown peer backend `{other}` (expected one of {})",
            BACKENDS.join(", ")
        ))),
    }
}
