//! boxbench on a host with hardware-assisted KVM and a pure cgroup v2, for real: `boxbench svm-host`
//! boots an L1 Linux whose AMD-V QEMU's TCG emulates, and runs one boxbench command inside it (issue
//! 11). These machines' own /dev/kvm is kvm_pvm and their cgroups hybrid, so this is the only place
//! here where the path every real user takes first runs: boxbench's VMM and QEMU booting Debian's
//! unmodified cloud kernel under SVM-backed KVM, the container launcher and the OCI runtimes on
//! cgroup v2 alone.
//!
//! Each L1 boot costs about 10 s plus its command, and two at once double each other's time on two
//! cores, so every test that boots one holds [`L1`] and they run one after another. Every call runs
//! with its own `TMPDIR`, so "nothing left on the host" (no QEMU, no `boxbench-svm-host-*`
//! directory) is checked on what this call made, not on what anyone else runs meanwhile.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use boxbench_core::cgroup::CgroupMode;
use boxbench_core::host::KvmFlavour;
use boxbench_core::{Outcome, Phases, Record};
use boxbench_microvm::launcher::{PVM_COMPAT_NOTE_PREFIX, PVM_EMULATED_NOTE};
use boxbench_testkit::{is_root, require};
use serde_json::Value;

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");
/// The QEMU `svm-host` runs the L1 with by default.
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
/// The deadline given to `svm-host` for a command that boots Linux guests inside: a guest takes
/// 10-15 s there, the L1 about 10 s; the rest is room for a loaded machine. An L1 that stops as a
/// whole (seen in long runs while boxbench's VMM ran Linux guests) is ended sooner by svm-host's
/// heartbeat watch.
const GUEST_RUN_TIMEOUT_S: u64 = 300;
/// The deadline for a command that boots no VM inside.
const PLAIN_RUN_TIMEOUT_S: u64 = 180;
/// How long past `svm-host`'s own deadline the test waits before it kills `svm-host` itself.
const WATCHDOG_GRACE: Duration = Duration::from_secs(60);

/// One L1 at a time: held by every test that runs `svm-host`.
static L1: Mutex<()> = Mutex::new(());

