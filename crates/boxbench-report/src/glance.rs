//! Verdicts at a glance: for each claim, a matrix (the VM side down, the container side across) with
//! the ratio and its 95% interval in each cell and the cell's finding, and one plain sentence built
//! from the same figures. The matrices open the report; the sentences are what `compare` and
//! `report` print.

use std::collections::BTreeSet;

use crate::claims::{Claim, ClaimVerdict, Evidence, Figure, Finding, Verdict};
use crate::units::{format_bytes, format_ratio};

/// One cell: a VM-side subject against a container-side reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Subject over reference, where both are numbers.
    pub ratio: Option<f64>,
    /// The ratio's 95% bootstrap interval, where both sides are launch series.
    pub ratio_ci: Option<[f64; 2]>,
    /// The cell's headline ("8.13×", or the release a VM printed).
    pub main: String,
    /// The line under it ("95% CI 5.04–10.18", the two sizes, the container's release).
    pub detail: String,
    /// Whether the pair supports the claim.
    pub finding: Finding,
}

/// One row of a matrix: a VM-side subject.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixRow {
    /// The subject ("microvm (own guest)", "debian minbase qcow2").
    pub subject: String,
    /// The kind it stands for (a VM kind or an image kind).
    pub kind: String,
    /// One cell per column; `None` where the pair was not measured.
    pub cells: Vec<Option<Cell>>,
}

/// A claim's decisive comparisons as a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// What the cells compare ("time to marker", "cgroup peak per instance", "image size", "uname -r").
    pub metric: String,
    /// The container-side references, across.
    pub columns: Vec<String>,
    /// The VM-side subjects, down.
    pub rows: Vec<MatrixRow>,
}

/// A claim at a glance: its verdict, its sentence and its matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Glance {
    /// Which claim.
    pub claim: Claim,
    /// The verdict.
    pub verdict: Verdict,
    /// The claim's figures in one plain sentence.
    pub sentence: String,
    /// The decisive comparisons; `None` when there were none.
    pub matrix: Option<Matrix>,
}

/// Every verdict at a glance, in report order.
pub fn glances(verdicts: &[ClaimVerdict]) -> Vec<Glance> {
    verdicts.iter().map(glance).collect()
}

/// One verdict at a glance.
pub fn glance(verdict: &ClaimVerdict) -> Glance {
    Glance {
        claim: verdict.claim,
        verdict: verdict.verdict.clone(),
        sentence: sentence(verdict),
        matrix: matrix(verdict),
    }
}

/// A claim's short title ("VMs are slower to start than containers").
pub fn title(claim: Claim) -> &'static str {
    match claim {
        Claim::VmSlowerToStart => "VMs are slower to start than containers",
        Claim::ContainerUsesLessMemory => "Containers use less memory than VMs",
        Claim::ImageSizes => "Container images are MB, VM images GB",
        Claim::KernelSharing => "Containers use the host's kernel, VMs their own",
        Claim::DockerClientServer => "Docker is client–server over REST",
    }
}

/// The verdict in a word or two ("holds in part": the matrix says where).
pub fn verdict_word(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Holds => "holds",
        Verdict::DoesNotHold => "does not hold",
        Verdict::HoldsOnlyFor(_) => "holds in part",
        Verdict::Inconclusive(_) => "inconclusive",
    }
}

/// The line `compare` and `report` print for a claim: its number, title, verdict and sentence.
pub fn stdout_line(glance: &Glance) -> String {
    format!(
        "Claim {} ({}): {}. {}",
        glance.claim.number(),
        title(glance.claim),
        verdict_word(&glance.verdict),
        glance.sentence
    )
}

/// The decisive comparisons of `verdict` as a matrix; `None` when there were none.
pub fn matrix(verdict: &ClaimVerdict) -> Option<Matrix> {
    let first = verdict.evidence.first()?;
    let workload = verdict.workload.as_deref();
    if verdict.claim == Claim::KernelSharing {
        return kernel_matrix(verdict, workload);
    }
    let columns = distinct(verdict.evidence.iter().map(|e| e.reference.as_str()));
    let subjects = distinct(verdict.evidence.iter().map(|e| e.subject.as_str()));
    let rows = subjects
        .iter()
        .map(|subject| {
            let of_subject: Vec<&Evidence> = verdict.evidence.iter().filter(|e| &e.subject == subject).collect();
            MatrixRow {
                subject: short_name(subject, workload),
                kind: of_subject[0].group.clone(),
                cells: columns
                    .iter()
                    .map(|column| of_subject.iter().find(|e| &e.reference == column).map(|e| ratio_cell(e)))
                    .collect(),
            }
        })
        .collect();
    Some(Matrix {
        metric: first.metric.clone(),
        columns: columns.iter().map(|c| short_name(c, workload)).collect(),
        rows,
    })
}

