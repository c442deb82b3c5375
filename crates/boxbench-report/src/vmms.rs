//! The report's "VMMs booting the same guest" section: boxbench's own VMM beside every other VMM
//! (QEMU, Firecracker) that booted the same guest for the same workload on the same host, figure by
//! figure, as ratios with their bootstrap intervals. Where absolute times are an emulator's (kvm_pvm,
//! the emulated SVM host) these ratios still compare the VMMs' own work.

use boxbench_core::OWN_VMM_BACKEND;
use boxbench_core::bootstrap::ratio_interval;

use crate::document::Document;
use crate::schema::{Results, Series};
use crate::units::Unit;

/// The figures compared, with their labels and units.
const FIGURES: [(&str, &str, Unit); 4] = [
    ("workload_ms", "time to marker", Unit::Milliseconds),
    ("exit_ms", "launch to exit", Unit::Milliseconds),
    ("peak_bytes", "cgroup peak", Unit::Bytes),
    ("overhead_bytes", "VMM memory beyond guest RAM", Unit::Bytes),
];

/// One figure of boxbench's VMM against another VMM on the same guest.
#[derive(Debug, Clone, PartialEq)]
pub struct VmmRatio {
    /// The guest both booted ("own guest", "Linux, emulated SVM", …) and the workload.
    pub guest: String,
    /// The workload.
    pub workload: String,
    /// The other VMM's backend name.
    pub other: String,
    /// The figure's label.
    pub figure: &'static str,
    /// The figure's unit.
    pub unit: Unit,
    /// boxbench's VMM's median.
    pub own: f64,
    /// The other VMM's median.
    pub theirs: f64,
    /// 95% bootstrap interval of own / theirs, where both sides have enough samples.
    pub interval: Option<[f64; 2]>,
}

impl VmmRatio {
    /// own / theirs.
    pub fn ratio(&self) -> f64 {
        self.own / self.theirs
    }
}

/// Every figure of boxbench's VMM against every other VMM that booted the same guest for the same
/// workload, in the order the series were run.
pub fn ratios(results: &Results) -> Vec<VmmRatio> {
    let own_series = results.series.iter().filter(|s| s.backend == OWN_VMM_BACKEND && s.vm_kind.is_some());
    let mut ratios = Vec::new();
    for own in own_series {
        for other in results.series.iter().filter(|s| same_guest_other_vmm(own, s)) {
            for (name, figure, unit) in FIGURES {
                let (Some(a), Some(b)) = (own.figure(name), other.figure(name)) else { continue };
                if b.median <= 0.0 {
                    continue;
                }
                ratios.push(VmmRatio {
                    guest: own.vm_kind.map_or("", |k| k.guest()).to_owned(),
                    workload: own.workload.clone(),
                    other: other.backend.clone(),
                    figure,
                    unit,
                    own: a.median,
                    theirs: b.median,
                    interval: ratio_interval(&own.samples(name), &other.samples(name)),
                });
            }
        }
    }
    ratios
}

/// True for a series of another VMM booting the guest `own` booted, for the same workload.
fn same_guest_other_vmm(own: &Series, other: &Series) -> bool {
    let guest = |s: &Series| s.vm_kind.map(|k| k.guest());
    other.backend != OWN_VMM_BACKEND
        && other.workload == own.workload
        && guest(other).is_some()
        && guest(other) == guest(own)
}

/// Appends the section to `doc` (nothing when no other VMM booted one of the own VMM's guests).
pub fn section(doc: &mut Document, results: &Results) {
    let ratios = ratios(results);
    if ratios.is_empty() {
        return;
    }
    doc.heading(2, "VMMs booting the same guest");
    doc.paragraph(format!(
        "boxbench's VMM ({OWN_VMM_BACKEND}) against each other VMM that booted the same guest image for the same \
         workload on this host, with the same guest memory and vCPUs: medians and the ratio {OWN_VMM_BACKEND} / other \
         with its 95% bootstrap interval (below 1: {OWN_VMM_BACKEND} is faster or smaller). \"VMM memory beyond guest \
         RAM\" is each VMM's private memory outside its guest RAM mapping, clean file pages left out: what the VMM \
         itself adds to a VM."
    ));
    let rows = ratios
        .iter()
        .map(|r| {
            vec![
                format!("{} × {}", r.guest, r.workload),
                r.other.clone(),
                r.figure.to_owned(),
                r.unit.format(r.own),
                r.unit.format(r.theirs),
                ratio_text(r),
            ]
        })
        .collect();
    doc.table(&["guest × workload", "other VMM", "figure", OWN_VMM_BACKEND, "other", "ratio (95% CI)"], rows);
}

/// "0.75× (0.69–0.81×)", or the bare ratio without an interval.
fn ratio_text(r: &VmmRatio) -> String {
    match r.interval {
        Some([lo, hi]) => format!("**{:.2}×** ({lo:.2}–{hi:.2}×)", r.ratio()),
        None => format!("**{:.2}×**", r.ratio()),
    }
}

