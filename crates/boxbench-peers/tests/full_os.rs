//! boxbench's full-OS disk booted for real on this host: as system containers (systemd-nspawn --boot,
//! LXC) of its tree, and as a VM through SeaBIOS and SYSLINUX under QEMU q35 (TCG here: the host's
//! kvm_pvm does not boot stock kernels). Each reaches the disk's workload service after
//! multi-user.target, prints the marker and exits cleanly, and leaves nothing behind. Bad input
//! (no disk, not a disk, no bootable kernel, an init that never reaches the marker) is refused or
//! ended naming the file and the console's last lines.
//!
//! The disk is built on first use (`boxbench images build --full-os`: mmdebstrap, a few minutes).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, Launcher, Outcome, Record, Workload};
use boxbench_images::{FullOsDisk, ImageBuilder};
use boxbench_peers::{GuestKind, Machine, QemuLauncher, QemuOptions, SystemContainer, SystemContainerLauncher};
use boxbench_testkit::require;

/// The built full-OS disk, or why there is none.
fn disk() -> Result<FullOsDisk, String> {
    if !common::is_root() {
        return Err("the full-OS disk and its boots need root".to_owned());
    }
    ImageBuilder::default_dirs().build_full_os_disk(&boxbench_images::progress::NoProgress).map_err(|e| {
        format!("building the full-OS disk (Debian packages mmdebstrap, syslinux, mtools, dosfstools, fdisk): {e}")
    })
}

fn system_container(kind: SystemContainer) -> Result<SystemContainerLauncher, String> {
    SystemContainerLauncher::new(kind).map_err(|e| e.to_string())
}

fn q35() -> Result<QemuLauncher, String> {
    QemuLauncher::new(QemuOptions { machine: Machine::Q35, guest: GuestKind::FullOs, ..Default::default() })
        .map_err(|e| e.to_string())
}

fn spec(workload: Workload, images: ImagePaths, timeout: Duration) -> InstanceSpec {
    let mut spec = InstanceSpec::new(workload, images);
    spec.timeout = timeout;
    spec
}

/// Nothing of an instance of `backend` is left: no cgroup in any hierarchy, no nspawn machine or
/// LXC container, no mount or temporary directory of its own, no process.
fn assert_nothing_left(backend: &str) {
    assert_eq!(common::leftover_cgroups(backend), Vec::<PathBuf>::new(), "{backend} left cgroups");
    let machine = format!("boxbench-{}-", std::process::id());
    let propagate: Vec<_> = std::fs::read_dir("/run/systemd/nspawn/propagate")
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains(&machine)).collect())
        .unwrap_or_default();
    assert!(propagate.is_empty(), "nspawn machines left: {propagate:?}");
    assert!(common::processes_mentioning(&machine).is_empty(), "processes of {machine} left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for needle in ["boxbench-syscontainer-", "boxbench-full-os-", "full-os/rootfs"] {
        assert!(!mounts.contains(needle), "a mount of {needle} is left:\n{mounts}");
    }
    // Another boxbench on the host may be using directories of its own: a leaked one is one no
    // running process names (a live QEMU names its overlay, a live tool its configuration).
    let temp: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("boxbench-syscontainer-") || name.starts_with("boxbench-full-os-")
        })
        .map(|e| e.path())
        .filter(|p| common::processes_mentioning(&p.to_string_lossy()).is_empty())
        .collect();
    assert!(temp.is_empty(), "temporary directories left: {temp:?}");
}

/// The record's phases of a boot of the disk, in the order they happened.
fn assert_boot_phases(record: &Record, names: &[&str]) {
    let mut previous = 0.0;
    for name in names {
        let value =
            record.details_ms.get(*name).copied().unwrap_or_else(|| panic!("no {name}: {:?}", record.details_ms));
        assert!(
            value >= previous,
            "{name} at {value} ms before the previous phase at {previous} ms: {:?}",
            record.details_ms
        );
        previous = value;
    }
    let marker = record.phases.workload_ms.expect("marker time");
    assert!(marker >= previous, "marker at {marker} ms before {previous} ms");
}

