//! The soak: N launches of one backend, P at once, then a check that the host is as it was before —
//! no process, mount, cgroup, network namespace, file descriptor or temp directory left behind, and
//! boxbench's own resident memory not growing with N.
//!
//! Every check compares a [`HostSnapshot`] taken before the first launch with one taken after the
//! last, scoped to what this process could have made (its descendants, cgroups named with its pid,
//! mounts naming boxbench or the instance's images), because other programs on the host change
//! their own state meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Launcher, Outcome, interrupt};
use serde::Serialize;

/// How many failures keep their last console lines in the report.
const FAILURE_SAMPLES: usize = 3;
/// How many console lines a failure sample keeps.
const SAMPLE_LINES: usize = 5;
/// What every temp directory and cgroup boxbench or its backends create is named from.
const NAME_PREFIX: &str = "boxbench";

/// A host fact a snapshot could not read.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// A file under /proc (or the temp directory) could not be read.
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
}

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// Launches in all.
    pub count: usize,
    /// Launches at once (worker threads).
    pub parallel: usize,
    /// Growth of boxbench's RSS between launch N/2 and launch N that is still accepted.
    pub rss_tolerance_bytes: u64,
}

/// What this process could have left on the host, at one moment.
#[derive(Debug, Clone, Default)]
pub struct HostSnapshot {
    /// Descendants of boxbench: `pid comm`.
    pub processes: BTreeSet<String>,
    /// Mount table lines (mount point and source) that name boxbench or an instance's images.
    pub mounts: BTreeSet<String>,
    /// Instance cgroups named with this process's pid, in every hierarchy.
    pub cgroups: BTreeSet<PathBuf>,
    /// Named network namespaces (`ip netns list`).
    pub netns_names: BTreeSet<String>,
    /// Network namespace inodes held by any process, with one holder each.
    pub netns_inodes: BTreeMap<String, u32>,
    /// Open file descriptors of boxbench.
    pub fds: usize,
    /// Entries of the temp directory whose name starts with `boxbench`.
    pub temp_dirs: BTreeSet<PathBuf>,
    /// boxbench's resident set size.
    pub rss_bytes: u64,
}

/// Where the snapshots look: the backend's cgroup name and the instance's image paths.
#[derive(Debug, Clone)]
pub struct SnapshotScope {
    backend: String,
    image_paths: Vec<String>,
}

impl SnapshotScope {
    /// The scope of instances of `backend` run from `spec`'s images.
    pub fn new(backend: &str, spec: &InstanceSpec) -> Self {
        let images = &spec.images;
        let image_paths = [&images.rootfs, &images.bundle, &images.kernel, &images.initrd]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        Self { backend: backend.to_owned(), image_paths }
    }

    /// Reads the host as it is now.
    pub fn snapshot(&self) -> Result<HostSnapshot, SoakError> {
        let table = process_table()?;
        let own = std::process::id();
        Ok(HostSnapshot {
            processes: descendants(&table, own).into_iter().map(|pid| format!("{pid} {}", table[&pid].comm)).collect(),
            mounts: self.mounts()?,
            cgroups: self.cgroups(own),
            netns_names: netns_names(),
            netns_inodes: table.iter().filter_map(|(&pid, p)| Some((p.netns.clone()?, pid))).collect(),
            fds: read_dir_count(Path::new("/proc/self/fd"))?,
            temp_dirs: temp_entries()?,
            rss_bytes: rss_bytes()?,
        })
    }

    fn mounts(&self) -> Result<BTreeSet<String>, SoakError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(|source| SoakError::Read { path: path.to_owned(), source })?;
        let temp = std::env::temp_dir().join(NAME_PREFIX).display().to_string();
        Ok(text
            .lines()
            .filter_map(|line| {
                // Fields: id parent major:minor root mount-point options ... - fstype source super-options.
                let fields: Vec<&str> = line.split_whitespace().collect();
                let target = fields.get(4)?;
                let source = line.split(" - ").nth(1)?.split_whitespace().nth(1).unwrap_or("");
                let names_ours = |s: &str| {
                    s.starts_with(&temp) || s.contains("/boxbench") || self.image_paths.iter().any(|p| s.starts_with(p))
                };
                (names_ours(target) || names_ours(source)).then(|| format!("{source} on {target}"))
            })
            .collect())
    }

    fn cgroups(&self, own: u32) -> BTreeSet<PathBuf> {
        let tag = format!("-{own}-");
        let mut found: BTreeSet<PathBuf> = CgroupHost::detect()
            .map(|host| host.leftover_instances())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(&tag)))
            .collect();
        found.extend(boxbench_peers::hierarchies::instance_dirs_with_prefix(&format!("{}{tag}", self.backend)));
        found
    }
}

