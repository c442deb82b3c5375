//! `boxbench compare` and `boxbench report`: the main job, and regenerating a report from saved results.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use boxbench::backends::{BackendChoice, BackendOptions, KernelChoice};
use boxbench::compare::{CompareProgress, CompareSettings, Regime, compare};
use boxbench_core::Record;
use boxbench_report::fleet::MissingHost;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `boxbench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Measured launches per series.
    #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Launches per series discarded first.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Launches of the `uname` workload per series (which kernel each instance sees).
    #[arg(long, default_value_t = 2)]
    pub uname_runs: u32,
    /// Instances of the `idle` workload run at once per series in the density step (0 skips it;
    /// series whose launches take seconds run at most 3).
    #[arg(long, default_value_t = 10)]
    pub density: usize,
    /// On a kvm_pvm host: measured launches of boxbench's micro-VM kernel under KVM in boxbench's VMM
    /// and in QEMU (about a minute each: guest kernel code is emulated; 0 leaves them out).
    #[arg(long, default_value_t = 0)]
    pub pvm_linux_runs: usize,
    /// Measured launches of the full-OS disk booted by qemu-q35 through SeaBIOS and its boot loader
    /// (minutes each under TCG; 0 leaves it out). Its system containers (nspawn, lxc) are measured
    /// whenever the disk is built.
    #[arg(long, default_value_t = 0)]
    pub full_os_vm_runs: usize,
    /// Only these backends (repeat the option; default: every backend this host can run).
    #[arg(long = "backend", short = 'b', value_enum)]
    pub backends: Vec<BackendChoice>,
    /// Every launch's deadline in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Where to write the report (default: reports/<UTC timestamp>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The Firecracker binary (default: `firecracker` on PATH).
    #[arg(long, value_name = "PATH")]
    pub firecracker: Option<PathBuf>,
    /// Leave Docker out when no Docker daemon answers, instead of starting a private dockerd for the
    /// run (own data and exec roots, no iptables, no bridge; stopped afterwards).
    #[arg(long)]
    pub no_start_dockerd: bool,
    /// What compare does by default now (kept so that older command lines still run).
    #[arg(long, hide = true, conflicts_with = "no_start_dockerd")]
    pub start_dockerd: bool,
    /// The kernel of the Linux VM series: `microvm` (boxbench's micro-VM kernel) or `debian-cloud`
    /// (Debian's unmodified cloud kernel); every VMM boots the same one with the same initramfs.
    #[arg(long, value_enum, default_value = "microvm")]
    pub kernel: LinuxKernel,
    /// The name the results give this host (default: its hostname).
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// Skip building the full-OS VM disk (Debian minbase by mmdebstrap, built once, a few minutes),
    /// whose size claim 3 is judged on.
    #[arg(long)]
    pub no_full_os: bool,
    /// How the `hello` launches are ordered: interleaved (A B A B across backends; the verdicts use
    /// it), warm (each backend back to back) or both.
    #[arg(long, value_enum, default_value = "both")]
    pub regime: Regime,
    #[command(flatten)]
    pub export: boxbench::output::ExportArgs,
}

/// The `--kernel` values of `compare`: named kernels only, since the own-guest series take a path
/// as their guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinuxKernel {
    /// boxbench's micro-VM kernel.
    Microvm,
    /// Debian's cloud kernel.
    DebianCloud,
}

/// Arguments of `boxbench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Saved `results.json` files (several hosts are compared side by side).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// The directory to write the report into.
    #[arg(long)]
    pub out: PathBuf,
    /// A host that sent no results, and why (`HOST=REASON`; repeat the option): the report names it.
    #[arg(long, value_name = "HOST=REASON")]
    pub missing: Vec<String>,
    /// A results file that cannot be read becomes a missing host (named by its directory) instead of
    /// stopping the report. Either way, a missing host makes the exit status non-zero.
    #[arg(long)]
    pub keep_going: bool,
}

/// A progress bar over every launch of the run.
#[derive(Debug)]
struct Bar(ProgressBar);

impl CompareProgress for Bar {
    fn skipped(&self, series: &str, why: &str) {
        self.0.println(format!("skipping {series}: {why}"));
    }

    fn planned(&self, launches: usize) {
        self.0.set_length(launches as u64);
    }

    fn launched(&self, series: &str, record: &Record) {
        self.0.set_message(format!("{series}: {}", record.outcome));
        self.0.inc(1);
    }
}

