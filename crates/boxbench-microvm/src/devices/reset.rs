//! The PC reset-control register at port 0xcf9 (Linux's `reboot=p` path).
//!
//! Bit 1 selects a hard reset, bit 2 performs the reset; chipsets latch bit 1 so the usual sequence
//! is a write of 0x2 then 0x6 (or 0xe). Any write with bit 2 set ends the VM.

/// Bit 2: reset the CPU.
const RESET_CPU: u8 = 1 << 2;

/// The register's last written value.
#[derive(Debug, Default)]
pub struct ResetControl {
    value: u8,
}

impl ResetControl {
    /// A read returns the latched value without the self-clearing reset bit.
    pub fn read(&self) -> u8 {
        self.value & !RESET_CPU
    }

    /// A write; true when it asks for a reset.
    pub fn write(&mut self, value: u8) -> bool {
        self.value = value;
        value & RESET_CPU != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_reset_sequence() {
        let mut reg = ResetControl::default();
        assert!(!reg.write(0x2));
        assert_eq!(reg.read(), 0x2);
        assert!(reg.write(0x6));
        assert!(reg.write(0xe));
    }
}
