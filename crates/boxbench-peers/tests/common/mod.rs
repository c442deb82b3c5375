//! Fixtures shared by the peer tests: a container root filesystem and bundle (boxbench's built image
//! when the images helper has made it, else a busybox one made here), what the tests need, and leak
//! checks.
#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use boxbench_core::ImagePaths;

/// Tests of one binary run one at a time: their leak checks look at host-wide state.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub use boxbench_testkit::is_root;

/// Container images: the project's built bundle if present, otherwise a busybox root filesystem and
/// bundle in a temporary directory (kept alive by the returned guard).
pub struct ContainerImages {
    pub paths: ImagePaths,
    /// The root filesystem as a tar archive (for podman/docker import).
    pub rootfs_tar: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// [`ContainerImages`], or why this host has none.
pub fn container_images() -> Result<ContainerImages, String> {
    let built = project_root().join("guest-images/out");
    if built.join("bundle/config.json").is_file() && built.join("rootfs.tar").is_file() {
        return Ok(ContainerImages {
            paths: ImagePaths {
                bundle: Some(built.join("bundle")),
                rootfs: Some(built.join("bundle/rootfs")),
                ..ImagePaths::default()
            },
            rootfs_tar: built.join("rootfs.tar"),
            _dir: None,
        });
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(PathBuf::from).find(|p| p.is_file()).ok_or(
        "no busybox to build a root filesystem (Debian package busybox-static), nor a built bundle in \
         guest-images/out (boxbench images build)",
    )?;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    for sub in ["bin", "proc", "dev", "sys", "tmp", "boxbench/workloads"] {
        fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "uname", "cat", "true", "false"] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let scripts = [
        ("hello", "#!/bin/sh\necho BOXBENCH_READY\n"),
        ("idle", "#!/bin/sh\necho BOXBENCH_READY\nexec sleep 2147483647\n"),
        ("uname", "#!/bin/sh\nuname -r\necho BOXBENCH_READY\n"),
    ];
    for (name, text) in scripts {
        let path = rootfs.join("boxbench/workloads").join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["/boxbench/workloads/hello"],
                    "env": ["PATH=/bin"], "cwd": "/"},
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "boxbench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    });
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let rootfs_tar = dir.path().join("rootfs.tar");
    let status =
        std::process::Command::new("tar").arg("-cf").arg(&rootfs_tar).arg("-C").arg(&rootfs).arg(".").status().unwrap();
    assert!(status.success(), "tar of the test rootfs failed");
    Ok(ContainerImages {
        paths: ImagePaths { bundle: Some(bundle), rootfs: Some(rootfs), ..ImagePaths::default() },
        rootfs_tar,
        _dir: Some(dir),
    })
}

/// Processes whose command line contains `needle` (a container id, an image name).
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(raw) = fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Instance cgroups of this test process for `backend`, in any hierarchy.
pub fn leftover_cgroups(backend: &str) -> Vec<PathBuf> {
    boxbench_peers::hierarchies::instance_dirs_with_prefix(&format!("{backend}-{}-", std::process::id()))
}
