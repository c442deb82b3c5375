//! What a boot of boxbench's full-OS disk shows on its console, read the same way for every backend
//! that boots it (a VM through its boot loader or directly, a system container): the boot's phases
//! for the record's `details_ms`, and how the boot ended.
//!
//! The disk's workload service prints, after the marker, systemd's own clock of the boot:
//! `BOXBENCH_BOOT_TIMESTAMPS initrd_us=I userspace_us=U multi_user_us=M`, CLOCK_MONOTONIC
//! microseconds of the initramfs's start (0: none), systemd's start and `multi-user.target` reached.
//! In a system container that clock is the host's, so each is a launch time directly. In a VM it is
//! the guest's, which starts with the kernel: each is placed on the launch clock after the kernel's
//! first console line (`Linux version`, timed by the console capture).

use boxbench_core::Timeline;
use boxbench_core::clock::MonotonicNs;
use boxbench_core::spec::VM_DEFAULTS;
use std::collections::BTreeMap;

/// The prefix of the workload service's timestamps line.
pub const TIMESTAMPS_PREFIX: &str = "BOXBENCH_BOOT_TIMESTAMPS";

/// The lines a VM booting the disk prints at known points, in boot order, for the console capture to
/// time: SYSLINUX's banner (the boot loader runs), the kernel's first line, the first line of Debian's
/// initramfs (initramfs-tools' `init`).
pub const VM_STAMPS: &[&str] = &["SYSLINUX", "Linux version", "Loading, please wait"];

/// systemd's timestamps of one boot, in microseconds of the clock it ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTimestamps {
    /// The initramfs started (`None`: the boot had none, as in a container).
    pub initrd_us: Option<u64>,
    /// systemd started.
    pub userspace_us: u64,
    /// `multi-user.target` was reached.
    pub multi_user_us: u64,
}

impl BootTimestamps {
    /// The timestamps line on `console`, if the workload service printed one.
    pub fn parse(console: &str) -> Option<Self> {
        let line = console.lines().find_map(|l| l.trim().strip_prefix(TIMESTAMPS_PREFIX))?;
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        Some(Self {
            initrd_us: field("initrd_us").filter(|us| *us > 0),
            userspace_us: field("userspace_us").filter(|us| *us > 0)?,
            multi_user_us: field("multi_user_us").filter(|us| *us > 0)?,
        })
    }

    /// The phases of a system container's boot on the launch clock (its systemd's clock is the
    /// host's): `init_ms` (systemd started) and `multi_user_ms`.
    pub fn container_details(&self, timeline: &Timeline) -> BTreeMap<String, f64> {
        let at = |us: u64| MonotonicNs(us * 1000).millis_since(timeline.started_at());
        BTreeMap::from([
            ("init_ms".to_owned(), at(self.userspace_us)),
            ("multi_user_ms".to_owned(), at(self.multi_user_us)),
        ])
    }

    /// The phases of a VM's boot: the guest clock's times since the kernel started
    /// (`guest_initrd_ms`, `guest_init_ms`, `guest_multi_user_ms`), and, when the kernel's first
    /// line was timed at `kernel_ms` on the launch clock, the same on the launch clock (`initrd_ms`,
    /// `init_ms`, `multi_user_ms`).
    pub fn vm_details(&self, kernel_ms: Option<f64>) -> BTreeMap<String, f64> {
        let mut details = BTreeMap::new();
        let mut put = |name: &str, us: u64| {
            let guest_ms = us as f64 / 1e3;
            details.insert(format!("guest_{name}"), guest_ms);
            if let Some(kernel_ms) = kernel_ms {
                details.insert(name.to_owned(), kernel_ms + guest_ms);
            }
        };
        if let Some(initrd) = self.initrd_us {
            put("initrd_ms", initrd);
        }
        put("init_ms", self.userspace_us);
        put("multi_user_ms", self.multi_user_us);
        details
    }
}

/// The last `n` non-empty console lines joined with " / ", for an error line.
pub fn last_lines(console: &str, n: usize) -> String {
    let lines: Vec<&str> = console
        .lines()
        .map(|l| l.trim_matches(|c: char| c.is_whitespace() || c.is_control()))
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// How a boot of the disk ended, given that its tool exited cleanly: the exit status the workload
/// service printed, else a failure naming the last console lines.
pub fn clean_exit_outcome(console: &str, what: &str) -> boxbench_core::Outcome {
    match VM_DEFAULTS.exit_status(console) {
        Some(code) => boxbench_core::Outcome::Exited { code },
        None => boxbench_core::Outcome::Failed {
            reason: format!(
                "{what} stopped without printing {}N; last console lines: {}",
                VM_DEFAULTS.exit_status_prefix,
                last_lines(console, 4)
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_line_is_read_and_a_missing_initrd_is_none() {
        let console =
            "6.1.0\nBOXBENCH_READY\r\nBOXBENCH_BOOT_TIMESTAMPS initrd_us=0 userspace_us=1500 multi_user_us=2500\r\n";
        let stamps = BootTimestamps::parse(console).unwrap();
        assert_eq!(stamps, BootTimestamps { initrd_us: None, userspace_us: 1500, multi_user_us: 2500 });
        assert!(BootTimestamps::parse("BOXBENCH_READY\n").is_none());
        assert!(BootTimestamps::parse("BOXBENCH_BOOT_TIMESTAMPS initrd_us= userspace_us= multi_user_us=\n").is_none());
    }

    #[test]
    fn vm_phases_are_guest_times_placed_after_the_kernel_line() {
        let stamps = BootTimestamps { initrd_us: Some(1_000_000), userspace_us: 3_000_000, multi_user_us: 5_000_000 };
        let details = stamps.vm_details(Some(200.0));
        assert_eq!(details["guest_init_ms"], 3000.0);
        assert_eq!(details["init_ms"], 3200.0);
        assert_eq!(details["initrd_ms"], 1200.0);
        assert_eq!(details["multi_user_ms"], 5200.0);
        let unanchored = stamps.vm_details(None);
        assert!(!unanchored.contains_key("init_ms"));
        assert_eq!(unanchored["guest_multi_user_ms"], 5000.0);
    }

    #[test]
    fn container_phases_are_host_clock_times_since_launch() {
        let timeline = Timeline::start();
        let start_us = timeline.started_at().0 / 1000;
        let stamps =
            BootTimestamps { initrd_us: None, userspace_us: start_us + 20_000, multi_user_us: start_us + 300_000 };
        let details = stamps.container_details(&timeline);
        assert!((details["init_ms"] - 20.0).abs() < 1.0, "{details:?}");
        assert!((details["multi_user_ms"] - 300.0).abs() < 1.0, "{details:?}");
    }

    #[test]
    fn a_boot_without_the_status_line_fails_naming_the_last_lines() {
        let outcome = clean_exit_outcome("a\n\nb\r\nc\n", "nspawn container");
        let boxbench_core::Outcome::Failed { reason } = outcome else { panic!("{outcome:?}") };
        assert!(reason.ends_with("last console lines: a / b / c"), "{reason}");
        assert_eq!(clean_exit_outcome("BOXBENCH_EXIT_STATUS=3\n", "x"), boxbench_core::Outcome::Exited { code: 3 });
    }
}
