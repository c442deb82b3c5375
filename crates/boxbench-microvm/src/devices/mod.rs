//! The emulated devices and the dispatch of the guest's port I/O and MMIO to them.
//!
//! Every access is handled whatever its port or address, size (KVM gives 1, 2 or 4 bytes for port I/O
//! and up to 8 for MMIO; any length, empty included, is accepted) and data, without a panic.
//! Everything not listed here is absent: reads of unknown ports and MMIO addresses see a floating bus
//! (all ones), writes are dropped, and both are counted so a report can say the guest probed for
//! hardware that is not there. KVM's in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT handle their own
//! ports and never reach this dispatch.

pub mod boot_timer;
pub mod i8042;
pub mod reset;
pub mod rtc;
pub mod serial;
pub mod virtio;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::layout::{
    BOOT_TIMER_ADDR, BOOT_TIMER_LEN, I8042_COMMAND_PORT, I8042_DATA_PORT, RESET_CONTROL_PORT, RTC_DATA_PORT,
    RTC_INDEX_PORT, SERIAL_PORT_BASE, SERIAL_PORT_LEN,
};
use crate::observer::VmObserver;

/// Which device asked for a machine reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetSource {
    /// The i8042 keyboard controller's pulse-reset command (0xfe on port 0x64).
    I8042,
    /// The PC reset-control register (0xcf9).
    ResetControl,
}

/// Counts of guest accesses that reached no device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgnoredAccesses {
    /// Port reads and writes.
    pub port_io: u64,
    /// MMIO reads and writes.
    pub mmio: u64,
}

/// The machine's devices, shared by every vCPU thread.
#[derive(Debug)]
pub struct Devices {
    serial: Mutex<serial::SerialPort>,
    i8042: Mutex<i8042::I8042>,
    reset_control: Mutex<reset::ResetControl>,
    rtc: Mutex<rtc::Rtc>,
    boot_timer: boot_timer::BootTimer,
    virtio: Vec<virtio::VirtioSlot>,
    ignored_port_io: AtomicU64,
    ignored_mmio: AtomicU64,
}

impl Devices {
    /// The devices of one VM: `serial` is its console; milestones go to `observer`.
    pub fn new(serial: serial::SerialPort, observer: Arc<dyn VmObserver>) -> Self {
        Self {
            serial: Mutex::new(serial),
            i8042: Mutex::new(i8042::I8042::default()),
            reset_control: Mutex::new(reset::ResetControl::default()),
            rtc: Mutex::new(rtc::Rtc::default()),
            boot_timer: boot_timer::BootTimer::new(observer),
            virtio: Vec::new(),
            ignored_port_io: AtomicU64::new(0),
            ignored_mmio: AtomicU64::new(0),
        }
    }

    /// These devices with the virtio-mmio devices of `slots` in the MMIO space.
    pub fn with_virtio(mut self, slots: Vec<virtio::VirtioSlot>) -> Self {
        self.virtio = slots;
        self
    }

    fn virtio_slot(&self, address: u64) -> Option<&virtio::VirtioSlot> {
        self.virtio.iter().find(|slot| slot.contains(address))
    }

    /// A guest `in` from `port`: fills `data`, whatever its length (KVM passes 1, 2 or 4 bytes; the
    /// devices are 8 bits wide, so a wider read sees the register in its low byte and zeros above).
    pub fn port_read(&self, port: u16, data: &mut [u8]) {
        let value = match port {
            p if is_serial(p) => self.serial.lock().unwrap_or_else(PoisonError::into_inner).read(serial_offset(p)),
            I8042_DATA_PORT | I8042_COMMAND_PORT => {
                self.i8042.lock().unwrap_or_else(PoisonError::into_inner).read(port)
            }
            RESET_CONTROL_PORT => self.reset_control.lock().unwrap_or_else(PoisonError::into_inner).read(),
            RTC_INDEX_PORT | RTC_DATA_PORT => self.rtc.lock().unwrap_or_else(PoisonError::into_inner).read(port),
            _ => {
                self.ignored_port_io.fetch_add(1, Ordering::Relaxed);
                data.fill(0xff);
                return;
            }
        };
        data.fill(0);
        if let Some(low) = data.first_mut() {
            *low = value;
        }
    }

