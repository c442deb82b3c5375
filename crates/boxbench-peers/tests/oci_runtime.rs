//! crun, runc, youki and runsc (gVisor) driven end to end on this host: marker, exit status, runtime failure, deadline kill,
//! and nothing left behind after each.

mod common;

use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, LaunchError, Launcher, Outcome, Workload};
use boxbench_peers::{OciRuntime, OciRuntimeLauncher};
use boxbench_testkit::require;

/// The launcher, or why this host cannot run it.
fn launcher(runtime: OciRuntime) -> Result<OciRuntimeLauncher, String> {
    if !common::is_root() {
        return Err(format!("{} tests need root (cgroups, namespaces)", runtime.name()));
    }
    OciRuntimeLauncher::new(runtime).map_err(|e| e.to_string())
}

fn assert_nothing_left(launcher: &OciRuntimeLauncher) {
    let state: Vec<_> = std::fs::read_dir(launcher.state_root()).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(state.is_empty(), "{} state left: {state:?}", launcher.name());
    let list = std::process::Command::new(&launcher.tool().path)
        .arg(format!("--root={}", launcher.state_root().display()))
        .args(["list", "-q"])
        .output()
        .unwrap();
    // youki ignores `-q` and prints its table's header even when it has no container.
    let listed = String::from_utf8_lossy(&list.stdout);
    let containers: Vec<&str> = listed.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("ID ")).collect();
    assert!(containers.is_empty(), "containers left: {list:?}");
    assert_eq!(common::leftover_cgroups(launcher.name()), Vec::<std::path::PathBuf>::new());
    let prefix = format!("boxbench-{}-", std::process::id());
    let processes: Vec<_> =
        common::processes_mentioning(&prefix).into_iter().filter(|(_, cmd)| cmd.contains(launcher.name())).collect();
    assert!(processes.is_empty(), "processes left: {processes:?}");
}

fn hello_exits_cleanly(runtime: OciRuntime) {
    let _serial = common::serial();
    let launcher = require!(launcher(runtime));
    let images = require!(common::container_images());
    let mut spec = InstanceSpec::new(Workload::Hello, images.paths.clone());
    spec.memory_limit_bytes = Some(64 << 20);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
    assert_eq!(record.exit_code, Some(0));
    assert!(record.console.contains(boxbench_core::READY_MARKER), "console: {}", record.console);
    let workload = record.phases.workload_ms.expect("marker timed");
    let exit = record.phases.exit_ms.expect("exit timed");
    assert!(workload <= exit);
    assert_eq!(record.phases.ready_ms, None);
    assert_eq!(record.phases.userspace_ms, None);
    assert!(record.memory.peak_bytes.is_some_and(|b| b > 0));
    assert!(record.memory.pss_bytes.is_some(), "PSS sampled at the marker");
    assert!(record.notes.iter().any(|n| n.contains(runtime.name())));
    assert_nothing_left(&launcher);
}

fn failing_command_status_propagates(runtime: OciRuntime) {
    let _serial = common::serial();
    let launcher = require!(launcher(runtime));
    let images = require!(common::container_images());
    let argv = ["/bin/sh", "-c", "echo BOXBENCH_READY; exit 3"].map(String::from).to_vec();
    let record = launch_once(&launcher, &InstanceSpec::new(Workload::Command(argv), images.paths.clone())).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 3 }, "console: {}", record.console);
    assert_eq!(record.exit_code, Some(3));
    assert_nothing_left(&launcher);
}

fn runtime_failure_is_not_a_workload_status(runtime: OciRuntime) {
    let _serial = common::serial();
    let launcher = require!(launcher(runtime));
    let images = require!(common::container_images());
    let argv = vec!["/no/such/program".to_owned()];
    let record = launch_once(&launcher, &InstanceSpec::new(Workload::Command(argv), images.paths.clone())).unwrap();
    match &record.outcome {
        Outcome::Failed { reason } => assert!(reason.contains("/no/such/program"), "reason: {reason}"),
        other => panic!("expected a runtime failure, got {other:?}; console: {}", record.console),
    }
    assert_eq!(record.exit_code, None);
    assert_nothing_left(&launcher);
}

