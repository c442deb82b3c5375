//! Booting the L1 under QEMU's TCG with SVM, streaming its console, and bringing back what the
//! command wrote.
//!
//! The L1 is a q35 machine (ACPI, so `poweroff -f` ends QEMU) with an EPYC CPU with SVM: TCG
//! emulates AMD-V with nested paging for it. Its console (first serial port) streams to the caller
//! line by line; the second serial port carries `/out` back as a base64 tar into a file, the third
//! the L1's heartbeat into another; the command comes in through fw_cfg. Three deadlines bound it:
//! one to reach the init's ready line, one for the whole run, and one for the heartbeat's silence —
//! an L1 can stop as a whole (its clock with it, so no deadline inside fires; seen a few times in
//! long runs of Linux guests under our VMM, cause unknown), and the heartbeat ends such a run in
//! minutes instead of at the whole-run deadline. QEMU dies with boxbench (`PR_SET_PDEATHSIG`), is
//! killed on a deadline or Ctrl-C, and its temporary directory is removed whatever happened.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::init::{self, EXIT_MARKER, FAILED_MARKER, HEARTBEAT_INTERVAL_S, OUT_BEGIN, OUT_END, READY_MARKER};

/// The L1's CPU model: an EPYC with SVM, less the features TCG cannot emulate (QEMU would warn
/// about each on every boot). `-cpu max` made nested boots 1.7× slower for no cause found.
const L1_CPU: &str =
    "EPYC,+svm,-rdseed,-sha-ni,-fxsr-opt,-misalignsse,-3dnowprefetch,-osvw,-topoext,-nrip-save,-xsavec";

/// How many console lines a failure message quotes.
const TAIL_LINES: usize = 8;

/// The L1 could not run the command.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// QEMU could not be started.
    #[error("starting {qemu}: {source}")]
    Spawn { qemu: PathBuf, source: std::io::Error },
    /// The L1 did not reach its init's ready line in time.
    #[error("the L1 host did not reach its init within {seconds} s{tail}")]
    BootTimeout { seconds: u64, tail: String },
    /// The command did not finish in time.
    #[error("the command did not finish within {seconds} s in the L1 host (QEMU killed){tail}")]
    Timeout { seconds: u64, tail: String },
    /// The L1's init said it could not go on.
    #[error("the L1 host failed: {what}{tail}")]
    Failed { what: String, tail: String },
    /// QEMU ended before the command's exit line.
    #[error("QEMU ended ({status}) before the command finished{tail}")]
    Ended { status: String, tail: String },
    /// The L1's heartbeat stopped: the L1 as a whole stopped running.
    #[error("the L1 host stopped: no heartbeat for {seconds} s (its clock or CPUs stalled; QEMU killed){tail}")]
    Stalled { seconds: u64, tail: String },
    /// Ctrl-C or SIGTERM.
    #[error("interrupted (QEMU killed)")]
    Interrupted,
    /// What the command wrote could not be brought back.
    #[error("bringing back the L1's {dir}: {reason}")]
    Out { dir: &'static str, reason: String },
    /// A temporary file could not be written, or the console not forwarded.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// How to boot the L1.
#[derive(Debug, Clone)]
pub struct BootSettings {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The L1's kernel (bzImage).
    pub kernel: PathBuf,
    /// The L1's initramfs (from [`boxbench_images::build_l1_initramfs`]).
    pub initramfs: PathBuf,
    /// The L1's vCPUs.
    pub cpus: u8,
    /// The L1's memory.
    pub memory_mib: u32,
    /// How long the L1 may take to reach its init's ready line.
    pub boot_timeout: Duration,
    /// How long the whole run may take.
    pub timeout: Duration,
    /// How long the L1's heartbeat may be silent once it is ready.
    pub stall_timeout: Duration,
    /// Host files the L1's init copies into its working directory (each a fw_cfg file under
    /// [`init::FILES_FW_CFG_DIR`], named by its file name).
    pub files: Vec<PathBuf>,
}

/// What the L1 gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOutcome {
    /// The command's exit status.
    pub exit_status: i32,
    /// How long the L1 took from QEMU's start to its ready line.
    pub boot_time: Duration,
    /// How long the whole run took.
    pub total_time: Duration,
}

/// Where QEMU writes the L1's serial channels other than the console.
#[derive(Debug, Clone)]
pub struct Channels {
    /// The base64 tar of `/out` (second serial port).
    pub out: PathBuf,
    /// The heartbeat (third serial port).
    pub heartbeat: PathBuf,
}

