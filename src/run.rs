//! `boxbench run`: N launches of one backend, each with its deadline, summarised per phase.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use boxbench_core::host::HostFacts;
use boxbench_core::measure::launch_once;
use boxbench_core::{InstanceSpec, Outcome, Workload};
use clap::Args;

use boxbench::backends::{self, BackendChoice, BackendOptions};
use boxbench::output::{ExportArgs, RunReport};

/// Arguments of `boxbench run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which launcher runs the workload.
    #[arg(long, short = 'b', value_enum, default_value = "container")]
    pub backend: BackendChoice,
    /// The named workload: hello, idle, uname or disk (ignored when a command follows `--`).
    #[arg(long, short = 'w', default_value = "hello", value_parser = parse_workload)]
    pub workload: Workload,
    /// How many launches, one after another.
    #[arg(long = "runs", short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Print every record and the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Leave out the console of the last launch, which the text output prints after the table for a
    /// command (`-- CMD`) or a single launch.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Every launch's deadline, from launch start to exit, in seconds.
    #[arg(long, default_value_t = 30.0, value_parser = parse_timeout)]
    pub timeout: f64,
    /// Memory in MiB: a container's cgroup limit, a VM's guest memory.
    #[arg(long = "memory", value_name = "MIB")]
    pub memory_mib: Option<u64>,
    /// Virtual CPUs (VMs).
    #[arg(long, default_value_t = 1)]
    pub vcpus: u8,
    #[command(flatten)]
    pub backend_options: BackendOptions,
    #[command(flatten)]
    pub export: ExportArgs,
    /// A command to run instead of a named workload: its output is the console, its exit status the
    /// instance's.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A named workload on the command line (`run` and `soak`).
pub(crate) fn parse_workload(name: &str) -> Result<Workload, String> {
    name.parse().map_err(|e: boxbench_core::spec::UnknownWorkload| e.to_string())
}

/// A launch deadline in seconds on the command line (`run` and `soak`).
pub(crate) fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() && secs <= 86_400.0 => Ok(secs),
        _ => Err(format!("`{text}` is not a number of seconds above 0 and at most 86400")),
    }
}

/// Runs `boxbench run`.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let workload =
        if args.command.is_empty() { args.workload.clone() } else { Workload::Command(args.command.clone()) };
    if args.vcpus == 0 {
        bail!("--vcpus must be at least 1");
    }
    let memory_limit_bytes = match args.memory_mib {
        Some(0) => bail!("--memory must be at least 1 MiB"),
        Some(mib) => {
            let bytes = mib.checked_mul(1 << 20).context("--memory is too large")?;
            if let Some(total) = boxbench_core::host::mem_total_bytes().filter(|&total| bytes > total) {
                bail!("--memory {mib} MiB is more than this host's {} MiB", total >> 20);
            }
            Some(bytes)
        }
        None => None,
    };
    args.export.check()?;
    boxbench_core::interrupt::install()?;
    let launcher = backends::launcher(args.backend, &args.backend_options)?;
    let images = backends::image_paths(args.backend, &args.backend_options)?;
    let mut spec = InstanceSpec::new(workload.clone(), images);
    spec.memory_limit_bytes = memory_limit_bytes;
    spec.vcpus = args.vcpus;
    spec.timeout = Duration::from_secs_f64(args.timeout);

    let mut records = Vec::with_capacity(args.runs as usize);
    for _ in 0..args.runs {
        // Ctrl-C: the launch in flight was killed by launch_once; no further launch starts.
        if boxbench_core::interrupt::requested() {
            bail!("interrupted by SIGINT or SIGTERM; instances torn down");
        }
        let record = launch_once(launcher.as_ref(), &spec).with_context(|| format!("{} launch", launcher.name()))?;
        if !record.outcome.is_success() && !args.json {
            eprintln!(
                "boxbench: {} {}; last console lines:\n{}",
                launcher.name(),
                record.outcome,
                record.console_tail(5)
            );
        }
        records.push(record);
    }
    // The harness's own cost for this backend, back to back after its runs (named workloads only:
    // a command's output is its result).
    let mut calibration = Vec::new();
    if args.command.is_empty() {
        match backends::calibration(args.backend, &args.backend_options) {
            Ok(calibrator) => {
                for _ in 0..args.runs {
                    if boxbench_core::interrupt::requested() {
                        bail!("interrupted by SIGINT or SIGTERM; instances torn down");
                    }
                    let record = launch_once(&calibrator, &spec).context("calibration launch")?;
                    if record.outcome.is_success() {
                        calibration.push(record);
                    }
                }
            }
            Err(e) => eprintln!("boxbench: harness not calibrated: {e}"),
        }
    }
    let failed_exit = records.iter().rev().find(|r| !r.outcome.is_success()).map(|r| match r.outcome {
        Outcome::Exited { code } => u8::try_from(code).unwrap_or(1),
        _ => 1,
    });
    let report = RunReport::new(launcher.name().to_owned(), workload.to_string(), HostFacts::detect(), records)
        .with_calibration(&calibration);
    let out = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        // What the command printed is its result; of many launches of a named workload, the table is.
        let console = !args.quiet && (!args.command.is_empty() || args.runs == 1);
        report.render_text() + &if console { report.render_last_console() } else { String::new() }
    };
    args.export.write(&report.export_rows())?;
    crate::write_stdout(&out)?;
    Ok(failed_exit.map_or(ExitCode::SUCCESS, ExitCode::from))
}
