//! A busybox root filesystem and OCI bundle built in a temporary directory from the host's static
//! busybox, with boxbench's named workloads, for the container tests.

#![allow(dead_code)] // each test binary uses its own part of the fixture

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use boxbench_container::ContainerLauncher;

use serde_json::{Value, json};

/// Where busybox-static installs busybox.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// The applets the tests and workloads use.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "dd", "ls", "hostname", "uname", "sleep", "true", "false", "id", "env", "pwd", "touch",
    "test", "head", "wc", "readlink", "stat", "grep", "ps", "mount", "umount",
];

/// The text of `/boxbench/sentinel` in every fixture rootfs.
pub const SENTINEL: &str = "boxbench container fixture rootfs";

/// A bundle directory `bundle/` with `config.json` and `rootfs/`, in a temporary directory.
#[derive(Debug)]
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// Builds the fixture, or says why this host cannot (it has no busybox).
    pub fn build() -> Result<Self, String> {
        if !Path::new(HOST_BUSYBOX).exists() {
            return Err(format!("{HOST_BUSYBOX} is missing (Debian package busybox-static)"));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let fixture = Self { dir };
        let rootfs = fixture.rootfs();
        for sub in ["bin", "proc", "dev", "sys", "tmp", "mnt", "boxbench/workloads"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("rootfs dir");
        }
        std::fs::copy(HOST_BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in APPLETS {
            symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
        }
        let workloads = [
            ("hello", "#!/bin/sh\necho BOXBENCH_READY\n"),
            ("idle", "#!/bin/sh\necho BOXBENCH_READY\nexec sleep 3600\n"),
            ("uname", "#!/bin/sh\nuname -r\necho BOXBENCH_READY\n"),
        ];
        for (name, script) in workloads {
            fixture.write_executable(&format!("boxbench/workloads/{name}"), script);
        }
        std::fs::write(rootfs.join("boxbench/sentinel"), SENTINEL).expect("sentinel");
        fixture.write_config(&fixture.config());
        Ok(fixture)
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }

    /// Writes an executable file at `relative` inside the rootfs.
    pub fn write_executable(&self, relative: &str, content: &str) {
        let path = self.rootfs().join(relative);
        std::fs::write(&path, content).expect("write executable");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// The config.json the images helper writes, running the `uname` workload so a test can tell
    /// the bundle's args from the spec's.
    pub fn config(&self) -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/boxbench/workloads/uname"],
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/"
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "boxbench",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
        })
    }

    pub fn write_config(&self, config: &Value) {
        let text = serde_json::to_string_pretty(config).expect("serialise config");
        std::fs::write(self.bundle().join("config.json"), text).expect("write config.json");
    }
}

/// The tests of one binary run one at a time: "nothing left behind" is checked against the whole
/// process.
static SERIAL: Mutex<()> = Mutex::new(());

/// The launcher and a fixture, with this test's turn taken.
pub struct Env {
    pub launcher: ContainerLauncher,
    pub fixture: Fixture,
    _serial: MutexGuard<'static, ()>,
}

/// The launcher and a fixture, this test's turn taken; or why this host cannot run the tests.
pub fn env() -> Result<Env, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the container backend needs root".to_owned());
    }
    let serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let fixture = Fixture::build()?;
    let launcher = ContainerLauncher::new().expect("container launcher as root");
    Ok(Env { launcher, fixture, _serial: serial })
}
