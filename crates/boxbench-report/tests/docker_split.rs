//! Claim 7 from synthetic records: the split's parts and their arithmetic, the sum check, the
//! verdict, its sentence and matrix, the report's section and plot, and results without a split.

mod common;

use boxbench_core::{Outcome, Record};
use boxbench_report::docker_split::{CLI_EXTRA, DockerSplit, EngineServer, ROUND_TRIPS, Side};
use boxbench_report::glance::{glance, stdout_line};
use boxbench_report::{Claim, Results, Series, Verdict, judge};

/// A launch that exited at `exit_ms` (marker just before), with `details`.
fn launch(backend: &str, exit_ms: f64, details: &[(&str, f64)]) -> Record {
    let mut record = common::record(backend, Some(exit_ms - 1.0), Some(8 << 20), "BOXBENCH_READY\n");
    record.phases.exit_ms = Some(exit_ms);
    record.details_ms = details.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    record
}

fn series(backend: &str, records: Vec<Record>) -> Series {
    Series::new(backend.to_owned(), "hello".to_owned(), None, records)
}

/// Round `i`: CLI 300 + i ms, client start-up 40 ms, API 200 ms of which ping 1, create 30,
/// attach 1, start 100, wait 40, remove 25 (197) and 3 ms of harness.
fn split(rounds: usize) -> DockerSplit {
    let calls = [1.0, 30.0, 1.0, 100.0, 40.0, 25.0];
    let details: Vec<(&str, f64)> = ROUND_TRIPS.iter().copied().zip(calls).collect();
    let rounds: Vec<usize> = (0..rounds).collect();
    DockerSplit {
        client_version: "20.10.24+dfsg1".to_owned(),
        server: EngineServer {
            version: "20.10.24+dfsg1".to_owned(),
            api_version: "1.41".to_owned(),
            min_api_version: "1.12".to_owned(),
            go_version: "go1.19.8".to_owned(),
            os_arch: "linux/amd64".to_owned(),
        },
        api_version: "1.41".to_owned(),
        socket: "/run/docker.sock".to_owned(),
        private_daemon: true,
        cli: series("docker", rounds.iter().map(|i| launch("docker", 300.0 + *i as f64, &[])).collect()),
        client_startup: series("docker-client", rounds.iter().map(|_| launch("docker-client", 40.0, &[])).collect()),
        api: series("docker-api", rounds.iter().map(|_| launch("docker-api", 200.0, &details)).collect()),
        calibration: Some(series("calibration:docker", rounds.iter().map(|_| launch("c", 2.0, &[])).collect())),
        tapped: None,
    }
}

fn results_with(split: DockerSplit) -> Results {
    let mut results = common::quiet_results();
    results.docker_split = Some(split);
    results
}

#[test]
fn the_parts_split_each_round_of_the_cli_and_add_up_to_it() {
    let split = split(5);
    let parts = split.parts();
    let median = |name: &str| parts.iter().find(|p| p.name.starts_with(name)).unwrap().summary.median;
    assert_eq!(median("client start-up"), 40.0);
    // 302 (the CLI's median) − 40 − 200.
    assert_eq!(median(CLI_EXTRA), 62.0);
    assert_eq!(median("REST transport"), 6.0);
    assert_eq!(median("daemon: create"), 29.0);
    assert_eq!(median("daemon: start"), 99.0);
    assert_eq!(median("daemon: attach"), 0.0);
    assert_eq!(median("harness around the calls"), 3.0);
    let sides: Vec<Side> = parts.iter().map(|p| p.side).collect();
    assert_eq!(sides[..3], [Side::ClientServer, Side::Unattributed, Side::ClientServer]);
    assert_eq!(sides[3..8], [Side::Daemon; 5]);
    let check = split.sum_check().unwrap();
    assert_eq!((check.cli_ms, check.parts_ms), (302.0, 302.0));
    assert!(check.holds() && check.tolerance_ms >= 2.0, "{check:?}");
}

