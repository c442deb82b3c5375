//! boxbench's micro-VM Linux kernel (built by `boxbench images build` into
//! `guest-images/out/microvm-kernel/`) booted by the `microvm` backend on this host's /dev/kvm with the
//! busybox initramfs: the guest's own `uname -r` on the console, the marker, a clean reset with the
//! workload's status, the kvm_pvm labels, and nothing left behind.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use boxbench_core::host::KvmFlavour;
use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, LaunchError, Launcher, Outcome, READY_MARKER, Workload};
use boxbench_images::ImageBuilder;
use boxbench_images::microvm_kernel::{MicroVmKernel, built_microvm_kernel, kvm_pvm_cmdline};
use boxbench_microvm::launcher::{LINUX_ON_PVM_REFUSAL, PVM_COMPAT_NOTE_PREFIX, PVM_EMULATED_NOTE};
use boxbench_microvm::{GuestKind, MicroVmLauncher, MicroVmOptions};
use boxbench_testkit::require;
use common::{assert_nothing_left_behind, our_leftover_cgroups};

/// Generous: about 17 s on an idle kvm_pvm host, but every guest kernel instruction is emulated on the
/// host's CPUs, so it stretches with the host's load (75 s median measured here at load 3-5 on 2 cores).
const DEADLINE: Duration = Duration::from_secs(240);

/// Launches are serialised so "nothing left behind" can be checked on this test process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The built micro-VM kernel and the uncompressed initramfs, or why the test cannot run.
fn guest() -> Result<(MicroVmKernel, PathBuf), String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err("no /dev/kvm".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (the per-instance cgroup needs it)".into());
    }
    let builder = ImageBuilder::default_dirs();
    let out = builder.out_dir();
    let recipe = out.parent().map(|images| images.join("linux")).ok_or("guest-images has no parent")?;
    let kernel = built_microvm_kernel(out, &recipe)
        .map_err(|e| format!("micro-VM kernel: {e}"))?
        .ok_or_else(|| format!("the micro-VM kernel is not built in {} (boxbench images build)", out.display()))?;
    let initramfs = out.join("initramfs.cpio");
    if !initramfs.is_file() {
        return Err(format!("{} is not built (boxbench images build)", initramfs.display()));
    }
    Ok((kernel, initramfs))
}

fn launcher(guest: GuestKind) -> MicroVmLauncher {
    MicroVmLauncher::new(MicroVmOptions { guest, ..MicroVmOptions::default() })
}

fn spec(kernel: &MicroVmKernel, initramfs: PathBuf) -> InstanceSpec {
    let images = ImagePaths { kernel: Some(kernel.vmlinux.clone()), initrd: Some(initramfs), ..ImagePaths::default() };
    let mut spec = InstanceSpec::new(Workload::Uname, images);
    spec.timeout = DEADLINE;
    spec
}

#[test]
fn micro_vm_kernel_boots_to_the_marker_with_its_own_release() {
    let (kernel, initramfs) = require!(guest());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pvm = KvmFlavour::detect() == KvmFlavour::Pvm;
    // The guest boots `quiet`; the patch logs each switch at info level (6), which this test reads:
    // the console shows levels below `loglevel`.
    let launcher = MicroVmLauncher::new(MicroVmOptions {
        guest: GuestKind::MicroVmLinux,
        cmdline_extra: "loglevel=7".to_owned(),
        ..MicroVmOptions::default()
    });
    let cmdline = launcher.cmdline(&Workload::Uname);
    assert!(cmdline.contains(" quiet ") && cmdline.ends_with(" loglevel=7"), "{cmdline}");
    if pvm {
        assert!(cmdline.contains(kvm_pvm_cmdline()) && !cmdline.contains("reboot=k"), "{cmdline}");
    } else {
        assert!(!cmdline.contains("pvm_compat.") && cmdline.contains("reboot=k"), "{cmdline}");
    }

    let record = launch_once(&launcher, &spec(&kernel, initramfs.clone())).unwrap();
    let console = &record.console;
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{}", record.console_tail(30));
    let lines: Vec<&str> = console.lines().map(str::trim).collect();
    let marker = lines.iter().position(|l| *l == READY_MARKER).unwrap_or_else(|| panic!("no marker: {console}"));
    assert!(marker > 0 && lines[marker - 1] == kernel.release, "the guest's uname -r before the marker: {console}");
    let host_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(kernel.release, host_release.trim(), "the guest's release must differ from the host's");
    assert!(record.phases.workload_ms.is_some(), "{:?}", record.phases);

    let compat_notes: Vec<&String> = record.notes.iter().filter(|n| n.starts_with(PVM_COMPAT_NOTE_PREFIX)).collect();
    if pvm {
        assert!(record.notes.iter().any(|n| n == PVM_EMULATED_NOTE), "{:?}", record.notes);
        assert_eq!(compat_notes.len(), 1, "{:?}", record.notes);
        let note = compat_notes[0];
        assert!(note.contains(kvm_pvm_cmdline()) && note.contains("64 MiB"), "{note}");
        assert!(note.contains(&format!("uncompressed initramfs {}", initramfs.display())), "{note}");
        assert!(console.contains("pvm_compat: "), "the patch's switches are on: {console}");
    } else {
        assert!(compat_notes.is_empty(), "{:?}", record.notes);
    }
    assert_nothing_left_behind();
}

/// A stock Linux kernel cannot boot under kvm_pvm, so boxbench's VMM refuses one there (only the
/// micro-VM kernel with its compatibility parameters runs); where guest kernel code runs on hardware
/// it is prepared like any kernel.
#[test]
fn a_stock_linux_kernel_is_refused_on_kvm_pvm_only() {
    let (kernel, initramfs) = require!(guest());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let prepared = launcher(GuestKind::Linux).prepare(&spec(&kernel, initramfs));
    if KvmFlavour::detect() == KvmFlavour::Pvm {
        let err = prepared.expect_err("a stock kernel is refused");
        assert!(matches!(err, LaunchError::Unsupported(_)));
        assert_eq!(err.to_string(), LINUX_ON_PVM_REFUSAL);
        assert!(!err.to_string().contains('\n'));
    } else {
        drop(prepared.expect("a stock kernel is prepared on hardware virtualisation"));
    }
    assert_eq!(our_leftover_cgroups(), Vec::<PathBuf>::new());
}
