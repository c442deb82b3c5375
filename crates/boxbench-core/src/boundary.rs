//! The launch boundary: the per-instance set-up every backend does before its clock starts, the one
//! rule by which the launched process joins its cgroup, and where the clock starts — one home, so
//! boxbench's own launchers and the peers are measured from the same point after the same work.
//!
//! Before the clock (in a backend's `prepare`): the instance cgroup is created (with the runtime leaf
//! for an OCI runtime that nests its container's cgroup), its memory limit written where the backend
//! limits it there, and its join file opened. The clock starts ([`LaunchBoundary::start`])
//! immediately before the launched process (the container's init, the VMM child, the tool) is forked.
//! That process moves itself into the cgroup between fork and exec by writing `0` to the opened join
//! file ([`join_writing_task`]), so its whole launch is charged to the instance. The clock stops for
//! `exit_ms` once the instance has exited, its console is drained and its cgroup removed.

use std::fs::{File, OpenOptions};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cgroup::{CgroupError, CgroupHost, InstanceCgroup};
use crate::clock::Timeline;

/// Where every backend's clock starts and stops, for reports.
pub const CLOCK_DESCRIPTION: &str = "Every launch, whatever its backend, is timed from the same point: its instance cgroup \
    is created and its join file opened before the clock (in prepare); the clock starts just before the launched process \
    (the container's init, the VMM child, the tool) is forked, and that process joins the cgroup by writing 0 to \
    `tasks` (cgroup v1) or `cgroup.procs` (v2) before it executes. Each phase is milliseconds since that start; \
    the clock stops for exit_ms once the instance has exited, its console is drained and its cgroup removed. \
    Each series' notes repeat the boundary its launches recorded.";

/// The prefix of a calibration series' backend name (`calibration:crun`): the harness's own cost,
/// measured by launching a trivial program through that backend's path.
pub const CALIBRATION_PREFIX: &str = "calibration:";

/// Which file a launched process writes to join its cgroup: the cheapest correct one for the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRule {
    /// cgroup v1 `tasks`: moves only the writing thread, which is the whole process while it is still
    /// single-threaded between fork and exec. It skips the global thread-group lock a `cgroup.procs`
    /// write takes, whose write side waits for an RCU grace period (4–16 ms measured on boxbench's
    /// loaded hybrid hosts, against well under a millisecond for `tasks`).
    Tasks,
    /// cgroup v2 `cgroup.procs`: a v2 domain cgroup has no `tasks` file, so this is the only way in.
    Procs,
}

impl JoinRule {
    /// The rule for the cgroup directory `dir`: `tasks` where it exists (v1), else `cgroup.procs`.
    pub fn for_dir(dir: &Path) -> Self {
        if dir.join("tasks").exists() { JoinRule::Tasks } else { JoinRule::Procs }
    }

    /// The file's name.
    pub fn file_name(self) -> &'static str {
        match self {
            JoinRule::Tasks => "tasks",
            JoinRule::Procs => "cgroup.procs",
        }
    }
}

/// One step of an instance's set-up, in the order it was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundaryStep {
    /// The instance cgroup was made (`runtime_leaf`: with the leaf an OCI runtime's processes run
    /// in, which cgroup v2 needs).
    CgroupCreated { runtime_leaf: bool },
    /// The instance cgroup's memory limit was written.
    MemoryLimitSet,
    /// The join file was opened for the launched process.
    JoinFileOpened(JoinRule),
    /// The clock started; the launched process is forked next and joins by itself.
    ClockStarted,
}

/// Misuse of a boundary, or a failed set-up step.
#[derive(Debug, thiserror::Error)]
pub enum BoundaryError {
    /// A cgroup step failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The join file could not be opened.
    #[error("{path}: {source}")]
    JoinFile { path: PathBuf, source: std::io::Error },
}

/// An instance's cgroup, set up and waiting for its launch.
#[derive(Debug)]
pub struct LaunchBoundary {
    cgroup: Arc<InstanceCgroup>,
    join_file: File,
    steps: Vec<BoundaryStep>,
}

/// What [`LaunchBoundary::start`] hands to the launch.
#[derive(Debug)]
pub struct Started {
    /// The launch's clock, started now.
    pub timeline: Timeline,
    /// The instance cgroup.
    pub cgroup: Arc<InstanceCgroup>,
    /// The join file, open for writing: the launched process writes `0` to it before it executes.
    pub join_file: File,
    /// The steps done, in order, ending with the clock's start.
    pub steps: Vec<BoundaryStep>,
}

