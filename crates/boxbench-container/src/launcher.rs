//! The `container` backend: [`ContainerLauncher`] checks a spec and its images and prepares a
//! [`ContainerInstance`] with the instance's cgroup set up before the clock (the launch boundary,
//! `boxbench_core::boundary`), whose launch clones the container's init into it and waits for the workload to be executed; its record has the timeline, the console, the
//! cgroup's memory peak and the PSS at the marker.
//!
//! Inputs: `images.bundle` (an OCI runtime bundle) if set, else `images.rootfs` (a directory, run
//! with all five namespaces, proc, a `/dev` tmpfs and read-only sysfs, as root, in `/`). With a
//! bundle, its `process.args` run unless the spec's workload is a command, which overrides them; the
//! spec's hostname is set (as the other OCI backends do) and its memory limit, if any, wins over
//! the bundle's; its cpu and pids limits are written before the clock beside the memory one
//! ([`crate::resources`]). The environment gets a default `PATH` when it has none.
//!
//! The workload is isolated as OCI's default config (`crun spec`) asks, unless a bundle says
//! otherwise: OCI's default capabilities (bounding set dropped, ambient set cleared),
//! `no_new_privs`, and `/proc` and `/sys` paths masked or made read-only as crun and runc do it.
//!
//! Everything an instance holds is released on every path: its init is killed and reaped (which
//! takes the rest of its PID namespace with it), the cgroup is removed, and its mounts never
//! existed outside its own mount namespace.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use boxbench_core::boundary::{BoundaryError, LaunchBoundary, Started};
use boxbench_core::cgroup::{CgroupError, CgroupHost, InstanceCgroup};
use boxbench_core::console::ConsoleCapture;
use boxbench_core::{
    Instance, InstanceSpec, LaunchError, Launcher, MemoryUsage, MonotonicNs, Outcome, Phases, READY_MARKER, Record,
    Timeline, Workload,
};
use nix::sys::wait::WaitStatus;

use seccompiler::BpfProgram;

use crate::bundle::{Bundle, BundleError, Rlimit, User};
use crate::capabilities::CapabilitySets;
use crate::namespaces::{IdMappings, Namespace, NamespaceError, NamespaceSet};
use crate::process::{self, ChildPlan, ExecSpec, ProcessError};
use crate::resources::{ControllerCgroups, Limits, ResourceError};
use crate::rootfs::{self, DEFAULT_MASKED_PATHS, DEFAULT_PATH, DEFAULT_READONLY_PATHS, MountSpec, RootfsError};
use crate::syscalls::{ChildFd, Step};

/// The backend's name.
pub const BACKEND: &str = "container";

/// The longest hostname Linux takes.
const HOSTNAME_MAX: usize = 64;

