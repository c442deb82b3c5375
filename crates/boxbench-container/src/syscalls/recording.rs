//! A [`Syscalls`] that records the calls instead of making them, for tests of the setup's order
//! without root.

use std::cell::RefCell;

use super::*;

/// Records every call as a line; fails the calls whose line starts with `fail_on`, with
/// `fail_with` (EPERM if unset).
#[derive(Debug, Default)]
pub struct RecordingSyscalls {
    pub calls: RefCell<Vec<String>>,
    pub fail_on: Option<&'static str>,
    pub fail_with: Option<Errno>,
    /// The paths `is_directory` says are directories.
    pub directories: &'static [&'static str],
}

impl RecordingSyscalls {
    fn record(&self, line: String) -> Result<(), Errno> {
        let fails = self.fail_on.is_some_and(|prefix| line.starts_with(prefix));
        self.calls.borrow_mut().push(line);
        if fails { Err(self.fail_with.unwrap_or(Errno::EPERM)) } else { Ok(()) }
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
        self.record(format!("mount {} {} {} {:#x} {}", s(source), s(Some(target)), s(fstype), flags.bits(), s(data)))
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
        let kind = match kind {
            SFlag::S_IFCHR => "c",
            SFlag::S_IFREG => "f",
            _ => "?",
        };
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
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), Errno> {
        if groups.is_empty() {
            self.record(format!("set_ids {uid} {gid}"))
        } else {
            self.record(format!("set_ids {uid} {gid} {groups:?}"))
        }
    }
    fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        self.record(format!("set_rlimit {resource} {soft} {hard}"))
    }
    fn mkdir(&self, path: &CStr, perm: Mode) -> Result<(), Errno> {
        self.record(format!("mkdir {} {:o}", s(Some(path)), perm.bits()))
    }
    fn unshare(&self, flags: CloneFlags) -> Result<(), Errno> {
        self.record(format!("unshare {:#x}", flags.bits()))
    }
    fn await_byte(&self, fd: RawFd) -> Result<(), Errno> {
        self.record(format!("await_byte {fd}"))
    }
    fn install_seccomp(&self, program: &[sock_filter]) -> Result<(), Errno> {
        self.record(format!("install_seccomp {}", program.len()))
    }
    fn join_cgroup(&self, procs: RawFd) -> Result<(), Errno> {
        self.record(format!("join_cgroup {procs}"))
    }
    fn reset_signals(&self) -> Result<(), Errno> {
        self.record("reset_signals".to_owned())
    }
    fn is_directory(&self, path: &CStr) -> Result<bool, Errno> {
        self.record(format!("is_directory {}", s(Some(path))))?;
        Ok(self.directories.iter().any(|dir| dir.as_bytes() == path.to_bytes()))
    }
    fn clone_tree(&self, path: &CStr) -> Result<RawFd, Errno> {
        self.record(format!("clone_tree {}", s(Some(path))))?;
        Ok(42)
    }
    fn make_tree_readonly(&self, tree: RawFd) -> Result<(), Errno> {
        self.record(format!("make_tree_readonly {tree}"))
    }
    fn attach_tree(&self, tree: RawFd, target: &CStr) -> Result<(), Errno> {
        self.record(format!("attach_tree {tree} {}", s(Some(target))))
    }
    fn close(&self, fd: RawFd) {
        self.calls.borrow_mut().push(format!("close {fd}"));
    }
    fn drop_bounding_cap(&self, cap: u32) -> Result<(), Errno> {
        // The recorded kernel knows capabilities 0 to 40, as this host's 6.x does.
        if cap > 40 {
            return Err(Errno::EINVAL);
        }
        self.record(format!("drop_bounding_cap {cap}"))
    }
    fn keep_caps_on_uid_change(&self) -> Result<(), Errno> {
        self.record("keep_caps_on_uid_change".to_owned())
    }
    fn set_caps(&self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        self.record(format!("set_caps {effective:#x} {permitted:#x} {inheritable:#x}"))
    }
    fn clear_ambient_caps(&self) -> Result<(), Errno> {
        self.record("clear_ambient_caps".to_owned())
    }
    fn raise_ambient_cap(&self, cap: u32) -> Result<(), Errno> {
        self.record(format!("raise_ambient_cap {cap}"))
    }
}
