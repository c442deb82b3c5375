//! Synthetic results for the report's tests: every figure is given explicitly by the test.
#![allow(dead_code)] // each test file uses a different part of this module

use std::collections::BTreeMap;

use boxbench_core::host::{HostFacts, KvmFlavour};
use boxbench_core::stats::Summary;
use boxbench_core::{MemoryUsage, Outcome, Phases, Record};
use boxbench_report::Results;
use boxbench_report::schema::{
    DensityPoint, DensityResult, HostSection, ImageKind, ImageSize, LoadAverage, RunSettings, Series, VmKind,
};

pub const HOST_KERNEL: &str = "6.18.0-test";
pub const MIB: u64 = 1 << 20;

pub fn host(kvm: KvmFlavour, cpus: usize, load: f64) -> HostSection {
    HostSection {
        label: "test-host".into(),
        facts: HostFacts {
            kernel: HOST_KERNEL.into(),
            cpu_model: "Test CPU".into(),
            cpus,
            memory_bytes: 24 << 30,
            kvm,
            cgroup_mode: None,
            root: true,
            load_average: load,
            cpu_emulated: false,
            host_id: String::new(),
        },
        load_before: LoadAverage { one: load, five: load, fifteen: load },
        load_after: LoadAverage { one: load, five: load, fifteen: load },
        nested: false,
    }
}

pub fn results_on(host: HostSection) -> Results {
    let settings = RunSettings {
        command_line: vec!["boxbench".into(), "compare".into(), "-n".into(), "5".into()],
        runs_per_series: 5,
        warmup_runs: 1,
        interleaved: true,
        density_instances: Some(4),
        extra: BTreeMap::from([("memory per instance".to_owned(), "128 MiB".to_owned())]),
    };
    Results::new("2026-11-29T03:00:00Z".into(), host, settings)
}

/// Results on a quiet host with hardware KVM (no host caveats).
pub fn quiet_results() -> Results {
    results_on(host(KvmFlavour::Vmx, 8, 0.1))
}

pub fn record(backend: &str, marker_ms: Option<f64>, peak_bytes: Option<u64>, console: &str) -> Record {
    Record {
        backend: backend.into(),
        phases: Phases {
            ready_ms: marker_ms.map(|m| m * 0.3),
            first_output_ms: marker_ms.map(|m| m * 0.6),
            userspace_ms: marker_ms.map(|m| m * 0.5),
            workload_ms: marker_ms,
            exit_ms: marker_ms.map(|m| m * 1.2 + 1.0),
        },
        exit_code: Some(0),
        outcome: Outcome::Exited { code: 0 },
        console: console.into(),
        memory: MemoryUsage {
            peak_bytes,
            pss_bytes: peak_bytes.map(|p| p / 2),
            overhead_bytes: peak_bytes.map(|p| p / 8),
            shared_daemons_pss_bytes: None,
        },
        notes: vec![format!("{backend} synthetic")],
        details_ms: Default::default(),
    }
}

/// A `hello` series whose launches reached the marker at `marker_ms` and peaked at `peak_mib` MiB.
pub fn series(backend: &str, kind: Option<VmKind>, marker_ms: &[f64], peak_mib: u64) -> Series {
    let records =
        marker_ms.iter().map(|m| record(backend, Some(*m), Some(peak_mib * MIB), "hello\nBOXBENCH_READY\n")).collect();
    Series::new(backend.into(), "hello".into(), kind, records).with_setting("memory", "128 MiB")
}

/// A `uname` series printing `release` before the marker.
pub fn uname_series(backend: &str, kind: Option<VmKind>, release: &str) -> Series {
    let console = format!("[    0.000] booting\n{release}\nBOXBENCH_READY\n");
    let records = (0..3).map(|i| record(backend, Some(10.0 + f64::from(i)), Some(4 * MIB), &console)).collect();
    Series::new(backend.into(), "uname".into(), kind, records)
}

pub fn image(name: &str, kind: ImageKind, bytes: u64) -> ImageSize {
    ImageSize {
        name: name.into(),
        kind,
        bytes,
        compressed_bytes: Some(bytes / 3),
        path: Some(format!("/images/{name}").into()),
        description: format!("{name} for tests"),
    }
}

pub fn density(backend: &str, kind: Option<VmKind>, per_instance_mib: u64) -> DensityResult {
    let curve: Vec<DensityPoint> = (0..=4)
        .map(|k| DensityPoint { instances: k, host_memory_used_bytes: k as u64 * per_instance_mib * MIB })
        .collect();
    DensityResult {
        backend: backend.into(),
        vm_kind: kind,
        workload: "idle".into(),
        instances: 4,
        launched: 4,
        launch_wall_s: Some(0.5),
        launch_rate_per_s: Some(8.0),
        mem_available_drop_bytes: Some(4 * per_instance_mib * MIB),
        mem_available_drop_per_instance_bytes: Some((per_instance_mib * MIB) as f64),
        cgroup_peak_per_instance: Summary::of(&[(per_instance_mib * MIB) as f64; 4]),
        curve,
        command: Some(format!("{backend} idle ×4")),
        settings: BTreeMap::new(),
        notes: vec![],
    }
}

/// A complete run: three containers, three VM kinds, images of every kind, density, uname evidence.
pub fn full_results() -> Results {
    let mut r = results_on(host(KvmFlavour::Pvm, 2, 0.5));
    r.series = vec![
        series("container", None, &[2.1, 2.3, 2.2, 2.6, 2.0], 2),
        series("crun", None, &[6.0, 6.4, 5.9, 6.2, 7.0], 3),
        series("microvm", Some(VmKind::OwnGuestFloor), &[3.0, 3.4, 2.9, 3.1, 3.3], 130),
        series("qemu-own-guest", Some(VmKind::OwnGuestOtherVmm), &[40.0, 42.0, 39.0, 45.0, 41.0], 160)
            .with_command("qemu-system-x86_64 -M microvm -m 128M -kernel guest.elf"),
        series("qemu-tcg", Some(VmKind::LinuxTcg), &[4100.0, 4300.0, 3900.0, 4000.0, 4250.0], 420)
            .with_command("qemu-system-x86_64 -M microvm -accel tcg -m 256M -kernel bzImage"),
        uname_series("container", None, HOST_KERNEL),
        uname_series("qemu-tcg", Some(VmKind::LinuxTcg), "6.1.0-tiny"),
    ];
    r.images = vec![
        image("busybox rootfs", ImageKind::ContainerImage, 2 * MIB),
        image("guest kernel + initramfs", ImageKind::MicroVmKernelInitrd, 9 * MIB),
        image("debian minbase raw ext4", ImageKind::FullOsVmDisk, 1200 * MIB),
        image("debian minbase qcow2", ImageKind::FullOsVmDisk, 350 * MIB),
    ];
    r.density = vec![density("container", None, 1), density("microvm", Some(VmKind::OwnGuestFloor), 70)];
    r.notes = vec!["firecracker skipped: binary not installed".into()];
    r
}
