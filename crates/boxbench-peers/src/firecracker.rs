//! Firecracker, run without its API (`--no-api --config-file`), only when a binary is given or on
//! PATH: no registry reachable from boxbench's hosts packages it.
//!
//! Each instance gets a JSON configuration in a temporary directory: the boot source (kernel,
//! initramfs, boot arguments) and the machine (vCPUs, memory), no drives, no network. Firecracker
//! is told the launch's start (`--start-time-us`, CLOCK_MONOTONIC microseconds, as its jailer does)
//! and runs with `--boot-timer`: when the guest writes the boot-timer byte, Firecracker logs
//! `Guest-boot-time = N us ...` from the vCPU thread that took the write. N counts from Firecracker's
//! own VM-build request, not from `--start-time-us` (which only feeds its start-up metric), so it is
//! not a time on boxbench's timeline. The log is therefore a FIFO boxbench drains as it drains a
//! console: the moment that line arrives, on the launch's clock, is `userspace_ms`; Firecracker's own
//! N is kept as the detail `firecracker_boot_timer_ms`.
//! The guest's reset (`reboot=k`, through Firecracker's i8042) ends Firecracker; its `/init` prints
//! the workload's exit status as QEMU's guests do.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::console::{Console, ConsoleCapture};
use boxbench_core::host::KvmFlavour;
use boxbench_core::spec::{I8042_RESET_ONLY_ARGS, VM_DEFAULTS};
use boxbench_core::{Instance, InstanceSpec, LaunchError, Launcher, Outcome, Phases, Record, Workload};
use serde_json::{Value, json};

use crate::process::{ChildSetup, Streams};
use crate::qemu::{GuestKind, guest_outcome, vmm_messages_note};
use crate::run::{ToolRun, record};
use crate::tool::{Tool, ToolError};

/// What the boot timer's log line starts with.
const BOOT_TIME_LINE: &str = "Guest-boot-time =";

/// Why boxbench's own guest may leave no boot-timer line: it writes the byte where Firecracker's
/// device was before Firecracker's PCI layout moved it (the guest image is shared by every VMM).
const BOOT_TIMER_MISSED_NOTE: &str = "Firecracker logged no Guest-boot-time, so userspace_ms is unobserved: \
    boxbench's guest writes its boot-timer byte at 0xd0000000, the boot device's address before Firecracker's \
    PCI-era layout moved it to 0xc0000000";

/// A Firecracker backend that cannot be used or failed to set up an instance.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    /// The binary is missing or unusable.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// Firecracker runs only on KVM.
    #[error("firecracker needs /dev/kvm, which this host does not have")]
    NoKvm,
    /// The instance's configuration or log file could not be written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The log FIFO could not be made.
    #[error("{path}: making the log FIFO: {source}")]
    LogFifo { path: PathBuf, source: nix::Error },
}

/// Firecracker's log, a FIFO drained from before Firecracker starts until it exits, so its boot-timer
/// line is stamped on boxbench's clock when it is written.
#[derive(Debug)]
pub struct BootTimerLog {
    capture: ConsoleCapture,
    /// boxbench's own write end: without a writer a FIFO reads as end of file before Firecracker has
    /// opened it. Dropped once Firecracker is gone, so the drain ends.
    keep_open: fs::File,
}

impl BootTimerLog {
    /// Makes the FIFO at `path`.
    pub fn create(path: &Path) -> Result<(), FirecrackerError> {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
            .map_err(|source| FirecrackerError::LogFifo { path: path.to_owned(), source })
    }

    /// Starts draining the FIFO at `path`; Firecracker may open it (non-blocking, as it does) from now on.
    pub fn start(path: &Path) -> Result<Self, FirecrackerError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| FirecrackerError::Io { path: path.to_owned(), source };
        // Opening a FIFO's read end blocks until a writer appears, unless non-blocking; the reader
        // thread then blocks in read once the descriptor is switched back.
        let read_end = fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
        let keep_open = fs::OpenOptions::new().write(true).open(path).map_err(io)?;
        let flags =
            nix::fcntl::fcntl(&read_end, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| io(std::io::Error::from(e)))?;
        let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&read_end, nix::fcntl::FcntlArg::F_SETFL(blocking))
            .map_err(|e| io(std::io::Error::from(e)))?;
        let capture = ConsoleCapture::spawn(read_end, BOOT_TIME_LINE, || None).map_err(io)?;
        Ok(Self { capture, keep_open })
    }

    /// Once Firecracker has exited: the log's text and when the boot-timer line arrived.
    pub fn finish(self) -> Console {
        drop(self.keep_open);
        self.capture.join()
    }
}

