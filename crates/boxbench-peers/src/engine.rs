//! What podman and docker share: a container engine driven through its command-line client.
//!
//! The root filesystem is imported once per launcher as a tagged image (from a tar made here of the
//! spec's root filesystem, so the image always matches it) and removed when the launcher is dropped.
//! Each instance is one `CLIENT run --rm --network none --cgroup-parent INSTANCE_CGROUP --name NAME
//! IMAGE ARGV...`: the client runs in the instance cgroup and the engine nests the container's
//! cgroup under it, so the instance's memory peak covers the client and the container (not a daemon
//! that runs elsewhere; the docker backend reports those separately). A client killed at the deadline
//! or failing leaves its container behind: it is removed with `rm -f NAME`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use boxbench_core::cgroup::{CgroupHost, InstanceCgroup};
use boxbench_core::{Instance, InstanceSpec, LaunchError, Outcome, Phases, Record};

use crate::hierarchies::{self, HierarchyError};
use crate::process::{ChildSetup, MarkerHook, ProcessError, Streams, passthrough_outcome, run_helper};
use crate::run::{ToolRun, record};

/// The exit statuses docker and podman use for their own failures (engine error, command not
/// executable, command not found), as opposed to the workload's.
const ENGINE_FAILURE_STATUSES: [i32; 3] = [125, 126, 127];

/// An engine operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A client command (import, rm, rmi, tar) failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A cgroup the engine made in another hierarchy stayed.
    #[error(transparent)]
    Hierarchy(#[from] HierarchyError),
    /// The image cache's lock was poisoned by a panicking thread.
    #[error("{engine} image cache lock poisoned")]
    Poisoned { engine: String },
}

/// An engine's client binary and the global arguments every call takes.
#[derive(Debug)]
pub struct EngineClient {
    /// `podman` or `docker`.
    pub name: &'static str,
    /// The client binary.
    pub binary: PathBuf,
    /// Global arguments before the subcommand (storage roots, daemon socket).
    pub global_args: Vec<OsString>,
    /// What the client's process does before exec (podman's runtime, crun, needs a private mount
    /// namespace on a hybrid host).
    pub setup: ChildSetup,
}

