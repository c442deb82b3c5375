//! The `microvm` backend driven through boxbench_core's launch loop on the host's /dev/kvm, with the
//! tiny test guests: outcomes, phases, memory figures, and nothing left behind.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, LaunchError, Launcher, Outcome, Workload};
use boxbench_microvm::{GuestKind, MicroVmLauncher, MicroVmOptions};
use boxbench_testkit::require;
use common::{Behaviour, assert_nothing_left_behind, children_of_this_process};

/// Launches are serialised so "no child process left" can be checked on this test process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn spec(kernel: PathBuf, timeout: Duration) -> InstanceSpec {
    let mut spec = InstanceSpec::new(Workload::Hello, ImagePaths { kernel: Some(kernel), ..ImagePaths::default() });
    spec.timeout = timeout;
    spec
}

fn launcher() -> MicroVmLauncher {
    MicroVmLauncher::new(MicroVmOptions::default())
}

#[test]
fn tiny_guest_runs_to_a_clean_reboot_with_every_phase() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in
        [("bzImage", common::bzimage(Behaviour::Reboot)), ("pvh.elf", common::elf(Behaviour::Reboot, true))]
    {
        let kernel = common::write(dir.path(), name, &bytes);
        let record = launch_once(&launcher(), &spec(kernel, Duration::from_secs(20))).unwrap();
        assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{name}: {}", record.console);
        assert_eq!(record.console, "tiny guest\nBOXBENCH_READY\n");
        let p = &record.phases;
        let (ready, first, user, work, exit) = (
            p.ready_ms.unwrap(),
            p.first_output_ms.unwrap(),
            p.userspace_ms.unwrap(),
            p.workload_ms.unwrap(),
            p.exit_ms.unwrap(),
        );
        // Causal order only (no timing assertions): entry before output, boot timer before the marker
        // (the guest writes it first), everything before the exit.
        assert!(ready <= first && ready <= user && user <= exit && first <= work && work <= exit, "{p:?}");
        assert!(record.memory.peak_bytes.unwrap() > 0);
        assert!(record.memory.pss_bytes.unwrap() > 0);
        assert!(record.memory.overhead_bytes.unwrap() > 0);
        for key in [
            "vmm_start_to_first_run_ms",
            "vmm_cgroup_join_ms",
            "vm_build_ms",
            "kvm_teardown_ms",
            "child_reap_ms",
            "cgroup_remove_ms",
        ] {
            assert!(record.details_ms.get(key).is_some_and(|ms| *ms >= 0.0), "{key}: {:?}", record.details_ms);
        }
        // Notes hold what is true of every launch; this launch's figures are in details_ms.
        assert!(!record.notes.iter().any(|n| n.contains(" ms")), "{:?}", record.notes);
        assert_nothing_left_behind();
    }
}

#[test]
fn overhead_does_not_grow_with_the_parents_memory() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "bzImage", &common::bzimage(Behaviour::Reboot));
    let overhead = || {
        let record = launch_once(&launcher(), &spec(kernel.clone(), Duration::from_secs(20))).unwrap();
        assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{}", record.console);
        assert!(record.notes.iter().any(|n| n.starts_with("overhead_bytes: ")), "{:?}", record.notes);
        record.memory.overhead_bytes.unwrap()
    };
    let alone = overhead();
    // 64 MiB written in the parent: the forked VMM child shares every page of it copy-on-write, so a
    // resident-set figure would grow by 64 MiB; the child's own cost must not.
    const BALLAST: usize = 64 << 20;
    let ballast = std::hint::black_box(vec![0x5au8; BALLAST]);
    let with_ballast = overhead();
    assert_eq!(ballast.iter().step_by(4096).filter(|&&b| b == 0x5a).count(), BALLAST / 4096);
    drop(ballast);
    assert!(
        with_ballast < alone + (BALLAST as u64) / 4,
        "overhead {alone} bytes alone, {with_ballast} with 64 MiB in the parent"
    );
    eprintln!("overhead: {alone} bytes alone, {with_ballast} with 64 MiB in the parent");
    assert_nothing_left_behind();
}

#[test]
fn spinning_guest_is_killed_at_its_deadline() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "spin", &common::bzimage(Behaviour::Spin));
    let record = launch_once(&launcher(), &spec(kernel, Duration::from_millis(500))).unwrap();
    assert!(matches!(record.outcome, Outcome::DeadlineExceeded { .. }), "{:?}", record.outcome);
    assert_eq!(record.console, "tiny guest\n");
    assert_eq!(record.phases.workload_ms, None);
    assert_nothing_left_behind();
}

#[test]
fn the_running_vmm_child_is_confined_by_seccomp() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "spin", &common::bzimage(Behaviour::Spin));
    let mut instance = launcher().prepare(&spec(kernel, Duration::from_secs(20))).unwrap();
    instance.launch().unwrap();
    let children = children_of_this_process();
    assert_eq!(children.len(), 1, "{children:?}");
    // The filter goes on once the VM is built, before the guest runs: poll the child's status.
    let status_file = format!("/proc/{}/status", children[0]);
    let give_up = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = std::fs::read_to_string(&status_file).unwrap();
        if status.lines().any(|l| l == "Seccomp:\t2") || Instant::now() > give_up {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    instance.kill().unwrap();
    let outcome = instance.wait(Instant::now() + Duration::from_secs(10)).unwrap().unwrap();
    let record = instance.finish(outcome).unwrap();
    assert!(status.lines().any(|l| l == "Seccomp:\t2"), "{status}");
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    // Killed at any point of its run: the guest printed all, part or none of its line by then.
    assert!("tiny guest\n".starts_with(&record.console), "{:?}", record.console);
    assert_nothing_left_behind();
}

