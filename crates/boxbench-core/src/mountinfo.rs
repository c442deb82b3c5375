//! The mount points of this mount namespace (`/proc/self/mountinfo`), for the code that must leave
//! none behind: the full-OS image builder's tmpfs, a private dockerd's overlay mounts.

use std::fs;
use std::path::{Path, PathBuf};

/// The mount points at or under `dir` (resolved through symlinks first), deepest first: the order
/// to unmount them in.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|mount| mount.starts_with(&dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    mounts
}

/// A mountinfo field with its octal escapes (`\040` for a space) decoded.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(digits) => {
                out.push(digits.iter().fold(0u8, |acc, d| acc.wrapping_mul(8).wrapping_add(d - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(unescape(r"/tmp/a\040b\011c\134d"), "/tmp/a b\tc\\d");
        assert_eq!(unescape(r"/plain\0"), r"/plain\0");
        assert_eq!(unescape(r"/plain\x"), r"/plain\x");
    }

    #[test]
    fn mounts_are_found_under_a_directory_deepest_first() {
        assert!(mounts_under(Path::new("/")).contains(&PathBuf::from("/")));
        assert!(mounts_under(Path::new("/")).first().is_some_and(|m| m != Path::new("/")), "deepest first");
        assert!(mounts_under(Path::new("/nonexistent-boxbench")).is_empty());
    }
}
