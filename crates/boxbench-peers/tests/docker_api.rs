//! Claim 7 for real: a private dockerd driven through its Engine API (boxbench's own HTTP over the
//! unix socket) beside the docker CLI and the client's start-up, interleaved. The API run reaches
//! the marker with every round trip timed inside its clock; the split of the CLI's wall time adds
//! up to it within the harness's calibration; the server half of `docker version` matches the
//! client's view; deadline kills and failing workloads leave no container or cgroup.

mod common;

use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Launcher, Outcome, Record, Workload};
use boxbench_peers::docker_api::ROUND_TRIPS;
use boxbench_peers::engine_api::{ApiClient, socket_of_host};
use boxbench_peers::{CalibrationLauncher, DockerLauncher, DockerOptions};
use boxbench_report::Series;
use boxbench_report::docker_split::{DockerSplit, EngineServer};
use boxbench_testkit::require;

/// Interleaved rounds of the split: enough for medians with intervals, few for CI time.
const ROUNDS: usize = 6;

fn launcher() -> Result<DockerLauncher, String> {
    if !common::is_root() {
        return Err("docker tests need root (cgroups, dockerd)".to_owned());
    }
    DockerLauncher::new(DockerOptions { start_dockerd: true, ..DockerOptions::default() }).map_err(|e| e.to_string())
}

fn assert_nothing_left(cli: &DockerLauncher) {
    let mut api = ApiClient::connect(&socket_of_host(cli.host()), Duration::from_secs(10)).unwrap();
    let prefix = format!("boxbench-{}-", std::process::id());
    assert_eq!(api.containers_named(&prefix).unwrap(), Vec::<String>::new(), "containers left");
    for backend in ["docker", "docker-api", "docker-client", "calibration:docker", "docker-tapped"] {
        assert_eq!(common::leftover_cgroups(backend), Vec::<std::path::PathBuf>::new(), "{backend} cgroups left");
    }
}

fn check_api_record(record: &Record) {
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
    assert!(record.console.contains(boxbench_core::READY_MARKER), "{}", record.console);
    let exit = record.phases.exit_ms.expect("exit timed");
    let marker = record.phases.workload_ms.expect("marker seen on the attach stream");
    assert!(marker > 0.0 && marker < exit, "marker {marker} ms, exit {exit} ms");
    let calls: f64 = ROUND_TRIPS.iter().map(|t| record.details_ms.get(*t).copied().unwrap_or(f64::NAN)).sum();
    assert!(ROUND_TRIPS.iter().all(|t| record.details_ms[*t] > 0.0), "{:?}", record.details_ms);
    // Every call is made inside the launch's clock.
    assert!(calls < exit, "round trips {calls} ms in a launch of {exit} ms: {:?}", record.details_ms);
    assert!(record.memory.peak_bytes.is_some_and(|b| b > 0), "{:?}", record.memory);
    assert!(record.memory.shared_daemons_pss_bytes.is_some(), "daemons sampled at the marker: {:?}", record.notes);
    assert!(record.notes.iter().any(|n| n.starts_with("launch boundary:")), "{:?}", record.notes);
}

