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
}
