//! The cgroups a runtime makes beside the instance's memory cgroup.
//!
//! Given a cgroup path under the instance cgroup, a runtime (crun, runc, podman, docker) creates that
//! path in every mounted hierarchy on a v1 or hybrid host (cpu, pids, devices, the v2 `unified`
//! mount...), and on deleting the container removes only the leaf. The instance cgroup's own
//! [`boxbench_core::cgroup::InstanceCgroup`] removes the memory hierarchy's copy; this module removes
//! the others once the runtime is done, so no directory is left behind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use boxbench_core::cgroup::remove_tree_patiently;

/// Where the cgroup hierarchies are mounted.
const CGROUP_MOUNT_ROOT: &str = "/sys/fs/cgroup";

/// A cgroup directory in another hierarchy that could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum HierarchyError {
    /// rmdir failed (most likely a process is still in it).
    #[error("removing cgroup {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    /// A cgroup directory or its join file could not be made or opened.
    #[error("creating cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
}

/// Every hierarchy mounted under /sys/fs/cgroup other than the one at `except` (the memory
/// hierarchy, which the instance cgroup manages itself): the mount itself on a pure v2 host, else
/// each v1 controller's mount and the hybrid v2 one. Symbolic links (`cpu` → `cpu,cpuacct`) are
/// skipped so each hierarchy is visited once.
fn hierarchies_except(except: &Path) -> Vec<PathBuf> {
    let root = Path::new(CGROUP_MOUNT_ROOT);
    if root.join("cgroup.controllers").exists() {
        return [root.to_owned()].into_iter().filter(|p| p != except).collect();
    }
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| p != except)
        .collect()
}

/// The instance's cgroup at `relative` made in every hierarchy except `memory_root`, each with its
/// join file open (`tasks` on v1, `cgroup.procs` on v2, as [`boxbench_core::boundary::JoinRule`]
/// picks): for a tool that makes its container's cgroups under its own cgroup in every hierarchy
/// (systemd-nspawn, LXC with `lxc.cgroup.relative`), so they land inside the instance and go with it.
/// Made before the clock; the child writes `0` to each file between fork and exec.
pub fn create_beside_memory(memory_root: &Path, relative: &Path) -> Result<Vec<fs::File>, HierarchyError> {
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    let mut files = Vec::new();
    for hierarchy in hierarchies_except(memory_root) {
        let dir = hierarchy.join(relative);
        let err = |source| HierarchyError::Create { path: dir.clone(), source };
        fs::create_dir_all(&dir).map_err(err)?;
        inherit_cpuset(&hierarchy, relative).map_err(err)?;
        let join = dir.join(boxbench_core::boundary::JoinRule::for_dir(&dir).file_name());
        files.push(fs::OpenOptions::new().write(true).open(&join).map_err(err)?);
    }
    Ok(files)
}

/// A new cgroup v1 cpuset has no CPUs and no memory nodes, and joining it fails (`ENOSPC`): each
/// level of `relative` made in the cpuset hierarchy gets its parent's, as systemd and LXC do.
fn inherit_cpuset(hierarchy: &Path, relative: &Path) -> io::Result<()> {
    let mut parent = hierarchy.to_owned();
    for component in relative.components() {
        let dir = parent.join(component);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let path = dir.join(file);
            if path.exists() && fs::read_to_string(&path)?.trim().is_empty() {
                fs::write(&path, fs::read_to_string(parent.join(file))?.trim())?;
            }
        }
        parent = dir;
    }
    Ok(())
}

/// Removes `relative` (a path such as `/boxbench/crun-123-0`, relative to each hierarchy's root) and
/// everything below it from every hierarchy except `memory_root`, deepest first; then its parent
/// `/boxbench` wherever that is left empty. Errors name the first directory that stayed.
pub fn remove_beside_memory(memory_root: &Path, relative: &Path) -> Result<(), HierarchyError> {
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    let mut first_error = None;
    for hierarchy in hierarchies_except(memory_root) {
        let dir = hierarchy.join(relative);
        if !dir.exists() {
            continue;
        }
        if let Err(source) = remove_tree_patiently(&dir, || {}) {
            first_error.get_or_insert(HierarchyError::Remove { path: dir.clone(), source });
        }
        if let Some(parent) = dir.parent().filter(|p| *p != hierarchy) {
            // The shared parent goes when this was its last instance; another instance keeps it busy.
            let _ = fs::remove_dir(parent);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Instance cgroups whose name starts with `prefix` in the `boxbench` directory of any hierarchy,
/// memory included (what a check for leftovers looks for, e.g. `crun-<pid>-`).
pub fn instance_dirs_with_prefix(prefix: &str) -> Vec<PathBuf> {
    hierarchies_except(Path::new(""))
        .into_iter()
        .filter_map(|h| fs::read_dir(h.join("boxbench")).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .collect()
}
