//! The container's init: one clone(2) that creates every namespace and makes the child PID 1 of
//! the new PID namespace, the handshake with it, and waiting for it.
//!
//! The child's first step joins the instance's cgroup by writing "0" to its membership file, which
//! the parent opened before the clone, so everything it does from then on — its setup, then the
//! workload — is charged there, and it cannot execute the workload outside it. (On cgroup v1 this
//! is the `tasks` file: a single task moving itself skips the kernel's global thread-group lock,
//! whose RCU grace period makes a parent's write of the pid to `cgroup.procs` cost 5–16 ms whenever
//! no other migration happened in the last few milliseconds.) The child then runs its other setup
//! steps and writes fixed-size reports on the close-on-exec *status* pipe: `Ready` with its
//! `CLOCK_MONOTONIC` stamp just before execve(2), or `Failed` with the index of the step (or
//! execve) and the errno. End of file on the status pipe after `Ready` means execve succeeded. The
//! *console* pipe becomes the workload's stdout and stderr.
//!
//! Between clone and execve the child runs in a copy of a possibly multi-threaded parent, so it
//! only makes system calls over data prepared beforehand: no allocation, no locks, no panics.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use boxbench_core::MonotonicNs;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

use crate::namespaces::{IdMappings, map_text};
use crate::syscalls::{ChildFds, LinuxSyscalls, MAX_CONTROLLERS, Step, run_steps};

/// The stack the child runs its setup on. The setup makes system calls over prepared data and
/// needs a few KiB; the rest is margin. Only the pages it touches are ever backed.
const CHILD_STACK_BYTES: usize = 256 * 1024;

/// The report's step index when execve(2) failed.
const STEP_EXEC: u32 = u32::MAX;

const REPORT_READY: u32 = 1;
const REPORT_FAILED: u32 = 2;
const REPORT_BYTES: usize = 16;

/// A failure of the container's init process or of the handshake with it.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A pipe or descriptor for the child could not be made.
    #[error("cannot prepare the container's {what}: {errno}")]
    Descriptor { what: &'static str, errno: Errno },
    /// clone(2) failed.
    #[error("clone(2) of the container's init with {flags:?}: {errno}")]
    Clone { flags: CloneFlags, errno: Errno },
    /// The child's reports could not be read or made no sense.
    #[error("handshake with the container's init (pid {pid}): {reason}")]
    Handshake { pid: i32, reason: String },
    /// A setup step failed in the child.
    #[error("container setup failed: {step}: {errno}")]
    Setup { step: String, errno: Errno },
    /// execve(2) of the workload failed in the container.
    #[error("execve {path:?} in the container: {errno}")]
    Exec { path: String, errno: Errno },
    /// The user namespace's id mappings could not be written.
    #[error("linux.uidMappings/gidMappings: writing {file}: {source}")]
    IdMaps { file: String, source: io::Error },
    /// Waiting for the child failed.
    #[error("waiting for the container's init (pid {pid}): {errno}")]
    Wait { pid: i32, errno: Errno },
}

/// The program the child executes, as execve(2) takes it.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The path inside the container.
    pub path: CString,
    /// argv.
    pub argv: Vec<CString>,
    /// The environment, `NAME=value` strings.
    pub env: Vec<CString>,
}

/// Everything the child needs, prepared before the clone.
#[derive(Debug, Clone)]
pub struct ChildPlan {
    /// The namespaces to create.
    pub clone_flags: CloneFlags,
    /// The setup steps, in order.
    pub steps: Vec<Step>,
    /// What to execute once set up.
    pub exec: ExecSpec,
}

/// When the child was ready and when its execve was seen to succeed.
#[derive(Debug, Clone, Copy)]
pub struct ExecTimes {
    /// The child's own stamp, taken just before execve.
    pub ready_at: MonotonicNs,
    /// When the parent saw the status pipe close (execve succeeded).
    pub exec_at: MonotonicNs,
}

/// The container's init, from the parent's side. Dropping it kills and reaps the child.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    pidfd: OwnedFd,
    status: File,
    reaped: Option<WaitStatus>,
}

