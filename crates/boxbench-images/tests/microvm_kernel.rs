//! The micro-VM guest kernel: the config-fragment check as units, the recipe's failure modes, and
//! the real build booted under QEMU TCG to the `uname` workload's marker. The real build takes
//! about 5 minutes on 2 cores: it runs when the kernel is already built for the current recipe or
//! when `BOXBENCH_BUILD_KERNEL=1`, and is a skip through boxbench-testkit otherwise (a failure under
//! `BOXBENCH_REQUIRE_ALL=1`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boxbench_images::microvm_kernel::{
    self, ConfigValue, FragmentOption, MicroVmKernel, MicroVmKernelError, build_microvm_kernel, built_microvm_kernel,
    dropped_options, parse_fragment,
};
use boxbench_images::{ImageBuilder, NoProgress, StepState};
use boxbench_testkit::require;

/// The workspace's guest-images directory.
fn images_dir() -> PathBuf {
    ImageBuilder::default_dirs().out_dir().parent().map(Path::to_owned).unwrap()
}

fn recipe_dir() -> PathBuf {
    images_dir().join("linux")
}

fn option(name: &str, wanted: ConfigValue) -> FragmentOption {
    FragmentOption { name: name.to_owned(), wanted }
}

#[test]
fn fragment_lines_become_wanted_values() {
    let text = "# a comment\n\nCONFIG_PVH=y\n# CONFIG_LEGACY_PTYS is not set\nCONFIG_LOCALVERSION=\"-x\"\n";
    let options = parse_fragment(Path::new("f.config"), text).unwrap();
    assert_eq!(
        options,
        vec![
            option("CONFIG_PVH", ConfigValue::Set("y".into())),
            option("CONFIG_LEGACY_PTYS", ConfigValue::Unset),
            option("CONFIG_LOCALVERSION", ConfigValue::Set("\"-x\"".into())),
        ]
    );
}

