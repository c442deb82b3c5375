//! docker: `docker run --rm` through a Docker daemon, with the daemons' memory reported beside the
//! instance's.
//!
//! The client runs in the instance cgroup and the container's cgroup is nested under it
//! (`--cgroup-parent`); dockerd, containerd and the per-container containerd-shim run outside it, so
//! the instance's memory peak does not include them. They are a real cost the usual "containers
//! weigh megabytes" claim leaves out: at the marker, the shim's memory (per container) becomes
//! `overhead_bytes` and a note, and the daemons' PSS (shared by all containers)
//! `shared_daemons_pss_bytes` and a note.
//!
//! A running daemon is used when one answers (at `DockerOptions::host`, else the default socket).
//! When none does, a private daemon is started if `DockerOptions::start_dockerd` (`compare` asks by
//! default, `run` with `--start-dockerd`): it gets its own data root, exec root, configuration file,
//! key and socket in a temporary directory, no networking set-up, and is stopped (with its
//! containerd) when the launcher is dropped, leaving no process, mount or directory behind.
//! [`daemon_plan`] says beforehand which of these will happen. The client is `/usr/bin/docker`, the
//! Debian one that matches the Debian daemon (another `docker` first on PATH may be newer).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::mountinfo::mounts_under;
use boxbench_core::pss::{pss_bytes, rss_bytes};
use boxbench_core::{Instance, InstanceSpec, LaunchError, Launcher};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use crate::docker_api::{ClientStartupLauncher, DockerApiLauncher, TappedCliLauncher};
use crate::engine::container_name_prefix;
use crate::engine::{EngineClient, EngineError, EngineInstance, Findings, ImportedImages, MarkerProbe};
use crate::engine_api::{ApiClient, ServerVersion, socket_of_host};
use crate::oci_runtime::{check_workload, resolve_rootfs};
use crate::process::{ChildSetup, run_helper};
use crate::tool::{Tool, ToolError, find_on_path};

/// The Debian client, matching the Debian daemon.
const DEBIAN_CLIENT: &str = "/usr/bin/docker";
/// Where a system daemon listens.
pub(crate) const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How long a private daemon may take to answer.
const DAEMON_START_PATIENCE: Duration = Duration::from_secs(30);
/// How long a private daemon may take to stop on SIGTERM before it is killed.
const DAEMON_STOP_PATIENCE: Duration = Duration::from_secs(15);
/// The flags every `docker run` gets: never reach for a registry.
const RUN_FLAGS: [&str; 2] = ["--pull", "never"];
/// Where every dockerd makes its plugin directory, whatever its exec root; removed after a private
/// daemon stops if it was not there before (and is empty).
const PLUGIN_DIRS: [&str; 2] = ["/run/docker/plugins", "/run/docker"];
/// How long the containerd-shims of a stopped private daemon may take to exit before they are killed.
const SHIM_EXIT_PATIENCE: Duration = Duration::from_secs(5);
/// How many of a private daemon's last log lines an error quotes.
const LOG_TAIL_LINES: usize = 3;

/// A docker backend that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The client or dockerd is missing or unusable.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// No daemon answers and starting one was not asked for.
    #[error(
        "no Docker daemon answers at {host} ({reason}) and starting a private one was not asked for (`boxbench \
         run --start-dockerd` starts one; `compare` does unless --no-start-dockerd)"
    )]
    NoDaemon { host: String, reason: String },
    /// The private daemon's directory could not be made.
    #[error("dockerd directory in {dir}: {source}")]
    Workdir { dir: PathBuf, source: std::io::Error },
    /// dockerd could not be started.
    #[error("starting {binary}: {source}")]
    StartDaemon { binary: PathBuf, source: std::io::Error },
    /// dockerd did not answer in time; its log's tail says why.
    #[error("private dockerd did not answer at {host} within {seconds} s; its last log lines: {log_tail}")]
    DaemonSilent { host: String, seconds: u64, log_tail: String },
    /// dockerd exited before it answered; its log's tail says why.
    #[error("private dockerd {status} before answering; its last log lines: {log_tail}")]
    DaemonExited { status: ExitStatus, log_tail: String },
    /// Importing or removing an image failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How to reach or start Docker.
