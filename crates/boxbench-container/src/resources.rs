//! `linux.resources` beyond memory: the cpu controller (`shares`, `quota`, `period`) and the pids
//! controller (`limit`), on either cgroup version.
//!
//! The memory limit is the launch boundary's (`boxbench_core::boundary`), written in the instance
//! cgroup like every backend's. On cgroup v2 the cpu and pids files are in that same cgroup, once
//! the controllers are enabled for boxbench's cgroups. On v1 (and hybrid hosts, whose controllers
//! are v1) each controller is its own hierarchy: the instance gets a cgroup of the same name in the
//! cpu and pids hierarchies, whose `tasks` files the container's init joins beside the memory one,
//! and which are removed after it.

use boxbench_core::cgroup::{CgroupHost, InstanceCgroup, MemoryVersion, remove_tree_patiently};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::syscalls::MAX_CONTROLLERS;

/// Where v1 hierarchies are mounted, one directory per controller.
const V1_ROOT: &str = "/sys/fs/cgroup";

/// The directory of boxbench's cgroups in each hierarchy (as the memory one's).
const BOXBENCH_DIR: &str = "boxbench";

/// The CFS period the kernel uses when a quota comes without one, in microseconds.
const DEFAULT_CPU_PERIOD_US: u64 = 100_000;

/// A cgroup file that could not be written or a cgroup not made.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A cgroup file or directory failed.
    #[error("linux.resources: {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The host has no such controller.
    #[error("linux.resources.{controller}: the host has no {controller} cgroup controller")]
    NoController { controller: &'static str },
}

/// The controllers set here besides memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    /// CPU time: weight and bandwidth.
    Cpu,
    /// Number of tasks.
    Pids,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// `linux.resources.cpu`: what boxbench honours of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuLimits {
    /// Relative weight (v1 `cpu.shares`, 2 to 262144).
    pub shares: Option<u64>,
    /// Microseconds of CPU per period (negative: no limit).
    pub quota: Option<i64>,
    /// The period, in microseconds.
    pub period: Option<u64>,
}

/// The cpu and pids limits of an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `linux.resources.cpu`.
    pub cpu: CpuLimits,
    /// `linux.resources.pids.limit` (zero or negative: no limit).
    pub pids: Option<i64>,
}