/// What the host kept after the soak that it did not have before.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Leftovers {
    /// Processes still descending from boxbench.
    pub processes: Vec<String>,
    /// New mounts naming boxbench or the images.
    pub mounts: Vec<String>,
    /// Instance cgroups of this process still present.
    pub cgroups: Vec<PathBuf>,
    /// New named network namespaces.
    pub netns_names: Vec<String>,
    /// New network namespace inodes still held by a process that descends from boxbench or sits in
    /// one of its cgroups (other programs on the host make namespaces too).
    pub netns_inodes: Vec<String>,
    /// File descriptors boxbench holds now beyond those it held before.
    pub fds: usize,
    /// New `boxbench*` entries in the temp directory.
    pub temp_dirs: Vec<PathBuf>,
}

impl Leftovers {
    /// The difference between `before` and `after`.
    pub fn between(before: &HostSnapshot, after: &HostSnapshot) -> Self {
        let new = |a: &BTreeSet<String>, b: &BTreeSet<String>| b.difference(a).cloned().collect::<Vec<_>>();
        let own = std::process::id();
        let ours = process_table()
            .map(|table| {
                let tag = format!("-{own}-");
                let mut ours = descendants(&table, own);
                ours.extend(table.iter().filter(|(_, p)| p.cgroup.contains(&tag)).map(|(&pid, _)| pid));
                ours
            })
            .unwrap_or_default();
        Self {
            processes: new(&before.processes, &after.processes),
            mounts: new(&before.mounts, &after.mounts),
            cgroups: after.cgroups.iter().cloned().collect(),
            netns_names: new(&before.netns_names, &after.netns_names),
            netns_inodes: after
                .netns_inodes
                .iter()
                .filter(|(inode, pid)| !before.netns_inodes.contains_key(*inode) && ours.contains(pid))
                .map(|(inode, pid)| format!("{inode} held by {pid}"))
                .collect(),
            fds: after.fds.saturating_sub(before.fds),
            temp_dirs: after.temp_dirs.difference(&before.temp_dirs).cloned().collect(),
        }
    }

    /// True when nothing was left.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.netns_names.is_empty()
            && self.netns_inodes.is_empty()
            && self.fds == 0
            && self.temp_dirs.is_empty()
    }
}

/// boxbench's resident set size through the soak.
#[derive(Debug, Clone, Serialize)]
pub struct RssFigures {
    /// Before the first launch.
    pub before_bytes: u64,
    /// When launch N/2 had finished.
    pub at_half_bytes: Option<u64>,
    /// After the last launch.
    pub after_bytes: u64,
    /// The accepted growth from N/2 to N.
    pub tolerance_bytes: u64,
    /// True when the growth from N/2 to N exceeds the tolerance.
    pub grew: bool,
}

/// A failed launch, with the end of its console.
#[derive(Debug, Clone, Serialize)]
pub struct FailureSample {
    /// Which launch (0-based).
    pub launch: usize,
    /// How it ended, or why it could not launch.
    pub outcome: String,
    /// Its last console lines.
    pub console_tail: String,
}

/// What a soak did and found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The backend soaked.
    pub backend: String,
    /// The workload every launch ran.
    pub workload: String,
    /// Launches asked for.
    pub requested: usize,
    /// Launches at once.
    pub parallel: usize,
    /// Launches made.
    pub launches: usize,
    /// Launches that exited 0.
    pub succeeded: usize,
    /// Failed launches by kind of outcome (`exited`, `signaled`, `out-of-memory`, `deadline`,
    /// `failed`, `launch-error`).
    pub failures: BTreeMap<String, usize>,
    /// The first few failures with their console tails.
    pub failure_samples: Vec<FailureSample>,
    /// What the host kept.
    pub leftovers: Leftovers,
    /// boxbench's RSS.
    pub rss: RssFigures,
    /// Wall time of all launches, in seconds.
    pub wall_s: f64,
    /// True when a SIGINT stopped the soak early.
    pub interrupted: bool,
}

