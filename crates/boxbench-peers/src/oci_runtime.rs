//! The low-level OCI runtimes — crun, runc, youki and gVisor's runsc — driven as `RUNTIME run
//! --bundle DIR ID`: what a container costs without any engine above the runtime.
//!
//! All take the same bundle and command line, so one module drives them. Each instance gets its own
//! bundle directory holding a `config.json` derived from the spec's bundle (or a built-in one when
//! only a root filesystem is given) and pointing at the shared, read-only root filesystem; the
//! container's cgroup is nested under the instance cgroup, so the instance's memory peak covers the
//! runtime and the container. The runtimes' state lives in a temporary directory of the launcher
//! (`--root`), and their own error messages go to a per-instance `--log` file, which tells a runtime
//! failure from a workload that exits non-zero. On every path (exit, error, deadline, kill, drop)
//! an instance whose state is still present is removed with `delete --force`.
//!
//! runsc is not a shared-kernel container: its sandbox runs gVisor's own kernel (the Sentry) in user
//! space, intercepting the workload's system calls; [`OciRuntime::is_application_kernel`] says so
//! for the report.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use boxbench_core::cgroup::{CgroupHost, CgroupMode, InstanceCgroup};
use boxbench_core::{Instance, LaunchError, Launcher, Outcome, Phases, Record};
use boxbench_core::{InstanceSpec, Workload};
use serde_json::{Value, json};

use crate::hierarchies::{self, HierarchyError};
use crate::process::{ChildSetup, ProcessError, Streams, passthrough_outcome, run_helper};
use crate::run::{ToolRun, record};
use crate::tool::{Tool, ToolError};

/// The youki release the set-up script installs (`cargo install --locked youki@VERSION`).
pub const YOUKI_VERSION: &str = "0.7.0";

/// The youki build features the set-up script asks for: both cgroup managers, the systemd driver and
/// seccomp, which the crate leaves off by default.
pub const YOUKI_FEATURES: &str = "v1,v2,systemd,seccomp";

/// How often a waiting youki is sent SIGCHLD, so that its missed-exit hang costs at most this.
const YOUKI_NUDGE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// The gVisor platform runsc intercepts system calls with. ptrace works on any host; this Debian
/// release (2022-12) has no systrap, and its KVM platform never reaches the workload under kvm_pvm.
pub const RUNSC_PLATFORM: &str = "ptrace";

/// Which OCI runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciRuntime {
    /// crun (C).
    Crun,
    /// runc (Go).
    Runc,
    /// youki (Rust).
    Youki,
    /// gVisor's runsc (Go): an application kernel in user space, not the host's.
    Runsc,
}

impl OciRuntime {
    /// Every runtime, in the order `compare` and `doctor` list them.
    pub const ALL: [OciRuntime; 4] = [OciRuntime::Crun, OciRuntime::Runc, OciRuntime::Youki, OciRuntime::Runsc];

    /// The runtime whose backend is called `name`, if one is.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|runtime| runtime.name() == name)
    }

    /// What the runtime's process does between fork and exec on a host whose cgroups are `mode`:
    /// crun refuses a hybrid cgroup host, so it runs in a private mount namespace without the v2 mount.
    pub fn child_setup(self, mode: CgroupMode) -> ChildSetup {
        if self == OciRuntime::Crun && mode == CgroupMode::Hybrid {
            ChildSetup::PrivateMountsWithoutUnifiedCgroup
        } else {
            ChildSetup::Plain
        }
    }

    /// The binary's and the backend's name.
    pub fn name(self) -> &'static str {
        match self {
            OciRuntime::Crun => "crun",
            OciRuntime::Runc => "runc",
            OciRuntime::Youki => "youki",
            OciRuntime::Runsc => "runsc",
        }
    }

    /// The Debian package that provides it (`None`: youki, installed from the Rust registry).
    pub fn debian_package(self) -> Option<&'static str> {
        match self {
            OciRuntime::Youki => None,
            other => Some(other.name()),
        }
    }

    /// How a user gets it, for the error when it is missing.
    pub fn install_hint(self) -> String {
        match self.debian_package() {
            Some(package) => format!("Debian package: {package}"),
            None => format!(
                "cargo install --locked --features {YOUKI_FEATURES} youki@{YOUKI_VERSION}, as scripts/setup-host.sh does"
            ),
        }
    }

    /// True when the container runs on a kernel of its own in user space (gVisor), neither the host's
    /// kernel nor a VM's.
    pub fn is_application_kernel(self) -> bool {
        self == OciRuntime::Runsc
    }

    /// Global options before the command. runsc: no network stack (the bundle's network namespace is
    /// empty anyway; its default would copy the interfaces of boxbench's own namespace, the host's)
    /// and the platform it intercepts system calls with.
    fn global_options(self) -> Vec<String> {
        match self {
            OciRuntime::Runsc => vec!["--network=none".to_owned(), format!("--platform={RUNSC_PLATFORM}")],
            _ => Vec::new(),
        }
    }
}

