//! Fuzzes the 16550 serial console: arbitrary sequences of register reads and writes, at any offset
//! and with any value, with the output going to /dev/null through the marker scanner. Checks that the
//! ready marker is reported at most once per port.

#![no_main]

use std::fs::OpenOptions;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arbitrary::Arbitrary;
use boxbench_core::MonotonicNs;
use boxbench_microvm::VmObserver;
use boxbench_microvm::devices::serial::SerialPort;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Access {
    Read { offset: u8 },
    Write { offset: u8, value: u8 },
}

#[derive(Debug, Default)]
struct MarkerCount(AtomicU32);

impl VmObserver for MarkerCount {
    fn console_marker(&self, _at: MonotonicNs) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fuzz_target!(|accesses: Vec<Access>| {
    let markers = Arc::new(MarkerCount::default());
    let console = OpenOptions::new().write(true).open("/dev/null").ok();
    let Ok(mut port) = SerialPort::new(console, markers.clone()) else { return };
    for access in accesses {
        match access {
            Access::Read { offset } => {
                port.read(offset);
            }
            Access::Write { offset, value } => port.write(offset, value),
        }
    }
    assert!(markers.0.load(Ordering::Relaxed) <= 1);
});
