//! Per-instance memory cgroups on cgroup v2, v1 and the hybrid of both.
//!
//! Every instance, whatever its backend, runs in a cgroup of its own so that its memory is measured
//! the same way: the peak of everything its processes charged (`memory.peak` on v2,
//! `memory.max_usage_in_bytes` on v1). Hosts differ: pure v2 (most current distributions), legacy v1,
//! and hybrid (v1 controllers plus a v2 hierarchy at `/sys/fs/cgroup/unified`, as on boxbench's own
//! build hosts). The mode is detected from what is mounted, never assumed, and the memory controller is
//! used wherever it is attached.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The directory under the memory hierarchy's root that holds boxbench's instance cgroups.
const BOXBENCH_DIR: &str = "boxbench";

/// How long removing a cgroup may wait for its killed processes to be reaped by the kernel (which
/// frees a killed task's membership when it is reaped: for a reparented daemon such as conmon, that
/// happens asynchronously).
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

/// Which cgroup hierarchies the host has mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    /// cgroup v2 only, at the mount root.
    Unified,
    /// cgroup v1 controllers plus a v2 hierarchy at `unified/`.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupMode::Unified => "v2 (unified)",
            CgroupMode::Hybrid => "hybrid (v1 controllers, v2 at unified/)",
            CgroupMode::Legacy => "v1 (legacy)",
        })
    }
}

/// The cgroup version whose memory controller boxbench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryVersion {
    /// `memory.max`, `memory.peak`, `memory.events`.
    V2,
    /// `memory.limit_in_bytes`, `memory.max_usage_in_bytes`, `memory.oom_control`.
    V1,
}

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No memory controller is mounted where boxbench looked.
    #[error("no cgroup memory controller under {0} (neither v2 nor v1 memory is mounted)")]
    NoMemoryController(PathBuf),
    /// A cgroup file or directory could not be read, written or created.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The host refused a memory limit.
    #[error("memory limit of {bytes} bytes refused by {path}: {source}")]
    LimitRefused { bytes: u64, path: PathBuf, source: io::Error },
    /// The cgroup still had processes when it had to be removed.
    #[error("cgroup {0} still busy after its processes were killed")]
    Busy(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io { path: path.to_owned(), source }
}

/// The host's cgroup layout: its mode and where the memory controller lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupHost {
    /// What is mounted.
    pub mode: CgroupMode,
    /// The memory controller's version.
    pub memory_version: MemoryVersion,
    /// The root of the hierarchy that has the memory controller.
    pub memory_root: PathBuf,
}