/// The section's gist for stdout: one line per pair and figure.
pub fn text_lines(results: &Results) -> String {
    ratios(results)
        .iter()
        .map(|r| {
            format!(
                "{OWN_VMM_BACKEND} vs {} ({} × {}): {} {} vs {} = {}\n",
                r.other,
                r.guest,
                r.workload,
                r.figure,
                r.unit.format(r.own),
                r.unit.format(r.theirs),
                ratio_text(r).replace("**", "")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use boxbench_core::{MemoryUsage, Outcome, Phases, Record};

    use super::*;
    use crate::schema::VmKind;

    fn series(backend: &str, kind: VmKind, marker_ms: f64, peak: u64) -> Series {
        let records = (0..10)
            .map(|i| Record {
                backend: backend.into(),
                phases: Phases {
                    workload_ms: Some(marker_ms + i as f64 * 0.1),
                    exit_ms: Some(marker_ms + 1.0),
                    ..Default::default()
                },
                outcome: Outcome::Exited { code: 0 },
                exit_code: Some(0),
                console: String::new(),
                memory: MemoryUsage { peak_bytes: Some(peak), ..Default::default() },
                notes: Vec::new(),
                details_ms: Default::default(),
            })
            .collect();
        Series::new(backend.into(), "hello".into(), Some(kind), records)
    }

    fn results_with(series: Vec<Series>) -> Results {
        let host = serde_json::from_value(serde_json::json!({
            "label": "h", "nested": false,
            "facts": {"kernel": "6.1.0", "cpu_model": "CPU", "cpus": 2, "memory_bytes": 1, "kvm": "svm",
                      "cgroup_mode": "unified", "root": true, "load_average": 0.0},
            "load_before": {"one": 0.0, "five": 0.0, "fifteen": 0.0},
            "load_after": {"one": 0.0, "five": 0.0, "fifteen": 0.0}
        }))
        .unwrap();
        let mut results = Results::new(String::new(), host, Default::default());
        results.series = series;
        results
    }

    #[test]
    fn own_vmm_is_compared_with_other_vmms_on_the_same_guest_only() {
        let mut results = results_with(vec![
            series(OWN_VMM_BACKEND, VmKind::OwnGuestFloor, 10.0, 3 << 20),
            series("qemu-microvm", VmKind::OwnGuestOtherVmm, 40.0, 12 << 20),
            series(OWN_VMM_BACKEND, VmKind::LinuxSvmEmulated, 5000.0, 120 << 20),
            series("qemu-microvm", VmKind::LinuxSvmEmulated, 7000.0, 144 << 20),
            // Same backend, another guest: never paired with the own guest.
            series("qemu-q35", VmKind::LinuxTcg, 900.0, 200 << 20),
        ]);
        results.series.push(Series::new("crun".into(), "hello".into(), None, Vec::new()));
        let ratios = ratios(&results);
        let pairs: Vec<(&str, &str, &str)> =
            ratios.iter().map(|r| (r.guest.as_str(), r.other.as_str(), r.figure)).collect();
        assert_eq!(
            pairs,
            [
                ("own guest", "qemu-microvm", "time to marker"),
                ("own guest", "qemu-microvm", "launch to exit"),
                ("own guest", "qemu-microvm", "cgroup peak"),
                ("Linux, emulated SVM", "qemu-microvm", "time to marker"),
                ("Linux, emulated SVM", "qemu-microvm", "launch to exit"),
                ("Linux, emulated SVM", "qemu-microvm", "cgroup peak"),
            ]
        );
        let marker = &ratios[3];
        assert!((marker.ratio() - 5000.45 / 7000.45).abs() < 1e-9, "{marker:?}");
        let [lo, hi] = marker.interval.expect("ten samples a side");
        assert!(lo <= marker.ratio() && marker.ratio() <= hi, "{marker:?}");
        let mut doc = Document::default();
        section(&mut doc, &results);
        let text = doc.to_markdown(&[]);
        assert!(text.contains("## VMMs booting the same guest"), "{text}");
        assert!(
            text.contains("| Linux, emulated SVM × hello | qemu-microvm | cgroup peak | 120 MiB | 144 MiB | **0.83×**"),
            "{text}"
        );
        assert!(text_lines(&results).contains("microvm vs qemu-microvm (own guest × hello): time to marker"));
    }

    #[test]
    fn no_section_without_another_vmm() {
        let results = results_with(vec![series(OWN_VMM_BACKEND, VmKind::OwnGuestFloor, 10.0, 3 << 20)]);
        let mut doc = Document::default();
        section(&mut doc, &results);
        assert_eq!(doc.to_markdown(&[]), Document::default().to_markdown(&[]));
        assert_eq!(text_lines(&results), "");
    }
}
