//! Firecracker driven end to end where a binary exists ($BOXBENCH_FIRECRACKER or `firecracker` on
//! PATH): boxbench's own guest boots, prints its marker and resets; the boot timer gives
//! userspace_ms. No registry boxbench's hosts reach packages Firecracker, so the test is ignored by
//! default (cargo's summary counts it); run with `--ignored` it needs the binary, through
//! boxbench-testkit (a failure under `BOXBENCH_REQUIRE_ALL=1`).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, Launcher, Outcome, Workload};
use boxbench_peers::{FirecrackerLauncher, FirecrackerOptions, GuestKind};
use boxbench_testkit::require;

#[test]
#[ignore = "needs a firecracker binary: set BOXBENCH_FIRECRACKER=PATH and run with --ignored"]
fn firecracker_boots_own_guest() {
    let _serial = common::serial();
    require!(common::is_root(), "firecracker tests need root (cgroups, /dev/kvm)");
    let binary = std::env::var_os("BOXBENCH_FIRECRACKER").map(PathBuf::from);
    let options = FirecrackerOptions { binary, guest: GuestKind::Boxbench };
    let launcher = require!(
        FirecrackerLauncher::new(options)
            .map_err(|e| format!("{e} (set BOXBENCH_FIRECRACKER to a firecracker binary)"))
    );
    let images = ImagePaths { kernel: Some(boxbench_guest::elf_path().to_owned()), ..Default::default() };
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.memory_limit_bytes = Some(64 << 20);
    spec.timeout = Duration::from_secs(60);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
    assert!(record.phases.workload_ms.is_some());
    assert!(record.phases.userspace_ms.is_some(), "boot timer logged");
    let overhead = record.memory.overhead_bytes.expect("Firecracker's guest RAM mapping found in its smaps");
    assert!(record.memory.peak_bytes.is_some_and(|peak| overhead < peak), "{:?}", record.memory);
    assert_eq!(common::leftover_cgroups(launcher.name()), Vec::<PathBuf>::new());
}
