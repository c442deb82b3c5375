//! Fuzzes the i8042 keyboard controller: arbitrary sequences of reads and writes of its two ports
//! (and of ports it does not own, which it must shrug off), with any value. Checks that a reset
//! request is only ever the pulse-reset command or an output-port write pulling the reset line low.

#![no_main]

use arbitrary::Arbitrary;
use boxbench_microvm::devices::i8042::I8042;
use boxbench_microvm::layout::{I8042_COMMAND_PORT, I8042_DATA_PORT};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Port {
    Data,
    Command,
    Other(u16),
}

impl Port {
    fn number(&self) -> u16 {
        match self {
            Port::Data => I8042_DATA_PORT,
            Port::Command => I8042_COMMAND_PORT,
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
    let mut controller = I8042::default();
    let mut last_command = None;
    for access in accesses {
        match access {
            Access::Read(port) => {
                controller.read(port.number());
            }
            Access::Write(port, value) => {
                let port = port.number();
                let reset = controller.write(port, value);
                if reset {
                    let pulse = port == I8042_COMMAND_PORT && value == 0xfe;
                    let output_port = port == I8042_DATA_PORT && last_command == Some(0xd1) && value & 1 == 0;
                    assert!(pulse || output_port, "reset on {value:#x} to {port:#x} after {last_command:?}");
                }
                match port {
                    I8042_COMMAND_PORT => last_command = Some(value),
                    I8042_DATA_PORT => last_command = None,
                    _ => {}
                }
            }
        }
    }
});
