//! `boxbench`: launches the same workload as a container and as a VM, several ways, and measures each.
//!
//! The binary stays thin: it parses the command line, picks the backends and hands their records to
//! the printers. Launching lives in the backend crates, measuring in `boxbench-core`.

mod compare_cmd;
mod doctor;
mod images_cmd;
mod run;
mod soak_cmd;
mod svm_host_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Settles with measurements what container tutorials claim about VMs and containers.
#[derive(Debug, Parser)]
#[command(name = "boxbench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Says what this host can run: root, KVM flavour, cgroup mode, peers, images.
    Doctor(doctor::DoctorArgs),
    /// Builds the guest images or prints their sizes.
    #[command(subcommand)]
    Images(images_cmd::ImagesCommand),
    /// Launches one backend N times and prints per-phase statistics (or every record as JSON).
    Run(Box<run::RunArgs>),
    /// The main job: every backend this host can run, interleaved, judged claim by claim in a report.
    Compare(compare_cmd::CompareArgs),
    /// Regenerates a report from saved results (several hosts side by side).
    Report(compare_cmd::ReportArgs),
    /// N launches of one backend, P at once, then a check that nothing was left on the host.
    Soak(soak_cmd::SoakArgs),
    /// Runs a boxbench command inside an L1 host with emulated AMD-V and a pure cgroup v2 (QEMU TCG).
    SvmHost(svm_host_cmd::SvmHostArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(args) => doctor::doctor(&args),
        Command::Images(cmd) => images_cmd::images(&cmd),
        Command::Run(args) => run::run(&args),
        Command::Compare(args) => compare_cmd::compare_cmd(&args),
        Command::Report(args) => compare_cmd::report_cmd(&args),
        Command::Soak(args) => soak_cmd::soak_cmd(&args),
        Command::SvmHost(args) => svm_host_cmd::svm_host_cmd(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("boxbench: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// Writes `text` to stdout at once; a closed stdout (`| head`) is an error reported in one line, not
/// the panic `print!` makes of it.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| anyhow::anyhow!("writing to stdout: {e}"))
}

/// The error and its causes on one line, as `outer: cause: root cause`, without repeating a cause
/// the outer message already quotes.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line.replace('\n', " ")
}
