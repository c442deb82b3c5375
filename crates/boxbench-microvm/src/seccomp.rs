//! The VMM child's seccomp filter: once its VM is built, every thread of the child may make only the
//! system calls of the run loop, and any other one kills the whole child (SIGSYS), which the launcher
//! reports as such.
//!
//! The run loop needs: `ioctl(KVM_RUN)` and nothing else of KVM; `write` (serial output, event
//! records, the serial and virtio interrupts' eventfds); `pread64` of the already-open
//! `/proc/self/smaps` ([`crate::vmm_memory::Smaps`]) and, with `pwrite64` and `fdatasync`, of the
//! already-open disk images (virtio-blk's read, write and flush); memory management for the heap and thread stacks (`brk`, `mmap`
//! without `PROT_EXEC`, `mremap`, `munmap`, `madvise`); locks and channels (`futex`, `sched_yield`); stopping vCPU threads
//! with the kick signal (`tgkill`, `getpid`, `gettid`, `rt_sigreturn`, `clock_nanosleep`,
//! `nanosleep`); releasing the VM (`close`, and `fcntl(F_GETFD)`, which Rust's standard library
//! issues before a close) and leaving (`sigaltstack`, `exit`, `exit_group`). No
//! `open`, `socket`, `execve`, `clone`, `mprotect` or other KVM ioctl is allowed.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// `KVM_RUN`: `_IO(KVMIO, 0x80)`.
const KVM_RUN: u64 = 0xae80;

/// The system calls allowed without condition.
const RUN_LOOP_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_write,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fdatasync,
    libc::SYS_brk,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_tgkill,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_close,
    libc::SYS_sigaltstack,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The seccomp filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules did not compile to BPF.
    #[error("building the VMM's seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("installing the VMM's seccomp filter on every thread: {0}")]
    Install(#[from] seccompiler::Error),
}

/// The run loop's filter, compiled for this machine: the allowed calls above, `ioctl` only with
/// `KVM_RUN`, `mmap` and `mprotect` only without `PROT_EXEC`, everything else kills the process.
pub fn run_loop_filter() -> Result<BpfProgram, SeccompError> {
    filter_allowing(&[], &[])
}

/// [`run_loop_filter`], and what taking a snapshot into files opened beforehand takes: the KVM_GET_*
/// ioctls of a vCPU's and the VM's state, `pwrite64` (guest memory, page runs at their offsets) and
/// `ftruncate` (the memory file's length).
pub fn snapshot_filter() -> Result<BpfProgram, SeccompError> {
    use kvm_bindings::{
        kvm_clock_data, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msrs, kvm_regs, kvm_sregs, kvm_vcpu_events,
    };
    use std::mem::size_of;
    // _IOR(KVMIO, nr, T) and _IOWR(KVMIO, nr, T) of <linux/kvm.h>.
    let ior = |nr: u64, size: usize| (2 << 30) | ((size as u64) << 16) | (0xae << 8) | nr;
    let iowr = |nr: u64, size: usize| (3 << 30) | ((size as u64) << 16) | (0xae << 8) | nr;
    let state_ioctls = [
        ior(0x81, size_of::<kvm_regs>()),
        ior(0x83, size_of::<kvm_sregs>()),
        iowr(0x88, size_of::<kvm_msrs>()),
        ior(0x8c, size_of::<kvm_fpu>()),
        ior(0x8e, size_of::<kvm_lapic_state>()),
        ior(0x98, size_of::<kvm_mp_state>()),
        ior(0x9f, size_of::<kvm_vcpu_events>()),
        ior(0x7c, size_of::<kvm_clock_data>()),
    ];
    filter_allowing(&[libc::SYS_pwrite64, libc::SYS_ftruncate], &state_ioctls)
}