/// Runs `boxbench compare`.
pub fn compare_cmd(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    args.export.check()?;
    let out = args.out.clone().unwrap_or_else(|| boxbench::reports::timestamped(""));
    let settings = CompareSettings {
        runs: args.runs as usize,
        warmup: args.warmup as usize,
        uname_runs: args.uname_runs as usize,
        density: args.density,
        pvm_linux_runs: args.pvm_linux_runs,
        full_os: !args.no_full_os,
        full_os_vm_runs: args.full_os_vm_runs,
        only: args.backends.clone(),
        timeout: Duration::from_secs(args.timeout),
        options: BackendOptions {
            firecracker: args.firecracker.clone(),
            start_dockerd: !args.no_start_dockerd,
            kernel: Some(match args.kernel {
                LinuxKernel::Microvm => KernelChoice::MicroVm,
                LinuxKernel::DebianCloud => KernelChoice::DebianCloud,
            }),
            ..BackendOptions::default()
        },
        command_line: std::env::args().collect(),
        label: args.label.clone(),
        regime: args.regime,
    };
    boxbench_core::interrupt::install()?;
    boxbench::images::build_default(false).context("building the guest images")?;
    if !args.no_full_os {
        // Without the disk claim 3 is judged on the other images, and the report says what is missing.
        if let Err(e) = boxbench_images::ImageBuilder::default_dirs()
            .build_full_os_disk(&boxbench::images::ProgressLines::new(false))
        {
            eprintln!("boxbench: full-OS VM disk not built (claim 3 is judged without it): {e}");
        }
    }
    // A signal during the image builds (its tools run to completion unless the terminal's Ctrl-C
    // reached them too) stops the run before the first launch.
    if boxbench_core::interrupt::requested() {
        anyhow::bail!("interrupted by SIGINT or SIGTERM while preparing the guest images; no report written");
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} launches  {msg}")
            .map_err(|e| anyhow::anyhow!("progress bar template: {e}"))?
            .progress_chars("=> "),
    );
    let results = compare(&settings, &Bar(bar.clone()));
    bar.finish_and_clear();
    if boxbench_core::interrupt::requested() {
        anyhow::bail!("interrupted by SIGINT or SIGTERM; instances torn down, no report written");
    }
    let files = boxbench_report::write_report(&results, &out)?;
    args.export.write(&boxbench_report::export::results_rows(&results))?;
    let mut out = boxbench_report::harness::text_lines(&results);
    out.push_str(&boxbench_report::vmms::text_lines(&results));
    for glance in boxbench_report::glance::glances(&boxbench_report::judge(&results)) {
        writeln!(out, "{}", boxbench_report::glance::stdout_line(&glance))?;
    }
    writeln!(out, "report: {}", files.report_md.display())?;
    writeln!(out, "        {}", files.report_html.display())?;
    crate::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `boxbench report`.
pub fn report_cmd(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let mut missing = args.missing.iter().map(|spec| MissingHost::parse(spec)).collect::<Result<Vec<_>, _>>()?;
    let mut hosts = if args.keep_going {
        let mut all = Vec::new();
        for path in &args.results {
            match boxbench_report::load_file(path) {
                Ok(results) => all.extend(results),
                Err(e) => missing.push(MissingHost::unreadable(path, &e.to_string())),
            }
        }
        if all.is_empty() {
            let why: Vec<String> = missing.iter().map(|m| format!("{}: {}", m.host, m.reason)).collect();
            anyhow::bail!("no readable results; {}", why.join("; "));
        }
        boxbench_report::MultiHost::merge(all)?
    } else {
        boxbench_report::load_results(&args.results)?
    };
    hosts.missing = missing;
    let files = boxbench_report::write_comparison(&hosts, &args.out)?;
    let mut out = String::new();
    // Each host's claims in one sentence each; with several hosts, each line names its host.
    let several = hosts.hosts.len() > 1;
    for (results, name) in hosts.hosts.iter().zip(hosts.column_names()) {
        for glance in boxbench_report::glance::glances(&boxbench_report::judge(results)) {
            let prefix = if several { format!("[{name}] ") } else { String::new() };
            writeln!(out, "{prefix}{}", boxbench_report::glance::stdout_line(&glance))?;
        }
    }
    writeln!(out, "report: {}", files.report_md.display())?;
    crate::write_stdout(&out)?;
    for m in &hosts.missing {
        eprintln!("boxbench: missing host {}: {}", m.host, m.reason);
    }
    Ok(if hosts.missing.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