/// Claim 4's matrix: each VM console against each container console; a cell supports the claim when
/// the VM printed its own release and the container the host's.
fn kernel_matrix(verdict: &ClaimVerdict, workload: Option<&str>) -> Option<Matrix> {
    let (vms, containers): (Vec<&Evidence>, Vec<&Evidence>) =
        verdict.evidence.iter().partition(|e| e.vm_kind.is_some());
    if vms.is_empty() || containers.is_empty() {
        return None;
    }
    let rows = vms
        .iter()
        .map(|vm| MatrixRow {
            subject: short_name(&vm.subject, workload),
            kind: vm.group.clone(),
            cells: containers
                .iter()
                .map(|c| {
                    let finding = if vm.finding == Finding::Supports && c.finding == Finding::Supports {
                        Finding::Supports
                    } else {
                        Finding::Contradicts
                    };
                    Some(Cell {
                        ratio: None,
                        ratio_ci: None,
                        main: brief_release(&vm.subject_figure),
                        detail: format!("container: {}", brief_release(&c.subject_figure)),
                        finding,
                    })
                })
                .collect(),
        })
        .collect();
    Some(Matrix {
        metric: vms[0].metric.clone(),
        columns: containers.iter().map(|c| short_name(&c.subject, workload)).collect(),
        rows,
    })
}

/// Longest release shown at a glance: boxbench's own guest prints its whole set-up line as its
/// "release"; the detailed uname table keeps it in full.
const RELEASE_CHARS: usize = 24;

/// A release cut to [`RELEASE_CHARS`] (an ellipsis marks the cut).
fn brief(text: &str) -> String {
    match text.char_indices().nth(RELEASE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A printed release as a code span, cut by [`brief`].
fn brief_release(figure: &Figure) -> String {
    match figure {
        Figure::Text { text } => format!("`{}`", brief(text)),
        other => other.to_string(),
    }
}

fn ratio_cell(e: &Evidence) -> Cell {
    let main = e.ratio.map_or_else(|| "–".to_owned(), format_ratio);
    let detail = match e.ratio_ci {
        Some([lo, hi]) => format!("95% CI {}", ratio_range(lo, hi, format_ratio)),
        None => format!("{} vs {}", e.subject_figure, e.reference_figure),
    };
    Cell { ratio: e.ratio, ratio_ci: e.ratio_ci, main, detail, finding: e.finding }
}

/// A subject or reference without the workload every cell shares ("crun × hello" → "crun").
fn short_name(name: &str, workload: Option<&str>) -> String {
    workload.and_then(|w| name.strip_suffix(&format!(" × {w}"))).unwrap_or(name).to_owned()
}

/// Two ratios as a range written by `format` ("5.04–10.18×"); one ratio where they are equal.
fn ratio_range(lo: f64, hi: f64, format: fn(f64) -> String) -> String {
    let (lo_text, hi_text) = (format(lo), format(hi));
    if lo_text == hi_text {
        return hi_text;
    }
    format!("{}–{hi_text}", lo_text.trim_end_matches('×'))
}

/// A ratio rounded for prose: two significant figures, no trailing noise ("40×", "5.0×", "0.25×").
fn rounded_ratio(ratio: f64) -> String {
    if ratio >= 10.0 {
        format!("{ratio:.0}×")
    } else if ratio >= 1.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.2}×")
    }
}

/// Each item once, in order of first appearance.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// Names joined for prose: "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The claim's figures in one plain sentence, from the decisive comparisons.
pub fn sentence(verdict: &ClaimVerdict) -> String {
    if let Verdict::Inconclusive(why) = &verdict.verdict {
        return format!("On this host the data cannot decide: {why}.");
    }
    if verdict.evidence.is_empty() {
        return "On this host nothing was measured that bears on this claim.".to_owned();
    }
    match verdict.claim {
        Claim::VmSlowerToStart => {
            let metric = &verdict.evidence[0].metric;
            let phrase = if metric == "launch to exit" { "from launch to exit" } else { "to reach its marker" };
            let opening = format!("On this host, {phrase},");
            let phrasing = Phrasing {
                opening: &opening,
                verb: "took",
                relation: ["as long as", "as long"],
                words: ["longer", "shorter"],
            };
            ratio_sentence(verdict, &phrasing)
        }
        Claim::ContainerUsesLessMemory => ratio_sentence(
            verdict,
            &Phrasing {
                opening: "On this host, by cgroup peak per instance,",
                verb: "used",
                relation: ["the memory of", "the memory"],
                words: ["more", "less"],
            },
        ),
        Claim::ImageSizes => image_sentence(verdict),
        Claim::KernelSharing => kernel_sentence(verdict),
        Claim::DockerClientServer => crate::docker_split::sentence(verdict),
    }
}

