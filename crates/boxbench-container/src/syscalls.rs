//! The system calls the container's init makes between clone(2) and execve(2), and the setup steps
//! made of them.
//!
//! Everything the child does is decided in the parent as a list of [`Step`]s whose strings are
//! already `CString`s, so the child only makes system calls: it never allocates (another thread of
//! the parent may have held the allocator's lock at clone time) and never panics. The calls go
//! through the [`Syscalls`] trait so the order of the steps and the reporting of a failed one can be
//! checked without root; [`LinuxSyscalls`] makes them for real.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

/// The system calls of the container's setup.
pub trait Syscalls {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: MsFlags,
        data: Option<&CStr>,
    ) -> Result<(), Errno>;
    /// umount2(2) with `MNT_DETACH`.
    fn umount_detach(&self, target: &CStr) -> Result<(), Errno>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno>;
    /// chdir(2).
    fn chdir(&self, dir: &CStr) -> Result<(), Errno>;
    /// sethostname(2).
    fn sethostname(&self, name: &CStr) -> Result<(), Errno>;
    /// mknod(2).
    fn mknod(&self, path: &CStr, kind: SFlag, perm: Mode, dev: libc::dev_t) -> Result<(), Errno>;
    /// symlink(2).
    fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno>;
    /// umask(2).
    fn umask(&self, mask: Mode);
    /// dup2(2): `to` becomes a copy of `from`, without close-on-exec.
    fn dup2(&self, from: RawFd, to: RawFd) -> Result<(), Errno>;
    /// close_range(2) with `CLOSE_RANGE_CLOEXEC`: every descriptor from `first` on closes at exec.
    fn cloexec_from(&self, first: RawFd) -> Result<(), Errno>;
    /// prctl(PR_SET_NO_NEW_PRIVS).
    fn set_no_new_privs(&self) -> Result<(), Errno>;
    /// setgroups(0, NULL), setresgid(2) and setresuid(2), in that order.
    fn set_ids(&self, uid: u32, gid: u32) -> Result<(), Errno>;
    /// Writes "0" (the calling task) to an open cgroup `tasks` or `cgroup.procs` file: the caller
    /// joins that cgroup.
    fn join_cgroup(&self, procs: RawFd) -> Result<(), Errno>;
    /// Unblocks every signal and sets every disposition to the default (an ignored signal stays
    /// ignored across execve, and the parent ignores SIGPIPE as every Rust program does).
    fn reset_signals(&self) -> Result<(), Errno>;
}

/// The kernel's `struct sigaction` as x86-64 lays it out, for rt_sigaction(2) without glibc,
/// whose wrapper refuses the signals it reserves for itself.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// The highest signal number of the kernel's 64-bit signal set.
const LAST_SIGNAL: libc::c_int = 64;

/// The real system calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxSyscalls;

impl Syscalls for LinuxSyscalls {
    fn mount(
        &self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: MsFlags,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount_detach(&self, target: &CStr) -> Result<(), Errno> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }

    fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, dir: &CStr) -> Result<(), Errno> {
        nix::unistd::chdir(dir)
    }

    fn sethostname(&self, name: &CStr) -> Result<(), Errno> {
        nix::unistd::sethostname(OsStr::from_bytes(name.to_bytes()))
    }

    fn mknod(&self, path: &CStr, kind: SFlag, perm: Mode, dev: libc::dev_t) -> Result<(), Errno> {
        nix::sys::stat::mknod(path, kind, perm, dev)
    }

    fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno> {
        // SAFETY: both pointers come from live `CStr`s, so they are NUL-terminated and valid for the
        // duration of the call.
        Errno::result(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
    }

    fn umask(&self, mask: Mode) {
        nix::sys::stat::umask(mask);
    }

    fn dup2(&self, from: RawFd, to: RawFd) -> Result<(), Errno> {
        // SAFETY: dup2 only manipulates the descriptor table; `to` is one of the standard descriptors,
        // which the child owns and nothing in it reads through a Rust handle.
        Errno::result(unsafe { libc::dup2(from, to) }).map(drop)
    }

    fn cloexec_from(&self, first: RawFd) -> Result<(), Errno> {
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; nothing is
        // closed before exec.
        let res = unsafe {
            libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC)
        };
        Errno::result(res).map(drop)
    }

    fn set_no_new_privs(&self) -> Result<(), Errno> {
        nix::sys::prctl::set_no_new_privs()
    }

    fn set_ids(&self, uid: u32, gid: u32) -> Result<(), Errno> {
        // Raw system calls on purpose: glibc's wrappers broadcast credential changes to every thread
        // it believes exists, and after a raw clone(2) its thread list is the parent's, so they
        // would signal threads that are not there and wait for them forever.
        // SAFETY: setgroups with a zero count reads no memory.
        Errno::result(unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) })?;
        // SAFETY: setresgid and setresuid take plain integers.
        Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
        // SAFETY: as above.
        Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
    }

    fn join_cgroup(&self, procs: RawFd) -> Result<(), Errno> {
        // SAFETY: writes one byte from a static buffer to a descriptor the parent opened.
        let written = Errno::result(unsafe { libc::write(procs, b"0".as_ptr().cast(), 1) })?;
        if written == 1 { Ok(()) } else { Err(Errno::EIO) }
    }

    fn reset_signals(&self) -> Result<(), Errno> {
        let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
        let sigset_bytes = std::mem::size_of::<u64>();
        for signal in 1..=LAST_SIGNAL {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            // SAFETY: `default` is a live kernel-layout sigaction; the old action is not asked for.
            let res = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    sigset_bytes,
                )
            };
            Errno::result(res)?;
        }
        let empty: u64 = 0;
        // SAFETY: sets the mask from a live 64-bit set; the old mask is not asked for.
        let res = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &empty as *const u64,
                std::ptr::null_mut::<u64>(),
                sigset_bytes,
            )
        };
        Errno::result(res).map(drop)
    }
}

/// A descriptor the child receives from the parent, known by its role; the parent fills in the
/// numbers at launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildFd {
    /// The write end of the console pipe (the workload's stdout and stderr).
    Console,
    /// `/dev/null` of the host, the workload's stdin.
    Stdin,
    /// The instance cgroup's `tasks` (v1) or `cgroup.procs` (v2) file, open for writing.
    Cgroup,
}

/// The descriptor numbers behind each [`ChildFd`], all above the standard three.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    /// The console pipe's write end.
    pub console: RawFd,
    /// The stdin descriptor.
    pub stdin: RawFd,
    /// The cgroup membership file.
    pub cgroup: RawFd,
}

impl ChildFds {
    fn get(&self, fd: ChildFd) -> RawFd {
        match fd {
            ChildFd::Console => self.console,
            ChildFd::Stdin => self.stdin,
            ChildFd::Cgroup => self.cgroup,
        }
    }
}

/// One step of the container's setup, with every string it needs prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// mount(2).
    Mount { source: Option<CString>, target: CString, fstype: Option<CString>, flags: MsFlags, data: Option<CString> },
    /// Detach the mount at the path.
    UmountDetach(CString),
    /// pivot_root(2).
    PivotRoot { new_root: CString, put_old: CString },
    /// chdir(2).
    Chdir(CString),
    /// sethostname(2).
    Hostname(CString),
    /// mknod(2) of a character device.
    CharDevice { path: CString, major: u32, minor: u32, perm: u32 },
    /// symlink(2): `link` points at `target`.
    Symlink { target: CString, link: CString },
    /// umask(2).
    Umask(u32),
    /// dup2(2) of a descriptor from the parent onto a standard one.
    Dup2 { from: ChildFd, to: RawFd },
    /// Mark every descriptor from this one on close-on-exec.
    CloexecFrom(RawFd),
    /// prctl(PR_SET_NO_NEW_PRIVS).
    NoNewPrivs,
    /// Drop supplementary groups, then become `gid` and `uid`.
    SetIds { uid: u32, gid: u32 },
    /// Join the instance's cgroup through its membership file.
    JoinCgroup,
    /// Default dispositions and an empty mask for every signal.
    ResetSignals,
}

