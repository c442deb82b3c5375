//! A `docker run` taken apart (claim 7, "Docker is client–server over REST"): the same container
//! started by boxbench itself through the Engine API ([`DockerApiLauncher`], backend `docker-api`),
//! each round trip timed, and the docker client's own start-up alone ([`ClientStartupLauncher`],
//! backend `docker-client`: `docker --version`, which contacts no daemon), both on the launch
//! boundary every backend uses, beside the CLI's `docker run` ([`crate::DockerLauncher`]).
//!
//! An API launch: before the clock the instance cgroup is made. The clock starts just before the
//! connection to the socket and its `GET /_ping` (`ping_ms`: the docker client's first call too, a
//! round trip with no work behind it), then `POST /containers/create` (the container's cgroup nested under
//! the instance cgroup through `HostConfig.CgroupParent`, as the CLI's `--cgroup-parent`), then
//! `attach` (on a second connection upgraded to the multiplexed stream, which is the console),
//! `start`, `wait` and `DELETE` follow, each timed into the record's `details_ms` (`create_ms`,
//! `attach_ms`, `start_ms`, `wait_ms`, `remove_ms`); `exit_ms` is taken once the container is removed
//! and the instance cgroup with it. Daemon memory is sampled at the marker as for `docker`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxbench_core::boundary::LaunchBoundary;
use boxbench_core::cgroup::{CgroupHost, InstanceCgroup};
use boxbench_core::clock::MonotonicNs;
use boxbench_core::console::{Console, ConsoleCapture};
use boxbench_core::{
    Instance, InstanceSpec, LaunchError, Launcher, MemoryUsage, Outcome, Phases, READY_MARKER, Record, Timeline,
};

use crate::engine::{EngineClient, EngineInstance, Findings, ImportedImages, MarkerProbe, container_name};
use crate::engine_api::frames::Demux;
use crate::engine_api::tap::{Tap, calls as tap_calls};
use crate::engine_api::{ApiClient, ApiError, ServerVersion};
use crate::hierarchies;
use crate::oci_runtime::{check_workload, resolve_rootfs};
use crate::process::{ChildSetup, Streams, passthrough_outcome};
use crate::run::{ToolRun, record};

/// The backend name of a run through the Engine API.
pub const API_BACKEND: &str = "docker-api";
/// The backend name of the docker client's start-up alone.
pub const CLIENT_BACKEND: &str = "docker-client";
/// The round trips of an API run, in the order it makes them, as named in `details_ms`: the
/// connection and its `GET /_ping` (the docker client's first call too, negotiating the API
/// version: a round trip with no work behind it), then the calls of `docker run`.
pub const ROUND_TRIPS: [&str; 6] = [PING, "create_ms", "attach_ms", "start_ms", "wait_ms", "remove_ms"];
/// The `details_ms` entry of the connection and its ping.
pub const PING: &str = "ping_ms";
/// How long a finished launch waits for its calls to come back after a kill.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Docker driven through its Engine API on the daemon's socket.
#[derive(Debug)]
pub struct DockerApiLauncher {
    socket: PathBuf,
    images: Arc<ImportedImages>,
    cgroups: CgroupHost,
    probe: Arc<dyn MarkerProbe>,
    server: ServerVersion,
    api_version: String,
}

impl DockerApiLauncher {
    /// A launcher on the daemon at `socket`, importing root filesystems through `images` (shared with
    /// the CLI's launcher, so both run the same image).
    pub(crate) fn new(
        socket: PathBuf,
        images: Arc<ImportedImages>,
        cgroups: CgroupHost,
        probe: Arc<dyn MarkerProbe>,
    ) -> Result<Self, ApiError> {
        let mut client = ApiClient::connect(&socket, Duration::from_secs(30))?;
        let server = client.version()?;
        let api_version = client.api_version().to_owned();
        Ok(Self { socket, images, cgroups, probe, server, api_version })
    }

    /// The daemon's `/version`.
    pub fn server(&self) -> &ServerVersion {
        &self.server
    }

    /// The API version the calls are made in.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "Engine API {} on {} (daemon {}): ping, create, attach, start, wait, remove made by boxbench, each \
             timed into details_ms (ping_ms with the connection)",
            self.api_version,
            self.socket.display(),
            self.server.version
        )]
    }
}