/// How a ratio claim is put into words.
struct Phrasing<'a> {
    /// "On this host, to reach its marker,".
    opening: &'a str,
    /// "took".
    verb: &'a str,
    /// Before the references ("as long as"), and without them ("as long").
    relation: [&'a str; 2],
    /// A pair that supports the claim, and one that contradicts it ("longer", "shorter").
    words: [&'a str; 2],
}

/// "{opening} {kind} {verb} {range} {relation} {references} ({tally}); {kind} …." per VM kind: the
/// range spans the 95% intervals (or the ratios, where there is no interval) of the kind's cells.
/// Where every kind was compared with the same several containers, they are named once, up front.
fn ratio_sentence(verdict: &ClaimVerdict, phrasing: &Phrasing) -> String {
    let workload = verdict.workload.as_deref();
    let groups = distinct(verdict.evidence.iter().map(|e| e.group.as_str()));
    let references_of = |group: &str| -> Vec<String> {
        distinct(verdict.evidence.iter().filter(|e| e.group == group).map(|e| e.reference.as_str()))
            .iter()
            .map(|r| short_name(r, workload))
            .collect()
    };
    let shared = references_of(groups[0]);
    let named_once = shared.len() > 1 && groups.iter().all(|g| references_of(g) == shared);
    let mut clauses = Vec::new();
    for group in &groups {
        let rows: Vec<&Evidence> = verdict.evidence.iter().filter(|e| e.group == *group).collect();
        let bounds: Vec<[f64; 2]> =
            rows.iter().filter_map(|e| e.ratio_ci.or_else(|| e.ratio.map(|r| [r, r]))).collect();
        let range = if bounds.is_empty() {
            "an unknown multiple".to_owned()
        } else {
            let lo = bounds.iter().map(|b| b[0]).fold(f64::INFINITY, f64::min);
            let hi = bounds.iter().map(|b| b[1]).fold(f64::NEG_INFINITY, f64::max);
            ratio_range(lo, hi, rounded_ratio)
        };
        let relation = if named_once {
            phrasing.relation[1].to_owned()
        } else {
            format!("{} {}", phrasing.relation[0], and_list(&references_of(group)))
        };
        clauses.push(format!(
            "{} {} {range} {relation} ({})",
            a_kind(group),
            phrasing.verb,
            tally(&rows, phrasing.words, workload)
        ));
    }
    let against = if named_once { format!(" against {}:", and_list(&shared)) } else { String::new() };
    format!("{}{against} {}.", phrasing.opening, clauses.join("; "))
}

/// How a kind's pairs came out, naming the containers where the findings differ: "longer than all 2
/// at 95% confidence", "95% confidence: longer than container; shorter than crun".
fn tally(rows: &[&Evidence], [more, less]: [&str; 2], workload: Option<&str>) -> String {
    let findings = [
        (Finding::Supports, format!("{more} than")),
        (Finding::Contradicts, format!("{less} than")),
        (Finding::Comparable, "no clear difference from".to_owned()),
    ];
    if let [only] = rows {
        let word = match only.finding {
            Finding::Supports => more,
            Finding::Contradicts => less,
            Finding::Comparable => "no clear difference",
        };
        return format!("{word} at 95% confidence");
    }
    if let Some((_, words)) = findings.iter().find(|(f, _)| rows.iter().all(|e| e.finding == *f)) {
        let words = words.replace("from", "from any of").replace(" than", " than all");
        return format!("{words} {} at 95% confidence", rows.len());
    }
    let parts: Vec<String> = findings
        .iter()
        .filter_map(|(finding, words)| {
            let names: Vec<String> =
                rows.iter().filter(|e| e.finding == *finding).map(|e| short_name(&e.reference, workload)).collect();
            (!names.is_empty()).then(|| format!("{words} {}", and_list(&names)))
        })
        .collect();
    format!("95% confidence: {}", parts.join("; "))
}

/// A VM kind or image kind label as the subject of a clause ("a Linux guest under QEMU TCG emulation").
fn a_kind(label: &str) -> String {
    if label.starts_with("boxbench") { label.to_owned() } else { format!("a {}", lowercase_first(label)) }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        // Keep names ("Linux", "QEMU") as written; only a plain capitalised word is lowered.
        Some(c) if c.is_uppercase() && !text.starts_with("Linux") && !text.starts_with("QEMU") => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => text.to_owned(),
    }
}