impl LaunchBoundary {
    /// Creates the instance cgroup of a `backend` instance (for a `nesting` OCI runtime, see
    /// [`InstanceCgroup::create_for_nesting_runtime`]), limits its memory to `memory_limit` where the
    /// backend limits it there, and opens the join file: everything before the clock.
    pub fn prepare(
        host: &CgroupHost,
        backend: &str,
        nesting: bool,
        memory_limit: Option<u64>,
    ) -> Result<Self, BoundaryError> {
        let cgroup = if nesting {
            InstanceCgroup::create_for_nesting_runtime(host, backend)?
        } else {
            InstanceCgroup::create(host, backend)?
        };
        let mut steps = vec![BoundaryStep::CgroupCreated { runtime_leaf: cgroup.process_dir() != cgroup.path() }];
        if let Some(bytes) = memory_limit {
            cgroup.set_memory_limit(bytes)?;
            steps.push(BoundaryStep::MemoryLimitSet);
        }
        let rule = JoinRule::for_dir(cgroup.process_dir());
        let path = cgroup.process_dir().join(rule.file_name());
        let join_file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|source| BoundaryError::JoinFile { path: path.clone(), source })?;
        steps.push(BoundaryStep::JoinFileOpened(rule));
        Ok(Self { cgroup: Arc::new(cgroup), join_file, steps })
    }

    /// The instance cgroup.
    pub fn cgroup(&self) -> &Arc<InstanceCgroup> {
        &self.cgroup
    }

    /// Starts the clock: the caller forks the launched process next.
    pub fn start(self) -> Started {
        let timeline = Timeline::start();
        let mut steps = self.steps;
        steps.push(BoundaryStep::ClockStarted);
        Started { timeline, cgroup: self.cgroup, join_file: self.join_file, steps }
    }
}

impl Started {
    /// The record's note saying where the clock started and stopped, from the steps actually done.
    pub fn note(&self) -> String {
        describe(&self.steps)
    }
}

/// A sentence describing `steps` for a record's notes (and the report).
pub fn describe(steps: &[BoundaryStep]) -> String {
    let before: Vec<String> = steps
        .iter()
        .take_while(|step| **step != BoundaryStep::ClockStarted)
        .map(|step| match step {
            BoundaryStep::CgroupCreated { runtime_leaf: false } => "instance cgroup created".to_owned(),
            BoundaryStep::CgroupCreated { runtime_leaf: true } => {
                "instance cgroup created with its runtime leaf".to_owned()
            }
            BoundaryStep::MemoryLimitSet => "memory limit written".to_owned(),
            BoundaryStep::JoinFileOpened(rule) => format!("its {} opened", rule.file_name()),
            BoundaryStep::ClockStarted => unreachable!("taken only up to the clock's start"),
        })
        .collect();
    let join = steps.iter().find_map(|step| match step {
        BoundaryStep::JoinFileOpened(rule) => Some(rule.file_name()),
        _ => None,
    });
    format!(
        "launch boundary: {} before the clock; the clock starts just before the fork, the launched process \
         joins by writing 0 to {} before it executes, and exit_ms is taken once it has exited and its cgroup is removed",
        before.join(", "),
        join.unwrap_or("no join file")
    )
}

/// Moves the calling task into the cgroup whose join file (`tasks` or `cgroup.procs`) is open as
/// `join_fd`. Async-signal-safe: one `write(2)`, for a child between fork and exec.
pub fn join_writing_task(join_fd: RawFd) -> std::io::Result<()> {
    // SAFETY: writes one byte from a static buffer to a descriptor the caller owns.
    let written = unsafe { libc::write(join_fd, b"0".as_ptr().cast(), 1) };
    if written == 1 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_is_chosen_where_it_exists_and_cgroup_procs_otherwise() {
        let v1 = tempfile::tempdir().unwrap();
        std::fs::write(v1.path().join("tasks"), "").unwrap();
        std::fs::write(v1.path().join("cgroup.procs"), "").unwrap();
        assert_eq!(JoinRule::for_dir(v1.path()), JoinRule::Tasks);
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.procs"), "").unwrap();
        assert_eq!(JoinRule::for_dir(v2.path()), JoinRule::Procs);
    }

    #[test]
    fn the_note_lists_the_steps_before_the_clock_and_the_join_file() {
        let steps = [
            BoundaryStep::CgroupCreated { runtime_leaf: false },
            BoundaryStep::JoinFileOpened(JoinRule::Tasks),
            BoundaryStep::ClockStarted,
        ];
        let note = describe(&steps);
        assert!(
            note.starts_with("launch boundary: instance cgroup created, its tasks opened before the clock;"),
            "{note}"
        );
        assert!(note.contains("writing 0 to tasks"), "{note}");
    }

    #[test]
    fn the_writing_task_joins_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cgroup.procs");
        let file = File::create(&path).unwrap();
        join_writing_task(std::os::fd::AsRawFd::as_raw_fd(&file)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0");
    }
}
