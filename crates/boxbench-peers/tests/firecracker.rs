//! Firecracker driven end to end where a binary exists ($BOXBENCH_FIRECRACKER or `firecracker` on
//! PATH): boxbench's own guest boots, prints its marker and resets; the boot timer gives
//! userspace_ms. Skipped with a message where no binary exists (none is packaged in the registries
//! boxbench's hosts reach).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, Launcher, Outcome, Workload};
use boxbench_peers::{FirecrackerLauncher, FirecrackerOptions, GuestKind};

#[test]
fn firecracker_boots_own_guest() {
    let _serial = common::serial();
    if !common::is_root() {
        eprintln!("skipping: firecracker tests need root (cgroups, /dev/kvm)");
        return;
    }
    let binary = std::env::var_os("BOXBENCH_FIRECRACKER").map(PathBuf::from);
    let options = FirecrackerOptions { binary, guest: GuestKind::Boxbench };
    let launcher = match FirecrackerLauncher::new(options) {
        Ok(launcher) => launcher,
        Err(e) => {
            eprintln!("skipping: {e} (set BOXBENCH_FIRECRACKER to a firecracker binary)");
            return;
        }
    };
    let images = ImagePaths { kernel: Some(boxbench_guest::elf_path().to_owned()), ..Default::default() };
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.memory_limit_bytes = Some(64 << 20);
    spec.timeout = Duration::from_secs(60);
    let record = launch_once(&launcher, &spec).unwrap();
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
    assert!(record.phases.workload_ms.is_some());
    assert!(record.phases.userspace_ms.is_some(), "boot timer logged");
    assert_eq!(common::leftover_cgroups(launcher.name()), Vec::<PathBuf>::new());
}
