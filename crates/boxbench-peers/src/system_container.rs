//! System containers: the full-OS disk's tree booted by its own systemd, as `systemd-nspawn --boot`
//! (Debian `systemd-container`) and LXC (Debian `lxc`) boot it — "a whole OS without a VM". Both reach
//! the same workload service as the VM boots of the disk ([`crate::full_os_boot`]), which prints the
//! marker, systemd's boot timestamps and the exit status, then powers the container off.
//!
//! Copy-on-write per launch: the tree is the read-only lower layer of an overlay whose upper layer is
//! the launch's own (nspawn `--volatile=overlay`: a tmpfs; LXC `overlay:` rootfs: a directory in the
//! launch's scratch directory), so a launch cannot change the next one. Both mounts live in the
//! tool's mount namespace and go with it.
//!
//! Cgroups: nspawn (`--keep-unit`) and LXC (`lxc.cgroup.relative`) make the container's cgroups under
//! their own cgroup in every hierarchy, so the tool joins the instance's cgroup in every hierarchy
//! before it executes ([`crate::hierarchies::create_beside_memory`]); on finish those are removed
//! with it. The console: nspawn's passive console pty forwarded to its stdout; LXC's console log
//! written to its stdout (`lxc.console.logfile = /dev/stdout`). systemd's status lines are off
//! (`systemd.show_status=no`): nspawn's console forwarding was seen to drop a 4 KiB burst of them.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::{Instance, InstanceSpec, LaunchError, Launcher, Outcome, Phases, Record, Workload};

use crate::full_os_boot::{BootTimestamps, clean_exit_outcome, last_lines};
use crate::hierarchies;
use crate::process::{ChildSetup, JoinFds, Streams};
use crate::run::{ToolRun, record};
use crate::tool::Tool;

/// Where systemd-nspawn keeps a running machine's propagation directory; a machine killed with its
/// nspawn leaves it behind.
const NSPAWN_PROPAGATE_DIR: &str = "/run/systemd/nspawn/propagate";

/// The programs in a tree that make it bootable by a system container.
const REQUIRED_IN_TREE: [&str; 2] = ["lib/systemd/systemd", "boxbench/run-workload"];

static NEXT_MACHINE: AtomicU64 = AtomicU64::new(0);

/// Which system container manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemContainer {
    /// `systemd-nspawn --boot`.
    Nspawn,
    /// `lxc-start -F`.
    Lxc,
}

impl SystemContainer {
    /// Both, in the order they are documented.
    pub const ALL: [SystemContainer; 2] = [SystemContainer::Nspawn, SystemContainer::Lxc];

    /// The backend name (`nspawn`, `lxc`).
    pub fn backend_name(self) -> &'static str {
        match self {
            SystemContainer::Nspawn => "nspawn",
            SystemContainer::Lxc => "lxc",
        }
    }

    /// The program run and the Debian package providing it.
    pub fn program(self) -> (&'static str, &'static str) {
        match self {
            SystemContainer::Nspawn => ("systemd-nspawn", "systemd-container"),
            SystemContainer::Lxc => ("lxc-start", "lxc"),
        }
    }
}

/// A system container backend.
#[derive(Debug)]
pub struct SystemContainerLauncher {
    kind: SystemContainer,
    tool: Tool,
    cgroups: CgroupHost,
}

impl SystemContainerLauncher {
    /// Finds the kind's tool; the host needs root (both make namespaces, mounts and cgroups).
    pub fn new(kind: SystemContainer) -> Result<Self, LaunchError> {
        let (program, package) = kind.program();
        let tool = Tool::find(program, package).map_err(|e| LaunchError::Unsupported(e.to_string()))?;
        if !nix::unistd::geteuid().is_root() {
            return Err(LaunchError::Unsupported(format!("{} needs root", kind.backend_name())));
        }
        Ok(Self { kind, tool, cgroups: CgroupHost::detect()? })
    }

    /// The tool found.
    pub fn tool(&self) -> &Tool {
        &self.tool
    }

