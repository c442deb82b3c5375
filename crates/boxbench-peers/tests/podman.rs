//! podman driven end to end on this host: marker, exit status, engine failure, deadline kill, image
//! removal, and nothing left behind.

mod common;

use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Outcome, Workload};
use boxbench_peers::{PodmanLauncher, PodmanOptions};
use boxbench_testkit::require;

/// The launcher, or why this host cannot run it.
fn launcher() -> Result<PodmanLauncher, String> {
    if !common::is_root() {
        return Err("podman tests need root (cgroups)".to_owned());
    }
    PodmanLauncher::new(PodmanOptions::default()).map_err(|e| e.to_string())
}

fn assert_nothing_left(launcher: &PodmanLauncher) {
    assert_eq!(launcher.leftover_containers().unwrap(), Vec::<String>::new());
    assert_eq!(common::leftover_cgroups("podman"), Vec::<std::path::PathBuf>::new());
    let prefix = format!("boxbench-{}-", std::process::id());
    let processes: Vec<_> =
        common::processes_mentioning(&prefix).into_iter().filter(|(_, cmd)| !cmd.contains("cargo")).collect();
    assert!(processes.is_empty(), "processes left: {processes:?}");
}

#[test]
fn podman_hello_exits_cleanly_and_its_image_goes_with_the_launcher() {
    let _serial = common::serial();
    let launcher = require!(launcher());
    let images = require!(common::container_images());
    let mut spec = InstanceSpec::new(Workload::Hello, images.paths.clone());
    spec.memory_limit_bytes = Some(64 << 20);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
    assert!(record.console.contains(boxbench_core::READY_MARKER));
    assert!(record.phases.workload_ms.is_some() && record.phases.exit_ms.is_some());
    assert_eq!(record.phases.ready_ms, None);
    assert!(record.memory.peak_bytes.is_some_and(|b| b > 0));
    assert!(record.memory.pss_bytes.is_some());
    assert_nothing_left(&launcher);
    let ours = format!("boxbench-peers-{}-", std::process::id());
    assert!(launcher.image_names().unwrap().iter().any(|i| i.contains(&ours)), "image imported");
    let storage = launcher.storage_dir().to_owned();
    drop(launcher);
    assert!(!storage.exists(), "podman storage {} removed with the launcher", storage.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(storage.to_str().unwrap()), "no mount left under the storage");
}

#[test]
fn podman_failing_command_status_propagates() {
    let _serial = common::serial();
    let launcher = require!(launcher());
    let images = require!(common::container_images());
    let argv = ["/bin/sh", "-c", "echo BOXBENCH_READY; exit 3"].map(String::from).to_vec();
    let record = launch_once(&launcher, &InstanceSpec::new(Workload::Command(argv), images.paths.clone())).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 3 }, "console: {}", record.console);
    assert_nothing_left(&launcher);
}

#[test]
fn podman_engine_failure_is_not_a_workload_status() {
    let _serial = common::serial();
    let launcher = require!(launcher());
    let images = require!(common::container_images());
    let argv = vec!["/no/such/program".to_owned()];
    let record = launch_once(&launcher, &InstanceSpec::new(Workload::Command(argv), images.paths.clone())).unwrap();
    assert!(matches!(record.outcome, Outcome::Failed { .. }), "{:?}; console: {}", record.outcome, record.console);
    assert_nothing_left(&launcher);
}

#[test]
fn podman_deadline_kills_idle() {
    let _serial = common::serial();
    let launcher = require!(launcher());
    let images = require!(common::container_images());
    let mut spec = InstanceSpec::new(Workload::Idle, images.paths.clone());
    spec.timeout = Duration::from_secs(3);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::DeadlineExceeded { seconds: 3.0 });
    assert!(record.phases.workload_ms.is_some(), "console: {}", record.console);
    assert_nothing_left(&launcher);
}

#[test]
fn podman_prepared_but_never_launched_instance_leaves_nothing() {
    let _serial = common::serial();
    let launcher = require!(launcher());
    let images = require!(common::container_images());
    let instance =
        boxbench_core::Launcher::prepare(&launcher, &InstanceSpec::new(Workload::Hello, images.paths.clone())).unwrap();
    drop(instance);
    assert_nothing_left(&launcher);
}
