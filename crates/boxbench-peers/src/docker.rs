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
//! Starting a private daemon when none runs is opt-in (`--start-dockerd`): it gets
//! its own data root, exec root and socket in a temporary directory, no networking set-up, and is
//! stopped (with its containerd) when the launcher is dropped. The client is `/usr/bin/docker`, the
//! Debian one that matches the Debian daemon (another `docker` first on PATH may be newer).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::pss::{pss_bytes, rss_bytes};
use boxbench_core::{Instance, InstanceSpec, LaunchError, Launcher};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::engine::container_name_prefix;
use crate::engine::{EngineClient, EngineError, EngineInstance, Findings, ImportedImages, MarkerProbe};
use crate::oci_runtime::{check_workload, resolve_rootfs};
use crate::process::{ChildSetup, run_helper};
use crate::tool::{Tool, ToolError};

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

/// A docker backend that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The client or dockerd is missing or unusable.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// No daemon answers and starting one was not asked for.
    #[error("no Docker daemon answers at {host}; start one, or set --start-dockerd to start a private one")]
    NoDaemon { host: String },
    /// The private daemon's directory could not be made.
    #[error("dockerd directory in {dir}: {source}")]
    Workdir { dir: PathBuf, source: std::io::Error },
    /// dockerd could not be started.
    #[error("starting {binary}: {source}")]
    StartDaemon { binary: PathBuf, source: std::io::Error },
    /// dockerd did not answer in time; its log's tail says why.
    #[error("dockerd did not answer at {host} within {seconds} s; log tail: {log_tail}")]
    DaemonSilent { host: String, seconds: u64, log_tail: String },
    /// Importing or removing an image failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// How to reach or start Docker.
#[derive(Debug, Clone, Default)]
pub struct DockerOptions {
    /// Start a private dockerd when no daemon answers (stopped when the launcher is dropped).
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
    /// Data root, exec root, socket and log; removed after the daemon stopped (in `drop`).
    _dir: tempfile::TempDir,
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
        let mut command = Command::new(&dockerd.path);
        command
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
        let daemon = Self { child, _dir: dir };
        let give_up = Instant::now() + DAEMON_START_PATIENCE;
        while !daemon_answers(client, &host) {
            if Instant::now() > give_up {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                // Dropping `daemon` stops what did start.
                return Err(DockerError::DaemonSilent {
                    host,
                    seconds: DAEMON_START_PATIENCE.as_secs(),
                    log_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
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
        let _ = kill(pid, Signal::SIGTERM);
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
    }
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
    images: ImportedImages,
    /// Where image tars are written before import.
    _workdir: tempfile::TempDir,
    daemon: Option<PrivateDaemon>,
}

impl DockerLauncher {
    /// Connects to a running daemon, or starts a private one if `options.start_dockerd`.
    pub fn new(options: DockerOptions) -> Result<Self, LaunchError> {
        let unsupported = |e: DockerError| LaunchError::Unsupported(e.to_string());
        let client_tool = match &options.client {
            Some(path) => Tool::at("docker", path),
            None if Path::new(DEBIAN_CLIENT).exists() => Tool::at("docker", Path::new(DEBIAN_CLIENT)),
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
            return Err(unsupported(DockerError::NoDaemon { host: wanted_host }));
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
        let images = ImportedImages::new(Arc::clone(&client), workdir.path().to_owned());
        Ok(Self { client_tool, client, cgroups, probe, images, _workdir: workdir, daemon })
    }

    /// The client binary and version in use.
    pub fn tool(&self) -> &Tool {
        &self.client_tool
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

fn children_named(parent: i32, name: &str) -> Vec<i32> {
    processes_named(name).into_iter().filter(|&pid| parent_of(pid) == Some(parent)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_pid_is_read_past_a_command_with_spaces() {
        let own = std::process::id() as i32;
        let parent = parent_of(own).unwrap();
        assert_eq!(parent, nix::unistd::getppid().as_raw());
        assert_eq!(parent_of(i32::MAX), None);
    }
}