impl SoakReport {
    /// True when every launch succeeded, nothing was left and RSS held.
    pub fn is_clean(&self) -> bool {
        self.failures.is_empty() && self.leftovers.is_empty() && !self.rss.grew && !self.interrupted
    }

    /// The report as text.
    pub fn render_text(&self) -> String {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let mut out = format!(
            "soak: {} ({}), {} of {} launches, {} at once, {:.1} s\n",
            self.backend, self.workload, self.launches, self.requested, self.parallel, self.wall_s
        );
        out += &format!("  succeeded: {}\n", self.succeeded);
        let failed: usize = self.failures.values().sum();
        out += &format!("  failures: {failed}\n");
        for (kind, n) in &self.failures {
            out += &format!("    {kind}: {n}\n");
        }
        for sample in &self.failure_samples {
            out += &format!("    launch {}: {}; last console lines:\n", sample.launch, sample.outcome);
            for line in sample.console_tail.lines() {
                out += &format!("      | {line}\n");
            }
        }
        let l = &self.leftovers;
        out += "  leftovers:\n";
        let list = |name: &str, items: Vec<String>| {
            let shown = if items.is_empty() { "none".to_owned() } else { items.join(", ") };
            format!("    {name}: {} ({shown})\n", items.len())
        };
        out += &list("processes", l.processes.clone());
        out += &list("mounts", l.mounts.clone());
        out += &list("cgroups", l.cgroups.iter().map(|p| p.display().to_string()).collect());
        out += &list("network namespaces (named)", l.netns_names.clone());
        out += &list("network namespaces (held)", l.netns_inodes.clone());
        out += &format!("    file descriptors: {}\n", l.fds);
        out += &list("temp dirs", l.temp_dirs.iter().map(|p| p.display().to_string()).collect());
        let r = &self.rss;
        out += &format!(
            "  boxbench RSS: before {:.1} MiB, at N/2 {}, after {:.1} MiB (tolerance N/2→N: {:.1} MiB){}\n",
            mib(r.before_bytes),
            r.at_half_bytes.map_or("-".to_owned(), |b| format!("{:.1} MiB", mib(b))),
            mib(r.after_bytes),
            mib(r.tolerance_bytes),
            if r.grew { " GREW" } else { "" }
        );
        if self.interrupted {
            out += "  interrupted by SIGINT or SIGTERM: launches stopped, instances torn down\n";
        }
        out += &format!("  verdict: {}\n", if self.is_clean() { "clean" } else { "NOT clean" });
        out
    }
}

#[derive(Debug, Default)]
struct Tally {
    launches: usize,
    succeeded: usize,
    failures: BTreeMap<String, usize>,
    samples: Vec<FailureSample>,
    rss_at_half: Option<u64>,
}

impl Tally {
    fn add(&mut self, launch: usize, outcome: Result<(Outcome, String), String>, half: usize) {
        self.launches += 1;
        let failure = match outcome {
            Ok((outcome, _)) if outcome.is_success() => None,
            Ok((outcome, tail)) => Some((outcome_kind(&outcome), outcome.to_string(), tail)),
            Err(why) => Some(("launch-error", why, String::new())),
        };
        match failure {
            None => self.succeeded += 1,
            Some((kind, outcome, console_tail)) => {
                *self.failures.entry(kind.to_owned()).or_default() += 1;
                if self.samples.len() < FAILURE_SAMPLES {
                    self.samples.push(FailureSample { launch, outcome, console_tail });
                }
            }
        }
        if self.launches == half {
            self.rss_at_half = rss_bytes().ok();
        }
    }
}

fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Exited { .. } => "exited",
        Outcome::Signaled { .. } => "signaled",
        Outcome::OutOfMemory => "out-of-memory",
        Outcome::DeadlineExceeded { .. } => "deadline",
        Outcome::Failed { .. } => "failed",
    }
}

