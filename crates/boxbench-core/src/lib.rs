//! The common ground of every boxbench backend.
//!
//! A backend (boxbench's own container launcher, its own micro-VM monitor, or a real tool such as
//! crun or QEMU) implements [`Launcher`]: from an [`InstanceSpec`] it prepares an [`Instance`], which
//! is launched, waited for with a deadline, killed if need be, and turned into a [`Record`]. The record
//! is the same for every backend: a [`Phases`] timeline in milliseconds since launch start, the exit
//! [`Outcome`], the console text and the [`MemoryUsage`]. This crate also owns the measurements the
//! backends share: the per-instance memory [`cgroup`], proportional set size sampling ([`pss`]),
//! console capture with marker timing ([`console`]), summary statistics ([`stats`]) and the facts
//! about the host every figure is labelled with ([`host`]).

pub mod bootstrap;
pub mod boundary;
pub mod cgroup;
pub mod clock;
pub mod console;
pub mod host;
pub mod interrupt;
pub mod launcher;
pub mod measure;
pub mod mountinfo;
pub mod pidfd;
pub mod pss;
pub mod record;
pub mod smaps;
pub mod spec;
pub mod stats;

pub use clock::{MonotonicNs, Timeline};
pub use launcher::{Instance, LaunchError, Launcher};
pub use record::{MemoryUsage, Outcome, Phases, Record};
pub use spec::{ImagePaths, InstanceSpec, Workload};

/// The line every workload prints on its console once it runs: its appearance is `workload_ms`.
pub const READY_MARKER: &str = "BOXBENCH_READY";

/// The backend name of boxbench's own VMM (crate boxbench-microvm), by which reports tell it apart
/// from the other VMMs.
pub const OWN_VMM_BACKEND: &str = "microvm";