impl Launcher for DockerApiLauncher {
    fn name(&self) -> &str {
        API_BACKEND
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let rootfs = resolve_rootfs(spec, API_BACKEND)?;
        check_workload(&rootfs, &spec.workload)?;
        let image = self.images.image_for(&rootfs).map_err(LaunchError::backend)?;
        let boundary = LaunchBoundary::prepare(&self.cgroups, API_BACKEND, false, None)?;
        let cgroup = Arc::clone(boundary.cgroup());
        let mut host_config = serde_json::json!({
            "NetworkMode": "none",
            "CgroupParent": cgroup.relative_path(),
        });
        if let Some(bytes) = spec.memory_limit_bytes {
            host_config["Memory"] = bytes.into();
        }
        let config = serde_json::json!({
            "Image": image,
            "Cmd": spec.workload.argv(),
            "Hostname": spec.hostname,
            "AttachStdin": false,
            "AttachStdout": true,
            "AttachStderr": true,
            "Tty": false,
            "NetworkDisabled": true,
            "HostConfig": host_config,
        });
        Ok(Box::new(ApiInstance {
            boundary: Some(boundary),
            cgroup: Some(cgroup),
            memory_root: self.cgroups.memory_root.clone(),
            socket: self.socket.clone(),
            timeout: spec.timeout,
            name: container_name(),
            config,
            probe: Arc::clone(&self.probe),
            shared: Arc::new(Shared::default()),
            timeline: None,
            receiver: None,
            sequence: None,
            notes: self.notes(),
        }))
    }
}

/// What the launch's calling thread and the instance share.
#[derive(Debug, Default)]
struct Shared {
    /// The container's id, once created.
    id: Mutex<Option<String>>,
    /// Set by `kill`: a container not yet started is not started.
    killed: AtomicBool,
    /// Set when the marker appears on the attach stream.
    marker_seen: AtomicBool,
    /// What the probe found at the marker.
    found: Mutex<Option<Findings>>,
}

/// What the calls of one launch came to.
#[derive(Debug)]
struct Sequence {
    timings: BTreeMap<String, f64>,
    console: Console,
    /// The container's exit status, or why the calls failed.
    status: Result<i64, String>,
    /// The container was removed (by the sequence's `DELETE`).
    removed: bool,
}

impl Sequence {
    /// A sequence that ended (or never began) for `reason`.
    fn failed(reason: &str) -> Self {
        Self { timings: BTreeMap::new(), console: Console::default(), status: Err(reason.to_owned()), removed: false }
    }
}

#[derive(Debug)]
struct ApiInstance {
    boundary: Option<LaunchBoundary>,
    cgroup: Option<Arc<InstanceCgroup>>,
    memory_root: PathBuf,
    socket: PathBuf,
    timeout: Duration,
    name: String,
    config: serde_json::Value,
    probe: Arc<dyn MarkerProbe>,
    shared: Arc<Shared>,
    timeline: Option<Timeline>,
    receiver: Option<Receiver<Sequence>>,
    sequence: Option<Sequence>,
    notes: Vec<String>,
}

/// Times `call` into `timings` under `name`.
fn timed<T>(timings: &mut BTreeMap<String, f64>, name: &str, call: impl FnOnce() -> T) -> T {
    let began = Instant::now();
    let value = call();
    timings.insert(name.to_owned(), began.elapsed().as_secs_f64() * 1e3);
    value
}

