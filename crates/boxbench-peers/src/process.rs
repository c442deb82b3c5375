//! The tool process of one instance: spawned into the instance's cgroup before it executes, its
//! stdout and stderr captured as the instance's console, waited for with a deadline and killed with
//! everything it started.
//!
//! Placement: the child joins the cgroup itself, between fork and exec, by writing `0` ("the writing
//! task") to the join file the launch boundary opened beforehand (`boxbench_core::boundary`: `tasks`
//! on cgroup v1, `cgroup.procs` on v2), exactly as boxbench's own container and VMM child do. From its first instruction of
//! the tool on, everything the tool and its descendants charge is the instance's; only the few
//! instructions of the forked child before that write are not charged (they run on the parent's
//! copied pages).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Instant;

use boxbench_core::READY_MARKER;
use boxbench_core::cgroup::InstanceCgroup;
use boxbench_core::console::{Console, ConsoleCapture};
use boxbench_core::pss::total_pss_bytes;
use boxbench_core::record::Outcome;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Where the v2 hierarchy of a hybrid host is mounted (what crun refuses to run beside).
const HYBRID_UNIFIED_MOUNT: &std::ffi::CStr = c"/sys/fs/cgroup/unified";

/// A tool process that failed to start or to be waited for.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The console pipe could not be made.
    #[error("console pipe for {tool}: {source}")]
    Pipe { tool: String, source: io::Error },
    /// The tool could not be started.
    #[error("starting {tool}: {source}")]
    Spawn { tool: String, source: io::Error },
    /// Waiting for the tool failed.
    #[error("waiting for {tool}: {source}")]
    Wait { tool: String, source: io::Error },
    /// A helper command (cleanup, image import) exited unsuccessfully.
    #[error("{tool} {args}: {status}: {stderr}")]
    Failed { tool: String, args: String, status: ExitStatus, stderr: String },
}

/// What a child does between fork and exec (a tool process also joins its cgroup first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSetup {
    /// No namespace change.
    Plain,
    /// Enter a private mount namespace (all mounts made private) with the hybrid host's cgroup v2
    /// mount detached, so a runtime sees a pure v1 layout (crun refuses hybrid mode).
    PrivateMountsWithoutUnifiedCgroup,
    /// Also join the instance's cgroups in the other hierarchies, through these open join files
    /// ([`crate::hierarchies::create_beside_memory`]; the parent keeps them open until the spawn).
    AlsoJoin(JoinFds),
}

/// Open join files of other cgroup hierarchies, by descriptor (copied into the forked child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinFds {
    fds: [i32; Self::MAX],
    len: usize,
}

impl JoinFds {
    /// At most this many hierarchies (a v1 host mounts about a dozen).
    pub const MAX: usize = 16;

    /// The descriptors of `files` (the first [`Self::MAX`]).
    pub fn of(files: &[File]) -> Self {
        let mut fds = [-1; Self::MAX];
        for (slot, file) in fds.iter_mut().zip(files) {
            *slot = file.as_raw_fd();
        }
        Self { fds, len: files.len().min(Self::MAX) }
    }
}

/// Something a backend samples when the marker appears (besides the cgroup's PSS), such as the
/// memory of daemons outside the instance cgroup.
pub type MarkerHook = Box<dyn FnOnce() + Send>;

/// Which of the tool's output streams are the instance's console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// stdout and stderr together, through one pipe (a container's output arrives on both).
    Merged,
    /// stdout only (a VM's serial port); the tool's own messages on stderr are kept apart, so that
    /// a VMM's warning is not taken for the guest's first output.
    StderrApart,
}

/// What a tool printed: its console and, when kept apart, its stderr.
#[derive(Debug, Default)]
pub struct Output {
    /// The console, with its first-byte and marker times.
    pub console: Console,
    /// The tool's stderr text, when [`Streams::StderrApart`].
    pub stderr: Option<String>,
}

/// A running tool process with its console being captured.
#[derive(Debug)]
pub struct ToolProcess {
    tool: String,
    child: Child,
    pidfd: OwnedFd,
    console: Option<ConsoleCapture>,
    stderr: Option<ConsoleCapture>,
    status: Option<ExitStatus>,
}

