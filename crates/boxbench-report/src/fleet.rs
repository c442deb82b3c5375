//! The fleet view of several hosts' results (`deploy/ansible/fleet.yml` collects them): the runs of
//! one host merged into one column by its host id, the hosts ordered and grouped by what decides
//! their figures (KVM flavour, nesting, cgroup mode, CPU model), where each claim holds and where it
//! does not, and the hosts that sent no usable results, each with why.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::claims::{Claim, ClaimVerdict, Verdict};
use crate::document::Document;
use crate::schema::{MultiHost, Results};

/// A fleet argument that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A `--missing` value is not `HOST=REASON`.
    #[error("--missing {0:?}: expected HOST=REASON")]
    MissingSpec(String),
}

/// A host of the fleet that produced no usable results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingHost {
    /// The host's name (its inventory name, or the directory of the file that could not be read).
    pub host: String,
    /// Why: the play's error, or why its file could not be read.
    pub reason: String,
}

impl MissingHost {
    /// Parses `HOST=REASON` (as `boxbench report --missing` takes it).
    pub fn parse(spec: &str) -> Result<Self, FleetError> {
        match spec.split_once('=') {
            Some((host, reason)) if !host.trim().is_empty() => {
                Ok(Self { host: host.trim().to_owned(), reason: one_line(reason) })
            }
            _ => Err(FleetError::MissingSpec(spec.to_owned())),
        }
    }

    /// A results file that could not be read, named by its directory (`reports/fleet/<host>/`).
    pub fn unreadable(path: &Path, why: &str) -> Self {
        let host = path
            .parent()
            .and_then(Path::file_name)
            .map_or_else(|| path.display().to_string(), |d| d.to_string_lossy().into_owned());
        Self { host, reason: one_line(why) }
    }
}

/// `text` on one line: a report's list item and the play's error line both need it so.
fn one_line(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() { "no reason given".to_owned() } else { words.join(" ") }
}

/// What decides a host's figures: hosts alike in all of it are expected to agree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostGroup {
    /// The KVM flavour's label, with the emulated-CPU mark of an svm-host L1.
    pub kvm: String,
    /// Whether the host is itself a VM.
    pub nested: bool,
    /// The cgroup mode.
    pub cgroups: String,
    /// The CPU model.
    pub cpu_model: String,
}

impl HostGroup {
    /// The group of the host `results` come from.
    pub fn of(results: &Results) -> Self {
        let facts = &results.host.facts;
        let kvm = facts.kvm.label().to_owned() + if facts.cpu_emulated { " on a CPU QEMU emulates" } else { "" };
        Self {
            kvm,
            nested: results.host.nested,
            cgroups: facts.cgroup_mode.map_or_else(|| "none".to_owned(), |m| m.to_string()),
            cpu_model: facts.cpu_model.clone(),
        }
    }
}

/// Group letters: A, B, …, Z, then AA, AB, ….
fn group_letter(index: usize) -> String {
    let letter = |i: usize| char::from(b'A' + u8::try_from(i % 26).unwrap_or(0));
    if index < 26 { letter(index).to_string() } else { format!("{}{}", letter(index / 26 - 1), letter(index)) }
}

/// Merges the runs of each host (same non-empty host id) into one results document, the runs in the
/// order they were made, and orders the hosts by group (hosts of one group keep the order given).
/// Results without a host id (written before it existed) are never merged.
pub fn merge_runs(results: Vec<Results>) -> Vec<Results> {
    let mut by_host: Vec<Vec<Results>> = Vec::new();
    for r in results {
        let id = &r.host.facts.host_id;
        match by_host.iter_mut().find(|runs| !id.is_empty() && &runs[0].host.facts.host_id == id) {
            Some(runs) => runs.push(r),
            None => by_host.push(vec![r]),
        }
    }
    let mut merged: Vec<Results> = by_host.into_iter().filter_map(merge_host_runs).collect();
    merged.sort_by_cached_key(HostGroup::of);
    merged
}

/// One host's runs as one document: the series of equal settings pool their launches (statistics
/// recomputed over all of them); images, density steps and host facts are the latest run's.
fn merge_host_runs(mut runs: Vec<Results>) -> Option<Results> {
    runs.sort_by(|a, b| a.generated_at.cmp(&b.generated_at));
    let times: Vec<String> = runs.iter().map(|r| r.generated_at.clone()).collect();
    let mut merged = runs.into_iter().reduce(|mut earlier, later| {
        absorb(&mut earlier, later);
        earlier
    })?;
    if times.len() > 1 {
        merged.notes.push(format!(
            "{} runs of this host (host id `{}`) merged: {}",
            times.len(),
            merged.host.facts.host_id,
            times.join(", ")
        ));
    }
    Some(merged)
}