#[test]
fn triple_fault_is_a_failure_saying_so() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "fault", &common::elf(Behaviour::TripleFault, false));
    let record = launch_once(&launcher(), &spec(kernel, Duration::from_secs(20))).unwrap();
    let Outcome::Failed { reason } = &record.outcome else { panic!("{:?}", record.outcome) };
    assert!(reason.contains("triple fault"), "{reason}");
    assert_nothing_left_behind();
}

/// `fwait` is a KVM error only where guest kernel code is emulated: kvm_pvm's instruction emulator lacks
/// it. There the confined child must report the error and end on its own; on hardware virtualisation
/// the guest runs past it and spins until its deadline.
#[test]
fn fwait_is_a_kvm_error_only_under_kvm_pvm_and_the_confined_child_ends_cleanly() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let kernel = common::write(dir.path(), "fwait", &common::elf(Behaviour::Fwait, false));
    if boxbench_core::host::KvmFlavour::detect() == boxbench_core::host::KvmFlavour::Pvm {
        let record = launch_once(&launcher(), &spec(kernel, Duration::from_secs(20))).unwrap();
        // The child, under its seccomp filter, reported how KVM failed and exited on its own: no
        // SIGSYS, no deadline.
        let Outcome::Failed { reason } = &record.outcome else { panic!("{:?}", record.outcome) };
        assert!(reason.contains("KVM internal error on vCPU 0, suberror 1 (emulation failure)"), "{reason}");
        assert_eq!(record.console, "tiny guest\n");
        assert!(record.details_ms.contains_key("kvm_teardown_ms"), "{:?}", record.details_ms);
    } else {
        let record = launch_once(&launcher(), &spec(kernel, Duration::from_millis(500))).unwrap();
        assert!(matches!(record.outcome, Outcome::DeadlineExceeded { .. }), "{:?}", record.outcome);
        assert_eq!(record.console, "tiny guest\n");
    }
    assert_nothing_left_behind();
}

fn prepare_error(launcher: &MicroVmLauncher, spec: &InstanceSpec) -> LaunchError {
    match launcher.prepare(spec) {
        Ok(instance) => panic!("prepared {instance:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_inputs_are_refused_with_the_setting_or_file_named() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let good = common::write(dir.path(), "good", &common::bzimage(Behaviour::Reboot));
    let random = common::write(dir.path(), "random", &[0x5au8; 8192]);
    let full = common::bzimage(Behaviour::Reboot);
    let truncated = common::write(dir.path(), "truncated", &full[..full.len() - 100]);
    let mut arm = common::elf(Behaviour::Reboot, true);
    arm[18..20].copy_from_slice(&183u16.to_le_bytes());
    let arm = common::write(dir.path(), "arm.elf", &arm);
    let empty = common::write(dir.path(), "empty.cpio", &[]);
    let launcher = launcher();
    let message = |spec: &InstanceSpec| prepare_error(&launcher, spec).to_string();

    let missing = dir.path().join("missing");
    assert_eq!(
        message(&spec(missing.clone(), Duration::from_secs(1))),
        format!("kernel {}: no such file", missing.display())
    );
    assert!(message(&spec(random.clone(), Duration::from_secs(1))).contains("neither an ELF vmlinux nor a bzImage"));
    assert!(message(&spec(truncated, Duration::from_secs(1))).contains("truncated"));
    assert!(message(&spec(arm, Duration::from_secs(1))).contains("machine 183"));

    let mut s = spec(good.clone(), Duration::from_secs(1));
    s.images.initrd = Some(dir.path().join("no-initrd"));
    assert!(message(&s).starts_with("initrd "), "{}", message(&s));
    s.images.initrd = Some(empty);
    assert!(message(&s).contains("empty file"));

    let mut s = spec(good.clone(), Duration::from_secs(1));
    s.memory_limit_bytes = Some(1 << 20);
    assert!(message(&s).starts_with("memory_mib: 1 MiB is too small for kernel"), "{}", message(&s));
    s.memory_limit_bytes = Some(1 << 50);
    assert!(message(&s).contains("more than this host's"), "{}", message(&s));

    let mut s = spec(good.clone(), Duration::from_secs(1));
    s.vcpus = 0;
    assert!(message(&s).starts_with("vcpus: 0"));
    s.vcpus = 255;
    assert!(message(&s).starts_with("vcpus: 255"), "{}", message(&s));

    let mut s = spec(good.clone(), Duration::from_secs(1));
    s.workload = Workload::Command(vec!["/bin/true".into()]);
    assert!(matches!(prepare_error(&launcher, &s), LaunchError::InvalidSpec(_)));

    let no_kernel = InstanceSpec::new(Workload::Hello, ImagePaths::default());
    assert!(message(&no_kernel).contains("no kernel"));

    if boxbench_core::host::KvmFlavour::detect() == boxbench_core::host::KvmFlavour::Pvm {
        let linux = MicroVmLauncher::new(MicroVmOptions { guest: GuestKind::Linux, ..MicroVmOptions::default() });
        let err = prepare_error(&linux, &spec(good.clone(), Duration::from_secs(1)));
        assert!(matches!(err, LaunchError::Unsupported(_)));
        assert_eq!(err.to_string(), boxbench_microvm::launcher::LINUX_ON_PVM_REFUSAL);
        let forced =
            MicroVmLauncher::new(MicroVmOptions { guest: GuestKind::Linux, force: true, ..MicroVmOptions::default() });
        assert!(forced.prepare(&spec(good, Duration::from_secs(1))).is_ok());
    }
    assert_nothing_left_behind();
}