fn deadline_kills_idle(runtime: OciRuntime) {
    let _serial = common::serial();
    let launcher = require!(launcher(runtime));
    let images = require!(common::container_images());
    let mut spec = InstanceSpec::new(Workload::Idle, images.paths.clone());
    spec.timeout = Duration::from_millis(1500);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::DeadlineExceeded { seconds: 1.5 });
    assert!(record.phases.workload_ms.is_some(), "idle printed its marker before the deadline");
    assert_nothing_left(&launcher);
}

fn missing_workload_script_is_named(runtime: OciRuntime) {
    let _serial = common::serial();
    let launcher = require!(launcher(runtime));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rootfs")).unwrap();
    let images = boxbench_core::ImagePaths { rootfs: Some(dir.path().join("rootfs")), ..Default::default() };
    let err = launcher.prepare(&InstanceSpec::new(Workload::Hello, images)).unwrap_err();
    assert!(matches!(err, LaunchError::InvalidSpec(_)), "{err:?}");
    assert!(err.to_string().contains("boxbench/workloads/hello"), "{err}");
    assert_nothing_left(&launcher);
}

#[test]
fn crun_hello_exits_cleanly() {
    hello_exits_cleanly(OciRuntime::Crun);
}

#[test]
fn runc_hello_exits_cleanly() {
    hello_exits_cleanly(OciRuntime::Runc);
}

#[test]
fn crun_failing_command_status_propagates() {
    failing_command_status_propagates(OciRuntime::Crun);
}

#[test]
fn runc_failing_command_status_propagates() {
    failing_command_status_propagates(OciRuntime::Runc);
}

#[test]
fn crun_runtime_failure_is_not_a_workload_status() {
    runtime_failure_is_not_a_workload_status(OciRuntime::Crun);
}

#[test]
fn runc_runtime_failure_is_not_a_workload_status() {
    runtime_failure_is_not_a_workload_status(OciRuntime::Runc);
}

#[test]
fn crun_deadline_kills_idle() {
    deadline_kills_idle(OciRuntime::Crun);
}

#[test]
fn runc_deadline_kills_idle() {
    deadline_kills_idle(OciRuntime::Runc);
}

#[test]
fn crun_missing_workload_script_is_named() {
    missing_workload_script_is_named(OciRuntime::Crun);
}

#[test]
fn runc_missing_workload_script_is_named() {
    missing_workload_script_is_named(OciRuntime::Runc);
}

#[test]
fn youki_hello_exits_cleanly() {
    hello_exits_cleanly(OciRuntime::Youki);
}

#[test]
fn runsc_hello_exits_cleanly() {
    hello_exits_cleanly(OciRuntime::Runsc);
}

#[test]
fn youki_failing_command_status_propagates() {
    failing_command_status_propagates(OciRuntime::Youki);
}

#[test]
fn runsc_failing_command_status_propagates() {
    failing_command_status_propagates(OciRuntime::Runsc);
}

#[test]
fn youki_runtime_failure_is_not_a_workload_status() {
    runtime_failure_is_not_a_workload_status(OciRuntime::Youki);
}

#[test]
fn runsc_runtime_failure_is_not_a_workload_status() {
    runtime_failure_is_not_a_workload_status(OciRuntime::Runsc);
}

#[test]
fn youki_deadline_kills_idle() {
    deadline_kills_idle(OciRuntime::Youki);
}

#[test]
fn runsc_deadline_kills_idle() {
    deadline_kills_idle(OciRuntime::Runsc);
}

#[test]
fn youki_missing_workload_script_is_named() {
    missing_workload_script_is_named(OciRuntime::Youki);
}

