//! docker driven end to end on this host through a private dockerd (started by the launcher when no
//! daemon runs): marker, exit status, daemon memory notes, deadline kill, and nothing left behind,
//! daemon included.

mod common;

use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Outcome, Workload};
use boxbench_peers::{DockerLauncher, DockerOptions};
use boxbench_testkit::require;

/// The launcher, or why this host cannot run it.
fn launcher() -> Result<DockerLauncher, String> {
    if !common::is_root() {
        return Err("docker tests need root (cgroups, dockerd)".to_owned());
    }
    DockerLauncher::new(DockerOptions { start_dockerd: true, ..DockerOptions::default() }).map_err(|e| e.to_string())
}

fn assert_nothing_left(launcher: &DockerLauncher) {
    assert_eq!(launcher.leftover_containers().unwrap(), Vec::<String>::new());
    assert_eq!(common::leftover_cgroups("docker"), Vec::<std::path::PathBuf>::new());
    let prefix = format!("boxbench-{}-", std::process::id());
    assert!(common::processes_mentioning(&prefix).is_empty(), "processes left");
}

/// One daemon start for all the scenarios (a start costs seconds); each scenario checks leftovers.
#[test]
fn docker_end_to_end() {
    let _serial = common::serial();
    let launcher = require!(launcher());
    let images = require!(common::container_images());

    let mut spec = InstanceSpec::new(Workload::Hello, images.paths.clone());
    spec.memory_limit_bytes = Some(64 << 20);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
    assert!(record.console.contains(boxbench_core::READY_MARKER));
    assert!(record.phases.workload_ms.is_some() && record.phases.exit_ms.is_some());
    assert!(record.memory.peak_bytes.is_some_and(|b| b > 0));
    assert!(record.memory.overhead_bytes.is_some(), "shim measured: {:?}", record.notes);
    assert!(record.notes.iter().any(|n| n.contains("dockerd PSS")), "{:?}", record.notes);
    // dockerd and containerd, shared by every container: a structured figure beside the note, and
    // more than the shim alone.
    let daemons = record.memory.shared_daemons_pss_bytes.expect("daemons' PSS measured");
    assert!(daemons > record.memory.overhead_bytes.unwrap_or(0), "{:?}", record.memory);
    assert_nothing_left(&launcher);

    let argv = ["/bin/sh", "-c", "echo BOXBENCH_READY; exit 3"].map(String::from).to_vec();
    let record = launch_once(&launcher, &InstanceSpec::new(Workload::Command(argv), images.paths.clone())).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 3 }, "console: {}", record.console);
    assert_nothing_left(&launcher);

    let argv = vec!["/no/such/program".to_owned()];
    let record = launch_once(&launcher, &InstanceSpec::new(Workload::Command(argv), images.paths.clone())).unwrap();
    assert!(matches!(record.outcome, Outcome::Failed { .. }), "{:?}; console: {}", record.outcome, record.console);
    assert_nothing_left(&launcher);

    let mut spec = InstanceSpec::new(Workload::Idle, images.paths.clone());
    spec.timeout = Duration::from_secs(3);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::DeadlineExceeded { seconds: 3.0 });
    assert!(record.phases.workload_ms.is_some(), "console: {}", record.console);
    assert_nothing_left(&launcher);

    let ours = format!("boxbench-peers-{}-", std::process::id());
    assert!(launcher.image_names().unwrap().iter().any(|i| i.contains(&ours)), "image imported");
    let started = launcher.started_daemon();
    drop(launcher);
    if started {
        let daemons: Vec<_> = common::processes_mentioning("boxbench-dockerd-");
        assert!(daemons.is_empty(), "private dockerd/containerd left: {daemons:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains("boxbench-dockerd-"), "no mount of the private daemon left");
    }
}
