//! The virtio-mmio transport, version 2 ("modern", virtio 1.2 section 4.2.2): one register window
//! per device, one virtqueue per device (all virtio-blk needs without multi-queue).
//!
//! The registers are 32 bits wide and the driver must access them so; an access of another width or
//! to a register that does not exist reads 0 and writes nothing. The device-specific configuration
//! space from offset 0x100 takes any width. Queue settings are taken only before the driver sets
//! `DRIVER_OK` (the specification forbids changing a live queue), features only before
//! `FEATURES_OK`, which the transport refuses to set (the driver then sees the bit clear and gives
//! up) unless the driver accepted `VIRTIO_F_VERSION_1` and nothing the device did not offer.
//! Writing 0 to `Status` resets the device.

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_FEATURES_SEL,
    VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_DRIVER_FEATURES, VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_INT_VRING,
    VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_NOTIFY,
    VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_SEL,
    VIRTIO_MMIO_QUEUE_USED_HIGH, VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_VENDOR_ID,
    VIRTIO_MMIO_VERSION,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// "virt" in little endian: the value of `MagicValue`.
const MAGIC: u32 = 0x7472_6976;
/// The transport version: 2, the non-legacy interface.
const VERSION: u32 = 2;
/// `VendorID`: the bytes "BXBN", which is nobody's PCI vendor.
const VENDOR_ID: u32 = u32::from_le_bytes(*b"BXBN");

/// What the transport needs from the device behind it.
pub trait VirtioDevice: Send {
    /// The virtio device type (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// The device's feature bits, without the transport's (`VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// The largest queue the device serves.
    fn queue_max_size(&self) -> u16;
    /// Reads the device configuration space at `offset` into `data` (zeros past its end).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Serves every request the driver made available on `queue`; true when buffers were used.
    fn process_queue(&mut self, memory: &GuestMemoryMmap, queue: &mut Queue) -> bool;
}

/// A device behind its virtio-mmio registers.
#[derive(Debug)]
pub struct MmioTransport<D> {
    device: D,
    memory: GuestMemoryMmap,
    queue: Queue,
    interrupt: EventFd,
    status: u32,
    device_features_select: u32,
    driver_features_select: u32,
    driver_features: u64,
    queue_select: u32,
    interrupt_status: u32,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// `device` with access to the guest's `memory`, raising its interrupt by writing `interrupt`
    /// (an irqfd).
    pub fn new(device: D, memory: GuestMemoryMmap, interrupt: EventFd) -> Self {
        // A queue size of at least 1 is always valid; a device that says 0 gets 1.
        let queue = Queue::new(device.queue_max_size().max(1)).or_else(|_| Queue::new(1)).expect("a 1-entry queue");
        Self {
            device,
            memory,
            queue,
            interrupt,
            status: 0,
            device_features_select: 0,
            driver_features_select: 0,
            driver_features: 0,
            queue_select: 0,
            interrupt_status: 0,
        }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | 1 << VIRTIO_F_VERSION_1
    }

    fn driver_ok(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
    }

    fn features_ok(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
    }

    /// Queue settings may change: the driver is past feature negotiation, not yet live.
    fn queue_settable(&self) -> bool {
        self.queue_select == 0 && !self.driver_ok()
    }

