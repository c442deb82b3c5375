//! boxbench's own micro-VM monitor: a minimal KVM VMM on the rust-vmm crates, and the `microvm`
//! backend that runs each VM in a child process of its own.
//!
//! One module per hardware concern: [`layout`] (every guest address), [`gdt`], [`paging`],
//! [`mptable`], [`cpuid`], [`msr`], [`regs`], [`fpu`], [`boot_params`] (zero page, e820), [`pvh`]
//! (hvm_start_info), [`loader`] (bzImage, ELF, initrd, command line), [`initramfs`] (what an initrd
//! must be), [`disk`] (a disk image, checked and locked), [`devices`] (serial, i8042, boot timer,
//! reset control, virtio-mmio and virtio-blk), [`interrupts`] (which interrupt controllers KVM
//! emulates for the guest), [`hypervisor`] (the KVM calls
//! behind a small trait), [`vcpu`] and [`vm`]. [`launcher`] runs each VM in a child process
//! ([`child`]) that reports over a pipe ([`events`]), measuring its own cost beyond guest memory
//! ([`vmm_memory`]).

pub mod boot_params;
pub mod child;
pub mod cpuid;
pub mod devices;
pub mod disk;
pub mod events;
pub mod fpu;
pub mod gdt;
pub mod hypervisor;
pub mod initramfs;
pub mod interrupts;
pub mod launcher;
pub mod layout;
pub mod loader;
pub mod mptable;
pub mod msr;
pub mod observer;
pub mod paging;
pub mod pvh;
pub mod regs;
pub mod seccomp;
pub mod snapshot;
pub mod vcpu;
pub mod vm;
pub mod vm_snapshot;
pub mod vmm_memory;

pub use interrupts::InterruptModel;
pub use launcher::{GuestKind, MicroVmLauncher, MicroVmOptions};
pub use observer::{BuildStep, VmObserver};
pub use vcpu::VmExit;
pub use vm::{BootPlan, RunSummary, Vm, VmConfig, VmConfigError, VmError};
