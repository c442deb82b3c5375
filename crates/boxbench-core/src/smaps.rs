//! What a VMM process itself costs in memory, beyond the guest RAM it hosts, read from its
//! `/proc/PID/smaps`: the one definition every VMM backend (boxbench's own, QEMU, Firecracker) is
//! measured by.
//!
//! **Definition of the VMM overhead**: the process's *private* resident pages outside the mappings
//! that back guest RAM, file pages left out unless written: `Private_Dirty` of every such mapping plus
//! `Private_Clean` of its anonymous ones. The guest's pages are the guest's, whatever hosts them.
//! Pages the process shares with another process are not its cost: boxbench's own VMM child, forked
//! from boxbench, shares every page of its parent copy-on-write until it writes to it (a large parent,
//! e.g. a Criterion bench, would otherwise show as VMM memory). Clean file pages — the binary's and
//! its libraries' text, even where this process alone maps them — are page cache a second instance of
//! the same VMM would share, not memory this VM added. What remains is what running this VM added to
//! the host: the pages the VMM wrote (its heap, vCPU stacks, KVM run structures, emulator buffers,
//! relocated library data).
//!
//! boxbench's own VMM knows where its guest RAM is mapped. Another VMM's guest RAM is found the way
//! QEMU and Firecracker map it: one writable anonymous mapping exactly as long as the guest's memory
//! (below the 32-bit MMIO gap, which boxbench's VM sizes never cross).

use std::fs;

/// What `overhead_bytes` means for a VM, as its record says it.
pub const OVERHEAD_NOTE: &str = "overhead_bytes: the VMM's private resident memory outside guest RAM, clean file \
                                 pages left out (smaps Private_Dirty, plus Private_Clean of anonymous mappings); \
                                 pages shared with another process are not counted";

/// Resident memory of a VMM process split between guest RAM and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentSplit {
    /// All resident bytes of the process (shared pages included).
    pub total_rss: u64,
    /// Resident bytes of the mappings that back guest RAM.
    pub guest_rss: u64,
    /// Private resident bytes outside guest RAM that are not clean file pages (see the module
    /// documentation).
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

/// Splits the resident memory an smaps text describes around the host ranges `(start, len)` of
/// guest RAM.
pub fn split(smaps: &str, guest_ranges: &[(usize, usize)]) -> ResidentSplit {
    let mut split = ResidentSplit { total_rss: 0, guest_rss: 0, private_outside_guest: 0, pss: 0 };
    let (mut in_guest, mut file_backed) = (false, false);
    for line in smaps.lines() {
        if let Some(bytes) = field_bytes(line, "Rss:") {
            split.total_rss += bytes;
            if in_guest {
                split.guest_rss += bytes;
            }
        } else if let Some(bytes) = field_bytes(line, "Pss:") {
            split.pss += bytes;
        } else if let Some(bytes) = field_bytes(line, "Private_Dirty:") {
            if !in_guest {
                split.private_outside_guest += bytes;
            }
        } else if let Some(bytes) = field_bytes(line, "Private_Clean:") {
            if !in_guest && !file_backed {
                split.private_outside_guest += bytes;
            }
        } else if let Some(mapping) = Mapping::parse(line) {
            in_guest = guest_ranges.iter().any(|&(g, len)| mapping.start < g + len && g < mapping.end);
            file_backed = mapping.file_backed;
        }
    }
    split
}

/// The host ranges of another VMM's guest RAM: its writable anonymous mappings exactly `guest_bytes`
/// long (see the module documentation).
pub fn anonymous_ranges_of_size(smaps: &str, guest_bytes: u64) -> Vec<(usize, usize)> {
    smaps
        .lines()
        .filter_map(Mapping::parse)
        .filter(|m| m.anonymous && m.writable && (m.end - m.start) as u64 == guest_bytes)
        .map(|m| (m.start, m.end - m.start))
        .collect()
}

/// The VMM overhead of process `pid` hosting `guest_bytes` of guest RAM; `None` if the process is
/// gone or no mapping of that size is there (its guest RAM cannot be told apart, so no figure is
/// better than a wrong one).
pub fn vmm_overhead_bytes(pid: i32, guest_bytes: u64) -> Option<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let ranges = anonymous_ranges_of_size(&smaps, guest_bytes);
    if ranges.is_empty() {
        return None;
    }
    Some(split(&smaps, &ranges).overhead())
}

