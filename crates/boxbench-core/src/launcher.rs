//! The trait every backend implements.
//!
//! A [`Launcher`] is a backend configured once (paths of its tool, host facts); each launch is an
//! [`Instance`] it prepares from an [`InstanceSpec`]. The life of an instance is
//! `prepare → launch → wait (with a deadline) → [kill → wait] → finish`. Dropping an instance at any
//! point must kill what it started and release what it holds, so an error path leaks nothing.

use std::fmt;
use std::time::Instant;

use crate::cgroup::CgroupError;
use crate::record::{Outcome, Record};
use crate::spec::InstanceSpec;

/// Why an instance could not be prepared, launched, waited for or finished.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The spec or an image it names cannot be used by this backend: the message names the file or
    /// setting.
    #[error("{0}")]
    InvalidSpec(String),
    /// The host cannot run this backend (no root, no /dev/kvm, tool missing): the message says why.
    #[error("{0}")]
    Unsupported(String),
    /// The per-instance cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The set-up before the clock (cgroup, join file) failed.
    #[error(transparent)]
    Boundary(#[from] crate::boundary::BoundaryError),
    /// The backend itself failed; its own error says where.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

impl LaunchError {
    /// Wraps a backend's own error.
    pub fn backend(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        LaunchError::Backend(Box::new(err))
    }
}

/// A backend: boxbench's own container or micro-VM, or a real tool driven the same way.
pub trait Launcher: fmt::Debug + Send + Sync {
    /// The backend's stable name, as `--backend` takes it and reports print it.
    fn name(&self) -> &str;

    /// Checks the spec and the images against this backend and prepares one instance, without
    /// starting anything that would count towards its launch time.
    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError>;
}

/// One launch of a backend.
pub trait Instance: fmt::Debug + Send {
    /// Starts the instance; the launch timeline starts at the top of this call.
    fn launch(&mut self) -> Result<(), LaunchError>;

    /// Waits until the instance ends or `deadline` passes; `Ok(None)` means the deadline passed and
    /// the instance is still running.
    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError>;

    /// True once the workload's marker has appeared on the console; density runs poll it to know an
    /// instance is up before they measure the host with many running.
    fn marker_seen(&self) -> bool;

    /// Kills the instance (everything it started); `wait` then returns promptly.
    fn kill(&mut self) -> Result<(), LaunchError>;

    /// Releases everything the instance held and returns its record, with `exit_ms` stamped after the
    /// release. `outcome` is how the instance ended, as `wait` or the deadline decided.
    fn finish(self: Box<Self>, outcome: Outcome) -> Result<Record, LaunchError>;
}
