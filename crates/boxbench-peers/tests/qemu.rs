//! QEMU driven end to end on this host: boxbench's own guest under KVM on both machines, and a Linux
//! guest (Debian kernel + boxbench's initramfs) under the accelerator `Accel::Auto` picks (TCG on a
//! kvm_pvm host): marker, exit status from the guest, deadline kill, nothing left behind.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, Launcher, Outcome, Workload};
use boxbench_peers::{GuestKind, Machine, QemuLauncher, QemuOptions};
use boxbench_testkit::require;

/// The launcher, or why this host cannot run it.
fn launcher(options: QemuOptions) -> Result<QemuLauncher, String> {
    if !common::is_root() {
        return Err("QEMU tests need root (cgroups)".to_owned());
    }
    QemuLauncher::new(options).map_err(|e| e.to_string())
}

/// QEMU with boxbench's own guest on `machine`, or why this host cannot run it.
fn own_guest(machine: Machine) -> Result<(QemuLauncher, ImagePaths), String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err("boxbench's own guest runs under KVM and this host has no /dev/kvm".to_owned());
    }
    let launcher = launcher(QemuOptions { machine, guest: GuestKind::Boxbench, ..Default::default() })?;
    let images = ImagePaths { kernel: Some(boxbench_guest::elf_path().to_owned()), ..Default::default() };
    Ok((launcher, images))
}

/// A Linux kernel ($BOXBENCH_TEST_KERNEL, else the Debian cloud kernel the images crate unpacks) and
/// boxbench's initramfs, or why there are none.
fn linux_images() -> Result<ImagePaths, String> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guest-images/out");
    let kernel = std::env::var_os("BOXBENCH_TEST_KERNEL").map(PathBuf::from).or_else(|| {
        std::fs::read_dir(out.join("debian-cloud/boot"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
    });
    let initrd = out.join("initramfs.cpio.gz");
    match kernel {
        Some(kernel) if initrd.is_file() => {
            Ok(ImagePaths { kernel: Some(kernel), initrd: Some(initrd), ..Default::default() })
        }
        _ => Err("no Linux kernel and initramfs (set BOXBENCH_TEST_KERNEL, or build guest-images/out with the \
                  Debian cloud kernel, package linux-image-cloud-amd64: boxbench images build)"
            .to_owned()),
    }
}

fn assert_nothing_left(launcher: &QemuLauncher) {
    assert_eq!(common::leftover_cgroups(launcher.name()), Vec::<PathBuf>::new());
    let kernel_users: Vec<_> = common::processes_mentioning("qemu-system-x86_64")
        .into_iter()
        .filter(|(pid, _)| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PPid:").map(|v| v.trim().to_owned())))
                == Some(std::process::id().to_string())
        })
        .collect();
    assert!(kernel_users.is_empty(), "QEMU children left: {kernel_users:?}");
}

fn own_guest_boots_and_resets(machine: Machine) {
    let _serial = common::serial();
    let (launcher, images) = require!(own_guest(machine));
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.memory_limit_bytes = Some(64 << 20);
    spec.timeout = Duration::from_secs(120);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
    assert!(record.console.contains("boxbench-guest cpus="), "console: {}", record.console);
    assert!(record.console.contains("mem_mib=64"), "console: {}", record.console);
    assert!(record.phases.workload_ms.is_some() && record.phases.exit_ms.is_some());
    assert!(record.memory.peak_bytes.is_some_and(|b| b > 0));
    assert!(record.notes.iter().any(|n| n.contains("QEMU KVM")), "{:?}", record.notes);
    assert_nothing_left(&launcher);
}

#[test]
fn qemu_microvm_boots_own_guest_under_kvm() {
    own_guest_boots_and_resets(Machine::Microvm);
}

#[test]
fn qemu_q35_boots_own_guest_under_kvm() {
    own_guest_boots_and_resets(Machine::Q35);
}

