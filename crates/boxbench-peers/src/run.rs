//! The part of an instance every peer backend shares: the instance cgroup, the tool process in it,
//! the launch timeline, and the record built from them once the tool has exited and the backend has
//! released what it made.

use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxbench_core::boundary::{LaunchBoundary, Started};
use boxbench_core::cgroup::{CgroupHost, InstanceCgroup};
use boxbench_core::console::Console;
use boxbench_core::{LaunchError, MemoryUsage, Outcome, Phases, Record, Timeline};

use crate::process::{ChildSetup, MarkerHook, Streams, ToolProcess};

/// How long a killed tool has to exit before finishing gives up on it.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Misuse of an instance's life cycle (finish before launch, launch twice).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `wait`, `kill` or `finish` was called on an instance that was never launched.
    #[error("{backend} instance was not launched")]
    NotLaunched { backend: String },
    /// `launch` was called twice.
    #[error("{backend} instance was already launched")]
    AlreadyLaunched { backend: String },
}

/// What is known once the tool has exited: its console and the cgroup's memory peak.
#[derive(Debug)]
pub struct Stopped {
    /// The timeline of the launch.
    pub timeline: Timeline,
    /// The console (see [`Streams`]).
    pub console: Console,
    /// The tool's stderr, when kept apart from the console.
    pub stderr: Option<String>,
    /// The instance cgroup's memory peak.
    pub peak_bytes: Option<u64>,
    /// How the tool exited (`None` if it could not be reaped even after being killed).
    pub status: Option<ExitStatus>,
    /// Where the clock started and stops ([`boxbench_core::boundary::Started::note`]).
    pub boundary_note: Option<String>,
    /// The VMM overhead sampled at the marker, when [`ToolRun::measure_vmm_overhead`] asked for it.
    pub vmm_overhead_bytes: Option<u64>,
}

/// One tool run in its instance cgroup.
#[derive(Debug)]
pub struct ToolRun {
    backend: String,
    /// The set-up before the clock, until the clock starts.
    boundary: Option<LaunchBoundary>,
    /// The started clock's set-up, until the tool is spawned with it.
    started: Option<Started>,
    cgroup: Option<Arc<InstanceCgroup>>,
    process: Option<ToolProcess>,
    timeline: Option<Timeline>,
    /// Where the clock started and stops ([`Started::note`]).
    boundary_note: Option<String>,
    /// Console lines whose first appearance is timed (see [`ToolRun::stamp_console`]).
    stamps: &'static [&'static str],
    /// Where the marker hook of [`measure_vmm_overhead`](Self::measure_vmm_overhead) leaves its figure.
    vmm_overhead: Option<Arc<Mutex<Option<u64>>>>,
}

impl ToolRun {
    /// Sets up the instance cgroup of a `backend` instance (the launch boundary's work before the
    /// clock). It has no limit of its own: each tool applies the spec's memory limit where that tool
    /// puts it (a container's cgroup, a VM's memory).
    pub fn new(backend: &str, host: &CgroupHost) -> Result<Self, LaunchError> {
        Ok(Self::with_boundary(backend, LaunchBoundary::prepare(host, backend, false, None)?))
    }

    /// Like [`new`](Self::new), with the instance cgroup's memory limited to `limit` (a tool that
    /// keeps its container in the instance cgroup: a system container).
    pub fn with_memory_limit(backend: &str, host: &CgroupHost, limit: Option<u64>) -> Result<Self, LaunchError> {
        Ok(Self::with_boundary(backend, LaunchBoundary::prepare(host, backend, false, limit)?))
    }

    /// Like [`new`](Self::new), for a tool that nests its container's cgroup in the instance cgroup
    /// (an OCI runtime): see [`InstanceCgroup::create_for_nesting_runtime`].
    pub fn for_nesting_runtime(backend: &str, host: &CgroupHost) -> Result<Self, LaunchError> {
        Ok(Self::with_boundary(backend, LaunchBoundary::prepare(host, backend, true, None)?))
    }