impl Step {
    /// Makes the step's system calls.
    pub fn run(&self, sys: &dyn Syscalls, fds: &ChildFds) -> Result<(), Errno> {
        match self {
            Step::Mount { source, target, fstype, flags, data } => {
                sys.mount(source.as_deref(), target, fstype.as_deref(), *flags, data.as_deref())
            }
            Step::UmountDetach(target) => sys.umount_detach(target),
            Step::PivotRoot { new_root, put_old } => sys.pivot_root(new_root, put_old),
            Step::Chdir(dir) => sys.chdir(dir),
            Step::Hostname(name) => sys.sethostname(name),
            Step::CharDevice { path, major, minor, perm } => {
                sys.mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(*perm), libc::makedev(*major, *minor))
            }
            Step::Symlink { target, link } => sys.symlink(target, link),
            Step::Umask(mask) => {
                sys.umask(Mode::from_bits_truncate(*mask));
                Ok(())
            }
            Step::Dup2 { from, to } => sys.dup2(fds.get(*from), *to),
            Step::CloexecFrom(first) => sys.cloexec_from(*first),
            Step::NoNewPrivs => sys.set_no_new_privs(),
            Step::SetIds { uid, gid } => sys.set_ids(*uid, *gid),
            Step::JoinCgroup => sys.join_cgroup(fds.get(ChildFd::Cgroup)),
            Step::ResetSignals => sys.reset_signals(),
        }
    }

    /// What the step does, for the error that reports its failure.
    pub fn describe(&self) -> String {
        let show = |s: &CStr| s.to_string_lossy().into_owned();
        match self {
            Step::Mount { source, target, fstype, flags, data } => {
                let what = match (fstype, source) {
                    (Some(fstype), _) => show(fstype),
                    (None, Some(source)) => show(source),
                    (None, None) => "propagation".to_owned(),
                };
                let data = data.as_deref().map(|d| format!(" ({})", show(d))).unwrap_or_default();
                format!("mount {what} on {} with flags {flags:?}{data}", show(target))
            }
            Step::UmountDetach(target) => format!("detach the mount at {}", show(target)),
            Step::PivotRoot { new_root, put_old } => format!("pivot_root({}, {})", show(new_root), show(put_old)),
            Step::Chdir(dir) => format!("chdir to {}", show(dir)),
            Step::Hostname(name) => format!("set hostname {:?}", show(name)),
            Step::CharDevice { path, major, minor, .. } => format!("mknod {} (char {major}:{minor})", show(path)),
            Step::Symlink { target, link } => format!("symlink {} -> {}", show(link), show(target)),
            Step::Umask(mask) => format!("umask {mask:o}"),
            Step::Dup2 { from, to } => format!("dup2 the {from:?} descriptor onto {to}"),
            Step::CloexecFrom(first) => format!("mark descriptors from {first} close-on-exec"),
            Step::NoNewPrivs => "set no_new_privs".to_owned(),
            Step::SetIds { uid, gid } => format!("become uid {uid} gid {gid}"),
            Step::JoinCgroup => "join the instance's cgroup".to_owned(),
            Step::ResetSignals => "reset signal dispositions and mask".to_owned(),
        }
    }
}