impl CgroupHost {
    /// Detects the layout under `/sys/fs/cgroup`.
    pub fn detect() -> Result<Self, CgroupError> {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    /// Detects the layout of cgroup hierarchies mounted under `mount_root`.
    pub fn detect_at(mount_root: &Path) -> Result<Self, CgroupError> {
        let v2_has_memory = |dir: &Path| {
            fs::read_to_string(dir.join("cgroup.controllers"))
                .map(|c| c.split_whitespace().any(|name| name == "memory"))
                .unwrap_or(false)
        };
        let v1_memory = mount_root.join("memory");
        let has_v1_memory = v1_memory.join("memory.limit_in_bytes").exists();
        let unified = mount_root.join("unified");
        let (mode, v2_root) = if mount_root.join("cgroup.controllers").exists() {
            (CgroupMode::Unified, mount_root.to_owned())
        } else if unified.join("cgroup.controllers").exists() {
            (CgroupMode::Hybrid, unified)
        } else {
            (CgroupMode::Legacy, mount_root.to_owned())
        };
        let (memory_version, memory_root) = if mode != CgroupMode::Legacy && v2_has_memory(&v2_root) {
            (MemoryVersion::V2, v2_root)
        } else if has_v1_memory {
            (MemoryVersion::V1, v1_memory)
        } else {
            return Err(CgroupError::NoMemoryController(mount_root.to_owned()));
        };
        Ok(Self { mode, memory_version, memory_root })
    }

    /// The directory that holds boxbench's instance cgroups.
    pub fn boxbench_root(&self) -> PathBuf {
        self.memory_root.join(BOXBENCH_DIR)
    }

    /// Leftover instance cgroups (what a clean host has none of).
    pub fn leftover_instances(&self) -> Vec<PathBuf> {
        fs::read_dir(self.boxbench_root())
            .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default()
    }
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// The cgroup of one instance; removed (after killing anything left in it) when dropped.
#[derive(Debug)]
pub struct InstanceCgroup {
    host: CgroupHost,
    path: PathBuf,
    /// Where processes are placed: the cgroup itself, or its leaf for a nesting runtime.
    process_dir: PathBuf,
    removed: bool,
}

impl InstanceCgroup {
    /// Creates a fresh cgroup for an instance of `backend`.
    pub fn create(host: &CgroupHost, backend: &str) -> Result<Self, CgroupError> {
        let root = host.boxbench_root();
        let seq = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{backend}-{}-{seq}", std::process::id()));
        // The last instance to go removes the shared root (see `remove_now`); a concurrent instance
        // can remove it between this one making it and making its own cgroup in it: make it again.
        let mut attempts = 0;
        loop {
            let made = prepare_root(host, &root).and_then(|()| fs::create_dir(&path).map_err(io_err(&path)));
            match made {
                Ok(()) => return Ok(Self { host: host.clone(), process_dir: path.clone(), path, removed: false }),
                Err(CgroupError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && attempts < ROOT_RACE_ATTEMPTS =>
                {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The cgroup of an instance whose tool (an OCI runtime) nests its container's cgroup in it. On
    /// cgroup v2 a cgroup with processes cannot give its children controllers (the "no internal
    /// processes" rule), so the tool's processes go into the leaf `NAME/runtime` and the runtime's
    /// container cgroup beside it; the instance's memory peak covers both. On v1 it is
    /// [`create`](Self::create).
    pub fn create_for_nesting_runtime(host: &CgroupHost, backend: &str) -> Result<Self, CgroupError> {
        let mut cgroup = Self::create(host, backend)?;
        if host.memory_version == MemoryVersion::V2 {
            enable_memory_controller(&cgroup.path)?;
            let leaf = cgroup.path.join(RUNTIME_LEAF);
            fs::create_dir(&leaf).map_err(io_err(&leaf))?;
            cgroup.process_dir = leaf;
        }
        Ok(cgroup)
    }

    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory processes are placed in: the cgroup itself, or its leaf for a nesting runtime.
    pub fn process_dir(&self) -> &Path {
        &self.process_dir
    }

    /// The `cgroup.procs` file processes are placed through (the leaf's, for a nesting runtime).
    pub fn procs_path(&self) -> PathBuf {
        self.process_dir.join("cgroup.procs")
    }

    /// The cgroup's path relative to its hierarchy's root (what runtimes take as `cgroupsPath`).
    pub fn relative_path(&self) -> PathBuf {
        Path::new("/").join(self.path.strip_prefix(&self.host.memory_root).unwrap_or(&self.path))
    }

    /// The memory controller's version for this cgroup.
    pub fn memory_version(&self) -> MemoryVersion {
        self.host.memory_version
    }

    /// Limits the memory of everything in the cgroup to `bytes`; past it the kernel reclaims and then
    /// OOM-kills.
    pub fn set_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        let (limit_file, swap_file) = match self.host.memory_version {
            MemoryVersion::V2 => ("memory.max", "memory.swap.max"),
            MemoryVersion::V1 => ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"),
        };
        let path = self.path.join(limit_file);
        fs::write(&path, bytes.to_string()).map_err(|source| CgroupError::LimitRefused {
            bytes,
            path: path.clone(),
            source,
        })?;
        // Without swap accounting the limit already holds; where it exists, forbid swapping past it so
        // the limit means resident memory, as a VM's fixed guest memory does.
        let swap = self.path.join(swap_file);
        if swap.exists() {
            let value = match self.host.memory_version {
                MemoryVersion::V2 => "0".to_owned(),
                MemoryVersion::V1 => bytes.to_string(),
            };
            fs::write(&swap, value).map_err(|source| CgroupError::LimitRefused {
                bytes,
                path: swap.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The highest memory charge the cgroup has seen, in bytes.
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match self.host.memory_version {
            MemoryVersion::V2 => "memory.peak",
            MemoryVersion::V1 => "memory.max_usage_in_bytes",
        };
        read_u64(&self.path.join(file))
    }

    /// True if the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let file = match self.host.memory_version {
            MemoryVersion::V2 => "memory.events",
            MemoryVersion::V1 => "memory.oom_control",
        };
        fs::read_to_string(self.path.join(file))
            .ok()
            .and_then(|text| keyed_value(&text, "oom_kill"))
            .is_some_and(|n| n > 0)
    }

    /// Every process in the cgroup and its descendants.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        collect_pids(&self.path, &mut pids);
        pids
    }

    /// Sends SIGKILL to every process in the cgroup and its descendants.
    pub fn kill_all(&self) {
        let cgroup_kill = self.path.join("cgroup.kill");
        if cgroup_kill.exists() && fs::write(&cgroup_kill, "1").is_ok() {
            return;
        }
        for pid in self.pids() {
            // The process may already be gone: nothing to do then.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Kills what is left in the cgroup and removes it, with any child cgroups a runtime made.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> Result<(), CgroupError> {
        if self.removed {
            return Ok(());
        }
        let path = self.path.clone();
        remove_tree_patiently(&path, || self.kill_all()).map_err(|_| CgroupError::Busy(path))?;
        self.removed = true;
        // The shared parent goes too when this was its last instance; a concurrent instance keeps it.
        let _ = fs::remove_dir(self.host.boxbench_root());
        Ok(())
    }
}

impl Drop for InstanceCgroup {
    fn drop(&mut self) {
        // Drop runs on error paths; the error there is already being reported.
        let _ = self.remove_now();
    }
}

/// The leaf a nesting runtime's processes run in (see [`InstanceCgroup::create_for_nesting_runtime`]).
const RUNTIME_LEAF: &str = "runtime";

/// How often `InstanceCgroup::create` makes the shared root again after a concurrent removal.
const ROOT_RACE_ATTEMPTS: u32 = 100;

/// Makes boxbench's shared cgroup directory, with the memory controller enabled for its children.
fn prepare_root(host: &CgroupHost, root: &Path) -> Result<(), CgroupError> {
    if host.memory_version == MemoryVersion::V2 {
        enable_memory_controller(&host.memory_root)?;
        ensure_dir(root)?;
        enable_memory_controller(root)
    } else {
        ensure_dir(root)
    }
}

fn ensure_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::Io { path: path.to_owned(), source: e }),
    }
}

/// On v2 a controller is usable in a cgroup only when its parent lists it in `subtree_control`.
fn enable_memory_controller(dir: &Path) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).map_err(io_err(&control))?;
    if enabled.split_whitespace().any(|c| c == "memory") {
        return Ok(());
    }
    fs::write(&control, "+memory").map_err(io_err(&control))
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&entry.path(), pids);
            }
        }
    }
}

