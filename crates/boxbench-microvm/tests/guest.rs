//! boxbench's own guest (crate boxbench-guest) booted by the `microvm` backend on the host's /dev/kvm:
//! its report must match what the VMM set up, through both boot paths and with 1 and 2 vCPUs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::spec::VM_DEFAULTS;
use boxbench_core::{ImagePaths, InstanceSpec, Outcome, Record, Workload};
use boxbench_guest::{BootEntry, GuestReport};
use boxbench_microvm::{MicroVmLauncher, MicroVmOptions};
use boxbench_testkit::require;
use common::assert_nothing_left_behind;

/// Launches are serialised so "no child process left" can be checked on this test process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn launch(kernel: &Path, initrd: Option<PathBuf>, vcpus: u8, extra: &str, timeout: Duration) -> (Record, String) {
    let launcher =
        MicroVmLauncher::new(MicroVmOptions { cmdline_extra: extra.to_owned(), ..MicroVmOptions::default() });
    let images = ImagePaths { kernel: Some(kernel.to_owned()), initrd, ..ImagePaths::default() };
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.vcpus = vcpus;
    spec.timeout = timeout;
    let record = launch_once(&launcher, &spec).unwrap();
    (record, launcher.cmdline(&Workload::Hello))
}

#[test]
fn own_guest_reports_what_the_vmm_set_up() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i ^ (i >> 7)) as u8).collect();
    let initrd_bytes = common::newc_initrd("payload", &payload);
    let initrd = common::write(dir.path(), "initrd.cpio", &initrd_bytes);
    let images = [(boxbench_guest::elf_path(), BootEntry::Pvh), (boxbench_guest::bzimage_path(), BootEntry::Linux64)];
    for (kernel, entry) in images {
        for vcpus in [1u8, 2] {
            let (record, cmdline) = launch(kernel, Some(initrd.clone()), vcpus, "", Duration::from_secs(30));
            let what = format!("{} with {vcpus} vCPU(s)", kernel.display());
            assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{what}: {}", record.console);
            let report =
                GuestReport::parse(&record.console).unwrap_or_else(|e| panic!("{what}: {e}\n{}", record.console));
            assert_eq!(report.errors, Vec::<String>::new(), "{what}");
            assert_eq!(report.entry, Some(entry), "{what}");
            assert_eq!(report.cpus, u32::from(vcpus), "{what}: {}", record.console);
            assert_eq!(report.mp_table_cpus(), u32::from(vcpus), "{what}");
            assert_eq!(report.mem_mib, VM_DEFAULTS.memory_bytes >> 20, "{what}");
            assert_eq!(report.initrd_bytes, initrd_bytes.len() as u64, "{what}");
            assert_eq!(report.initrd_crc32, crc32fast::hash(&initrd_bytes), "{what}");
            assert_eq!(report.cmdline, cmdline, "{what}");
            let p = &record.phases;
            assert!(p.ready_ms.is_some() && p.userspace_ms.is_some() && p.first_output_ms.is_some(), "{p:?}");
            assert!(p.workload_ms.is_some() && p.exit_ms.is_some(), "{p:?}");
            assert!(record.memory.overhead_bytes.is_some() && record.memory.pss_bytes.is_some());
            assert_nothing_left_behind();
        }
    }
}

#[test]
fn own_guest_without_initrd_reports_none() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (record, _) = launch(boxbench_guest::elf_path(), None, 1, "", Duration::from_secs(30));
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{}", record.console);
    let report = GuestReport::parse(&record.console).unwrap();
    assert_eq!((report.initrd_bytes, report.initrd_crc32), (0, 0));
    assert_nothing_left_behind();
}

#[test]
fn spinning_own_guest_is_killed_at_its_deadline() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (record, _) =
        launch(boxbench_guest::bzimage_path(), None, 1, boxbench_guest::TEST_SPIN, Duration::from_millis(800));
    assert!(matches!(record.outcome, Outcome::DeadlineExceeded { .. }), "{:?}\n{}", record.outcome, record.console);
    assert!(GuestReport::parse(&record.console).is_ok(), "{}", record.console);
    assert!(!record.console.contains(boxbench_core::READY_MARKER));
    assert_nothing_left_behind();
}

#[test]
fn own_guest_triple_fault_is_reported() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (record, _) =
        launch(boxbench_guest::elf_path(), None, 2, boxbench_guest::TEST_TRIPLE_FAULT, Duration::from_secs(30));
    let Outcome::Failed { reason } = &record.outcome else { panic!("{:?}\n{}", record.outcome, record.console) };
    assert!(reason.contains("triple fault"), "{reason}");
    assert_nothing_left_behind();
}

#[test]
fn flooding_own_guest_is_killed_and_its_console_kept_to_the_tail() {
    require!(common::launcher_available());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (record, _) =
        launch(boxbench_guest::elf_path(), None, 1, boxbench_guest::TEST_FLOOD, Duration::from_millis(800));
    assert!(matches!(record.outcome, Outcome::DeadlineExceeded { .. }), "{:?}", record.outcome);
    // Killed mid-line, so the last line may be cut short; the ones before it are whole.
    let floods = record.console.lines().filter(|l| l.starts_with("boxbench-guest flood ")).count();
    assert!(floods > 1, "{}", record.console_tail(3));
    assert_nothing_left_behind();
}