fn boots_to_the_marker(kind: SystemContainer) {
    let _serial = common::serial();
    let disk = require!(disk());
    let launcher = require!(system_container(kind));
    let images = ImagePaths { rootfs: Some(disk.rootfs.clone()), ..Default::default() };
    for workload in [Workload::Uname, Workload::Hello] {
        let record = launch_once(&launcher, &spec(workload.clone(), images.clone(), Duration::from_secs(120))).unwrap();
        assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{}", record.console_tail(8));
        assert!(record.console.contains("BOXBENCH_READY"));
        if workload == Workload::Uname {
            // A container runs on the host's kernel.
            let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            assert!(record.console.contains(host.trim()), "{}", record.console_tail(8));
        }
        assert_boot_phases(&record, &["init_ms", "multi_user_ms"]);
        assert!(record.memory.peak_bytes.is_some_and(|b| b > 0));
        assert_nothing_left(launcher.name());
    }
}

#[test]
fn nspawn_boots_the_tree_to_the_marker_and_leaves_nothing() {
    boots_to_the_marker(SystemContainer::Nspawn);
}

#[test]
fn lxc_boots_the_tree_to_the_marker_and_leaves_nothing() {
    boots_to_the_marker(SystemContainer::Lxc);
}

#[test]
fn a_launch_cannot_change_the_next() {
    let _serial = common::serial();
    let disk = require!(disk());
    let launcher = require!(system_container(SystemContainer::Nspawn));
    let stamp = disk.rootfs.join("etc/machine-id");
    let before = std::fs::read(&stamp).ok();
    let images = ImagePaths { rootfs: Some(disk.rootfs.clone()), ..Default::default() };
    let record = launch_once(&launcher, &spec(Workload::Hello, images, Duration::from_secs(120))).unwrap();
    assert!(record.outcome.is_success(), "{}", record.console_tail(8));
    // systemd writes a machine id and the journal on boot: into the launch's overlay only.
    assert_eq!(std::fs::read(&stamp).ok(), before);
    assert!(!disk.rootfs.join("var/log/journal").read_dir().is_ok_and(|mut d| d.next().is_some()));
    assert_nothing_left(launcher.name());
}

#[test]
fn q35_boots_the_disk_through_seabios_and_syslinux_to_the_marker() {
    let _serial = common::serial();
    let disk = require!(disk());
    let launcher = require!(q35());
    let images = ImagePaths { disk: Some(disk.bootable.clone()), ..Default::default() };
    // A TCG boot of Debian to multi-user.target takes a minute or two on a loaded host.
    let record = launch_once(&launcher, &spec(Workload::Uname, images, Duration::from_secs(900))).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{}", record.console_tail(12));
    assert!(record.console.contains("SYSLINUX"), "the boot loader ran: {}", record.console_tail(12));
    let release = disk.kernel_release.clone().expect("the disk has a kernel");
    assert!(record.console.contains(&format!("{release}\r\nBOXBENCH_READY")) || record.console.contains(&release));
    assert_boot_phases(&record, &["loader_ms", "kernel_ms", "initrd_ms", "init_ms", "multi_user_ms"]);
    assert_nothing_left(launcher.name());
}

