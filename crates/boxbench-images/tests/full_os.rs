//! The full-OS VM disk built for real. Building it downloads ~120 Debian packages and takes minutes,
//! so the real build runs when `BOXBENCH_FULL_OS=1` (`scripts/test.sh` sets it) or when the
//! workspace's disk was built already (then it is checked as it is, a cache hit); otherwise, or
//! without root and the tools, it is a skip through boxbench-testkit, a failure under
//! `BOXBENCH_REQUIRE_ALL=1`. It builds into the workspace's `guest-images/out/`, where `boxbench`
//! finds it. A failing build (a suite Debian does not have) runs whenever root and mmdebstrap are
//! there: it fails within seconds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use boxbench_images::full_os::{self, FullOsRecipe};
use boxbench_images::{ImageBuilder, ImageError, NoProgress, StepState, artefact};
use boxbench_testkit::require;

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// This host can build and check the disk, or why not: what is missing and the Debian package that
/// provides it.
fn can_build() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("building the full-OS disk needs root (mmdebstrap --mode=root)".to_owned());
    }
    let tools = [
        ("mmdebstrap", "mmdebstrap"),
        ("mkfs.ext4", "e2fsprogs"),
        ("dumpe2fs", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
        ("tar", "tar"),
    ];
    let missing: Vec<String> = tools
        .into_iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(tool, package)| format!("{tool} (Debian package {package})"))
        .collect();
    if missing.is_empty() { Ok(()) } else { Err(format!("not installed: {}", missing.join(", "))) }
}

/// The full-OS build was asked for (`scripts/test.sh` sets `BOXBENCH_FULL_OS=1`).
fn asked() -> bool {
    std::env::var("BOXBENCH_FULL_OS").is_ok_and(|v| v == "1")
}

