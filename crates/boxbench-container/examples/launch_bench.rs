//! Times launches of the container backend, or of any command, back to back or with an idle gap,
//! and prints medians: how boxbench's own container compares with crun and with a bare
//! `unshare ... chroot` on this host.
//!
//! ```text
//! launch_bench container ROOTFS|BUNDLE [-n N] [--gap-ms MS] [-- ARGV...]
//! launch_bench command [-n N] [--gap-ms MS] [--cgroup NAME] -- ARGV...
//! ```
//!
//! `container` runs ARGV (default `/bin/true`) in ROOTFS (or in an OCI BUNDLE) through
//! `measure::launch_once` and reports the record's phases, CPU time and memory peak. `command` runs
//! ARGV as a host process and reports its wall and CPU time; with `--cgroup NAME` the command
//! starts in a fresh memory cgroup `NAME` under the v1 memory hierarchy (so a runtime told to nest
//! its container there, e.g. crun with `linux.cgroupsPath: "/NAME/ctr"`, is measured whole), the
//! cgroup's peak is reported, and `NAME` is removed from every hierarchy afterwards.
//!
//! Launch times on a host shared with other work are inflated by its load; `nice -n -20` on the
//! whole comparison treats every backend alike.

use std::error::Error;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boxbench_container::ContainerLauncher;
use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, Workload};

struct Options {
    runs: usize,
    gap: Duration,
    cgroup: Option<String>,
    argv: Vec<String>,
    positional: Vec<String>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, Box<dyn Error>> {
    let mut options = Options { runs: 50, gap: Duration::ZERO, cgroup: None, argv: Vec::new(), positional: Vec::new() };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-n" => options.runs = args.next().ok_or("-n needs a count")?.parse()?,
            "--gap-ms" => options.gap = Duration::from_millis(args.next().ok_or("--gap-ms needs a value")?.parse()?),
            "--cgroup" => options.cgroup = Some(args.next().ok_or("--cgroup needs a name")?),
            "--" => {
                options.argv = args.by_ref().collect();
            }
            _ => options.positional.push(arg),
        }
    }
    Ok(options)
}

/// Median, 10th and 90th percentile.
fn percentiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn show(label: &str, values: &mut [f64]) {
    if values.is_empty() {
        return;
    }
    let (median, p10, p90) = percentiles(values);
    println!("  {label:<22} median {median:8.3}   p10 {p10:8.3}   p90 {p90:8.3}");
}

/// CPU time (user + system) of this process and its reaped children so far, in ms.
fn cpu_ms() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let ms = |who| {
        getrusage(who).map_or(0.0, |u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e3 + tv.tv_usec() as f64 / 1e3;
            t(u.user_time()) + t(u.system_time())
        })
    };
    ms(UsageWho::RUSAGE_SELF) + ms(UsageWho::RUSAGE_CHILDREN)
}

fn bench_container(options: &Options) -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(options.positional.get(1).ok_or("container needs a ROOTFS or BUNDLE directory")?);
    let images = if dir.join("config.json").exists() {
        ImagePaths { bundle: Some(dir), ..Default::default() }
    } else {
        ImagePaths { rootfs: Some(dir), ..Default::default() }
    };
    let argv = if options.argv.is_empty() { vec!["/bin/true".to_owned()] } else { options.argv.clone() };
    let launcher = ContainerLauncher::new()?;
    let spec = InstanceSpec::new(Workload::Command(argv.clone()), images);
    let (mut wall, mut ready, mut userspace, mut exit, mut peak) = (vec![], vec![], vec![], vec![], vec![]);
    let mut cpu = vec![];
    for _ in 0..options.runs {
        std::thread::sleep(options.gap);
        let (started, cpu_before) = (Instant::now(), cpu_ms());
        let record = launch_once(&launcher, &spec)?;
        wall.push(started.elapsed().as_secs_f64() * 1e3);
        cpu.push(cpu_ms() - cpu_before);
        if !record.outcome.is_success() {
            return Err(format!("{} ended: {}\n{}", argv.join(" "), record.outcome, record.console).into());
        }
        ready.extend(record.phases.ready_ms);
        userspace.extend(record.phases.userspace_ms);
        exit.extend(record.phases.exit_ms);
        peak.extend(record.memory.peak_bytes.map(|b| b as f64 / 1024.0));
    }
    println!("container `{}`: {} runs, gap {:?} (ms; peak in KiB)", argv.join(" "), options.runs, options.gap);
    show("ready_ms", &mut ready);
    show("userspace_ms", &mut userspace);
    show("exit_ms (launch->exit)", &mut exit);
    show("wall (prepare..finish)", &mut wall);
    show("cpu ms (self+children)", &mut cpu);
    show("cgroup peak KiB", &mut peak);
    Ok(())
}