fn one_l1_at_a_time() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the next test's L1 is its own.
    L1.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Everything an L1 needs on this host: root, QEMU, and the guest images built (svm-host would
/// build what is missing, the micro-VM kernel alone taking minutes: `scripts/test.sh` builds them
/// before the tests).
fn l1_available() -> Result<(), String> {
    if !is_root() {
        return Err("svm-host's L1 runs containers and VMs: the tests must run as root".to_owned());
    }
    if !Path::new(QEMU).is_file() {
        return Err(format!("no {QEMU} (Debian package qemu-system-x86)"));
    }
    let builder = boxbench_images::ImageBuilder::default_dirs();
    let paths = builder.paths();
    let missing = [
        (paths.bundle.join("config.json").is_file() && paths.rootfs.is_dir(), "the OCI bundle"),
        (paths.initramfs_gz.is_file(), "the initramfs"),
        (builder.debian_cloud_kernel().is_some(), "Debian's cloud kernel"),
        (boxbench::images::built_microvm_kernel().is_some(), "the micro-VM kernel"),
    ];
    match missing.iter().filter(|(built, _)| !built).map(|(_, what)| *what).collect::<Vec<_>>() {
        none if none.is_empty() => Ok(()),
        missing => Err(format!(
            "guest images not built in {} ({}): run `boxbench images build`",
            builder.out_dir().display(),
            missing.join(", ")
        )),
    }
}

/// The release of Debian's cloud kernel the guests boot (e.g. `6.1.0-57-cloud-amd64`).
fn debian_cloud_release() -> String {
    boxbench_images::ImageBuilder::default_dirs().debian_cloud_kernel().expect("checked by l1_available").release
}

/// The release of boxbench's micro-VM kernel (e.g. `6.1.192-boxbench`).
fn microvm_release() -> String {
    boxbench::images::built_microvm_kernel().expect("checked by l1_available").release
}

/// One `boxbench svm-host` call, finished.
struct SvmHost {
    /// What it was called with, for messages.
    args: String,
    status: ExitStatus,
    /// The L1's console: the inner command's stdout and stderr, with L1 kernel lines among them.
    stdout: String,
    /// svm-host's own lines.
    stderr: String,
    elapsed: Duration,
    /// `--out`: what the inner command wrote in its working directory.
    out: PathBuf,
    _scratch: tempfile::TempDir,
}

impl SvmHost {
    /// The call and its output, for an assertion's message.
    fn context(&self) -> String {
        format!(
            "boxbench svm-host {}\nstatus: {}\n--- stderr:\n{}\n--- stdout (last 4000 bytes):\n{}",
            self.args,
            self.status,
            self.stderr,
            tail(&self.stdout, 4000)
        )
    }

    fn assert_success(&self) {
        assert!(self.status.success(), "svm-host failed\n{}", self.context());
    }

    /// The inner command's JSON document: the first `{` line of the console to its matching `}`,
    /// without the L1 kernel's lines (`[   18.15] kvm ...`) that may land among it.
    fn json(&self) -> Value {
        let text: String = self.stdout.lines().filter(|l| !is_kernel_line(l)).map(|l| format!("{l}\n")).collect();
        let start = if text.starts_with("{\n") { Some(0) } else { text.find("\n{\n").map(|at| at + 1) };
        let start = start.unwrap_or_else(|| panic!("no JSON document on the console\n{}", self.context()));
        let mut documents = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        match documents.next() {
            Some(Ok(value)) => value,
            other => panic!("the console's JSON does not parse ({other:?})\n{}", self.context()),
        }
    }

    /// The records of a `run --json` document.
    fn records(&self) -> Vec<Record> {
        let json = self.json();
        let runs = json["runs"].as_array().unwrap_or_else(|| panic!("no runs in the JSON\n{}", self.context()));
        runs.iter()
            .map(|run| {
                serde_json::from_value(run.clone())
                    .unwrap_or_else(|e| panic!("a record does not parse: {e}\n{}", self.context()))
            })
            .collect()
    }

    /// The one record of a `run -n 1 --json`.
    fn record(&self) -> Record {
        let mut records = self.records();
        assert_eq!(records.len(), 1, "one record expected\n{}", self.context());
        records.remove(0)
    }

    /// The lines svm-host printed that are errors (`boxbench: ...`), as opposed to its progress.
    fn error_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.starts_with("svm-host: ")).collect()
    }
}