impl ToolProcess {
    /// Starts `command` inside `cgroup` (joined through `join_file`, its open join file), stdin from /dev/null, its console (see [`Streams`]) through
    /// a pipe; when the marker appears, `at_marker` runs on the console thread and the proportional
    /// set size of the cgroup's processes is sampled; the first appearance of each of `stamps` on
    /// the console is timed too ([`ConsoleCapture::spawn_stamping`]).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        tool: &str,
        mut command: Command,
        cgroup: &Arc<InstanceCgroup>,
        join_file: File,
        setup: ChildSetup,
        streams: Streams,
        stamps: &'static [&'static str],
        at_marker: Option<MarkerHook>,
    ) -> Result<Self, ProcessError> {
        let pipe_error = |source| ProcessError::Pipe { tool: tool.into(), source };
        let (read_end, write_end) = console_pipe().map_err(pipe_error)?;
        let (stderr_read, stderr_end) = match streams {
            Streams::Merged => (None, write_end.try_clone().map_err(pipe_error)?),
            Streams::StderrApart => {
                let (read, write) = console_pipe().map_err(pipe_error)?;
                (Some(read), write)
            }
        };
        let procs = join_file;
        let procs_fd = procs.as_raw_fd();
        command.stdin(Stdio::null()).stdout(Stdio::from(write_end)).stderr(Stdio::from(stderr_end));
        // SAFETY: the closure runs in the forked child before exec and only makes raw system calls
        // (write, unshare, mount, umount2) on a file descriptor the parent keeps open until spawn
        // returns and on static C strings: it allocates nothing and takes no lock, so it is sound in
        // the child of a multi-threaded parent.
        unsafe {
            command.pre_exec(move || join_cgroup_then_setup(procs_fd, setup));
        }
        let child = command.spawn().map_err(|source| ProcessError::Spawn { tool: tool.into(), source })?;
        drop(procs);
        // The write ends now live in the child only; dropping the Command closes the parent's copies
        // so the console reaches end of file when the tool and its descendants are gone.
        drop(command);
        let pidfd = match boxbench_core::pidfd::open(child.id() as i32) {
            Ok(fd) => fd,
            Err(source) => {
                let mut child = child;
                // The child is unusable without its pidfd: end it rather than leak it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProcessError::Spawn { tool: tool.into(), source });
            }
        };
        // From here on, dropping `this` on an error path kills and reaps the child.
        let mut this = Self { tool: tool.to_owned(), child, pidfd, console: None, stderr: None, status: None };
        let sampled = Arc::clone(cgroup);
        let on_marker = move || {
            let pss = total_pss_bytes(&sampled.pids());
            if let Some(hook) = at_marker {
                hook();
            }
            pss
        };
        let console = ConsoleCapture::spawn_stamping(File::from(read_end), READY_MARKER, stamps, on_marker)
            .map_err(|source| ProcessError::Spawn { tool: tool.into(), source })?;
        this.console = Some(console);
        if let Some(stderr_read) = stderr_read {
            // The marker never matters on stderr; the capture is only its reader.
            let stderr = ConsoleCapture::spawn(File::from(stderr_read), READY_MARKER, || None)
                .map_err(|source| ProcessError::Spawn { tool: tool.into(), source })?;
            this.stderr = Some(stderr);
        }
        Ok(this)
    }

    /// Waits until the tool exits or `deadline` passes (`Ok(None)`).
    pub fn wait(&mut self, deadline: Instant) -> Result<Option<ExitStatus>, ProcessError> {
        loop {
            if let Some(status) = self.status {
                return Ok(Some(status));
            }
            if let Some(status) = self.child.try_wait().map_err(|source| self.wait_error(source))? {
                self.status = Some(status);
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // The pidfd becomes readable when the process exits: no polling interval adds to exit_ms.
            let timeout = PollTimeout::try_from(left.as_millis().clamp(1, 60_000) as i32).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(errno) => return Err(self.wait_error(errno.into())),
            }
        }
    }

    /// True once the marker has appeared on the tool's console.
    pub fn marker_seen(&self) -> bool {
        self.console.as_ref().is_some_and(ConsoleCapture::marker_seen)
    }

    /// Sends SIGKILL to the tool (only the tool: its cgroup is killed by the caller).
    pub fn kill(&mut self) {
        if self.status.is_none() {
            // Already exited but not yet reaped is fine: the signal is then a no-op.
            let _ = self.child.kill();
        }
    }

    /// Sends the tool `signal` unless it has been reaped (the pid could be another process's then).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if self.status.is_none() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
        }
    }

    /// Waits for the console's (and a separate stderr's) end of file and returns what they showed;
    /// call after the tool exited and everything that held its output is gone.
    pub fn take_output(&mut self) -> Output {
        Output {
            console: self.console.take().map(ConsoleCapture::join).unwrap_or_default(),
            stderr: self.stderr.take().map(|capture| capture.join().text),
        }
    }

    fn wait_error(&self, source: io::Error) -> ProcessError {
        ProcessError::Wait { tool: self.tool.clone(), source }
    }
}