/// Adds a later run of the same host to `merged`.
fn absorb(merged: &mut Results, later: Results) {
    for series in later.series {
        match merged.series.iter_mut().find(|s| s.name() == series.name()) {
            Some(s) if s.settings == series.settings && s.command == series.command => {
                let mut records = std::mem::take(&mut s.records);
                records.extend(series.records);
                let mut pooled = crate::schema::Series::new(s.backend.clone(), s.workload.clone(), s.vm_kind, records);
                pooled.command = s.command.take();
                pooled.settings = std::mem::take(&mut s.settings);
                *s = pooled;
            }
            Some(s) => {
                merged.notes.push(format!(
                    "{}: the run of {} measured it with other settings; only that later run's launches are shown",
                    series.name(),
                    later.generated_at
                ));
                *s = series;
            }
            None => merged.series.push(series),
        }
    }
    for image in later.images {
        match merged.images.iter_mut().find(|i| i.name == image.name) {
            Some(i) => *i = image,
            None => merged.images.push(image),
        }
    }
    for step in later.density {
        let same = |d: &&mut crate::schema::DensityResult| {
            d.backend == step.backend && d.vm_kind == step.vm_kind && d.workload == step.workload
        };
        match merged.density.iter_mut().find(same) {
            Some(d) => *d = step,
            None => merged.density.push(step),
        }
    }
    for note in later.notes {
        if !merged.notes.contains(&note) {
            merged.notes.push(note);
        }
    }
    merged.generated_at = later.generated_at;
    merged.host = later.host;
    merged.settings = later.settings;
}

/// The groups of `hosts` (already ordered by group) with the indices of their hosts.
pub fn groups(hosts: &[Results]) -> Vec<(HostGroup, Vec<usize>)> {
    let mut groups: Vec<(HostGroup, Vec<usize>)> = Vec::new();
    for (i, r) in hosts.iter().enumerate() {
        let group = HostGroup::of(r);
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, members)) => members.push(i),
            None => groups.push((group, vec![i])),
        }
    }
    groups
}

/// How a verdict counts in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Holds,
    InPart,
    DoesNotHold,
    Inconclusive,
}

impl Outcome {
    fn of(verdict: &Verdict) -> Self {
        match verdict {
            Verdict::Holds => Outcome::Holds,
            Verdict::HoldsOnlyFor(_) => Outcome::InPart,
            Verdict::DoesNotHold => Outcome::DoesNotHold,
            Verdict::Inconclusive(_) => Outcome::Inconclusive,
        }
    }
}

/// The fleet's sections of a comparison report: the host groups, where each claim holds, and the
/// missing hosts. `columns` are the hosts' column names, `verdicts` each host's claim verdicts.
pub fn sections(doc: &mut Document, hosts: &MultiHost, columns: &[String], verdicts: &[Vec<ClaimVerdict>]) {
    let groups = groups(&hosts.hosts);
    let mut letter_of = vec![String::new(); hosts.hosts.len()];
    doc.heading(2, "Host groups");
    doc.paragraph(
        "Hosts alike in what decides the figures (KVM flavour, whether the host is itself a VM, cgroup mode, \
         CPU model) form a group; the columns below are ordered by group.",
    );
    let rows = groups
        .iter()
        .enumerate()
        .map(|(g, (group, members))| {
            for &i in members {
                letter_of[i] = group_letter(g);
            }
            vec![
                group_letter(g),
                group.kvm.clone(),
                if group.nested { "yes" } else { "no" }.to_owned(),
                group.cgroups.clone(),
                group.cpu_model.clone(),
                members.iter().map(|&i| columns[i].clone()).collect::<Vec<_>>().join(", "),
            ]
        })
        .collect();
    doc.table(&["group", "KVM", "nested (host is a VM)", "cgroups", "CPU", "hosts"], rows);

    doc.heading(2, "Where each claim holds");
    let host_name = |i: usize| format!("{} ({})", columns[i], letter_of[i]);
    let rows = Claim::ALL
        .iter()
        .enumerate()
        .map(|(c, claim)| {
            let outcomes: Vec<Outcome> = verdicts.iter().map(|v| Outcome::of(&v[c].verdict)).collect();
            let listed = |want: Outcome| {
                let names: Vec<String> = (0..outcomes.len()).filter(|&i| outcomes[i] == want).map(host_name).collect();
                if names.is_empty() { "–".to_owned() } else { names.join(", ") }
            };
            vec![
                format!("{}. {}", claim.number(), claim_title(*claim)),
                summary_line(&outcomes, &groups),
                listed(Outcome::Holds),
                listed(Outcome::InPart),
                listed(Outcome::DoesNotHold),
                listed(Outcome::Inconclusive),
            ]
        })
        .collect();
    doc.table(&["claim", "summary", "holds", "holds in part", "does not hold", "inconclusive"], rows);

    if !hosts.missing.is_empty() {
        doc.heading(2, "Missing hosts");
        doc.paragraph(format!(
            "{} host{} sent no usable results; the figures above are without {}:",
            hosts.missing.len(),
            if hosts.missing.len() == 1 { "" } else { "s" },
            if hosts.missing.len() == 1 { "it" } else { "them" }
        ));
        doc.list(hosts.missing.iter().map(|m| format!("**{}**: {}", m.host, m.reason)).collect());
    }
}

