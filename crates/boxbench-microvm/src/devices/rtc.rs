//! The PC's CMOS real-time clock (Motorola MC146818) at ports 0x70 (index) and 0x71 (data), reduced
//! to what a Linux guest reads: the date and time, the status registers, and the CMOS RAM.
//!
//! Without it a stock kernel still looks for one: reading the wall clock at boot and probing
//! `rtc_cmos` it sees a floating bus (all ones), whose "update in progress" bit never clears, and
//! polls for seconds — thousands of port exits, each costly under nested virtualisation. The clock
//! here is the host's UTC time read at each access; its "update in progress" bit is never set, so no
//! read ever waits. Writes to the time registers are accepted into no state (the host's clock is
//! the clock); the alarm registers and the CMOS RAM keep what is written. No interrupt (IRQ 8) is
//! raised: register C never flags one.

use boxbench_core::clock::UtcTime;

use crate::layout::{RTC_DATA_PORT, RTC_INDEX_PORT};

/// The registers of the 128-byte CMOS RAM the clock owns.
const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// The century byte the PC/AT BIOS keeps (what Linux reads when ACPI names no other).
const REG_CENTURY: u8 = 0x32;

/// Register A: 32.768 kHz time base, 1024 Hz periodic rate (the PC default); bit 7 (update in
/// progress) always clear.
const REG_A_DEFAULT: u8 = 0x26;
/// Register A bit 7: an update is in progress (never set here).
const REG_A_UIP: u8 = 0x80;
/// Register B bit 1: 24-hour mode.
const REG_B_24H: u8 = 1 << 1;
/// Register B bit 2: binary, not BCD, values.
const REG_B_BINARY: u8 = 1 << 2;
/// Register B after reset: 24-hour mode, BCD values, no interrupts enabled.
const REG_B_DEFAULT: u8 = REG_B_24H;
/// Register D bit 7: valid RAM and time (the battery is good).
const REG_D_VALID: u8 = 0x80;
/// Bit 7 of the index port disables NMIs; the register index is the low 7 bits.
const INDEX_MASK: u8 = 0x7f;
/// Hour bit 7 in 12-hour mode: PM.
const HOUR_PM: u8 = 0x80;

/// The clock's state: the selected register and the CMOS RAM.
#[derive(Debug, Clone)]
pub struct Rtc {
    index: u8,
    ram: [u8; 128],
    clock: fn() -> UtcTime,
}

impl Default for Rtc {
    fn default() -> Self {
        Self::with_clock(UtcTime::now)
    }
}

impl Rtc {
    /// A clock reading the time from `clock` (the host's UTC time in a VM; a fixed time in tests).
    pub fn with_clock(clock: fn() -> UtcTime) -> Self {
        let mut ram = [0u8; 128];
        ram[usize::from(REG_A)] = REG_A_DEFAULT;
        ram[usize::from(REG_B)] = REG_B_DEFAULT;
        ram[usize::from(REG_D)] = REG_D_VALID;
        Self { index: 0, ram, clock }
    }

    /// A read of `port` (0x70 gives back the index, 0x71 the selected register).
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            RTC_INDEX_PORT => self.index,
            RTC_DATA_PORT => self.register(self.index),
            _ => 0xff,
        }
    }

    /// A write of `value` to `port`.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            RTC_INDEX_PORT => self.index = value & INDEX_MASK,
            RTC_DATA_PORT => match self.index {
                index if is_time_register(index) => {}
                REG_A => self.ram[usize::from(REG_A)] = value & !REG_A_UIP,
                // Read-only: interrupt flags and the battery status.
                REG_C | REG_D => {}
                index => self.ram[usize::from(index)] = value,
            },
            _ => {}
        }
    }

    /// The value of register `index` now.
    fn register(&mut self, index: u8) -> u8 {
        if !is_time_register(index) {
            return self.ram[usize::from(index & INDEX_MASK)];
        }
        let now = (self.clock)();
        let mode = self.ram[usize::from(REG_B)];
        let encode = |value: u8| if mode & REG_B_BINARY != 0 { value } else { ((value / 10) << 4) | (value % 10) };
        match index {
            REG_SECONDS => encode(now.second),
            REG_MINUTES => encode(now.minute),
            REG_HOURS if mode & REG_B_24H != 0 => encode(now.hour),
            REG_HOURS => {
                let hour12 = match now.hour % 12 {
                    0 => 12,
                    h => h,
                };
                encode(hour12) | if now.hour >= 12 { HOUR_PM } else { 0 }
            }
            // The clock counts weekdays from 1 (Sunday).
            REG_WEEKDAY => encode(now.weekday + 1),
            REG_DAY => encode(now.day),
            REG_MONTH => encode(now.month),
            REG_YEAR => encode(now.year.rem_euclid(100) as u8),
            _ => encode(now.year.div_euclid(100).clamp(0, 99) as u8),
        }
    }
}

/// True for the registers that read the clock (the host's time) rather than the CMOS RAM.
fn is_time_register(index: u8) -> bool {
    matches!(index, REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH | REG_YEAR | REG_CENTURY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07T19:04:06Z, a Monday.
    fn fixed() -> UtcTime {
        UtcTime { year: 2026, month: 12, day: 7, hour: 19, minute: 4, second: 6, weekday: 1 }
    }

    fn read(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(RTC_INDEX_PORT, index);
        rtc.read(RTC_DATA_PORT)
    }

    #[test]
    fn the_time_reads_in_bcd_24_hour_mode_and_no_update_is_ever_in_progress() {
        let mut rtc = Rtc::with_clock(fixed);
        let time: Vec<u8> =
            [REG_SECONDS, REG_MINUTES, REG_HOURS, REG_WEEKDAY, REG_DAY, REG_MONTH, REG_YEAR, REG_CENTURY]
                .iter()
                .map(|&r| read(&mut rtc, r))
                .collect();
        assert_eq!(time, [0x06, 0x04, 0x19, 0x02, 0x07, 0x12, 0x26, 0x20]);
        assert_eq!(read(&mut rtc, REG_A) & REG_A_UIP, 0);
        assert_eq!(read(&mut rtc, REG_D), REG_D_VALID);
        // The NMI-disable bit of the index port does not change the register.
        assert_eq!(read(&mut rtc, 0x80 | REG_MONTH), 0x12);
    }

    #[test]
    fn binary_and_12_hour_modes_follow_register_b() {
        let mut rtc = Rtc::with_clock(fixed);
        rtc.write(RTC_INDEX_PORT, REG_B);
        rtc.write(RTC_DATA_PORT, REG_B_BINARY);
        assert_eq!(read(&mut rtc, REG_HOURS), 7 | HOUR_PM);
        assert_eq!(read(&mut rtc, REG_YEAR), 26);
    }

    #[test]
    fn ram_keeps_writes_and_the_clock_and_status_ignore_them() {
        let mut rtc = Rtc::with_clock(fixed);
        for (index, value) in [(0x40u8, 0xabu8), (REG_SECONDS, 0x59), (REG_C, 0xff), (REG_D, 0), (REG_A, 0xa6)] {
            rtc.write(RTC_INDEX_PORT, index);
            rtc.write(RTC_DATA_PORT, value);
        }
        assert_eq!(read(&mut rtc, 0x40), 0xab);
        assert_eq!(read(&mut rtc, REG_SECONDS), 0x06);
        assert_eq!(read(&mut rtc, REG_C), 0);
        assert_eq!(read(&mut rtc, REG_D), REG_D_VALID);
        assert_eq!(read(&mut rtc, REG_A), 0x26);
        assert_eq!(rtc.read(0x72), 0xff);
    }
}