/// ping (with the connection), create, attach, start, wait, remove: the calls of a `docker run`, on
/// the launch's thread.
fn run_sequence(
    socket: &Path,
    timeout: Duration,
    name: &str,
    config: &serde_json::Value,
    shared: &Arc<Shared>,
    probe: Arc<dyn MarkerProbe>,
    cgroup_dir: PathBuf,
) -> Sequence {
    let mut sequence = Sequence::failed("");
    let timings = &mut sequence.timings;
    let connected = timed(timings, PING, || ApiClient::connect(socket, timeout));
    let mut client = match connected {
        Ok(client) => client,
        Err(e) => {
            sequence.status = Err(e.to_string());
            return sequence;
        }
    };
    let created = timed(timings, "create_ms", || client.create(name, config));
    let id = match created {
        Ok(id) => id,
        Err(e) => {
            sequence.status = Err(e.to_string());
            return sequence;
        }
    };
    if let Ok(mut slot) = shared.id.lock() {
        *slot = Some(id.clone());
    }
    let attached = timed(timings, "attach_ms", || client.attach(&id));
    let capture = attached.and_then(|stream| {
        let shared = Arc::clone(shared);
        ConsoleCapture::spawn(Demux::new(stream), READY_MARKER, move || {
            let findings = probe.sample(&cgroup_dir);
            if let Ok(mut slot) = shared.found.lock() {
                *slot = Some(findings);
            }
            shared.marker_seen.store(true, Ordering::Release);
            None
        })
        .map_err(|source| ApiError::Http { call: "attach", source: source.into() })
    });
    let status = capture.as_ref().map_err(ApiError::to_string).and_then(|_| {
        if shared.killed.load(Ordering::Acquire) {
            return Err("killed before start".to_owned());
        }
        timed(timings, "start_ms", || client.start(&id)).map_err(|e| e.to_string())?;
        timed(timings, "wait_ms", || client.wait(&id)).map_err(|e| e.to_string())
    });
    // The container goes whatever happened; force only if the sequence broke before its exit.
    let removed = timed(timings, "remove_ms", || client.remove(&id, status.is_err()));
    if status.is_err() {
        timings.remove("remove_ms");
    }
    sequence.removed = removed.is_ok();
    sequence.status = match (status, removed) {
        (Ok(_), Err(e)) => Err(e.to_string()),
        (status, _) => status,
    };
    if let Ok(capture) = capture {
        // The attach stream ends with the container.
        sequence.console = capture.join();
    }
    sequence
}

impl ApiInstance {
    fn cgroup_dir(&self) -> PathBuf {
        self.cgroup.as_ref().map(|c| c.path().to_owned()).unwrap_or_default()
    }

    /// Removes the container if the sequence did not, and the cgroups the daemon made in other
    /// hierarchies. Idempotent.
    fn release_engine_side(&mut self) -> Result<(), LaunchError> {
        let id = self.shared.id.lock().ok().and_then(|mut slot| slot.take());
        let removed = self.sequence.as_ref().is_some_and(|s| s.removed);
        if let (Some(id), false) = (id, removed) {
            let mut client = ApiClient::connect(&self.socket, self.timeout).map_err(LaunchError::backend)?;
            client.remove(&id, true).map_err(LaunchError::backend)?;
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill_all();
            hierarchies::remove_beside_memory(&self.memory_root, &cgroup.relative_path())
                .map_err(LaunchError::backend)?;
        }
        Ok(())
    }
}