fn filter_allowing(extra: &[libc::c_long], extra_ioctls: &[u64]) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        RUN_LOOP_SYSCALLS.iter().chain(extra).map(|&syscall| (syscall, Vec::new())).collect();
    let ioctl_rules = std::iter::once(KVM_RUN)
        .chain(extra_ioctls.iter().copied())
        .map(|request| {
            let condition = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)?;
            SeccompRule::new(vec![condition])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    // Memory, but never executable memory: nothing the guest makes the VMM do can bring new code.
    let not_executable =
        SeccompCondition::new(2, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?;
    rules.insert(libc::SYS_mmap, vec![SeccompRule::new(vec![not_executable.clone()])?]);
    // glibc grows a thread's malloc arena by making more of its reserved heap readable and
    // writable with mprotect (seen killing a vCPU thread when ten VMs ran at once): allowed on the
    // same terms as mmap.
    rules.insert(libc::SYS_mprotect, vec![SeccompRule::new(vec![not_executable])?]);
    // Rust's standard library checks that a descriptor is still open before closing it (F_GETFD).
    let get_fd_flags = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, libc::F_GETFD as u64)?;
    rules.insert(libc::SYS_fcntl, vec![SeccompRule::new(vec![get_fd_flags])?]);
    let filter = SeccompFilter::new(rules, SeccompAction::KillProcess, SeccompAction::Allow, TargetArch::x86_64)?;
    Ok(BpfProgram::try_from(filter)?)
}

/// Installs `filter` on every thread of this process at once (`SECCOMP_FILTER_FLAG_TSYNC`), after
/// setting `no_new_privs`.
pub fn confine_all_threads(filter: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter_all_threads(filter)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks a child that confines itself, writes one byte to a pipe (allowed), then runs `then`; returns
    /// what the pipe received and the child's wait status.
    fn confined_child(then: fn()) -> (Vec<u8>, i32) {
        let filter = run_loop_filter().unwrap();
        let (reader, writer) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes raw system calls (no allocation, no locks) and leaves by _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            use std::os::fd::AsRawFd;
            let status = match confine_all_threads(&filter) {
                Ok(()) => {
                    // SAFETY: writes one byte from a valid buffer to the pipe's open write end.
                    unsafe { libc::write(writer.as_raw_fd(), b"x".as_ptr().cast(), 1) };
                    then();
                    0
                }
                Err(_) => 3,
            };
            // SAFETY: _exit ends the forked child without running the test harness's destructors.
            unsafe { libc::_exit(status) };
        }
        drop(writer);
        let received = std::io::read_to_string(std::fs::File::from(reader)).unwrap().into_bytes();
        let mut status = 0;
        // SAFETY: waits for the child forked above, with a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        (received, status)
    }

    #[test]
    fn the_run_loops_calls_pass() {
        let (received, status) = confined_child(|| {
            // SAFETY: getpid and sched_yield have no preconditions.
            unsafe {
                libc::getpid();
                libc::sched_yield();
            }
        });
        assert_eq!(received, b"x");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }

    fn open_a_socket() {
        // SAFETY: socket takes scalar arguments.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    }

    fn open_a_file() {
        // SAFETY: the path is a valid NUL-terminated string.
        unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    }

    fn create_a_vm() {
        // SAFETY: an ioctl without an argument pointer (KVM_CREATE_VM, on whatever fd 0 is).
        unsafe { libc::ioctl(0, 0xae01) };
    }

    fn map_executable_memory() {
        // SAFETY: an anonymous mapping at an address of the kernel's choosing; never used.
        unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
    }

    fn map_data_memory() {
        // SAFETY: as above, without PROT_EXEC.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            // SAFETY: _exit has no preconditions; status 4 tells the parent the mapping failed.
            unsafe { libc::_exit(4) };
        }
    }

    #[test]
    fn data_memory_may_be_mapped() {
        let (received, status) = confined_child(map_data_memory);
        assert_eq!(received, b"x");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }

    #[test]
    fn a_forbidden_call_kills_the_confined_process() {
        for forbidden in [open_a_socket as fn(), open_a_file, create_a_vm, map_executable_memory] {
            let (received, status) = confined_child(forbidden);
            assert_eq!(received, b"x", "the child confined itself and wrote before the forbidden call");
            assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS, "status {status:#x}");
        }
    }
}
