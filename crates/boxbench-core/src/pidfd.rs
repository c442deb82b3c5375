//! Process file descriptors: a handle on a child that cannot be confused with a later process of the
//! same pid, and that becomes readable when the child exits (so waiting is a `poll`, with no interval
//! added to the measured exit).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `pidfd_open(pid, 0)`: a descriptor referring to process `pid`.
pub fn open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; nothing is borrowed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a descriptor the kernel just returned to this process and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_a_pidfd_and_a_pid_that_does_not_exist_has_none() {
        assert!(open(std::process::id() as i32).is_ok());
        assert_eq!(open(i32::MAX).unwrap_err().raw_os_error(), Some(libc::ESRCH));
    }
}