/// QEMU's arguments for `settings`, with the command in `command_file` and the other serial
/// channels into `channels`.
pub fn qemu_args(settings: &BootSettings, command_file: &Path, channels: &Channels) -> Vec<String> {
    let cmdline = format!("console=ttyS0 quiet panic=-1 {}", boxbench_core::host::EMULATED_CPU_PARAM);
    [
        "-accel",
        "tcg",
        "-M",
        "q35",
        "-cpu",
        L1_CPU,
        "-smp",
        &settings.cpus.to_string(),
        "-m",
        &settings.memory_mib.to_string(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
        "-chardev",
        &format!("file,id=out,path={}", channels.out.display()),
        "-serial",
        "chardev:out",
        "-chardev",
        &format!("file,id=heartbeat,path={}", channels.heartbeat.display()),
        "-serial",
        "chardev:heartbeat",
        "-fw_cfg",
        &format!("name={},file={}", init::COMMAND_FW_CFG, command_file.display()),
        "-kernel",
        &settings.kernel.to_string_lossy(),
        "-initrd",
        &settings.initramfs.to_string_lossy(),
        "-append",
        &cmdline,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(settings.files.iter().flat_map(|file| {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        ["-fw_cfg".to_owned(), format!("name={}/{name},file={}", init::FILES_FW_CFG_DIR, file.display())]
    }))
    .collect()
}

/// QEMU, killed and reaped when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boots the L1 with `command_script`, writes its console lines to `console` as they come, and
/// extracts what the command left in `/out` into `out_dir` (created if missing).
pub fn run(
    settings: &BootSettings,
    command_script: &str,
    out_dir: &Path,
    console: &mut dyn Write,
) -> Result<BootOutcome, BootError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| BootError::Io { what, source }
    };
    let scratch =
        tempfile::Builder::new().prefix("boxbench-svm-host-").tempdir().map_err(io("a temporary directory"))?;
    let command_file = scratch.path().join("command.sh");
    let channels = Channels { out: scratch.path().join("out.b64"), heartbeat: scratch.path().join("heartbeat") };
    fs::write(&command_file, command_script).map_err(io("writing the command file"))?;

    let started = Instant::now();
    let mut command = Command::new(&settings.qemu);
    command
        .args(qemu_args(settings, &command_file, &channels))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2), which is
    // async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| BootError::Spawn { qemu: settings.qemu.clone(), source })?;
    let (lines_tx, lines) = mpsc::channel::<String>();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as _),
    ]
    .into_iter()
    .flatten()
    {
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(lines_tx);
    let mut qemu = Qemu(child);

    let mut tail: VecDeque<String> = VecDeque::new();
    let tail_text = |tail: &VecDeque<String>| {
        if tail.is_empty() {
            String::new()
        } else {
            format!("; the console's last lines: {}", tail.iter().cloned().collect::<Vec<_>>().join(" | "))
        }
    };
    let mut boot_time = None;
    let mut exit_status = None;
    let mut heartbeat = Heartbeat::new(&channels.heartbeat, settings.stall_timeout);
    loop {
        if boxbench_core::interrupt::requested() {
            return Err(BootError::Interrupted);
        }
        let elapsed = started.elapsed();
        if boot_time.is_none() && elapsed > settings.boot_timeout {
            return Err(BootError::BootTimeout { seconds: settings.boot_timeout.as_secs(), tail: tail_text(&tail) });
        }
        if elapsed > settings.timeout {
            return Err(BootError::Timeout { seconds: settings.timeout.as_secs(), tail: tail_text(&tail) });
        }
        // Watched from the ready line on, and not once the command has ended (the L1 is powering
        // off then).
        if boot_time.is_some() && exit_status.is_none() && heartbeat.stalled() {
            return Err(BootError::Stalled { seconds: settings.stall_timeout.as_secs(), tail: tail_text(&tail) });
        }
        match lines.recv_timeout(boxbench_core::interrupt::POLL) {
            Ok(line) => {
                if line == READY_MARKER {
                    boot_time = Some(started.elapsed());
                    heartbeat.restart();
                    continue;
                }
                if let Some(what) = line.strip_prefix(FAILED_MARKER) {
                    return Err(BootError::Failed { what: what.to_owned(), tail: tail_text(&tail) });
                }
                if let Some(status) = line.strip_prefix(EXIT_MARKER) {
                    exit_status = status.trim().parse::<i32>().ok();
                    continue;
                }
                writeln!(console, "{line}").map_err(io("writing the console"))?;
                tail.push_back(line);
                if tail.len() > TAIL_LINES {
                    tail.pop_front();
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Both streams closed: QEMU is gone.
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = qemu.0.wait().map_err(io("waiting for QEMU"))?;
    let Some(exit_status) = exit_status else {
        return Err(BootError::Ended { status: status.to_string(), tail: tail_text(&tail) });
    };
    let total_time = started.elapsed();
    drop(qemu);
    let text = fs::read_to_string(&channels.out).map_err(io("reading the L1's out channel"))?;
    extract_out(&text, out_dir)?;
    Ok(BootOutcome { exit_status, boot_time: boot_time.unwrap_or(total_time), total_time })
}

/// The L1's heartbeat file, watched for growth.
struct Heartbeat<'a> {
    path: &'a Path,
    limit: Duration,
    bytes: u64,
    last_growth: Instant,
}

impl<'a> Heartbeat<'a> {
    fn new(path: &'a Path, limit: Duration) -> Self {
        Self { path, limit, bytes: 0, last_growth: Instant::now() }
    }

    /// Starts the silence count afresh (the L1 has just become ready).
    fn restart(&mut self) {
        self.last_growth = Instant::now();
    }

    /// Whether the file has not grown for longer than the limit.
    fn stalled(&mut self) -> bool {
        let bytes = fs::metadata(self.path).map(|m| m.len()).unwrap_or(0);
        if bytes != self.bytes {
            self.bytes = bytes;
            self.last_growth = Instant::now();
        }
        self.last_growth.elapsed() > self.limit
    }
}

/// The shortest heartbeat silence that is not just a slow beat: several beats' worth, so an L1
/// busy booting guests on every vCPU is not taken for a stopped one.
pub const MIN_STALL_TIMEOUT: Duration = Duration::from_secs(HEARTBEAT_INTERVAL_S * 6);

/// Unpacks the base64 tar between [`OUT_BEGIN`] and [`OUT_END`] in `text` into `out_dir`.
fn extract_out(text: &str, out_dir: &Path) -> Result<(), BootError> {
    let fail = |reason: String| BootError::Out { dir: init::OUT_DIR, reason };
    let body = text
        .split_once(OUT_BEGIN)
        .and_then(|(_, rest)| rest.split_once(OUT_END))
        .map(|(body, _)| body)
        .ok_or_else(|| fail("the L1 sent no complete archive".to_owned()))?;
    let encoded: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let tar = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|e| fail(format!("base64: {e}")))?;
    fs::create_dir_all(out_dir).map_err(|e| fail(format!("{}: {e}", out_dir.display())))?;
    let mut archive = tar::Archive::new(tar.as_slice());
    archive.set_preserve_permissions(false);
    archive.set_overwrite(true);
    archive.unpack(out_dir).map_err(|e| fail(format!("unpacking into {}: {e}", out_dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BootSettings {
        BootSettings {
            qemu: PathBuf::from("/usr/bin/qemu-system-x86_64"),
            kernel: PathBuf::from("/k/vmlinuz"),
            initramfs: PathBuf::from("/k/l1.cpio"),
            cpus: 2,
            memory_mib: 4096,
            boot_timeout: Duration::from_secs(120),
            timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(120),
            files: Vec::new(),
        }
    }

    fn channels() -> Channels {
        Channels { out: PathBuf::from("/t/out.b64"), heartbeat: PathBuf::from("/t/heartbeat") }
    }

    #[test]
    fn the_l1_is_an_epyc_with_svm_under_tcg_told_it_is_emulated() {
        let args = qemu_args(&settings(), Path::new("/t/command.sh"), &channels()).join(" ");
        assert!(args.contains("-accel tcg -M q35 -cpu EPYC,+svm,") && args.contains(" -smp 2 -m 4096 "), "{args}");
        assert!(args.contains("-fw_cfg name=opt/boxbench/command,file=/t/command.sh"), "{args}");
        assert!(args.contains("file,id=out,path=/t/out.b64 -serial chardev:out"), "{args}");
        assert!(args.contains("file,id=heartbeat,path=/t/heartbeat -serial chardev:heartbeat"), "{args}");
        assert!(args.ends_with("console=ttyS0 quiet panic=-1 boxbench.emulated_cpu=tcg"), "{args}");
    }

    #[test]
    fn a_heartbeat_file_that_stops_growing_is_a_stall_and_one_that_grows_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heartbeat");
        let mut heartbeat = Heartbeat::new(&path, Duration::from_millis(200));
        assert!(!heartbeat.stalled(), "a missing file is silence, not yet a stall");
        for beat in 1..=4 {
            fs::write(&path, init::HEARTBEAT.repeat(beat)).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            assert!(!heartbeat.stalled(), "beat {beat} arrived within the limit");
        }
        std::thread::sleep(Duration::from_millis(250));
        assert!(heartbeat.stalled());
        heartbeat.restart();
        assert!(!heartbeat.stalled());
    }

    #[test]
    fn the_out_archive_comes_back_whole() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "run/results.json", &b"{\"a\"}"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(tar);
        let wrapped: Vec<String> =
            encoded.as_bytes().chunks(76).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
        let text = format!("noise\r\n{OUT_BEGIN}\r\n{}\r\n{OUT_END}\r\n", wrapped.join("\r\n"));
        let dir = tempfile::tempdir().unwrap();
        extract_out(&text, dir.path()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("run/results.json")).unwrap(), "{\"a\"}");
    }

    #[test]
    fn a_cut_archive_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = extract_out(&format!("{OUT_BEGIN}\nAAAA\n"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("no complete archive"), "{err}");
    }
}