/// The raw pointer arrays execve(2) takes, built in the parent.
struct ExecPointers<'a> {
    spec: &'a ExecSpec,
    argv: Vec<*const libc::c_char>,
    env: Vec<*const libc::c_char>,
}

impl<'a> ExecPointers<'a> {
    fn new(spec: &'a ExecSpec) -> Self {
        let terminated = |strings: &[CString]| {
            strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect::<Vec<_>>()
        };
        Self { spec, argv: terminated(&spec.argv), env: terminated(&spec.env) }
    }
}

/// Moves a descriptor above the standard three, so that the child's dup2 onto 0, 1 and 2 never
/// meets one of its own sources.
fn above_stdio(fd: OwnedFd, what: &'static str) -> Result<OwnedFd, ProcessError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let moved = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(|errno| ProcessError::Descriptor { what, errno })?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

fn pipe(what: &'static str) -> Result<(OwnedFd, OwnedFd), ProcessError> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(|errno| ProcessError::Descriptor { what, errno })?;
    Ok((above_stdio(read, what)?, above_stdio(write, what)?))
}

/// Clones the container's init with `plan`; `cgroup_membership` is the instance cgroup's `tasks`
/// (v1) or `cgroup.procs` (v2) file, open for writing, for the plan's [`Step::JoinCgroup`], and
/// `controllers` the `tasks` files of its cgroups in other v1 hierarchies. With `id_mappings` (a
/// user namespace), the parent writes them once the child exists and then lets it go on
/// ([`Step::AwaitIdMaps`]). Returns the child and the read end of its console.
pub fn spawn(
    plan: &ChildPlan,
    cgroup_membership: OwnedFd,
    controllers: &[File],
    id_mappings: Option<&IdMappings>,
) -> Result<(Child, OwnedFd), ProcessError> {
    let (console_read, console_write) = pipe("console pipe")?;
    let (status_read, status_write) = pipe("status pipe")?;
    let cgroup_membership = above_stdio(cgroup_membership, "cgroup membership file")?;
    let stdin = nix::fcntl::open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|errno| ProcessError::Descriptor { what: "stdin (/dev/null)", errno })?;
    let stdin = above_stdio(stdin, "stdin (/dev/null)")?;
    let controller_fds = controllers
        .iter()
        .map(|file| file.try_clone().map(OwnedFd::from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProcessError::Descriptor {
            what: "cgroup tasks file",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?
        .into_iter()
        .map(|fd| above_stdio(fd, "cgroup tasks file"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut controller_raw = [-1; MAX_CONTROLLERS];
    for (slot, fd) in controller_raw.iter_mut().zip(&controller_fds) {
        *slot = fd.as_raw_fd();
    }
    let sync = id_mappings.map(|_| pipe("id mapping pipe")).transpose()?;
    let fds = ChildFds {
        console: console_write.as_raw_fd(),
        stdin: stdin.as_raw_fd(),
        cgroup: cgroup_membership.as_raw_fd(),
        controllers: controller_raw,
        sync: sync.as_ref().map_or(-1, |(read, _)| read.as_raw_fd()),
    };
    let exec = ExecPointers::new(&plan.exec);
    let status_fd = status_write.as_raw_fd();
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    let init = Box::new(|| child_main(plan, &fds, &exec, status_fd));
    // SAFETY: the child runs `child_main` on `stack`, which is far larger than what its system
    // calls need; it touches only data prepared above (no allocation, no locks another thread of
    // this process may hold) and either execs or exits.
    let pid = unsafe { nix::sched::clone(init, &mut stack, plan.clone_flags, Some(libc::SIGCHLD)) }
        .map_err(|errno| ProcessError::Clone { flags: plan.clone_flags, errno })?;
    // The child has its own copies; the parent's must close so end of file means the child's did.
    let sync_write = sync.map(|(read, write)| {
        drop(read);
        write
    });
    drop((console_write, status_write, stdin, cgroup_membership, controller_fds));
    let pidfd = match boxbench_core::pidfd::open(pid.as_raw()) {
        Ok(fd) => fd,
        Err(error) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            let errno = Errno::from_raw(error.raw_os_error().unwrap_or(libc::EINVAL));
            return Err(ProcessError::Descriptor { what: "pidfd", errno });
        }
    };
    let child = Child { pid, pidfd, status: File::from(status_read), reaped: None };
    if let (Some(maps), Some(sync_write)) = (id_mappings, sync_write) {
        // On error `child` is dropped: killed and reaped.
        write_id_maps(pid, maps)?;
        let mut sync_write = File::from(sync_write);
        sync_write.write_all(b"1").map_err(|e| ProcessError::Handshake {
            pid: pid.as_raw(),
            reason: format!("telling it the id mappings are written: {e}"),
        })?;
    }
    Ok((child, console_read))
}

/// Writes the user namespace's mappings of child `pid`: gids first, then uids (the order runc
/// uses; each file takes one write).
fn write_id_maps(pid: Pid, maps: &IdMappings) -> Result<(), ProcessError> {
    for (name, text) in [("gid_map", map_text(&maps.gids)), ("uid_map", map_text(&maps.uids))] {
        let file = format!("/proc/{pid}/{name}");
        std::fs::write(&file, text).map_err(|source| ProcessError::IdMaps { file, source })?;
    }
    Ok(())
}

/// The child's side: set up, report, exec. Returns the exit status on failure.
fn child_main(plan: &ChildPlan, fds: &ChildFds, exec: &ExecPointers<'_>, status_fd: RawFd) -> isize {
    if let Err((index, errno)) = run_steps(&LinuxSyscalls, &plan.steps, fds) {
        report(status_fd, REPORT_FAILED, index as u32, errno as u64);
        return 1;
    }
    report(status_fd, REPORT_READY, 0, MonotonicNs::now().0);
    // SAFETY: path, argv and env point at CStrings of `plan`, alive in this copy of the parent's
    // memory; argv and env are NULL-terminated arrays built before the clone.
    unsafe { libc::execve(exec.spec.path.as_ptr(), exec.argv.as_ptr(), exec.env.as_ptr()) };
    report(status_fd, REPORT_FAILED, STEP_EXEC, Errno::last() as u64);
    127
}

/// Writes one fixed-size report; a pipe write this small is atomic.
fn report(status_fd: RawFd, kind: u32, step: u32, value: u64) {
    let mut message = [0u8; REPORT_BYTES];
    message[..4].copy_from_slice(&kind.to_ne_bytes());
    message[4..8].copy_from_slice(&step.to_ne_bytes());
    message[8..].copy_from_slice(&value.to_ne_bytes());
    // SAFETY: writes from a live local buffer of REPORT_BYTES bytes. If the parent is gone there
    // is nobody to tell, so the result does not matter.
    unsafe { libc::write(status_fd, message.as_ptr().cast(), REPORT_BYTES) };
}

/// A report from the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    Ready(MonotonicNs),
    Failed { step: u32, errno: Errno },
}

fn decode(message: &[u8; REPORT_BYTES]) -> Option<Report> {
    let word = |range: std::ops::Range<usize>| u32::from_ne_bytes(message[range].try_into().unwrap_or_default());
    let value = u64::from_ne_bytes(message[8..].try_into().unwrap_or_default());
    match word(0..4) {
        REPORT_READY => Some(Report::Ready(MonotonicNs(value))),
        REPORT_FAILED => Some(Report::Failed { step: word(4..8), errno: Errno::from_raw(value as i32) }),
        _ => None,
    }
}

impl Child {
    /// The child's pid in the host's PID namespace.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Waits until the child has executed the workload, or reports why it did not. `steps` and
    /// `exec` are those of the plan it was spawned with, to name a failed step.
    pub fn wait_exec(&mut self, steps: &[Step], exec: &ExecSpec) -> Result<ExecTimes, ProcessError> {
        let mut ready_at = None;
        let mut message = [0u8; REPORT_BYTES];
        loop {
            match read_report(&mut self.status, &mut message) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => return Err(self.handshake_error(format!("reading its status: {e}"))),
            }
            match decode(&message) {
                Some(Report::Ready(at)) => ready_at = Some(at),
                Some(Report::Failed { step: STEP_EXEC, errno }) => {
                    return Err(ProcessError::Exec { path: exec.path.to_string_lossy().into_owned(), errno });
                }
                Some(Report::Failed { step, errno }) => {
                    let step = steps.get(step as usize).map(Step::describe).unwrap_or_else(|| format!("step {step}"));
                    return Err(ProcessError::Setup { step, errno });
                }
                None => return Err(self.handshake_error("it sent an unknown report".to_owned())),
            }
        }
        let exec_at = MonotonicNs::now();
        match ready_at {
            Some(ready_at) => Ok(ExecTimes { ready_at, exec_at }),
            None => {
                let status = self.reap().map(|s| format!("{s:?}")).unwrap_or_else(|e| e.to_string());
                Err(self.handshake_error(format!("it ended before executing the workload ({status})")))
            }
        }
    }

    fn handshake_error(&self, reason: String) -> ProcessError {
        ProcessError::Handshake { pid: self.pid(), reason }
    }

    /// Waits for the child to end until `deadline`; `None` if it is still running then.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<Option<WaitStatus>, ProcessError> {
        loop {
            if let Some(status) = self.reaped {
                return Ok(Some(status));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            // Rounded up, so the poll never returns before the deadline and spins.
            let millis = remaining.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) if Instant::now() >= deadline => return Ok(None),
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {
                    self.reap()?;
                }
                Err(errno) => return Err(ProcessError::Wait { pid: self.pid(), errno }),
            }
        }
    }

    /// Blocks until the child has ended and returns how.
    pub fn reap(&mut self) -> Result<WaitStatus, ProcessError> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        loop {
            match waitpid(self.pid, None) {
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    self.reaped = Some(status);
                    return Ok(status);
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(errno) => return Err(ProcessError::Wait { pid: self.pid(), errno }),
            }
        }
    }

    /// Sends SIGKILL to the child (and so, as it is PID 1 of its namespace, to everything in it).
    pub fn kill(&self) {
        if self.reaped.is_none() {
            // The child is not reaped, so its pid cannot have been reused; if it already exited
            // there is nothing to kill.
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }

    /// Kills the child and waits for it.
    pub fn kill_and_reap(&mut self) -> Result<WaitStatus, ProcessError> {
        self.kill();
        self.reap()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Drop runs on error paths, which already report their own error.
        let _ = self.kill_and_reap();
    }
}

