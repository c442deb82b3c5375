//! Fuzzes the reset-control register at 0xcf9: arbitrary sequences of reads and writes. Checks that a
//! write asks for a reset exactly when it sets bit 2, and that a read returns the last value written
//! without that bit.

#![no_main]

use arbitrary::Arbitrary;
use boxbench_microvm::devices::reset::ResetControl;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Access {
    Read,
    Write(u8),
}

fuzz_target!(|accesses: Vec<Access>| {
    let mut register = ResetControl::default();
    let mut last = 0u8;
    for access in accesses {
        match access {
            Access::Read => assert_eq!(register.read(), last & !0x04),
            Access::Write(value) => {
                assert_eq!(register.write(value), value & 0x04 != 0);
                last = value;
            }
        }
    }
});
