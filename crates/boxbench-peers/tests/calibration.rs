//! The harness's calibration measured for real: busybox printing the marker through crun's harness
//! path (its cgroup with the runtime leaf, its mount set-up, the console and the marker scan) is
//! timed, positive, and smaller than crun's own launch through that path, back to back.

mod common;

use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Outcome, Workload};
use boxbench_peers::{CalibrationLauncher, OciRuntime, OciRuntimeLauncher};
use boxbench_testkit::require;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[test]
fn calibration_is_measured_positive_and_below_crun_s_own_launch() {
    let _serial = common::serial();
    let crun = require!(if common::is_root() {
        OciRuntimeLauncher::new(OciRuntime::Crun).map_err(|e| e.to_string())
    } else {
        Err("calibration tests need root (cgroups)".to_owned())
    });
    let images = require!(common::container_images());
    let busybox = images.paths.rootfs.clone().expect("container images have a rootfs").join("bin/busybox");
    let calibration = CalibrationLauncher::for_backend("crun", &busybox).unwrap();
    assert!(calibration.path().nesting, "crun's path nests its container's cgroup");
    let spec = InstanceSpec::new(Workload::Hello, images.paths.clone());
    let (mut harness, mut own) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let record = launch_once(&calibration, &spec).unwrap();
        assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "console: {}", record.console);
        assert_eq!(record.backend, "calibration:crun");
        let marker = record.phases.workload_ms.expect("the marker is scanned on the console");
        let exit = record.phases.exit_ms.expect("exit timed");
        assert!(marker > 0.0 && marker <= exit, "marker {marker} ms, exit {exit} ms");
        assert!(record.notes.iter().any(|n| n.starts_with("launch boundary:")), "{:?}", record.notes);
        harness.push(exit);
        own.push(launch_once(&crun, &spec).unwrap().phases.exit_ms.expect("exit timed"));
    }
    let (harness, own) = (median(harness), median(own));
    assert!(harness > 0.0 && harness < own, "calibration {harness} ms against crun's {own} ms");
    assert_eq!(common::leftover_cgroups("calibration:crun"), Vec::<std::path::PathBuf>::new());
}