/// A claim's short name for the summary table (its full statement heads the claims table).
fn claim_title(claim: Claim) -> &'static str {
    match claim {
        Claim::VmSlowerToStart => "a VM starts slower",
        Claim::ContainerUsesLessMemory => "a container uses less memory",
        Claim::ImageSizes => "container images MB, VM images GB",
        Claim::KernelSharing => "a container shares the host's kernel",
        Claim::DockerClientServer => "docker is client–server over REST",
    }
}

/// "holds on all 3 hosts", or how many hosts it holds on and which groups agree throughout.
fn summary_line(outcomes: &[Outcome], groups: &[(HostGroup, Vec<usize>)]) -> String {
    let total = outcomes.len();
    let count = |want: Outcome| outcomes.iter().filter(|&&o| o == want).count();
    let whole_groups = |want: Outcome| -> Vec<String> {
        groups
            .iter()
            .enumerate()
            .filter(|(_, (_, members))| members.iter().all(|&i| outcomes[i] == want))
            .map(|(g, _)| group_letter(g))
            .collect()
    };
    for (want, words) in [
        (Outcome::Holds, "holds on"),
        (Outcome::DoesNotHold, "does not hold on"),
        (Outcome::Inconclusive, "inconclusive on"),
        (Outcome::InPart, "holds in part on"),
    ] {
        if count(want) == total {
            return match (want, total) {
                (_, 1) => format!("{words} the one host"),
                (Outcome::DoesNotHold, _) => format!("does not hold on any of the {total} hosts"),
                _ => format!("{words} all {total} hosts"),
            };
        }
    }
    let mut parts = Vec::new();
    for (want, words) in [
        (Outcome::Holds, "holds"),
        (Outcome::InPart, "holds in part"),
        (Outcome::DoesNotHold, "does not hold"),
        (Outcome::Inconclusive, "inconclusive"),
    ] {
        let n = count(want);
        if n == 0 {
            continue;
        }
        let groups = whole_groups(want);
        let in_groups =
            if groups.is_empty() { String::new() } else { format!(" (all of group {})", groups.join(", ")) };
        parts.push(format!("{words} on {n} of {total}{in_groups}"));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_host_specs_are_host_equals_one_line_reason() {
        let m = MissingHost::parse("web-1=unreachable: ssh: connect to host 10.0.0.1\n port 22: timed out").unwrap();
        assert_eq!(m.host, "web-1");
        assert_eq!(m.reason, "unreachable: ssh: connect to host 10.0.0.1 port 22: timed out");
        assert_eq!(MissingHost::parse("h=").unwrap().reason, "no reason given");
        assert!(matches!(MissingHost::parse("no reason"), Err(FleetError::MissingSpec(_))));
        assert!(matches!(MissingHost::parse("=why"), Err(FleetError::MissingSpec(_))));
    }

    #[test]
    fn an_unreadable_file_is_named_by_its_host_directory() {
        let m = MissingHost::unreadable(Path::new("reports/fleet/db-2/results.json"), "schema_version 7");
        assert_eq!((m.host.as_str(), m.reason.as_str()), ("db-2", "schema_version 7"));
    }

    #[test]
    fn group_letters_go_past_z() {
        assert_eq!(group_letter(0), "A");
        assert_eq!(group_letter(25), "Z");
        assert_eq!(group_letter(26), "AA");
        assert_eq!(group_letter(27), "AB");
    }

    #[test]
    fn summary_names_counts_and_whole_groups() {
        let g = |members: Vec<usize>| {
            (HostGroup::of(&Results::new(String::new(), test_host(), Default::default())), members)
        };
        let groups = vec![g(vec![0, 1]), g(vec![2])];
        use Outcome::*;
        assert_eq!(summary_line(&[Holds, Holds, Holds], &groups), "holds on all 3 hosts");
        assert_eq!(summary_line(&[DoesNotHold; 3], &groups), "does not hold on any of the 3 hosts");
        assert_eq!(summary_line(&[Inconclusive], &[g(vec![0])]), "inconclusive on the one host");
        assert_eq!(
            summary_line(&[Holds, Holds, DoesNotHold], &groups),
            "holds on 2 of 3 (all of group A); does not hold on 1 of 3 (all of group B)"
        );
        assert_eq!(
            summary_line(&[Holds, Inconclusive, DoesNotHold], &groups),
            "holds on 1 of 3; does not hold on 1 of 3 (all of group B); inconclusive on 1 of 3"
        );
    }

    fn test_host() -> crate::schema::HostSection {
        serde_json::from_value(serde_json::json!({
            "label": "h", "nested": false,
            "facts": {"kernel": "6.1.0", "cpu_model": "CPU", "cpus": 2, "memory_bytes": 1, "kvm": "vmx",
                      "cgroup_mode": "unified", "root": true, "load_average": 0.0},
            "load_before": {"one": 0.0, "five": 0.0, "fifteen": 0.0},
            "load_after": {"one": 0.0, "five": 0.0, "fifteen": 0.0}
        }))
        .unwrap()
    }
}