#[test]
fn runsc_missing_workload_script_is_named() {
    missing_workload_script_is_named(OciRuntime::Runsc);
}

/// The kernel each runtime's container sees: youki's is the host's, runsc's is gVisor's own (claim
/// 4's third kind), and the record says which platform gVisor used.
#[test]
fn uname_is_the_hosts_under_youki_and_gvisors_under_runsc() {
    let _serial = common::serial();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_owned();
    for runtime in [OciRuntime::Youki, OciRuntime::Runsc] {
        let launcher = require!(launcher(runtime));
        let images = require!(common::container_images());
        let record = launch_once(&launcher, &InstanceSpec::new(Workload::Uname, images.paths.clone())).unwrap();
        assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
        let release = record.console.lines().next().unwrap_or_default().trim().to_owned();
        assert!(!release.is_empty(), "console: {}", record.console);
        if runtime.is_application_kernel() {
            assert_ne!(release, host, "runsc's workload saw the host's kernel");
            assert!(record.notes.iter().any(|n| n.contains("--platform=ptrace")), "notes: {:?}", record.notes);
        } else {
            assert_eq!(release, host);
        }
        assert_nothing_left(&launcher);
    }
}

#[test]
fn prepared_but_never_launched_instance_leaves_nothing() {
    let _serial = common::serial();
    let launcher = require!(launcher(OciRuntime::Crun));
    let images = require!(common::container_images());
    let instance = launcher.prepare(&InstanceSpec::new(Workload::Hello, images.paths.clone())).unwrap();
    assert_eq!(common::leftover_cgroups("crun").len(), 1, "the instance cgroup exists once prepared");
    drop(instance);
    assert_nothing_left(&launcher);
    let bundles: Vec<_> = std::fs::read_dir(launcher.state_root().parent().unwrap().join("bundles"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(bundles.is_empty(), "bundle directories left: {bundles:?}");
}

/// The spec's memory limit reaches the container: a 64 MiB buffer passes without a limit and is
/// killed under a 16 MiB one. On a v2 memory controller the kill is reported as OutOfMemory; on v1
/// (events are not hierarchical there, and the runtime removes the container's cgroup on exit) it
/// shows as the runtime's "killed by signal 9" (youki: exit status 9).
fn memory_limit_applies(runtime: OciRuntime) {
    let _serial = common::serial();
    let launcher = require!(launcher(runtime));
    let images = require!(common::container_images());
    let argv = ["/bin/sh", "-c", "echo BOXBENCH_READY; dd if=/dev/zero of=/dev/null bs=64M count=1"]
        .map(String::from)
        .to_vec();
    let mut spec = InstanceSpec::new(Workload::Command(argv), images.paths.clone());
    let unlimited = launch_once(&launcher, &spec).unwrap();
    assert_eq!(unlimited.outcome, Outcome::Exited { code: 0 }, "console: {}", unlimited.console);
    spec.memory_limit_bytes = Some(16 << 20);
    let limited = launch_once(&launcher, &spec).unwrap();
    // youki 0.7.0 exits with the bare signal number (9, not 128 + 9) when its container is killed.
    let youki_killed = runtime == OciRuntime::Youki && limited.outcome == Outcome::Exited { code: 9 };
    assert!(
        youki_killed || matches!(limited.outcome, Outcome::OutOfMemory | Outcome::Signaled { signal: 9 }),
        "{:?}; console: {}",
        limited.outcome,
        limited.console
    );
    assert_nothing_left(&launcher);
}

#[test]
fn crun_memory_limit_applies() {
    memory_limit_applies(OciRuntime::Crun);
}

#[test]
fn runc_memory_limit_applies() {
    memory_limit_applies(OciRuntime::Runc);
}

#[test]
fn youki_memory_limit_applies() {
    memory_limit_applies(OciRuntime::Youki);
}

#[test]
fn runsc_memory_limit_applies() {
    memory_limit_applies(OciRuntime::Runsc);
}