#[test]
fn a_disk_that_is_missing_or_not_a_disk_is_refused_naming_it() {
    let launcher = require!(if common::is_root() { q35() } else { Err("QEMU tests need root (cgroups)".to_owned()) });
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.raw");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a disk image").unwrap();
    for disk in [&missing, &text] {
        let images = ImagePaths { disk: Some(disk.clone()), ..Default::default() };
        let err = launcher.prepare(&spec(Workload::Hello, images, Duration::from_secs(5))).unwrap_err().to_string();
        assert!(err.starts_with(&disk.display().to_string()), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
    assert_nothing_left(launcher.name());
}

/// A tiny bootable disk whose SYSLINUX finds no kernel it can boot (the "kernel" is a text file).
fn disk_without_a_kernel(dir: &Path) -> Result<PathBuf, String> {
    let root = dir.join("root.ext4");
    std::fs::File::create(&root).and_then(|f| f.set_len(8 << 20)).map_err(|e| e.to_string())?;
    let made = std::process::Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&root).status();
    if !made.is_ok_and(|s| s.success()) {
        return Err("mkfs.ext4 (Debian package e2fsprogs)".to_owned());
    }
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, "this is not a kernel").map_err(|e| e.to_string())?;
    let bootable = dir.join("bootable.raw");
    let work = dir.join("work");
    std::fs::create_dir(&work).map_err(|e| e.to_string())?;
    boxbench_images::full_os_guest::make_bootable_disk(&root, &kernel, &kernel, "boxbench-root", &work, &bootable)
        .map_err(|e| e.to_string())?;
    Ok(bootable)
}

#[test]
fn a_disk_without_a_bootable_kernel_ends_at_its_deadline_with_the_boot_loader_s_lines() {
    let _serial = common::serial();
    let launcher = require!(if common::is_root() { q35() } else { Err("QEMU tests need root (cgroups)".to_owned()) });
    let dir = tempfile::tempdir().unwrap();
    let disk = require!(disk_without_a_kernel(dir.path()));
    let images = ImagePaths { disk: Some(disk), ..Default::default() };
    let record = launch_once(&launcher, &spec(Workload::Hello, images, Duration::from_secs(60))).unwrap();
    assert!(matches!(record.outcome, Outcome::DeadlineExceeded { .. }), "{:?}", record.outcome);
    assert!(record.console.contains("SYSLINUX"), "{}", record.console_tail(8));
    assert!(!record.console.contains("BOXBENCH_READY"));
    assert_nothing_left(launcher.name());
}

#[test]
fn a_tree_that_is_not_bootable_is_refused_and_an_init_that_never_reaches_the_marker_is_killed() {
    let _serial = common::serial();
    let launcher = require!(if common::is_root() {
        system_container(SystemContainer::Nspawn)
    } else {
        Err("system containers need root".to_owned())
    });
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("boxbench")).unwrap();
    let images = ImagePaths { rootfs: Some(tree.clone()), ..Default::default() };
    let err = launcher.prepare(&spec(Workload::Hello, images.clone(), Duration::from_secs(5))).unwrap_err().to_string();
    assert!(err.starts_with(&tree.display().to_string()) && err.contains("no /lib/systemd/systemd"), "{err}");

    // An "init" that boots nothing: the launch ends at its deadline, killed with everything it made.
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).is_file());
    let busybox = require!(busybox.ok_or("no busybox to make a tree (Debian package busybox-static)"));
    for dir in ["bin", "lib/systemd", "etc", "proc", "sys", "dev", "run", "tmp", "usr/lib"] {
        std::fs::create_dir_all(tree.join(dir)).unwrap();
    }
    std::fs::copy(busybox, tree.join("bin/sh")).unwrap();
    std::fs::copy(busybox, tree.join("bin/sleep")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=boxbench-test\n").unwrap();
    let executable = |path: PathBuf, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    executable(tree.join("lib/systemd/systemd"), "#!/bin/sh\nexec sleep 1000\n");
    executable(tree.join("boxbench/run-workload"), "#!/bin/sh\n");
    let record = launch_once(&launcher, &spec(Workload::Hello, images, Duration::from_secs(10))).unwrap();
    assert!(matches!(record.outcome, Outcome::DeadlineExceeded { .. }), "{:?}: {}", record.outcome, record.console);
    assert!(!record.console.contains("BOXBENCH_READY"));
    assert_nothing_left(launcher.name());
}