/// A line of the L1 kernel's log on its console.
fn is_kernel_line(line: &str) -> bool {
    line.strip_prefix('[').and_then(|rest| rest.split_once(']')).is_some_and(|(stamp, _)| {
        let stamp = stamp.trim_start();
        !stamp.is_empty() && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Runs `boxbench svm-host --timeout TIMEOUT_S <host_args> --out DIR -- <inner>` under [`L1`], with
/// its own `TMPDIR`; kills it if it outlives its own deadline by [`WATCHDOG_GRACE`]; checks it left
/// no QEMU and no scratch directory; and says how long it took.
fn svm_host(timeout_s: u64, host_args: &[&str], inner: &[&str]) -> SvmHost {
    svm_host_with(timeout_s, host_args, inner, L1Fault::None)
}

/// What the test does to the L1 while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L1Fault {
    None,
    /// Stops QEMU with SIGSTOP once the L1's heartbeat has begun: the L1 stops as a whole, as in
    /// the stalls seen in long runs.
    FreezeWhenReady,
}

/// [`svm_host`], doing `fault` to the L1 on the way.
fn svm_host_with(timeout_s: u64, host_args: &[&str], inner: &[&str], fault: L1Fault) -> SvmHost {
    let _one = one_l1_at_a_time();
    let scratch = tempfile::Builder::new().prefix("svm-host-test-").tempdir().unwrap();
    let tmpdir = scratch.path().join("tmp");
    let out = scratch.path().join("out");
    fs::create_dir(&tmpdir).unwrap();
    let mut args: Vec<String> = vec!["--timeout".into(), timeout_s.to_string()];
    args.extend(host_args.iter().map(|s| (*s).to_owned()));
    args.extend(["--out".to_owned(), out.display().to_string(), "--".to_owned()]);
    args.extend(inner.iter().map(|s| (*s).to_owned()));
    let stdout_path = scratch.path().join("stdout");
    let stderr_path = scratch.path().join("stderr");
    let started = Instant::now();
    let mut child = Command::new(BOXBENCH)
        .arg("svm-host")
        .args(&args)
        .env("TMPDIR", &tmpdir)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let watchdog = Duration::from_secs(timeout_s) + WATCHDOG_GRACE;
    // Seen once, QEMU running from the scratch directory in `tmpdir` proves svm-host honours
    // TMPDIR, so that finding nothing there afterwards means something.
    let mut saw_qemu = false;
    let mut frozen = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let qemu: Vec<String> =
            processes_running_from(&tmpdir).into_iter().filter(|p| p.contains("qemu-system-x86_64")).collect();
        saw_qemu = saw_qemu || !qemu.is_empty();
        if fault == L1Fault::FreezeWhenReady && !frozen && heartbeat_began(&tmpdir) {
            for process in &qemu {
                let pid = process.split_whitespace().next().unwrap();
                assert!(Command::new("kill").args(["-STOP", pid]).status().unwrap().success());
                frozen = true;
            }
        }
        if started.elapsed() > watchdog {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "svm-host {} outlived its own {timeout_s} s deadline by {} s: killed\n--- stderr:\n{}",
                args.join(" "),
                WATCHDOG_GRACE.as_secs(),
                fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let elapsed = started.elapsed();
    let run = SvmHost {
        args: args.join(" "),
        status,
        stdout: String::from_utf8_lossy(&fs::read(&stdout_path).unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&stderr_path).unwrap()).into_owned(),
        elapsed,
        out,
        _scratch: scratch,
    };
    say(&format!(
        "svm_host: {} took {:.1} s: boxbench svm-host {}",
        std::thread::current().name().unwrap_or("?"),
        elapsed.as_secs_f64(),
        run.args
    ));
    assert!(saw_qemu, "no QEMU was seen running from svm-host's TMPDIR {}\n{}", tmpdir.display(), run.context());
    assert_eq!(frozen, fault == L1Fault::FreezeWhenReady, "the L1 was not frozen as asked\n{}", run.context());
    assert_nothing_left(&tmpdir, &run);
    run
}

/// Whether an L1 heartbeat file under svm-host's scratch directory in `tmpdir` has its first beat.
fn heartbeat_began(tmpdir: &Path) -> bool {
    fs::read_dir(tmpdir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|scratch| fs::metadata(scratch.path().join("heartbeat")).is_ok_and(|m| m.len() > 0))
}

/// A line on the test process's stderr, past libtest's capture (the per-boot times belong in CI's log).
fn say(line: &str) {
    let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
}

/// No process runs from `tmpdir` (QEMU's command and out files live in svm-host's scratch
/// directory there) and no scratch directory is left in it.
fn assert_nothing_left(tmpdir: &Path, run: &SvmHost) {
    let processes = processes_running_from(tmpdir);
    assert!(processes.is_empty(), "processes left running: {processes:?}\n{}", run.context());
    let left: Vec<PathBuf> = fs::read_dir(tmpdir).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "svm-host left {left:?} in its TMPDIR\n{}", run.context());
}

/// `pid command line` of every process whose command line names a path under `dir`.
fn processes_running_from(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok().map(|c| (e.file_name(), c)))
        .map(|(pid, cmdline)| {
            format!("{} {}", pid.to_string_lossy(), String::from_utf8_lossy(&cmdline).replace('\0', " "))
        })
        .filter(|line| line.contains(&needle))
        .collect()
}

