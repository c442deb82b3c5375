//! The i8042 keyboard controller, reduced to what a guest uses to reboot a PC.
//!
//! Linux's `reboot=k` waits for the controller's input buffer to be empty (status bit 1) and writes
//! the pulse-reset command 0xfe to port 0x64; boxbench's guest does the same. The controller also
//! answers the few commands a probing driver sends (self test, read/write the command byte, write the
//! output port) so status reads stay consistent; there is no keyboard behind it.

use crate::layout::{I8042_COMMAND_PORT, I8042_DATA_PORT};

/// Status bit 0: a byte waits in the output buffer.
const STATUS_OUTPUT_FULL: u8 = 1 << 0;
/// Status bit 2: system flag, set once the controller passed its self test.
const STATUS_SYSTEM: u8 = 1 << 2;
/// Status bit 3: the last write went to the command port.
const STATUS_LAST_WAS_COMMAND: u8 = 1 << 3;
/// Status bit 4: keyboard not inhibited.
const STATUS_NOT_INHIBITED: u8 = 1 << 4;

const CMD_READ_COMMAND_BYTE: u8 = 0x20;
const CMD_WRITE_COMMAND_BYTE: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_INTERFACE_TEST: u8 = 0xab;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_PULSE_RESET: u8 = 0xfe;

const SELF_TEST_PASSED: u8 = 0x55;
/// Command byte after reset: keyboard interrupt on, system flag, translation on.
const DEFAULT_COMMAND_BYTE: u8 = 0x45;
/// Output port bit 0: the CPU reset line (active low).
const OUTPUT_PORT_RESET_LINE: u8 = 1 << 0;

/// What the next data-port write means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum PendingWrite {
    #[default]
    None,
    CommandByte,
    OutputPort,
}

/// The controller's state.
#[derive(Debug)]
pub struct I8042 {
    output: Option<u8>,
    command_byte: u8,
    last_was_command: bool,
    pending: PendingWrite,
}

impl Default for I8042 {
    fn default() -> Self {
        Self { output: None, command_byte: DEFAULT_COMMAND_BYTE, last_was_command: false, pending: PendingWrite::None }
    }
}

impl I8042 {
    /// A read of `port` (0x60 data, 0x64 status).
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            I8042_COMMAND_PORT => {
                let mut status = STATUS_SYSTEM | STATUS_NOT_INHIBITED;
                if self.output.is_some() {
                    status |= STATUS_OUTPUT_FULL;
                }
                if self.last_was_command {
                    status |= STATUS_LAST_WAS_COMMAND;
                }
                status
            }
            I8042_DATA_PORT => self.output.take().unwrap_or(0),
            _ => 0xff,
        }
    }

    /// A write of `value` to `port`; true when it asks for a CPU reset.
    pub fn write(&mut self, port: u16, value: u8) -> bool {
        match port {
            I8042_COMMAND_PORT => {
                self.last_was_command = true;
                self.pending = PendingWrite::None;
                match value {
                    CMD_PULSE_RESET => return true,
                    CMD_READ_COMMAND_BYTE => self.output = Some(self.command_byte),
                    CMD_WRITE_COMMAND_BYTE => self.pending = PendingWrite::CommandByte,
                    CMD_WRITE_OUTPUT_PORT => self.pending = PendingWrite::OutputPort,
                    CMD_SELF_TEST => self.output = Some(SELF_TEST_PASSED),
                    CMD_INTERFACE_TEST => self.output = Some(0),
                    _ => {}
                }
                false
            }
            I8042_DATA_PORT => {
                self.last_was_command = false;
                match std::mem::take(&mut self.pending) {
                    PendingWrite::CommandByte => self.command_byte = value,
                    PendingWrite::OutputPort => return value & OUTPUT_PORT_RESET_LINE == 0,
                    PendingWrite::None => {}
                }
                false
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_k_sequence_resets() {
        let mut kbd = I8042::default();
        // Input buffer empty (bit 1 clear) so the guest may write the command.
        assert_eq!(kbd.read(I8042_COMMAND_PORT) & 0x02, 0);
        assert!(kbd.write(I8042_COMMAND_PORT, 0xfe));
    }

    #[test]
    fn probe_commands_answer_through_the_output_buffer() {
        let mut kbd = I8042::default();
        assert!(!kbd.write(I8042_COMMAND_PORT, CMD_SELF_TEST));
        assert_ne!(kbd.read(I8042_COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(kbd.read(I8042_DATA_PORT), 0x55);
        assert_eq!(kbd.read(I8042_COMMAND_PORT) & STATUS_OUTPUT_FULL, 0);
        kbd.write(I8042_COMMAND_PORT, CMD_WRITE_COMMAND_BYTE);
        kbd.write(I8042_DATA_PORT, 0x61);
        kbd.write(I8042_COMMAND_PORT, CMD_READ_COMMAND_BYTE);
        assert_eq!(kbd.read(I8042_DATA_PORT), 0x61);
        kbd.write(I8042_COMMAND_PORT, CMD_WRITE_OUTPUT_PORT);
        assert!(kbd.write(I8042_DATA_PORT, 0xfe), "reset line pulled low");
    }
}