/// An OCI runtime backend that failed.
#[derive(Debug, thiserror::Error)]
pub enum OciRuntimeError {
    /// The runtime's binary is missing or unusable.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// A bundle file or the launcher's state directory could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The template `config.json` is not JSON.
    #[error("{path}: {source}")]
    ConfigJson { path: PathBuf, source: serde_json::Error },
    /// The template `config.json` lacks a field the launch needs, or has it with the wrong type.
    #[error("{path}: {field} {problem}")]
    ConfigField { path: PathBuf, field: &'static str, problem: &'static str },
    /// The runtime process failed to start, be waited for, or clean up.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A cgroup the runtime made in another hierarchy stayed.
    #[error(transparent)]
    Hierarchy(#[from] HierarchyError),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OciRuntimeError + '_ {
    move |source| OciRuntimeError::Io { path: path.to_owned(), source }
}

/// A missing or unusable runtime: the host cannot run this backend.
fn unsupported(e: ToolError) -> LaunchError {
    LaunchError::Unsupported(OciRuntimeError::Tool(e).to_string())
}

static NEXT_CONTAINER: AtomicU64 = AtomicU64::new(0);

/// An OCI runtime as a boxbench backend.
#[derive(Debug)]
pub struct OciRuntimeLauncher {
    runtime: OciRuntime,
    tool: Tool,
    cgroups: CgroupHost,
    /// `--root` state and per-instance bundles; shared with instances so it outlives the last one.
    workdir: Arc<tempfile::TempDir>,
}

impl OciRuntimeLauncher {
    /// The runtime found on `PATH`.
    pub fn new(runtime: OciRuntime) -> Result<Self, LaunchError> {
        let tool = Tool::find_or(runtime.name(), &runtime.install_hint()).map_err(unsupported)?;
        Self::with_tool(runtime, tool)
    }

    fn with_tool(runtime: OciRuntime, tool: Tool) -> Result<Self, LaunchError> {
        let cgroups = CgroupHost::detect()?;
        if let Some(problem) = missing_cgroup_manager(runtime, &tool.path, cgroups.mode) {
            return Err(LaunchError::Unsupported(problem));
        }
        let workdir = tempfile::Builder::new()
            .prefix(&format!("boxbench-{}-", runtime.name()))
            .tempdir()
            .map_err(|e| LaunchError::backend(OciRuntimeError::Io { path: std::env::temp_dir(), source: e }))?;
        Ok(Self { runtime, tool, cgroups, workdir: Arc::new(workdir) })
    }

    /// The runtime binary and version in use.
    pub fn tool(&self) -> &Tool {
        &self.tool
    }

    /// The `--root` state directory the runtime keeps its containers in (for leak checks).
    pub fn state_root(&self) -> PathBuf {
        self.workdir.path().join("state")
    }

    /// See [`OciRuntime::child_setup`].
    fn child_setup(&self) -> ChildSetup {
        self.runtime.child_setup(self.cgroups.mode)
    }

