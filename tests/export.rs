//! `--export-json`, `--export-csv` and `--export-markdown` through the real binary: the files hold one
//! row per observed figure, and a path in a missing directory is refused before anything launches.

mod common;

use std::process::Command;

use boxbench_testkit::require;

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");

#[test]
fn run_writes_every_export_format() {
    require!(common::is_root(), "the container backend needs root");
    let dir = tempfile::tempdir().unwrap();
    let (json, csv, md) = (dir.path().join("r.json"), dir.path().join("r.csv"), dir.path().join("r.md"));
    let output = Command::new(BOXBENCH)
        .args(["run", "-b", "container", "-n", "3", "--quiet", "--export-json"])
        .arg(&json)
        .arg("--export-csv")
        .arg(&csv)
        .arg("--export-markdown")
        .arg(&md)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let marker = rows["results"].as_array().unwrap().iter().find(|r| r["figure"] == "workload_ms").unwrap();
    assert_eq!(
        (marker["series"].as_str(), marker["n"].as_u64(), marker["unit"].as_str()),
        (Some("container × hello"), Some(3), Some("ms"))
    );
    assert!(marker["ci_low"].as_f64().unwrap() <= marker["median"].as_f64().unwrap());
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.starts_with("series,figure,unit,n,median,ci_low,ci_high,min,max\n"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("container × hello,workload_ms,ms,3,")), "{csv}");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.lines().any(|l| l.starts_with("| container × hello | workload_ms | ms | 3 |")), "{md}");
}

#[test]
fn an_export_path_in_a_missing_directory_is_one_line_and_no_launch() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("missing").join("out.csv");
    let temp_before = common::temp_entries();
    let child = Command::new(BOXBENCH)
        .args(["run", "-b", "container", "--export-csv"])
        .arg(&bad)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let spawned = child.wait_with_output().unwrap();
    assert_eq!(spawned.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&spawned.stderr);
    assert_eq!(stderr.trim(), format!("boxbench: {}: its directory does not exist", bad.display()));
    assert!(spawned.stdout.is_empty(), "nothing was launched");
    assert!(!bad.exists());
    common::assert_clean_after(pid, &temp_before, "a bad export path");
}
