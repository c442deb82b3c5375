//! What the integration tests share: the built binary and the host checks for "nothing left behind".

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

pub use boxbench_testkit::is_root;

/// Instance cgroups (in any hierarchy's `boxbench` directory) named with `pid`.
pub fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let tag = format!("-{pid}-");
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path().join("boxbench")).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup/boxbench"));
    roots
        .into_iter()
        .filter_map(|root| fs::read_dir(root).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(&tag)))
        .collect()
}

/// Processes whose cgroup is one of `pid`'s instance cgroups (what a leaked instance would be).
pub fn processes_in_cgroups_of(pid: u32) -> Vec<String> {
    let name = format!("-{pid}-");
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cgroup = fs::read_to_string(e.path().join("cgroup")).ok()?;
            cgroup
                .lines()
                .any(|l| l.contains("boxbench/") && l.contains(&name))
                .then(|| e.file_name().to_string_lossy().into())
        })
        .collect()
}

/// `boxbench*` entries of the temp directory.
pub fn temp_entries() -> BTreeSet<PathBuf> {
    fs::read_dir(std::env::temp_dir())
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("boxbench"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that the boxbench process `pid` left no cgroup, no process in one, and no new temp entry.
pub fn assert_clean_after(pid: u32, temp_before: &BTreeSet<PathBuf>, what: &str) {
    assert!(cgroups_of(pid).is_empty(), "{what}: cgroups left: {:?}", cgroups_of(pid));
    assert!(processes_in_cgroups_of(pid).is_empty(), "{what}: processes left: {:?}", processes_in_cgroups_of(pid));
    let new: Vec<_> = temp_entries().difference(temp_before).cloned().collect();
    assert!(new.is_empty(), "{what}: temp entries left: {new:?}");
}
