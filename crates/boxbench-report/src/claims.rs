//! The seed claims of container tutorials as testable statements, and their verdicts on one host's
//! results.
//!
//! Each verdict is derived from the data only: a claim is judged by pairing every VM figure with
//! every container figure (or every VM image with every container image, every `uname` console with
//! the host's kernel), deciding for each pair whether it supports the claim, and then asking for which
//! VM kinds (or image kinds) every pair supports it. A pair of launch series is "comparable" when the
//! 95% bootstrap interval of the ratio of their medians contains 1 (neither supports nor contradicts
//! a claim that one is bigger), "supports" or "contradicts" when the whole interval lies on one side;
//! figures measured once (image sizes, the density step) have no interval and are comparable within
//! [`MARGIN`]. Where the host makes a
//! figure unrepresentative (kvm_pvm, TCG, nesting, a loaded machine, failed or few launches) the
//! verdict carries a caveat saying so.

use std::fmt;

use boxbench_core::host::KvmFlavour;
use boxbench_core::stats::Summary;
use serde::{Deserialize, Serialize};

use crate::schema::{ImageKind, Results, Series, VmKind};
use crate::units::{Unit, format_bytes, format_median, format_ratio};

/// Two single measurements (no interval: image sizes, density) whose ratio stays below this factor
/// (either way) are comparable, not different.
pub const MARGIN: f64 = 1.10;

/// The size from which an image "reaches GB": 10^9 bytes.
pub const GB: u64 = 1_000_000_000;

/// The group of a container backend that runs an application kernel in user space (gVisor): a third
/// kind beside containers on the host's kernel and VMs, shown for context, never deciding a verdict.
pub const APPLICATION_KERNEL: &str = "application kernel in user space (gVisor)";

/// Below this many launches a series' median is flagged as resting on few samples.
pub const FEW_LAUNCHES: usize = 5;

/// The claims, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    /// (1) A VM is slower to create and boot than a container.
    VmSlowerToStart,
    /// (2) A container uses less memory than a VM.
    ContainerUsesLessMemory,
    /// (3) Container images are MB while VM images reach GB because they carry an OS.
    ImageSizes,
    /// (4) A container uses the host's kernel, a VM its own.
    KernelSharing,
    /// (7) Docker is client–server over REST; judged only where the run measured it
    /// ([`crate::docker_split`]), so it is not in [`Claim::ALL`].
    DockerClientServer,
}

impl Claim {
    /// Every claim, in report order.
    pub const ALL: [Claim; 4] =
        [Claim::VmSlowerToStart, Claim::ContainerUsesLessMemory, Claim::ImageSizes, Claim::KernelSharing];

    /// The claim's number in the report (1–4).
    pub fn number(self) -> usize {
        match self {
            Claim::VmSlowerToStart => 1,
            Claim::ContainerUsesLessMemory => 2,
            Claim::ImageSizes => 3,
            Claim::KernelSharing => 4,
            Claim::DockerClientServer => 7,
        }
    }

    /// The claim as a testable statement.
    pub fn statement(self) -> &'static str {
        match self {
            Claim::VmSlowerToStart => {
                "A VM is slower to create and boot than a container: its median time from launch to the \
                 workload's marker is longer (launch to exit is shown beside it)."
            }
            Claim::ContainerUsesLessMemory => {
                "A container uses less memory than a VM: its median per-instance cgroup peak is smaller."
            }
            Claim::ImageSizes => {
                "Container images are MB while VM images reach GB because they carry an OS: every container \
                 image is below 1 GB (10^9 bytes) and a VM image is at least 1 GB."
            }
            Claim::DockerClientServer => crate::docker_split::STATEMENT,
            Claim::KernelSharing => {
                "A container uses the host's kernel, a VM its own: `uname -r` in a container prints the \
                 host's release, in a VM something else."
            }
        }
    }
}

/// What the data says about a claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    /// Every comparison supports the claim.
    Holds,
    /// No comparison supports the claim.
    DoesNotHold,
    /// The claim holds for these VM or image kinds (and, where said, only against some containers).
    HoldsOnlyFor(Vec<String>),
    /// The data cannot decide; the reason says what is missing.
    Inconclusive(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Holds => f.write_str("holds"),
            Verdict::DoesNotHold => f.write_str("does not hold"),
            Verdict::HoldsOnlyFor(which) => write!(f, "holds only for {}", which.join("; ")),
            Verdict::Inconclusive(why) => write!(f, "inconclusive: {why}"),
        }
    }
}

