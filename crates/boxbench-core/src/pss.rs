//! Proportional set size of host processes: each process's resident pages, with shared pages divided
//! among the processes that share them, so summing over an instance's processes does not count shared
//! libraries or a VMM's shared guest memory twice.

use std::fs;

/// The PSS of process `pid` in bytes, from `/proc/PID/smaps_rollup`; `None` if it is gone.
pub fn pss_bytes(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup_field_kib(&text, "Pss:").map(|kib| kib * 1024)
}

/// The summed PSS of `pids`, skipping processes that are gone; `None` if none could be read.
pub fn total_pss_bytes(pids: &[i32]) -> Option<u64> {
    pids.iter().filter_map(|&pid| pss_bytes(pid)).reduce(|a, b| a + b)
}

/// The RSS of process `pid` in bytes, from `/proc/PID/smaps_rollup`.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup_field_kib(&text, "Rss:").map(|kib| kib * 1024)
}

/// A `Name:   N kB` field of smaps_rollup, in KiB.
fn rollup_field_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(field)?.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pss_field_not_its_prefixed_siblings() {
        let text = "55d0-7ffc ---p 00000000 00:00 0 [rollup]\nRss:  1200 kB\nPss:  800 kB\nPss_Anon:  300 kB\n";
        assert_eq!(rollup_field_kib(text, "Pss:"), Some(800));
        assert_eq!(rollup_field_kib(text, "Rss:"), Some(1200));
    }

    #[test]
    fn own_process_has_a_pss_and_dead_ones_do_not() {
        let own = pss_bytes(std::process::id() as i32).expect("own smaps_rollup");
        assert!(own > 0);
        assert_eq!(pss_bytes(i32::MAX), None);
        assert_eq!(total_pss_bytes(&[i32::MAX]), None);
    }
}
