//! Capture of an instance's console (a container's stdout and stderr, a VM's serial port) with the
//! times of its first byte and of the workload's marker.
//!
//! A reader thread drains the console as it is written, so the marker is stamped when it appears, not
//! when the instance ends. A console that floods is cut to its last [`CONSOLE_KEEP_BYTES`], so a guest
//! printing forever cannot exhaust boxbench's memory.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::clock::MonotonicNs;

/// How much of a console is kept: its tail beyond this is what reports show.
pub const CONSOLE_KEEP_BYTES: usize = 256 * 1024;

/// What a console showed.
#[derive(Debug, Clone, Default)]
pub struct Console {
    /// The text (lossy UTF-8; the tail only if it flooded).
    pub text: String,
    /// Bytes read in all, kept or not.
    pub total_bytes: u64,
    /// When the first byte arrived.
    pub first_byte_at: Option<MonotonicNs>,
    /// When the marker appeared.
    pub marker_at: Option<MonotonicNs>,
    /// What the marker callback returned (e.g. PSS sampled at the marker).
    pub marker_sample: Option<u64>,
    /// When each of the stamped lines ([`ConsoleCapture::spawn_stamping`]) first appeared, in the
    /// order they were asked for (`None`: never).
    pub stamps: Vec<Option<MonotonicNs>>,
}

/// A console being drained by its reader thread.
#[derive(Debug)]
pub struct ConsoleCapture {
    reader: JoinHandle<Console>,
    marker_seen: Arc<AtomicBool>,
}

impl ConsoleCapture {
    /// Starts draining `source` until end of file, stamping `marker` and calling `on_marker` once,
    /// on the reader thread, the moment it appears.
    pub fn spawn<R, F>(source: R, marker: &'static str, on_marker: F) -> std::io::Result<Self>
    where
        R: Read + Send + 'static,
        F: FnOnce() -> Option<u64> + Send + 'static,
    {
        Self::spawn_stamping(source, marker, &[], on_marker)
    }

    /// Like [`spawn`](Self::spawn), also stamping when each of `stamps` (strings a guest prints at a
    /// known point of its boot, such as a boot loader's banner) first appears, by the same scan as
    /// the marker.
    pub fn spawn_stamping<R, F>(
        mut source: R,
        marker: &'static str,
        stamps: &'static [&'static str],
        on_marker: F,
    ) -> std::io::Result<Self>
    where
        R: Read + Send + 'static,
        F: FnOnce() -> Option<u64> + Send + 'static,
    {
        let marker_seen = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&marker_seen);
        let reader = std::thread::Builder::new().name("console".into()).spawn(move || {
            let mut scanner = MarkerScanner::new(marker);
            let mut on_marker = Some(on_marker);
            let mut console = Console { stamps: vec![None; stamps.len()], ..Console::default() };
            let mut stamp_scanners: Vec<MarkerScanner> = stamps.iter().map(|s| MarkerScanner::new(s)).collect();
            let mut kept: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                let n = match source.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let now = MonotonicNs::now();
                console.first_byte_at.get_or_insert(now);
                console.total_bytes += n as u64;
                if console.marker_at.is_none() && scanner.feed(&buf[..n]) {
                    console.marker_at = Some(now);
                    console.marker_sample = on_marker.take().and_then(|f| f());
                    seen.store(true, Ordering::Release);
                }
                for (scanner, stamp) in stamp_scanners.iter_mut().zip(console.stamps.iter_mut()) {
                    if stamp.is_none() && scanner.feed(&buf[..n]) {
                        *stamp = Some(now);
                    }
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * CONSOLE_KEEP_BYTES {
                    kept.drain(..kept.len() - CONSOLE_KEEP_BYTES);
                }
            }
            let start = kept.len().saturating_sub(CONSOLE_KEEP_BYTES);
            console.text = String::from_utf8_lossy(&kept[start..]).into_owned();
            console
        })?;
        Ok(Self { reader, marker_seen })
    }

    /// True once the marker has appeared (and the marker callback has run), while the console is
    /// still being drained.
    pub fn marker_seen(&self) -> bool {
        self.marker_seen.load(Ordering::Acquire)
    }

    /// Waits for end of file on the console (every writer closed it) and returns what it showed.
    pub fn join(self) -> Console {
        self.reader.join().unwrap_or_default()
    }
}

/// Finds a marker in a byte stream that arrives in arbitrary chunks, down to one byte at a time (a
/// VM's serial port). The one marker scan of boxbench: every console, whoever drains it, uses it.
///
/// A matcher that restarts at the marker's first byte after a mismatch misses a marker that follows
/// a partial one ("BOXBOXBENCH_READY": "BOXB" ends in the marker's first byte). This one keeps, for
/// each matched length, the longest proper prefix that is also a suffix (Knuth-Morris-Pratt), so a
/// mismatch falls back to the longest partial match still alive and no byte is looked at twice.
#[derive(Debug, Clone)]
pub struct MarkerScanner {
    marker: &'static [u8],
    /// `fallback[i]`: the length of the longest proper prefix of `marker[..=i]` that is also its suffix.
    fallback: Vec<usize>,
    /// How many of the marker's bytes the stream ends in.
    matched: usize,
}