    fn arguments(&self, rootfs: &Path, workload: &str, machine: &str, scratch: &Path) -> Vec<String> {
        let init_args = [format!("systemd.setenv=BOXBENCH_WORKLOAD={workload}"), "systemd.show_status=no".to_owned()];
        match self.kind {
            SystemContainer::Nspawn => {
                let mut args: Vec<String> = [
                    "--quiet",
                    "--volatile=overlay",
                    "--console=passive",
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                ]
                .map(str::to_owned)
                .to_vec();
                args.push(format!("--directory={}", rootfs.display()));
                args.push(format!("--machine={machine}"));
                args.push("--boot".to_owned());
                args.extend(init_args);
                args
            }
            SystemContainer::Lxc => vec![
                "-F".to_owned(),
                "-n".to_owned(),
                machine.to_owned(),
                "-P".to_owned(),
                scratch.join("lxcpath").display().to_string(),
                "-f".to_owned(),
                scratch.join("config").display().to_string(),
            ],
        }
    }

    /// LXC's configuration of one launch: the tree under a per-launch overlay, its own systemd with
    /// the workload's settings, no network, the console written to lxc-start's stdout.
    fn lxc_config(rootfs: &Path, workload: &str, scratch: &Path) -> String {
        format!(
            "lxc.uts.name = {hostname}\n\
             lxc.rootfs.path = overlay:{rootfs}:{upper}\n\
             lxc.init.cmd = /lib/systemd/systemd systemd.setenv=BOXBENCH_WORKLOAD={workload} systemd.show_status=no\n\
             lxc.net.0.type = empty\n\
             lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n\
             lxc.autodev = 1\n\
             lxc.tty.max = 0\n\
             lxc.pty.max = 16\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.cgroup.relative = 1\n\
             lxc.console.logfile = /dev/stdout\n",
            hostname = "boxbench-full-os",
            rootfs = rootfs.display(),
            upper = scratch.join("upper").display(),
        )
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "system container: {} booting the full-OS tree's systemd (copy-on-write overlay per launch) to its \
             workload service after multi-user.target",
            self.tool.label()
        )];
        notes.push(
            "details init_ms and multi_user_ms are systemd's own timestamps (the host's clock) on the launch clock"
                .to_owned(),
        );
        notes
    }
}

/// Checks that `rootfs` is a full-OS tree a system container can boot; the error names it.
pub fn check_tree(rootfs: &Path, backend: &str) -> Result<(), LaunchError> {
    if !rootfs.is_dir() {
        return Err(LaunchError::InvalidSpec(format!(
            "{}: no such directory (the full-OS tree {backend} boots)",
            rootfs.display()
        )));
    }
    for required in REQUIRED_IN_TREE {
        if !rootfs.join(required).is_file() {
            return Err(LaunchError::InvalidSpec(format!(
                "{}: not a bootable full-OS tree (no /{required}; `boxbench images build --full-os` builds one)",
                rootfs.display()
            )));
        }
    }
    Ok(())
}

impl Launcher for SystemContainerLauncher {
    fn name(&self) -> &str {
        self.kind.backend_name()
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let backend = self.kind.backend_name();
        let rootfs = spec.images.rootfs.as_ref().ok_or_else(|| {
            LaunchError::InvalidSpec(format!("{backend} needs images.rootfs (the full-OS tree, out/full-os/rootfs)"))
        })?;
        check_tree(rootfs, backend)?;
        if let Workload::Command(_) = spec.workload {
            return Err(LaunchError::InvalidSpec(format!(
                "{backend} runs named workloads only (the disk's workload service runs /boxbench/workloads/NAME)"
            )));
        }
        let run = ToolRun::with_memory_limit(backend, &self.cgroups, spec.memory_limit_bytes)?;
        let relative = run.cgroup().map(|c| c.relative_path()).unwrap_or_default();
        let join_files =
            hierarchies::create_beside_memory(&self.cgroups.memory_root, &relative).map_err(LaunchError::backend)?;
        let scratch = tempfile::Builder::new()
            .prefix("boxbench-syscontainer-")
            .tempdir()
            .map_err(|e| LaunchError::Unsupported(format!("temporary directory for {backend}: {e}")))?;
        let machine = format!("boxbench-{}-{}", std::process::id(), NEXT_MACHINE.fetch_add(1, Ordering::Relaxed));
        if self.kind == SystemContainer::Lxc {
            let config = scratch.path().join("config");
            fs::write(&config, Self::lxc_config(rootfs, spec.workload.name(), scratch.path()))
                .and_then(|()| fs::create_dir(scratch.path().join("lxcpath")))
                .map_err(|e| LaunchError::Unsupported(format!("{}: {e}", config.display())))?;
        }
        Ok(Box::new(SystemContainerInstance {
            kind: self.kind,
            binary: self.tool.path.clone(),
            args: self.arguments(rootfs, spec.workload.name(), &machine, scratch.path()),
            machine,
            memory_root: self.cgroups.memory_root.clone(),
            relative,
            join_files,
            scratch: Some(scratch),
            run,
            notes: self.notes(),
        }))
    }
}

