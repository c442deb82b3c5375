//! Fuzzes the exit dispatcher (`vcpu::handle_exit`) over the whole device set: arbitrary sequences of
//! port I/O and MMIO exits to any port or address, of any size (the sizes KVM produces and odd ones,
//! empty included) with any data, mixed with the exits that end a VM. Checks that reads fill the whole
//! buffer with all ones where no device answers, that the ignored-access counters count exactly the
//! accesses no device took, and that only a port write or an ending exit ends the VM.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use boxbench_microvm::devices::Devices;
use boxbench_microvm::devices::serial::SerialPort;
use boxbench_microvm::hypervisor::VcpuExit;
use boxbench_microvm::layout::{
    BOOT_TIMER_ADDR, BOOT_TIMER_LEN, I8042_COMMAND_PORT, I8042_DATA_PORT, RESET_CONTROL_PORT, RTC_DATA_PORT,
    RTC_INDEX_PORT, SERIAL_PORT_BASE, SERIAL_PORT_LEN,
};
use boxbench_microvm::observer::IgnoreMilestones;
use boxbench_microvm::vcpu::handle_exit;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Exit {
    PortIn { port: u16, size: u8 },
    PortOut { port: u16, data: Vec<u8> },
    MmioRead { address: u64, size: u8 },
    MmioWrite { address: u64, data: Vec<u8> },
    Interrupted,
    Shutdown,
    InternalError { suberror: u32 },
    FailEntry { reason: u64, cpu: u32 },
    Halted,
}

fn is_device_port(port: u16) -> bool {
    (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_LEN).contains(&port)
        || [I8042_DATA_PORT, I8042_COMMAND_PORT, RESET_CONTROL_PORT, RTC_INDEX_PORT, RTC_DATA_PORT].contains(&port)
}

fn is_device_address(address: u64) -> bool {
    (BOOT_TIMER_ADDR..BOOT_TIMER_ADDR + BOOT_TIMER_LEN).contains(&address)
}

fn ends_the_vm(exit: VcpuExit<'_>, vcpu: u8, devices: &Devices) {
    let ended = handle_exit(exit, vcpu, devices);
    assert!(ended.map(|end| end.to_string()).is_some_and(|reason| !reason.is_empty()));
}

fuzz_target!(|input: (u8, Vec<Exit>)| {
    let (vcpu, exits) = input;
    let Ok(serial) = SerialPort::new(None, Arc::new(IgnoreMilestones)) else { return };
    let devices = Devices::new(serial, Arc::new(IgnoreMilestones));
    let (mut port_io, mut mmio) = (0u64, 0u64);
    for exit in exits {
        match exit {
            Exit::PortIn { port, size } => {
                let mut data = vec![0x5a; usize::from(size % 17)];
                let ended = handle_exit(VcpuExit::PortIn { port, data: &mut data }, vcpu, &devices);
                if !is_device_port(port) {
                    port_io += 1;
                    assert!(data.iter().all(|&b| b == 0xff));
                } else {
                    assert!(data.iter().skip(1).all(|&b| b == 0));
                }
                assert!(ended.is_none());
            }
            Exit::PortOut { port, data } => {
                if !is_device_port(port) || data.is_empty() {
                    port_io += 1;
                }
                let ended = handle_exit(VcpuExit::PortOut { port, data: &data }, vcpu, &devices);
                assert!(ended.is_none() || [I8042_DATA_PORT, I8042_COMMAND_PORT, RESET_CONTROL_PORT].contains(&port));
            }
            Exit::MmioRead { address, size } => {
                let mut data = vec![0x5a; usize::from(size % 17)];
                let ended = handle_exit(VcpuExit::MmioRead { address, data: &mut data }, vcpu, &devices);
                if !is_device_address(address) {
                    mmio += 1;
                    assert!(data.iter().all(|&b| b == 0xff));
                }
                assert!(ended.is_none());
            }
            Exit::MmioWrite { address, data } => {
                if !is_device_address(address) {
                    mmio += 1;
                }
                assert!(handle_exit(VcpuExit::MmioWrite { address, data: &data }, vcpu, &devices).is_none());
            }
            Exit::Interrupted => assert!(handle_exit(VcpuExit::Interrupted, vcpu, &devices).is_none()),
            // The exits that end a VM carry a reason for the report: formatting it must not panic either.
            Exit::Shutdown => ends_the_vm(VcpuExit::Shutdown, vcpu, &devices),
            Exit::InternalError { suberror } => ends_the_vm(VcpuExit::InternalError { suberror }, vcpu, &devices),
            Exit::FailEntry { reason, cpu } => ends_the_vm(VcpuExit::FailEntry { reason, cpu }, vcpu, &devices),
            Exit::Halted => ends_the_vm(VcpuExit::Halted, vcpu, &devices),
        }
        // A real vCPU stops at an exit that ends the VM; the sequence goes on regardless, as the
        // devices must stay consistent whatever came before.
        let ignored = devices.ignored();
        assert_eq!((ignored.port_io, ignored.mmio), (port_io, mmio));
    }
});
