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
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use seccompiler::{BpfProgram, sock_filter};

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
    /// setgroups(2) to `groups`, setresgid(2) and setresuid(2), in that order.
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), Errno>;
    /// prlimit64(2) of the calling process: `resource`'s soft and hard limits.
    fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno>;
    /// mkdir(2).
    fn mkdir(&self, path: &CStr, perm: Mode) -> Result<(), Errno>;
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno>;
    /// Reads one byte from `fd`, blocking: the parent's word that it has done its part (end of
    /// file, the parent gone or failed, is `EPIPE`).
    fn await_byte(&self, fd: RawFd) -> Result<(), Errno>;
    /// seccomp(SECCOMP_SET_MODE_FILTER) of one classic BPF program.
    fn install_seccomp(&self, program: &[sock_filter]) -> Result<(), Errno>;
    /// Writes "0" (the calling task) to an open cgroup `tasks` or `cgroup.procs` file: the caller
    /// joins that cgroup.
    fn join_cgroup(&self, procs: RawFd) -> Result<(), Errno>;
    /// Unblocks every signal and sets every disposition to the default (an ignored signal stays
    /// ignored across execve, and the parent ignores SIGPIPE as every Rust program does).
    fn reset_signals(&self) -> Result<(), Errno>;
    /// Whether `path` (symlinks followed) is a directory, from stat(2).
    fn is_directory(&self, path: &CStr) -> Result<bool, Errno>;
    /// open_tree(2) with `OPEN_TREE_CLONE | AT_RECURSIVE`: a detached copy of the mounts at and under
    /// `path`, as a descriptor.
    fn clone_tree(&self, path: &CStr) -> Result<RawFd, Errno>;
    /// mount_setattr(2) with `AT_RECURSIVE`: every mount of the detached tree becomes read-only, their
    /// other flags untouched.
    fn make_tree_readonly(&self, tree: RawFd) -> Result<(), Errno>;
    /// move_mount(2): attaches the detached tree at `target`.
    fn attach_tree(&self, tree: RawFd, target: &CStr) -> Result<(), Errno>;
    /// close(2).
    fn close(&self, fd: RawFd);
    /// prctl(PR_CAPBSET_DROP): `cap` leaves the bounding set; `EINVAL` past the kernel's last one.
    fn drop_bounding_cap(&self, cap: u32) -> Result<(), Errno>;
    /// prctl(PR_SET_KEEPCAPS, 1): the permitted set survives the change to a non-zero uid (the flag
    /// is cleared again by execve).
    fn keep_caps_on_uid_change(&self) -> Result<(), Errno>;
    /// capset(2) of the calling thread's effective, permitted and inheritable sets.
    fn set_caps(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno>;
    /// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL).
    fn clear_ambient_caps(&self) -> Result<(), Errno>;
    /// prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap).
    fn raise_ambient_cap(&self, cap: u32) -> Result<(), Errno>;
}

/// The kernel's `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// The kernel's `struct __user_cap_data_struct`; version 3 takes two, low then high 32 bits.
#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The kernel's `struct mount_attr` (mount_setattr(2)).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The kernel's `struct sock_fprog`: a classic BPF program for seccomp(2).
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// `SECCOMP_SET_MODE_FILTER`.
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

