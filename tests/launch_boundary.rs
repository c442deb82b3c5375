//! The launch boundary is the same for boxbench's own container, its own VMM and the peers: each
//! launch's record says which set-up steps were done before its clock started and how the launched
//! process joined its cgroup (`boxbench_core::boundary`), and those recordings are compared here for
//! real launches of the own container, crun, the own VMM and QEMU.

mod common;

use std::time::Duration;

use boxbench::backends::{self, BackendChoice, BackendOptions, GuestChoice};
use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Workload};
use boxbench_testkit::require;

/// The tests look at every instance cgroup of this process: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The boundary note of one launch of `choice`, or why this host cannot launch it.
fn boundary_of(choice: BackendChoice) -> Result<String, String> {
    let options = BackendOptions { guest: Some(GuestChoice::Boxbench), ..BackendOptions::default() };
    let launcher = backends::launcher(choice, &options).map_err(|e| format!("{}: {e}", choice.name()))?;
    let images = backends::image_paths(choice, &options).map_err(|e| format!("{}: {e}", choice.name()))?;
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.timeout = Duration::from_secs(60);
    let record = launch_once(launcher.as_ref(), &spec).unwrap();
    assert!(record.outcome.is_success(), "{} {}: {}", choice.name(), record.outcome, record.console_tail(5));
    let notes: Vec<&String> = record.notes.iter().filter(|n| n.starts_with("launch boundary: ")).collect();
    assert_eq!(notes.len(), 1, "{}: {:?}", choice.name(), record.notes);
    Ok(notes[0].clone())
}

#[test]
fn own_container_crun_own_vmm_and_qemu_start_their_clocks_after_the_same_set_up() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    require!(common::is_root(), "the launchers need root");
    require!(std::path::Path::new("/dev/kvm").exists(), "the VMMs need /dev/kvm");
    let temp_before = common::temp_entries();
    let container = require!(boundary_of(BackendChoice::Container));
    // The own container and VMM are the reference: the cgroup and its join file before the clock.
    assert!(container.starts_with("launch boundary: instance cgroup created, its "), "{container}");
    assert_eq!(require!(boundary_of(BackendChoice::Microvm)), container, "microvm");
    assert_eq!(require!(boundary_of(BackendChoice::QemuMicrovm)), container, "qemu-microvm");
    // An OCI runtime nests its container's cgroup: on cgroup v2 its processes go into a leaf first,
    // on v1 into the instance cgroup itself; the join rule and the clock are the same.
    let crun = require!(boundary_of(BackendChoice::Crun));
    let crun_flat = crun.replace("instance cgroup created with its runtime leaf", "instance cgroup created");
    assert_eq!(crun_flat, container, "crun");
    common::assert_clean_after(std::process::id(), &temp_before, "the launches");
}

#[test]
fn an_instance_prepared_and_never_launched_leaves_no_cgroup() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    require!(common::is_root(), "the launchers need root");
    let temp_before = common::temp_entries();
    let options = BackendOptions::default();
    for choice in [BackendChoice::Container, BackendChoice::Crun] {
        let launcher = require!(backends::launcher(choice, &options).map_err(|e| format!("{}: {e}", choice.name())));
        let images = require!(backends::image_paths(choice, &options));
        let instance = launcher.prepare(&InstanceSpec::new(Workload::Hello, images)).unwrap();
        assert!(!common::cgroups_of(std::process::id()).is_empty(), "{}: prepare set up the cgroup", choice.name());
        drop(instance);
    }
    common::assert_clean_after(std::process::id(), &temp_before, "prepared instances");
}
