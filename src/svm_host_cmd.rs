//! `boxbench svm-host`: runs a boxbench command inside an L1 host with emulated AMD-V (see the
//! `boxbench-svmhost` crate), building what the L1 needs on first use.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use boxbench_svmhost::{PayloadSources, SvmHostConfig, SvmHostRequest};
use clap::Args;

/// Arguments of `boxbench svm-host`.
#[derive(Debug, Args)]
pub struct SvmHostArgs {
    /// The L1 host's vCPUs (each a host thread of QEMU's TCG).
    #[arg(long, default_value_t = 2)]
    pub cpus: u8,
    /// The L1 host's memory in MiB.
    #[arg(long, default_value_t = 4096)]
    pub memory: u32,
    /// Deadline for the whole run, in seconds (QEMU is killed past it).
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Deadline for the L1 to reach its init, in seconds.
    #[arg(long, default_value_t = 300)]
    pub boot_timeout: u64,
    /// How long, in seconds, the L1 may stop sending its heartbeat before it counts as stopped and
    /// QEMU is killed (an L1 can stall as a whole, its own clock with it; see the README).
    #[arg(long, default_value_t = 180)]
    pub stall_timeout: u64,
    /// Where what the command wrote in its working directory comes back to (default:
    /// reports/svm-host-<UTC timestamp>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A host file copied into the L1's working directory before the command runs, under its own
    /// name (e.g. a disk image for `run -b microvm --disk NAME`); it comes back to --out with
    /// whatever the command did to it. Repeatable.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// The QEMU that runs the L1.
    #[arg(long, default_value = "/usr/bin/qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// The boxbench command to run inside (e.g. `doctor`, `compare -n 10`, `run -b microvm`).
    #[arg(last = true, required = true, value_name = "BOXBENCH ARGS")]
    pub args: Vec<String>,
}

/// The programs an L1 carries when this host has them: QEMU for the VM backends, the OCI runtimes.
const PEER_PROGRAMS: [&str; 3] = ["qemu-system-x86_64", "crun", "runc"];

/// Runs `boxbench svm-host`.
pub fn svm_host_cmd(args: &SvmHostArgs) -> anyhow::Result<ExitCode> {
    let config = SvmHostConfig::try_from(SvmHostRequest {
        cpus: args.cpus,
        memory_mib: args.memory,
        timeout: Duration::from_secs(args.timeout),
        boot_timeout: Duration::from_secs(args.boot_timeout),
        stall_timeout: Duration::from_secs(args.stall_timeout),
        qemu: args.qemu.clone(),
        files: args.files.clone(),
    })?;
    boxbench_core::interrupt::install()?;
    let progress = boxbench::images::ProgressLines::new(false);
    let builder = boxbench_images::ImageBuilder::default_dirs();
    boxbench::images::build_default(false)?;
    let kernel = builder.fetch_debian_cloud_kernel(&progress)?;
    // The micro-VM kernel is the default Linux guest inside too; the L1 cannot build it.
    boxbench::images::build_microvm_kernel(&progress)?;

    let boxbench = std::env::current_exe()?;
    let mut programs = vec![boxbench.clone()];
    programs.extend(PEER_PROGRAMS.iter().filter_map(|name| boxbench_peers::tool::find_on_path(name)));
    let images_dir = builder.images_dir().to_owned();
    let sources = PayloadSources {
        kernel,
        busybox: PathBuf::from("/bin/busybox"),
        programs,
        files: [boxbench_guest::elf_path().to_owned(), boxbench_guest::bzimage_path().to_owned()]
            .into_iter()
            .chain(boxbench_report::plots::default_font_files())
            .collect(),
        images_dir,
    };
    let image = boxbench_svmhost::prepare(&sources, builder.out_dir())?;
    if image.built_now {
        eprintln!(
            "svm-host: L1 initramfs built ({:.0} MB): {}",
            image.payload_bytes as f64 / 1e6,
            image.initramfs.display()
        );
    }
    let out = args.out.clone().unwrap_or_else(|| boxbench::reports::timestamped("svm-host"));
    eprintln!(
        "svm-host: booting the L1 ({} vCPUs, {} MiB, {} under TCG with SVM) to run `boxbench {}`",
        args.cpus,
        args.memory,
        image.kernel.release,
        args.args.join(" ")
    );
    let mut stdout = std::io::stdout();
    let outcome = config.run(&image, &boxbench, &args.args, &out, &mut stdout)?;
    eprintln!(
        "svm-host: L1 ready in {:.1} s; the command exited with status {} after {:.1} s in all; its files are in {}",
        outcome.boot_time.as_secs_f64(),
        outcome.exit_status,
        outcome.total_time.as_secs_f64(),
        out.display()
    );
    Ok(ExitCode::from(u8::try_from(outcome.exit_status).unwrap_or(1)))
}