    fn prepare_instance(&self, spec: &InstanceSpec) -> Result<OciRuntimeInstance, LaunchError> {
        let (mut config, rootfs) = bundle_template(spec, self.runtime.name())?;
        check_workload(&rootfs, &spec.workload)?;
        let id = format!("boxbench-{}-{}", std::process::id(), NEXT_CONTAINER.fetch_add(1, Ordering::Relaxed));
        let run = ToolRun::for_nesting_runtime(self.runtime.name(), &self.cgroups)?;
        let cgroup_relative = run.cgroup().map(InstanceCgroup::relative_path).unwrap_or_default();
        let container_cgroup = cgroup_relative.join("container");
        let template_path = spec.images.bundle.as_ref().map_or_else(|| rootfs.clone(), |b| b.join("config.json"));
        customise_config(&mut config, spec, &rootfs, &container_cgroup).map_err(|(field, problem)| {
            LaunchError::InvalidSpec(OciRuntimeError::ConfigField { path: template_path, field, problem }.to_string())
        })?;
        let bundle_dir = self.workdir.path().join("bundles").join(&id);
        fs::create_dir_all(&bundle_dir).map_err(|e| LaunchError::backend(io_error(&bundle_dir)(e)))?;
        let instance = OciRuntimeInstance {
            runtime: self.runtime,
            binary: self.tool.path.clone(),
            setup: self.child_setup(),
            id,
            state_root: self.state_root(),
            log_path: bundle_dir.join("runtime.log"),
            bundle_dir,
            memory_root: self.cgroups.memory_root.clone(),
            cgroup_relative,
            run,
            next_nudge: None,
            notes: self.notes(),
            _workdir: Arc::clone(&self.workdir),
        };
        // From here on, dropping `instance` removes the bundle directory and the cgroup.
        let config_path = instance.bundle_dir.join("config.json");
        let text = serde_json::to_vec_pretty(&config).map_err(|source| {
            LaunchError::backend(OciRuntimeError::ConfigJson { path: config_path.clone(), source })
        })?;
        fs::write(&config_path, text).map_err(|e| LaunchError::backend(io_error(&config_path)(e)))?;
        Ok(instance)
    }