/// cgroup v2's `cpu.weight` (1 to 10000) for v1 `cpu.shares` (2 to 262144), the conversion runc
/// and crun use, so a bundle gets the same weight from every runtime.
fn weight_of_shares(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

impl Limits {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// The files to write, per controller, for a cgroup of `version`: (controller, file, value),
    /// in the order they are written.
    pub fn files(&self, version: MemoryVersion) -> Vec<(Controller, &'static str, String)> {
        let mut files = Vec::new();
        let cpu = self.cpu;
        let unlimited = |quota: i64| quota < 0;
        match version {
            MemoryVersion::V2 => {
                if let Some(shares) = cpu.shares {
                    files.push((Controller::Cpu, "cpu.weight", weight_of_shares(shares).to_string()));
                }
                if cpu.quota.is_some() || cpu.period.is_some() {
                    let quota = match cpu.quota {
                        Some(quota) if !unlimited(quota) => quota.to_string(),
                        _ => "max".to_owned(),
                    };
                    let period = cpu.period.unwrap_or(DEFAULT_CPU_PERIOD_US);
                    files.push((Controller::Cpu, "cpu.max", format!("{quota} {period}")));
                }
            }
            MemoryVersion::V1 => {
                if let Some(shares) = cpu.shares {
                    files.push((Controller::Cpu, "cpu.shares", shares.to_string()));
                }
                // The period first: a quota is checked against the period in place.
                if let Some(period) = cpu.period {
                    files.push((Controller::Cpu, "cpu.cfs_period_us", period.to_string()));
                }
                if let Some(quota) = cpu.quota {
                    let quota = if unlimited(quota) { "-1".to_owned() } else { quota.to_string() };
                    files.push((Controller::Cpu, "cpu.cfs_quota_us", quota));
                }
            }
        }
        if let Some(limit) = self.pids {
            let value = if limit > 0 { limit.to_string() } else { "max".to_owned() };
            files.push((Controller::Pids, "pids.max", value));
        }
        files
    }

    fn controllers(&self) -> Vec<Controller> {
        let mut controllers = Vec::new();
        for (controller, _, _) in self.files(MemoryVersion::V1) {
            if !controllers.contains(&controller) {
                controllers.push(controller);
            }
        }
        controllers
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ResourceError + '_ {
    move |source| ResourceError::Io { path: path.to_owned(), source }
}

/// An instance's cpu and pids limits, written; on v1, its cgroups in those hierarchies (removed
/// when dropped) and their `tasks` files open for the init to join.
#[derive(Debug, Default)]
pub struct ControllerCgroups {
    made: Vec<PathBuf>,
    joins: Vec<File>,
}

impl ControllerCgroups {
    /// Writes `limits` for `instance` (before the clock, in prepare).
    pub fn apply(host: &CgroupHost, instance: &InstanceCgroup, limits: &Limits) -> Result<Self, ResourceError> {
        let mut applied = Self::default();
        if limits.is_empty() {
            return Ok(applied);
        }
        match host.memory_version {
            MemoryVersion::V2 => {
                let root = host.memory_root.as_path();
                let parent = instance.path().parent().unwrap_or(root);
                for controller in limits.controllers() {
                    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                    if !available.split_whitespace().any(|c| c == controller.name()) {
                        return Err(ResourceError::NoController { controller: controller.name() });
                    }
                    for dir in [root, parent] {
                        let control = dir.join("cgroup.subtree_control");
                        std::fs::write(&control, format!("+{}", controller.name())).map_err(io_error(&control))?;
                    }
                }
                for (_, file, value) in limits.files(MemoryVersion::V2) {
                    let path = instance.path().join(file);
                    std::fs::write(&path, value).map_err(io_error(&path))?;
                }
            }
            MemoryVersion::V1 => {
                let name = instance.path().file_name().unwrap_or_default();
                for controller in limits.controllers().into_iter().take(MAX_CONTROLLERS) {
                    let hierarchy = Path::new(V1_ROOT).join(controller.name());
                    if !hierarchy.join("tasks").exists() {
                        return Err(ResourceError::NoController { controller: controller.name() });
                    }
                    let dir = hierarchy.join(BOXBENCH_DIR).join(name);
                    std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                    applied.made.push(dir.clone());
                    for (_, file, value) in limits.files(MemoryVersion::V1).iter().filter(|(c, _, _)| *c == controller)
                    {
                        let path = dir.join(file);
                        std::fs::write(&path, value).map_err(io_error(&path))?;
                    }
                    let tasks = dir.join("tasks");
                    applied.joins.push(OpenOptions::new().write(true).open(&tasks).map_err(io_error(&tasks))?);
                }
            }
        }
        Ok(applied)
    }

    /// The `tasks` files the init writes to join (v1 only; empty on v2).
    pub fn join_files(&self) -> &[File] {
        &self.joins
    }

    /// The v1 cgroups made, for tests that check nothing is left.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.made
    }
}

impl Drop for ControllerCgroups {
    fn drop(&mut self) {
        self.joins.clear();
        for dir in self.made.drain(..).rev() {
            // The container was killed with the memory cgroup's removal; its last tasks may still
            // be exiting. Drop runs on error paths too, which report their own error.
            let _ = remove_tree_patiently(&dir, || {});
            // The shared parent goes with its last instance; a concurrent one keeps it.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { cpu: CpuLimits { shares: Some(1024), quota: Some(50_000), period: Some(100_000) }, pids: Some(16) }
    }

    #[test]
    fn v2_files_use_weight_and_max() {
        let files = limits().files(MemoryVersion::V2);
        let shown: Vec<(&str, &str)> = files.iter().map(|(_, f, v)| (*f, v.as_str())).collect();
        assert_eq!(shown, [("cpu.weight", "39"), ("cpu.max", "50000 100000"), ("pids.max", "16")]);
        let unlimited = Limits { cpu: CpuLimits { quota: Some(-1), ..Default::default() }, pids: Some(0) };
        let shown: Vec<String> = unlimited.files(MemoryVersion::V2).into_iter().map(|(_, _, v)| v).collect();
        assert_eq!(shown, ["max 100000", "max"]);
    }

    #[test]
    fn v1_files_write_the_period_before_the_quota() {
        let files = limits().files(MemoryVersion::V1);
        let shown: Vec<(&str, &str)> = files.iter().map(|(_, f, v)| (*f, v.as_str())).collect();
        assert_eq!(
            shown,
            [
                ("cpu.shares", "1024"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("pids.max", "16")
            ]
        );
        assert_eq!(limits().controllers(), [Controller::Cpu, Controller::Pids]);
        assert!(Limits::default().is_empty());
    }

    #[test]
    fn shares_convert_to_weight_as_runc_does() {
        assert_eq!(weight_of_shares(2), 1);
        assert_eq!(weight_of_shares(262_144), 10_000);
        assert_eq!(weight_of_shares(1024), 39);
    }
}