/// `MOUNT_ATTR_RDONLY`.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `OPEN_TREE_CLONE`.
const OPEN_TREE_CLONE: libc::c_uint = 0x1;
/// `MOVE_MOUNT_F_EMPTY_PATH`: the source is the descriptor itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: the options used here (capability and keep-caps controls) take integers only and
    // read or write no memory of the caller.
    Errno::result(unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) }).map(drop)
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

    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), Errno> {
        // Raw system calls on purpose: glibc's wrappers broadcast credential changes to every thread
        // it believes exists, and after a raw clone(2) its thread list is the parent's, so they
        // would signal threads that are not there and wait for them forever.
        // SAFETY: setgroups reads `groups.len()` gids from the live slice.
        Errno::result(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) })?;
        // SAFETY: setresgid and setresuid take plain integers.
        Errno::result(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
        // SAFETY: as above.
        Errno::result(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
    }

    fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        let limit = libc::rlimit64 { rlim_cur: soft, rlim_max: hard };
        // SAFETY: prlimit64 of pid 0 (the caller) reads the live `limit` and writes nothing back.
        let res = unsafe {
            libc::syscall(libc::SYS_prlimit64, 0, resource, &limit as *const libc::rlimit64, std::ptr::null_mut::<u8>())
        };
        Errno::result(res).map(drop)
    }

    fn mkdir(&self, path: &CStr, perm: Mode) -> Result<(), Errno> {
        nix::unistd::mkdir(path, perm)
    }

    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno> {
        nix::sched::unshare(flags)
    }

    fn await_byte(&self, fd: RawFd) -> Result<(), Errno> {
        let mut byte = 0u8;
        loop {
            // SAFETY: reads at most one byte into a live local.
            match Errno::result(unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) }) {
                Ok(1) => return Ok(()),
                Ok(_) => return Err(Errno::EPIPE),
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(errno),
            }
        }
    }

    fn install_seccomp(&self, program: &[sock_filter]) -> Result<(), Errno> {
        let fprog = SockFprog { len: program.len() as libc::c_ushort, filter: program.as_ptr() };
        // SAFETY: the kernel reads `len` instructions from the live program through the live
        // `fprog`; the filter is copied into the kernel before the call returns.
        let res = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog as *const SockFprog) };
        Errno::result(res).map(drop)
    }

    fn join_cgroup(&self, procs: RawFd) -> Result<(), Errno> {
        boxbench_core::boundary::join_writing_task(procs)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
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

    fn is_directory(&self, path: &CStr) -> Result<bool, Errno> {
        let mode = nix::sys::stat::stat(path)?.st_mode;
        Ok(SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR)
    }

    fn clone_tree(&self, path: &CStr) -> Result<RawFd, Errno> {
        let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
        // SAFETY: open_tree reads the NUL-terminated path of a live CStr and returns a new
        // descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
        Errno::result(fd).map(|fd| fd as RawFd)
    }

    fn make_tree_readonly(&self, tree: RawFd) -> Result<(), Errno> {
        let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
        let flags = libc::AT_EMPTY_PATH | libc::AT_RECURSIVE;
        // SAFETY: mount_setattr reads the empty path (the descriptor itself is the target) and
        // `size_of::<MountAttr>()` bytes of the live `attr`.
        let res = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree,
                c"".as_ptr(),
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        Errno::result(res).map(drop)
    }

    fn attach_tree(&self, tree: RawFd, target: &CStr) -> Result<(), Errno> {
        // SAFETY: move_mount reads two NUL-terminated paths, an empty static one for the source
        // descriptor and the live `target`.
        let res = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        Errno::result(res).map(drop)
    }

    fn close(&self, fd: RawFd) {
        // SAFETY: `fd` came from clone_tree in this setup and nothing else owns it. A failed close
        // leaves nothing to do: the descriptor is close-on-exec.
        unsafe { libc::close(fd) };
    }

    fn drop_bounding_cap(&self, cap: u32) -> Result<(), Errno> {
        prctl(libc::PR_CAPBSET_DROP, cap.into(), 0)
    }

    fn keep_caps_on_uid_change(&self) -> Result<(), Errno> {
        prctl(libc::PR_SET_KEEPCAPS, 1, 0)
    }

    fn set_caps(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let half = |mask: u64, high: bool| if high { (mask >> 32) as u32 } else { mask as u32 };
        let data = [false, true].map(|high| CapData {
            effective: half(effective, high),
            permitted: half(permitted, high),
            inheritable: half(inheritable, high),
        });
        // SAFETY: a raw capset (glibc's wrapper is not in the libc crate) with a live header and
        // the two-element data array version 3 reads; pid 0 is the calling thread.
        Errno::result(unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) })
            .map(drop)
    }

    fn clear_ambient_caps(&self) -> Result<(), Errno> {
        prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0)
    }

    fn raise_ambient_cap(&self, cap: u32) -> Result<(), Errno> {
        prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, cap.into())
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
    /// The `tasks` file of the instance's cgroup in another v1 hierarchy (cpu, pids), by index.
    Controller(usize),
    /// The read end of the pipe on which the parent says it wrote the user namespace's mappings.
    Sync,
}

