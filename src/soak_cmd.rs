//! `boxbench soak`: many launches of one backend, then a check that the host is as it was.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use boxbench::backends::{self, BackendChoice, BackendOptions};
use boxbench::soak::{SoakSettings, soak};
use boxbench_core::{InstanceSpec, Workload, interrupt};
use clap::Args;

use crate::run::{parse_timeout, parse_workload};

/// Arguments of `boxbench soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Which launcher to soak.
    #[arg(long, short = 'b', value_enum)]
    pub backend: BackendChoice,
    /// How many launches in all.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// How many launches at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    /// The named workload: hello, idle, uname or disk.
    #[arg(long, short = 'w', default_value = "hello", value_parser = parse_workload)]
    pub workload: Workload,
    /// Every launch's deadline, in seconds.
    #[arg(long, default_value_t = 30.0, value_parser = parse_timeout)]
    pub timeout: f64,
    /// Growth of boxbench's RSS from launch N/2 to launch N still accepted, in MiB.
    #[arg(long = "rss-tolerance", value_name = "MIB", default_value_t = 4)]
    pub rss_tolerance_mib: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backend_options: BackendOptions,
}

/// Runs `boxbench soak`: exits non-zero when a launch failed, something was left or RSS grew.
pub fn soak_cmd(args: &SoakArgs) -> anyhow::Result<ExitCode> {
    interrupt::install()?;
    let launcher = backends::launcher(args.backend, &args.backend_options)?;
    let images = backends::image_paths(args.backend, &args.backend_options)?;
    let mut spec = InstanceSpec::new(args.workload.clone(), images);
    spec.timeout = Duration::from_secs_f64(args.timeout);
    let settings = SoakSettings {
        count: args.count as usize,
        parallel: args.parallel as usize,
        rss_tolerance_bytes: args.rss_tolerance_mib.saturating_mul(1 << 20),
    };
    let report = soak(launcher.as_ref(), &spec, &settings).context("checking the host")?;
    let text = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { report.render_text() };
    crate::write_stdout(&text)?;
    if report.interrupted {
        anyhow::bail!("interrupted by SIGINT or SIGTERM after {} launches; instances torn down", report.launches);
    }
    Ok(if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
