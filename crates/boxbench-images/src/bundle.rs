//! The OCI runtime bundle: `config.json` beside the `rootfs/` directory. The configuration is the
//! small subset of the runtime spec that boxbench's own container launcher parses and that crun and
//! runc run as is: the hello workload as root, a read-only root, fresh proc/sysfs and a tmpfs `/dev`,
//! and its own PID, network, IPC, UTS and mount namespaces. Launchers replace `process.args` with the
//! workload they run.

use std::path::{Path, PathBuf};

use boxbench_core::Workload;
use serde_json::{Value, json};

/// The directory of the bundle's root filesystem, relative to the bundle (`root.path`).
pub const ROOTFS_DIR: &str = "rootfs";

/// The `PATH` every boxbench workload runs with.
pub const WORKLOAD_PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/// The bundle's configuration could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct BundleError {
    path: PathBuf,
    source: std::io::Error,
}

/// The runtime configuration of the bundle, running `workload`.
pub fn runtime_config(workload: &Workload) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": workload.argv(),
            "env": [WORKLOAD_PATH, "TERM=xterm"],
            "cwd": "/"
        },
        "root": {"path": ROOTFS_DIR, "readonly": true},
        "hostname": "boxbench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"]
            }
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"},
                {"type": "network"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"}
            ]
        }
    })
}

/// Writes `config.json` (running the hello workload) into the bundle directory `bundle`.
pub(crate) fn write_config(bundle: &Path) -> Result<PathBuf, BundleError> {
    let path = bundle.join("config.json");
    let mut text = serde_json::to_string_pretty(&runtime_config(&Workload::Hello))
        .map_err(|e| BundleError { path: path.clone(), source: e.into() })?;
    text.push('\n');
    crate::write_atomically(&path, text.as_bytes()).map_err(|source| BundleError { path: path.clone(), source })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_as_an_oci_runtime_spec() {
        let value = runtime_config(&Workload::Idle);
        let spec: oci_spec::runtime::Spec = serde_json::from_value(value).unwrap();
        assert_eq!(spec.version(), "1.0.2");
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &vec!["/boxbench/workloads/idle".to_owned()]);
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("rootfs"));
        assert_eq!(root.readonly(), Some(true));
        assert_eq!(spec.mounts().as_ref().unwrap().len(), 3);
        assert_eq!(spec.linux().as_ref().unwrap().namespaces().as_ref().unwrap().len(), 5);
    }
}
