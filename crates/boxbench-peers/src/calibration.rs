//! Calibration of the harness, as hyperfine measures its shell-spawn overhead: a trivial static
//! program that prints the marker and exits, launched through the very path a backend's tool takes —
//! the launch boundary's cgroup set-up before the clock, the fork, the join between fork and exec
//! (with the same mount-namespace set-up as the tool), the console pipe and its marker scan, the
//! pidfd wait and the cgroup's removal before `exit_ms`. Its figures are what the harness costs a
//! launch of that backend before the backend does anything of its own.
//!
//! boxbench's own container and VMM fork their init or VMM child with their own code (a clone with
//! namespaces, a fork of the monitor); their calibration uses the plain tool-process path, whose
//! join, console pipe and marker scan are the same `boxbench_core` code theirs use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::{InstanceSpec, LaunchError, Launcher, Outcome, Phases, READY_MARKER, Record};

use crate::oci_runtime::OciRuntime;
use crate::process::{ChildSetup, Streams, passthrough_outcome};
use crate::run::{ToolRun, record};

use boxbench_core::boundary::CALIBRATION_PREFIX;

/// The path a backend's launch takes through the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HarnessPath {
    /// The instance cgroup has the runtime leaf an OCI runtime nests its container in.
    pub nesting: bool,
    /// What the child does between fork and exec besides joining its cgroup.
    pub setup: ChildSetup,
    /// Which output streams are the console.
    pub streams: Streams,
}

impl HarnessPath {
    /// The path of the backend called `backend` (a `--backend` name) on a host with `cgroups`.
    pub fn of_backend(backend: &str, cgroups: &CgroupHost) -> Self {
        let oci = OciRuntime::from_name(backend);
        let vmm_tool = matches!(backend, "qemu-microvm" | "qemu-q35" | "firecracker");
        Self {
            nesting: oci.is_some(),
            setup: oci.map_or(ChildSetup::Plain, |runtime| runtime.child_setup(cgroups.mode)),
            // A VMM tool's serial console is its stdout; its own messages go to stderr apart.
            streams: if vmm_tool { Streams::StderrApart } else { Streams::Merged },
        }
    }
}

/// A backend that launches the trivial program through one backend's [`HarnessPath`].
#[derive(Debug)]
pub struct CalibrationLauncher {
    name: String,
    program: PathBuf,
    path: HarnessPath,
    cgroups: CgroupHost,
}

impl CalibrationLauncher {
    /// The calibration of `backend`: `program` is a static executable run as `program echo MARKER`
    /// (busybox from the container root filesystem).
    pub fn for_backend(backend: &str, program: &Path) -> Result<Self, LaunchError> {
        if !program.is_file() {
            return Err(LaunchError::InvalidSpec(format!(
                "{}: the calibration program (busybox) is not a file",
                program.display()
            )));
        }
        let cgroups = CgroupHost::detect()?;
        let path = HarnessPath::of_backend(backend, &cgroups);
        Ok(Self { name: format!("{CALIBRATION_PREFIX}{backend}"), program: program.to_owned(), path, cgroups })
    }

    /// The path this calibration takes.
    pub fn path(&self) -> HarnessPath {
        self.path
    }
}

impl Launcher for CalibrationLauncher {
    fn name(&self) -> &str {
        &self.name
    }

    fn prepare(&self, _spec: &InstanceSpec) -> Result<Box<dyn boxbench_core::Instance>, LaunchError> {
        let run = if self.path.nesting {
            ToolRun::for_nesting_runtime(&self.name, &self.cgroups)?
        } else {
            ToolRun::new(&self.name, &self.cgroups)?
        };
        Ok(Box::new(CalibrationInstance {
            name: self.name.clone(),
            program: self.program.clone(),
            path: self.path,
            run,
        }))
    }
}

#[derive(Debug)]
struct CalibrationInstance {
    name: String,
    program: PathBuf,
    path: HarnessPath,
    run: ToolRun,
}

impl boxbench_core::Instance for CalibrationInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut command = Command::new(&self.program);
        command.args(["echo", READY_MARKER]);
        self.run.start(command, self.path.setup, self.path.streams, None)
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        Ok(self.run.wait(deadline)?.map(passthrough_outcome))
    }

    fn marker_seen(&self) -> bool {
        self.run.marker_seen()
    }

    fn kill(&mut self) -> Result<(), LaunchError> {
        self.run.kill();
        Ok(())
    }

    fn finish(mut self: Box<Self>, outcome: Outcome) -> Result<Record, LaunchError> {
        let stopped = self.run.stop()?;
        self.run.remove_cgroup()?;
        let note = format!(
            "calibration: {} echo {READY_MARKER} through the harness path of {}",
            self.program.display(),
            self.name.trim_start_matches(CALIBRATION_PREFIX)
        );
        Ok(record(&self.name, stopped, outcome, Phases::default(), None, vec![note]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_refused_naming_it() {
        let err = CalibrationLauncher::for_backend("crun", Path::new("/nonexistent/busybox")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/busybox:"), "{err}");
    }
}
