//! A small interface over the hypervisor calls the VMM makes, and its KVM implementation.
//!
//! The rest of the VMM sees a [`Hypervisor`] that creates a [`HypervisorVm`], which creates
//! [`HypervisorVcpu`]s whose `run` returns a [`VcpuExit`] enum: the exit reasons the VMM handles are
//! spelled out, everything else arrives as [`VcpuExit::Unsupported`] with its name. Every KVM error is
//! wrapped with the ioctl that failed.

use std::os::raw::c_int;

use kvm_bindings::{
    CpuId, KVM_CAP_SPLIT_IRQCHIP, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, Msrs, kvm_clock_data, kvm_enable_cap,
    kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_pit_config, kvm_regs, kvm_sregs, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::snapshot::VcpuState;

/// A hypervisor call that failed.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// The KVM device does not exist.
    #[error("{0}: no such device (KVM is not available on this host)")]
    NoKvm(String),
    /// The KVM device exists but may not be opened.
    #[error("{0}: permission denied (run as root or join the kvm group)")]
    KvmPermission(String),
    /// An ioctl failed.
    #[error("{call}: {source}")]
    Ioctl { call: &'static str, source: kvm_ioctls::Error },
    /// KVM applied fewer MSRs than asked.
    #[error("KVM_SET_MSRS: only {set} of {asked} boot MSRs accepted (first refused: {first_refused:#x})")]
    MsrsRefused { set: usize, asked: usize, first_refused: u32 },
}

fn ioctl(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> HypervisorError {
    move |source| HypervisorError::Ioctl { call, source }
}

/// Why a vCPU stopped running guest code.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// The guest read from an I/O port; fill `data`.
    PortIn { port: u16, data: &'a mut [u8] },
    /// The guest wrote to an I/O port.
    PortOut { port: u16, data: &'a [u8] },
    /// The guest read unmapped guest-physical memory; fill `data`.
    MmioRead { address: u64, data: &'a mut [u8] },
    /// The guest wrote unmapped guest-physical memory.
    MmioWrite { address: u64, data: &'a [u8] },
    /// The vCPU halted (only without an in-kernel irqchip).
    Halted,
    /// The vCPU shut down: a triple fault.
    Shutdown,
    /// KVM could not handle the guest (e.g. an instruction its emulator lacks); `suberror` is
    /// KVM_INTERNAL_ERROR_*.
    InternalError { suberror: u32 },
    /// VM entry failed; `reason` is the hardware's entry failure reason.
    FailEntry { reason: u64, cpu: u32 },
    /// A signal interrupted KVM_RUN (the VMM kicks vCPUs this way to stop them).
    Interrupted,
    /// An exit this VMM does not handle.
    Unsupported(&'static str),
}

/// Opens the hypervisor and creates VMs.
pub trait Hypervisor {
    /// The VM type.
    type Vm: HypervisorVm;
    /// The most vCPUs one VM may have.
    fn max_vcpus(&self) -> usize;
    /// The CPUID the hypervisor can present to a guest.
    fn supported_cpuid(&self) -> Result<CpuId, HypervisorError>;
    /// A new, empty VM.
    fn create_vm(&self) -> Result<Self::Vm, HypervisorError>;
}

/// One VM: memory, interrupt controllers, vCPUs.
pub trait HypervisorVm {
    /// The vCPU type.
    type Vcpu: HypervisorVcpu;
    /// Creates the in-kernel PIC, IOAPIC and the LAPICs the vCPUs will get (before any vCPU).
    fn create_irqchip(&self) -> Result<(), HypervisorError>;
    /// Creates the in-kernel PIT (8254 timer), its speaker port answered too.
    fn create_pit(&self) -> Result<(), HypervisorError>;
    /// Creates only the LAPICs in the kernel (KVM_CAP_SPLIT_IRQCHIP), leaving PIC and IOAPIC to
    /// userspace with `ioapic_pins` routes reserved for them (before any vCPU).
    fn create_split_irqchip(&self, ioapic_pins: u32) -> Result<(), HypervisorError>;
    /// Places the pages KVM needs for real-mode emulation on VMX hosts.
    fn set_system_pages(&self, identity_map: u64, tss: u64) -> Result<(), HypervisorError>;
    /// Maps `size` bytes of host memory at `host_address` as guest memory at `guest_address`.
    ///
    /// # Safety
    /// The host range must stay mapped, and be used only as guest memory, for the life of the VM.
    unsafe fn map_memory(
        &self,
        slot: u32,
        guest_address: u64,
        size: u64,
        host_address: u64,
    ) -> Result<(), HypervisorError>;
    /// Makes a write to `eventfd` raise interrupt line `gsi`.
    fn register_irqfd(&self, eventfd: &EventFd, gsi: u32) -> Result<(), HypervisorError>;
    /// Creates vCPU `id` (its APIC id).
    fn create_vcpu(&self, id: u8) -> Result<Self::Vcpu, HypervisorError>;
    /// The KVM clock.
    fn clock(&self) -> Result<kvm_clock_data, HypervisorError>;
    /// Sets the KVM clock.
    fn set_clock(&self, clock: &kvm_clock_data) -> Result<(), HypervisorError>;
}

/// One vCPU.
pub trait HypervisorVcpu: Send {
    /// Sets the CPUID the guest sees.
    fn set_cpuid(&self, cpuid: &CpuId) -> Result<(), HypervisorError>;
    /// Sets MSRs; all of them or an error.
    fn set_msrs(&self, msrs: &Msrs) -> Result<(), HypervisorError>;
    /// Sets the general-purpose registers.
    fn set_regs(&self, regs: &kvm_regs) -> Result<(), HypervisorError>;
    /// The special registers as they are.
    fn sregs(&self) -> Result<kvm_sregs, HypervisorError>;
    /// Sets the special registers.
    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), HypervisorError>;
    /// Sets the x87/SSE state.
    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<(), HypervisorError>;
    /// The local APIC registers as they are.
    fn lapic(&self) -> Result<kvm_lapic_state, HypervisorError>;
    /// Sets the local APIC registers.
    fn set_lapic(&self, lapic: &kvm_lapic_state) -> Result<(), HypervisorError>;
    /// Runs guest code until the next exit.
    fn run(&mut self) -> Result<VcpuExit<'_>, HypervisorError>;
    /// With `on`, the next `run` completes any I/O the guest is waiting on and returns
    /// [`VcpuExit::Interrupted`] without running guest code further (KVM's `immediate_exit`): how a vCPU
    /// is brought to an instruction boundary before its state is saved.
    fn set_immediate_exit(&mut self, on: bool);
    /// The vCPU's whole state (with the MSRs of `msr_indices`); the vCPU must be at an instruction
    /// boundary (see [`HypervisorVcpu::set_immediate_exit`]).
    fn save_state(&self, msr_indices: &[u32]) -> Result<VcpuState, HypervisorError>;
    /// Puts back a state [`HypervisorVcpu::save_state`] returned (CPUID is set beforehand).
    fn restore_state(&self, state: &VcpuState) -> Result<(), HypervisorError>;
}

/// `/dev/kvm`.
#[derive(Debug)]
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    /// Opens `/dev/kvm`, telling a missing device from a refused one.
    pub fn open() -> Result<Self, HypervisorError> {
        Self::open_at(c"/dev/kvm")
    }

    /// Opens the KVM device at `path`.
    pub fn open_at(path: &std::ffi::CStr) -> Result<Self, HypervisorError> {
        let name = || path.to_string_lossy().into_owned();
        match Kvm::new_with_path(path) {
            Ok(kvm) => Ok(Self { kvm }),
            Err(e) if e.errno() == libc::ENOENT || e.errno() == libc::ENODEV => Err(HypervisorError::NoKvm(name())),
            Err(e) if e.errno() == libc::EACCES || e.errno() == libc::EPERM => {
                Err(HypervisorError::KvmPermission(name()))
            }
            Err(source) => Err(HypervisorError::Ioctl { call: "open the KVM device", source }),
        }
    }
}

impl Hypervisor for KvmHypervisor {
    type Vm = KvmVm;

    fn max_vcpus(&self) -> usize {
        // KVM_CAP_MAX_VCPUS, falling back to KVM_CAP_NR_VCPUS (kvm-ioctls does the fallback).
        self.kvm.get_max_vcpus()
    }

    fn supported_cpuid(&self) -> Result<CpuId, HypervisorError> {
        self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))
    }

    fn create_vm(&self) -> Result<KvmVm, HypervisorError> {
        let fd = self.kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        let has_irqfd = self.kvm.check_extension(Cap::Irqfd);
        Ok(KvmVm { fd, has_irqfd })
    }
}

/// A KVM VM.
#[derive(Debug)]
pub struct KvmVm {
    fd: VmFd,
    has_irqfd: bool,
}

impl HypervisorVm for KvmVm {
    type Vcpu = KvmVcpu;

    fn create_irqchip(&self) -> Result<(), HypervisorError> {
        self.fd.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))
    }

    fn create_pit(&self) -> Result<(), HypervisorError> {
        let config = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        self.fd.create_pit2(config).map_err(ioctl("KVM_CREATE_PIT2"))
    }

    fn create_split_irqchip(&self, ioapic_pins: u32) -> Result<(), HypervisorError> {
        let mut cap = kvm_enable_cap { cap: KVM_CAP_SPLIT_IRQCHIP, ..Default::default() };
        cap.args[0] = u64::from(ioapic_pins);
        self.fd.enable_cap(&cap).map_err(ioctl("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)"))
    }

    fn set_system_pages(&self, identity_map: u64, tss: u64) -> Result<(), HypervisorError> {
        self.fd.set_identity_map_address(identity_map).map_err(ioctl("KVM_SET_IDENTITY_MAP_ADDR"))?;
        self.fd.set_tss_address(tss as usize).map_err(ioctl("KVM_SET_TSS_ADDR"))
    }

    unsafe fn map_memory(
        &self,
        slot: u32,
        guest_address: u64,
        size: u64,
        host_address: u64,
    ) -> Result<(), HypervisorError> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: guest_address,
            memory_size: size,
            userspace_addr: host_address,
        };
        // SAFETY: the caller guarantees the host range stays mapped and is used only as this VM's
        // memory for the VM's life, which is what KVM_SET_USER_MEMORY_REGION requires.
        unsafe { self.fd.set_user_memory_region(region) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))
    }

    fn register_irqfd(&self, eventfd: &EventFd, gsi: u32) -> Result<(), HypervisorError> {
        if !self.has_irqfd {
            return Err(HypervisorError::Ioctl { call: "KVM_IRQFD", source: kvm_ioctls::Error::new(libc::ENOTSUP) });
        }
        self.fd.register_irqfd(eventfd, gsi).map_err(ioctl("KVM_IRQFD"))
    }

    fn create_vcpu(&self, id: u8) -> Result<KvmVcpu, HypervisorError> {
        let fd = self.fd.create_vcpu(u64::from(id)).map_err(ioctl("KVM_CREATE_VCPU"))?;
        Ok(KvmVcpu { fd })
    }

    fn clock(&self) -> Result<kvm_clock_data, HypervisorError> {
        self.fd.get_clock().map_err(ioctl("KVM_GET_CLOCK"))
    }

    fn set_clock(&self, clock: &kvm_clock_data) -> Result<(), HypervisorError> {
        // Only the clock value is put back; the flags KVM_GET_CLOCK reports are not for setting.
        let clock = kvm_clock_data { clock: clock.clock, ..Default::default() };
        self.fd.set_clock(&clock).map_err(ioctl("KVM_SET_CLOCK"))
    }
}