/// Every phase of boxbench's own launchers is observed, in timeline order.
fn assert_every_phase(record: &Record, run: &SvmHost) {
    let phases: &Phases = &record.phases;
    for name in Phases::NAMES {
        assert!(phases.get(name).is_some_and(|ms| ms > 0.0), "{name} missing: {phases:?}\n{}", run.context());
    }
    let at = |name: &str| phases.get(name).unwrap_or_default();
    assert!(
        at("ready_ms") <= at("first_output_ms")
            && at("ready_ms") <= at("userspace_ms")
            && at("userspace_ms") <= at("workload_ms")
            && at("workload_ms") <= at("exit_ms"),
        "phases out of order: {phases:?}\n{}",
        run.context()
    );
}

/// Exited with status 0, by its own power-off or exit.
fn assert_exited_cleanly(record: &Record, run: &SvmHost) {
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "\n{}", run.context());
    assert_eq!(record.exit_code, Some(0), "\n{}", run.context());
}

/// The console has `line` as a line of its own (the guest printing it, not the kernel's banner).
fn assert_console_line(record: &Record, line: &str, run: &SvmHost) {
    assert!(
        record.console.lines().any(|l| l.trim_end_matches('\r') == line),
        "the console lacks the line {line:?}: {:?}\n{}",
        record.console,
        run.context()
    );
}

/// No kvm_pvm parameters, no kvm_pvm note: the VMM saw an SVM host.
fn assert_no_pvm_notes(record: &Record, run: &SvmHost) {
    let pvm: Vec<&String> = record
        .notes
        .iter()
        .filter(|n| n.starts_with(PVM_COMPAT_NOTE_PREFIX) || n.contains(PVM_EMULATED_NOTE))
        .collect();
    assert!(pvm.is_empty(), "kvm_pvm notes on an SVM host: {pvm:?}\n{}", run.context());
}

/// One `uname` launch of a Linux guest, as JSON: `run -b BACKEND --guest linux --kernel KERNEL
/// --workload uname -n 1 --json --timeout 180`, then `extra`.
fn linux_uname_run<'a>(backend: &'a str, kernel: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "-b", backend, "--guest", "linux", "--kernel", kernel, "--workload", "uname"];
    args.extend(["-n", "1", "--json", "--timeout", "180"]);
    args.extend_from_slice(extra);
    args
}

/// boxbench's VMM booting Debian's unmodified cloud bzImage with the busybox initramfs to `uname`.
fn own_vmm_boots_the_cloud_kernel(vcpus: &str) {
    require!(l1_available());
    let release = debian_cloud_release();
    let run = svm_host(GUEST_RUN_TIMEOUT_S, &[], &linux_uname_run("microvm", "debian-cloud", &["--vcpus", vcpus]));
    run.assert_success();
    let json = run.json();
    assert_eq!(json["host"]["kvm"], serde_json::to_value(KvmFlavour::Svm).unwrap(), "\n{}", run.context());
    let record = run.record();
    assert_eq!(record.backend, "microvm");
    assert_exited_cleanly(&record, &run);
    assert_console_line(&record, &release, &run);
    assert_console_line(&record, "BOXBENCH_READY", &run);
    assert_every_phase(&record, &run);
    assert_no_pvm_notes(&record, &run);
}

#[test]
fn doctor_inside_sees_svm_cgroup_v2_and_an_emulated_cpu() {
    require!(l1_available());
    let run = svm_host(PLAIN_RUN_TIMEOUT_S, &[], &["doctor", "--json"]);
    run.assert_success();
    let json = run.json();
    let host = &json["host"];
    assert_eq!(host["kvm"], serde_json::to_value(KvmFlavour::Svm).unwrap(), "\n{}", run.context());
    assert_eq!(host["cgroup_mode"], serde_json::to_value(CgroupMode::Unified).unwrap(), "\n{}", run.context());
    assert_eq!(host["cpu_emulated"], true, "\n{}", run.context());
    assert_eq!(json["cgroup"]["Ok"]["memory_version"], "v2", "\n{}", run.context());
    assert_eq!(json["cgroup"]["Ok"]["memory_root"], "/sys/fs/cgroup", "\n{}", run.context());
    assert_eq!(json["linux_guests"], "boot under KVM in every VMM", "\n{}", run.context());
    // The L1 carries the built images and the peers the other tests use.
    assert_eq!(json["images_built"], true, "\n{}", run.context());
    assert_eq!(json["debian_cloud_kernel"], debian_cloud_release().as_str(), "\n{}", run.context());
    assert_eq!(json["microvm_kernel"], microvm_release().as_str(), "\n{}", run.context());
    let peers = json["peers"].as_array().unwrap_or_else(|| panic!("no peers\n{}", run.context()));
    for name in ["crun", "runc", "qemu-microvm"] {
        let usable = peers.iter().any(|p| p["name"] == name && p["usable"] == true);
        let installed_here = match name {
            "qemu-microvm" => true,
            tool => boxbench_peers::tool::find_on_path(tool).is_some(),
        };
        assert!(!installed_here || usable, "{name} is not usable inside the L1\n{}", run.context());
    }
}

