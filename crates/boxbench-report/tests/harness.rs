//! The report's calibration and regimes section on synthetic results: each backend's harness cost
//! beside its own launch, both regimes side by side, and the regime the verdicts use.

mod common;

use boxbench_report::render::host_document;
use common::*;

fn markdown(results: &boxbench_report::Results) -> String {
    host_document(results).to_markdown(&[])
}

#[test]
fn calibration_and_warm_series_are_reported_with_the_verdicts_regime() {
    let mut results = quiet_results();
    results.series = vec![series("crun", None, &[20.0, 22.0, 21.0], 2)];
    results.calibration = vec![series("calibration:crun", None, &[2.0, 2.2, 2.1], 1)];
    results.warm = vec![series("crun", None, &[10.0, 11.0, 10.5], 2)];
    results.settings.interleaved = true;
    let md = markdown(&results);
    let section = &md[md.find("## Harness calibration and regimes").expect("section present")..];
    assert!(section.contains("The verdicts use the interleaved regime"), "{section}");
    // crun's calibration: 2.1 ms of its 21 ms to the marker.
    let calibration_row = section.lines().find(|l| l.starts_with("| crun | time to marker")).expect("calibration row");
    assert!(calibration_row.contains("| 10% |"), "{calibration_row}");
    // Interleaved 21 ms against warm 10.5 ms to the marker.
    let regime_row = section.lines().find(|l| l.contains("time to marker") && l.contains("×")).expect("regime row");
    assert!(regime_row.contains("2.00×"), "{regime_row}");
    let text = boxbench_report::harness::text_lines(&results);
    assert!(text.starts_with("verdicts use the interleaved regime\n"), "{text}");
    assert!(text.contains("calibration crun: harness 2.10 ms to marker"), "{text}");
}

#[test]
fn old_results_without_calibration_have_no_such_section() {
    let mut results = quiet_results();
    results.series = vec![series("crun", None, &[20.0, 22.0, 21.0], 2)];
    assert!(!markdown(&results).contains("Harness calibration"));
}