    fn notes(&self) -> Vec<String> {
        let name = self.runtime.name();
        let mut notes = vec![
            format!(
                "{} run, no engine above it; the container's cgroup nested in the instance cgroup",
                self.tool.label()
            ),
            format!("ready_ms and userspace_ms are not observable from outside {name}"),
            format!("memory.peak_bytes covers {name} and the container; pss_bytes sums them at the marker"),
        ];
        if self.runtime == OciRuntime::Youki {
            notes.push(format!(
                "youki is sent SIGCHLD every {} ms while boxbench waits for it: youki {YOUKI_VERSION} sometimes \
                 misses its container's exit and sleeps forever; such a launch's exit_ms is late by up to that",
                YOUKI_NUDGE_INTERVAL.as_millis()
            ));
        }
        if self.runtime == OciRuntime::Runsc {
            notes.push(format!(
                "runsc ran gVisor's application kernel on its {RUNSC_PLATFORM} platform (--platform={RUNSC_PLATFORM}), \
                 with --network=none; its workload's uname is gVisor's, not the host's"
            ));
        }
        if self.child_setup() == ChildSetup::PrivateMountsWithoutUnifiedCgroup {
            notes.push(format!(
                "{name} ran in a private mount namespace with the cgroup v2 mount /sys/fs/cgroup/unified \
                 detached (hybrid host: {name} refuses hybrid mode); set up in the forked child before exec, \
                 no extra process"
            ));
        }
        notes
    }
}

impl Launcher for OciRuntimeLauncher {
    fn name(&self) -> &str {
        self.runtime.name()
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        Ok(Box::new(self.prepare_instance(spec)?))
    }
}

/// Why `runtime` at `binary` cannot manage this host's cgroups, if it cannot: youki's cgroup v1 and
/// v2 managers are build features (`youki features` lists which it has), and a host in `mode` needs
/// one of them. The other runtimes always have both.
pub fn missing_cgroup_manager(runtime: OciRuntime, binary: &Path, mode: CgroupMode) -> Option<String> {
    if runtime != OciRuntime::Youki {
        return None;
    }
    let needed = if mode == CgroupMode::Unified { "v2" } else { "v1" };
    let output = Command::new(binary).arg("features").output().ok()?;
    let features: Value = serde_json::from_slice(&output.stdout).ok()?;
    if features.pointer(&format!("/linux/cgroup/{needed}")) == Some(&Value::Bool(true)) {
        return None;
    }
    Some(format!(
        "{} was built without its cgroup {needed} manager, which this {mode} host needs (rebuild: {})",
        binary.display(),
        runtime.install_hint()
    ))
}

/// The template configuration and the absolute root filesystem it runs from.
fn bundle_template(spec: &InstanceSpec, runtime: &str) -> Result<(Value, PathBuf), LaunchError> {
    let invalid = |e: OciRuntimeError| LaunchError::InvalidSpec(e.to_string());
    if let Some(bundle) = &spec.images.bundle {
        let path = bundle.join("config.json");
        let text = fs::read(&path).map_err(|e| invalid(io_error(&path)(e)))?;
        let config: Value = serde_json::from_slice(&text)
            .map_err(|source| invalid(OciRuntimeError::ConfigJson { path: path.clone(), source }))?;
        let root = config.pointer("/root/path").and_then(Value::as_str).ok_or_else(|| {
            invalid(OciRuntimeError::ConfigField { path: path.clone(), field: "root.path", problem: "is missing" })
        })?;
        let rootfs = bundle.join(root);
        let rootfs = rootfs.canonicalize().map_err(|e| invalid(io_error(&rootfs)(e)))?;
        return Ok((config, rootfs));
    }
    if let Some(rootfs) = &spec.images.rootfs {
        let rootfs = rootfs.canonicalize().map_err(|e| invalid(io_error(rootfs)(e)))?;
        return Ok((default_config(), rootfs));
    }
    Err(LaunchError::InvalidSpec(format!("{runtime} needs images.bundle (an OCI bundle) or images.rootfs")))
}

/// The root filesystem a spec names: its bundle's root, or its root filesystem directory.
pub(crate) fn resolve_rootfs(spec: &InstanceSpec, tool: &str) -> Result<PathBuf, LaunchError> {
    bundle_template(spec, tool).map(|(_, rootfs)| rootfs)
}

/// A named workload's script must be in the root filesystem; a command's program is the user's call.
pub(crate) fn check_workload(rootfs: &Path, workload: &Workload) -> Result<(), LaunchError> {
    if matches!(workload, Workload::Command(_)) {
        return Ok(());
    }
    let argv = workload.argv();
    let script = rootfs.join(argv[0].trim_start_matches('/'));
    if !script.is_file() {
        return Err(LaunchError::InvalidSpec(format!(
            "{}: the {} workload's script is missing from the root filesystem",
            script.display(),
            workload.name()
        )));
    }
    Ok(())
}

/// The configuration used when the spec names a root filesystem but no bundle: the same shape as
/// boxbench's image builder writes (non-interactive root process, read-only root, proc, a tmpfs /dev
/// and sysfs; pid, network, ipc, uts and mount namespaces).
fn default_config() -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"],
            "cwd": "/"
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "boxbench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
        }
    })
}

/// Sets what each instance needs in the template: its workload, hostname, the absolute root, its
/// cgroup (nested in the instance cgroup) and memory limit. Errors name the field.
fn customise_config(
    config: &mut Value,
    spec: &InstanceSpec,
    rootfs: &Path,
    cgroup_path: &Path,
) -> Result<(), (&'static str, &'static str)> {
    let top = config.as_object_mut().ok_or(("(top level)", "is not an object"))?;
    let process = object_field(top, "process")?;
    process.insert("args".into(), json!(spec.workload.argv()));
    process.insert("terminal".into(), json!(false));
    let root = object_field(top, "root")?;
    root.insert("path".into(), json!(rootfs));
    top.insert("hostname".into(), json!(spec.hostname));
    let linux = object_field(top, "linux")?;
    linux.insert("cgroupsPath".into(), json!(cgroup_path));
    let resources = object_field(linux, "resources")?;
    match spec.memory_limit_bytes {
        Some(bytes) => {
            object_field(resources, "memory")?.insert("limit".into(), json!(bytes));
        }
        None => {
            if let Some(memory) = resources.get_mut("memory").and_then(Value::as_object_mut) {
                memory.remove("limit");
            }
        }
    }
    Ok(())
}

fn object_field<'a>(
    parent: &'a mut serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<&'a mut serde_json::Map<String, Value>, (&'static str, &'static str)> {
    parent.entry(field).or_insert_with(|| json!({})).as_object_mut().ok_or((field, "is not an object"))
}