#[test]
fn own_vmm_boots_the_unmodified_cloud_kernel_with_1_vcpu() {
    own_vmm_boots_the_cloud_kernel("1");
}

#[test]
fn own_vmm_boots_the_unmodified_cloud_kernel_with_2_vcpus() {
    own_vmm_boots_the_cloud_kernel("2");
}

#[test]
fn own_vmm_leaves_nothing_behind_after_cloud_kernel_guests() {
    require!(l1_available());
    let run = svm_host(
        GUEST_RUN_TIMEOUT_S,
        &[],
        &[
            "soak",
            "-b",
            "microvm",
            "--guest",
            "linux",
            "--kernel",
            "debian-cloud",
            "--workload",
            "uname",
            "--count",
            "2",
            "--timeout",
            "180",
            "--json",
        ],
    );
    run.assert_success();
    let report = run.json();
    assert_eq!(report["launches"], 2, "\n{}", run.context());
    assert_eq!(report["succeeded"], 2, "\n{}", run.context());
    assert_eq!(report["failures"], serde_json::json!({}), "\n{}", run.context());
    let leftovers = &report["leftovers"];
    for list in ["processes", "mounts", "cgroups", "netns_names", "netns_inodes", "temp_dirs"] {
        assert_eq!(leftovers[list], serde_json::json!([]), "{list} left in the L1\n{}", run.context());
    }
    assert_eq!(leftovers["fds"], 0, "file descriptors left in the L1\n{}", run.context());
}

/// Short-lived VMs one after another: each first VM created and last destroyed would make the L1's
/// kernel live-patch its scheduler, which under multi-threaded TCG stopped the L1 as a whole within
/// the first few dozen launches (see the keeper VM in the svmhost crate's `init::command_script`).
#[test]
fn the_l1_keeps_running_through_150_short_lived_vms_in_a_row() {
    require!(l1_available());
    let count = 150;
    let run = svm_host(
        GUEST_RUN_TIMEOUT_S,
        &[],
        &["soak", "-b", "microvm", "--guest", "boxbench", "--count", &count.to_string(), "--json"],
    );
    run.assert_success();
    let report = run.json();
    assert_eq!(report["launches"], count, "\n{}", run.context());
    assert_eq!(report["succeeded"], count, "\n{}", run.context());
    assert_eq!(report["leftovers"]["processes"], serde_json::json!([]), "\n{}", run.context());
}

#[test]
fn own_vmm_boots_the_microvm_kernel_without_kvm_pvm_parameters() {
    require!(l1_available());
    let run = svm_host(GUEST_RUN_TIMEOUT_S, &[], &linux_uname_run("microvm", "microvm", &[]));
    run.assert_success();
    let record = run.record();
    assert_exited_cleanly(&record, &run);
    assert_console_line(&record, &microvm_release(), &run);
    assert_every_phase(&record, &run);
    assert_no_pvm_notes(&record, &run);
}

/// The disk the virtio-blk tests give the guest: 256 KiB, its first 64 KiB (what the `disk`
/// workload reads) bytes of a fixed sequence, the rest zeros.
fn disk_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut content: Vec<u8> = (0..64u32 << 10).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    content.resize(256 << 10, 0);
    let path = dir.join("disk.img");
    fs::write(&path, &content).unwrap();
    (path, content)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `disk` workload on the micro-VM kernel in boxbench's VMM, with `disk.img` carried into the L1