/// Claim 3: the container images' sizes, then each VM image kind's, and how many pairs cross 1 GB.
fn image_sentence(verdict: &ClaimVerdict) -> String {
    let size_range = |figures: Vec<&Figure>| {
        let sizes: Vec<f64> = figures.iter().filter_map(|f| f.value()).collect();
        let lo = sizes.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = sizes.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if format_bytes(lo) == format_bytes(hi) {
            format_bytes(hi)
        } else {
            format!("{} to {}", format_bytes(lo), format_bytes(hi))
        }
    };
    let mut references = BTreeSet::new();
    let containers: Vec<&Figure> = verdict
        .evidence
        .iter()
        .filter(|e| references.insert(e.reference.clone()))
        .map(|e| &e.reference_figure)
        .collect();
    let mut clauses = vec![format!("On this host the container images measured {}", size_range(containers))];
    for group in distinct(verdict.evidence.iter().map(|e| e.group.as_str())) {
        let mut subjects = BTreeSet::new();
        let figures: Vec<&Figure> = verdict
            .evidence
            .iter()
            .filter(|e| e.group == group && subjects.insert(e.subject.clone()))
            .map(|e| &e.subject_figure)
            .collect();
        clauses.push(format!("{group}: {}", size_range(figures)));
    }
    let supports = verdict.evidence.iter().filter(|e| e.finding == Finding::Supports).count();
    format!(
        "{}; {supports} of {} pairs have the VM image at 1 GB or more and the container image below.",
        clauses.join("; "),
        verdict.evidence.len()
    )
}