    /// A guest `out` to `port` of `data`, whatever its length (the devices take its low byte; an
    /// empty write reaches no device); returns a reset request if the write was one.
    pub fn port_write(&self, port: u16, data: &[u8]) -> Option<ResetSource> {
        let known = is_serial(port)
            || matches!(
                port,
                I8042_DATA_PORT | I8042_COMMAND_PORT | RESET_CONTROL_PORT | RTC_INDEX_PORT | RTC_DATA_PORT
            );
        let value = match data.first() {
            Some(&value) if known => value,
            _ => {
                self.ignored_port_io.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        match port {
            I8042_DATA_PORT | I8042_COMMAND_PORT => {
                let mut i8042 = self.i8042.lock().unwrap_or_else(PoisonError::into_inner);
                i8042.write(port, value).then_some(ResetSource::I8042)
            }
            RESET_CONTROL_PORT => {
                let mut reset = self.reset_control.lock().unwrap_or_else(PoisonError::into_inner);
                reset.write(value).then_some(ResetSource::ResetControl)
            }
            RTC_INDEX_PORT | RTC_DATA_PORT => {
                self.rtc.lock().unwrap_or_else(PoisonError::into_inner).write(port, value);
                None
            }
            serial => {
                self.serial.lock().unwrap_or_else(PoisonError::into_inner).write(serial_offset(serial), value);
                None
            }
        }
    }

    /// A guest MMIO read at `address`: fills `data`.
    pub fn mmio_read(&self, address: u64, data: &mut [u8]) {
        if is_boot_timer(address) {
            data.fill(0);
        } else if let Some(slot) = self.virtio_slot(address) {
            slot.transport.lock().unwrap_or_else(PoisonError::into_inner).read(address - slot.base, data);
        } else {
            self.ignored_mmio.fetch_add(1, Ordering::Relaxed);
            data.fill(0xff);
        }
    }

    /// A guest MMIO write at `address`.
    pub fn mmio_write(&self, address: u64, data: &[u8]) {
        if is_boot_timer(address) {
            self.boot_timer.write(address - BOOT_TIMER_ADDR, data);
        } else if let Some(slot) = self.virtio_slot(address) {
            slot.transport.lock().unwrap_or_else(PoisonError::into_inner).write(address - slot.base, data);
        } else {
            self.ignored_mmio.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The serial port's registers, for a snapshot.
    pub fn serial_state(&self) -> vm_superio::serial::SerialState {
        self.serial.lock().unwrap_or_else(PoisonError::into_inner).state()
    }

    /// What the guest touched that is not there.
    pub fn ignored(&self) -> IgnoredAccesses {
        IgnoredAccesses {
            port_io: self.ignored_port_io.load(Ordering::Relaxed),
            mmio: self.ignored_mmio.load(Ordering::Relaxed),
        }
    }
}

fn is_serial(port: u16) -> bool {
    (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_LEN).contains(&port)
}

/// The UART register a serial port addresses (only called for serial ports).
fn serial_offset(port: u16) -> u8 {
    port.wrapping_sub(SERIAL_PORT_BASE) as u8
}

fn is_boot_timer(address: u64) -> bool {
    (BOOT_TIMER_ADDR..BOOT_TIMER_ADDR + BOOT_TIMER_LEN).contains(&address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::IgnoreMilestones;

    fn devices() -> Devices {
        let serial = serial::SerialPort::new(None, Arc::new(IgnoreMilestones)).unwrap();
        Devices::new(serial, Arc::new(IgnoreMilestones))
    }

    #[test]
    fn unknown_ports_and_mmio_float_and_are_counted() {
        let devices = devices();
        let mut data = [0u8; 4];
        devices.port_read(0xcfc, &mut data);
        assert_eq!(data, [0xff; 4]);
        assert_eq!(devices.port_write(0x80, &[1]), None);
        devices.mmio_read(0xfed0_0000, &mut data);
        devices.mmio_write(0xfed0_0000, &[1]);
        assert_eq!(devices.ignored(), IgnoredAccesses { port_io: 2, mmio: 2 });
    }

    #[test]
    fn reset_requests_are_recognised() {
        let devices = devices();
        assert_eq!(devices.port_write(I8042_COMMAND_PORT, &[0xfe]), Some(ResetSource::I8042));
        assert_eq!(devices.port_write(RESET_CONTROL_PORT, &[0x2]), None);
        assert_eq!(devices.port_write(RESET_CONTROL_PORT, &[0x6]), Some(ResetSource::ResetControl));
        assert_eq!(devices.ignored(), IgnoredAccesses::default());
    }

    #[test]
    fn the_real_time_clock_answers_its_ports() {
        let devices = devices();
        assert_eq!(devices.port_write(RTC_INDEX_PORT, &[0x0d]), None);
        let mut data = [0u8; 1];
        devices.port_read(RTC_DATA_PORT, &mut data);
        assert_eq!(data, [0x80], "register D says the clock is valid");
        assert_eq!(devices.ignored(), IgnoredAccesses::default());
    }
}
