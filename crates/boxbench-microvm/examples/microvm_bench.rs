//! Boots a guest repeatedly through the `microvm` backend and prints the medians of its phases, of
//! its sub-phase timings (`Record::details_ms`: VMM start to first KVM_RUN and its parts, the exit
//! path) and of its memory figures.
//!
//! `cargo run --release -p boxbench-microvm --example microvm_bench -- KERNEL [INITRD|-] [RUNS] [VCPUS] [GUEST]`
//!
//! GUEST is `boxbench` (the default: boxbench's own guest, workload `hello`), `linux` (a stock Linux
//! kernel, workload `uname`) or `microvm-linux` (boxbench's micro-VM kernel, workload `uname`, with the
//! kvm_pvm compatibility settings on such a host). The console of a Linux guest's first run is printed
//! to standard error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::stats::Summary;
use boxbench_core::{ImagePaths, InstanceSpec, Phases, Workload};
use boxbench_microvm::{GuestKind, MicroVmLauncher, MicroVmOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(kernel) = args.first().map(PathBuf::from) else {
        return Err("usage: microvm_bench KERNEL [INITRD|-] [RUNS] [VCPUS] [boxbench|linux|microvm-linux]".into());
    };
    let initrd = args.get(1).filter(|a| a.as_str() != "-").map(PathBuf::from);
    let runs: usize = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(20);
    let vcpus: u8 = args.get(3).map(|a| a.parse()).transpose()?.unwrap_or(1);
    let guest = match args.get(4).map(String::as_str) {
        None | Some("boxbench") => GuestKind::Boxbench,
        Some("linux") => GuestKind::Linux,
        Some("microvm-linux") => GuestKind::MicroVmLinux,
        Some(other) => return Err(format!("GUEST: {other} is not boxbench, linux or microvm-linux").into()),
    };
    let launcher = MicroVmLauncher::new(MicroVmOptions { guest, ..MicroVmOptions::default() });
    let images = ImagePaths { kernel: Some(kernel), initrd, ..ImagePaths::default() };
    let workload = if guest.is_linux() { Workload::Uname } else { Workload::Hello };
    let mut spec = InstanceSpec::new(workload, images);
    spec.vcpus = vcpus;
    spec.timeout = Duration::from_secs(if guest.is_linux() { 300 } else { 30 });

    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        let record = launch_once(&launcher, &spec)?;
        if !record.outcome.is_success() {
            return Err(format!("run {run}: {}\n{}", record.outcome, record.console).into());
        }
        if run == 0 && guest.is_linux() {
            eprintln!("{}\nnotes: {:?}", record.console, record.notes);
        }
        for (i, name) in Phases::NAMES.iter().enumerate() {
            if let Some(ms) = record.phases.get(name) {
                series.entry(format!("{i} phase {name}")).or_default().push(ms);
            }
        }
        for (key, ms) in &record.details_ms {
            series.entry(format!("5 detail {key}")).or_default().push(*ms);
        }
        let m = &record.memory;
        for (name, bytes) in [("peak", m.peak_bytes), ("pss", m.pss_bytes), ("overhead", m.overhead_bytes)] {
            if let Some(bytes) = bytes {
                series.entry(format!("6 memory {name} (KiB)")).or_default().push(bytes as f64 / 1024.0);
            }
        }
    }
    println!("{runs} runs, {vcpus} vCPU(s), {}", boxbench_core::host::HostFacts::detect().label());
    for (name, samples) in &series {
        if let Some(s) = Summary::of(samples) {
            let name = name.split_once(' ').map_or(name.as_str(), |(_, n)| n);
            println!("{name:58} median {:9.3}  min {:9.3}  max {:9.3}  (n={})", s.median, s.min, s.max, s.n);
        }
    }
    Ok(())
}