/// (`svm-host --file`), `extra` appended to `run`; returns the run, its record, and the disk as it
/// came back.
fn disk_workload_run(extra: &[&str]) -> (SvmHost, Record, Vec<u8>, Vec<u8>) {
    let scratch = tempfile::tempdir().unwrap();
    let (disk, before) = disk_image(scratch.path());
    let disk_arg = disk.display().to_string();
    let mut inner = vec!["run", "-b", "microvm", "--guest", "linux", "--kernel", "microvm", "--workload", "disk"];
    inner.extend(["--disk", "disk.img", "-n", "1", "--json", "--timeout", "180"]);
    inner.extend(extra);
    let run = svm_host(GUEST_RUN_TIMEOUT_S, &["--file", &disk_arg], &inner);
    run.assert_success();
    let record = run.record();
    let after = fs::read(run.out.join("disk.img"))
        .unwrap_or_else(|e| panic!("the disk did not come back: {e}\n{}", run.context()));
    (run, record, before, after)
}

#[test]
fn own_vmm_gives_a_linux_guest_a_virtio_blk_disk_it_reads_and_writes() {
    require!(l1_available());
    let (run, record, before, after) = disk_workload_run(&[]);
    assert_exited_cleanly(&record, &run);
    assert_every_phase(&record, &run);
    // The guest read what the host wrote, past its page cache.
    assert_console_line(&record, &format!("BOXBENCH_DISK_READ={}", sha256_hex(&before[..64 << 10])), &run);
    assert_console_line(&record, "BOXBENCH_DISK_WRITE=ok", &run);
    // What the guest wrote and flushed is in the file: the pattern at 64 KiB, nothing else changed.
    let pattern: Vec<u8> = b"boxbench-disk\n".iter().copied().cycle().take(64 << 10).collect();
    assert_eq!(after.len(), before.len(), "the disk changed size\n{}", run.context());
    assert!(after[64 << 10..128 << 10] == pattern[..], "the guest's write is not in the file\n{}", run.context());
    assert!(after[..64 << 10] == before[..64 << 10] && after[128 << 10..] == before[128 << 10..]);
}

#[test]
fn own_vmm_gives_a_linux_guest_a_read_only_disk_whose_writes_fail() {
    require!(l1_available());
    let (run, record, before, after) = disk_workload_run(&["--disk-read-only"]);
    assert_exited_cleanly(&record, &run);
    assert_console_line(&record, &format!("BOXBENCH_DISK_READ={}", sha256_hex(&before[..64 << 10])), &run);
    assert_console_line(&record, "BOXBENCH_DISK_WRITE=refused", &run);
    assert!(after == before, "a read-only disk changed\n{}", run.context());
}

#[test]
fn qemu_boots_the_unmodified_cloud_kernel_under_kvm() {
    require!(l1_available());
    let run = svm_host(GUEST_RUN_TIMEOUT_S, &[], &linux_uname_run("qemu-microvm", "debian-cloud", &["--accel", "kvm"]));
    run.assert_success();
    let record = run.record();
    assert_exited_cleanly(&record, &run);
    assert_console_line(&record, &debian_cloud_release(), &run);
    assert!(
        record.notes.iter().any(|n| n.starts_with("QEMU KVM on ") && n.contains("SVM")),
        "QEMU did not run under KVM on SVM: {:?}\n{}",
        record.notes,
        run.context()
    );
    assert!(!record.notes.iter().any(|n| n.contains("TCG")), "QEMU fell back to TCG: {:?}", record.notes);
    // QEMU's own set-up is not observable from outside; the marker and the exit are.
    for phase in ["first_output_ms", "workload_ms", "exit_ms"] {
        assert!(record.phases.get(phase).is_some(), "{phase} missing: {:?}\n{}", record.phases, run.context());
    }
}