#[test]
fn a_docker_run_split_through_the_engine_api_adds_up_to_the_cli_and_leaves_nothing() {
    let _serial = common::serial();
    let cli = require!(launcher());
    let images = require!(common::container_images());
    let api = cli.api_launcher().unwrap();
    let client = cli.client_launcher();
    let tapped = cli.tapped_launcher().unwrap();
    let busybox = images.paths.rootfs.clone().expect("container images have a rootfs").join("bin/busybox");
    let calibration = CalibrationLauncher::for_backend("docker", &busybox).unwrap();

    // The server half of `docker version`, through the API, is what the docker client says.
    let by_client = std::process::Command::new(&cli.tool().path)
        .args(["-H", cli.host(), "version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"])
        .output()
        .unwrap();
    let by_client = String::from_utf8_lossy(&by_client.stdout).trim().to_owned();
    assert_eq!(by_client, format!("{} {}", api.server().version, api.server().api_version));
    assert_eq!(api.api_version(), api.server().api_version);

    let spec = InstanceSpec::new(Workload::Hello, images.paths.clone());
    let launchers: [&dyn Launcher; 5] = [&cli, &client, &api, &calibration, &tapped];
    let mut records: [Vec<Record>; 5] = Default::default();
    for _ in 0..ROUNDS {
        for (launcher, kept) in launchers.iter().zip(records.iter_mut()) {
            let record = launch_once(*launcher, &spec).unwrap();
            assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{}: {}", launcher.name(), record.console);
            kept.push(record);
        }
    }
    records[2].iter().for_each(check_api_record);
    assert!(records[1].iter().all(|r| r.console.contains("Docker version")), "{}", records[1][0].console);
    // The CLI through the tap: its own calls, each answered inside its launch.
    for record in &records[4] {
        let exit = record.phases.exit_ms.unwrap();
        let first = record.details_ms.get("first_request_ms").copied().unwrap_or(f64::NAN);
        assert!(first > 0.0 && first < exit, "first request at {first} ms of {exit}: {:?}", record.details_ms);
        for call in ["cli_ping_ms", "cli_create_ms", "cli_attach_ms", "cli_wait_ms", "cli_start_ms"] {
            let ms = record.details_ms.get(call).copied().unwrap_or(f64::NAN);
            assert!(ms > 0.0 && ms < exit, "{call}: {ms} ms of {exit}: {:?}", record.details_ms);
        }
    }
    let [cli_records, client_records, api_records, calibration_records, tapped_records] = records;
    let series = |name: &str, records| Series::new(name.to_owned(), "hello".to_owned(), None, records);
    let split = DockerSplit {
        client_version: cli.tool().version.clone(),
        server: EngineServer::default(),
        api_version: api.api_version().to_owned(),
        socket: api.socket().display().to_string(),
        private_daemon: cli.started_daemon(),
        cli: series("docker", cli_records),
        client_startup: series("docker-client", client_records),
        api: series("docker-api", api_records),
        calibration: Some(series("calibration:docker", calibration_records)),
        tapped: Some(series("docker-tapped", tapped_records)),
    };
    let parts = split.parts();
    assert_eq!(parts.len(), 9, "{:?}", parts.iter().map(|p| &p.name).collect::<Vec<_>>());
    assert!(parts.iter().all(|p| p.summary.n == ROUNDS), "every part from every round");
    let check = split.sum_check().unwrap();
    assert!(
        check.holds(),
        "parts {} ms against the CLI's {} ms, tolerance {} ms",
        check.parts_ms,
        check.cli_ms,
        check.tolerance_ms
    );
    assert_nothing_left(&cli);

    // A workload's own status, a program that does not exist, and a deadline: each through the API,
    // each leaving nothing.
    let argv = ["/bin/sh", "-c", "echo BOXBENCH_READY; exit 3"].map(String::from).to_vec();
    let record = launch_once(&api, &InstanceSpec::new(Workload::Command(argv), images.paths.clone())).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 3 }, "console: {}", record.console);
    assert_nothing_left(&cli);
    let argv = vec!["/no/such/program".to_owned()];
    let record = launch_once(&api, &InstanceSpec::new(Workload::Command(argv), images.paths.clone())).unwrap();
    let Outcome::Failed { reason } = &record.outcome else { panic!("{:?}", record.outcome) };
    assert!(reason.starts_with("docker API start: ") && !reason.contains('\n'), "{reason}");
    assert_nothing_left(&cli);
    let mut spec = InstanceSpec::new(Workload::Idle, images.paths.clone());
    spec.timeout = Duration::from_secs(3);
    let record = launch_once(&api, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::DeadlineExceeded { seconds: 3.0 });
    assert!(record.phases.workload_ms.is_some(), "console: {}", record.console);
    assert_nothing_left(&cli);
}