impl EngineClient {
    /// A command for the client with the global arguments.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(&self.global_args);
        command
    }

    /// Runs a client subcommand to completion outside the instance cgroup.
    pub fn helper<I, S>(&self, args: I) -> Result<Output, ProcessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command();
        command.args(args);
        run_helper(command, self.setup)
    }

    /// Removes container `name` if it exists.
    pub fn remove_container(&self, name: &str) -> Result<(), ProcessError> {
        match self.helper(["rm", "-f", name]) {
            Err(ProcessError::Failed { stderr, .. }) if stderr.to_lowercase().contains("no such container") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Names of containers (running or not) whose name starts with `prefix`.
    pub fn containers_named(&self, prefix: &str) -> Result<Vec<String>, ProcessError> {
        let output = self.helper(["ps", "-a", "--format", "{{.Names}}"])?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    /// Repository names of the images the engine holds.
    pub fn image_names(&self) -> Result<Vec<String>, ProcessError> {
        let output = self.helper(["images", "--format", "{{.Repository}}"])?;
        Ok(String::from_utf8_lossy(&output.stdout).lines().map(|l| l.trim().to_owned()).collect())
    }
}

static NEXT_IMAGE: AtomicU64 = AtomicU64::new(0);

/// The images a launcher imported, one per root filesystem; removed when dropped.
#[derive(Debug)]
pub struct ImportedImages {
    client: Arc<EngineClient>,
    workdir: PathBuf,
    by_rootfs: Mutex<HashMap<PathBuf, String>>,
}

impl ImportedImages {
    /// An empty cache; tars of root filesystems are written in `workdir`.
    pub fn new(client: Arc<EngineClient>, workdir: PathBuf) -> Self {
        Self { client, workdir, by_rootfs: Mutex::new(HashMap::new()) }
    }

    /// The repository name every image of this process starts with.
    pub fn name_prefix() -> String {
        format!("boxbench-peers-{}-", std::process::id())
    }

    /// The image of `rootfs`, imported on first use.
    pub fn image_for(&self, rootfs: &Path) -> Result<String, EngineError> {
        let mut by_rootfs =
            self.by_rootfs.lock().map_err(|_| EngineError::Poisoned { engine: self.client.name.to_owned() })?;
        if let Some(tag) = by_rootfs.get(rootfs) {
            return Ok(tag.clone());
        }
        let seq = NEXT_IMAGE.fetch_add(1, Ordering::Relaxed);
        let repository = format!("{}{seq}", Self::name_prefix());
        let tar = self.workdir.join(format!("{repository}.tar"));
        let mut pack = Command::new("tar");
        pack.arg("--numeric-owner").arg("-cf").arg(&tar).arg("-C").arg(rootfs).arg(".");
        run_helper(pack, ChildSetup::Plain)?;
        let tag = format!("{repository}:latest");
        let imported = self.client.helper([OsStr::new("import"), tar.as_os_str(), OsStr::new(&tag)]);
        // The tar is only the import's input.
        let _ = std::fs::remove_file(&tar);
        imported?;
        by_rootfs.insert(rootfs.to_owned(), tag.clone());
        Ok(tag)
    }
}

impl Drop for ImportedImages {
    fn drop(&mut self) {
        let tags: Vec<String> = match self.by_rootfs.get_mut() {
            Ok(map) => map.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        for tag in tags {
            // Nothing to report to on drop; a leftover image shows in `boxbench doctor`'s leak check.
            let _ = self.client.helper(["rmi", "-f", tag.as_str()]);
        }
    }
}

/// What a backend samples at the marker beyond the instance cgroup (daemons, shims).
pub trait MarkerProbe: fmt::Debug + Send + Sync {
    /// Samples now; `cgroup_dir` is the instance cgroup's directory.
    fn sample(&self, cgroup_dir: &Path) -> Findings;
}

/// What a [`MarkerProbe`] found.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Notes for the record.
    pub notes: Vec<String>,
    /// The per-instance cost outside the instance cgroup, if measured.
    pub overhead_bytes: Option<u64>,
    /// The PSS of the daemons every container shares, if the engine has any.
    pub shared_daemons_pss_bytes: Option<u64>,
}

static NEXT_CONTAINER: AtomicU64 = AtomicU64::new(0);

/// A container name unique on this host for this process.
pub fn container_name() -> String {
    format!("{}{}", container_name_prefix(), NEXT_CONTAINER.fetch_add(1, Ordering::Relaxed))
}

/// The prefix of every container name this process uses.
pub fn container_name_prefix() -> String {
    format!("boxbench-{}-", std::process::id())
}

/// One container run through an engine's client.
#[derive(Debug)]
pub struct EngineInstance {
    client: Arc<EngineClient>,
    run: ToolRun,
    name: String,
    run_args: Vec<OsString>,
    memory_root: PathBuf,
    cgroup_relative: PathBuf,
    probe: Option<Arc<dyn MarkerProbe>>,
    found: Arc<Mutex<Option<Findings>>>,
    /// True once the client exited on its own with a status that is the workload's: `--rm` then
    /// removed the container already.
    removed_by_client: bool,
    launched: bool,
    notes: Vec<String>,
}

impl EngineInstance {
    /// Prepares `client run` of `image` for `spec`, with `engine_run_args` (the engine's own flags)
    /// after the common ones.
    pub fn prepare(
        client: &Arc<EngineClient>,
        cgroups: &CgroupHost,
        spec: &InstanceSpec,
        image: &str,
        engine_run_args: &[&str],
        probe: Option<Arc<dyn MarkerProbe>>,
        notes: Vec<String>,
    ) -> Result<Self, LaunchError> {
        let run = ToolRun::new(client.name, cgroups)?;
        let cgroup_relative = run.cgroup().map(InstanceCgroup::relative_path).unwrap_or_default();
        let name = container_name();
        let mut run_args: Vec<OsString> = ["run", "--rm", "--network", "none"].map(OsString::from).to_vec();
        run_args.extend(engine_run_args.iter().map(OsString::from));
        run_args.push("--cgroup-parent".into());
        run_args.push(cgroup_relative.clone().into_os_string());
        run_args.extend(["--name", &name, "--hostname", &spec.hostname].map(OsString::from));
        if let Some(bytes) = spec.memory_limit_bytes {
            run_args.push(format!("--memory={bytes}").into());
        }
        run_args.push(image.into());
        run_args.extend(spec.workload.argv().into_iter().map(OsString::from));
        Ok(Self {
            client: Arc::clone(client),
            run,
            name,
            run_args,
            memory_root: cgroups.memory_root.clone(),
            cgroup_relative,
            probe,
            found: Arc::new(Mutex::new(None)),
            removed_by_client: false,
            launched: false,
            notes,
        })
    }

    fn outcome_of(&mut self, status: ExitStatus, console_hint: &str) -> Outcome {
        if let Some(code) = status.code().filter(|c| ENGINE_FAILURE_STATUSES.contains(c)) {
            if let Some(error) = console_hint.lines().rev().find(|l| l.contains("Error")) {
                return Outcome::Failed { reason: format!("{} exited {code}: {}", self.client.name, error.trim()) };
            }
        }
        self.removed_by_client = status.code().is_some_and(|c| !ENGINE_FAILURE_STATUSES.contains(&c));
        if self.run.cgroup().is_some_and(|c| c.oom_killed()) {
            return Outcome::OutOfMemory;
        }
        passthrough_outcome(status)
    }

    /// Removes the container if the client did not (through the engine, while conmon or the shim
    /// can still report its exit), then kills what is left in the instance cgroup and removes the
    /// cgroups the engine made in other hierarchies. Idempotent.
    fn release_engine_side(&mut self) -> Result<(), EngineError> {
        let mut first_error = None;
        if self.launched && !self.removed_by_client {
            if let Err(e) = self.client.remove_container(&self.name) {
                first_error.get_or_insert(EngineError::from(e));
            }
            self.removed_by_client = true;
        }
        self.run.kill();
        if let Err(e) = hierarchies::remove_beside_memory(&self.memory_root, &self.cgroup_relative) {
            first_error.get_or_insert(e.into());
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Instance for EngineInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut command = self.client.command();
        command.args(&self.run_args);
        let hook: Option<MarkerHook> = match (&self.probe, self.run.cgroup()) {
            (Some(probe), Some(cgroup)) => {
                let probe = Arc::clone(probe);
                let dir = cgroup.path().to_owned();
                let found = Arc::clone(&self.found);
                Some(Box::new(move || {
                    let findings = probe.sample(&dir);
                    if let Ok(mut slot) = found.lock() {
                        *slot = Some(findings);
                    }
                }))
            }
            _ => None,
        };
        self.launched = true;
        self.run.start(command, self.client.setup, Streams::Merged, hook)
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        // The engine's own error text is only known once the console is read in `finish`; here a
        // failure status is reported with what the status says.
        Ok(self.run.wait(deadline)?.map(|status| self.outcome_of(status, "")))
    }

    /// Kills the container through the engine (`kill NAME`), so the attached client sees it end,
    /// removes it (`--rm`) and exits; killing the cgroup instead would also kill conmon or leave the
    /// daemon waiting for an exit nobody reports. If the engine cannot (the container does not exist
    /// yet), everything in the instance cgroup is killed and `finish` removes the container.
    fn marker_seen(&self) -> bool {
        self.run.marker_seen()
    }

    fn kill(&mut self) -> Result<(), LaunchError> {
        if self.client.helper(["kill", self.name.as_str()]).is_err() {
            self.run.kill();
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, outcome: Outcome) -> Result<Record, LaunchError> {
        let stopped = self.run.stop()?;
        // With the console read, an engine failure status can be told from the workload's.
        let outcome = match (&outcome, stopped.status) {
            (Outcome::Exited { .. } | Outcome::Signaled { .. }, Some(status)) => {
                self.outcome_of(status, &stopped.console.text)
            }
            _ => outcome,
        };
        self.release_engine_side().map_err(LaunchError::backend)?;
        self.run.remove_cgroup()?;
        let findings = self.found.lock().ok().and_then(|mut slot| slot.take()).unwrap_or_default();
        let mut notes = std::mem::take(&mut self.notes);
        notes.extend(findings.notes);
        let mut record = record(self.client.name, stopped, outcome, Phases::default(), findings.overhead_bytes, notes);
        record.memory.shared_daemons_pss_bytes = findings.shared_daemons_pss_bytes;
        Ok(record)
    }
}

impl Drop for EngineInstance {
    fn drop(&mut self) {
        // Errors here are on a path that is already failing; the cgroup goes with `run`.
        let _ = self.release_engine_side();
    }
}