/// Why the container backend cannot be used, or an instance prepared, launched or finished.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Not running as root.
    #[error(
        "the container backend needs root (running as uid {0}): it creates namespaces, mounts filesystems, \
         makes device nodes and writes cgroups"
    )]
    NotRoot(u32),
    /// The spec names no root filesystem.
    #[error("the container backend needs images.rootfs (a directory) or images.bundle (an OCI runtime bundle)")]
    NoImage,
    /// The bundle cannot be run.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The root filesystem or a path in it cannot be used.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The namespaces cannot be set up as asked.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// A setting of the spec cannot be used.
    #[error("{setting} {value:?}: {reason}")]
    Setting { setting: &'static str, value: String, reason: &'static str },
    /// The instance's cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The cpu or pids limits could not be set.
    #[error(transparent)]
    Resources(#[from] ResourceError),
    /// The set-up before the clock failed.
    #[error(transparent)]
    Boundary(#[from] BoundaryError),
    /// The container's init failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// An instance was used out of order.
    #[error("container instance {0}")]
    Lifecycle(&'static str),
}

impl From<ContainerError> for LaunchError {
    fn from(err: ContainerError) -> Self {
        match err {
            ContainerError::NotRoot(_) => LaunchError::Unsupported(err.to_string()),
            ContainerError::NoImage
            | ContainerError::Bundle(_)
            | ContainerError::Rootfs(_)
            | ContainerError::Namespace(_)
            | ContainerError::Setting { .. } => LaunchError::InvalidSpec(err.to_string()),
            ContainerError::Cgroup(cgroup) => LaunchError::Cgroup(cgroup),
            ContainerError::Resources(_) => LaunchError::InvalidSpec(err.to_string()),
            ContainerError::Boundary(boundary) => LaunchError::Boundary(boundary),
            ContainerError::Process(_) | ContainerError::Lifecycle(_) => LaunchError::backend(err),
        }
    }
}

/// boxbench's own namespace container launcher.
#[derive(Debug)]
pub struct ContainerLauncher {
    cgroups: CgroupHost,
}

impl ContainerLauncher {
    /// The launcher, if this process is root and the host has a memory cgroup controller.
    pub fn new() -> Result<Self, ContainerError> {
        check_root(nix::unistd::geteuid().as_raw())?;
        Ok(Self { cgroups: CgroupHost::detect()? })
    }
}

fn check_root(euid: u32) -> Result<(), ContainerError> {
    if euid == 0 { Ok(()) } else { Err(ContainerError::NotRoot(euid)) }
}

impl Launcher for ContainerLauncher {
    fn name(&self) -> &str {
        BACKEND
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let mut prepared = Prepared::from_spec(spec)?;
        let boundary = LaunchBoundary::prepare(&self.cgroups, BACKEND, false, prepared.memory_limit)?;
        let controllers = ControllerCgroups::apply(&self.cgroups, boundary.cgroup(), &prepared.limits)
            .map_err(ContainerError::from)?;
        // On v1 the init joins the cpu and pids hierarchies right after the memory one.
        let joins = (0..controllers.join_files().len()).map(|index| Step::JoinCgroup(ChildFd::Controller(index)));
        prepared.plan.steps.splice(1..1, joins);
        Ok(Box::new(ContainerInstance {
            boundary: Some(boundary),
            controllers: Some(controllers),
            prepared,
            running: None,
            outcome: None,
        }))
    }
}

/// An instance checked and ready to launch: the child's whole plan is built.
#[derive(Debug)]
struct Prepared {
    plan: ChildPlan,
    memory_limit: Option<u64>,
    limits: Limits,
    id_mappings: Option<IdMappings>,
}

/// What the container runs, from a bundle or from the spec alone.
struct Source {
    rootfs: PathBuf,
    readonly: bool,
    argv: Vec<String>,
    env: Vec<String>,
    cwd: String,
    user: User,
    rlimits: Vec<Rlimit>,
    no_new_privileges: bool,
    capabilities: CapabilitySets,
    hostname: String,
    mounts: Vec<MountSpec>,
    namespaces: NamespaceSet,
    id_mappings: Option<IdMappings>,
    memory_limit: Option<u64>,
    limits: Limits,
    seccomp: Vec<BpfProgram>,
    masked_paths: Vec<String>,
    readonly_paths: Vec<String>,
}

impl Source {
    /// A bundle's settings, with the spec's hostname, command (if it has one) and memory limit over
    /// them.
    fn from_bundle(dir: &Path, spec: &InstanceSpec) -> Result<Self, ContainerError> {
        let bundle = Bundle::load(dir)?;
        let argv = match &spec.workload {
            Workload::Command(argv) => argv.clone(),
            _ => bundle.args,
        };
        Ok(Self {
            rootfs: bundle.root,
            readonly: bundle.readonly,
            argv,
            env: bundle.env,
            cwd: bundle.cwd,
            user: bundle.user,
            rlimits: bundle.rlimits,
            no_new_privileges: bundle.no_new_privileges,
            capabilities: bundle.capabilities,
            hostname: spec.hostname.clone(),
            mounts: bundle.mounts,
            namespaces: bundle.namespaces,
            id_mappings: bundle.id_mappings,
            memory_limit: spec.memory_limit_bytes.or(bundle.memory_limit),
            limits: bundle.limits,
            seccomp: bundle.seccomp,
            masked_paths: bundle.masked_paths,
            readonly_paths: bundle.readonly_paths,
        })
    }

    /// A root filesystem directory with boxbench's defaults.
    fn from_rootfs(rootfs: &Path, spec: &InstanceSpec) -> Self {
        Self {
            rootfs: rootfs.to_owned(),
            readonly: false,
            argv: spec.workload.argv(),
            env: Vec::new(),
            cwd: "/".to_owned(),
            user: User::default(),
            rlimits: Vec::new(),
            no_new_privileges: true,
            capabilities: CapabilitySets::oci_default(),
            hostname: spec.hostname.clone(),
            mounts: MountSpec::defaults(),
            namespaces: NamespaceSet::all(),
            id_mappings: None,
            memory_limit: spec.memory_limit_bytes,
            limits: Limits::default(),
            seccomp: Vec::new(),
            masked_paths: DEFAULT_MASKED_PATHS.map(str::to_owned).to_vec(),
            readonly_paths: DEFAULT_READONLY_PATHS.map(str::to_owned).to_vec(),
        }
    }
}

fn c_string(setting: &'static str, value: &str) -> Result<std::ffi::CString, ContainerError> {
    std::ffi::CString::new(value).map_err(|_| ContainerError::Setting {
        setting,
        value: value.to_owned(),
        reason: "contains a NUL byte",
    })
}

impl Prepared {
    fn from_spec(spec: &InstanceSpec) -> Result<Self, ContainerError> {
        let mut source = match (&spec.images.bundle, &spec.images.rootfs) {
            (Some(bundle), _) => Source::from_bundle(bundle, spec)?,
            (None, Some(rootfs)) => Source::from_rootfs(rootfs, spec),
            (None, None) => return Err(ContainerError::NoImage),
        };
        if source.memory_limit == Some(0) {
            return Err(ContainerError::Setting {
                setting: "memory limit",
                value: "0".to_owned(),
                reason: "a container needs more than 0 bytes",
            });
        }
        let rootfs = rootfs::check_rootfs(&source.rootfs)?;
        if !source.env.iter().any(|var| var.starts_with("PATH=")) {
            source.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let path_var = source.env.iter().find_map(|var| var.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
        let program = source.argv.first().map(String::as_str).unwrap_or_default();
        let exec_path = rootfs::find_executable(&rootfs, program, &source.cwd, path_var)?;
        rootfs::check_cwd(&rootfs, &source.cwd)?;

        // Joining the cgroup comes first, so the whole setup is charged to the instance; then, in a
        // user namespace, the parent's mappings, without which the init has no ids to work with.
        let mut steps = vec![Step::JoinCgroup(ChildFd::Cgroup)];
        let user_namespace = source.namespaces.contains(Namespace::User);
        if user_namespace {
            // Then the init becomes the namespace's root: until then it is the host's root, which
            // the namespace does not map, and the files it would make could not be owned.
            steps.extend([Step::AwaitIdMaps, Step::SetIds { uid: 0, gid: 0, groups: Vec::new() }]);
        }
        if source.namespaces.contains(Namespace::Cgroup) {
            steps.push(Step::UnshareCgroupNamespace);
        }
        steps.extend(rootfs::rootfs_steps(&rootfs, source.readonly, &source.mounts, user_namespace)?);
        steps.extend(rootfs::protected_path_steps(&source.readonly_paths, &source.masked_paths)?);
        if source.namespaces.contains(crate::namespaces::Namespace::Uts) {
            if source.hostname.is_empty() || source.hostname.len() > HOSTNAME_MAX {
                return Err(ContainerError::Setting {
                    setting: "hostname",
                    value: source.hostname,
                    reason: "must be 1 to 64 bytes long",
                });
            }
            steps.push(Step::Hostname(c_string("hostname", &source.hostname)?));
        }
        steps.extend([
            Step::Dup2 { from: ChildFd::Stdin, to: 0 },
            Step::Dup2 { from: ChildFd::Console, to: 1 },
            Step::Dup2 { from: ChildFd::Console, to: 2 },
            Step::CloexecFrom(3),
        ]);
        // Resource limits while the init may still raise a hard one (CAP_SYS_RESOURCE).
        steps.extend(source.rlimits.iter().map(|r| Step::Rlimit {
            name: r.name,
            resource: r.resource,
            soft: r.soft,
            hard: r.hard,
        }));
        // Without no_new_privs the kernel takes a seccomp filter only from CAP_SYS_ADMIN, which goes
        // with the capabilities below: then the filter comes first, as runc does it.
        let seccomp = (!source.seccomp.is_empty()).then(|| Step::Seccomp(std::mem::take(&mut source.seccomp)));
        let (seccomp_early, seccomp_last) = if source.no_new_privileges { (None, seccomp) } else { (seccomp, None) };
        steps.extend(seccomp_early);
        // As runc orders it: the bounding set first (dropping needs CAP_SETPCAP), the ids with the
        // permitted set kept across the change, the working directory reached as the user, then
        // the capabilities the workload starts with.
        let caps = source.capabilities;
        let User { uid, gid, additional_gids } = source.user;
        steps.extend([
            Step::LimitBoundingCaps(caps.bounding),
            Step::KeepCapsOnUidChange,
            Step::SetIds { uid, gid, groups: additional_gids },
            Step::ResetSignals,
            Step::Chdir(c_string("working directory", &source.cwd)?),
            Step::SetCaps { effective: caps.effective, permitted: caps.permitted, inheritable: caps.inheritable },
            Step::SetAmbientCaps(caps.ambient),
        ]);
        if source.no_new_privileges {
            steps.push(Step::NoNewPrivs);
        }
        // Last, so the setup's own calls are not filtered.
        steps.extend(seccomp_last);

        let exec = ExecSpec {
            path: exec_path,
            argv: source.argv.iter().map(|arg| c_string("argument", arg)).collect::<Result<_, _>>()?,
            env: source.env.iter().map(|var| c_string("environment variable", var)).collect::<Result<_, _>>()?,
        };
        let plan = ChildPlan { clone_flags: source.namespaces.clone_flags(), steps, exec };
        Ok(Self { plan, memory_limit: source.memory_limit, limits: source.limits, id_mappings: source.id_mappings })
    }
}

/// One launch of the container backend.
#[derive(Debug)]
pub struct ContainerInstance {
    /// The cgroup set up before the clock, until the launch starts the clock.
    boundary: Option<LaunchBoundary>,
    /// The cpu and pids limits' cgroups, made in prepare, until the launch hands them to Running.
    controllers: Option<ControllerCgroups>,
    prepared: Prepared,
    running: Option<Running>,
    outcome: Option<Outcome>,
}

/// A launched container. Dropping it kills and reaps the init, drains the console and removes the
/// cgroup, in that order.
#[derive(Debug)]
struct Running {
    timeline: Timeline,
    child: process::Child,
    console: Option<ConsoleCapture>,
    cgroup: Option<Arc<InstanceCgroup>>,
    /// Dropped after the memory cgroup, whose removal waited for the container's tasks to go.
    controllers: Option<ControllerCgroups>,
    ready_at: Option<MonotonicNs>,
    exec_at: Option<MonotonicNs>,
    /// Where the clock started and stops.
    boundary_note: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Drop runs on error paths, which report their own error.
        let _ = self.child.kill_and_reap();
        if let Some(console) = self.console.take() {
            console.join();
        }
        // The last reference to the cgroup goes with this struct; InstanceCgroup's Drop removes it.
    }
}

impl ContainerInstance {
    fn start(&mut self) -> Result<(), ContainerError> {
        let boundary = self.boundary.take().ok_or(ContainerError::Lifecycle("launched twice"))?;
        let Started { timeline, cgroup, join_file, steps } = boundary.start();
        let boundary_note = boxbench_core::boundary::describe(&steps);
        let controllers = self.controllers.take();
        let plan = &self.prepared.plan;
        let controller_joins = controllers.as_ref().map(ControllerCgroups::join_files).unwrap_or_default();
        let (child, console_read) =
            process::spawn(plan, join_file.into(), controller_joins, self.prepared.id_mappings.as_ref())?;
        // From here on, an early return drops `child` (killed, reaped) and then `cgroup` (removed).
        let sampled = Arc::clone(&cgroup);
        let console = ConsoleCapture::spawn(File::from(console_read), READY_MARKER, move || {
            boxbench_core::pss::total_pss_bytes(&sampled.pids())
        })
        .map_err(|e| ProcessError::Handshake { pid: child.pid(), reason: format!("console reader thread: {e}") })?;
        // Put the console under Running's ordered cleanup before anything else can fail.
        let mut running = Running {
            timeline,
            child,
            console: Some(console),
            cgroup: Some(cgroup),
            controllers,
            ready_at: None,
            exec_at: None,
            boundary_note,
        };
        match running.child.wait_exec(&plan.steps, &plan.exec) {
            Ok(times) => {
                running.ready_at = Some(times.ready_at);
                running.exec_at = Some(times.exec_at);
            }
            // A limit too small for the setup itself: the instance ran out of memory, which is an
            // outcome to record, not a launch failure.
            Err(_) if running.cgroup.as_ref().is_some_and(|cgroup| cgroup.oom_killed()) => {
                running.child.kill_and_reap()?;
                self.outcome = Some(Outcome::OutOfMemory);
            }
            Err(err) => return Err(err.into()),
        }
        self.running = Some(running);
        Ok(())
    }

    fn wait_until(&mut self, deadline: Instant) -> Result<Option<Outcome>, ContainerError> {
        if let Some(outcome) = &self.outcome {
            return Ok(Some(outcome.clone()));
        }
        let running = self.running.as_mut().ok_or(ContainerError::Lifecycle("waited for before launch"))?;
        let Some(status) = running.child.wait_until(deadline)? else { return Ok(None) };
        let oom_killed = running.cgroup.as_ref().is_some_and(|cgroup| cgroup.oom_killed());
        let outcome = outcome_of(status, oom_killed);
        self.outcome = Some(outcome.clone());
        Ok(Some(outcome))
    }

    fn record(&mut self, outcome: Outcome) -> Result<Record, ContainerError> {
        let mut running = self.running.take().ok_or(ContainerError::Lifecycle("finished before launch"))?;
        running.child.kill_and_reap()?;
        let console = running.console.take().map(ConsoleCapture::join).unwrap_or_default();
        let mut peak_bytes = None;
        if let Some(cgroup) = running.cgroup.take() {
            peak_bytes = cgroup.peak_bytes();
            // The console thread, now joined, held the only other reference.
            if let Ok(cgroup) = Arc::try_unwrap(cgroup) {
                cgroup.remove()?;
            }
        }
        drop(running.controllers.take());
        let exit_at = MonotonicNs::now();
        let timeline = running.timeline;
        Ok(Record {
            backend: BACKEND.to_owned(),
            phases: Phases {
                ready_ms: timeline.ms(running.ready_at),
                userspace_ms: timeline.ms(running.exec_at),
                workload_ms: timeline.ms(console.marker_at),
                exit_ms: timeline.ms(Some(exit_at)),
                first_output_ms: timeline.ms(console.first_byte_at),
            },
            exit_code: outcome.exit_code(),
            outcome,
            console: console.text,
            memory: MemoryUsage {
                peak_bytes,
                pss_bytes: console.marker_sample,
                overhead_bytes: None,
                shared_daemons_pss_bytes: None,
            },
            notes: vec![
                "ready_ms: the container's init stamped it just before execve; userspace_ms: boxbench saw the \
                 execve succeed"
                    .to_owned(),
                "peak_bytes covers the container from its setup on; the namespaces made by clone(2) are charged \
                 to boxbench's own cgroup"
                    .to_owned(),
                std::mem::take(&mut running.boundary_note),
            ],
            details_ms: Default::default(),
        })
    }
}

/// How the init's wait status and the cgroup's OOM count say the instance ended.
fn outcome_of(status: WaitStatus, oom_killed: bool) -> Outcome {
    match status {
        WaitStatus::Exited(_, 0) => Outcome::Exited { code: 0 },
        _ if oom_killed => Outcome::OutOfMemory,
        WaitStatus::Exited(_, code) => Outcome::Exited { code },
        WaitStatus::Signaled(_, signal, _) => Outcome::Signaled { signal: signal as i32 },
        other => Outcome::Failed { reason: format!("unexpected wait status {other:?}") },
    }
}

impl Instance for ContainerInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        Ok(self.start()?)
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        Ok(self.wait_until(deadline)?)
    }

    fn marker_seen(&self) -> bool {
        self.running.as_ref().and_then(|r| r.console.as_ref()).is_some_and(ConsoleCapture::marker_seen)
    }

    fn kill(&mut self) -> Result<(), LaunchError> {
        if let Some(running) = &self.running {
            running.child.kill();
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, outcome: Outcome) -> Result<Record, LaunchError> {
        Ok(self.record(outcome)?)
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    use super::*;

    #[test]
    fn not_root_is_refused_with_the_reason() {
        let err = check_root(1000).unwrap_err();
        assert!(err.to_string().starts_with("the container backend needs root (running as uid 1000)"), "{err}");
        assert!(matches!(LaunchError::from(err), LaunchError::Unsupported(_)));
        assert!(check_root(0).is_ok());
    }

    #[test]
    fn wait_status_and_oom_make_the_outcome() {
        let pid = Pid::from_raw(1);
        assert_eq!(outcome_of(WaitStatus::Exited(pid, 3), false), Outcome::Exited { code: 3 });
        assert_eq!(
            outcome_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false), false),
            Outcome::Signaled { signal: 9 }
        );
        assert_eq!(outcome_of(WaitStatus::Signaled(pid, Signal::SIGKILL, false), true), Outcome::OutOfMemory);
        assert_eq!(outcome_of(WaitStatus::Exited(pid, 137), true), Outcome::OutOfMemory);
        assert_eq!(outcome_of(WaitStatus::Exited(pid, 0), true), Outcome::Exited { code: 0 });
    }

    /// A bundle with a runnable rootfs in a temporary directory (no root needed to plan it).
    fn planned(config: serde_json::Value) -> Result<Prepared, ContainerError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "proc", "dev", "sys"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::write(rootfs.join("bin/sh"), "").unwrap();
        std::fs::set_permissions(rootfs.join("bin/sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let images = boxbench_core::ImagePaths { bundle: Some(dir.path().to_owned()), ..Default::default() };
        Prepared::from_spec(&InstanceSpec::new(Workload::Hello, images))
    }

    fn config(extra_namespaces: &[&str]) -> serde_json::Value {
        let mut namespaces: Vec<serde_json::Value> =
            ["pid", "ipc", "uts", "mount"].iter().map(|t| serde_json::json!({"type": t})).collect();
        namespaces.extend(extra_namespaces.iter().map(|t| serde_json::json!({"type": t})));
        serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/sh"], "cwd": "/", "user": {"uid": 0, "gid": 0, "additionalGids": [7]},
                        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 64, "hard": 64}]},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {
                "namespaces": namespaces,
                "seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}
            }
        })
    }

    fn position(steps: &[Step], wanted: impl Fn(&Step) -> bool) -> usize {
        steps.iter().position(wanted).expect("step in the plan")
    }

    #[test]
    fn a_user_namespace_waits_for_its_mappings_and_becomes_root_first() {
        let mut value = config(&["user", "cgroup"]);
        value["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        value["linux"]["gidMappings"] = value["linux"]["uidMappings"].clone();
        let prepared = planned(value).unwrap();
        let steps = &prepared.plan.steps;
        assert_eq!(
            steps[..4],
            [
                Step::JoinCgroup(ChildFd::Cgroup),
                Step::AwaitIdMaps,
                Step::SetIds { uid: 0, gid: 0, groups: vec![] },
                Step::UnshareCgroupNamespace
            ]
        );
        assert!(prepared.plan.clone_flags.contains(nix::sched::CloneFlags::CLONE_NEWUSER));
        assert!(!prepared.plan.clone_flags.contains(nix::sched::CloneFlags::CLONE_NEWCGROUP));
        assert!(prepared.id_mappings.is_some());
        // In a user namespace /dev's devices are the host's, bound: mknod is not allowed there.
        assert!(steps.iter().any(|s| matches!(s, Step::EmptyFile(_))));
        assert!(!steps.iter().any(|s| matches!(s, Step::CharDevice { .. })));
    }

    #[test]
    fn rlimits_come_before_the_capabilities_drop_and_seccomp_last() {
        let prepared = planned(config(&[])).unwrap();
        let steps = &prepared.plan.steps;
        let rlimit = position(steps, |s| matches!(s, Step::Rlimit { name: "RLIMIT_NOFILE", soft: 64, .. }));
        let bounding = position(steps, |s| matches!(s, Step::LimitBoundingCaps(_)));
        let ids = position(steps, |s| matches!(s, Step::SetIds { groups, .. } if groups == &[7]));
        assert!(rlimit < bounding && bounding < ids);
        assert!(matches!(steps.last(), Some(Step::Seccomp(programs)) if programs.len() == 1));
        assert!(steps.contains(&Step::NoNewPrivs));

        // Without no_new_privs the filter goes in while CAP_SYS_ADMIN is still there.
        let mut value = config(&[]);
        value["process"]["noNewPrivileges"] = serde_json::json!(false);
        let steps = planned(value).unwrap().plan.steps;
        let seccomp = position(&steps, |s| matches!(s, Step::Seccomp(_)));
        assert!(seccomp < position(&steps, |s| matches!(s, Step::LimitBoundingCaps(_))));
        assert!(!steps.contains(&Step::NoNewPrivs));
    }

    #[test]
    fn a_spec_without_images_is_refused() {
        let spec = InstanceSpec::new(Workload::Hello, Default::default());
        let err = Prepared::from_spec(&spec).unwrap_err();
        assert!(matches!(err, ContainerError::NoImage));
    }
}
