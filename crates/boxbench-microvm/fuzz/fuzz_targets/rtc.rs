//! Fuzzes the CMOS real-time clock: arbitrary sequences of reads and writes of its index and data
//! ports (and of ports it does not own), with any value. Checks that no read ever says an update is
//! in progress (a guest would wait on it) and that the battery-status register always says valid.

#![no_main]

use arbitrary::Arbitrary;
use boxbench_microvm::devices::rtc::Rtc;
use boxbench_microvm::layout::{RTC_DATA_PORT, RTC_INDEX_PORT};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Port {
    Index,
    Data,
    Other(u16),
}

impl Port {
    fn number(&self) -> u16 {
        match self {
            Port::Index => RTC_INDEX_PORT,
            Port::Data => RTC_DATA_PORT,
            Port::Other(port) => *port,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Access {
    Read(Port),
    Write(Port, u8),
}

fuzz_target!(|accesses: Vec<Access>| {
    let mut rtc = Rtc::default();
    let mut index = 0u8;
    for access in accesses {
        match access {
            Access::Read(port) => {
                let port = port.number();
                let value = rtc.read(port);
                if port == RTC_DATA_PORT {
                    match index {
                        0x0a => assert_eq!(value & 0x80, 0, "update in progress"),
                        0x0d => assert_eq!(value, 0x80, "register D"),
                        _ => {}
                    }
                }
            }
            Access::Write(port, value) => {
                let port = port.number();
                rtc.write(port, value);
                if port == RTC_INDEX_PORT {
                    index = value & 0x7f;
                }
            }
        }
    }
});