/// Claim 4: what the containers printed (against the host's release), then each VM kind.
fn kernel_sentence(verdict: &ClaimVerdict) -> String {
    let printed = |rows: Vec<&Evidence>| {
        let texts: Vec<String> = distinct(rows.iter().filter_map(|e| match &e.subject_figure {
            Figure::Text { text } => Some(text.as_str()),
            _ => None,
        }))
        .iter()
        .map(|t| format!("`{}`", brief(t)))
        .collect();
        and_list(&texts)
    };
    let host = verdict.evidence.iter().find_map(|e| match &e.reference_figure {
        Figure::Text { text } => Some(text.clone()),
        _ => None,
    });
    let containers: Vec<&Evidence> = verdict.evidence.iter().filter(|e| e.vm_kind.is_none()).collect();
    let mut clauses = Vec::new();
    if containers.is_empty() {
        clauses.push("no container printed a release".to_owned());
    } else {
        clauses.push(format!("the containers printed {}", printed(containers)));
    }
    for group in distinct(verdict.evidence.iter().filter(|e| e.vm_kind.is_some()).map(|e| e.group.as_str())) {
        let rows: Vec<&Evidence> = verdict.evidence.iter().filter(|e| e.group == group).collect();
        clauses.push(format!("{} printed {}", a_kind(group), printed(rows)));
    }
    let host = host.map_or_else(String::new, |h| format!(" (the host runs `{h}`)"));
    format!("On this host {}{host}.", clauses.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Figure;
    use crate::schema::VmKind;

    fn pair(subject: &str, kind: VmKind, reference: &str, ratio: f64, ci: [f64; 2], finding: Finding) -> Evidence {
        Evidence {
            metric: "time to marker".into(),
            group: kind.label().into(),
            vm_kind: Some(kind),
            subject: format!("{subject} × hello"),
            subject_figure: Figure::Text { text: String::new() },
            reference: format!("{reference} × hello"),
            reference_figure: Figure::Text { text: String::new() },
            reference_group: "container".to_owned(),
            ratio: Some(ratio),
            ratio_ci: Some(ci),
            finding,
        }
    }

    fn start_time(evidence: Vec<Evidence>) -> ClaimVerdict {
        ClaimVerdict {
            claim: Claim::VmSlowerToStart,
            statement: Claim::VmSlowerToStart.statement().into(),
            verdict: Verdict::HoldsOnlyFor(vec!["x".into()]),
            rests_on: Vec::new(),
            workload: Some("hello".into()),
            evidence,
            context: Vec::new(),
            caveats: Vec::new(),
        }
    }

    fn known() -> ClaimVerdict {
        start_time(vec![
            pair("qemu-tcg (Linux, TCG)", VmKind::LinuxTcg, "crun", 50.0, [40.0, 60.0], Finding::Supports),
            pair("qemu-tcg (Linux, TCG)", VmKind::LinuxTcg, "container", 400.0, [300.0, 500.0], Finding::Supports),
            pair("microvm (own guest)", VmKind::OwnGuestFloor, "crun", 0.3, [0.25, 0.35], Finding::Contradicts),
            pair("microvm (own guest)", VmKind::OwnGuestFloor, "container", 1.1, [0.9, 1.3], Finding::Comparable),
        ])
    }

    #[test]
    fn matrix_puts_vms_down_and_containers_across_with_each_pairs_ratio_interval_and_finding() {
        let m = matrix(&known()).unwrap();
        assert_eq!(m.metric, "time to marker");
        assert_eq!(m.columns, ["crun", "container"]);
        let subjects: Vec<&str> = m.rows.iter().map(|r| r.subject.as_str()).collect();
        assert_eq!(subjects, ["qemu-tcg (Linux, TCG)", "microvm (own guest)"]);
        assert_eq!(m.rows[0].kind, VmKind::LinuxTcg.label());
        let cell = m.rows[1].cells[0].as_ref().unwrap();
        assert_eq!((cell.ratio, cell.ratio_ci, cell.finding), (Some(0.3), Some([0.25, 0.35]), Finding::Contradicts));
        assert_eq!((cell.main.as_str(), cell.detail.as_str()), ("0.30×", "95% CI 0.25–0.35×"));
        let cell = m.rows[1].cells[1].as_ref().unwrap();
        assert_eq!((cell.main.as_str(), cell.finding), ("1.10×", Finding::Comparable));
        assert_eq!(m.rows[0].cells[1].as_ref().unwrap().detail, "95% CI 300–500×");
    }

    #[test]
    fn a_pair_that_was_not_measured_is_an_empty_cell() {
        let mut v = known();
        v.evidence.remove(1);
        let m = matrix(&v).unwrap();
        assert!(m.rows[0].cells[1].is_none());
        assert!(m.rows[1].cells.iter().all(Option::is_some));
    }

    #[test]
    fn sentence_gives_each_vm_kinds_interval_against_the_containers() {
        let v = start_time(known().evidence.into_iter().filter(|e| e.reference.starts_with("crun")).collect());
        assert_eq!(
            sentence(&v),
            "On this host, to reach its marker, a Linux guest under QEMU TCG emulation took 40–60× as long as crun \
             (longer at 95% confidence); boxbench's own VMM + minimal guest (the VM floor) took 0.25–0.35× as long \
             as crun (shorter at 95% confidence)."
        );
        assert_eq!(
            sentence(&known()),
            "On this host, to reach its marker, against crun and container: a Linux guest under QEMU TCG emulation \
             took 40–500× as long (longer than all 2 at 95% confidence); boxbench's own VMM + minimal guest (the VM \
             floor) took 0.25–1.3× as long (95% confidence: shorter than crun; no clear difference from container)."
        );
    }

    #[test]
    fn a_long_release_is_cut_at_a_glance() {
        assert_eq!(brief("6.1.0-tiny"), "6.1.0-tiny");
        assert_eq!(brief("boxbench-guest cpus=1 mem_mib=256 initrd_bytes=0"), "boxbench-guest cpus=1 me…");
        assert_eq!(brief(&"é".repeat(30)), format!("{}…", "é".repeat(24)));
    }

    #[test]
    fn an_inconclusive_claim_says_what_is_missing() {
        let mut v = known();
        v.verdict = Verdict::Inconclusive("no VM series".into());
        v.evidence.clear();
        assert_eq!(sentence(&v), "On this host the data cannot decide: no VM series.");
        assert!(matrix(&v).is_none());
        assert_eq!(
            stdout_line(&glance(&v)),
            "Claim 1 (VMs are slower to start than containers): inconclusive. On this host the data cannot \
             decide: no VM series."
        );
    }
}