/// How many v1 hierarchies besides the memory one an instance may join (cpu and pids).
pub const MAX_CONTROLLERS: usize = 2;

/// The descriptor numbers behind each [`ChildFd`], all above the standard three.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    /// The console pipe's write end.
    pub console: RawFd,
    /// The stdin descriptor.
    pub stdin: RawFd,
    /// The cgroup membership file.
    pub cgroup: RawFd,
    /// The other hierarchies' membership files (-1 where unused).
    pub controllers: [RawFd; MAX_CONTROLLERS],
    /// The mapping pipe's read end (-1 without a user namespace).
    pub sync: RawFd,
}

impl ChildFds {
    fn get(&self, fd: ChildFd) -> RawFd {
        match fd {
            ChildFd::Console => self.console,
            ChildFd::Stdin => self.stdin,
            ChildFd::Cgroup => self.cgroup,
            ChildFd::Controller(index) => self.controllers.get(index).copied().unwrap_or(-1),
            ChildFd::Sync => self.sync,
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
    /// Set the supplementary groups to `groups`, then become `gid` and `uid`.
    SetIds { uid: u32, gid: u32, groups: Vec<u32> },
    /// Join one of the instance's cgroups through its membership file.
    JoinCgroup(ChildFd),
    /// Wait until the parent has written the user namespace's uid and gid mappings.
    AwaitIdMaps,
    /// Unshare the cgroup namespace: its root becomes the cgroup joined.
    UnshareCgroupNamespace,
    /// setrlimit of `name` (resource number `resource`).
    Rlimit { name: &'static str, resource: u32, soft: u64, hard: u64 },
    /// mkdir(2) of a mount point on a filesystem the setup mounted.
    Mkdir(CString),
    /// An empty regular file, for a bind mount of a host device where a user namespace forbids
    /// mknod of one.
    EmptyFile(CString),
    /// A read-only (if asked) copy of the mounts at and under `source`, attached at `target`.
    BindTree { source: CString, target: CString, readonly: bool },
    /// Install the seccomp filters, in order (the kernel applies the strictest answer of all).
    Seccomp(Vec<BpfProgram>),
    /// Default dispositions and an empty mask for every signal.
    ResetSignals,
    /// Hide a path as OCI's `maskedPaths` do: `/dev/null` bound over a file, an empty read-only
    /// tmpfs over a directory, nothing if the path does not exist. Made after pivot_root, so the
    /// path is the container's.
    MaskPath(CString),
    /// Make a path read-only as OCI's `readonlyPaths` do: covered by a read-only copy of itself and
    /// the mounts under it, their other flags kept; nothing if the path does not exist.
    ReadonlyPath(CString),
    /// Drop every capability not in the mask from the bounding set.
    LimitBoundingCaps(u64),
    /// Keep the permitted capabilities across the coming change of uid.
    KeepCapsOnUidChange,
    /// Set the effective, permitted and inheritable capabilities.
    SetCaps { effective: u64, permitted: u64, inheritable: u64 },
    /// Clear the ambient set, then raise the mask's capabilities in it.
    SetAmbientCaps(u64),
}

/// The highest capability number a 64-bit set can hold.
const LAST_CAP_BIT: u32 = 63;

/// Hides `path` behind `/dev/null` or, for a directory, an empty read-only tmpfs. A stat first:
/// it costs a fraction of the failed mount(2) that would otherwise tell a path that is missing (most
/// of OCI's list on a given kernel) or a directory.
fn mask_path(sys: &dyn Syscalls, path: &CStr) -> Result<(), Errno> {
    match sys.is_directory(path) {
        Ok(true) => sys.mount(Some(c"tmpfs"), path, Some(c"tmpfs"), MsFlags::MS_RDONLY, None),
        Ok(false) => sys.mount(Some(c"/dev/null"), path, None, MsFlags::MS_BIND, None),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(()),
        Err(errno) => Err(errno),
    }
}

/// Covers `path` with a read-only copy of itself and the mounts under it. Through the mount API
/// (open_tree, mount_setattr, move_mount): the classic bind and remount needs twice the path
/// lookups, a statfs to keep the other flags, and leaves the mounts under the path writable.
fn readonly_path(sys: &dyn Syscalls, path: &CStr) -> Result<(), Errno> {
    let tree = match sys.clone_tree(path) {
        Ok(tree) => tree,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
        Err(errno) => return Err(errno),
    };
    let attached = sys.make_tree_readonly(tree).and_then(|()| sys.attach_tree(tree, path));
    sys.close(tree);
    attached
}

/// Drops from the bounding set every capability the kernel knows that `keep` lacks.
fn limit_bounding_caps(sys: &dyn Syscalls, keep: u64) -> Result<(), Errno> {
    for cap in (0..=LAST_CAP_BIT).filter(|cap| keep & 1 << cap == 0) {
        match sys.drop_bounding_cap(cap) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(Errno::EINVAL) => break,
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

/// Attaches a copy of the tree at `source` on `target`, read-only if asked, through the mount API
/// (its read-only flag reaches every mount of the tree, and a user namespace may set it on the
/// host's locked mounts).
fn bind_tree(sys: &dyn Syscalls, source: &CStr, target: &CStr, readonly: bool) -> Result<(), Errno> {
    let tree = sys.clone_tree(source)?;
    let attached =
        if readonly { sys.make_tree_readonly(tree) } else { Ok(()) }.and_then(|()| sys.attach_tree(tree, target));
    sys.close(tree);
    attached
}

fn set_ambient_caps(sys: &dyn Syscalls, raise: u64) -> Result<(), Errno> {
    sys.clear_ambient_caps()?;
    for cap in (0..=LAST_CAP_BIT).filter(|cap| raise & 1 << cap != 0) {
        sys.raise_ambient_cap(cap)?;
    }
    Ok(())
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
            Step::SetIds { uid, gid, groups } => sys.set_ids(*uid, *gid, groups),
            Step::JoinCgroup(fd) => sys.join_cgroup(fds.get(*fd)),
            Step::AwaitIdMaps => sys.await_byte(fds.get(ChildFd::Sync)),
            Step::UnshareCgroupNamespace => sys.unshare(CloneFlags::CLONE_NEWCGROUP),
            Step::Rlimit { resource, soft, hard, .. } => sys.set_rlimit(*resource, *soft, *hard),
            Step::Mkdir(path) => match sys.mkdir(path, Mode::from_bits_truncate(0o755)) {
                Err(Errno::EEXIST) => Ok(()),
                other => other,
            },
            Step::EmptyFile(path) => sys.mknod(path, SFlag::S_IFREG, Mode::from_bits_truncate(0o644), 0),
            Step::BindTree { source, target, readonly } => bind_tree(sys, source, target, *readonly),
            Step::Seccomp(programs) => programs.iter().try_for_each(|program| sys.install_seccomp(program)),
            Step::ResetSignals => sys.reset_signals(),
            Step::MaskPath(path) => mask_path(sys, path),
            Step::ReadonlyPath(path) => readonly_path(sys, path),
            Step::LimitBoundingCaps(keep) => limit_bounding_caps(sys, *keep),
            Step::KeepCapsOnUidChange => sys.keep_caps_on_uid_change(),
            Step::SetCaps { effective, permitted, inheritable } => sys.set_caps(*effective, *permitted, *inheritable),
            Step::SetAmbientCaps(raise) => set_ambient_caps(sys, *raise),
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
            Step::SetIds { uid, gid, groups } => format!("become uid {uid} gid {gid} groups {groups:?}"),
            Step::JoinCgroup(ChildFd::Controller(index)) => {
                format!("join the instance's cgroup in v1 hierarchy {index}")
            }
            Step::JoinCgroup(_) => "join the instance's cgroup".to_owned(),
            Step::AwaitIdMaps => "wait for the user namespace's id mappings".to_owned(),
            Step::UnshareCgroupNamespace => "unshare the cgroup namespace".to_owned(),
            Step::Rlimit { name, soft, hard, .. } => format!("set {name} to soft {soft} hard {hard}"),
            Step::Mkdir(path) => format!("mkdir {}", show(path)),
            Step::EmptyFile(path) => format!("create {} for a device bind mount", show(path)),
            Step::BindTree { source, target, readonly } => {
                format!("bind {} on {}{}", show(source), show(target), if *readonly { " read-only" } else { "" })
            }
            Step::Seccomp(programs) => format!("install {} seccomp filter(s)", programs.len()),
            Step::ResetSignals => "reset signal dispositions and mask".to_owned(),
            Step::MaskPath(path) => format!("mask {}", show(path)),
            Step::ReadonlyPath(path) => format!("make {} read-only", show(path)),
            Step::LimitBoundingCaps(keep) => format!("limit the bounding capabilities to {keep:#018x}"),
            Step::KeepCapsOnUidChange => "keep capabilities across the uid change".to_owned(),
            Step::SetCaps { effective, permitted, inheritable } => format!(
                "set capabilities effective {effective:#018x} permitted {permitted:#018x} inheritable \
                 {inheritable:#018x}"
            ),
            Step::SetAmbientCaps(raise) => format!("set the ambient capabilities to {raise:#018x}"),
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
pub(crate) mod recording;

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
            Step::JoinCgroup(ChildFd::Cgroup),
            Step::Chdir(c("/r")),
            Step::Dup2 { from: ChildFd::Console, to: 1 },
            Step::Hostname(c("box")),
            Step::Chdir(c("/never")),
        ];
        let sys = RecordingSyscalls { fail_on: Some("sethostname"), ..Default::default() };
        let fds = ChildFds { console: 7, stdin: 8, cgroup: 9, controllers: [-1; MAX_CONTROLLERS], sync: -1 };
        let err = run_steps(&sys, &steps, &fds).unwrap_err();
        assert_eq!(err, (3, Errno::EPERM));
        assert_eq!(*sys.calls.borrow(), ["join_cgroup 9", "chdir /r", "dup2 7 1", "sethostname box"]);
    }

    #[test]
    fn a_masked_path_is_bound_to_dev_null_or_covered_by_a_read_only_tmpfs() {
        let fds = ChildFds { console: 7, stdin: 8, cgroup: 9, controllers: [-1; MAX_CONTROLLERS], sync: -1 };
        let bind = MsFlags::MS_BIND.bits();
        let ro = MsFlags::MS_RDONLY.bits();
        let sys = RecordingSyscalls { directories: &["/sys/firmware"], ..Default::default() };
        run_steps(&sys, &[Step::MaskPath(c("/proc/kcore")), Step::MaskPath(c("/sys/firmware"))], &fds).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            [
                "is_directory /proc/kcore".to_owned(),
                format!("mount /dev/null /proc/kcore - {bind:#x} -"),
                "is_directory /sys/firmware".to_owned(),
                format!("mount tmpfs /sys/firmware tmpfs {ro:#x} -"),
            ]
        );
        // A path this kernel does not have is skipped, as crun and runc skip it.
        let sys =
            RecordingSyscalls { fail_on: Some("is_directory"), fail_with: Some(Errno::ENOENT), ..Default::default() };
        run_steps(&sys, &[Step::MaskPath(c("/proc/timer_stats")), Step::Chdir(c("/"))], &fds).unwrap();
        assert_eq!(*sys.calls.borrow(), ["is_directory /proc/timer_stats", "chdir /"]);
        let sys = RecordingSyscalls { fail_on: Some("mount"), ..Default::default() };
        assert_eq!(run_steps(&sys, &[Step::MaskPath(c("/proc/keys"))], &fds), Err((0, Errno::EPERM)));
    }

    #[test]
    fn a_readonly_path_is_covered_by_a_read_only_copy_of_its_tree() {
        let fds = ChildFds { console: 7, stdin: 8, cgroup: 9, controllers: [-1; MAX_CONTROLLERS], sync: -1 };
        let sys = RecordingSyscalls::default();
        run_steps(&sys, &[Step::ReadonlyPath(c("/proc/sys"))], &fds).unwrap();
        assert_eq!(
            *sys.calls.borrow(),
            ["clone_tree /proc/sys", "make_tree_readonly 42", "attach_tree 42 /proc/sys", "close 42"]
        );
        let sys =
            RecordingSyscalls { fail_on: Some("clone_tree"), fail_with: Some(Errno::ENOENT), ..Default::default() };
        run_steps(&sys, &[Step::ReadonlyPath(c("/proc/nothing"))], &fds).unwrap();
        assert_eq!(sys.calls.borrow().len(), 1);
        // The copy is closed whatever happens to it.
        let sys = RecordingSyscalls { fail_on: Some("make_tree_readonly"), ..Default::default() };
        assert_eq!(run_steps(&sys, &[Step::ReadonlyPath(c("/proc/sys"))], &fds), Err((0, Errno::EPERM)));
        assert_eq!(*sys.calls.borrow(), ["clone_tree /proc/sys", "make_tree_readonly 42", "close 42"]);
    }

    #[test]
    fn capabilities_are_bounded_kept_across_the_uid_change_then_set() {
        let fds = ChildFds { console: 7, stdin: 8, cgroup: 9, controllers: [-1; MAX_CONTROLLERS], sync: -1 };
        let keep = (1 << 5) | (1 << 10) | (1 << 29);
        let steps = [
            Step::LimitBoundingCaps(keep),
            Step::KeepCapsOnUidChange,
            Step::SetIds { uid: 1000, gid: 1000, groups: vec![] },
            Step::SetCaps { effective: keep, permitted: keep, inheritable: 1 << 5 },
            Step::SetAmbientCaps(1 << 5),
        ];
        let sys = RecordingSyscalls::default();
        run_steps(&sys, &steps, &fds).unwrap();
        let calls = sys.calls.borrow();
        let dropped: Vec<&str> = calls.iter().filter_map(|c| c.strip_prefix("drop_bounding_cap ")).collect();
        let expected: Vec<String> = (0..=40).filter(|cap| ![5, 10, 29].contains(cap)).map(|c| c.to_string()).collect();
        assert_eq!(dropped, expected);
        assert_eq!(
            calls[dropped.len()..],
            [
                "keep_caps_on_uid_change",
                "set_ids 1000 1000",
                "set_caps 0x20000420 0x20000420 0x20",
                "clear_ambient_caps",
                "raise_ambient_cap 5"
            ]
        );
        let sys = RecordingSyscalls { fail_on: Some("drop_bounding_cap 3"), ..Default::default() };
        assert_eq!(run_steps(&sys, &steps, &fds), Err((0, Errno::EPERM)));
        assert!(Step::LimitBoundingCaps(keep).describe().contains("0x0000000020000420"));
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