#[test]
fn container_over_its_memory_max_is_oom_killed_and_its_peak_read_on_cgroup_v2() {
    require!(l1_available());
    // busybox tail keeps all of a newline-free input: 64 MiB against a 16 MiB memory.max.
    let run = svm_host(
        PLAIN_RUN_TIMEOUT_S,
        &[],
        &["run", "-b", "container", "--memory", "16", "--json", "--", "sh", "-c", "head -c 64m /dev/zero | tail"],
    );
    assert!(!run.status.success(), "an OOM-killed workload's run must exit non-zero\n{}", run.context());
    let record = run.record();
    assert_eq!(record.outcome, Outcome::OutOfMemory, "\n{}", run.context());
    assert_eq!(record.exit_code, None, "\n{}", run.context());
    let peak = record.memory.peak_bytes.unwrap_or_else(|| panic!("no memory.peak_bytes\n{}", run.context()));
    assert!(
        (1 << 20..=(16 << 20) + (1 << 20)).contains(&peak),
        "memory.peak_bytes {peak} is not near the 16 MiB limit\n{}",
        run.context()
    );
    let json = run.json();
    assert_eq!(json["host"]["cgroup_mode"], serde_json::to_value(CgroupMode::Unified).unwrap(), "\n{}", run.context());
}

#[test]
fn container_launches_leave_no_cgroup_on_cgroup_v2() {
    require!(l1_available());
    let run = svm_host(PLAIN_RUN_TIMEOUT_S, &[], &["soak", "-b", "container", "--count", "3", "--json"]);
    run.assert_success();
    let report = run.json();
    assert_eq!(report["succeeded"], 3, "\n{}", run.context());
    let leftovers = &report["leftovers"];
    for list in ["processes", "mounts", "cgroups", "netns_names", "netns_inodes", "temp_dirs"] {
        assert_eq!(leftovers[list], serde_json::json!([]), "{list} left in the L1\n{}", run.context());
    }
    assert_eq!(leftovers["fds"], 0, "file descriptors left in the L1\n{}", run.context());
}

/// An OCI runtime runs the bundle on L1's cgroup v2 with no hybrid-host workaround.
fn oci_runtime_runs_the_bundle(runtime: &str) {
    require!(l1_available());
    require!(
        boxbench_peers::tool::find_on_path(runtime).is_some(),
        "{runtime} is not installed here, so the L1 does not carry it (Debian package {runtime})"
    );
    let run = svm_host(PLAIN_RUN_TIMEOUT_S, &[], &["run", "-b", runtime, "-n", "1", "--json"]);
    let record = run.record();
    assert_exited_cleanly(&record, &run);
    run.assert_success();
    assert_console_line(&record, "BOXBENCH_READY", &run);
    assert!(record.memory.peak_bytes.is_some(), "no memory.peak_bytes\n{}", run.context());
    let workaround: Vec<&String> =
        record.notes.iter().filter(|n| n.contains("hybrid") || n.contains("private mount namespace")).collect();
    assert!(workaround.is_empty(), "the hybrid workaround on a cgroup v2 host: {workaround:?}\n{}", run.context());
}

#[test]
fn crun_runs_the_bundle_without_the_hybrid_workaround() {
    oci_runtime_runs_the_bundle("crun");
}

#[test]
fn runc_runs_the_bundle_without_the_hybrid_workaround() {
    oci_runtime_runs_the_bundle("runc");
}

/// Runs `boxbench svm-host <args>` that must be refused before anything boots.
fn refused(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BOXBENCH).arg("svm-host").args(args).stdin(Stdio::null()).output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_settings_are_one_line_naming_the_setting() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("out");
    let out = out.to_str().unwrap();
    let rows: [(&[&str], &[&str]); 6] = [
        (&["--qemu", "/nonexistent"], &["/nonexistent", "qemu-system-x86"]),
        (&["--cpus", "0"], &["--cpus", "0"]),
        (&["--cpus", "9"], &["--cpus", "9"]),
        (&["--memory", "64"], &["--memory", "64 MiB"]),
        (&["--timeout", "0"], &["--timeout"]),
        (&["--stall-timeout", "10"], &["--stall-timeout", "at least 30 s"]),
    ];
    for (bad, expect) in rows {
        let args = [bad, &["--out", out, "--", "doctor"][..]].concat();
        let (status, stdout, stderr) = refused(&args);
        let what = format!("svm-host {}: status {status}, stdout {stdout:?}, stderr {stderr:?}", args.join(" "));
        assert!(!status.success(), "{what}");
        assert_eq!(stderr.lines().count(), 1, "{what}");
        assert!(stderr.starts_with("boxbench: "), "{what}");
        for word in expect {
            assert!(stderr.contains(word), "{word:?} missing: {what}");
        }
        assert!(stdout.is_empty(), "{what}");
        assert!(!Path::new(out).exists(), "{what}: --out was created");
    }
}

