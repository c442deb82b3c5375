//! `boxbench compare` end to end through the real binary, with a tiny N: every file of the report is
//! written, the results hold what was measured, and nothing is left on the host.

mod common;

use std::process::{Command, Stdio};

use boxbench_testkit::require;

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");

#[test]
fn a_small_compare_writes_every_report_file_and_leaves_nothing() {
    require!(common::is_root(), "the container and micro-VM backends need root");
    require!(std::path::Path::new("/dev/kvm").exists(), "the micro-VM backend needs /dev/kvm");
    let out = tempfile::tempdir().unwrap();
    let report = out.path().join("report");
    let temp_before = common::temp_entries();
    let args = ["compare", "-b", "container", "-b", "microvm", "--runs", "2", "--warmup", "0", "--uname-runs", "1"];
    let spawned = Command::new(BOXBENCH)
        .args(args)
        .args(["--density", "2", "--no-full-os", "--out"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = spawned.id();
    let child = spawned.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "compare failed:\n{stdout}\n{stderr}");
    common::assert_clean_after(pid, &temp_before, "compare");

    // stdout ends with where the report is (its other lines are checked below).
    assert!(stdout.contains(&format!("report: {}", report.join("report.md").display())), "{stdout}");
    for file in ["report.md", "report.html", "results.json"] {
        let len = std::fs::metadata(report.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} missing or empty");
    }
    for plot in ["boot_phases", "time_to_marker", "memory_per_instance", "image_sizes", "density"] {
        for ext in ["svg", "png"] {
            let path = report.join("plots").join(format!("{plot}.{ext}"));
            assert!(path.is_file(), "{} missing", path.display());
        }
    }

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("results.json")).unwrap()).unwrap();
    let series = results["series"].as_array().unwrap();
    let names: Vec<(&str, &str)> =
        series.iter().map(|s| (s["backend"].as_str().unwrap(), s["workload"].as_str().unwrap())).collect();
    for wanted in [("container", "hello"), ("container", "uname"), ("microvm", "hello"), ("microvm", "uname")] {
        assert!(names.contains(&wanted), "{wanted:?} not in {names:?}");
    }
    // boxbench's VMM also restores its guest from a snapshot compare took (hello only: it replays it).
    let kinds: Vec<(&str, &str)> = series
        .iter()
        .filter(|s| s["backend"] == "microvm")
        .map(|s| (s["vm_kind"].as_str().unwrap(), s["workload"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("own_guest_floor", "hello"), ("own_guest_floor", "uname"), ("own_guest_from_snapshot", "hello")],
        "{kinds:?}"
    );
    for s in series {
        let launches = if s["workload"] == "hello" { 2 } else { 1 };
        assert_eq!(s["records"].as_array().unwrap().len(), launches, "{}", s["backend"]);
        // Every launch exited cleanly and its time to exit was observed and summarised.
        assert_eq!(s["outcomes"].as_object().unwrap().len(), 1, "{}", s["outcomes"]);
        assert_eq!(s["phases"]["exit_ms"]["n"], launches, "{}", s["phases"]);
        assert!(s["phases"]["exit_ms"]["median"].as_f64().unwrap() > 0.0);
    }
    let density = results["density"].as_array().unwrap();
    assert_eq!(density.len(), 2, "{density:#?}");
    assert!(density.iter().all(|d| d["launched"] == 2), "{density:#?}");
    let images: Vec<&str> = results["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    for wanted in ["rootfs", "oci-image", "initramfs", "boxbench-guest.elf"] {
        assert!(images.contains(&wanted), "{wanted} not in {images:?}");
    }
    // The report states a verdict for each of the four claims, and stdout prints them.
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert_eq!(md.lines().filter(|l| l.starts_with("**Verdict:")).count(), 4, "{md}");
    // Both regimes by default: the verdicts' series interleaved, the warm ones beside them.
    assert_eq!(results["settings"]["interleaved"], true);
    let warm: Vec<&str> = results["warm"].as_array().unwrap().iter().map(|s| s["backend"].as_str().unwrap()).collect();
    assert_eq!(warm, ["container", "microvm", "microvm"]);
    // Each backend's harness calibration, measured as many times as its series.
    let calibration = results["calibration"].as_array().unwrap();
    let calibrated: Vec<&str> = calibration.iter().map(|s| s["backend"].as_str().unwrap()).collect();
    assert_eq!(calibrated, ["calibration:container", "calibration:microvm"]);
    for s in calibration.iter().chain(results["warm"].as_array().unwrap()) {
        assert_eq!(s["records"].as_array().unwrap().len(), 2, "{}", s["backend"]);
        assert!(s["phases"]["exit_ms"]["median"].as_f64().unwrap() > 0.0, "{}", s["phases"]);
    }
    assert!(md.contains("## Harness calibration and regimes"), "{md}");
    // stdout: the regime, a calibration line per backend and a regimes line per series, a sentence per
    // claim, and the report's two files.
    assert!(stdout.starts_with("verdicts use the interleaved regime\n"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1 + 2 + 3 + 4 + 2, "{stdout}");
    assert!(stdout.contains("regimes microvm (own guest, from snapshot) × hello: "), "{stdout}");
    // Each claim in one plain sentence from its figures (the microvm against the container, here).
    let claims: Vec<&str> = stdout.lines().skip(1 + 2 + 3).take(4).collect();
    for (n, line) in (1..=4).zip(&claims) {
        assert!(line.starts_with(&format!("Claim {n} (")) && line.contains(". On this host"), "{stdout}");
    }
    assert!(claims[0].contains("took") && claims[0].contains("as long as container"), "{stdout}");
}