impl Drop for ToolProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a tool's exit status reads as an instance outcome, for tools that pass their workload's exit
/// status through (runtimes, container clients): a status above 128 is the shell convention for
/// "killed by signal N-128", which is how crun, runc, podman and docker report a workload killed by a
/// signal.
pub fn passthrough_outcome(status: ExitStatus) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(code), _) if code > 128 && code < 128 + 65 => Outcome::Signaled { signal: code - 128 },
        (Some(code), _) => Outcome::Exited { code },
        (None, Some(signal)) => Outcome::Signaled { signal },
        (None, None) => Outcome::Failed { reason: format!("unrecognised wait status {status:?}") },
    }
}

/// Runs a helper command of a tool (cleanup, image import, daemon query) to completion outside the
/// instance cgroup, with the same mount namespace set-up as the tool got; its output is returned,
/// and an unsuccessful exit is an error naming the command.
pub fn run_helper(mut command: Command, setup: ChildSetup) -> Result<std::process::Output, ProcessError> {
    let describe = |command: &Command| {
        let tool = command.get_program().to_string_lossy().into_owned();
        let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        (tool, args.join(" "))
    };
    command.stdin(Stdio::null());
    if setup != ChildSetup::Plain {
        // SAFETY: as in `ToolProcess::spawn`, the closure only makes raw system calls on static C
        // strings, so it is sound between fork and exec.
        unsafe {
            command.pre_exec(move || enter_setup(setup));
        }
    }
    let output = command.output().map_err(|source| ProcessError::Spawn { tool: describe(&command).0, source })?;
    if !output.status.success() {
        let (tool, args) = describe(&command);
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(ProcessError::Failed { tool, args, status: output.status, stderr });
    }
    Ok(output)
}

fn join_cgroup_then_setup(join_fd: i32, setup: ChildSetup) -> io::Result<()> {
    // The parent's open join file (the launch boundary's rule: `tasks` on v1, `cgroup.procs` on v2),
    // inherited by this still single-threaded child.
    boxbench_core::boundary::join_writing_task(join_fd)?;
    enter_setup(setup)
}

fn enter_setup(setup: ChildSetup) -> io::Result<()> {
    if let ChildSetup::AlsoJoin(join) = setup {
        for fd in &join.fds[..join.len] {
            boxbench_core::boundary::join_writing_task(*fd)?;
        }
    }
    if setup == ChildSetup::PrivateMountsWithoutUnifiedCgroup {
        // SAFETY: unshare with a constant flag only changes this (single-threaded) child's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the paths are static NUL-terminated strings; null source, type and data are what
        // mount(2) takes for a propagation change.
        let private = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        if private != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a static NUL-terminated path; the unmount happens in this child's private namespace
        // only, never on the host.
        if unsafe { libc::umount2(HYBRID_UNIFIED_MOUNT.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe whose ends are closed on exec (the child gets its copies through dup2 as stdout/stderr).
fn console_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((read_end, write_end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_statuses_become_outcomes() {
        assert_eq!(passthrough_outcome(ExitStatus::from_raw(0)), Outcome::Exited { code: 0 });
        assert_eq!(passthrough_outcome(ExitStatus::from_raw(3 << 8)), Outcome::Exited { code: 3 });
        assert_eq!(passthrough_outcome(ExitStatus::from_raw(137 << 8)), Outcome::Signaled { signal: 9 });
        assert_eq!(passthrough_outcome(ExitStatus::from_raw(9)), Outcome::Signaled { signal: 9 });
    }
}
