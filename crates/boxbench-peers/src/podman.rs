//! podman, the daemonless engine: `podman run --rm` with its default runtime (crun) and conmon.
//!
//! Each launcher keeps its own podman storage (`--root`, `--runroot`, `--tmpdir` in a temporary
//! directory), so the image it imports and everything podman records live and die with the launcher
//! and nothing touches the host's podman state. Settings this host needs: `--cgroup-manager cgroupfs`
//! (no systemd), `--events-backend file` (no journald), and `--ulimit nofile=1024:1024 --ulimit
//! nproc=1024:1024` because root here lacks CAP_SYS_RESOURCE and podman's default limits exceed the
//! hard ones. On a hybrid cgroup host the client runs in a private mount namespace with the cgroup v2
//! mount detached, since crun (which podman runs) refuses hybrid mode. conmon's cgroup goes under
//! the `--cgroup-parent`, so conmon is charged to the instance too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use boxbench_core::cgroup::{CgroupHost, CgroupMode};
use boxbench_core::{Instance, InstanceSpec, LaunchError, Launcher};

use crate::engine::{EngineClient, EngineError, EngineInstance, ImportedImages, container_name_prefix};
use crate::oci_runtime::{check_workload, resolve_rootfs};
use crate::process::ChildSetup;
use crate::tool::{Tool, ToolError};

/// The flags every `podman run` gets on this kind of host (see the module documentation).
const RUN_FLAGS: [&str; 6] = ["--pull", "never", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];

/// A podman backend that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    /// podman is missing or unusable.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The launcher's storage directory could not be made.
    #[error("podman storage directory in {dir}: {source}")]
    Storage { dir: PathBuf, source: std::io::Error },
    /// Importing or removing an image failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How to run podman.
#[derive(Debug, Clone, Default)]
pub struct PodmanOptions {
    /// The podman binary (default: `podman` on `PATH`).
    pub binary: Option<PathBuf>,
}

/// podman as a boxbench backend.
#[derive(Debug)]
pub struct PodmanLauncher {
    tool: Tool,
    client: Arc<EngineClient>,
    cgroups: CgroupHost,
    // Field order matters: the images are removed (through podman) before the storage is deleted.
    images: ImportedImages,
    storage: tempfile::TempDir,
}

impl PodmanLauncher {
    /// Finds podman and sets up a private storage for it.
    pub fn new(options: PodmanOptions) -> Result<Self, LaunchError> {
        let unsupported = |e: PodmanError| LaunchError::Unsupported(e.to_string());
        let tool = match &options.binary {
            Some(path) => Tool::at("podman", path),
            None => Tool::find("podman", "podman"),
        }
        .map_err(|e| unsupported(e.into()))?;
        let cgroups = CgroupHost::detect()?;
        let storage = tempfile::Builder::new()
            .prefix("boxbench-podman-")
            .tempdir()
            .map_err(|source| LaunchError::backend(PodmanError::Storage { dir: std::env::temp_dir(), source }))?;
        let dir = storage.path();
        let global_args = [
            "--root".into(),
            dir.join("root").into_os_string(),
            "--runroot".into(),
            dir.join("run").into_os_string(),
            "--tmpdir".into(),
            dir.join("tmp").into_os_string(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
        ]
        .to_vec();
        let setup = if cgroups.mode == CgroupMode::Hybrid {
            ChildSetup::PrivateMountsWithoutUnifiedCgroup
        } else {
            ChildSetup::Plain
        };
        let client = Arc::new(EngineClient { name: "podman", binary: tool.path.clone(), global_args, setup });
        let images = ImportedImages::new(Arc::clone(&client), dir.to_owned());
        Ok(Self { tool, client, cgroups, images, storage })
    }

    /// The podman binary and version in use.
    pub fn tool(&self) -> &Tool {
        &self.tool
    }

    /// Containers of this process that podman still knows (what a clean run leaves none of).
    pub fn leftover_containers(&self) -> Result<Vec<String>, LaunchError> {
        self.client.containers_named(&container_name_prefix()).map_err(LaunchError::backend)
    }

    /// The images in this launcher's storage.
    pub fn image_names(&self) -> Result<Vec<String>, LaunchError> {
        self.client.image_names().map_err(LaunchError::backend)
    }

    /// The launcher's private podman storage.
    pub fn storage_dir(&self) -> &Path {
        self.storage.path()
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = vec![
            format!(
                "{} run --rm with its default runtime and conmon, private storage, cgroupfs manager, \
                 --network none; ready_ms and userspace_ms are not observable from outside podman",
                self.tool.label()
            ),
            "memory.peak_bytes covers the podman client, conmon and the container; pss_bytes sums them at the \
             marker"
                .to_owned(),
            "image imported once per launcher from a tar of the spec's root filesystem (not counted)".to_owned(),
        ];
        if self.client.setup == ChildSetup::PrivateMountsWithoutUnifiedCgroup {
            notes.push(
                "podman ran in a private mount namespace with /sys/fs/cgroup/unified detached (hybrid host: \
                 its runtime crun refuses hybrid mode)"
                    .to_owned(),
            );
        }
        notes
    }
}

impl Launcher for PodmanLauncher {
    fn name(&self) -> &str {
        "podman"
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let rootfs = resolve_rootfs(spec, "podman")?;
        check_workload(&rootfs, &spec.workload)?;
        let image = self.images.image_for(&rootfs).map_err(|e| LaunchError::backend(PodmanError::from(e)))?;
        let instance =
            EngineInstance::prepare(&self.client, &self.cgroups, spec, &image, &RUN_FLAGS, None, self.notes())?;
        Ok(Box::new(instance))
    }
}