    fn with_boundary(backend: &str, boundary: LaunchBoundary) -> Self {
        Self {
            backend: backend.to_owned(),
            cgroup: Some(Arc::clone(boundary.cgroup())),
            boundary: Some(boundary),
            started: None,
            process: None,
            timeline: None,
            boundary_note: None,
            stamps: &[],
            vmm_overhead: None,
        }
    }

    /// Times the first appearance of each of `stamps` on the console (a boot loader's banner, the
    /// kernel's first line): [`Stopped::console`]'s `stamps`, in this order.
    pub fn stamp_console(&mut self, stamps: &'static [&'static str]) {
        self.stamps = stamps;
    }

    /// Where this launch's clock started and stops, once launched.
    pub fn boundary_note(&self) -> Option<&str> {
        self.boundary_note.as_deref()
    }

    /// A marker hook that measures the VMM overhead ([`boxbench_core::smaps`]) of the tool's
    /// processes hosting `guest_bytes` of guest RAM; the figure goes into [`Stopped`] and the
    /// record (none if the marker never came or no process showed a mapping of that size).
    pub fn measure_vmm_overhead(&mut self, guest_bytes: u64) -> Option<MarkerHook> {
        let cgroup = self.cgroup.as_ref().map(Arc::clone)?;
        let filled = Arc::new(Mutex::new(None));
        self.vmm_overhead = Some(Arc::clone(&filled));
        let hook: MarkerHook = Box::new(move || {
            let overhead = cgroup
                .pids()
                .into_iter()
                .filter_map(|pid| boxbench_core::smaps::vmm_overhead_bytes(pid, guest_bytes))
                .reduce(|a, b| a + b);
            if let Ok(mut slot) = filled.lock() {
                *slot = overhead;
            }
        });
        Some(hook)
    }

    /// The instance cgroup (until it is removed).
    pub fn cgroup(&self) -> Option<&InstanceCgroup> {
        self.cgroup.as_deref()
    }

    fn not_launched(&self) -> LaunchError {
        LaunchError::backend(RunError::NotLaunched { backend: self.backend.clone() })
    }

    /// Starts the launch's clock, for a tool that must be told when the launch began before its
    /// command exists (Firecracker's `--start-time-us`); [`start`](Self::start) does it otherwise.
    pub fn start_clock(&mut self) -> Result<Timeline, LaunchError> {
        let boundary = self
            .boundary
            .take()
            .ok_or_else(|| LaunchError::backend(RunError::AlreadyLaunched { backend: self.backend.clone() }))?;
        let started = boundary.start();
        let timeline = started.timeline;
        self.timeline = Some(timeline);
        self.boundary_note = Some(started.note());
        self.started = Some(started);
        Ok(timeline)
    }

    /// Starts the clock (unless [`start_clock`](Self::start_clock) did) and the tool, which joins
    /// the cgroup before it executes; `at_marker` runs when the marker appears.
    pub fn start(
        &mut self,
        command: Command,
        setup: ChildSetup,
        streams: Streams,
        at_marker: Option<MarkerHook>,
    ) -> Result<(), LaunchError> {
        if self.boundary.is_some() {
            self.start_clock()?;
        }
        let started = self
            .started
            .take()
            .ok_or_else(|| LaunchError::backend(RunError::AlreadyLaunched { backend: self.backend.clone() }))?;
        let process = ToolProcess::spawn(
            &self.backend,
            command,
            &started.cgroup,
            started.join_file,
            setup,
            streams,
            self.stamps,
            at_marker,
        )
        .map_err(LaunchError::backend)?;
        self.process = Some(process);
        Ok(())
    }

    /// Waits for the tool to exit, up to `deadline`.
    pub fn wait(&mut self, deadline: Instant) -> Result<Option<ExitStatus>, LaunchError> {
        let backend = self.backend.clone();
        let process = self.process.as_mut().ok_or_else(|| LaunchError::backend(RunError::NotLaunched { backend }))?;
        process.wait(deadline).map_err(LaunchError::backend)
    }

    /// True once the workload's marker has appeared on the tool's console.
    pub fn marker_seen(&self) -> bool {
        self.process.as_ref().is_some_and(ToolProcess::marker_seen)
    }

    /// Sends the tool `signal` (nothing before launch or after it was reaped).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(process) = &self.process {
            process.signal(signal);
        }
    }

    /// Kills the tool and everything in the instance cgroup.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill();
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
    }

    /// Makes sure the tool has exited (killing it and the cgroup if not), kills whatever it left in
    /// the cgroup, and collects the console and the memory peak.
    pub fn stop(&mut self) -> Result<Stopped, LaunchError> {
        let timeline = self.timeline.ok_or_else(|| self.not_launched())?;
        let mut process = self.process.take().ok_or_else(|| self.not_launched())?;
        let mut status = process.wait(Instant::now()).map_err(LaunchError::backend)?;
        if status.is_none() {
            process.kill();
            status = process.wait(Instant::now() + KILL_GRACE).map_err(LaunchError::backend)?;
        }
        let peak_bytes = self.cgroup.as_ref().and_then(|c| c.peak_bytes());
        // Anything the tool left running in its cgroup would hold the console open.
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
        }
        let output = process.take_output();
        Ok(Stopped {
            timeline,
            console: output.console,
            stderr: output.stderr,
            peak_bytes,
            status,
            boundary_note: self.boundary_note.clone(),
            vmm_overhead_bytes: self.vmm_overhead.as_ref().and_then(|slot| *slot.lock().ok()?),
        })
    }

    /// Removes the instance cgroup (after the backend removed what it nested in it).
    pub fn remove_cgroup(&mut self) -> Result<(), LaunchError> {
        // The boundary's share of the cgroup goes first (an instance finished without a launch).
        self.boundary = None;
        self.started = None;
        match self.cgroup.take().map(Arc::try_unwrap) {
            Some(Ok(cgroup)) => Ok(cgroup.remove()?),
            // Still shared by a console thread that never ended: its last drop removes it.
            Some(Err(_)) | None => Ok(()),
        }
    }
}

