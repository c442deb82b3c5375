//! What the Criterion benches share: the backends this host can run (each skipped with one line saying
//! why when it cannot), the launch settings, and a Criterion measurement whose values are bytes.

#![allow(dead_code)] // each bench target uses its own part of this module

use std::time::Duration;

use boxbench::backends::{self, BackendOptions, GuestChoice};
use boxbench::compare::{SeriesPlan, default_plan};
use boxbench_core::host::HostFacts;
use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Launcher, Record, Workload};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput};

/// Restricts the benches to these backends (comma-separated `--backend` names).
pub const BACKENDS_ENV: &str = "BOXBENCH_BENCH_BACKENDS";
/// Set to 1 for a quick pass: fewer samples, shorter measurement.
pub const QUICK_ENV: &str = "BOXBENCH_BENCH_QUICK";

/// A backend ready to bench: its launcher, the spec every launch uses, and one probe record.
pub struct Bench {
    pub name: String,
    pub launcher: Box<dyn Launcher>,
    pub spec: InstanceSpec,
    pub probe: Record,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench").field("series", &self.name).finish()
    }
}

/// True when a quick pass was asked for.
pub fn quick() -> bool {
    std::env::var(QUICK_ENV).is_ok_and(|v| v == "1")
}

/// Criterion settings for whole launches: few samples, flat sampling is set per group.
pub fn criterion<M: Measurement>(measurement: M) -> Criterion<M> {
    // SIGINT/SIGTERM (Ctrl-C, a CI timeout) kill the instance in flight before the bench exits, so an
    // interrupted `cargo bench` leaves no instance or cgroup behind.
    if let Err(e) = boxbench_core::interrupt::install() {
        eprintln!("{e}; an interrupted bench may leave its instance behind");
    }
    let (samples, measure) = if quick() { (10, Duration::from_secs(2)) } else { (15, Duration::from_secs(4)) };
    // Criterion draws its charts with plotters, whose text (built with `ab_glyph` for the report
    // crate) needs a registered font; without one, skip the charts rather than the benches.
    let charts = match boxbench_report::plots::register_fonts() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("Criterion charts skipped: {e}");
            false
        }
    };
    let criterion = if charts { Criterion::default() } else { Criterion::default().without_plots() };
    criterion
        .with_measurement(measurement)
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measure)
        .configure_from_args()
}

/// Every series of `boxbench compare`'s plan for this host (containers, the VM floor, Linux guests
/// where they boot usefully) that can run `workload`, each proved by one probe launch; the others are
/// skipped with one line on stderr saying why.
pub fn runnable_backends(workload: Workload) -> Vec<Bench> {
    let wanted: Option<Vec<String>> =
        std::env::var(BACKENDS_ENV).ok().map(|list| list.split(',').map(|s| s.trim().to_owned()).collect());
    let mut benches = Vec::new();
    let host = HostFacts::detect();
    for series in default_plan(host.kvm, host.cpu_emulated, &BackendOptions::default()) {
        let choice = series.choice;
        if wanted.as_ref().is_some_and(|w| !w.iter().any(|n| n == choice.name())) {
            continue;
        }
        let name = bench_name(&series);
        if series.is_pvm_emulated() {
            eprintln!(
                "skipping {name}: guest kernel code is emulated under kvm_pvm, about a minute a launch \
                 (boxbench compare --pvm-linux-runs N measures it)"
            );
            continue;
        }
        let prepared = backends::launcher(choice, &series.options).map_err(|e| e.to_string()).and_then(|launcher| {
            let images = backends::image_paths(choice, &series.options).map_err(|e| e.to_string())?;
            Ok((launcher, images))
        });
        let (launcher, images) = match prepared {
            Ok(ok) => ok,
            Err(why) => {
                eprintln!("skipping {name}: {why}");
                continue;
            }
        };
        let mut spec = InstanceSpec::new(workload.clone(), images);
        spec.timeout = Duration::from_secs(60);
        let probe = launch_once(launcher.as_ref(), &spec);
        exit_if_interrupted();
        match probe {
            Ok(probe) if probe.outcome.is_success() => benches.push(Bench { name, launcher, spec, probe }),
            Ok(probe) => eprintln!("skipping {name}: its probe launch {}", probe.outcome),
            Err(e) => eprintln!("skipping {name}: {e}"),
        }
    }
    benches
}

/// A series' name in benchmark ids: the backend, and for VMs which guest it boots.
fn bench_name(series: &SeriesPlan) -> String {
    match series.options.guest {
        Some(GuestChoice::Linux) if series.choice.is_vm() => format!("{}-linux", series.choice.name()),
        Some(GuestChoice::Boxbench) if series.choice.is_vm() => format!("{}-ownguest", series.choice.name()),
        _ => series.choice.name().to_owned(),
    }
}

/// Launches `bench` once and returns its record; a failed launch aborts the bench, since its figure
/// would be meaningless.
pub fn launch(bench: &Bench) -> Record {
    let record = launch_once(bench.launcher.as_ref(), &bench.spec);
    exit_if_interrupted();
    match record {
        Ok(record) if record.outcome.is_success() => record,
        Ok(record) => panic!("{} launch {}: {}", bench.name, record.outcome, record.console_tail(5)),
        Err(e) => panic!("{} launch failed: {e}", bench.name),
    }
}

/// Ends the bench process once SIGINT or SIGTERM arrived: `launch_once` has already killed the
/// instance in flight and removed its cgroup.
fn exit_if_interrupted() {
    if boxbench_core::interrupt::requested() {
        eprintln!("interrupted by SIGINT or SIGTERM; instances torn down");
        std::process::exit(1);
    }
}

/// A Criterion measurement whose values are bytes, so memory and image sizes get Criterion's
/// statistics and reports. Routines report bytes through `iter_custom`; there is nothing to time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Measurement for Bytes {
    type Intermediate = ();
    type Value = u64;

    fn start(&self) -> Self::Intermediate {}

    fn end(&self, _: Self::Intermediate) -> Self::Value {
        0
    }

    fn add(&self, v1: &Self::Value, v2: &Self::Value) -> Self::Value {
        v1 + v2
    }

    fn zero(&self) -> Self::Value {
        0
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &BytesFormatter
    }
}

/// Formats byte values with binary prefixes.
#[derive(Debug)]
struct BytesFormatter;

impl BytesFormatter {
    fn scale(typical: f64, values: &mut [f64]) -> &'static str {
        let (divisor, unit) = match typical.abs() {
            t if t >= (1u64 << 30) as f64 => ((1u64 << 30) as f64, "GiB"),
            t if t >= (1u64 << 20) as f64 => ((1u64 << 20) as f64, "MiB"),
            t if t >= 1024.0 => (1024.0, "KiB"),
            _ => (1.0, "B"),
        };
        values.iter_mut().for_each(|v| *v /= divisor);
        unit
    }
}

impl ValueFormatter for BytesFormatter {
    fn scale_values(&self, typical_value: f64, values: &mut [f64]) -> &'static str {
        Self::scale(typical_value, values)
    }

    fn scale_throughputs(&self, _typical: f64, _throughput: &Throughput, values: &mut [f64]) -> &'static str {
        // Bytes per element or per byte make no sense for a memory figure: keep the raw value.
        Self::scale(values.first().copied().unwrap_or(0.0), values)
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "B"
    }
}