/// Removes cgroup directory `dir` and its child cgroups, trying again for [`REMOVE_PATIENCE`] while
/// it stays busy, with `before_each_try` first (e.g. killing what is left in it). The last error if
/// it never went.
pub fn remove_tree_patiently(dir: &Path, mut before_each_try: impl FnMut()) -> io::Result<()> {
    let give_up = Instant::now() + REMOVE_PATIENCE;
    loop {
        before_each_try();
        match remove_tree(dir) {
            Ok(()) => return Ok(()),
            Err(_) if Instant::now() < give_up => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(e),
        }
    }
}

/// Removes a cgroup directory after its child cgroups (a cgroup's files are not removable; rmdir of
/// the directory takes them).
fn remove_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed cgroup file (`key value` per line).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key)).then(|| words.next()?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_mount(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        dir
    }

    #[test]
    fn pure_v2_uses_the_root_hierarchy() {
        let mount = fake_mount(&[("cgroup.controllers", "cpu io memory pids\n")]);
        let host = CgroupHost::detect_at(mount.path()).unwrap();
        assert_eq!(host.mode, CgroupMode::Unified);
        assert_eq!(host.memory_version, MemoryVersion::V2);
        assert_eq!(host.memory_root, mount.path());
    }

    #[test]
    fn hybrid_with_memory_on_v1_uses_v1() {
        let mount = fake_mount(&[
            ("unified/cgroup.controllers", "\n"),
            ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
        ]);
        let host = CgroupHost::detect_at(mount.path()).unwrap();
        assert_eq!(host.mode, CgroupMode::Hybrid);
        assert_eq!(host.memory_version, MemoryVersion::V1);
        assert_eq!(host.memory_root, mount.path().join("memory"));
    }

    #[test]
    fn hybrid_with_memory_on_v2_uses_unified() {
        let mount = fake_mount(&[("unified/cgroup.controllers", "memory pids\n")]);
        let host = CgroupHost::detect_at(mount.path()).unwrap();
        assert_eq!((host.mode, host.memory_version), (CgroupMode::Hybrid, MemoryVersion::V2));
        assert_eq!(host.memory_root, mount.path().join("unified"));
    }

    #[test]
    fn legacy_v1() {
        let mount = fake_mount(&[("memory/memory.limit_in_bytes", "1\n"), ("cpu/cpu.shares", "1024\n")]);
        let host = CgroupHost::detect_at(mount.path()).unwrap();
        assert_eq!((host.mode, host.memory_version), (CgroupMode::Legacy, MemoryVersion::V1));
    }

    #[test]
    fn no_memory_controller_is_an_error_naming_the_mount() {
        let mount = fake_mount(&[("cpu/cpu.shares", "1024\n")]);
        let err = CgroupHost::detect_at(mount.path()).unwrap_err();
        assert!(err.to_string().contains(&mount.path().display().to_string()), "{err}");
    }

    #[test]
    fn oom_kill_counts_are_read_from_flat_keyed_files() {
        assert_eq!(keyed_value("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", "oom_kill"), Some(1));
        assert_eq!(keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", "oom_kill"), Some(0));
        assert_eq!(keyed_value("oom_kill_disable 0\n", "oom_kill"), None);
    }
}