/// Whether one comparison supports the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// The figures go the way the claim says.
    Supports,
    /// They go the other way.
    Contradicts,
    /// The ratio's interval contains 1 (single measurements: within [`MARGIN`] of each other).
    Comparable,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Finding::Supports => "supports",
            Finding::Contradicts => "contradicts",
            Finding::Comparable => "comparable",
        })
    }
}

/// One figure behind a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Figure {
    /// Statistics over launches.
    Summary {
        /// The unit of the statistics.
        unit: Unit,
        /// n, median, p99, min, max.
        summary: Summary,
    },
    /// A single measured size.
    Bytes {
        /// The size.
        bytes: u64,
    },
    /// A text the instance printed.
    Text {
        /// The text.
        text: String,
    },
}

impl Figure {
    /// The number compared (a median, a size), if the figure is one.
    pub fn value(&self) -> Option<f64> {
        match self {
            Figure::Summary { summary, .. } => Some(summary.median),
            Figure::Bytes { bytes } => Some(*bytes as f64),
            Figure::Text { .. } => None,
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Figure::Summary { unit, summary } => f.write_str(&format_median(*unit, summary)),
            Figure::Bytes { bytes } => f.write_str(&format_bytes(*bytes as f64)),
            Figure::Text { text } => write!(f, "`{text}`"),
        }
    }
}

/// One comparison behind a verdict: a VM-side subject against a container-side reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What is compared ("time to marker", "cgroup peak", "image size", "uname -r").
    pub metric: String,
    /// The VM kind, image kind or "container" the subject stands for (how the verdict groups rows).
    pub group: String,
    /// The VM kind of the subject, if it is a VM series.
    pub vm_kind: Option<VmKind>,
    /// The subject ("qemu-tcg × hello", "debian minbase qcow2").
    pub subject: String,
    /// The subject's figure.
    pub subject_figure: Figure,
    /// The reference ("container × hello", "host kernel").
    pub reference: String,
    /// The reference's figure.
    pub reference_figure: Figure,
    /// The container kind the reference stands for ("container", or a system container), so a
    /// verdict is given per kind on that side too.
    #[serde(default)]
    pub reference_group: String,
    /// Subject over reference, where both are numbers.
    pub ratio: Option<f64>,
    /// The ratio's 95% bootstrap interval, where both sides are launch series.
    #[serde(default)]
    pub ratio_ci: Option<[f64; 2]>,
    /// Whether this comparison supports the claim.
    pub finding: Finding,
}

/// A claim's verdict and everything behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimVerdict {
    /// Which claim.
    pub claim: Claim,
    /// The testable statement.
    pub statement: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The VM kinds the verdict rests on.
    pub rests_on: Vec<VmKind>,
    /// The workload whose series were compared, where series were.
    pub workload: Option<String>,
    /// The comparisons that decide the verdict.
    pub evidence: Vec<Evidence>,
    /// Further comparisons shown for context (they do not decide the verdict).
    pub context: Vec<Evidence>,
    /// Why a figure may not represent other hosts, or rests on little data.
    pub caveats: Vec<String>,
}

/// Judges every claim on `results`.
pub fn judge(results: &Results) -> Vec<ClaimVerdict> {
    let mut verdicts =
        vec![judge_start_time(results), judge_memory(results), judge_image_sizes(results), judge_kernel(results)];
    // Claim 7 where the run split a docker run (compare does where docker runs).
    verdicts.extend(crate::docker_split::judge(results));
    verdicts
}

/// A summary a series is compared by, and the metric's name.
/// A series figure ([`Series::figure`]'s name) and what the report calls it.
type Metric = (&'static str, &'static str);

/// A figure of one side of a comparison.
#[derive(Debug, Clone)]
struct Candidate<'a> {
    name: String,
    group: String,
    vm_kind: Option<VmKind>,
    figure: Figure,
    series: Option<&'a Series>,
    /// Every launch's value, for intervals (empty for a single measurement).
    samples: Vec<f64>,
}

impl Candidate<'_> {
    fn value(&self) -> f64 {
        self.figure.value().unwrap_or(f64::NAN)
    }
}

