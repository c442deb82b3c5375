//! How figures are written in tables, verdicts and plot labels: durations, byte counts and ratios.

use boxbench_core::stats::Summary;
use serde::{Deserialize, Serialize};

/// The unit of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Milliseconds.
    Milliseconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// One value in this unit, human-readable.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Milliseconds => format_ms(value),
            Unit::Bytes => format_bytes(value),
        }
    }
}

/// A duration in milliseconds, with a precision that suits its size ("0.412 ms", "12.3 ms", "17.2 s").
pub fn format_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// A byte count in binary units ("812 KiB", "45.2 MiB", "1.15 GiB").
pub fn format_bytes(bytes: f64) -> String {
    const KIB: f64 = 1024.0;
    let (value, unit) = if bytes >= KIB * KIB * KIB {
        (bytes / (KIB * KIB * KIB), "GiB")
    } else if bytes >= KIB * KIB {
        (bytes / (KIB * KIB), "MiB")
    } else if bytes >= KIB {
        (bytes / KIB, "KiB")
    } else {
        return format!("{bytes:.0} B");
    };
    if value >= 100.0 { format!("{value:.0} {unit}") } else { format!("{value:.2} {unit}") }
}

/// A ratio ("3.4×", "0.71×", "1200×").
pub fn format_ratio(ratio: f64) -> String {
    if ratio >= 100.0 { format!("{ratio:.0}×") } else { format!("{ratio:.2}×") }
}

/// A summary's median with its sample count ("12.3 ms (median, n=20)").
pub fn format_median(unit: Unit, summary: &Summary) -> String {
    format!("{} (median, n={})", unit.format(summary.median), summary.n)
}

/// Bytes as MiB, the unit of memory plots.
pub fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// A number with at most three decimals and no trailing zeros ("0.1", "10", "2.5").
fn trimmed(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// An axis tick in milliseconds: "0.1 ms", "10 ms", "1 s" (whole seconds from 1000 ms).
pub fn axis_ms(ms: f64) -> String {
    if ms >= 1000.0 { format!("{} s", trimmed(ms / 1000.0)) } else { format!("{} ms", trimmed(ms)) }
}

/// An axis tick in MiB: "0.1 MiB", "100 MiB".
pub fn axis_mib(value_mib: f64) -> String {
    format!("{} MiB", trimmed(value_mib))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_a_readable_precision() {
        assert_eq!(format_ms(0.4123), "0.412 ms");
        assert_eq!(format_ms(12.345), "12.35 ms");
        assert_eq!(format_ms(512.4), "512 ms");
        assert_eq!(format_ms(17_240.0), "17.2 s");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(format_bytes(512.0), "512 B");
        assert_eq!(format_bytes(1536.0), "1.50 KiB");
        assert_eq!(format_bytes(45.25 * 1024.0 * 1024.0), "45.25 MiB");
        assert_eq!(format_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.00 GiB");
        assert_eq!(format_ratio(3.456), "3.46×");
        assert_eq!(format_ratio(1234.0), "1234×");
    }

    #[test]
    fn axis_ticks_drop_trailing_zeros() {
        assert_eq!(axis_ms(0.1), "0.1 ms");
        assert_eq!(axis_ms(10.0), "10 ms");
        assert_eq!(axis_ms(10_000.0), "10 s");
        assert_eq!(axis_mib(100.0), "100 MiB");
        assert_eq!(axis_mib(0.25), "0.25 MiB");
    }
}