#[test]
fn qemu_deadline_kills_a_spinning_guest() {
    let _serial = common::serial();
    require!(own_guest(Machine::Microvm));
    let options = QemuOptions {
        guest: GuestKind::Boxbench,
        extra_kernel_args: vec![boxbench_guest::TEST_SPIN.to_owned()],
        ..Default::default()
    };
    let launcher = require!(launcher(options));
    let images = ImagePaths { kernel: Some(boxbench_guest::elf_path().to_owned()), ..Default::default() };
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.timeout = Duration::from_secs(2);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::DeadlineExceeded { seconds: 2.0 });
    assert!(record.console.contains("boxbench-guest cpus="), "console: {}", record.console);
    assert_eq!(record.phases.workload_ms, None);
    assert_nothing_left(&launcher);
}

#[test]
fn qemu_microvm_linux_hello_and_exit_status() {
    let _serial = common::serial();
    let images = require!(linux_images());
    let launcher = require!(launcher(QemuOptions::default()));
    let mut spec = InstanceSpec::new(Workload::Hello, images.clone());
    spec.timeout = Duration::from_secs(120);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console tail: {}", record.console_tail(20));
    assert!(record.phases.workload_ms.is_some());
    // QEMU's own memory beyond guest RAM (its heap, device and emulator state), found by the size of
    // its guest RAM mapping and measured by the definition boxbench's VMM is measured by. A Linux guest
    // still runs after its marker, so QEMU is there to be measured when the marker appears.
    let overhead = record.memory.overhead_bytes.expect("QEMU's guest RAM mapping found in its smaps");
    assert!(overhead > 1 << 20, "QEMU's private memory outside guest RAM: {overhead} bytes");
    assert!(record.memory.peak_bytes.is_some_and(|peak| overhead < peak), "{:?}", record.memory);
    assert!(record.notes.iter().any(|n| n.starts_with("overhead_bytes:")), "{:?}", record.notes);
    if !launcher.uses_kvm() {
        assert!(record.notes.iter().any(|n| n == "QEMU TCG: guest code emulated"), "{:?}", record.notes);
    }
    assert_nothing_left(&launcher);

    // The guest's /init reports a missing workload with status 127: the last boxbench.workload wins.
    let options =
        QemuOptions { extra_kernel_args: vec!["boxbench.workload=no-such-workload".into()], ..Default::default() };
    let launcher = require!(self::launcher(options));
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 127 }, "console tail: {}", record.console_tail(20));
    assert_eq!(record.phases.workload_ms, None);
    assert_nothing_left(&launcher);
}

#[test]
fn qemu_q35_linux_hello() {
    let _serial = common::serial();
    let images = require!(linux_images());
    let launcher = require!(launcher(QemuOptions { machine: Machine::Q35, ..Default::default() }));
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.timeout = Duration::from_secs(120);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console tail: {}", record.console_tail(20));
    assert_nothing_left(&launcher);
}

#[test]
fn qemu_deadline_kills_an_idle_linux_guest() {
    let _serial = common::serial();
    let images = require!(linux_images());
    let launcher = require!(launcher(QemuOptions::default()));
    let mut spec = InstanceSpec::new(Workload::Idle, images);
    // Long enough for a TCG boot on a loaded two-core host (a few seconds), short for a test.
    spec.timeout = Duration::from_secs(30);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::DeadlineExceeded { seconds: 30.0 });
    assert!(record.phases.workload_ms.is_some(), "console tail: {}", record.console_tail(20));
    assert_nothing_left(&launcher);
}

#[test]
fn linux_guest_without_initrd_is_refused() {
    let _serial = common::serial();
    let launcher = require!(launcher(QemuOptions::default()));
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    let images = ImagePaths { kernel: Some(kernel), ..Default::default() };
    let err = launcher.prepare(&InstanceSpec::new(Workload::Hello, images)).unwrap_err();
    assert_eq!(err.to_string(), "qemu-microvm needs images.initrd (boxbench's initramfs) for a Linux guest");
    assert_nothing_left(&launcher);
}