/// Which side of a claim a series or image is on.
fn split<'a>(candidates: Vec<Candidate<'a>>) -> (Vec<Candidate<'a>>, Vec<Candidate<'a>>) {
    candidates.into_iter().partition(|c| c.vm_kind.is_some())
}

/// The series of `workload`, as candidates for their figure `name` (series without it are left out).
fn series_candidates<'a>(results: &'a Results, workload: &str, unit: Unit, name: &str) -> Vec<Candidate<'a>> {
    results
        .series
        .iter()
        .filter(|s| s.workload == workload && !results.is_application_kernel(&s.backend))
        .filter_map(|s| {
            let summary = s.figure(name)?;
            Some(Candidate {
                name: s.name(),
                group: s.kind_label().to_owned(),
                vm_kind: s.vm_kind,
                figure: Figure::Summary { unit, summary },
                series: Some(s),
                samples: s.samples(name),
            })
        })
        .collect()
}

/// The application-kernel series of `workload` (see [`APPLICATION_KERNEL`]), as candidates for the
/// summary `get` picks.
fn application_kernel_candidates<'a>(
    results: &'a Results,
    workload: &str,
    unit: Unit,
    name: &str,
) -> Vec<Candidate<'a>> {
    results
        .series
        .iter()
        .filter(|s| s.workload == workload && results.is_application_kernel(&s.backend))
        .filter_map(|s| {
            Some(Candidate {
                name: s.name(),
                group: APPLICATION_KERNEL.to_owned(),
                vm_kind: None,
                figure: Figure::Summary { unit, summary: s.figure(name)? },
                series: Some(s),
                samples: s.samples(name),
            })
        })
        .collect()
}

/// Context rows placing the application kernels between the two kinds: each against every container,
/// and every VM against each.
fn application_kernel_context(
    metric: &str,
    kernels: &[Candidate],
    vms: &[Candidate],
    containers: &[Candidate],
) -> Vec<Evidence> {
    let mut rows = pair_up(metric, kernels, containers, vm_larger);
    rows.extend(pair_up(metric, vms, kernels, vm_larger));
    rows
}

/// The first workload of `preferred` (then any other) that has both a VM and a container series
/// with the figure `get` picks.
fn comparable_workload(
    results: &Results,
    preferred: &[&str],
    get: &dyn Fn(&Series) -> Option<Summary>,
) -> Option<String> {
    let has = |workload: &str, vm: bool| {
        results.series.iter().any(|s| {
            s.workload == workload
                && s.vm_kind.is_some() == vm
                && !results.is_application_kernel(&s.backend)
                && get(s).is_some()
        })
    };
    let others = results.series.iter().map(|s| s.workload.as_str());
    preferred.iter().copied().chain(others).find(|w| has(w, true) && has(w, false)).map(str::to_owned)
}

/// Every VM candidate against every container candidate; `finding` judges (vm value, container value,
/// the interval of their ratio where both are launch series).
fn pair_up(
    metric: &str,
    vms: &[Candidate],
    containers: &[Candidate],
    finding: impl Fn(f64, f64, Option<[f64; 2]>) -> Finding,
) -> Vec<Evidence> {
    vms.iter()
        .flat_map(|vm| {
            containers.iter().map(|c| {
                let (v, r) = (vm.value(), c.value());
                let ratio_ci = boxbench_core::bootstrap::ratio_interval(&vm.samples, &c.samples);
                Evidence {
                    metric: metric.to_owned(),
                    group: vm.group.clone(),
                    vm_kind: vm.vm_kind,
                    subject: vm.name.clone(),
                    subject_figure: vm.figure.clone(),
                    reference: c.name.clone(),
                    reference_figure: c.figure.clone(),
                    reference_group: c.group.clone(),
                    ratio: (r > 0.0).then_some(v / r),
                    ratio_ci,
                    finding: finding(v, r, ratio_ci),
                }
            })
        })
        .collect()
}

/// "Bigger": the claim says the VM figure is the larger one. With the interval of the ratio (VM over
/// container), the pair supports it when the whole interval is above 1, contradicts it when the whole
/// interval is below 1, and is comparable when it contains 1; a single measurement uses [`MARGIN`].
fn vm_larger(vm: f64, container: f64, ratio_ci: Option<[f64; 2]>) -> Finding {
    if let Some(interval) = ratio_ci {
        return larger_by_interval(interval);
    }
    if vm > container * MARGIN {
        Finding::Supports
    } else if container > vm * MARGIN {
        Finding::Contradicts
    } else {
        Finding::Comparable
    }
}