impl MarkerScanner {
    /// A scanner for `marker` (an empty marker is never found).
    pub fn new(marker: &'static str) -> Self {
        let marker = marker.as_bytes();
        let mut fallback = vec![0; marker.len()];
        let mut len = 0;
        for i in 1..marker.len() {
            while len > 0 && marker[i] != marker[len] {
                len = fallback[len - 1];
            }
            if marker[i] == marker[len] {
                len += 1;
            }
            fallback[i] = len;
        }
        Self { marker, fallback, matched: 0 }
    }

    /// Feeds the next bytes of the stream; true if a marker ends in them.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.marker.is_empty() {
            return false;
        }
        let mut found = false;
        for &byte in chunk {
            while self.matched > 0 && byte != self.marker[self.matched] {
                self.matched = self.fallback[self.matched - 1];
            }
            if byte == self.marker[self.matched] {
                self.matched += 1;
            }
            if self.matched == self.marker.len() {
                found = true;
                self.matched = self.fallback[self.matched - 1];
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_split_across_chunks_is_found() {
        let mut scanner = MarkerScanner::new("BOXBENCH_READY");
        assert!(!scanner.feed(b"booting...\nBOXBEN"));
        assert!(scanner.feed(b"CH_READY\n"));
    }

    #[test]
    fn marker_after_a_partial_match_is_found_whole_or_byte_by_byte() {
        let mut whole = MarkerScanner::new("BOXBENCH_READY");
        assert!(whole.feed(b"BOXBOXBENCH_READY"));
        let mut bytes = MarkerScanner::new("BOXBENCH_READY");
        let found: Vec<bool> = b"BOXBOXBENCH_READY".iter().map(|b| bytes.feed(&[*b])).collect();
        assert_eq!(found.iter().filter(|f| **f).count(), 1);
        assert!(found[found.len() - 1]);
    }

    #[test]
    fn overlapping_repeats_of_a_self_similar_marker_are_found_split_anywhere() {
        // "ABAB" overlaps itself: "ABABAB" holds it twice; every split of the stream finds it.
        let stream = b"xxABABABy";
        for split in 0..=stream.len() {
            let mut scanner = MarkerScanner::new("ABAB");
            let (a, b) = stream.split_at(split);
            let hits = usize::from(scanner.feed(a)) + usize::from(scanner.feed(b));
            assert!(hits >= 1, "split at {split}");
        }
        let mut scanner = MarkerScanner::new("ABAB");
        assert!(!scanner.feed(b"ABA"));
        assert!(scanner.feed(b"B"));
        assert!(scanner.feed(b"AB"), "the second, overlapping occurrence");
        assert!(!scanner.feed(b"x"));
    }

    #[test]
    fn capture_stamps_marker_and_calls_back_once() {
        let input = b"hello\nBOXBENCH_READY\nBOXBENCH_READY\n".to_vec();
        let capture = ConsoleCapture::spawn(std::io::Cursor::new(input), "BOXBENCH_READY", || Some(42)).unwrap();
        while !capture.marker_seen() {
            std::thread::yield_now();
        }
        let console = capture.join();
        assert_eq!(console.text, "hello\nBOXBENCH_READY\nBOXBENCH_READY\n");
        assert!(console.first_byte_at.is_some());
        assert!(console.marker_at.is_some());
        assert_eq!(console.marker_sample, Some(42));
    }

    #[test]
    fn stamped_lines_are_timed_in_order_and_a_missing_one_is_none() {
        let input = b"SYSLINUX 6.04\nLinux version 6.1\nBOXBENCH_READY\n".to_vec();
        let stamps: &'static [&'static str] = &["SYSLINUX", "Linux version", "never printed"];
        let console = ConsoleCapture::spawn_stamping(std::io::Cursor::new(input), "BOXBENCH_READY", stamps, || None)
            .unwrap()
            .join();
        assert_eq!(console.stamps.len(), 3);
        assert!(console.stamps[0].is_some() && console.stamps[1].is_some());
        assert!(console.stamps[0] <= console.stamps[1] && console.stamps[1] <= console.marker_at);
        assert_eq!(console.stamps[2], None);
    }

    #[test]
    fn flooding_console_keeps_only_its_tail() {
        let mut input = vec![b'x'; 3 * CONSOLE_KEEP_BYTES];
        input.extend_from_slice(b"THE END");
        let console = ConsoleCapture::spawn(std::io::Cursor::new(input), "NEVER", || None).unwrap().join();
        assert_eq!(console.text.len(), CONSOLE_KEEP_BYTES);
        assert!(console.text.ends_with("THE END"));
        assert_eq!(console.total_bytes, 3 * CONSOLE_KEEP_BYTES as u64 + 7);
        assert_eq!(console.marker_at, None);
    }
}