/// Nothing mounted under `dir`, and no staging directory.
fn assert_nothing_left_behind(out_dir: &Path) {
    assert!(
        boxbench_core::mountinfo::mounts_under(out_dir).is_empty(),
        "{:?}",
        boxbench_core::mountinfo::mounts_under(out_dir)
    );
    assert!(!out_dir.join(full_os::DIR).join(".work").exists(), "staging directory left behind");
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json_u64(text: &str, key: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(text).unwrap();
    value[key].as_u64().unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn full_os_disk_is_built_measured_and_cached() {
    let builder = ImageBuilder::default_dirs();
    require!(
        asked() || builder.full_os_disk().is_some(),
        "the full-OS disk is not built and BOXBENCH_FULL_OS=1 is not set (it builds it: minutes of downloads)"
    );
    require!(can_build());
    let steps = Mutex::new(Vec::new());
    let record = |name: &str, state: StepState| steps.lock().unwrap().push((name.to_owned(), state));
    let disk = builder.build_full_os_disk(&record).unwrap();
    assert_nothing_left_behind(builder.out_dir());
    let recorded = steps.lock().unwrap().clone();
    assert!(recorded.iter().all(|(name, _)| name == artefact::FULL_OS_DISK), "{recorded:?}");
    assert!(matches!(recorded.last(), Some((_, StepState::Built | StepState::UpToDate))), "{recorded:?}");

    // An OS: a hundred-odd packages, the cloud kernel with its initramfs, an init.
    assert!(disk.packages > 50, "{disk:?}");
    let list = fs::read_to_string(&disk.package_list).unwrap();
    assert_eq!(list.lines().count(), disk.packages);
    for package in ["systemd-sysv ", "initramfs-tools ", "apt ", "linux-image-cloud-amd64 "] {
        assert!(list.lines().any(|l| l.starts_with(package)), "{package} not installed");
    }
    let release = disk.kernel_release.clone().unwrap();
    assert!(release.ends_with("-cloud-amd64"), "{release}");
    let vmlinuz = fs::read(disk.kernel.as_ref().unwrap()).unwrap();
    assert_eq!(&vmlinuz[0x202..0x206], b"HdrS", "not a bzImage");
    assert!(fs::metadata(disk.initrd.as_ref().unwrap()).unwrap().len() > 1_000_000);

    // The raw disk is an ext4 filesystem holding that tree: read it back with debugfs.
    let raw = disk.raw.to_str().unwrap();
    let superblock = run("dumpe2fs", &["-h", raw]);
    assert!(superblock.contains(&format!("Filesystem volume name:   {}", full_os::FILESYSTEM_LABEL)), "{superblock}");
    let boot = run("debugfs", &["-R", "ls -l /boot", raw]);
    assert!(boot.contains(&format!("vmlinuz-{release}")), "{boot}");
    assert!(boot.contains(&format!("initrd.img-{release}")), "{boot}");
    let fstab = run("debugfs", &["-R", "cat /etc/fstab", raw]);
    assert!(fstab.starts_with(&format!("LABEL={} / ext4", full_os::FILESYSTEM_LABEL)), "{fstab}");
    let modules = run("debugfs", &["-R", &format!("ls /lib/modules/{release}/kernel"), raw]);
    assert!(modules.contains("drivers"), "{modules}");

    // The qcow2 files are qcow2 of the raw disk's size; clusters compress.
    let raw_len = fs::metadata(&disk.raw).unwrap().len();
    assert_eq!(raw_len, disk.disk_size_bytes);
    for qcow2 in [&disk.qcow2, &disk.qcow2_compressed] {
        let info = run("qemu-img", &["info", "--output=json", qcow2.to_str().unwrap()]);
        assert!(info.contains("\"format\": \"qcow2\""), "{info}");
        assert_eq!(json_u64(&info, "virtual-size"), raw_len, "{info}");
    }

    // Its sizes are listed with the other artefacts', each figure what its method says.
    let sizes = builder.sizes().unwrap();
    let size = |name: &str| sizes.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name}"));
    let tree = size(artefact::FULL_OS_TREE);
    assert_eq!((tree.uncompressed_bytes, tree.compressed_bytes), (disk.tree.file_bytes, disk.tree.tar_gz_bytes));
    assert!(tree.compressed_bytes < tree.uncompressed_bytes, "{tree:?}");
    assert!(disk.tree.block_bytes >= disk.tree.file_bytes, "{disk:?}");
    let raw_size = size(artefact::FULL_OS_RAW);
    assert_eq!(raw_size.uncompressed_bytes, raw_len);
    assert!(raw_size.compressed_bytes < raw_size.uncompressed_bytes, "sparse: {raw_size:?}");
    assert!(raw_size.compressed_bytes >= tree.uncompressed_bytes, "the disk holds the files: {raw_size:?}");
    assert!(raw_size.method.contains("allocated"), "{raw_size:?}");
    let qcow2 = size(artefact::FULL_OS_QCOW2);
    assert_eq!(qcow2.uncompressed_bytes, fs::metadata(&disk.qcow2).unwrap().len());
    assert_eq!(qcow2.compressed_bytes, fs::metadata(&disk.qcow2_compressed).unwrap().len());
    assert!(qcow2.compressed_bytes < qcow2.uncompressed_bytes, "{qcow2:?}");
    // The same figures, each under its own name.
    let typed = disk.sizes().unwrap();
    assert_eq!((typed.raw_apparent_bytes, typed.raw_allocated_bytes), (raw_len, raw_size.compressed_bytes));
    assert_eq!((typed.qcow2_bytes, typed.qcow2_compressed_bytes), (qcow2.uncompressed_bytes, qcow2.compressed_bytes));
    assert_eq!((typed.tree_file_bytes, typed.tree_tar_gz_bytes), (tree.uncompressed_bytes, tree.compressed_bytes));

    // The second build finds it up to date and says so.
    steps.lock().unwrap().clear();
    assert_eq!(builder.build_full_os_disk(&record).unwrap(), disk);
    assert_eq!(*steps.lock().unwrap(), vec![(artefact::FULL_OS_DISK.to_owned(), StepState::UpToDate)]);
    assert_eq!(builder.full_os_disk(), Some(disk));
}

#[test]
fn a_suite_debian_does_not_have_fails_naming_mmdebstrap_and_leaves_nothing() {
    require!(can_build());
    let out = tempfile::tempdir().unwrap();
    let builder = ImageBuilder::new(out.path().to_owned(), ImageBuilder::default_dirs().recipes_dir().to_owned());
    let recipe = FullOsRecipe { suite: "boxbench-no-such-suite".to_owned(), ..FullOsRecipe::default() };
    let err = builder.build_full_os_disk_from(&recipe, &NoProgress).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ImageError::FullOs(full_os::FullOsError::Step { .. })), "{text}");
    assert!(text.starts_with("full-OS disk step `mmdebstrap` failed"), "{text}");
    assert!(text.contains("boxbench-no-such-suite"), "{text}");
    assert_nothing_left_behind(out.path());
    let left: Vec<_> = fs::read_dir(out.path().join(full_os::DIR)).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [".lock"], "only the lock file stays");
    assert_eq!(builder.full_os_disk(), None);
    assert!(builder.sizes().is_err(), "the busybox images were not built either");
}

#[test]
fn a_bad_suite_name_is_refused_before_anything_is_created() {
    let out = tempfile::tempdir().unwrap();
    let builder = ImageBuilder::new(out.path().join("out"), ImageBuilder::default_dirs().recipes_dir().to_owned());
    let recipe = FullOsRecipe { suite: "--bogus".to_owned(), ..FullOsRecipe::default() };
    let err = builder.build_full_os_disk_from(&recipe, &NoProgress).unwrap_err();
    assert_eq!(
        err.to_string(),
        "full-OS suite \"--bogus\" is not a Debian suite name (lower-case letters, digits, '.', '-', '_')"
    );
    assert!(!out.path().join("out").exists());
}

#[test]
fn a_package_debian_does_not_have_is_named() {
    // mmdebstrap downloads and unpacks the essential packages before apt looks for the others: a
    // minute or more, so this runs only when the full-OS build was asked for.
    require!(asked(), "BOXBENCH_FULL_OS=1 is not set (it runs a failing mmdebstrap: a minute of downloads)");
    require!(can_build());
    let out = tempfile::tempdir().unwrap();
    let builder = ImageBuilder::new(out.path().to_owned(), ImageBuilder::default_dirs().recipes_dir().to_owned());
    let recipe = FullOsRecipe { packages: vec!["boxbench-no-such-package".to_owned()], ..FullOsRecipe::default() };
    let err = builder.build_full_os_disk_from(&recipe, &NoProgress).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("full-OS disk step `mmdebstrap` failed"), "{text}");
    assert!(text.contains("apt has no package boxbench-no-such-package in the suite"), "{text}");
    assert_nothing_left_behind(out.path());
    assert_eq!(builder.full_os_disk(), None);
}