/// The finding on "the subject is larger" from the 95% interval `[lo, hi]` of subject / reference:
/// supports when the interval lies wholly above 1, contradicts when wholly below, comparable when it
/// contains 1 (an edge at exactly 1 included).
pub fn larger_by_interval([lo, hi]: [f64; 2]) -> Finding {
    if lo > 1.0 {
        Finding::Supports
    } else if hi < 1.0 {
        Finding::Contradicts
    } else {
        Finding::Comparable
    }
}

/// The verdict over decisive `evidence`: holds when every row supports the claim, does not hold when
/// none does, else holds only for the groups whose rows all support it, or within a group for the
/// subjects whose rows all do, or for a subject against the references it beats.
fn verdict_by_group(evidence: &[Evidence]) -> Verdict {
    if evidence.iter().all(|e| e.finding == Finding::Supports) {
        return Verdict::Holds;
    }
    if evidence.iter().all(|e| e.finding != Finding::Supports) {
        return Verdict::DoesNotHold;
    }
    // Where the containers are of several kinds (application and system containers), each VM kind
    // is judged against each container kind.
    let per_container_kind = distinct(evidence.iter().map(|e| e.reference_group.as_str())).len() > 1;
    let group_of = |e: &Evidence| {
        if per_container_kind { format!("{} against {}", e.group, e.reference_group) } else { e.group.clone() }
    };
    let keys: Vec<String> = evidence.iter().map(group_of).collect();
    let groups = distinct(keys.iter().map(String::as_str));
    let mut holds_for = Vec::new();
    for group in groups {
        let rows: Vec<&Evidence> = evidence.iter().filter(|e| group_of(e) == group).collect();
        if rows.iter().all(|e| e.finding == Finding::Supports) {
            holds_for.push(group.to_owned());
            continue;
        }
        let subjects = distinct(rows.iter().map(|e| e.subject.as_str()));
        for subject in &subjects {
            // One subject stands for its whole group: name the group, as the claim talks about kinds.
            let name = if subjects.len() == 1 { group.to_owned() } else { format!("{subject} ({group})") };
            let subject_rows: Vec<&&Evidence> = rows.iter().filter(|e| e.subject == *subject).collect();
            if subject_rows.iter().all(|e| e.finding == Finding::Supports) {
                holds_for.push(name);
                continue;
            }
            let supported: Vec<&str> = distinct(subject_rows.iter().map(|e| e.reference.as_str()))
                .into_iter()
                .filter(|r| subject_rows.iter().filter(|e| e.reference == *r).all(|e| e.finding == Finding::Supports))
                .collect();
            if !supported.is_empty() {
                holds_for.push(format!("{name}, against {} only", supported.join(", ")));
            }
        }
    }
    Verdict::HoldsOnlyFor(holds_for)
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

/// The VM kinds in `evidence`, in [`VmKind::ALL`] order.
fn kinds_of(evidence: &[Evidence]) -> Vec<VmKind> {
    VmKind::ALL.into_iter().filter(|k| evidence.iter().any(|e| e.vm_kind == Some(*k))).collect()
}

/// What about this host and these series makes a figure unrepresentative or thin.
fn caveats(results: &Results, kinds: &[VmKind], series: &[&Series], timing: bool) -> Vec<String> {
    let mut caveats = Vec::new();
    let host = &results.host;
    let facts = &host.facts;
    let kvm_guests = kinds.iter().any(|k| !k.is_tcg());
    if timing && kvm_guests && facts.kvm == KvmFlavour::Pvm {
        caveats.push(
            "KVM on this host is kvm_pvm (software nested): guest kernel-mode code is emulated, so VM start \
             times here are slower than under VMX/SVM hardware virtualisation."
                .to_owned(),
        );
    }
    if kinds.iter().any(|k| k.is_tcg()) {
        caveats.push(if timing {
            "The Linux guest figures come from QEMU's TCG emulator (every guest instruction translated): \
             far slower than a hardware-virtualised VM; they bound a VM from above, not a typical one."
                .to_owned()
        } else {
            "The Linux guest runs under QEMU's TCG emulator, whose translation cache adds to QEMU's memory.".to_owned()
        });
    }
    if kinds.contains(&VmKind::LinuxSvmEmulated) || facts.cpu_emulated {
        caveats.push(if timing {
            "This host's CPU is emulated by QEMU's TCG (an L1 of `boxbench svm-host`, with SVM emulated too): \
             absolute times are those of an emulator, where pure computation runs 20–30× slower than native; \
             ratios between VMMs booting the same guest on it compare the VMMs' own work."
                .to_owned()
        } else {
            "This host's CPU is emulated by QEMU's TCG (an L1 of `boxbench svm-host`); memory figures are \
             those of the same programs on real hardware."
                .to_owned()
        });
    }
    if timing && host.nested {
        caveats.push("This host is itself a virtual machine: its VMs are nested.".to_owned());
    }
    let load = host.peak_load();
    if timing && load > facts.cpus as f64 {
        caveats.push(format!(
            "The host was loaded: load average {load:.2} on {} CPUs, so figures include contention.",
            facts.cpus
        ));
    }
    for s in series {
        let failures = s.failures();
        if failures > 0 {
            let outcomes: Vec<String> = s.outcomes.iter().map(|(o, n)| format!("{n} × {o}")).collect();
            caveats.push(format!(
                "{}: {failures} of {} launches did not exit cleanly ({}).",
                s.name(),
                s.records.len(),
                outcomes.join(", ")
            ));
        }
        if s.records.len() < FEW_LAUNCHES {
            caveats.push(format!("{}: only {} launches; its median is a rough figure.", s.name(), s.records.len()));
        }
    }
    caveats
}

/// The distinct series behind candidates.
fn series_of<'a>(candidates: &[&[Candidate<'a>]]) -> Vec<&'a Series> {
    let mut series: Vec<&Series> = Vec::new();
    for c in candidates.iter().flat_map(|c| c.iter()) {
        if let Some(s) = c.series
            && !series.iter().any(|known| std::ptr::eq(*known, s))
        {
            series.push(s);
        }
    }
    series
}

