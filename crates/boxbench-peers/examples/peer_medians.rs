//! Measures peer backends by hand: N launches of a workload per backend, interleaved, and the median
//! of each phase and of the memory figures. Usage:
//! `peer_medians ROOTFS_OR_BUNDLE_DIR [N] [BACKEND...]` (backends: crun runc podman docker
//! qemu-microvm qemu-q35 firecracker, and qemu-microvm+own / qemu-q35+own for boxbench's own guest
//! under KVM). VM backends boot $BOXBENCH_KERNEL with $BOXBENCH_INITRD.

use std::path::PathBuf;

use boxbench_core::measure::launch_once;
use boxbench_core::stats::Summary;
use boxbench_core::{ImagePaths, InstanceSpec, Launcher, Phases, Record, Workload};
use boxbench_peers::{GuestKind, Machine, QemuLauncher, QemuOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let images_dir = PathBuf::from(args.next().ok_or("usage: peer_medians ROOTFS_OR_BUNDLE_DIR [N] [BACKEND...]")?);
    let runs: usize = args.next().map_or(Ok(15), |n| n.parse())?;
    let names: Vec<String> = args.collect();
    let mut images = ImagePaths {
        kernel: std::env::var_os("BOXBENCH_KERNEL").map(PathBuf::from),
        initrd: std::env::var_os("BOXBENCH_INITRD").map(PathBuf::from),
        ..ImagePaths::default()
    };
    if images_dir.join("config.json").is_file() {
        images.bundle = Some(images_dir.clone());
        images.rootfs = Some(images_dir.join("rootfs"));
    } else {
        images.rootfs = Some(images_dir.clone());
    }
    // docker starts a private dockerd when none runs (it is stopped when its launcher is dropped).
    let launchers: Vec<Box<dyn Launcher>> = names
        .iter()
        .map(|n| match n.as_str() {
            "docker" => boxbench_peers::DockerLauncher::new(boxbench_peers::DockerOptions {
                start_dockerd: true,
                ..Default::default()
            })
            .map(|l| Box::new(l) as Box<dyn Launcher>),
            own if own.ends_with("+own") => {
                let machine = if own.starts_with("qemu-q35") { Machine::Q35 } else { Machine::Microvm };
                let options = QemuOptions { machine, guest: GuestKind::Boxbench, ..Default::default() };
                QemuLauncher::new(options).map(|l| Box::new(l) as Box<dyn Launcher>)
            }
            other => boxbench_peers::launcher_by_name(other),
        })
        .collect::<Result<_, _>>()?;
    let spec = InstanceSpec::new(Workload::Hello, images);
    let mut records: Vec<Vec<Record>> = launchers.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (launcher, kept) in launchers.iter().zip(records.iter_mut()) {
            let record = launch_once(launcher.as_ref(), &spec)?;
            if !record.outcome.is_success() {
                return Err(format!("{}: {} ({})", launcher.name(), record.outcome, record.console_tail(5)).into());
            }
            kept.push(record);
        }
    }
    for (launcher, kept) in launchers.iter().zip(&records) {
        println!("{} (n={runs})", launcher.name());
        for phase in Phases::NAMES {
            let samples: Vec<f64> = kept.iter().filter_map(|r| r.phases.get(phase)).collect();
            match Summary::of(&samples) {
                Some(s) => println!("  {phase:16} median {:9.2} ms  min {:9.2}  max {:9.2}", s.median, s.min, s.max),
                None => println!("  {phase:16} not observed"),
            }
        }
        let mib = |pick: fn(&Record) -> Option<u64>| {
            let samples: Vec<f64> = kept.iter().filter_map(pick).map(|b| b as f64 / (1 << 20) as f64).collect();
            Summary::of(&samples).map_or_else(|| "not observed".to_owned(), |s| format!("median {:.2} MiB", s.median))
        };
        println!("  peak_bytes       {}", mib(|r| r.memory.peak_bytes));
        println!("  pss_bytes        {}", mib(|r| r.memory.pss_bytes));
        println!("  overhead_bytes   {}", mib(|r| r.memory.overhead_bytes));
        if let Some(first) = kept.first() {
            for note in &first.notes {
                println!("  note: {note}");
            }
        }
    }
    Ok(())
}
