//! What the VMM process itself costs in memory, read from `/proc/self/smaps`.
//!
//! **Definition of the VMM overhead**: the bytes of the VMM child's *private* resident pages
//! (`Private_Clean + Private_Dirty`) in every mapping that does not back guest RAM. The guest's pages
//! are the guest's, whatever hosts them. Pages the child still shares with another process are not its
//! cost: the child is forked from boxbench, so until it writes to them it shares every page of its
//! parent copy-on-write (a large parent, e.g. a Criterion bench, would otherwise show as VMM memory),
//! and the pages of shared libraries and of the boxbench binary belong to every process that maps them.
//! What remains is what running this VM added to the host: the pages the child wrote (its heap, vCPU
//! stacks, KVM run structures, the copies it made of pages it shares with boxbench) and the pages it
//! alone has mapped.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Resident memory of this process split between guest RAM and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentSplit {
    /// All resident bytes of the process (shared pages included).
    pub total_rss: u64,
    /// Resident bytes of the mappings that back guest RAM.
    pub guest_rss: u64,
    /// Private resident bytes (`Private_Clean + Private_Dirty`) outside guest RAM.
    pub private_outside_guest: u64,
    /// Proportional set size of the whole process (guest RAM included).
    pub pss: u64,
}

impl ResidentSplit {
    /// What the VMM costs beyond the guest's own pages (see the module documentation).
    pub fn overhead(&self) -> u64 {
        self.private_outside_guest
    }
}

/// This process's `/proc/self/smaps`, opened once so that measuring later needs no `open` (the VMM
/// child's seccomp filter allows none once the VM runs).
#[derive(Debug)]
pub struct Smaps(File);

impl Smaps {
    /// Opens `/proc/self/smaps` of the calling process.
    pub fn open() -> std::io::Result<Self> {
        File::open("/proc/self/smaps").map(Self)
    }

    /// Splits this process's resident memory around the host ranges `(start, len)` of guest RAM.
    pub fn resident_split(&self, guest_ranges: &[(usize, usize)]) -> Option<ResidentSplit> {
        Some(split_smaps(&self.read()?, guest_ranges))
    }

    /// The file's current text, read from its start with positional reads.
    fn read(&self) -> Option<String> {
        let mut text = Vec::with_capacity(64 * 1024);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.0.read_at(&mut chunk, text.len() as u64) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        String::from_utf8(text).ok()
    }
}

fn split_smaps(smaps: &str, guest_ranges: &[(usize, usize)]) -> ResidentSplit {
    let mut split = ResidentSplit { total_rss: 0, guest_rss: 0, private_outside_guest: 0, pss: 0 };
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some(bytes) = field_bytes(line, "Rss:") {
            split.total_rss += bytes;
            if in_guest {
                split.guest_rss += bytes;
            }
        } else if let Some(bytes) = field_bytes(line, "Pss:") {
            split.pss += bytes;
        } else if let Some(bytes) = field_bytes(line, "Private_Clean:").or_else(|| field_bytes(line, "Private_Dirty:"))
        {
            if !in_guest {
                split.private_outside_guest += bytes;
            }
        } else if let Some((start, end)) = mapping_range(line) {
            in_guest = guest_ranges.iter().any(|&(g, len)| start < g + len && g < end);
        }
    }
    split
}

/// The value of an smaps field line `name   N kB`, in bytes.
fn field_bytes(line: &str, name: &str) -> Option<u64> {
    let kib: u64 = line.strip_prefix(name)?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
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
Pss:                   2 kB
Shared_Clean:          4 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
55d000100000-55d000900000 rw-p 00000000 00:00 0 [heap]
Rss:                8192 kB
Shared_Dirty:       8000 kB
Private_Clean:         0 kB
Private_Dirty:       192 kB
7f0000000000-7f0008000000 rw-p 00000000 00:00 0
Size:             131072 kB
Rss:                2048 kB
Private_Clean:         0 kB
Private_Dirty:      2048 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  16 kB
Private_Clean:         4 kB
Private_Dirty:        12 kB
";
        let split = split_smaps(smaps, &[(0x7f00_0000_0000, 128 << 20)]);
        assert_eq!(split.total_rss, (4 + 8192 + 2048 + 16) * 1024);
        assert_eq!(split.guest_rss, 2048 * 1024);
        // Shared pages (the binary's text, the heap still shared with a parent) are not the VMM's cost.
        assert_eq!(split.overhead(), (192 + 16) * 1024);
        assert_eq!(split.pss, 2 * 1024);
    }

    #[test]
    fn own_process_is_measured_from_one_open_file_again_and_again() {
        let smaps = Smaps::open().unwrap();
        let first = smaps.resident_split(&[]).unwrap();
        assert!(first.total_rss > 0 && first.pss > 0 && first.overhead() > 0);
        assert_eq!(first.guest_rss, 0);
        let ballast = std::hint::black_box(vec![1u8; 8 << 20]);
        let second = smaps.resident_split(&[]).unwrap();
        assert!(second.overhead() >= first.overhead() + (4 << 20), "{first:?} then {second:?}");
        let range = (ballast.as_ptr() as usize, ballast.len());
        let split = smaps.resident_split(&[range]).unwrap();
        assert!(split.guest_rss >= 8 << 20, "{split:?}");
    }
}