/// Removes cgroup `name`, and the child cgroups a runtime nested in it, from every v1 hierarchy (a
/// runtime told to nest its container there creates `name` in each controller and leaves it).
fn remove_everywhere(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    for hierarchy in hierarchies.flatten() {
        let dir = hierarchy.path().join(name);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Wall times, cgroup peaks and CPU times of a command's runs.
type Samples = (Vec<f64>, Vec<f64>, Vec<f64>);

fn bench_command(options: &Options) -> Result<(), Box<dyn Error>> {
    let (program, args) = options.argv.split_first().ok_or("command needs -- ARGV")?;
    let cgroup_dir = options.cgroup.as_ref().map(|name| PathBuf::from("/sys/fs/cgroup/memory").join(name));
    if let Some(dir) = &cgroup_dir {
        std::fs::create_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let result = (|| -> Result<Samples, Box<dyn Error>> {
        let (mut wall, mut peak, mut cpu) = (vec![], vec![], vec![]);
        for _ in 0..options.runs {
            std::thread::sleep(options.gap);
            let mut command = Command::new(program);
            command.args(args).stdin(Stdio::null()).stdout(Stdio::null());
            let procs = match &cgroup_dir {
                Some(dir) => {
                    std::fs::write(dir.join("memory.max_usage_in_bytes"), "0")?;
                    Some(std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?)
                }
                None => None,
            };
            if let Some(procs) = &procs {
                let fd = procs.as_raw_fd();
                // SAFETY: the hook only makes a write(2) from a static buffer (pid "0" means the
                // writer itself), which is async-signal-safe between fork and exec.
                unsafe {
                    command.pre_exec(move || {
                        if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                            Ok(())
                        } else {
                            Err(std::io::Error::last_os_error())
                        }
                    });
                }
            }
            let (started, cpu_before) = (Instant::now(), cpu_ms());
            let status = command.status()?;
            wall.push(started.elapsed().as_secs_f64() * 1e3);
            cpu.push(cpu_ms() - cpu_before);
            if !status.success() {
                return Err(format!("{program} exited with {status}").into());
            }
            if let Some(dir) = &cgroup_dir {
                let bytes: f64 = std::fs::read_to_string(dir.join("memory.max_usage_in_bytes"))?.trim().parse()?;
                peak.push(bytes / 1024.0);
            }
        }
        Ok((wall, peak, cpu))
    })();
    if let Some(name) = &options.cgroup {
        remove_everywhere(name);
    }
    let (mut wall, mut peak, mut cpu) = result?;
    println!("command `{}`: {} runs, gap {:?} (ms; peak in KiB)", options.argv.join(" "), options.runs, options.gap);
    show("wall (spawn->exit)", &mut wall);
    show("cpu ms (self+children)", &mut cpu);
    show("cgroup peak KiB", &mut peak);
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let options = parse(std::env::args().skip(1))?;
    match options.positional.first().map(String::as_str) {
        Some("container") => bench_container(&options),
        Some("command") => bench_command(&options),
        _ => Err("usage: launch_bench container ROOTFS|BUNDLE [-n N] [--gap-ms MS] [-- ARGV...] | \
                  launch_bench command [-n N] [--gap-ms MS] [--cgroup NAME] -- ARGV..."
            .into()),
    }
}