/// One container run by crun or runc.
#[derive(Debug)]
struct OciRuntimeInstance {
    runtime: OciRuntime,
    binary: PathBuf,
    setup: ChildSetup,
    id: String,
    state_root: PathBuf,
    bundle_dir: PathBuf,
    log_path: PathBuf,
    memory_root: PathBuf,
    cgroup_relative: PathBuf,
    run: ToolRun,
    /// youki only: when it is next sent SIGCHLD (see `wait`).
    next_nudge: Option<Instant>,
    notes: Vec<String>,
    _workdir: Arc<tempfile::TempDir>,
}

impl OciRuntimeInstance {
    fn global_args(&self) -> Vec<String> {
        let mut args =
            vec![format!("--root={}", self.state_root.display()), format!("--log={}", self.log_path.display())];
        args.extend(self.runtime.global_options());
        args
    }

    /// The runtime's own error messages (empty when it ran the workload without complaint).
    fn runtime_errors(&self) -> String {
        fs::read_to_string(&self.log_path).map(|t| t.trim().to_owned()).unwrap_or_default()
    }

    fn outcome_of(&self, status: ExitStatus) -> Outcome {
        let errors = self.runtime_errors();
        if !errors.is_empty() {
            let first = errors.lines().next().unwrap_or_default();
            return Outcome::Failed { reason: format!("{}: {first}", self.runtime.name()) };
        }
        if self.run.cgroup().is_some_and(|c| c.oom_killed()) {
            return Outcome::OutOfMemory;
        }
        passthrough_outcome(status)
    }