#[test]
fn a_bad_fragment_line_is_named_with_its_line_number() {
    let err = parse_fragment(Path::new("guest-images/linux/microvm.config"), "CONFIG_PVH=y\nPVH=y\n").unwrap_err();
    assert!(matches!(err, MicroVmKernelError::BadFragmentLine { line: 2, .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("microvm.config:2") && text.contains("PVH=y"), "{text}");
}

#[test]
fn an_option_missing_from_the_config_is_reported_by_name() {
    let fragment = parse_fragment(
        Path::new("f.config"),
        "CONFIG_64BIT=y\nCONFIG_PVH=y\nCONFIG_NR_CPUS=8\n# CONFIG_LEGACY_PTYS is not set\n# CONFIG_CRYPTO is not set\n",
    )
    .unwrap();
    // PVH absent (Kconfig dropped it), NR_CPUS changed, LEGACY_PTYS still on, CRYPTO absent = unset.
    let dot_config = "CONFIG_64BIT=y\n# CONFIG_PVH is not set\nCONFIG_NR_CPUS=64\nCONFIG_LEGACY_PTYS=y\n";
    let dropped = dropped_options(&fragment, dot_config);
    let names: Vec<&str> = dropped.iter().map(|d| d.option.name.as_str()).collect();
    assert_eq!(names, ["CONFIG_PVH", "CONFIG_NR_CPUS", "CONFIG_LEGACY_PTYS"]);
    assert_eq!(dropped[0].actual, ConfigValue::Unset);
    assert_eq!(dropped[1].actual, ConfigValue::Set("64".into()));

    let err = MicroVmKernelError::FragmentDropped { path: PathBuf::from("microvm.config"), dropped };
    let text = err.to_string();
    assert!(text.contains("CONFIG_PVH=y (it is unset)"), "{text}");
    assert!(text.contains("CONFIG_NR_CPUS=8 (it is 64)"), "{text}");
    assert!(text.contains("CONFIG_LEGACY_PTYS unset (it is y)"), "{text}");

    let complete = "CONFIG_64BIT=y\nCONFIG_PVH=y\nCONFIG_NR_CPUS=8\n";
    assert_eq!(dropped_options(&fragment, complete), []);
}

#[test]
fn the_recipe_fragment_parses_and_asks_for_what_kvm_pvm_needs() {
    let path = recipe_dir().join(microvm_kernel::FRAGMENT_FILE);
    let options = parse_fragment(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let wanted = |name: &str| options.iter().find(|o| o.name == name).map(|o| o.wanted.clone());
    for name in ["CONFIG_64BIT", "CONFIG_PVH", "CONFIG_KVM_GUEST", "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_DEVMEM"] {
        assert_eq!(wanted(name), Some(ConfigValue::Set("y".into())), "{name}");
    }
    // The virtio-blk disk of boxbench's VMM, announced on the command line, with an ext4 root; ext4
    // needs the crypto API (crc32c), kept without its boot-time self-tests.
    for name in [
        "CONFIG_VIRTIO_MMIO",
        "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
        "CONFIG_VIRTIO_BLK",
        "CONFIG_EXT4_FS",
        "CONFIG_CRYPTO_MANAGER_DISABLE_TESTS",
    ] {
        assert_eq!(wanted(name), Some(ConfigValue::Set("y".into())), "{name}");
    }
    for name in ["CONFIG_LEGACY_PTYS", "CONFIG_CPU_MITIGATIONS"] {
        assert_eq!(wanted(name), Some(ConfigValue::Unset), "{name}");
    }
}

#[test]
fn the_kvm_pvm_cmdline_names_every_switch_of_the_patch() {
    let cmdline = microvm_kernel::kvm_pvm_cmdline();
    let patch = std::fs::read_to_string(recipe_dir().join(microvm_kernel::PATCH_FILE)).unwrap();
    for switch in [
        microvm_kernel::pvm_compat::SKIP_INT3_SELFTEST,
        microvm_kernel::pvm_compat::SKIP_FPU_DROP_FWAIT,
        microvm_kernel::pvm_compat::SYSCALL_VIA_FAULT,
    ] {
        assert!(cmdline.split(' ').any(|p| p == switch), "{switch} not in {cmdline}");
        assert!(patch.contains(&format!("early_param(\"{switch}\"")), "{switch} not defined by the patch");
    }
    for param in ["noxsave", "rodata=off", "reboot=p"] {
        assert!(cmdline.split(' ').any(|p| p == param), "{param} not in {cmdline}");
    }
}

#[test]
fn a_recipe_without_its_patch_fails_before_touching_the_output() {
    let recipe = tempfile::tempdir().unwrap();
    std::fs::copy(recipe_dir().join(microvm_kernel::FRAGMENT_FILE), recipe.path().join(microvm_kernel::FRAGMENT_FILE))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = build_microvm_kernel(out.path(), recipe.path(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains(microvm_kernel::PATCH_FILE), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "left behind in the output directory");
}

#[test]
fn a_bad_fragment_fails_before_touching_the_output() {
    let recipe = tempfile::tempdir().unwrap();
    std::fs::write(recipe.path().join(microvm_kernel::FRAGMENT_FILE), "CONFIG_PVH=y\nSERIAL=y\n").unwrap();
    std::fs::copy(recipe_dir().join(microvm_kernel::PATCH_FILE), recipe.path().join(microvm_kernel::PATCH_FILE))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = build_microvm_kernel(out.path(), recipe.path(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains(":2: not a config option: SERIAL=y"), "{err}");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "left behind in the output directory");
}

/// Reads the serial console of `child` until the line holding `marker` is complete or `deadline`
/// passes; returns what it printed.
fn console_until(child: &mut std::process::Child, marker: &str, deadline: Duration) -> String {
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut text = String::new();
    while !text.find(marker).is_some_and(|at| text[at..].contains('\n')) {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => break,
        }
    }
    text
}

/// True if the ELF64 image has a PT_NOTE segment holding the Xen PVH entry note
/// (name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY = 18).
fn has_pvh_note(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).map(|i| phoff + i * phentsize).filter(|&ph| u32_at(ph) == 4).any(|ph| {
        let (mut note, end) = (u64_at(ph + 8), u64_at(ph + 8) + u64_at(ph + 32));
        while note + 12 <= end {
            let (namesz, descsz, kind) = (u32_at(note), u32_at(note + 4), u32_at(note + 8));
            if kind == 18 && &elf[note + 12..note + 12 + namesz] == b"Xen\0" {
                return true;
            }
            note += 12 + namesz.div_ceil(4) * 4 + descsz.div_ceil(4) * 4;
        }
        false
    })
}

/// The QEMU binary, if installed.
fn qemu() -> Option<&'static Path> {
    ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
}

/// Boots `kernel` under QEMU's microvm machine with `accel_args`, `memory` and `initrd`, and
/// returns the console up to the workload's exit status (or whatever came before `deadline`).
fn boot_microvm(
    kernel: &Path,
    initrd: &Path,
    accel_args: &[&str],
    memory: &str,
    cmdline: &str,
    deadline: Duration,
) -> String {
    let mut child = Command::new(qemu().unwrap())
        .args(["-M", "microvm,acpi=off"])
        .args(accel_args)
        .args(["-m", memory, "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let console = console_until(&mut child, "BOXBENCH_EXIT_STATUS=", deadline);
    let _ = child.kill();
    let _ = child.wait();
    console
}

/// Checks that the `uname` workload printed `release` (not the host's) right before the marker.
fn assert_guest_release(console: &str, release: &str) {
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let lines: Vec<&str> = console.lines().map(str::trim).collect();
    let marker = lines.iter().position(|l| *l == boxbench_core::READY_MARKER).unwrap_or_else(|| {
        panic!("no {} on the console:\n{console}", boxbench_core::READY_MARKER);
    });
    assert!(marker > 0, "{console}");
    assert_eq!(lines[marker - 1], release, "{console}");
    assert_ne!(lines[marker - 1], host_release.trim());
    assert!(lines.contains(&"BOXBENCH_EXIT_STATUS=0"), "{console}");
}

/// The kernel built for the current recipe, or why there is none.
fn built_kernel() -> Result<MicroVmKernel, String> {
    built_microvm_kernel(&images_dir().join("out"), &recipe_dir()).map_err(|err| err.to_string())?.ok_or_else(|| {
        "the micro-VM kernel is not built (BOXBENCH_BUILD_KERNEL=1 or `boxbench images build`)".to_owned()
    })
}

/// The message for a missing QEMU.
const NO_QEMU: &str = "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)";

#[test]
fn the_built_kernel_boots_under_kvm_with_the_kvm_pvm_parameters() {
    let kernel = require!(built_kernel());
    require!(qemu().is_some(), "{NO_QEMU}");
    require!(Path::new("/dev/kvm").exists(), "no /dev/kvm");
    let kvm_pvm = Path::new("/sys/module/kvm_pvm").exists();
    let initrd = images_dir().join("out/initramfs.cpio");
    if !initrd.is_file() {
        ImageBuilder::default_dirs().build(&NoProgress).unwrap();
    }
    let mut cmdline = "console=ttyS0 panic=-1 boxbench.workload=uname".to_owned();
    if kvm_pvm {
        cmdline = format!("{cmdline} {}", microvm_kernel::kvm_pvm_cmdline());
    } else {
        cmdline.push_str(" reboot=t");
    }
    // Under kvm_pvm all guest kernel code is emulated: about 17 s on an idle host, minutes on a
    // loaded one. The deadline only bounds a hang.
    let accel = ["-enable-kvm", "-cpu", "host,-arch-capabilities", "-device", "isa-debug-exit,iobase=0xcf9,iosize=1"];
    let console = boot_microvm(&kernel.vmlinux, &initrd, &accel, "64", &cmdline, Duration::from_secs(900));
    assert_guest_release(&console, &kernel.release);
    if kvm_pvm {
        assert!(console.contains("pvm_compat: syscall_via_fault on"), "{console}");
    }
}

#[test]
fn the_built_kernel_boots_under_qemu_tcg_and_reports_its_own_release() {
    let out_dir = images_dir().join("out");
    let recipe = recipe_dir();
    let already_built = require!(built_microvm_kernel(&out_dir, &recipe)).is_some();
    require!(
        already_built || std::env::var_os("BOXBENCH_BUILD_KERNEL").is_some_and(|v| v == "1"),
        "the micro-VM kernel is not built (set BOXBENCH_BUILD_KERNEL=1 to build it, ~5 min, or run `boxbench images build`)"
    );
    let steps = Mutex::new(Vec::new());
    let record = |name: &str, state: StepState| steps.lock().unwrap().push((name.to_owned(), state));
    let kernel = build_microvm_kernel(&out_dir, &recipe, &record).unwrap();
    let steps = steps.into_inner().unwrap();
    let last = steps.last().unwrap();
    assert_eq!(last.0, microvm_kernel::step::KERNEL);
    assert!(matches!(last.1, StepState::Built | StepState::UpToDate), "{steps:?}");
    // Built for the recipe as it is now: a second call finds it without building.
    assert_eq!(built_microvm_kernel(&out_dir, &recipe).unwrap().as_ref(), Some(&kernel));

    let vmlinux = std::fs::read(&kernel.vmlinux).unwrap();
    assert_eq!(&vmlinux[..4], b"\x7fELF", "{} is not an ELF", kernel.vmlinux.display());
    assert!(has_pvh_note(&vmlinux), "{} has no PVH entry note", kernel.vmlinux.display());
    let bz_image = std::fs::read(&kernel.bz_image).unwrap();
    assert_eq!(&bz_image[0x202..0x206], b"HdrS", "{} is not a bzImage", kernel.bz_image.display());
    assert!(kernel.release.starts_with("6.1.") && kernel.release.ends_with("-boxbench"), "{kernel:?}");
    let config = std::fs::read_to_string(&kernel.config).unwrap();
    assert!(config.contains("CONFIG_PVH=y") && config.contains("# CONFIG_LEGACY_PTYS is not set"));

    require!(qemu().is_some(), "the boot: {NO_QEMU}");
    let initrd = out_dir.join("initramfs.cpio.gz");
    if !initrd.is_file() {
        ImageBuilder::default_dirs().build(&NoProgress).unwrap();
    }
    let cmdline = "console=ttyS0 reboot=t panic=-1 boxbench.workload=uname";
    let console = boot_microvm(&kernel.vmlinux, &initrd, &["-accel", "tcg"], "256", cmdline, Duration::from_secs(120));
    assert_guest_release(&console, &kernel.release);
    // Without the switches on the command line, the patch stays silent.
    assert!(!console.contains("pvm_compat:"), "{console}");
}