fn inconclusive(claim: Claim, why: String) -> ClaimVerdict {
    ClaimVerdict {
        claim,
        statement: claim.statement().to_owned(),
        verdict: Verdict::Inconclusive(why),
        rests_on: Vec::new(),
        workload: None,
        evidence: Vec::new(),
        context: Vec::new(),
        caveats: Vec::new(),
    }
}

/// Claim 1: median time to the marker of every VM series against every container series (launch to
/// exit as context; it decides only when no series observed the marker).
fn judge_start_time(results: &Results) -> ClaimVerdict {
    let claim = Claim::VmSlowerToStart;
    let marker: Metric = ("workload_ms", "time to marker");
    let exit: Metric = ("exit_ms", "launch to exit");
    let ((decisive_figure, decisive_metric), (context_figure, context_metric)) =
        if comparable_workload(results, &["hello"], &|s| s.figure(marker.0)).is_some() {
            (marker, exit)
        } else {
            (exit, marker)
        };
    let Some(workload) = comparable_workload(results, &["hello", "uname", "idle"], &|s| s.figure(decisive_figure))
    else {
        return inconclusive(claim, "no workload has both a VM and a container series with start times".to_owned());
    };
    let (vms, containers) = split(series_candidates(results, &workload, Unit::Milliseconds, decisive_figure));
    let evidence = pair_up(decisive_metric, &vms, &containers, vm_larger);
    let (context_vms, context_containers) =
        split(series_candidates(results, &workload, Unit::Milliseconds, context_figure));
    let mut context = pair_up(context_metric, &context_vms, &context_containers, vm_larger);
    for (figure, metric, vms, containers) in [
        (decisive_figure, decisive_metric, &vms, &containers),
        (context_figure, context_metric, &context_vms, &context_containers),
    ] {
        let kernels = application_kernel_candidates(results, &workload, Unit::Milliseconds, figure);
        context.extend(application_kernel_context(metric, &kernels, vms, containers));
    }
    let rests_on = kinds_of(&evidence);
    let caveats = caveats(results, &rests_on, &series_of(&[&vms, &containers]), true);
    ClaimVerdict {
        claim,
        statement: claim.statement().to_owned(),
        verdict: verdict_by_group(&evidence),
        rests_on,
        workload: Some(workload),
        evidence,
        context,
        caveats,
    }
}

