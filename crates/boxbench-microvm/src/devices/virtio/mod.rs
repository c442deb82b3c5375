//! virtio devices over the virtio-mmio transport (virtio 1.2, section 4.2), on rust-vmm's
//! `virtio-queue` (split virtqueues, descriptor chains) and `virtio-bindings` (the specification's
//! constants).
//!
//! [`mmio`] owns the transport: the register window, feature negotiation, the device status, the
//! queue's addresses and the interrupt; [`block`] is the one device, virtio-blk on a raw disk image
//! ([`crate::disk`]). Every window and interrupt line comes from [`crate::layout`]; the guest learns
//! of each device from its command line (`virtio_mmio.device=<size>@<base>:<irq>`, see
//! [`cmdline_arg`]): no PCI, no ACPI.
//!
//! Requests are served on the vCPU thread whose write to `QueueNotify` exits to the VMM: the VMM has
//! no event loop or I/O thread for an ioeventfd to wake, and serving the queue right there, while
//! that vCPU waits in the exit, is what the notify means. The used-buffer interrupt goes out through
//! an irqfd on the device's IOAPIC pin (KVM's in-kernel irqchip injects it; no KVM_IRQ_LINE ioctl,
//! which the run loop's seccomp filter does not allow).

pub mod block;
pub mod mmio;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::disk::DiskImage;
use crate::hypervisor::{HypervisorError, HypervisorVm};
use crate::layout::{self, MAX_VIRTIO_DEVICES, VIRTIO_MMIO_LEN};

pub use block::Block;
pub use mmio::MmioTransport;

/// A virtio device could not be attached to the VM.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// More devices than the layout has windows and interrupt lines for.
    #[error("{count} virtio devices: at most {MAX_VIRTIO_DEVICES}")]
    TooMany { count: usize },
    /// The interrupt's eventfd could not be created.
    #[error("creating the interrupt eventfd of virtio device {index}: {source}")]
    EventFd { index: usize, source: std::io::Error },
    /// KVM refused the irqfd.
    #[error(transparent)]
    Irqfd(#[from] HypervisorError),
}

/// The `virtio_mmio.device=` argument announcing virtio-mmio device `index` to the guest.
pub fn cmdline_arg(index: usize) -> Result<String, VirtioError> {
    let (base, irq) = layout::virtio_mmio_slot(index).ok_or(VirtioError::TooMany { count: index + 1 })?;
    Ok(format!("virtio_mmio.device={}K@{base:#x}:{irq}", VIRTIO_MMIO_LEN >> 10))
}

/// A device's transport at its place in the guest's MMIO space.
#[derive(Debug)]
pub struct VirtioSlot {
    /// Start of the register window.
    pub base: u64,
    /// The transport and its device.
    pub transport: std::sync::Mutex<MmioTransport<Block>>,
}

impl VirtioSlot {
    /// True when `address` is in this slot's window.
    pub fn contains(&self, address: u64) -> bool {
        address.checked_sub(self.base).is_some_and(|offset| offset < VIRTIO_MMIO_LEN)
    }
}

/// Builds a virtio-blk device for each of `disks`, in order, at the layout's windows, each with an
/// irqfd on its interrupt line registered with `vm`.
pub fn attach_disks<V: HypervisorVm>(
    vm: &V,
    memory: &GuestMemoryMmap,
    disks: &[DiskImage],
) -> Result<Vec<VirtioSlot>, VirtioError> {
    disks
        .iter()
        .enumerate()
        .map(|(index, disk)| {
            let (base, irq) = layout::virtio_mmio_slot(index).ok_or(VirtioError::TooMany { count: disks.len() })?;
            let interrupt = EventFd::new(EFD_NONBLOCK).map_err(|source| VirtioError::EventFd { index, source })?;
            vm.register_irqfd(&interrupt, irq)?;
            let transport = MmioTransport::new(Block::new(disk.clone()), memory.clone(), interrupt);
            Ok(VirtioSlot { base, transport: std::sync::Mutex::new(transport) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_announced_at_the_layout_windows() {
        assert_eq!(cmdline_arg(0).unwrap(), "virtio_mmio.device=4K@0xd0001000:5");
        assert_eq!(cmdline_arg(1).unwrap(), "virtio_mmio.device=4K@0xd0002000:6");
        assert!(cmdline_arg(MAX_VIRTIO_DEVICES).is_err());
    }
}
