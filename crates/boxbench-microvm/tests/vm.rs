//! The VM built and run in this process with the tiny test guests, on the host's /dev/kvm.

mod common;

use std::fs::File;
use std::sync::{Arc, Mutex};

use boxbench_core::MonotonicNs;
use boxbench_microvm::devices::ResetSource;
use boxbench_microvm::{Vm, VmConfig, VmExit, VmObserver};
use boxbench_testkit::require;
use common::Behaviour;

#[derive(Debug, Default)]
struct Milestones(Mutex<Vec<&'static str>>);

impl VmObserver for Milestones {
    fn first_entry(&self, _at: MonotonicNs) {
        self.0.lock().unwrap().push("first_entry");
    }
    fn boot_timer(&self, _at: MonotonicNs) {
        self.0.lock().unwrap().push("boot_timer");
    }
    fn console_marker(&self, _at: MonotonicNs) {
        self.0.lock().unwrap().push("marker");
    }
}

fn boot(kernel_bytes: &[u8], vcpus: u8) -> (VmExit, String, Vec<&'static str>) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "kernel", kernel_bytes);
    let (reader, writer) = nix::unistd::pipe().unwrap();
    let milestones = Arc::new(Milestones::default());
    let mut config = VmConfig::new(&kernel);
    config.vcpus = vcpus;
    config.console = Some(File::from(writer));
    config.observer = milestones.clone();
    let vm = Vm::try_from(config).unwrap();
    let summary = vm.run().unwrap();
    let console = std::io::read_to_string(File::from(reader)).unwrap();
    let seen = milestones.0.lock().unwrap().clone();
    (summary.exit, console, seen)
}

#[test]
fn bzimage_guest_boots_in_long_mode_and_reboots() {
    require!(common::kvm_available());
    let (exit, console, seen) = boot(&common::bzimage(Behaviour::Reboot), 1);
    assert_eq!(exit, VmExit::Reset(ResetSource::I8042), "console: {console}");
    assert_eq!(console, "tiny guest\nBOXBENCH_READY\n");
    assert_eq!(seen, vec!["first_entry", "boot_timer", "marker"]);
}

#[test]
fn elf_guest_boots_through_pvh_and_reboots() {
    require!(common::kvm_available());
    let (exit, console, _) = boot(&common::elf(Behaviour::Reboot, true), 2);
    assert_eq!(exit, VmExit::Reset(ResetSource::I8042), "console: {console}");
    assert_eq!(console, "tiny guest\nBOXBENCH_READY\n");
}

#[test]
fn elf_without_note_boots_in_long_mode() {
    require!(common::kvm_available());
    let (exit, console, _) = boot(&common::elf(Behaviour::Reboot, false), 1);
    assert_eq!(exit, VmExit::Reset(ResetSource::I8042), "console: {console}");
}

#[test]
fn triple_fault_ends_the_vm() {
    require!(common::kvm_available());
    let (exit, console, _) = boot(&common::bzimage(Behaviour::TripleFault), 1);
    assert_eq!(exit, VmExit::TripleFault { vcpu: 0 }, "console: {console}");
    assert!(exit.to_string().contains("triple fault"));
}