/// Claim 2: median cgroup peak of every VM series against every container series (PSS, the runtime's
/// own overhead and the density step's MemAvailable drop per instance as context).
fn judge_memory(results: &Results) -> ClaimVerdict {
    let claim = Claim::ContainerUsesLessMemory;
    let Some(workload) = comparable_workload(results, &["idle", "hello", "uname"], &|s| s.figure("peak_bytes")) else {
        return inconclusive(claim, "no workload has both a VM and a container series with a cgroup peak".to_owned());
    };
    let (vms, containers) = split(series_candidates(results, &workload, Unit::Bytes, "peak_bytes"));
    let evidence = pair_up("cgroup peak per instance", &vms, &containers, vm_larger);
    let mut context = Vec::new();
    for (metric, name) in [("pss_bytes", "PSS at the marker"), ("overhead_bytes", "runtime/VMM overhead")] {
        let (v, c) = split(series_candidates(results, &workload, Unit::Bytes, metric));
        context.extend(pair_up(name, &v, &c, vm_larger));
    }
    let kernels = application_kernel_candidates(results, &workload, Unit::Bytes, "peak_bytes");
    context.extend(application_kernel_context("cgroup peak per instance", &kernels, &vms, &containers));
    let density: Vec<Candidate> = results
        .density
        .iter()
        .filter(|d| !results.is_application_kernel(&d.backend))
        .filter_map(|d| {
            Some(Candidate {
                name: format!(
                    "{} (density, {} instances)",
                    VmKind::instance_name(d.vm_kind, &d.backend, &d.workload),
                    d.launched
                ),
                group: d.vm_kind.map_or("container", VmKind::label).to_owned(),
                vm_kind: d.vm_kind,
                figure: Figure::Bytes { bytes: d.mem_available_drop_per_instance_bytes?.round() as u64 },
                series: None,
                samples: Vec::new(),
            })
        })
        .collect();
    let (dv, dc) = split(density);
    context.extend(pair_up("host MemAvailable drop per instance", &dv, &dc, vm_larger));
    let rests_on = kinds_of(&evidence);
    let caveats = caveats(results, &rests_on, &series_of(&[&vms, &containers]), false);
    ClaimVerdict {
        claim,
        statement: claim.statement().to_owned(),
        verdict: verdict_by_group(&evidence),
        rests_on,
        workload: Some(workload),
        evidence,
        context,
        caveats,
    }
}

/// Claim 3: every VM image against every container image; a pair supports the claim when the
/// container image is below [`GB`] and the VM image at or above it. Grouped by image kind.
fn judge_image_sizes(results: &Results) -> ClaimVerdict {
    let claim = Claim::ImageSizes;
    let candidate = |i: &crate::schema::ImageSize| Candidate {
        name: i.name.clone(),
        group: i.kind.label().to_owned(),
        vm_kind: None,
        figure: Figure::Bytes { bytes: i.bytes },
        series: None,
        samples: Vec::new(),
    };
    let vm_image = |k: ImageKind| matches!(k, ImageKind::MicroVmKernelInitrd | ImageKind::FullOsVmDisk);
    let vms: Vec<Candidate> = results.images.iter().filter(|i| vm_image(i.kind)).map(candidate).collect();
    let containers: Vec<Candidate> =
        results.images.iter().filter(|i| i.kind == ImageKind::ContainerImage).map(candidate).collect();
    if vms.is_empty() || containers.is_empty() {
        let missing = if vms.is_empty() { "VM" } else { "container" };
        return inconclusive(claim, format!("no {missing} image was measured"));
    }
    let gb = GB as f64;
    let evidence = pair_up("image size", &vms, &containers, |vm, container, _| {
        if container < gb && vm >= gb { Finding::Supports } else { Finding::Contradicts }
    });
    let compressed = |i: &crate::schema::ImageSize| {
        Some(Candidate {
            name: format!("{} (compressed)", i.name),
            group: i.kind.label().to_owned(),
            vm_kind: None,
            figure: Figure::Bytes { bytes: i.compressed_bytes? },
            series: None,
            samples: Vec::new(),
        })
    };
    let cv: Vec<Candidate> = results.images.iter().filter(|i| vm_image(i.kind)).filter_map(compressed).collect();
    let cc: Vec<Candidate> =
        results.images.iter().filter(|i| i.kind == ImageKind::ContainerImage).filter_map(compressed).collect();
    let context = pair_up("compressed size", &cv, &cc, vm_larger);
    let mut caveats = Vec::new();
    let largest_vm = vms.iter().map(Candidate::value).fold(0.0, f64::max);
    if largest_vm < gb {
        caveats.push(format!(
            "The largest VM image measured is {}; larger distributions (desktop or cloud images) would weigh more.",
            format_bytes(largest_vm)
        ));
    }
    ClaimVerdict {
        claim,
        statement: claim.statement().to_owned(),
        verdict: verdict_by_group(&evidence),
        rests_on: Vec::new(),
        workload: None,
        evidence,
        context,
        caveats,
    }
}

