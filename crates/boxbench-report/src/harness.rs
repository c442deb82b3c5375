//! The report's "Harness calibration and regimes" section: what the harness itself costs each
//! backend's launch (hyperfine's shell-spawn calibration), and the launch figures of both regimes —
//! interleaved (A B A B across backends) and warm (one backend back to back) — with the regime the
//! verdicts use.

use boxbench_core::boundary::CALIBRATION_PREFIX;
use boxbench_core::stats::Summary;

use crate::document::Document;
use crate::schema::Results;
use crate::units::Unit;

/// The figures the section compares, with their labels.
const FIGURES: [(&str, &str); 2] = [("workload_ms", "time to marker"), ("exit_ms", "launch to exit")];

/// The regime the verdicts' series were measured in.
pub fn verdict_regime(results: &Results) -> &'static str {
    if results.settings.interleaved { "interleaved" } else { "warm" }
}

/// Appends the section to `doc`.
pub fn section(doc: &mut Document, results: &Results) {
    if results.calibration.is_empty() && results.warm.is_empty() {
        return;
    }
    doc.heading(2, "Harness calibration and regimes");
    doc.paragraph(format!(
        "The verdicts use the {} regime: {}.",
        verdict_regime(results),
        if results.settings.interleaved {
            "one launch of each backend in turn (A B A B …), so every backend meets the same host state"
        } else {
            "each backend's launches back to back"
        }
    ));
    if !results.calibration.is_empty() {
        doc.paragraph(
            "Calibration: busybox printing the marker and exiting, launched through each backend's own harness path \
             (the same cgroup set-up before the clock, fork, join between fork and exec, mount set-up, console pipe, \
             marker scan and cgroup removal). It is what the harness adds to every launch of that backend; boxbench's \
             own container and VMM fork with their own code and are calibrated by the plain tool path.",
        );
        let mut rows = Vec::new();
        for calibration in &results.calibration {
            let backend = calibration.backend.trim_start_matches(CALIBRATION_PREFIX);
            let own = results.series.iter().find(|s| s.backend == backend && s.workload == "hello");
            for (figure, label) in FIGURES {
                let harness = calibration.figure(figure);
                let launch = own.and_then(|s| s.figure(figure));
                rows.push(vec![
                    backend.to_owned(),
                    label.to_owned(),
                    median_with_ci(harness),
                    median_with_ci(launch),
                    match (harness, launch) {
                        (Some(h), Some(l)) if l.median > 0.0 => format!("{:.0}%", 100.0 * h.median / l.median),
                        _ => "–".to_owned(),
                    },
                ]);
            }
        }
        doc.table(&["backend", "figure", "harness (calibration)", "backend's launch", "harness share"], rows);
    }
    if !results.warm.is_empty() {
        let mut rows = Vec::new();
        for warm in &results.warm {
            let interleaved = results
                .series
                .iter()
                .find(|s| s.backend == warm.backend && s.vm_kind == warm.vm_kind && s.workload == warm.workload);
            for (figure, label) in FIGURES {
                let (i, w) = (interleaved.and_then(|s| s.figure(figure)), warm.figure(figure));
                rows.push(vec![
                    warm.name(),
                    label.to_owned(),
                    median_with_ci(i),
                    median_with_ci(w),
                    match (i, w) {
                        (Some(i), Some(w)) if w.median > 0.0 => format!("{:.2}×", i.median / w.median),
                        _ => "–".to_owned(),
                    },
                ]);
            }
        }
        doc.table(&["series", "figure", "interleaved", "warm", "interleaved / warm"], rows);
    }
}

fn median_with_ci(summary: Option<Summary>) -> String {
    let unit = Unit::Milliseconds;
    match summary {
        Some(s) => match s.median_ci {
            Some([lo, hi]) => format!("{} ({}–{}, n={})", unit.format(s.median), unit.format(lo), unit.format(hi), s.n),
            None => format!("{} (n={})", unit.format(s.median), s.n),
        },
        None => "–".to_owned(),
    }
}

/// The section's gist for stdout: the verdicts' regime, each backend's calibration beside its launch,
/// and each series' warm figure beside its interleaved one (time to marker).
pub fn text_lines(results: &Results) -> String {
    let mut out = String::new();
    if results.calibration.is_empty() && results.warm.is_empty() {
        return out;
    }
    out.push_str(&format!("verdicts use the {} regime\n", verdict_regime(results)));
    let ms = |s: Option<Summary>| s.map_or_else(|| "–".to_owned(), |s| Unit::Milliseconds.format(s.median));
    for calibration in &results.calibration {
        let backend = calibration.backend.trim_start_matches(CALIBRATION_PREFIX);
        let own = results.series.iter().find(|s| s.backend == backend && s.workload == "hello");
        out.push_str(&format!(
            "calibration {backend}: harness {} to marker, {} to exit; {backend} itself {} to marker, {} to exit\n",
            ms(calibration.figure("workload_ms")),
            ms(calibration.figure("exit_ms")),
            ms(own.and_then(|s| s.figure("workload_ms"))),
            ms(own.and_then(|s| s.figure("exit_ms"))),
        ));
    }
    for warm in &results.warm {
        let interleaved = results
            .series
            .iter()
            .find(|s| s.backend == warm.backend && s.vm_kind == warm.vm_kind && s.workload == warm.workload);
        out.push_str(&format!(
            "regimes {}: time to marker {} interleaved, {} warm\n",
            warm.name(),
            ms(interleaved.and_then(|s| s.figure("workload_ms"))),
            ms(warm.figure("workload_ms")),
        ));
    }
    out
}