impl Instance for ApiInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        let boundary = self
            .boundary
            .take()
            .ok_or_else(|| LaunchError::InvalidSpec(format!("{API_BACKEND} instance was already launched")))?;
        let started = boundary.start();
        // No process of boxbench's joins the instance cgroup: the daemon nests the container in it.
        drop(started.join_file);
        self.timeline = Some(started.timeline);
        let (sender, receiver) = mpsc::channel();
        let (socket, timeout, name, config, shared, probe, dir) = (
            self.socket.clone(),
            self.timeout,
            self.name.clone(),
            self.config.clone(),
            Arc::clone(&self.shared),
            Arc::clone(&self.probe),
            self.cgroup_dir(),
        );
        std::thread::Builder::new()
            .name("docker-api".into())
            .spawn(move || {
                let _ = sender.send(run_sequence(&socket, timeout, &name, &config, &shared, probe, dir));
            })
            .map_err(|e| LaunchError::backend(ApiError::Http { call: "create", source: e.into() }))?;
        self.receiver = Some(receiver);
        Ok(())
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        if self.sequence.is_none() {
            let Some(receiver) = &self.receiver else {
                return Err(LaunchError::InvalidSpec(format!("{API_BACKEND} instance was not launched")));
            };
            match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(sequence) => self.sequence = Some(sequence),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => self.sequence = Some(Sequence::failed("the API thread ended")),
            }
        }
        let oom = self.cgroup.as_ref().is_some_and(|c| c.oom_killed());
        Ok(self.sequence.as_ref().map(|s| match &s.status {
            _ if oom => Outcome::OutOfMemory,
            Ok(code) => Outcome::Exited { code: *code as i32 },
            Err(reason) => Outcome::Failed { reason: reason.clone() },
        }))
    }

    fn marker_seen(&self) -> bool {
        self.shared.marker_seen.load(Ordering::Acquire)
    }

    /// Kills the container through the daemon, as `docker kill` does; one not yet created or started
    /// is not started (the launch's thread sees `killed`).
    fn kill(&mut self) -> Result<(), LaunchError> {
        self.shared.killed.store(true, Ordering::Release);
        let id = self.shared.id.lock().ok().and_then(|slot| slot.clone());
        if let Some(id) = id {
            let mut client = ApiClient::connect(&self.socket, self.timeout).map_err(LaunchError::backend)?;
            client.kill(&id).map_err(LaunchError::backend)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, outcome: Outcome) -> Result<Record, LaunchError> {
        let timeline = self
            .timeline
            .ok_or_else(|| LaunchError::InvalidSpec(format!("{API_BACKEND} instance was not launched")))?;
        if self.sequence.is_none() {
            self.wait(Instant::now() + KILL_GRACE)?;
        }
        self.release_engine_side()?;
        let peak_bytes = self.cgroup.as_ref().and_then(|c| c.peak_bytes());
        if let Some(Ok(cgroup)) = self.cgroup.take().map(Arc::try_unwrap) {
            cgroup.remove()?;
        }
        let exit_ms = timeline.now_ms();
        let sequence = self.sequence.take().unwrap_or_else(|| Sequence::failed("not run"));
        let findings = self.shared.found.lock().ok().and_then(|mut slot| slot.take()).unwrap_or_default();
        let details_ms = sequence.timings;
        let mut notes = std::mem::take(&mut self.notes);
        notes.extend(findings.notes);
        notes.push(
            "launch boundary: instance cgroup created before the clock; the clock starts just before the \
             connection to the socket and its ping (the docker client's first call too); the daemon nests the \
             container's cgroup in the instance cgroup (CgroupParent), and exit_ms is taken once the container \
             and the cgroup are removed"
                .to_owned(),
        );
        Ok(Record {
            backend: API_BACKEND.to_owned(),
            phases: Phases {
                ready_ms: None,
                userspace_ms: None,
                workload_ms: timeline.ms(sequence.console.marker_at),
                exit_ms: Some(exit_ms),
                first_output_ms: timeline.ms(sequence.console.first_byte_at),
            },
            exit_code: outcome.exit_code(),
            outcome,
            console: sequence.console.text,
            memory: MemoryUsage {
                peak_bytes,
                pss_bytes: None,
                overhead_bytes: findings.overhead_bytes,
                shared_daemons_pss_bytes: findings.shared_daemons_pss_bytes,
            },
            notes,
            details_ms,
        })
    }
}

impl Drop for ApiInstance {
    fn drop(&mut self) {
        if self.timeline.is_some() && self.sequence.is_none() {
            let _ = self.kill();
            let _ = self.wait(Instant::now() + KILL_GRACE);
        }
        // On a path that is already failing; the cgroup goes with its own drop.
        let _ = self.release_engine_side();
    }
}

/// The docker client's start-up alone: `docker --version` (no daemon contacted), through the same
/// harness path as the CLI's `docker run` (instance cgroup, fork, join, console pipe).
#[derive(Debug)]
pub struct ClientStartupLauncher {
    client: PathBuf,
    cgroups: CgroupHost,
}

impl ClientStartupLauncher {
    pub(crate) fn new(client: PathBuf, cgroups: CgroupHost) -> Self {
        Self { client, cgroups }
    }
}

impl Launcher for ClientStartupLauncher {
    fn name(&self) -> &str {
        CLIENT_BACKEND
    }

    fn prepare(&self, _spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        Ok(Box::new(ClientStartupInstance {
            client: self.client.clone(),
            run: ToolRun::new(CLIENT_BACKEND, &self.cgroups)?,
        }))
    }
}

#[derive(Debug)]
struct ClientStartupInstance {
    client: PathBuf,
    run: ToolRun,
}

impl Instance for ClientStartupInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut command = Command::new(&self.client);
        command.arg("--version");
        self.run.start(command, ChildSetup::Plain, Streams::Merged, None)
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
        let note = format!("{} --version: the client's start-up, no daemon contacted", self.client.display());
        Ok(record(CLIENT_BACKEND, stopped, outcome, Phases::default(), None, vec![note]))
    }
}