/// Launches `settings.count` instances of `spec`, `settings.parallel` at once, stopping early on
/// SIGINT (see `boxbench_core::interrupt`: checked before every launch and by its wait), then checks
/// the host for what they left.
pub fn soak(launcher: &dyn Launcher, spec: &InstanceSpec, settings: &SoakSettings) -> Result<SoakReport, SoakError> {
    let scope = SnapshotScope::new(launcher.name(), spec);
    let before = scope.snapshot()?;
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    let half = settings.count.div_ceil(2);
    let started = Instant::now();
    std::thread::scope(|threads| {
        for _ in 0..settings.parallel.max(1) {
            threads.spawn(|| {
                loop {
                    if interrupt::requested() {
                        break;
                    }
                    let launch = next.fetch_add(1, Ordering::SeqCst);
                    if launch >= settings.count {
                        break;
                    }
                    let outcome = launch_once(launcher, spec)
                        .map(|record| {
                            let tail = if record.outcome.is_success() {
                                String::new()
                            } else {
                                record.console_tail(SAMPLE_LINES)
                            };
                            (record.outcome, tail)
                        })
                        .map_err(|e| e.to_string());
                    // A poisoned lock means another worker panicked; its launch is lost, the count goes on.
                    tally.lock().unwrap_or_else(|p| p.into_inner()).add(launch, outcome, half);
                }
            });
        }
    });
    let wall_s = started.elapsed().as_secs_f64();
    let tally = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    let after = scope.snapshot()?;
    let grew = tally
        .rss_at_half
        .is_some_and(|half_bytes| after.rss_bytes.saturating_sub(half_bytes) > settings.rss_tolerance_bytes);
    Ok(SoakReport {
        backend: launcher.name().to_owned(),
        workload: spec.workload.to_string(),
        requested: settings.count,
        parallel: settings.parallel,
        launches: tally.launches,
        succeeded: tally.succeeded,
        failures: tally.failures,
        failure_samples: tally.samples,
        leftovers: Leftovers::between(&before, &after),
        rss: RssFigures {
            before_bytes: before.rss_bytes,
            at_half_bytes: tally.rss_at_half,
            after_bytes: after.rss_bytes,
            tolerance_bytes: settings.rss_tolerance_bytes,
            grew,
        },
        wall_s,
        interrupted: interrupt::requested(),
    })
}

#[derive(Debug)]
struct ProcessEntry {
    ppid: u32,
    comm: String,
    netns: Option<String>,
    cgroup: String,
}

/// Every process on the host (processes that end while it is read are skipped).
fn process_table() -> Result<HashMap<u32, ProcessEntry>, SoakError> {
    let proc_dir = Path::new("/proc");
    let entries = fs::read_dir(proc_dir).map_err(|source| SoakError::Read { path: proc_dir.to_owned(), source })?;
    let mut table = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let dir = entry.path();
        let Ok(status) = fs::read_to_string(dir.join("status")) else { continue };
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        let Some(ppid) = field("PPid:").and_then(|v| v.parse().ok()) else { continue };
        let comm = field("Name:").unwrap_or("?").to_owned();
        let netns = fs::read_link(dir.join("ns/net")).ok().map(|l| l.display().to_string());
        let cgroup = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        table.insert(pid, ProcessEntry { ppid, comm, netns, cgroup });
    }
    Ok(table)
}

/// The pids whose PPid chain reaches `root` (not `root` itself).
fn descendants(table: &HashMap<u32, ProcessEntry>, root: u32) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    for &pid in table.keys() {
        let mut at = pid;
        // The chain is bounded by the table's size, so a pid reused mid-read cannot loop forever.
        for _ in 0..table.len() {
            match table.get(&at) {
                Some(entry) if entry.ppid == root => {
                    found.insert(pid);
                    break;
                }
                Some(entry) if entry.ppid > 1 => at = entry.ppid,
                _ => break,
            }
        }
    }
    found.remove(&root);
    found
}