/// How to run Firecracker.
#[derive(Debug, Clone, Default)]
pub struct FirecrackerOptions {
    /// The firecracker binary (default: `firecracker` on PATH).
    pub binary: Option<PathBuf>,
    /// The kind of guest the spec's kernel is.
    pub guest: GuestKind,
}

/// Firecracker as a boxbench backend.
#[derive(Debug)]
pub struct FirecrackerLauncher {
    options: FirecrackerOptions,
    tool: Tool,
    cgroups: CgroupHost,
    kvm: KvmFlavour,
}

impl FirecrackerLauncher {
    /// Uses the binary of `options`, or `firecracker` on PATH.
    pub fn new(options: FirecrackerOptions) -> Result<Self, LaunchError> {
        let unsupported = |e: FirecrackerError| LaunchError::Unsupported(e.to_string());
        let tool = match &options.binary {
            Some(path) => Tool::at("firecracker", path),
            None => Tool::find("firecracker", "none; give the binary's path with --firecracker"),
        }
        .map_err(|e| unsupported(e.into()))?;
        let kvm = KvmFlavour::detect();
        if kvm == KvmFlavour::Absent {
            return Err(unsupported(FirecrackerError::NoKvm));
        }
        let cgroups = CgroupHost::detect()?;
        Ok(Self { options, tool, cgroups, kvm })
    }

    /// The binary and version in use.
    pub fn tool(&self) -> &Tool {
        &self.tool
    }
}

/// The boot arguments of a guest: a Linux guest resets through the i8042 (`reboot=k`, which ends
/// Firecracker); both guests are told their workload (boxbench's own stays up after its marker for
/// `idle`).
pub fn boot_args(spec: &InstanceSpec) -> String {
    format!(
        "{} {I8042_RESET_ONLY_ARGS} reboot=k pci=off boxbench.workload={}",
        VM_DEFAULTS.base_cmdline,
        spec.workload.name()
    )
}

/// Firecracker's `--config-file` JSON for `spec`: boot source and machine, no drives.
pub fn config_json(spec: &InstanceSpec, kernel: &Path) -> Value {
    let mut boot_source = json!({
        "kernel_image_path": kernel,
        "boot_args": boot_args(spec),
    });
    if let Some(initrd) = &spec.images.initrd {
        boot_source["initrd_path"] = json!(initrd);
    }
    json!({
        "boot-source": boot_source,
        "drives": [],
        "machine-config": {
            "vcpu_count": spec.vcpus.max(1),
            "mem_size_mib": VM_DEFAULTS.guest_memory_bytes(spec).div_ceil(1 << 20),
        },
    })
}

/// The boot time Firecracker's boot timer logged, in microseconds since Firecracker's VM-build request.
pub fn parse_boot_time_us(log: &str) -> Option<u64> {
    log.lines().find_map(|line| {
        let rest = &line[line.find(BOOT_TIME_LINE)? + BOOT_TIME_LINE.len()..];
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next() == Some("us")).then_some(value)
    })
}

