//! The report end to end from synthetic results: the schema round-trip, every file written and
//! non-empty, the HTML embedding the plots, loading saved results back (one host and several), errors
//! naming the file, and nothing left behind when writing fails.

mod common;

use std::fs;
use std::path::PathBuf;

use boxbench_report::schema::MultiHost;
use boxbench_report::{ReportError, Results, load_results, write_comparison, write_report};
use common::*;

#[test]
fn results_round_trip_through_json() {
    let results = full_results();
    let json = serde_json::to_string_pretty(&results).unwrap();
    let back: Results = serde_json::from_str(&json).unwrap();
    assert_eq!(back, results);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["schema_version"], 1);
    assert_eq!(value["series"][2]["vm_kind"], "own_guest_floor");
    assert!(value["series"][0]["vm_kind"].is_null());
    assert_eq!(value["series"][0]["phases"]["workload_ms"]["n"], 5);
    assert_eq!(value["images"][0]["kind"], "container_image");
    assert_eq!(value["density"][1]["curve"][4]["instances"], 4);
    assert_eq!(value["host"]["facts"]["kvm"], "pvm");
}

#[test]
fn every_file_is_written_and_the_html_embeds_the_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reports/run-1");
    let files = write_report(&full_results(), &out).unwrap();
    assert_eq!(files.plots.len(), 5, "one SVG and PNG per plot: {:?}", files.plots);
    let mut all = vec![files.results_json.clone(), files.report_md.clone(), files.report_html.clone()];
    for (svg, png) in &files.plots {
        all.push(svg.clone());
        all.push(png.clone());
        assert_eq!(&fs::read(png).unwrap()[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", png.display());
        assert!(fs::read_to_string(svg).unwrap().starts_with("<svg"), "{} is an SVG", svg.display());
    }
    for path in &all {
        assert!(path.starts_with(&out), "{} inside the output dir", path.display());
        assert!(fs::metadata(path).unwrap().len() > 0, "{} is empty", path.display());
    }
    let reloaded: Results = serde_json::from_slice(&fs::read(&files.results_json).unwrap()).unwrap();
    assert_eq!(reloaded, full_results());

    let html = fs::read_to_string(&files.report_html).unwrap();
    for name in ["boot_phases", "time_to_marker", "memory_per_instance", "image_sizes", "density"] {
        assert!(html.contains(&format!("id=\"plot-{name}\"")), "plot {name} embedded");
    }
    assert_eq!(html.matches("<svg").count(), 5);
    assert!(html.contains("<style>") && !html.contains("<link") && !html.contains("src=\"http"));
    let md = fs::read_to_string(&files.report_md).unwrap();
    let claims_at = md.find("## Claims").unwrap();
    assert!(claims_at < md.find("## Boot time").unwrap(), "claims come first");
    assert!(md.contains("![Boot phases per backend"));
    assert!(md.contains("**Verdict: holds only for"));
    assert!(md.contains("| crun × hello | container | workload_ms | 5 | 6.20 ms |"), "series table");
    assert!(md.contains("qemu-system-x86_64 -M microvm -accel tcg"), "exact command");
    assert!(md.contains("`6.1.0-tiny`"), "uname evidence");
    assert!(md.contains("firecracker skipped"), "run notes are caveats");
    assert!(md.contains("boxbench compare -n 5"), "command line");
    assert!(md.contains("kvm_pvm"), "host caveat");
}

#[test]
fn plots_without_data_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = full_results();
    results.density.clear();
    results.images.clear();
    let files = write_report(&results, dir.path()).unwrap();
    let names: Vec<String> =
        files.plots.iter().map(|(svg, _)| svg.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["boot_phases", "time_to_marker", "memory_per_instance"]);
    let md = fs::read_to_string(files.report_md).unwrap();
    assert!(md.contains("No density step ran.") && md.contains("No image sizes were measured."));
}

#[test]
fn saved_results_of_several_hosts_merge_into_one_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.json");
    let second = dir.path().join("b.json");
    let mut other = full_results();
    other.host.label = "laptop".into();
    other.host.facts.kernel = "6.12.1".into();
    fs::write(&first, serde_json::to_vec(&full_results()).unwrap()).unwrap();
    fs::write(&second, serde_json::to_vec(&other).unwrap()).unwrap();

    let merged = load_results(&[first.clone(), second]).unwrap();
    assert_eq!(merged.hosts.len(), 2);
    assert_eq!(merged.column_names(), ["test-host", "laptop"]);

    let out = dir.path().join("cmp");
    let files = write_comparison(&merged, &out).unwrap();
    assert_eq!(files.host_reports.len(), 2);
    for host in &files.host_reports {
        assert!(host.report_html.exists() && host.results_json.exists());
    }
    assert_eq!(files.plots.len(), 2);
    let md = fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains("| claim | test-host | laptop |"), "a column per host");
    assert!(md.contains("| crun × hello | 6.20 ms (n=5) | 6.20 ms (n=5) |"));

    // A saved comparison loads back as its hosts, and merges with a single host's file.
    let again = load_results(&[files.results_json.clone(), first]).unwrap();
    assert_eq!(again.hosts.len(), 3);
    let single = write_comparison(&MultiHost::merge(vec![full_results()]).unwrap(), &dir.path().join("one")).unwrap();
    assert!(single.host_reports.is_empty() && single.results_json.ends_with("results.json"));
}

#[test]
fn bad_input_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let err = load_results(std::slice::from_ref(&missing)).unwrap_err();
    assert!(err.to_string().starts_with(&missing.display().to_string()), "{err}");

    let garbage = dir.path().join("garbage.json");
    fs::write(&garbage, "{\"schema_version\": 1, \"series\": 3}").unwrap();
    let err = load_results(std::slice::from_ref(&garbage)).unwrap_err();
    assert!(matches!(err, ReportError::Parse { .. }));
    assert!(err.to_string().contains("garbage.json: not a boxbench results document"), "{err}");

    let future = dir.path().join("future.json");
    fs::write(&future, "{\"schema_version\": 99}").unwrap();
    let err = load_results(std::slice::from_ref(&future)).unwrap_err();
    assert!(err.to_string().contains("future.json: schema_version 99 is not supported"), "{err}");

    assert!(matches!(load_results(&[]), Err(ReportError::NoInput)));
}

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the plots directory must go: results.json is written, then the plots fail.
    fs::write(dir.path().join("plots"), "in the way").unwrap();
    let err = write_report(&full_results(), dir.path()).unwrap_err();
    assert!(err.to_string().contains("plots"), "{err}");
    let left: Vec<PathBuf> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left, [dir.path().join("plots")], "only what was there before");

    // A fresh output directory under a parent that does not exist yet is removed whole.
    let blocked = dir.path().join("new/parent/out");
    fs::create_dir_all(&blocked).unwrap();
    fs::write(blocked.join("plots"), "in the way").unwrap();
    let nested_missing = dir.path().join("fresh/deeper");
    let mut results = full_results();
    results.schema_version = 7;
    assert!(write_report(&results, &nested_missing).is_err());
    assert!(!dir.path().join("fresh").exists());
}
