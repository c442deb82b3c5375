//! Fetching Debian's cloud kernel for real (the `.deb`, about 27 MB, is downloaded once into a cache
//! shared by test runs in the target directory).

use std::path::Path;
use std::sync::Mutex;

use boxbench_images::{ImageBuilder, StepState, artefact};

/// apt can fetch packages here, or why not.
fn apt_lists() -> Result<(), String> {
    let lists = Path::new("/var/lib/apt/lists");
    let any_packages = std::fs::read_dir(lists)
        .map(|dir| dir.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().contains("_Packages")))
        .unwrap_or(false);
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err("apt-get is needed to fetch linux-image-cloud-amd64".to_owned());
    }
    if !any_packages {
        return Err(format!(
            "no package lists in {} to fetch linux-image-cloud-amd64 (apt-get update)",
            lists.display()
        ));
    }
    Ok(())
}

#[test]
fn cloud_kernel_is_fetched_once_and_measured() {
    boxbench_testkit::require!(apt_lists());
    let out = tempfile::tempdir().unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-cache");
    let recipes = ImageBuilder::default_dirs().recipes_dir().to_owned();
    let builder = ImageBuilder::new(out.path().to_owned(), recipes).with_cache_dir(cache);
    assert_eq!(builder.debian_cloud_kernel(), None);

    let steps = Mutex::new(Vec::new());
    let record = |name: &str, state: StepState| steps.lock().unwrap().push((name.to_owned(), state));
    let kernel = builder.fetch_debian_cloud_kernel(&record).unwrap();
    assert!(kernel.package.starts_with("linux-image-") && kernel.package.ends_with("-cloud-amd64"), "{kernel:?}");
    assert_eq!(kernel.package, format!("linux-image-{}", kernel.release));
    let vmlinuz = std::fs::read(&kernel.vmlinuz).unwrap();
    // A bzImage carries the "HdrS" boot protocol signature at offset 0x202.
    assert_eq!(&vmlinuz[0x202..0x206], b"HdrS", "{} is not a bzImage", kernel.vmlinuz.display());
    assert!(kernel.modules_dir.join("kernel").is_dir(), "{kernel:?}");
    assert!(kernel.modules_bytes > 10_000_000, "{kernel:?}");
    assert!(kernel.vmlinuz.starts_with(out.path().join("debian-cloud")));
    assert!(steps.lock().unwrap().iter().any(|(_, s)| *s == StepState::Built));

    // The second fetch finds it unpacked; the unpacked kernel is known without apt too.
    steps.lock().unwrap().clear();
    assert_eq!(builder.fetch_debian_cloud_kernel(&record).unwrap(), kernel);
    assert_eq!(*steps.lock().unwrap(), vec![(artefact::DEBIAN_KERNEL.to_owned(), StepState::UpToDate)]);
    assert_eq!(builder.debian_cloud_kernel(), Some(kernel.clone()));
    // Nothing is left in the staging directory.
    assert!(!out.path().join(".work").exists());

    // Once fetched, the kernel is listed with the built artefacts.
    builder.build(&boxbench_images::NoProgress).unwrap();
    let sizes = builder.sizes().unwrap();
    let vmlinuz = sizes.iter().find(|s| s.name == artefact::DEBIAN_KERNEL).unwrap();
    assert_eq!(vmlinuz.uncompressed_bytes, std::fs::metadata(&kernel.vmlinuz).unwrap().len());
    assert_eq!(vmlinuz.compressed_bytes, vmlinuz.uncompressed_bytes, "a bzImage is compressed already");
    let modules = sizes.iter().find(|s| s.name == artefact::DEBIAN_KERNEL_MODULES).unwrap();
    assert_eq!(modules.uncompressed_bytes, kernel.modules_bytes);
    assert!(modules.compressed_bytes > 0 && modules.compressed_bytes < modules.uncompressed_bytes, "{modules:?}");
    assert_eq!(builder.sizes().unwrap(), sizes, "the second listing reads the kept modules measurement");

    boots_under_qemu_tcg(&kernel.vmlinuz, &builder.paths().initramfs_gz, &kernel.release);
}

/// Boots the kernel with the initramfs under QEMU's TCG emulator (no KVM needed; this host's kvm_pvm
/// does not run Linux guests in useful time), running the uname workload through `/init`.
fn boots_under_qemu_tcg(vmlinuz: &Path, initrd: &Path, release: &str) {
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    boxbench_testkit::require!(
        qemu.exists(),
        "the boot: {} is not installed (Debian package qemu-system-x86)",
        qemu.display()
    );
    let append = format!("console=ttyS0 quiet panic=-1 {}=uname", boxbench_images::WORKLOAD_PARAM);
    let mut child = std::process::Command::new(qemu)
        .args(["-M", "pc", "-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1", "-no-reboot"])
        .args(["-nographic", "-monitor", "none", "-serial", "stdio", "-nodefaults"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &append])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut text).map(|_| text)
    });
    // A generous deadline (TCG on a loaded 2-core host); the guest normally reboots well before.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let console = String::from_utf8_lossy(reader.join().unwrap().unwrap().as_bytes()).into_owned();
    assert!(status.is_some_and(|s| s.success()), "QEMU did not end by the guest's reboot: {console}");
    let lines: Vec<&str> = console.lines().map(|l| l.trim_end_matches('\r')).collect();
    let marker = lines.iter().position(|l| *l == boxbench_core::READY_MARKER).unwrap_or_else(|| panic!("{console}"));
    assert!(lines[marker - 1].ends_with(release), "uname -r before the marker: {console}");
    assert_eq!(lines[marker + 1], format!("{}0", boxbench_images::EXIT_STATUS_PREFIX), "{console}");
}
