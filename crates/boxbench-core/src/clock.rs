//! Timestamps that mean the same thing in every process on the host.
//!
//! Phases are observed in different processes (a container's setup child, a VMM child's vCPU thread,
//! boxbench's console reader), so they are stamped with `CLOCK_MONOTONIC` nanoseconds, which every
//! process on the host shares, rather than with `Instant`, which cannot cross a process boundary.

use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on the host's `CLOCK_MONOTONIC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonotonicNs(pub u64);

impl MonotonicNs {
    /// The current time.
    pub fn now() -> Self {
        // CLOCK_MONOTONIC exists on every Linux kernel boxbench supports; failing to read it is
        // impossible short of a broken libc, so a zero stamp (which shows up as absurd) is enough.
        let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
        Self(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
    }

    /// Milliseconds from `earlier` to `self` (negative if `self` came first).
    pub fn millis_since(self, earlier: MonotonicNs) -> f64 {
        (self.0 as f64 - earlier.0 as f64) / 1e6
    }
}

/// A moment as a UTC calendar date and time of day: report directory names, and the guest's
/// real-time clock in boxbench's VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// The year, e.g. 2026.
    pub year: i64,
    /// The month, 1 to 12.
    pub month: u8,
    /// The day of the month, 1 to 31.
    pub day: u8,
    /// The hour, 0 to 23.
    pub hour: u8,
    /// The minute, 0 to 59.
    pub minute: u8,
    /// The second, 0 to 59.
    pub second: u8,
    /// The day of the week, 0 (Sunday) to 6.
    pub weekday: u8,
}

impl UtcTime {
    /// The calendar time `secs` seconds after 1970-01-01T00:00:00Z.
    pub fn from_unix_seconds(secs: u64) -> Self {
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        Self {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4) % 7) as u8,
        }
    }

    /// The calendar time now (the epoch if the system clock is before it).
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self::from_unix_seconds(secs)
    }
}

/// The start of one launch, against which every phase is measured.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    start: MonotonicNs,
}

impl Timeline {
    /// Starts the timeline now.
    pub fn start() -> Self {
        Self { start: MonotonicNs::now() }
    }

    /// The instant the launch started.
    pub fn started_at(&self) -> MonotonicNs {
        self.start
    }

    /// Milliseconds since launch start of a stamp, if there is one.
    pub fn ms(&self, stamp: Option<MonotonicNs>) -> Option<f64> {
        stamp.map(|s| s.millis_since(self.start))
    }

    /// Milliseconds since launch start, now.
    pub fn now_ms(&self) -> f64 {
        MonotonicNs::now().millis_since(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_stamps_do_not_go_backwards() {
        let a = MonotonicNs::now();
        let b = MonotonicNs::now();
        assert!(b >= a);
        assert!(b.millis_since(a) >= 0.0);
        assert_eq!(MonotonicNs(2_500_000).millis_since(MonotonicNs(500_000)), 2.0);
    }

    #[test]
    fn timeline_reports_absent_phases_as_absent() {
        let t = Timeline::start();
        assert_eq!(t.ms(None), None);
        let later = MonotonicNs(t.started_at().0 + 3_000_000);
        assert_eq!(t.ms(Some(later)), Some(3.0));
    }

    #[test]
    fn calendar_times_from_unix_seconds() {
        let epoch = UtcTime::from_unix_seconds(0);
        assert_eq!((epoch.year, epoch.month, epoch.day, epoch.weekday), (1970, 1, 1, 4));
        // 2000-02-29T23:59:58Z, a Tuesday in a leap century year.
        let leap = UtcTime::from_unix_seconds(951_868_798);
        assert_eq!(leap, UtcTime { year: 2000, month: 2, day: 29, hour: 23, minute: 59, second: 58, weekday: 2 });
        // 2026-12-07T19:04:06Z, a Monday.
        let t = UtcTime::from_unix_seconds(1_796_670_246);
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday), (2026, 12, 7, 19, 4, 6, 1));
    }
}