/// Reads one whole report; `false` at end of file.
fn read_report(status: &mut File, message: &mut [u8; REPORT_BYTES]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < REPORT_BYTES {
        match status.read(&mut message[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated report")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let mut message = [0u8; REPORT_BYTES];
        message[..4].copy_from_slice(&REPORT_FAILED.to_ne_bytes());
        message[4..8].copy_from_slice(&7u32.to_ne_bytes());
        message[8..].copy_from_slice(&(Errno::ENOENT as u64).to_ne_bytes());
        assert_eq!(decode(&message), Some(Report::Failed { step: 7, errno: Errno::ENOENT }));
        message[..4].copy_from_slice(&REPORT_READY.to_ne_bytes());
        message[8..].copy_from_slice(&123u64.to_ne_bytes());
        assert_eq!(decode(&message), Some(Report::Ready(MonotonicNs(123))));
        message[..4].copy_from_slice(&9u32.to_ne_bytes());
        assert_eq!(decode(&message), None);
    }

    #[test]
    fn exec_pointers_are_null_terminated() {
        let spec = ExecSpec {
            path: CString::new("/bin/sh").unwrap(),
            argv: vec![CString::new("sh").unwrap(), CString::new("-c").unwrap()],
            env: vec![],
        };
        let pointers = ExecPointers::new(&spec);
        assert_eq!(pointers.argv.len(), 3);
        assert!(pointers.argv[2].is_null());
        assert_eq!(pointers.env, [std::ptr::null()]);
    }
}