fn netns_names() -> BTreeSet<String> {
    // No `ip` (iproute2) means no named namespaces can have been made through it either.
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn read_dir_count(dir: &Path) -> Result<usize, SoakError> {
    Ok(fs::read_dir(dir).map_err(|source| SoakError::Read { path: dir.to_owned(), source })?.count())
}

fn temp_entries() -> Result<BTreeSet<PathBuf>, SoakError> {
    let temp = std::env::temp_dir();
    let entries = fs::read_dir(&temp).map_err(|source| SoakError::Read { path: temp.clone(), source })?;
    Ok(entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(NAME_PREFIX))
        .map(|e| e.path())
        .collect())
}

/// boxbench's VmRSS.
pub fn rss_bytes() -> Result<u64, SoakError> {
    let path = Path::new("/proc/self/status");
    let status = fs::read_to_string(path).map_err(|source| SoakError::Read { path: path.to_owned(), source })?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot runs `ip netns list` as a child of this process: two tests taking snapshots at once
    /// would each see the other's as a leftover process. The snapshot tests take turns.
    static SNAPSHOTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn entry(ppid: u32) -> ProcessEntry {
        ProcessEntry { ppid, comm: "x".into(), netns: None, cgroup: String::new() }
    }

    #[test]
    fn descendants_follow_ppid_chains() {
        let table: HashMap<u32, ProcessEntry> =
            [(10, entry(1)), (11, entry(10)), (12, entry(11)), (20, entry(1)), (21, entry(20))].into_iter().collect();
        assert_eq!(descendants(&table, 10), BTreeSet::from([11, 12]));
        assert_eq!(descendants(&table, 20), BTreeSet::from([21]));
    }

    #[test]
    fn a_clean_snapshot_pair_has_no_leftovers_and_a_new_temp_dir_is_found() {
        let _turn = SNAPSHOTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let scope = SnapshotScope { backend: "test".into(), image_paths: Vec::new() };
        let before = scope.snapshot().unwrap();
        assert!(before.rss_bytes > 0);
        let dir = tempfile::Builder::new().prefix("boxbench-soak-test-").tempdir().unwrap();
        let after = scope.snapshot().unwrap();
        let leftovers = Leftovers::between(&before, &after);
        assert!(leftovers.temp_dirs.contains(&dir.path().to_owned()), "{leftovers:?}");
        drop(dir);
        let after = scope.snapshot().unwrap();
        assert!(Leftovers::between(&before, &after).temp_dirs.is_empty());
    }

    #[test]
    fn a_child_process_is_a_leftover_until_reaped() {
        let _turn = SNAPSHOTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let scope = SnapshotScope { backend: "test".into(), image_paths: Vec::new() };
        let before = scope.snapshot().unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let after = scope.snapshot().unwrap();
        let leftovers = Leftovers::between(&before, &after);
        assert!(leftovers.processes.iter().any(|p| p.starts_with(&format!("{} ", child.id()))), "{leftovers:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        let after = scope.snapshot().unwrap();
        assert!(Leftovers::between(&before, &after).processes.is_empty());
    }

    #[test]
    fn an_open_file_and_an_instance_cgroup_are_leftovers_until_released() {
        let _turn = SNAPSHOTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let host = boxbench_testkit::require!(CgroupHost::detect());
        let scope = SnapshotScope { backend: "soak-test".into(), image_paths: Vec::new() };
        let before = scope.snapshot().unwrap();
        // Other tests run in this process at the same time and open and close their own files: 64
        // held open here stand out from that traffic.
        let files: Vec<fs::File> = (0..64).map(|_| fs::File::open("/proc/self/status").unwrap()).collect();
        let cgroup = boxbench_testkit::require!(
            boxbench_core::cgroup::InstanceCgroup::create(&host, "soak-test")
                .map_err(|e| format!("cannot make a cgroup here: {e}"))
        );
        let leftovers = Leftovers::between(&before, &scope.snapshot().unwrap());
        assert!(leftovers.fds >= 32, "{leftovers:?}");
        assert!(leftovers.cgroups.contains(&cgroup.path().to_owned()), "{leftovers:?}");
        drop(files);
        cgroup.remove().unwrap();
        let leftovers = Leftovers::between(&before, &scope.snapshot().unwrap());
        assert!(leftovers.cgroups.is_empty(), "{leftovers:?}");
    }
}