#[test]
fn claim_7_holds_with_shares_of_the_cli_in_its_matrix_and_sentence() {
    let results = results_with(split(5));
    let verdicts = judge(&results);
    let verdict = verdicts.iter().find(|v| v.claim == Claim::DockerClientServer).expect("claim 7 judged");
    assert_eq!(verdict.claim.number(), 7);
    assert_eq!(verdict.verdict, Verdict::Holds);
    assert!(verdict.caveats.is_empty(), "{:?}", verdict.caveats);
    let glance = glance(verdict);
    let matrix = glance.matrix.clone().expect("a matrix of the parts");
    assert_eq!(matrix.columns, ["docker run (CLI)"]);
    assert_eq!(matrix.rows.len(), 9);
    let start = matrix.rows.iter().find(|r| r.subject == "daemon: start").unwrap();
    let cell = start.cells[0].as_ref().unwrap();
    assert!((cell.ratio.unwrap() - 99.0 / 302.0).abs() < 1e-9, "{cell:?}");
    let line = stdout_line(&glance);
    assert!(
        line.starts_with("Claim 7 (Docker is client–server over REST): holds. On this host a docker run took"),
        "{line}"
    );
    // Client–server: 40 + 6 of 302 ms; daemon and runtime: 29 + 0 + 99 + 39 + 24; the CLI's extra 62.
    assert!(line.contains("the client–server architecture was 15% of it"), "{line}");
    assert!(line.contains("the daemon and runtime 63%"), "{line}");
    assert!(line.contains("21% (62.00 ms) is the CLI's extra over direct API calls"), "{line}");
}

#[test]
fn failed_api_launches_make_claim_7_inconclusive_and_no_split_means_no_claim_7() {
    let mut split = split(3);
    for record in &mut split.api.records {
        record.outcome = Outcome::Failed { reason: "docker API start: 400 no such file".to_owned() };
    }
    split.api = series("docker-api", split.api.records.clone());
    let verdict = judge(&results_with(split)).into_iter().find(|v| v.claim == Claim::DockerClientServer).unwrap();
    assert!(
        matches!(verdict.verdict, Verdict::Inconclusive(ref why) if why.contains("Engine API")),
        "{:?}",
        verdict.verdict
    );
    assert!(verdict.caveats.iter().any(|c| c.contains("did not exit cleanly")), "{:?}", verdict.caveats);

    let without = common::quiet_results();
    assert!(judge(&without).iter().all(|v| v.claim != Claim::DockerClientServer));
    // A results.json written before claim 7 loads, with no split.
    let mut json = serde_json::to_value(&without).unwrap();
    json.as_object_mut().unwrap().remove("docker_split");
    let loaded: Results = serde_json::from_value(json).unwrap();
    assert_eq!(loaded.docker_split, None);
}

#[test]
fn the_report_has_claim_7_s_section_versions_and_stacked_bar() {
    let results = results_with(split(5));
    let out = tempfile::tempdir().unwrap();
    if let Err(e) = boxbench_report::plots::register_fonts() {
        boxbench_testkit::skip(format_args!("plots need a font: {e}"));
        return;
    }
    let files = boxbench_report::write_report(&results, out.path()).unwrap();
    let md = std::fs::read_to_string(&files.report_md).unwrap();
    let section = md.split("## Docker's client and server (claim 7)").nth(1).expect("claim 7's section");
    assert!(section.contains("Client 20.10.24+dfsg1; server 20.10.24+dfsg1 (API 1.41, minimum 1.12"), "{section}");
    assert!(section.contains("plots/docker_split.svg"), "{section}");
    assert!(section.contains("| daemon: start | daemon and runtime | 5 | 99.00 ms |"), "{section}");
    let svg = std::fs::read_to_string(out.path().join("plots/docker_split.svg")).unwrap();
    assert!(svg.contains("docker run (CLI)") && svg.contains("daemon: start"), "the stacked bar and its legend");
    let json: Results = serde_json::from_slice(&std::fs::read(&files.results_json).unwrap()).unwrap();
    assert_eq!(json.docker_split.unwrap().api.details["start_ms"].median, 100.0);
}