/// The backend name of the CLI's `docker run` through a tap on the socket.
pub const TAPPED_BACKEND: &str = "docker-tapped";

/// The CLI's `docker run` pointed at a [`Tap`] on the daemon's socket, so each of its own calls is
/// timed from outside the client: its records carry, in `details_ms`, `first_request_ms` (launch
/// to the client's first request: its start-up as this run saw it) and one `cli_<call>_ms` per call
/// (request to the end of the daemon's answer: `cli_ping_ms`, `cli_create_ms`, `cli_attach_ms`,
/// `cli_wait_ms`, `cli_start_ms`; the CLI sends `wait` before `start`, so they overlap).
#[derive(Debug)]
pub struct TappedCliLauncher {
    client: Arc<EngineClient>,
    cgroups: CgroupHost,
    images: Arc<ImportedImages>,
    probe: Arc<dyn MarkerProbe>,
    run_flags: &'static [&'static str],
    notes: Vec<String>,
    tap: Arc<Tap>,
    /// Holds the tap's socket.
    _dir: tempfile::TempDir,
}

impl TappedCliLauncher {
    /// The CLI `binary` through a tap in front of `socket`.
    pub(crate) fn new(
        binary: PathBuf,
        socket: &Path,
        cgroups: CgroupHost,
        images: Arc<ImportedImages>,
        probe: Arc<dyn MarkerProbe>,
        run_flags: &'static [&'static str],
        mut notes: Vec<String>,
    ) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("boxbench-docker-tap-").tempdir()?;
        let tap = Tap::start(&dir.path().join("docker.sock"), socket)?;
        let client = Arc::new(EngineClient {
            name: "docker",
            binary,
            global_args: vec!["-H".into(), format!("unix://{}", tap.socket().display()).into()],
            setup: ChildSetup::Plain,
        });
        notes.push(format!(
            "through a tap on the socket ({} forwarding to {}): details_ms has each of the client's calls",
            tap.socket().display(),
            socket.display()
        ));
        Ok(Self { client, cgroups, images, probe, run_flags, notes, tap: Arc::new(tap), _dir: dir })
    }
}

impl Launcher for TappedCliLauncher {
    fn name(&self) -> &str {
        TAPPED_BACKEND
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let rootfs = resolve_rootfs(spec, TAPPED_BACKEND)?;
        check_workload(&rootfs, &spec.workload)?;
        let image = self.images.image_for(&rootfs).map_err(LaunchError::backend)?;
        let inner = EngineInstance::prepare(
            &self.client,
            &self.cgroups,
            spec,
            &image,
            self.run_flags,
            Some(Arc::clone(&self.probe)),
            self.notes.clone(),
        )?;
        Ok(Box::new(TappedInstance { inner: Box::new(inner), tap: Arc::clone(&self.tap), launched_at: None }))
    }
}

#[derive(Debug)]
struct TappedInstance {
    inner: Box<EngineInstance>,
    tap: Arc<Tap>,
    launched_at: Option<MonotonicNs>,
}

impl Instance for TappedInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        // What an earlier launch left on the tap is not this one's.
        self.tap.take();
        // The clock starts inside the launch, microseconds after this.
        self.launched_at = Some(MonotonicNs::now());
        self.inner.launch()
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        self.inner.wait(deadline)
    }

    fn marker_seen(&self) -> bool {
        self.inner.marker_seen()
    }

    fn kill(&mut self) -> Result<(), LaunchError> {
        self.inner.kill()
    }

    fn finish(self: Box<Self>, outcome: Outcome) -> Result<Record, LaunchError> {
        let Self { inner, tap, launched_at } = *self;
        let mut record = inner.finish(outcome)?;
        record.backend = TAPPED_BACKEND.to_owned();
        let calls = tap_calls(&tap.take());
        if let (Some(first), Some(launched)) = (calls.first(), launched_at) {
            record.details_ms.insert("first_request_ms".to_owned(), first.sent.millis_since(launched));
        }
        for call in &calls {
            if let Some(answered) = call.answered {
                let name = format!("cli_{}_ms", call.name.trim_start_matches('_'));
                record.details_ms.entry(name).or_insert(answered.millis_since(call.sent));
            }
        }
        Ok(record)
    }
}