    /// A guest read of `data.len()` bytes at `offset` into the window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device.read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        let value = match u32::try_from(offset) {
            Ok(register) if data.len() == 4 => self.register(register),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = bytes.get(i).copied().unwrap_or(0);
        }
    }

    fn register(&self, register: u32) -> u32 {
        match register {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_select {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX if self.queue_select == 0 => u32::from(self.queue.max_size()),
            VIRTIO_MMIO_QUEUE_READY if self.queue_select == 0 => u32::from(self.queue.ready()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status,
            VIRTIO_MMIO_STATUS => self.status,
            // The configuration space never changes while the device runs (the disk's size is fixed).
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    /// A guest write of `data` at `offset` into the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let (Ok(register), Ok(bytes)) = (u32::try_from(offset), <[u8; 4]>::try_from(data)) else {
            // The configuration space of the one device here (virtio-blk) has nothing writable
            // without the features it does not offer; other widths are not register accesses.
            return;
        };
        let value = u32::from_le_bytes(bytes);
        match register {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_select = value,
            VIRTIO_MMIO_DRIVER_FEATURES if !self.features_ok() && self.status & VIRTIO_CONFIG_S_DRIVER != 0 => {
                match self.driver_features_select {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value),
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | u64::from(value) << 32,
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_select = value,
            VIRTIO_MMIO_QUEUE_NUM if self.queue_settable() => {
                self.queue.set_size(u16::try_from(value).unwrap_or(0));
            }
            VIRTIO_MMIO_QUEUE_READY if self.queue_settable() => self.queue.set_ready(value == 1),
            VIRTIO_MMIO_QUEUE_DESC_LOW if self.queue_settable() => self.queue.set_desc_table_address(Some(value), None),
            VIRTIO_MMIO_QUEUE_DESC_HIGH if self.queue_settable() => {
                self.queue.set_desc_table_address(None, Some(value));
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW if self.queue_settable() => {
                self.queue.set_avail_ring_address(Some(value), None);
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH if self.queue_settable() => {
                self.queue.set_avail_ring_address(None, Some(value));
            }
            VIRTIO_MMIO_QUEUE_USED_LOW if self.queue_settable() => self.queue.set_used_ring_address(Some(value), None),
            VIRTIO_MMIO_QUEUE_USED_HIGH if self.queue_settable() => {
                self.queue.set_used_ring_address(None, Some(value));
            }
            VIRTIO_MMIO_QUEUE_NOTIFY if value == 0 => self.notify(),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt_status &= !value,
            VIRTIO_MMIO_STATUS => self.set_status(value),
            _ => {}
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        let newly = value & !self.status;
        if newly & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let unoffered = self.driver_features & !self.offered_features();
            if unoffered != 0 || self.driver_features & 1 << VIRTIO_F_VERSION_1 == 0 {
                // The driver reads the status back and fails the device (virtio 1.2, 3.1.1 step 6).
                value &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if newly & VIRTIO_CONFIG_S_DRIVER_OK != 0 && !self.features_ok() {
            // DRIVER_OK without negotiated features is a driver error: leave the device unusable.
            value = (value & !VIRTIO_CONFIG_S_DRIVER_OK) | VIRTIO_CONFIG_S_FAILED;
        }
        // Bits the driver sets stay set until a reset; ACKNOWLEDGE and DRIVER come first.
        self.status = (self.status | value)
            & (VIRTIO_CONFIG_S_ACKNOWLEDGE
                | VIRTIO_CONFIG_S_DRIVER
                | VIRTIO_CONFIG_S_FEATURES_OK
                | VIRTIO_CONFIG_S_DRIVER_OK
                | VIRTIO_CONFIG_S_FAILED);
    }

    fn reset(&mut self) {
        self.queue.reset();
        self.status = 0;
        self.device_features_select = 0;
        self.driver_features_select = 0;
        self.driver_features = 0;
        self.queue_select = 0;
        self.interrupt_status = 0;
    }

    /// The driver made buffers available: serve them, and raise the interrupt if any was used and the
    /// driver wants to hear of it.
    fn notify(&mut self) {
        if !self.driver_ok() || self.status & VIRTIO_CONFIG_S_FAILED != 0 || !self.queue.is_valid(&self.memory) {
            return;
        }
        if !self.device.process_queue(&self.memory, &mut self.queue) {
            return;
        }
        // Without VIRTIO_RING_F_EVENT_IDX (not offered) this honours the driver's NO_INTERRUPT flag;
        // a ring that cannot be read gets the interrupt, the safe side.
        if self.queue.needs_notification(&self.memory).unwrap_or(true) {
            self.interrupt_status |= VIRTIO_MMIO_INT_VRING;
            // A full eventfd counter (never, at one write per notify) still has the interrupt pending.
            let _ = self.interrupt.write(1);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use virtio_queue::QueueOwnedT;
    use vm_memory::GuestAddress;

    use super::*;

    /// A device that uses every buffer with length 0 and counts them.
    pub(crate) struct CountingDevice {
        pub(crate) served: Arc<Mutex<usize>>,
    }

    impl VirtioDevice for CountingDevice {
        fn device_type(&self) -> u32 {
            42
        }
        fn features(&self) -> u64 {
            1 << 3
        }
        fn queue_max_size(&self) -> u16 {
            16
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn process_queue(&mut self, memory: &GuestMemoryMmap, queue: &mut Queue) -> bool {
            let heads: Vec<u16> = queue.iter(memory).map(|it| it.map(|c| c.head_index()).collect()).unwrap_or_default();
            for head in &heads {
                queue.add_used(memory, *head, 0).unwrap();
            }
            *self.served.lock().unwrap() += heads.len();
            !heads.is_empty()
        }
    }

    pub(crate) fn read32<D: VirtioDevice>(transport: &MmioTransport<D>, register: u32) -> u32 {
        let mut data = [0u8; 4];
        transport.read(u64::from(register), &mut data);
        u32::from_le_bytes(data)
    }

    pub(crate) fn write32<D: VirtioDevice>(transport: &mut MmioTransport<D>, register: u32, value: u32) {
        transport.write(u64::from(register), &value.to_le_bytes());
    }

    /// Ring addresses of the one queue the tests set up, in 1 MiB of guest memory.
    pub(crate) const DESC: u64 = 0x1000;
    pub(crate) const AVAIL: u64 = 0x2000;
    pub(crate) const USED: u64 = 0x3000;

    /// Negotiates `features` (with VERSION_1) and sets up a `size`-entry queue at the addresses above.
    pub(crate) fn bring_up<D: VirtioDevice>(transport: &mut MmioTransport<D>, features: u64, size: u16) {
        write32(transport, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        write32(transport, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
        let features = features | 1 << VIRTIO_F_VERSION_1;
        for select in 0..2 {
            write32(transport, VIRTIO_MMIO_DRIVER_FEATURES_SEL, select);
            write32(transport, VIRTIO_MMIO_DRIVER_FEATURES, (features >> (32 * select)) as u32);
        }
        let status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
        write32(transport, VIRTIO_MMIO_STATUS, status);
        assert_eq!(read32(transport, VIRTIO_MMIO_STATUS), status, "features accepted");
        write32(transport, VIRTIO_MMIO_QUEUE_SEL, 0);
        write32(transport, VIRTIO_MMIO_QUEUE_NUM, u32::from(size));
        write32(transport, VIRTIO_MMIO_QUEUE_DESC_LOW, DESC as u32);
        write32(transport, VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL as u32);
        write32(transport, VIRTIO_MMIO_QUEUE_USED_LOW, USED as u32);
        write32(transport, VIRTIO_MMIO_QUEUE_READY, 1);
        write32(transport, VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_DRIVER_OK);
    }

    pub(crate) fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn counting() -> (MmioTransport<CountingDevice>, Arc<Mutex<usize>>, EventFd) {
        let served = Arc::new(Mutex::new(0));
        let interrupt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let device = CountingDevice { served: served.clone() };
        (MmioTransport::new(device, memory(), interrupt.try_clone().unwrap()), served, interrupt)
    }

    #[test]
    fn identification_registers() {
        let (transport, _, _) = counting();
        assert_eq!(read32(&transport, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(read32(&transport, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(read32(&transport, VIRTIO_MMIO_DEVICE_ID), 42);
        assert_eq!(read32(&transport, VIRTIO_MMIO_QUEUE_NUM_MAX), 16);
        assert_eq!(read32(&transport, VIRTIO_MMIO_DEVICE_FEATURES), 1 << 3);
        let mut transport = transport;
        write32(&mut transport, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(read32(&transport, VIRTIO_MMIO_DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
        // Not 32 bits wide: no register.
        let mut short = [0xffu8; 2];
        transport.read(u64::from(VIRTIO_MMIO_MAGIC_VALUE), &mut short);
        assert_eq!(short, [0, 0]);
        let mut config = [0u8; 3];
        transport.read(u64::from(VIRTIO_MMIO_CONFIG) + 5, &mut config);
        assert_eq!(config, [5; 3]);
    }

    #[test]
    fn features_ok_needs_version_1_and_nothing_unoffered() {
        for (features, accepted) in [(1u64 << 3, false), (1 << 32 | 1 << 4, false), (1 << 32 | 1 << 3, true)] {
            let (mut transport, _, _) = counting();
            write32(&mut transport, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
            for select in 0..2 {
                write32(&mut transport, VIRTIO_MMIO_DRIVER_FEATURES_SEL, select);
                write32(&mut transport, VIRTIO_MMIO_DRIVER_FEATURES, (features >> (32 * select)) as u32);
            }
            write32(&mut transport, VIRTIO_MMIO_STATUS, 0xb);
            assert_eq!(read32(&transport, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK != 0, accepted);
        }
    }

    #[test]
    fn a_notify_serves_the_queue_and_raises_the_interrupt_until_acknowledged() {
        let (mut transport, served, interrupt) = counting();
        // Before DRIVER_OK nothing is served.
        write32(&mut transport, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        bring_up(&mut transport, 1 << 3, 8);
        let memory = transport.memory.clone();
        use vm_memory::Bytes;
        // Two chains of one descriptor each: heads 0 and 1; avail idx 2.
        for head in 0..2u16 {
            memory.write_obj(head, GuestAddress(AVAIL + 4 + 2 * u64::from(head))).unwrap();
        }
        memory.write_obj(2u16, GuestAddress(AVAIL + 2)).unwrap();
        write32(&mut transport, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert_eq!(*served.lock().unwrap(), 2);
        assert_eq!(memory.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 2, "used idx");
        assert_eq!(interrupt.read().unwrap(), 1);
        assert_eq!(read32(&transport, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
        write32(&mut transport, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        assert_eq!(read32(&transport, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        // A live queue's settings do not change; a reset clears everything.
        write32(&mut transport, VIRTIO_MMIO_QUEUE_NUM, 4);
        assert_eq!(transport.queue.size(), 8);
        write32(&mut transport, VIRTIO_MMIO_STATUS, 0);
        assert_eq!((transport.status(), transport.queue.ready()), (0, false));
    }
}