struct SystemContainerInstance {
    kind: SystemContainer,
    binary: PathBuf,
    args: Vec<String>,
    machine: String,
    memory_root: PathBuf,
    relative: PathBuf,
    /// The instance's join files in the other hierarchies, until the tool has joined them.
    join_files: Vec<fs::File>,
    scratch: Option<tempfile::TempDir>,
    run: ToolRun,
    notes: Vec<String>,
}

impl fmt::Debug for SystemContainerInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemContainerInstance").field("kind", &self.kind).field("args", &self.args).finish()
    }
}

impl SystemContainerInstance {
    /// Removes what the tool leaves behind when it is killed, and the instance's cgroups in the other
    /// hierarchies.
    fn release(&mut self) -> Result<(), LaunchError> {
        self.join_files.clear();
        if self.kind == SystemContainer::Nspawn {
            let propagate = Path::new(NSPAWN_PROPAGATE_DIR).join(&self.machine);
            if propagate.exists() {
                let _ = fs::remove_dir_all(&propagate);
            }
        }
        if let Some(scratch) = self.scratch.take() {
            let path = scratch.path().to_owned();
            if let Some(mount) = boxbench_core::mountinfo::mounts_under(&path).into_iter().next() {
                // Never remove a tree through a mount: leave it and say so.
                std::mem::forget(scratch);
                return Err(LaunchError::InvalidSpec(format!("{} is still mounted", mount.display())));
            }
            scratch.close().map_err(|e| LaunchError::Unsupported(format!("{}: {e}", path.display())))?;
        }
        hierarchies::remove_beside_memory(&self.memory_root, &self.relative).map_err(LaunchError::backend)
    }
}

impl Instance for SystemContainerInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut command = Command::new(&self.binary);
        command.args(&self.args);
        let setup = ChildSetup::AlsoJoin(JoinFds::of(&self.join_files));
        let started = self.run.start(command, setup, Streams::Merged, None);
        self.join_files.clear();
        started
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        Ok(self.run.wait(deadline)?.map(|status| {
            if status.success() {
                Outcome::Exited { code: 0 }
            } else {
                Outcome::Failed { reason: format!("{} exited with {status}", self.kind.program().0) }
            }
        }))
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
        let program = self.kind.program().0;
        let what = format!("{} container", self.kind.backend_name());
        let outcome = match (&outcome, stopped.status) {
            (Outcome::DeadlineExceeded { .. }, _) | (_, None) => outcome,
            (_, Some(status)) if status.success() => clean_exit_outcome(&stopped.console.text, &what),
            (_, Some(status)) => Outcome::Failed {
                reason: format!(
                    "{program} exited with {status}; last console lines: {}",
                    last_lines(&stopped.console.text, 4)
                ),
            },
        };
        let details = BootTimestamps::parse(&stopped.console.text).map(|t| t.container_details(&stopped.timeline));
        let released = self.release();
        self.run.remove_cgroup()?;
        released?;
        let notes = std::mem::take(&mut self.notes);
        let mut record = record(self.kind.backend_name(), stopped, outcome, Phases::default(), None, notes);
        if let Some(details) = details {
            record.phases.userspace_ms = details.get("init_ms").copied();
            record.details_ms = details;
        }
        Ok(record)
    }
}

impl Drop for SystemContainerInstance {
    fn drop(&mut self) {
        // An instance dropped without finish (an error path): kill, then release what is left.
        self.run.kill();
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxc_config_overlays_the_tree_and_boots_its_systemd_with_the_workload() {
        let config = SystemContainerLauncher::lxc_config(Path::new("/t/rootfs"), "uname", Path::new("/s"));
        assert!(config.contains("lxc.rootfs.path = overlay:/t/rootfs:/s/upper\n"), "{config}");
        assert!(config.contains("systemd.setenv=BOXBENCH_WORKLOAD=uname"), "{config}");
        assert!(config.contains("lxc.cgroup.relative = 1\n"), "{config}");
    }

    #[test]
    fn a_tree_without_systemd_or_the_workload_service_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_tree(dir.path(), "nspawn").unwrap_err().to_string();
        assert!(err.starts_with(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("no /lib/systemd/systemd"), "{err}");
        let err = check_tree(&dir.path().join("missing"), "lxc").unwrap_err().to_string();
        assert!(err.contains("no such directory"), "{err}");
    }
}
