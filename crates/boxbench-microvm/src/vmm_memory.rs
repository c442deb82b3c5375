//! What the VMM process itself costs in memory: its resident pages minus the resident pages of guest
//! RAM, read from `/proc/self/smaps` (the guest's pages are the guest's, whatever hosts them).

/// Resident memory of this process split between guest RAM and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentSplit {
    /// All resident bytes of the process.
    pub total_rss: u64,
    /// Resident bytes of the mappings that back guest RAM.
    pub guest_rss: u64,
}

impl ResidentSplit {
    /// What the VMM costs beyond the guest's own pages.
    pub fn overhead(&self) -> u64 {
        self.total_rss.saturating_sub(self.guest_rss)
    }
}

/// Splits this process's RSS around the host ranges `(start, len)` of guest RAM.
pub fn resident_split(guest_ranges: &[(usize, usize)]) -> Option<ResidentSplit> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    Some(split_smaps(&smaps, guest_ranges))
}

/// The proportional set size of this process.
pub fn own_pss_bytes() -> Option<u64> {
    boxbench_core::pss::pss_bytes(std::process::id() as i32)
}

fn split_smaps(smaps: &str, guest_ranges: &[(usize, usize)]) -> ResidentSplit {
    let mut split = ResidentSplit { total_rss: 0, guest_rss: 0 };
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:").and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()) {
            split.total_rss += kib * 1024;
            if in_guest {
                split.guest_rss += kib * 1024;
            }
        } else if let Some((start, end)) = mapping_range(line) {
            in_guest = guest_ranges.iter().any(|&(g, len)| start < g + len && g < end);
        }
    }
    split
}

/// The address range of an smaps mapping header line (`start-end perms offset dev inode [path]`).
fn mapping_range(line: &str) -> Option<(usize, usize)> {
    let range = line.split_whitespace().next()?;
    let (start, end) = range.split_once('-')?;
    Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_mapping_is_subtracted() {
        let smaps = "\
55d000000000-55d000001000 r-xp 00000000 08:01 42 /usr/bin/vmm
Size:                  4 kB
Rss:                   4 kB
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:                2048 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  16 kB
";
        let split = split_smaps(smaps, &[(0x7f00_0000_0000, 128 << 20)]);
        assert_eq!(split.total_rss, (4 + 2048 + 16) * 1024);
        assert_eq!(split.guest_rss, 2048 * 1024);
        assert_eq!(split.overhead(), 20 * 1024);
    }

    #[test]
    fn own_process_has_resident_memory() {
        let split = resident_split(&[]).unwrap();
        assert!(split.total_rss > 0);
        assert_eq!(split.guest_rss, 0);
        assert!(own_pss_bytes().unwrap() > 0);
    }
}