/// The value of an smaps field line `name   N kB`, in bytes.
fn field_bytes(line: &str, name: &str) -> Option<u64> {
    let kib: u64 = line.strip_prefix(name)?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// An smaps mapping header line: `start-end perms offset dev inode [path]`.
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    /// A file is behind it (an inode).
    file_backed: bool,
    /// No file behind it and no kernel-named area such as `[heap]` or `[stack]`.
    anonymous: bool,
}

impl Mapping {
    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let (start, end) = words.next()?.split_once('-')?;
        let perms = words.next()?;
        let (_offset, _dev, inode) = (words.next()?, words.next()?, words.next()?);
        if perms.len() != 4 {
            return None;
        }
        let path = words.next();
        Some(Self {
            start: usize::from_str_radix(start, 16).ok()?,
            end: usize::from_str_radix(end, 16).ok()?,
            writable: perms.as_bytes()[1] == b'w',
            file_backed: inode != "0",
            anonymous: inode == "0" && path.is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d000000000-55d000001000 r-xp 00000000 08:01 42 /usr/bin/vmm
Size:                  4 kB
Rss:                   4 kB
Pss:                   2 kB
Shared_Clean:          0 kB
Private_Clean:         4 kB
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
7f0008000000-7f0008001000 ---p 00000000 00:00 0 
Rss:                   0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  16 kB
Private_Clean:         4 kB
Private_Dirty:        12 kB
";

    #[test]
    fn guest_mapping_is_subtracted() {
        let split = split(SMAPS, &[(0x7f00_0000_0000, 128 << 20)]);
        assert_eq!(split.total_rss, (4 + 8192 + 2048 + 16) * 1024);
        assert_eq!(split.guest_rss, 2048 * 1024);
        // Neither clean file pages (the binary's text, here mapped by this process alone) nor pages
        // shared with another process (the heap still shared with a parent) are the VMM's cost.
        assert_eq!(split.overhead(), (192 + 16) * 1024);
        assert_eq!(split.pss, 2 * 1024);
    }

    #[test]
    fn another_vmms_guest_ram_is_its_anonymous_writable_mapping_of_the_guest_size() {
        assert_eq!(anonymous_ranges_of_size(SMAPS, 128 << 20), vec![(0x7f00_0000_0000, 128 << 20)]);
        // The heap is anonymous memory but a named area; the guard page is not writable.
        assert!(anonymous_ranges_of_size(SMAPS, 8 << 20).is_empty());
        assert!(anonymous_ranges_of_size(SMAPS, 4096).is_empty());
        assert!(anonymous_ranges_of_size(SMAPS, 64 << 20).is_empty());
    }

    #[test]
    fn a_process_without_a_mapping_of_the_guest_size_has_no_figure() {
        let own = std::process::id() as i32;
        assert_eq!(vmm_overhead_bytes(own, (1 << 40) + 4096), None);
        assert_eq!(vmm_overhead_bytes(i32::MAX, 4096), None);
    }

    #[test]
    fn a_real_anonymous_mapping_is_found_and_its_pages_are_not_overhead() {
        let len = 24 << 20;
        // SAFETY: a fresh private anonymous mapping, written only through the slice below and unmapped
        // before the test ends.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        // SAFETY: `ptr` is a writable mapping of `len` bytes that nothing else refers to.
        let guest = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) };
        guest.iter_mut().step_by(4096).for_each(|b| *b = 1);
        let own = std::process::id() as i32;
        let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(anonymous_ranges_of_size(&smaps, len as u64).contains(&(ptr as usize, len)));
        let with_guest = split(&smaps, &[]).overhead();
        let overhead = vmm_overhead_bytes(own, len as u64).unwrap();
        assert!(overhead + (len as u64) <= with_guest + (1 << 20), "{overhead} + guest vs {with_guest}");
        // SAFETY: unmaps exactly the mapping made above; `guest` is not used afterwards.
        unsafe { libc::munmap(ptr, len) };
    }
}