/// A KVM vCPU.
#[derive(Debug)]
pub struct KvmVcpu {
    fd: VcpuFd,
}

impl HypervisorVcpu for KvmVcpu {
    fn set_cpuid(&self, cpuid: &CpuId) -> Result<(), HypervisorError> {
        self.fd.set_cpuid2(cpuid).map_err(ioctl("KVM_SET_CPUID2"))
    }

    fn set_msrs(&self, msrs: &Msrs) -> Result<(), HypervisorError> {
        let set = self.fd.set_msrs(msrs).map_err(ioctl("KVM_SET_MSRS"))?;
        let entries = msrs.as_slice();
        if set < entries.len() {
            return Err(HypervisorError::MsrsRefused { set, asked: entries.len(), first_refused: entries[set].index });
        }
        Ok(())
    }

    fn set_regs(&self, regs: &kvm_regs) -> Result<(), HypervisorError> {
        self.fd.set_regs(regs).map_err(ioctl("KVM_SET_REGS"))
    }

    fn sregs(&self) -> Result<kvm_sregs, HypervisorError> {
        self.fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))
    }

    fn set_sregs(&self, sregs: &kvm_sregs) -> Result<(), HypervisorError> {
        self.fd.set_sregs(sregs).map_err(ioctl("KVM_SET_SREGS"))
    }

    fn set_fpu(&self, fpu: &kvm_fpu) -> Result<(), HypervisorError> {
        self.fd.set_fpu(fpu).map_err(ioctl("KVM_SET_FPU"))
    }

    fn lapic(&self) -> Result<kvm_lapic_state, HypervisorError> {
        self.fd.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))
    }

    fn set_lapic(&self, lapic: &kvm_lapic_state) -> Result<(), HypervisorError> {
        self.fd.set_lapic(lapic).map_err(ioctl("KVM_SET_LAPIC"))
    }

    fn set_immediate_exit(&mut self, on: bool) {
        self.fd.set_kvm_immediate_exit(u8::from(on));
    }

    fn save_state(&self, msr_indices: &[u32]) -> Result<VcpuState, HypervisorError> {
        let entries: Vec<kvm_msr_entry> =
            msr_indices.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| HypervisorError::Ioctl {
            call: "KVM_GET_MSRS",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let read = self.fd.get_msrs(&mut msrs).map_err(ioctl("KVM_GET_MSRS"))?;
        if read < entries.len() {
            return Err(HypervisorError::MsrsRefused {
                set: read,
                asked: entries.len(),
                first_refused: entries[read].index,
            });
        }
        Ok(VcpuState {
            regs: self.fd.get_regs().map_err(ioctl("KVM_GET_REGS"))?,
            sregs: self.fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?,
            fpu: self.fd.get_fpu().map_err(ioctl("KVM_GET_FPU"))?,
            msrs: msrs.as_slice().to_vec(),
            lapic: self.fd.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?,
            mp_state: self.fd.get_mp_state().map_err(ioctl("KVM_GET_MP_STATE"))?,
            events: self.fd.get_vcpu_events().map_err(ioctl("KVM_GET_VCPU_EVENTS"))?,
        })
    }

    fn restore_state(&self, state: &VcpuState) -> Result<(), HypervisorError> {
        // Special registers before MSRs and the LAPIC: they carry EFER and the APIC base.
        self.fd.set_sregs(&state.sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        let msrs = Msrs::from_entries(&state.msrs).map_err(|_| HypervisorError::Ioctl {
            call: "KVM_SET_MSRS",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        self.set_msrs(&msrs)?;
        self.fd.set_regs(&state.regs).map_err(ioctl("KVM_SET_REGS"))?;
        self.fd.set_fpu(&state.fpu).map_err(ioctl("KVM_SET_FPU"))?;
        self.fd.set_lapic(&state.lapic).map_err(ioctl("KVM_SET_LAPIC"))?;
        self.fd.set_mp_state(state.mp_state).map_err(ioctl("KVM_SET_MP_STATE"))?;
        self.fd.set_vcpu_events(&state.events).map_err(ioctl("KVM_SET_VCPU_EVENTS"))
    }

    fn run(&mut self) -> Result<VcpuExit<'_>, HypervisorError> {
        use kvm_ioctls::VcpuExit as Kvm;
        // The shared kvm_run page, kept as a pointer so the internal-error suberror can be read while
        // the exit returned by `run` still borrows the vCPU.
        let kvm_run: *const kvm_bindings::kvm_run = self.fd.get_kvm_run();
        Ok(match self.fd.run() {
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => VcpuExit::Interrupted,
            Err(source) => return Err(HypervisorError::Ioctl { call: "KVM_RUN", source }),
            Ok(Kvm::IoIn(port, data)) => VcpuExit::PortIn { port, data },
            Ok(Kvm::IoOut(port, data)) => VcpuExit::PortOut { port, data },
            Ok(Kvm::MmioRead(address, data)) => VcpuExit::MmioRead { address, data },
            Ok(Kvm::MmioWrite(address, data)) => VcpuExit::MmioWrite { address, data },
            Ok(Kvm::Hlt) => VcpuExit::Halted,
            Ok(Kvm::Shutdown) => VcpuExit::Shutdown,
            Ok(Kvm::FailEntry(reason, cpu)) => VcpuExit::FailEntry { reason, cpu },
            Ok(Kvm::Intr) => VcpuExit::Interrupted,
            Ok(Kvm::InternalError) => {
                // SAFETY: `kvm_run` points at this vCPU's kvm_run mapping, which lives as long as the
                // vCPU fd; KVM_RUN just returned KVM_EXIT_INTERNAL_ERROR, for which the kernel fills
                // the `internal` member of the exit union, and nothing writes the page meanwhile.
                let suberror = unsafe { (*kvm_run).__bindgen_anon_1.internal.suberror };
                VcpuExit::InternalError { suberror }
            }
            Ok(other) => VcpuExit::Unsupported(exit_name(&other)),
        })
    }
}

/// The KVM name of an exit the VMM does not handle.
fn exit_name(exit: &kvm_ioctls::VcpuExit<'_>) -> &'static str {
    use kvm_ioctls::VcpuExit as Kvm;
    match exit {
        Kvm::Unknown => "KVM_EXIT_UNKNOWN",
        Kvm::Exception => "KVM_EXIT_EXCEPTION",
        Kvm::Hypercall(_) => "KVM_EXIT_HYPERCALL",
        Kvm::Debug(_) => "KVM_EXIT_DEBUG",
        Kvm::IrqWindowOpen => "KVM_EXIT_IRQ_WINDOW_OPEN",
        Kvm::SystemEvent(..) => "KVM_EXIT_SYSTEM_EVENT",
        Kvm::IoapicEoi(_) => "KVM_EXIT_IOAPIC_EOI",
        Kvm::X86Rdmsr(_) => "KVM_EXIT_X86_RDMSR",
        Kvm::X86Wrmsr(_) => "KVM_EXIT_X86_WRMSR",
        _ => "an unexpected KVM exit",
    }
}

/// Signal used to kick a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> c_int {
    libc::SIGRTMIN()
}

extern "C" fn ignore_kick(_signal: c_int) {}

/// Installs a do-nothing handler for [`kick_signal`], so the signal interrupts KVM_RUN (which then
/// returns EINTR) instead of killing the process.
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value to fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = ignore_kick as *const () as usize;
    // SAFETY: `action.sa_mask` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: the handler is an async-signal-safe function that does nothing, valid for the life of the
    // process; no SA_RESTART, so an interrupted KVM_RUN returns EINTR.
    let rc = unsafe { libc::sigaction(kick_signal(), &action, std::ptr::null_mut()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_is_named() {
        let err = KvmHypervisor::open_at(c"/nonexistent/kvm").unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent/kvm: no such device (KVM is not available on this host)");
    }

    #[test]
    fn an_unprivileged_open_says_permission_denied_unless_dev_kvm_is_open_to_all() {
        use std::os::unix::fs::PermissionsExt;
        let metadata = boxbench_testkit::require!(std::fs::metadata("/dev/kvm").map_err(|e| format!("/dev/kvm: {e}")));
        // Some hosts give everyone read and write on /dev/kvm: there the open must succeed.
        let open_to_all = metadata.permissions().mode() & 0o006 == 0o006;
        // SAFETY: the child calls setgid, setuid, `KvmHypervisor::open` (an open of /dev/kvm that
        // allocates its error value on failure) and _exit. Allocating in the child of a multi-threaded
        // test process is sound with glibc, whose fork re-initialises malloc's locks in the child; no
        // other lock is taken, and the child never returns into the test harness.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain syscalls in the forked child; it leaves through _exit.
            unsafe {
                let dropped = libc::setgid(65534) == 0 && libc::setuid(65534) == 0;
                let code = match (dropped, KvmHypervisor::open()) {
                    (false, _) => 2,
                    (true, Err(HypervisorError::KvmPermission(_))) => 0,
                    (true, Ok(_)) => 3,
                    (true, Err(_)) => 1,
                };
                libc::_exit(code);
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        match libc::WEXITSTATUS(status) {
            2 => boxbench_testkit::skip("cannot drop privileges to nobody here (needs root)"),
            code if open_to_all => assert_eq!(code, 3, "/dev/kvm is open to all here: an unprivileged open succeeds"),
            code => assert_eq!(code, 0, "an unprivileged open of /dev/kvm must fail as permission denied"),
        }
    }
}