#[test]
fn a_zero_boot_timeout_is_named_as_such() {
    let (status, _, stderr) = refused(&["--boot-timeout", "0", "--", "doctor"]);
    assert!(!status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--boot-timeout"), "the message names another setting: {stderr}");
}

#[test]
fn an_l1_that_misses_its_boot_deadline_is_killed_and_leaves_nothing() {
    require!(l1_available());
    let run = svm_host(PLAIN_RUN_TIMEOUT_S, &["--boot-timeout", "1"], &["doctor"]);
    assert!(!run.status.success(), "\n{}", run.context());
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "one error line expected\n{}", run.context());
    assert!(
        errors[0].starts_with("boxbench: ") && errors[0].contains("did not reach its init within 1 s"),
        "\n{}",
        run.context()
    );
    assert!(run.elapsed < Duration::from_secs(60), "the boot deadline was not kept\n{}", run.context());
    assert!(!run.out.exists(), "--out was created for a run that never ran\n{}", run.context());
}

#[test]
fn an_inner_command_that_fails_gives_its_status_and_its_message() {
    require!(l1_available());
    let run = svm_host(PLAIN_RUN_TIMEOUT_S, &[], &["run", "-b", "container", "--rootfs", "/nonexistent"]);
    assert_eq!(run.status.code(), Some(1), "the inner status passes through\n{}", run.context());
    let inner: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("boxbench: ")).collect();
    assert_eq!(inner.len(), 1, "the inner command's one-line error is shown\n{}", run.context());
    assert!(inner[0].contains("rootfs /nonexistent"), "\n{}", run.context());
    assert!(run.error_lines().is_empty(), "svm-host itself did not fail\n{}", run.context());
    assert!(run.stderr.contains("the command exited with status 1"), "\n{}", run.context());
}

#[test]
fn an_l1_that_stops_as_a_whole_is_found_by_its_silent_heartbeat_and_killed() {
    require!(l1_available());
    let stall = 30;
    let run = svm_host_with(
        PLAIN_RUN_TIMEOUT_S,
        &["--stall-timeout", &stall.to_string()],
        &["run", "-b", "container", "--workload", "idle", "--timeout", "600"],
        L1Fault::FreezeWhenReady,
    );
    assert!(!run.status.success(), "\n{}", run.context());
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "one error line expected\n{}", run.context());
    assert!(
        errors[0].starts_with("boxbench: ")
            && errors[0].contains(&format!("the L1 host stopped: no heartbeat for {stall} s"))
            && errors[0].contains("QEMU killed"),
        "\n{}",
        run.context()
    );
    assert!(
        run.elapsed < Duration::from_secs(PLAIN_RUN_TIMEOUT_S),
        "the stall was found only at the whole-run deadline\n{}",
        run.context()
    );
}

#[test]
fn an_inner_command_past_the_deadline_is_killed_with_its_l1() {
    require!(l1_available());
    let deadline = 40;
    let run = svm_host(deadline, &[], &["run", "-b", "container", "--workload", "idle", "--timeout", "600"]);
    assert!(!run.status.success(), "\n{}", run.context());
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "one error line expected\n{}", run.context());
    assert!(
        errors[0].starts_with("boxbench: ")
            && errors[0].contains(&format!("did not finish within {deadline} s"))
            && errors[0].contains("QEMU killed"),
        "\n{}",
        run.context()
    );
    assert!(
        run.elapsed >= Duration::from_secs(deadline) && run.elapsed < Duration::from_secs(deadline + 30),
        "the deadline was not kept: {:?}\n{}",
        run.elapsed,
        run.context()
    );
}
