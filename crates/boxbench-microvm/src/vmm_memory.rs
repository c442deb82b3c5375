//! The VMM child's own `/proc/self/smaps`, read without `open` once the VM runs, split by the one
//! definition of a VMM's overhead ([`boxbench_core::smaps`]).

use boxbench_core::smaps::{self, ResidentSplit};
use std::fs::File;
use std::os::unix::fs::FileExt;

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
        Some(smaps::split(&self.read()?, guest_ranges))
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

#[cfg(test)]
mod tests {
    use super::*;

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
