//! Boots a guest repeatedly through the `microvm` backend and prints the medians of its phases and
//! memory figures.
//!
//! `cargo run --release -p boxbench-microvm --example microvm_bench -- KERNEL [INITRD] [RUNS] [VCPUS]`

use std::path::PathBuf;
use std::time::Duration;

use boxbench_core::measure::launch_once;
use boxbench_core::stats::Summary;
use boxbench_core::{ImagePaths, InstanceSpec, Workload};
use boxbench_microvm::{MicroVmLauncher, MicroVmOptions};

const VMM_START_NOTE: &str = "VMM child start to first KVM_RUN: ";
const SPLIT_NOTE: &str = "of which joining the instance cgroup: ";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(kernel) = args.first().map(PathBuf::from) else {
        return Err("usage: microvm_bench KERNEL [INITRD|-] [RUNS] [VCPUS]".into());
    };
    let initrd = args.get(1).filter(|a| a.as_str() != "-").map(PathBuf::from);
    let runs: usize = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(20);
    let vcpus: u8 = args.get(3).map(|a| a.parse()).transpose()?.unwrap_or(1);
    let launcher = MicroVmLauncher::new(MicroVmOptions::default());
    let mut spec =
        InstanceSpec::new(Workload::Hello, ImagePaths { kernel: Some(kernel), initrd, ..ImagePaths::default() });
    spec.vcpus = vcpus;
    spec.timeout = Duration::from_secs(30);

    let mut phases: Vec<(&str, Vec<f64>)> = [
        "vmm_start_to_first_kvm_run_ms",
        "cgroup_join_ms",
        "vm_build_ms",
        "ready_ms",
        "first_output_ms",
        "userspace_ms",
        "workload_ms",
        "exit_ms",
    ]
    .into_iter()
    .map(|name| (name, Vec::new()))
    .collect();
    let mut memory: Vec<(&str, Vec<f64>)> =
        ["peak_kib", "pss_kib", "overhead_kib"].into_iter().map(|name| (name, Vec::new())).collect();
    for run in 0..runs {
        let record = launch_once(&launcher, &spec)?;
        if !record.outcome.is_success() {
            return Err(format!("run {run}: {}\n{}", record.outcome, record.console_tail(10)).into());
        }
        let vmm_start =
            record.notes.iter().find_map(|n| n.strip_prefix(VMM_START_NOTE)?.strip_suffix(" ms")?.parse().ok());
        let split: Option<(f64, f64)> = record.notes.iter().find_map(|n| {
            let (join, build) = n.strip_prefix(SPLIT_NOTE)?.split_once(" ms, building the VM: ")?;
            Some((join.parse().ok()?, build.strip_suffix(" ms")?.parse().ok()?))
        });
        let p = &record.phases;
        let figures = [
            vmm_start,
            split.map(|s| s.0),
            split.map(|s| s.1),
            p.ready_ms,
            p.first_output_ms,
            p.userspace_ms,
            p.workload_ms,
            p.exit_ms,
        ];
        for ((_, samples), value) in phases.iter_mut().zip(figures) {
            samples.extend(value);
        }
        let m = &record.memory;
        for ((_, samples), value) in memory.iter_mut().zip([m.peak_bytes, m.pss_bytes, m.overhead_bytes]) {
            samples.extend(value.map(|b| b as f64 / 1024.0));
        }
    }
    println!("{runs} runs, {vcpus} vCPU(s), {}", boxbench_core::host::HostFacts::detect().label());
    for (name, samples) in phases.iter().chain(memory.iter()) {
        match Summary::of(samples) {
            Some(s) => println!("{name:32} median {:9.3}  min {:9.3}  max {:9.3}  (n={})", s.median, s.min, s.max, s.n),
            None => println!("{name:32} not observed"),
        }
    }
    Ok(())
}