impl Drop for ToolRun {
    fn drop(&mut self) {
        self.kill();
        // The process is reaped by its own drop; the cgroup by `InstanceCgroup`'s drop.
    }
}

/// The record of a launch whose tool exited and whose resources are all released: `exit_ms` is
/// stamped now, and the launch boundary's note ends `notes`. Phases the tool cannot show stay `None`; `ready_ms` and `userspace_ms` are given by
/// backends that observe them.
pub fn record(
    backend: &str,
    stopped: Stopped,
    outcome: Outcome,
    observed: Phases,
    overhead_bytes: Option<u64>,
    mut notes: Vec<String>,
) -> Record {
    let timeline = stopped.timeline;
    notes.extend(stopped.boundary_note);
    // A VMM's own memory, measured by the definition every VMM shares, unless the backend gave its own.
    let overhead_bytes = overhead_bytes.or_else(|| {
        notes.extend(stopped.vmm_overhead_bytes.map(|_| boxbench_core::smaps::OVERHEAD_NOTE.to_owned()));
        stopped.vmm_overhead_bytes
    });
    let exit_ms = timeline.now_ms();
    Record {
        backend: backend.to_owned(),
        phases: Phases {
            ready_ms: observed.ready_ms,
            userspace_ms: observed.userspace_ms,
            workload_ms: timeline.ms(stopped.console.marker_at),
            exit_ms: Some(exit_ms),
            first_output_ms: timeline.ms(stopped.console.first_byte_at),
        },
        exit_code: outcome.exit_code(),
        outcome,
        console: stopped.console.text,
        memory: MemoryUsage {
            peak_bytes: stopped.peak_bytes,
            pss_bytes: stopped.console.marker_sample,
            overhead_bytes,
            shared_daemons_pss_bytes: None,
        },
        notes,
        // The peers show no sub-phases beyond the record's phases.
        details_ms: Default::default(),
    }
}