#[derive(Debug, Clone, Default)]
pub struct DockerOptions {
    /// Start a private dockerd when no daemon answers (stopped when the launcher is dropped); when
    /// false and none answers, the launcher is refused with [`DockerError::NoDaemon`].
    pub start_dockerd: bool,
    /// The daemon to talk to (`-H`); default: the system socket.
    pub host: Option<String>,
    /// The client binary; default: /usr/bin/docker, else `docker` on PATH.
    pub client: Option<PathBuf>,
    /// The dockerd binary for a private daemon; default: `dockerd` on PATH.
    pub dockerd: Option<PathBuf>,
}

/// A dockerd this launcher started; stopped with its containerd when dropped.
#[derive(Debug)]
struct PrivateDaemon {
    child: Child,
    /// Data root, exec root, configuration, key, socket and log; removed after the daemon stopped
    /// (in `drop`), with any mount the daemon left in it.
    dir: Option<tempfile::TempDir>,
    /// The plugin directories this daemon created (absent before it started).
    created_plugin_dirs: Vec<&'static str>,
}

impl PrivateDaemon {
    fn start(dockerd: &Tool, client: &Path) -> Result<(Self, String), DockerError> {
        let dir = tempfile::Builder::new()
            .prefix("boxbench-dockerd-")
            .tempdir()
            .map_err(|source| DockerError::Workdir { dir: std::env::temp_dir(), source })?;
        let path = dir.path();
        let host = format!("unix://{}", path.join("docker.sock").display());
        let log_path = path.join("dockerd.log");
        let log =
            fs::File::create(&log_path).map_err(|source| DockerError::Workdir { dir: log_path.clone(), source })?;
        let log_err = log.try_clone().map_err(|source| DockerError::Workdir { dir: log_path.clone(), source })?;
        // Its own configuration file: the host's /etc/docker/daemon.json may set what the flags
        // below set too, which dockerd refuses.
        let config_path = path.join("daemon.json");
        fs::write(&config_path, private_config(dockerd, &path.join("key.json")))
            .map_err(|source| DockerError::Workdir { dir: config_path.clone(), source })?;
        let created_plugin_dirs = PLUGIN_DIRS.into_iter().filter(|d| !Path::new(d).exists()).collect();
        let mut command = Command::new(&dockerd.path);
        command
            .arg("--config-file")
            .arg(&config_path)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false"])
            .args(["--storage-driver=overlay2"])
            .arg("--data-root")
            .arg(path.join("data"))
            .arg("--exec-root")
            .arg(path.join("exec"))
            .arg("--pidfile")
            .arg(path.join("dockerd.pid"))
            .args(["-H", &host])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child =
            command.spawn().map_err(|source| DockerError::StartDaemon { binary: dockerd.path.clone(), source })?;
        let mut daemon = Self { child, dir: Some(dir), created_plugin_dirs };
        let give_up = Instant::now() + DAEMON_START_PATIENCE;
        // Dropping `daemon` on an error stops what did start and removes its directory.
        while !daemon_answers(client, &host) {
            let log_tail = || log_tail(&fs::read_to_string(&log_path).unwrap_or_default(), LOG_TAIL_LINES);
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(DockerError::DaemonExited { status, log_tail: log_tail() });
            }
            if Instant::now() > give_up {
                return Err(DockerError::DaemonSilent {
                    host,
                    seconds: DAEMON_START_PATIENCE.as_secs(),
                    log_tail: log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok((daemon, host))
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.pid());
        let containerd = children_named(self.pid(), "containerd");
        // dockerd stops its containerd and unmounts its storage on SIGTERM; SIGKILL only if it hangs.
        // A daemon already reaped (it exited while starting) is not signalled: its pid may be reused.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(pid, Signal::SIGTERM);
        }
        let give_up = Instant::now() + DAEMON_STOP_PATIENCE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > give_up => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        for pid in containerd {
            // Still there only if dockerd died without stopping it.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(dir) = self.dir.take() {
            // A containerd-shim outlives its container by a moment and is not containerd's child:
            // the daemon's own (its command line names the daemon's directory) are waited for, and
            // killed if they linger. (One that has exited is init's to reap: a zombie with no
            // command line, holding nothing.)
            let needle = dir.path().as_os_str().as_encoded_bytes().to_vec();
            let give_up = Instant::now() + SHIM_EXIT_PATIENCE;
            loop {
                let lingering = processes_mentioning(&needle);
                if lingering.is_empty() {
                    break;
                }
                if Instant::now() > give_up {
                    for pid in lingering {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // dockerd unmounts its data root on SIGTERM; after a SIGKILL its mounts would stay and
            // keep the directory from being removed.
            for mount in mounts_under(dir.path()) {
                detach(&mount);
            }
            drop(dir);
        }
        for dir in &self.created_plugin_dirs {
            // Fails, as it should, if another daemon started meanwhile has put something there.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Lazily unmounts `mount` (errors ignored: what cannot be unmounted stays, and is what a leftover
/// check would find).
fn detach(mount: &Path) {
    let Ok(path) = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()) else { return };
    // SAFETY: `path` is a NUL-terminated string that outlives the call; umount2 only reads it.
    unsafe {
        libc::umount2(path.as_ptr(), libc::MNT_DETACH);
    }
}

/// The private daemon's `daemon.json`. dockerd before 23.0 writes its identity key to
/// /etc/docker/key.json unless told otherwise (a file it would leave behind); later ones have no
/// such key and refuse the setting.
fn private_config(dockerd: &Tool, key_path: &Path) -> String {
    let major: Option<u32> = dockerd.version.split('.').next().and_then(|m| m.parse().ok());
    if major.is_some_and(|m| m < 23) {
        serde_json::json!({ "deprecated-key-path": key_path }).to_string()
    } else {
        "{}".to_owned()
    }
}

/// The last `lines` lines of a dockerd log on one line, each without its timestamp
/// (`time="..." level=fatal msg="..."` becomes `level=fatal msg="..."`), joined with ` | `.
fn log_tail(log: &str, lines: usize) -> String {
    let tail: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &tail[tail.len().saturating_sub(lines)..];
    if tail.is_empty() {
        return "(the log is empty)".to_owned();
    }
    tail.iter()
        .map(|line| match line.strip_prefix("time=\"").and_then(|rest| rest.split_once("\" ")) {
            Some((_, rest)) => rest.trim(),
            None => line.trim(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// What Docker will run on, as `compare` and `doctor` see it before launching anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DaemonPlan {
    /// A daemon answers at `host`: it is used (and left running).
    Running {
        /// Where it answers.
        host: String,
    },
    /// No daemon answers: `compare` (and `run --start-dockerd`) start a private `dockerd` and stop
    /// it afterwards.
    StartPrivate {
        /// The dockerd that will be started.
        dockerd: PathBuf,
    },
    /// No daemon answers and there is no dockerd to start.
    NoDockerd {
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The docker client is not installed.
    NotInstalled {
        /// The Debian package that provides it.
        package: &'static str,
    },
}

impl DaemonPlan {
    /// A few words saying what will happen, for a table.
    pub fn brief(&self) -> String {
        match self {
            DaemonPlan::Running { host } => format!("daemon answers at {host}"),
            DaemonPlan::StartPrivate { .. } => "no daemon runs: compare starts a private dockerd".to_owned(),
            DaemonPlan::NoDockerd { package } => format!("no daemon runs and no dockerd (Debian package {package})"),
            DaemonPlan::NotInstalled { package } => format!("not installed (Debian package {package})"),
        }
    }

    /// One sentence saying what will happen.
    pub fn describe(&self) -> String {
        match self {
            DaemonPlan::Running { host } => format!("a Docker daemon answers at {host}: compare and run use it"),
            DaemonPlan::StartPrivate { dockerd } => format!(
                "no daemon answers at {DEFAULT_HOST}: compare starts a private {} (own data and exec roots, no \
                 iptables, no bridge) and stops it afterwards (--no-start-dockerd leaves docker out); run \
                 does with --start-dockerd",
                dockerd.display()
            ),
            DaemonPlan::NoDockerd { package } => {
                format!("no daemon answers at {DEFAULT_HOST} and dockerd is not installed (Debian package {package})")
            }
            DaemonPlan::NotInstalled { package } => format!("not installed (Debian package {package})"),
        }
    }
}

/// The docker client boxbench uses by default: the Debian one, else `docker` on PATH.
pub(crate) fn default_client() -> Option<PathBuf> {
    Some(PathBuf::from(DEBIAN_CLIENT)).filter(|p| p.exists()).or_else(|| find_on_path("docker"))
}

/// What Docker will run on here with the default options: a daemon answering at the system socket, a
/// private dockerd started for the run, or nothing.
pub fn daemon_plan() -> DaemonPlan {
    let Some(client) = default_client() else { return DaemonPlan::NotInstalled { package: "docker.io" } };
    if daemon_answers(&client, DEFAULT_HOST) {
        return DaemonPlan::Running { host: DEFAULT_HOST.to_owned() };
    }
    match find_on_path("dockerd") {
        Some(dockerd) => DaemonPlan::StartPrivate { dockerd },
        None => DaemonPlan::NoDockerd { package: "docker.io" },
    }
}

/// Both halves of `docker version`: the client's version, and the server's from the Engine API's
/// `GET /version` (for `boxbench doctor`).
#[derive(Debug, Clone, Serialize)]
pub struct DockerVersions {
    /// The client binary, if installed.
    pub client_binary: Option<PathBuf>,
    /// Its version.
    pub client_version: Option<String>,
    /// Where the server was asked.
    pub host: String,
    /// The server's `/version`, or why it could not be asked.
    pub server: Result<ServerVersion, String>,
    /// The API version the two speak (the server's newest), where it answered.
    pub api_version: Option<String>,
}

/// The client's and the server's versions; the server asked at `host` (default: the system socket).
pub fn docker_versions(host: Option<&str>) -> DockerVersions {
    let client_binary = default_client();
    let client_version = client_binary.as_deref().and_then(|path| crate::tool::version_of(path).ok());
    let host = host.unwrap_or(DEFAULT_HOST).to_owned();
    let asked = ApiClient::connect(&socket_of_host(&host), Duration::from_secs(5))
        .and_then(|mut api| Ok((api.version()?, api.api_version().to_owned())));
    let (server, api_version) = match asked {
        Ok((server, api)) => (Ok(server), Some(api)),
        Err(e) => (Err(e.to_string()), None),
    };
    DockerVersions { client_binary, client_version, host, server, api_version }
}

/// True if the daemon at `host` answers a version query.
pub(crate) fn daemon_answers(client: &Path, host: &str) -> bool {
    Command::new(client)
        .args(["-H", host, "version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// docker as a boxbench backend.
#[derive(Debug)]
pub struct DockerLauncher {
    client_tool: Tool,
    client: Arc<EngineClient>,
    cgroups: CgroupHost,
    probe: Arc<DaemonProbe>,
    // Field order matters: images are removed through the daemon before a private daemon stops.
    images: Arc<ImportedImages>,
    /// Where image tars are written before import.
    _workdir: tempfile::TempDir,
    daemon: Option<PrivateDaemon>,
}

impl DockerLauncher {
    /// Connects to a running daemon, or starts a private one if `options.start_dockerd`.
    pub fn new(options: DockerOptions) -> Result<Self, LaunchError> {
        let unsupported = |e: DockerError| LaunchError::Unsupported(e.to_string());
        let client_tool = match options.client.clone().or_else(default_client) {
            Some(path) => Tool::at("docker", &path),
            None => Tool::find("docker", "docker.io"),
        }
        .map_err(|e| unsupported(e.into()))?;
        let cgroups = CgroupHost::detect()?;
        let wanted_host = options.host.clone().unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let (daemon, host) = if daemon_answers(&client_tool.path, &wanted_host) {
            (None, wanted_host)
        } else if options.start_dockerd {
            let dockerd = match &options.dockerd {
                Some(path) => Tool::at("dockerd", path),
                None => Tool::find("dockerd", "docker.io"),
            }
            .map_err(|e| unsupported(e.into()))?;
            let (daemon, host) = PrivateDaemon::start(&dockerd, &client_tool.path).map_err(LaunchError::backend)?;
            (Some(daemon), host)
        } else {
            // The API says why (no socket, no permission on it, not a daemon) where the client's
            // exit status does not.
            let reason = match ApiClient::connect(&socket_of_host(&wanted_host), Duration::from_secs(5)) {
                Err(e) => e.to_string(),
                Ok(_) => format!("the Engine API answers but `{} version` does not", client_tool.path.display()),
            };
            return Err(unsupported(DockerError::NoDaemon { host: wanted_host, reason }));
        };
        let workdir = tempfile::Builder::new()
            .prefix("boxbench-docker-")
            .tempdir()
            .map_err(|source| LaunchError::backend(DockerError::Workdir { dir: std::env::temp_dir(), source }))?;
        let client = Arc::new(EngineClient {
            name: "docker",
            binary: client_tool.path.clone(),
            global_args: vec!["-H".into(), host.clone().into()],
            setup: ChildSetup::Plain,
        });
        let server_version = run_helper(
            {
                let mut c = client.command();
                c.args(["version", "--format", "{{.Server.Version}}"]);
                c
            },
            ChildSetup::Plain,
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
        let probe = Arc::new(DaemonProbe {
            dockerd_pid: daemon.as_ref().map(PrivateDaemon::pid),
            private: daemon.is_some(),
            server_version,
            host,
        });
        let images = Arc::new(ImportedImages::new(Arc::clone(&client), workdir.path().to_owned()));
        Ok(Self { client_tool, client, cgroups, probe, images, _workdir: workdir, daemon })
    }

    /// The client binary and version in use.
    pub fn tool(&self) -> &Tool {
        &self.client_tool
    }

    /// The daemon's address (`unix://PATH`).
    pub fn host(&self) -> &str {
        &self.probe.host
    }

    /// The same daemon driven through its Engine API (claim 7's split of a `docker run`), running the
    /// same image as this launcher. It must not outlive this launcher, which may own the daemon.
    pub fn api_launcher(&self) -> Result<DockerApiLauncher, LaunchError> {
        DockerApiLauncher::new(
            socket_of_host(&self.probe.host),
            Arc::clone(&self.images),
            self.cgroups.clone(),
            Arc::clone(&self.probe) as Arc<dyn MarkerProbe>,
        )
        .map_err(|e| LaunchError::Unsupported(e.to_string()))
    }

    /// This launcher's `docker run` with the client pointed at a tap on the daemon's socket, which
    /// times each of the client's calls (claim 7).
    pub fn tapped_launcher(&self) -> Result<TappedCliLauncher, LaunchError> {
        TappedCliLauncher::new(
            self.client_tool.path.clone(),
            &socket_of_host(&self.probe.host),
            self.cgroups.clone(),
            Arc::clone(&self.images),
            Arc::clone(&self.probe) as Arc<dyn MarkerProbe>,
            &RUN_FLAGS,
            self.notes(),
        )
        .map_err(|e| LaunchError::backend(DockerError::Workdir { dir: std::env::temp_dir(), source: e }))
    }

    /// This launcher's client's start-up alone (`docker --version`).
    pub fn client_launcher(&self) -> ClientStartupLauncher {
        ClientStartupLauncher::new(self.client_tool.path.clone(), self.cgroups.clone())
    }

    /// True if this launcher started (and will stop) its own dockerd.
    pub fn started_daemon(&self) -> bool {
        self.daemon.is_some()
    }

    /// Containers of this process the daemon still knows (what a clean run leaves none of).
    pub fn leftover_containers(&self) -> Result<Vec<String>, LaunchError> {
        self.client.containers_named(&container_name_prefix()).map_err(LaunchError::backend)
    }

    /// The images the daemon holds.
    pub fn image_names(&self) -> Result<Vec<String>, LaunchError> {
        self.client.image_names().map_err(LaunchError::backend)
    }

    fn notes(&self) -> Vec<String> {
        vec![
            format!(
                "{} client, daemon {} ({}) at {}; run --rm --network none; ready_ms and userspace_ms are not \
                 observable from outside docker",
                self.client_tool.label(),
                self.probe.server_version,
                if self.probe.private { "private dockerd started by boxbench" } else { "already running" },
                self.probe.host
            ),
            "memory.peak_bytes covers the docker client and the container only: dockerd, containerd and the \
             containerd-shim run outside the instance cgroup (see the notes below and overhead_bytes = shim PSS)"
                .to_owned(),
            "image imported once per launcher from a tar of the spec's root filesystem (not counted)".to_owned(),
        ]
    }
}

impl Launcher for DockerLauncher {
    fn name(&self) -> &str {
        "docker"
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let rootfs = resolve_rootfs(spec, "docker")?;
        check_workload(&rootfs, &spec.workload)?;
        let image = self.images.image_for(&rootfs).map_err(|e| LaunchError::backend(DockerError::from(e)))?;
        let probe: Arc<dyn MarkerProbe> = Arc::clone(&self.probe) as Arc<dyn MarkerProbe>;
        let instance =
            EngineInstance::prepare(&self.client, &self.cgroups, spec, &image, &RUN_FLAGS, Some(probe), self.notes())?;
        Ok(Box::new(instance))
    }
}

/// Samples, at the marker, the memory Docker spends outside the instance cgroup.
#[derive(Debug)]
struct DaemonProbe {
    dockerd_pid: Option<i32>,
    private: bool,
    server_version: String,
    host: String,
}

impl MarkerProbe for DaemonProbe {
    fn sample(&self, cgroup_dir: &Path) -> Findings {
        let mut findings = Findings::default();
        let shim = shim_of_container_in(cgroup_dir);
        if let Some(shim) = shim {
            let pss = pss_bytes(shim);
            findings.overhead_bytes = pss;
            findings.notes.push(format!(
                "{} (pid {shim}, outside the instance cgroup) at the marker: RSS {}, PSS {}",
                command_name(shim).unwrap_or_else(|| "containerd-shim".to_owned()),
                mib(rss_bytes(shim)),
                mib(pss)
            ));
        }
        let dockerd = match self.dockerd_pid {
            Some(pid) => vec![pid],
            None => processes_named("dockerd"),
        };
        let containerd: Vec<i32> = match self.dockerd_pid {
            Some(pid) => children_named(pid, "containerd"),
            None => processes_named("containerd"),
        };
        let sum = |pids: &[i32]| pids.iter().filter_map(|&p| pss_bytes(p)).reduce(|a, b| a + b);
        findings.shared_daemons_pss_bytes =
            [sum(&dockerd), sum(&containerd)].into_iter().flatten().reduce(|a, b| a + b);
        findings.notes.push(format!(
            "daemons at the marker (shared by every container, not in peak_bytes): dockerd PSS {} ({} process), \
             containerd PSS {} ({} process)",
            mib(sum(&dockerd)),
            dockerd.len(),
            mib(sum(&containerd)),
            containerd.len()
        ));
        findings
    }
}

/// The containerd-shim serving the container whose cgroup is nested in `cgroup_dir`. Docker names
/// the container's cgroup after the container id, which the shim carries on its command line; the
/// cgroup outlives the container's processes by a moment, so this works even when a short workload
/// has already exited when the marker is seen. Failing that, the parent of a container process that
/// lives outside the cgroup is the shim.
fn shim_of_container_in(cgroup_dir: &Path) -> Option<i32> {
    let ids: Vec<String> = fs::read_dir(cgroup_dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let by_id = fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
        if !command_name(pid)?.starts_with("containerd-shim") {
            return None;
        }
        let cmdline = String::from_utf8_lossy(&fs::read(entry.path().join("cmdline")).ok()?).into_owned();
        ids.iter().any(|id| cmdline.split('\0').any(|arg| arg == id)).then_some(pid)
    });
    by_id.or_else(|| {
        let mut in_cgroup = Vec::new();
        collect_pids(cgroup_dir, &mut in_cgroup);
        let client_pids = read_pids(&cgroup_dir.join("cgroup.procs"));
        in_cgroup
            .iter()
            .filter(|pid| !client_pids.contains(pid))
            .filter_map(|&pid| parent_of(pid))
            .find(|ppid| !in_cgroup.contains(ppid))
    })
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "unknown".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64))
}

fn read_pids(procs: &Path) -> Vec<i32> {
    fs::read_to_string(procs).map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect()).unwrap_or_default()
}

fn collect_pids(dir: &Path, pids: &mut Vec<i32>) {
    pids.extend(read_pids(&dir.join("cgroup.procs")));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            collect_pids(&entry.path(), pids);
        }
    }
}

/// The parent pid from /proc/PID/stat (the field after the parenthesised command, which may itself
/// contain spaces or parentheses).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn command_name(pid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim().to_owned())
}

fn processes_named(name: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| command_name(pid).as_deref() == Some(name))
        .collect()
}

/// Processes other than this one whose command line contains `needle`.
fn processes_mentioning(needle: &[u8]) -> Vec<i32> {
    let own = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

fn children_named(parent: i32, name: &str) -> Vec<i32> {
    processes_named(name).into_iter().filter(|&pid| parent_of(pid) == Some(parent)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_dockerd(dir: &Path, script: &str) -> Tool {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("dockerd");
        fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        Tool::at("dockerd", &path).unwrap()
    }

    fn own_temp_dirs() -> Vec<PathBuf> {
        fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("boxbench-dockerd-"))
            .map(|e| e.path())
            .collect()
    }

    #[test]
    fn a_private_dockerd_that_exits_is_an_error_quoting_its_last_log_lines_and_leaves_nothing() {
        let bin = tempfile::tempdir().unwrap();
        // Prints its configuration file (the first argument after --config-file) as a log line.
        let dockerd = fake_dockerd(
            bin.path(),
            r#"[ "$1" = --version ] && { echo "Docker version 20.10.24+dfsg1, build 297e128"; exit 0; }
echo 'time="2026-12-01T00:00:00.1Z" level=info msg="Starting up"' >&2
echo "config $(cat "$2")" >&2
echo 'time="2026-12-01T00:00:00.3Z" level=fatal msg="failed to start daemon: no overlay here"' >&2
exit 1
"#,
        );
        let before = own_temp_dirs();
        let started = Instant::now();
        let err = PrivateDaemon::start(&dockerd, Path::new("/bin/false")).unwrap_err();
        assert!(
            started.elapsed() < DAEMON_START_PATIENCE / 2,
            "waited {:?} for a daemon that had exited",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(matches!(err, DockerError::DaemonExited { .. }), "{text}");
        assert!(text.starts_with("private dockerd exit status: 1 before answering; its last log lines: "), "{text}");
        assert!(text.ends_with(r#"level=fatal msg="failed to start daemon: no overlay here""#), "{text}");
        assert!(!text.contains('\n') && !text.contains("time="), "{text}");
        // A dockerd before 23.0 keeps its key in the private directory, not /etc/docker.
        assert!(text.contains(r#"deprecated-key-path"#) && text.contains("boxbench-dockerd-"), "{text}");
        let mut after = own_temp_dirs();
        after.retain(|d| !before.contains(d));
        assert!(after.is_empty(), "left {after:?}");
    }

    #[test]
    fn log_tails_lose_their_timestamps_and_stay_on_one_line() {
        let log = "\ntime=\"t1\" level=info msg=\"a\"\nplain line\n\ntime=\"t3\" level=fatal msg=\"b c\"\n";
        assert_eq!(log_tail(log, 2), r#"plain line | level=fatal msg="b c""#);
        assert_eq!(log_tail(log, 9), r#"level=info msg="a" | plain line | level=fatal msg="b c""#);
        assert_eq!(log_tail("", 3), "(the log is empty)");
    }

    #[test]
    fn only_an_old_dockerd_gets_a_key_path() {
        let tool =
            |version: &str| Tool { name: "dockerd".into(), path: "/usr/bin/dockerd".into(), version: version.into() };
        let key = Path::new("/tmp/x/key.json");
        assert_eq!(private_config(&tool("20.10.24+dfsg1"), key), r#"{"deprecated-key-path":"/tmp/x/key.json"}"#);
        assert_eq!(private_config(&tool("27.3.1"), key), "{}");
    }

    #[test]
    fn parent_pid_is_read_past_a_command_with_spaces() {
        let own = std::process::id() as i32;
        let parent = parent_of(own).unwrap();
        assert_eq!(parent, nix::unistd::getppid().as_raw());
        assert_eq!(parent_of(i32::MAX), None);
    }
}