impl Launcher for FirecrackerLauncher {
    fn name(&self) -> &str {
        "firecracker"
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let kernel = spec.images.kernel.as_ref().ok_or_else(|| {
            LaunchError::InvalidSpec("firecracker needs images.kernel (an ELF vmlinux or bzImage)".into())
        })?;
        if !kernel.is_file() {
            return Err(LaunchError::InvalidSpec(format!("{}: kernel not found", kernel.display())));
        }
        if let Some(initrd) = spec.images.initrd.as_ref().filter(|p| !p.is_file()) {
            return Err(LaunchError::InvalidSpec(format!("{}: initrd not found", initrd.display())));
        }
        if self.options.guest == GuestKind::Linux && matches!(spec.workload, Workload::Command(_)) {
            return Err(LaunchError::InvalidSpec(
                "firecracker runs named workloads only (the guest's /init runs /boxbench/workloads/NAME)".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("boxbench-firecracker-")
            .tempdir()
            .map_err(|source| LaunchError::backend(FirecrackerError::Io { path: std::env::temp_dir(), source }))?;
        let config_path = dir.path().join("config.json");
        let config = config_json(spec, kernel);
        fs::write(&config_path, config.to_string())
            .map_err(|source| LaunchError::backend(FirecrackerError::Io { path: config_path.clone(), source }))?;
        let log_path = dir.path().join("firecracker.log");
        BootTimerLog::create(&log_path).map_err(LaunchError::backend)?;
        let mut notes = vec![
            format!(
                "{} --no-api with {} MiB and {} vCPU, no drives, no network",
                self.tool.label(),
                VM_DEFAULTS.guest_memory_bytes(spec).div_ceil(1 << 20),
                spec.vcpus.max(1)
            ),
            format!("Firecracker runs guests on KVM only: {}", self.kvm.label()),
            "userspace_ms is when Firecracker logged its boot timer (Guest-boot-time), on boxbench's clock".to_owned(),
        ];
        if !self.kvm.is_hardware() {
            notes.push("guest kernel code emulated by this host's KVM, not run on hardware virtualisation".to_owned());
        }
        Ok(Box::new(FirecrackerInstance {
            binary: self.tool.path.clone(),
            config_path,
            log_path,
            guest: self.options.guest,
            log: None,
            guest_bytes: VM_DEFAULTS.guest_memory_bytes(spec).div_ceil(1 << 20) << 20,
            run: ToolRun::new("firecracker", &self.cgroups)?,
            notes,
            _dir: dir,
        }))
    }
}

/// One VM run by Firecracker.
#[derive(Debug)]
struct FirecrackerInstance {
    binary: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    guest: GuestKind,
    /// The log being drained, from launch on.
    log: Option<BootTimerLog>,
    /// Guest RAM as Firecracker maps it (`mem_size_mib`).
    guest_bytes: u64,
    run: ToolRun,
    notes: Vec<String>,
    /// The configuration and log; removed after the instance.
    _dir: tempfile::TempDir,
}

impl Instance for FirecrackerInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        // The log's reader is per-instance set-up: it starts before the clock.
        self.log = Some(BootTimerLog::start(&self.log_path).map_err(LaunchError::backend)?);
        let timeline = self.run.start_clock()?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--no-api")
            .arg("--config-file")
            .arg(&self.config_path)
            .arg("--boot-timer")
            .arg("--log-path")
            .arg(&self.log_path)
            .args(["--level", "Info"])
            .arg("--start-time-us")
            .arg((timeline.started_at().0 / 1000).to_string());
        let hook = self.run.measure_vmm_overhead(self.guest_bytes);
        self.run.start(command, ChildSetup::Plain, Streams::StderrApart, hook)
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        Ok(self.run.wait(deadline)?.map(|status| guest_outcome(status, "", "", self.guest)))
    }

    fn marker_seen(&self) -> bool {
        self.run.marker_seen()
    }

    fn kill(&mut self) -> Result<(), LaunchError> {
        self.run.kill();
        Ok(())
    }

    fn finish(mut self: Box<Self>, outcome: Outcome) -> Result<Record, LaunchError> {
        let stopped = self.run.stop()?;
        let log = self.log.take().map(BootTimerLog::finish).unwrap_or_default();
        let timeline = stopped.timeline;
        let stderr = stopped.stderr.clone().unwrap_or_default();
        let outcome = match (&outcome, stopped.status) {
            (Outcome::DeadlineExceeded { .. }, _) | (_, None) => outcome,
            (_, Some(status)) => {
                guest_outcome(status, &stopped.console.text, &format!("{stderr}{}", log.text), self.guest)
            }
        };
        self.run.remove_cgroup()?;
        let observed = Phases { userspace_ms: timeline.ms(log.marker_at), ..Phases::default() };
        let mut notes = std::mem::take(&mut self.notes);
        if let Some(messages) = vmm_messages_note("Firecracker", &stderr) {
            notes.push(messages);
        }
        if log.marker_at.is_none() && self.guest == GuestKind::Boxbench {
            notes.push(BOOT_TIMER_MISSED_NOTE.to_owned());
        }
        let mut record = record("firecracker", stopped, outcome, observed, None, notes);
        if let Some(us) = parse_boot_time_us(&log.text) {
            record.details_ms.insert("firecracker_boot_timer_ms".to_owned(), us as f64 / 1000.0);
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxbench_core::ImagePaths;
    use boxbench_core::Timeline;
    use boxbench_core::spec::LINUX_GUEST_ARGS;

    #[test]
    fn config_has_boot_source_and_machine_and_no_drives() {
        let images = ImagePaths { initrd: Some("/img/initramfs.cpio".into()), ..ImagePaths::default() };
        let mut spec = InstanceSpec::new(Workload::Idle, images);
        spec.vcpus = 2;
        spec.memory_limit_bytes = Some(100 << 20);
        let config = config_json(&spec, Path::new("/img/vmlinux"));
        assert_eq!(
            config,
            json!({
                "boot-source": {
                    "kernel_image_path": "/img/vmlinux",
                    "initrd_path": "/img/initramfs.cpio",
                    "boot_args": format!("{LINUX_GUEST_ARGS} {I8042_RESET_ONLY_ARGS} reboot=k pci=off boxbench.workload=idle"),
                },
                "drives": [],
                "machine-config": {"vcpu_count": 2, "mem_size_mib": 100},
            })
        );
    }

    #[test]
    fn own_guest_is_told_its_workload_and_gets_the_default_memory() {
        let spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
        let config = config_json(&spec, Path::new("/g.elf"));
        assert_eq!(
            config["boot-source"]["boot_args"],
            format!("{LINUX_GUEST_ARGS} {I8042_RESET_ONLY_ARGS} reboot=k pci=off boxbench.workload=hello")
        );
        assert!(config["boot-source"].get("initrd_path").is_none());
        assert_eq!(config["machine-config"]["mem_size_mib"], VM_DEFAULTS.memory_bytes >> 20);
    }

    #[test]
    fn boot_timer_line_is_stamped_on_the_launch_clock_when_firecracker_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("firecracker.log");
        BootTimerLog::create(&path).unwrap();
        let timeline = Timeline::start();
        let log = BootTimerLog::start(&path).unwrap();
        let before_write = timeline.now_ms();
        {
            // Firecracker opens its log path non-blocking for writing, as here.
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut firecracker =
                fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap();
            // The figure Firecracker prints counts from its own start: 1 us, whatever boxbench's clock says.
            writeln!(firecracker, "[anonymous-instance:fc_vcpu 0] Guest-boot-time =      1 us 0 ms, 1 CPU us 0 CPU ms")
                .unwrap();
        }
        let console = log.finish();
        let userspace_ms = timeline.ms(console.marker_at).expect("boot-timer line seen");
        assert!(userspace_ms >= before_write, "{userspace_ms} ms is on the launch's clock, not Firecracker's 0.001 ms");
        assert_eq!(parse_boot_time_us(&console.text), Some(1));
    }

    #[test]
    fn a_log_without_the_boot_timer_line_leaves_it_unobserved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("firecracker.log");
        BootTimerLog::create(&path).unwrap();
        let log = BootTimerLog::start(&path).unwrap();
        fs::OpenOptions::new().write(true).open(&path).unwrap();
        let console = log.finish();
        assert_eq!(console.marker_at, None);
        assert_eq!(console.text, "");
    }

    #[test]
    fn boot_timer_line_is_parsed() {
        let log = "2026-11-29T03:00:00.000000000 [anonymous-instance:main] Running Firecracker v1.7.0\n\
                   2026-11-29T03:00:00.100000000 [anonymous-instance:fc_vcpu 0] Guest-boot-time =  95123 us 95 ms, \
                   74310 CPU us 74 CPU ms\n";
        assert_eq!(parse_boot_time_us(log), Some(95123));
        assert_eq!(parse_boot_time_us("Guest-boot-time = soon\n"), None);
        assert_eq!(parse_boot_time_us(""), None);
    }
}