/// Runs `steps` in order and stops at the first that fails, returning its index and errno.
pub fn run_steps(sys: &dyn Syscalls, steps: &[Step], fds: &ChildFds) -> Result<(), (usize, Errno)> {
    for (index, step) in steps.iter().enumerate() {
        step.run(sys, fds).map_err(|errno| (index, errno))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod recording {
    //! A [`Syscalls`] that records the calls instead of making them, for tests of the setup's order.

    use std::cell::RefCell;

    use super::*;

    /// Records every call as a line; fails the call whose line starts with `fail_on`.
    #[derive(Debug, Default)]
    pub struct RecordingSyscalls {
        pub calls: RefCell<Vec<String>>,
        pub fail_on: Option<&'static str>,
    }

    impl RecordingSyscalls {
        fn record(&self, line: String) -> Result<(), Errno> {
            let fails = self.fail_on.is_some_and(|prefix| line.starts_with(prefix));
            self.calls.borrow_mut().push(line);
            if fails { Err(Errno::EPERM) } else { Ok(()) }
        }
    }

    fn s(c: Option<&CStr>) -> String {
        c.map(|c| c.to_string_lossy().into_owned()).unwrap_or_else(|| "-".to_owned())
    }

    impl Syscalls for RecordingSyscalls {
        fn mount(
            &self,
            source: Option<&CStr>,
            target: &CStr,
            fstype: Option<&CStr>,
            flags: MsFlags,
            data: Option<&CStr>,
        ) -> Result<(), Errno> {
            self.record(format!(
                "mount {} {} {} {:#x} {}",
                s(source),
                s(Some(target)),
                s(fstype),
                flags.bits(),
                s(data)
            ))
        }
        fn umount_detach(&self, target: &CStr) -> Result<(), Errno> {
            self.record(format!("umount_detach {}", s(Some(target))))
        }
        fn pivot_root(&self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
            self.record(format!("pivot_root {} {}", s(Some(new_root)), s(Some(put_old))))
        }
        fn chdir(&self, dir: &CStr) -> Result<(), Errno> {
            self.record(format!("chdir {}", s(Some(dir))))
        }
        fn sethostname(&self, name: &CStr) -> Result<(), Errno> {
            self.record(format!("sethostname {}", s(Some(name))))
        }
        fn mknod(&self, path: &CStr, kind: SFlag, perm: Mode, dev: libc::dev_t) -> Result<(), Errno> {
            let kind = if kind == SFlag::S_IFCHR { "c" } else { "?" };
            let (major, minor) = (libc::major(dev), libc::minor(dev));
            self.record(format!("mknod {} {kind} {major}:{minor} {:o}", s(Some(path)), perm.bits()))
        }
        fn symlink(&self, target: &CStr, link: &CStr) -> Result<(), Errno> {
            self.record(format!("symlink {} {}", s(Some(target)), s(Some(link))))
        }
        fn umask(&self, mask: Mode) {
            self.calls.borrow_mut().push(format!("umask {:o}", mask.bits()));
        }
        fn dup2(&self, from: RawFd, to: RawFd) -> Result<(), Errno> {
            self.record(format!("dup2 {from} {to}"))
        }
        fn cloexec_from(&self, first: RawFd) -> Result<(), Errno> {
            self.record(format!("cloexec_from {first}"))
        }
        fn set_no_new_privs(&self) -> Result<(), Errno> {
            self.record("set_no_new_privs".to_owned())
        }
        fn set_ids(&self, uid: u32, gid: u32) -> Result<(), Errno> {
            self.record(format!("set_ids {uid} {gid}"))
        }
        fn join_cgroup(&self, procs: RawFd) -> Result<(), Errno> {
            self.record(format!("join_cgroup {procs}"))
        }
        fn reset_signals(&self) -> Result<(), Errno> {
            self.record("reset_signals".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use CString;

    use super::recording::RecordingSyscalls;
    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    #[test]
    fn steps_run_in_order_and_stop_at_the_first_failure() {
        let steps = vec![
            Step::JoinCgroup,
            Step::Chdir(c("/r")),
            Step::Dup2 { from: ChildFd::Console, to: 1 },
            Step::Hostname(c("box")),
            Step::Chdir(c("/never")),
        ];
        let sys = RecordingSyscalls { fail_on: Some("sethostname"), ..Default::default() };
        let fds = ChildFds { console: 7, stdin: 8, cgroup: 9 };
        let err = run_steps(&sys, &steps, &fds).unwrap_err();
        assert_eq!(err, (3, Errno::EPERM));
        assert_eq!(*sys.calls.borrow(), ["join_cgroup 9", "chdir /r", "dup2 7 1", "sethostname box"]);
    }

    #[test]
    fn descriptions_name_what_failed() {
        let mount = Step::Mount {
            source: Some(c("proc")),
            target: c("/r/proc"),
            fstype: Some(c("proc")),
            flags: MsFlags::MS_NOSUID,
            data: None,
        };
        assert!(mount.describe().starts_with("mount proc on /r/proc"), "{}", mount.describe());
        let dev = Step::CharDevice { path: c("/r/dev/null"), major: 1, minor: 3, perm: 0o666 };
        assert_eq!(dev.describe(), "mknod /r/dev/null (char 1:3)");
    }
}
