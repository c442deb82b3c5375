//! Snapshots of boxbench's own guest taken at its marker by the `microvm` backend, and VMs restored
//! from them; bad snapshots refused with one line and nothing left behind.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, LaunchError, Launcher, Outcome, READY_MARKER, Record, Workload};
use boxbench_guest::GuestReport;
use boxbench_microvm::snapshot::{MEMORY_FILE, STATE_FILE};
use boxbench_microvm::{MicroVmLauncher, MicroVmOptions};
use boxbench_testkit::require;
use common::assert_nothing_left_behind;

/// Launches are serialised so "nothing left behind" can be checked on this test process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn spec(vcpus: u8, timeout: Duration) -> InstanceSpec {
    let images = ImagePaths { kernel: Some(boxbench_guest::elf_path().to_owned()), ..ImagePaths::default() };
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.vcpus = vcpus;
    spec.timeout = timeout;
    // Small guests keep the snapshot files (and the copies below) small.
    spec.memory_limit_bytes = Some(64 << 20);
    spec
}

fn snapshotting(dir: &Path, extra: &str) -> MicroVmLauncher {
    MicroVmLauncher::new(MicroVmOptions {
        snapshot_at_marker: Some(dir.to_owned()),
        cmdline_extra: extra.to_owned(),
        ..MicroVmOptions::default()
    })
}

fn restoring(dir: &Path) -> MicroVmLauncher {
    MicroVmLauncher::new(MicroVmOptions { restore: Some(dir.to_owned()), ..MicroVmOptions::default() })
}

fn assert_reached_exit_with_report(record: &Record, vcpus: u8, what: &str) {
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{what}: {}", record.console);
    assert!(record.console.contains(READY_MARKER), "{what}: {}", record.console);
    let report = GuestReport::parse(&record.console).unwrap_or_else(|e| panic!("{what}: {e}\n{}", record.console));
    assert_eq!(report.cpus, u32::from(vcpus), "{what}: {}", record.console);
    assert!(record.phases.workload_ms.is_some() && record.phases.exit_ms.is_some(), "{what}: {:?}", record.phases);
}

/// Takes a snapshot of a `vcpus`-vCPU own guest into `dir`.
fn take_snapshot(dir: &Path, vcpus: u8) -> Record {
    let record = launch_once(&snapshotting(dir, ""), &spec(vcpus, Duration::from_secs(30))).unwrap();
    assert_reached_exit_with_report(&record, vcpus, "the snapshotted VM");
    assert!(record.notes.iter().any(|n| n.starts_with("snapshot written to")), "{:?}", record.notes);
    record
}

#[test]
fn a_snapshot_restored_twice_gives_two_vms_that_reach_exit() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for vcpus in [1u8, 2] {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join("snap");
        let booted = take_snapshot(&snapshot, vcpus);
        let memory_before = std::fs::read(snapshot.join(MEMORY_FILE)).unwrap();
        for round in 1..=2 {
            let record = launch_once(&restoring(&snapshot), &spec(vcpus, Duration::from_secs(30))).unwrap();
            let what = format!("restore {round} of a {vcpus}-vCPU snapshot");
            assert_reached_exit_with_report(&record, vcpus, &what);
            // The restored guest carries on from the marker: it never booted again.
            assert!(record.phases.userspace_ms.is_none(), "{what}: {:?}", record.phases);
            assert!(!record.console.contains("boxbench-guest entry="), "{what}: {}", record.console);
            assert_eq!(
                GuestReport::parse(&record.console).unwrap(),
                GuestReport::parse(&booted.console).map(|r| GuestReport { entry: None, ..r }).unwrap(),
                "{what}"
            );
            assert_nothing_left_behind();
        }
        // MAP_PRIVATE: the restored VMs' writes never reached the file.
        assert!(std::fs::read(snapshot.join(MEMORY_FILE)).unwrap() == memory_before, "memory file changed");
    }
}

fn prepare_error(launcher: &MicroVmLauncher, spec: &InstanceSpec) -> String {
    match launcher.prepare(spec) {
        Err(LaunchError::InvalidSpec(message)) => message,
        Err(other) => panic!("expected an invalid-spec refusal, got {other}"),
        Ok(_) => panic!("a bad snapshot was accepted"),
    }
}

fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn missing_truncated_corrupt_or_mismatched_snapshots_are_refused_with_one_line() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    take_snapshot(&good, 1);
    let spec = spec(1, Duration::from_secs(30));

    let missing = dir.path().join("missing");
    let message = prepare_error(&restoring(&missing), &spec);
    assert!(message.starts_with(&format!("{}: ", missing.join(STATE_FILE).display())), "{message}");

    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir(&to).unwrap();
        for file in [STATE_FILE, MEMORY_FILE] {
            std::fs::copy(good.join(file), to.join(file)).unwrap();
        }
        to
    };
    let truncated_state = copy("truncated-state");
    let state = std::fs::read(truncated_state.join(STATE_FILE)).unwrap();
    std::fs::write(truncated_state.join(STATE_FILE), &state[..state.len() / 2]).unwrap();
    let truncated_memory = copy("truncated-memory");
    std::fs::File::options().write(true).open(truncated_memory.join(MEMORY_FILE)).unwrap().set_len(4096).unwrap();
    let corrupt = copy("corrupt");
    let mut state = std::fs::read(corrupt.join(STATE_FILE)).unwrap();
    let middle = state.len() / 2;
    state[middle] ^= 0x5a;
    std::fs::write(corrupt.join(STATE_FILE), &state).unwrap();
    let not_a_snapshot = copy("not-a-snapshot");
    std::fs::write(not_a_snapshot.join(STATE_FILE), b"#!/bin/sh\n").unwrap();

    let cases = [
        (&truncated_state, "truncated or corrupt"),
        (&truncated_memory, "(truncated?)"),
        (&corrupt, "truncated or corrupt (checksum mismatch)"),
        (&not_a_snapshot, "not a boxbench VM snapshot"),
    ];
    for (snapshot, expected) in cases {
        let before = snapshot_files(snapshot);
        let message = prepare_error(&restoring(snapshot), &spec);
        assert!(message.contains(expected) && !message.contains('\n'), "{}: {message}", snapshot.display());
        assert!(message.starts_with(&snapshot.display().to_string()), "{message}");
        assert_eq!(snapshot_files(snapshot), before, "a refused snapshot was changed");
        assert_nothing_left_behind();
    }

    let message = prepare_error(&restoring(&good), &self::spec(2, Duration::from_secs(30)));
    assert!(message.ends_with("snapshot of a VM with 64 MiB and 1 vCPU(s), not 64 MiB and 2 vCPU(s)"), "{message}");
    let mut bigger = self::spec(1, Duration::from_secs(30));
    bigger.memory_limit_bytes = Some(128 << 20);
    let message = prepare_error(&restoring(&good), &bigger);
    assert!(message.contains("not 128 MiB and 1 vCPU(s)"), "{message}");
    assert_nothing_left_behind();
}

#[test]
fn a_vm_that_never_prints_its_marker_leaves_no_snapshot_behind() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("never");
    let launcher = snapshotting(&snapshot, boxbench_guest::TEST_SPIN);
    let record = launch_once(&launcher, &spec(1, Duration::from_millis(800))).unwrap();
    assert!(matches!(record.outcome, Outcome::DeadlineExceeded { .. }), "{:?}", record.outcome);
    assert!(record.notes.iter().any(|n| n.starts_with("no snapshot written to")), "{:?}", record.notes);
    assert!(!snapshot.exists(), "the snapshot directory boxbench made is left behind");
    assert_nothing_left_behind();
}