/// Claim 4: each `uname` console against the host's kernel release. Containers must print the host's
/// release (else the claim does not hold); the verdict then says for which VM kinds the VM printed
/// another. An application kernel's console (gVisor) is context with a caveat naming it: it is
/// neither kind.
fn judge_kernel(results: &Results) -> ClaimVerdict {
    let claim = Claim::KernelSharing;
    let seen = results.uname_evidence();
    let mut evidence = Vec::new();
    let mut context = Vec::new();
    let mut caveats = Vec::new();
    for u in &seen {
        let (Some(text), Some(uses_host)) = (&u.seen, u.uses_host_kernel) else {
            caveats.push(format!(
                "{}: no launch printed a release before its marker.",
                VmKind::instance_name(u.vm_kind, &u.backend, "uname")
            ));
            continue;
        };
        let application_kernel = results.is_application_kernel(&u.backend);
        if application_kernel && !uses_host {
            caveats.push(format!(
                "{} printed `{text}`, not the host's `{}`: its container runs on gVisor's application kernel in \
                 user space, neither sharing the host's kernel nor booting one (a third kind the claim's two do \
                 not cover); shown for context, left out of the verdict.",
                VmKind::instance_name(None, &u.backend, "uname"),
                u.host_kernel
            ));
        }
        // A container "uses the host's kernel" and a VM "its own"; an application kernel's row says
        // whether it fits the container half of the claim (it does not when it prints its own).
        let supports = if u.vm_kind.is_some() { !uses_host } else { uses_host };
        let rows = if application_kernel { &mut context } else { &mut evidence };
        rows.push(Evidence {
            metric: "uname -r".to_owned(),
            group: if application_kernel { APPLICATION_KERNEL } else { u.vm_kind.map_or("container", VmKind::label) }
                .to_owned(),
            vm_kind: u.vm_kind,
            subject: VmKind::instance_name(u.vm_kind, &u.backend, "uname"),
            subject_figure: Figure::Text { text: text.clone() },
            reference: "host kernel".to_owned(),
            reference_figure: Figure::Text { text: u.host_kernel.clone() },
            reference_group: "host".to_owned(),
            ratio: None,
            ratio_ci: None,
            finding: if supports { Finding::Supports } else { Finding::Contradicts },
        });
    }
    let (vm_rows, container_rows): (Vec<Evidence>, Vec<Evidence>) =
        evidence.iter().cloned().partition(|e| e.vm_kind.is_some());
    let verdict = if container_rows.is_empty() || vm_rows.is_empty() {
        let missing = if container_rows.is_empty() { "container" } else { "VM" };
        Verdict::Inconclusive(format!("no {missing} series of the uname workload printed a release"))
    } else if container_rows.iter().any(|e| e.finding != Finding::Supports) {
        Verdict::DoesNotHold
    } else {
        verdict_by_group(&vm_rows)
    };
    ClaimVerdict {
        claim,
        statement: claim.statement().to_owned(),
        verdict,
        rests_on: kinds_of(&evidence),
        workload: Some("uname".to_owned()),
        evidence,
        context,
        caveats,
    }
}

/// The ratio of an evidence row, written for a table ("–" when there is none).
pub fn ratio_text(evidence: &Evidence) -> String {
    let Some(ratio) = evidence.ratio else { return "–".to_owned() };
    match evidence.ratio_ci {
        Some([lo, hi]) => format!("{} (95% CI {}–{})", format_ratio(ratio), format_ratio(lo), format_ratio(hi)),
        None => format_ratio(ratio),
    }
}