    /// What the runtime keeps of this container under `--root`: a directory named by its id (crun,
    /// runc, youki), or files named `ID_sandbox:ID.state` and `.lock` (runsc).
    fn state_entries(&self) -> Vec<PathBuf> {
        let runsc_prefix = format!("{}_sandbox:", self.id);
        fs::read_dir(&self.state_root)
            .map(|dir| {
                dir.flatten()
                    .filter(|e| e.file_name().to_str().is_some_and(|n| n == self.id || n.starts_with(&runsc_prefix)))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes the container if the runtime left its state (it did not get to delete it), the
    /// cgroups it made in other hierarchies, and the bundle directory. Idempotent.
    fn release_runtime_side(&mut self) -> Result<(), OciRuntimeError> {
        self.run.kill();
        let mut first_error = None;
        if !self.state_entries().is_empty() {
            let mut delete = Command::new(&self.binary);
            delete.args(self.global_args()).args(["delete", "--force", &self.id]);
            if let Err(e) = run_helper(delete, self.setup) {
                first_error.get_or_insert(OciRuntimeError::from(e));
            }
            // runsc's `delete` leaves the container's lock file behind.
            for entry in self.state_entries() {
                if let Err(e) = fs::remove_file(&entry) {
                    first_error.get_or_insert(io_error(&entry)(e));
                }
            }
        }
        if let Err(e) = hierarchies::remove_beside_memory(&self.memory_root, &self.cgroup_relative) {
            first_error.get_or_insert(e.into());
        }
        if self.bundle_dir.exists() {
            if let Err(e) = fs::remove_dir_all(&self.bundle_dir) {
                first_error.get_or_insert(io_error(&self.bundle_dir)(e));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Instance for OciRuntimeInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut command = Command::new(&self.binary);
        command.args(self.global_args()).arg("run").arg("--bundle").arg(&self.bundle_dir).arg(&self.id);
        self.run.start(command, self.setup, Streams::Merged, None)
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        if self.runtime != OciRuntime::Youki {
            return Ok(self.run.wait(deadline)?.map(|status| self.outcome_of(status)));
        }
        // youki 0.7.0 sometimes misses its container's exit: the init is left a zombie and youki sleeps
        // in sigtimedwait for a SIGCHLD that came before it blocked it (about 1 `youki run` in 8
        // here, by hand too). Another SIGCHLD wakes it to reap and exit; while it runs, it only
        // reaps on one. The caller waits in short slices, so the nudge keeps its own clock.
        let next_nudge = *self.next_nudge.get_or_insert_with(|| Instant::now() + YOUKI_NUDGE_INTERVAL);
        if let Some(status) = self.run.wait(deadline.min(next_nudge))? {
            return Ok(Some(self.outcome_of(status)));
        }
        if Instant::now() >= next_nudge {
            self.run.signal(nix::sys::signal::Signal::SIGCHLD);
            self.next_nudge = Some(Instant::now() + YOUKI_NUDGE_INTERVAL);
        }
        Ok(None)
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
        self.release_runtime_side().map_err(LaunchError::backend)?;
        self.run.remove_cgroup()?;
        let notes = std::mem::take(&mut self.notes);
        Ok(record(self.runtime.name(), stopped, outcome, Phases::default(), None, notes))
    }
}

impl Drop for OciRuntimeInstance {
    fn drop(&mut self) {
        // Errors here are on a path that is already failing; the cgroup goes with `run`.
        let _ = self.release_runtime_side();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxbench_core::ImagePaths;

    #[test]
    fn config_gets_workload_root_cgroup_and_limit() {
        let mut spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
        spec.memory_limit_bytes = Some(64 << 20);
        spec.hostname = "box1".into();
        let mut config = default_config();
        customise_config(&mut config, &spec, Path::new("/images/rootfs"), Path::new("/boxbench/crun-1-0/container"))
            .unwrap();
        assert_eq!(config["process"]["args"], json!(["/boxbench/workloads/hello"]));
        assert_eq!(config["process"]["terminal"], json!(false));
        assert_eq!(config["root"], json!({"path": "/images/rootfs", "readonly": true}));
        assert_eq!(config["hostname"], json!("box1"));
        assert_eq!(config["linux"]["cgroupsPath"], json!("/boxbench/crun-1-0/container"));
        assert_eq!(config["linux"]["resources"]["memory"]["limit"], json!(64u64 << 20));
        assert_eq!(config["linux"]["namespaces"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn template_limit_is_dropped_without_a_spec_limit() {
        let spec = InstanceSpec::new(Workload::Command(vec!["/bin/true".into()]), ImagePaths::default());
        let mut config = default_config();
        config["linux"]["resources"] = json!({"memory": {"limit": 1}});
        customise_config(&mut config, &spec, Path::new("/r"), Path::new("/c")).unwrap();
        assert_eq!(config["process"]["args"], json!(["/bin/true"]));
        assert_eq!(config["linux"]["resources"]["memory"], json!({}));
    }

    #[test]
    fn malformed_template_names_the_field() {
        let spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
        let mut config = json!({"process": [], "root": {}});
        assert_eq!(
            customise_config(&mut config, &spec, Path::new("/r"), Path::new("/c")),
            Err(("process", "is not an object"))
        );
    }

    #[test]
    fn setup_script_builds_the_youki_this_crate_names() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-host.sh");
        let text = fs::read_to_string(&script).unwrap();
        assert!(text.contains(&format!("\nyouki_version={YOUKI_VERSION}\n")), "{}", script.display());
        assert!(text.contains(&format!("\nyouki_features={YOUKI_FEATURES}\n")), "{}", script.display());
    }

    #[test]
    fn only_youki_is_asked_for_its_cgroup_managers() {
        for runtime in [OciRuntime::Crun, OciRuntime::Runc, OciRuntime::Runsc] {
            assert_eq!(missing_cgroup_manager(runtime, Path::new("/nonexistent"), CgroupMode::Hybrid), None);
        }
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("youki");
        fs::write(&fake, "#!/bin/sh\necho '{\"linux\": {\"cgroup\": {\"v1\": false, \"v2\": true}}}'\n").unwrap();
        fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(missing_cgroup_manager(OciRuntime::Youki, &fake, CgroupMode::Unified), None);
        let problem = missing_cgroup_manager(OciRuntime::Youki, &fake, CgroupMode::Hybrid).unwrap();
        assert!(problem.contains("without its cgroup v1 manager"), "{problem}");
        assert!(problem.contains(YOUKI_FEATURES), "{problem}");
    }

    #[test]
    fn spec_without_images_is_refused_with_the_setting_named() {
        let spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
        let err = bundle_template(&spec, "crun").unwrap_err();
        assert_eq!(err.to_string(), "crun needs images.bundle (an OCI bundle) or images.rootfs");
    }
}
