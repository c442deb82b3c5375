//! `boxbench soak` through the real binary: a small clean soak per backend, and Ctrl-C tearing down
//! `soak`, `run` and `compare`.

mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use boxbench_testkit::require;

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");

fn soak_json(backend: &str, count: u32) -> serde_json::Value {
    let out = Command::new(BOXBENCH)
        .args(["soak", "--backend", backend, "--count", &count.to_string(), "--parallel", "2", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report:#}\n{}", String::from_utf8_lossy(&out.stderr));
    report
}

fn assert_clean_soak(report: &serde_json::Value, count: u64) {
    assert_eq!(report["launches"], count, "{report:#}");
    assert_eq!(report["succeeded"], count, "{report:#}");
    assert!(report["failures"].as_object().unwrap().is_empty(), "{report:#}");
    let leftovers = &report["leftovers"];
    for list in ["processes", "mounts", "cgroups", "netns_names", "netns_inodes", "temp_dirs"] {
        assert!(leftovers[list].as_array().unwrap().is_empty(), "{list}: {report:#}");
    }
    assert_eq!(leftovers["fds"], 0, "{report:#}");
    assert_eq!(report["rss"]["grew"], false, "{report:#}");
    assert!(report["rss"]["after_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn fifty_container_launches_leave_the_host_clean() {
    require!(common::is_root(), "the container backend needs root");
    assert_clean_soak(&soak_json("container", 50), 50);
}

#[test]
fn twenty_microvm_launches_leave_the_host_clean() {
    require!(common::is_root(), "the micro-VM backend needs root");
    require!(std::path::Path::new("/dev/kvm").exists(), "the micro-VM backend needs /dev/kvm");
    assert_clean_soak(&soak_json("microvm", 20), 20);
}

/// Waits for `child` at most `patience` (a bound against a hang, not a timing assertion).
fn wait_bounded(child: &mut Child, patience: Duration) -> ExitStatus {
    let give_up = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > give_up {
            child.kill().unwrap();
            panic!("boxbench still running {patience:?} after SIGINT");
        }
        sleep(Duration::from_millis(20));
    }
}

/// Starts boxbench with `args` (an `idle` workload, so an instance is in flight), sends SIGINT once
/// its instance cgroup exists, and checks it ends non-zero with nothing left.
fn interrupt_tears_down(args: &[&str]) {
    let temp_before = common::temp_entries();
    let mut child = Command::new(BOXBENCH).args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let give_up = Instant::now() + Duration::from_secs(60);
    while common::cgroups_of(pid).is_empty() {
        assert!(Instant::now() < give_up, "no instance cgroup appeared for {args:?}");
        assert!(child.try_wait().unwrap().is_none(), "boxbench {args:?} ended before it was interrupted");
        sleep(Duration::from_millis(1));
    }
    let kill = Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(kill.success());
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success(), "{args:?} exited {status} after SIGINT");
    assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{args:?}: {stderr}");
    common::assert_clean_after(pid, &temp_before, &format!("{args:?}"));
}

#[test]
fn sigint_during_a_soak_kills_the_instances_and_exits_non_zero() {
    require!(common::is_root(), "the container backend needs root");
    interrupt_tears_down(&[
        "soak",
        "--backend",
        "container",
        "--count",
        "1000",
        "--parallel",
        "2",
        "--workload",
        "idle",
    ]);
}

#[test]
fn sigint_during_a_run_kills_the_instance_and_exits_non_zero() {
    require!(common::is_root(), "the container backend needs root");
    interrupt_tears_down(&["run", "--backend", "container", "--runs", "1000", "--workload", "idle"]);
}

#[test]
fn sigint_during_a_compare_stops_it_without_a_report_and_exits_non_zero() {
    require!(common::is_root(), "the container backend needs root");
    let out = tempfile::tempdir().unwrap();
    let report_dir = out.path().join("report");
    let report = report_dir.display().to_string();
    // --no-full-os: on a fresh host compare would first spend minutes building the full-OS disk.
    let args = ["compare", "-b", "container", "--runs", "100000", "--warmup", "0", "--uname-runs", "0", "--no-full-os"];
    interrupt_tears_down(&[&args[..], &["--density", "0", "--out", &report]].concat());
    assert!(!report_dir.exists(), "an interrupted compare wrote {report}");
}
