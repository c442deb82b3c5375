//! End-to-end boots of the guest under QEMU: the ELF through PVH on `-M microvm`, the ELF and the
//! bzImage (its real-mode setup, then the 32-bit entry) on `-M pc` through SeaBIOS, under TCG and,
//! where usable, KVM; the report must match what was handed over, and the failure switches must fail
//! the way they promise. Without qemu-system-x86_64 (or the KVM half without /dev/kvm) a test is a
//! skip through boxbench-testkit, a failure under `BOXBENCH_REQUIRE_ALL=1`.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxbench_core::host::KvmFlavour;
use boxbench_guest::{BootEntry, GuestReport, TEST_FLOOD, TEST_SPIN, TEST_TRIPLE_FAULT, bzimage_path, elf_path};

const QEMU: &str = "qemu-system-x86_64";
const MEMORY_MIB: u64 = 128;
const DEADLINE: Duration = Duration::from_secs(120);
const MARKER: &str = "BOXBENCH_READY";

/// One QEMU at a time: the host has few cores, and "no child left" is checked on this process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug)]
enum Accel {
    Tcg,
    Kvm,
}

#[derive(Clone, Copy, Debug)]
enum Machine {
    /// `-M microvm,acpi=off`: PVH boot of the ELF through qboot; no i8042, no MP table. The
    /// guest's fallback reset write to port 0xcf9 lands on an isa-debug-exit device.
    Microvm,
    /// `-M pc` with SeaBIOS (MP table, i8042); two sockets so that SeaBIOS lists both CPUs in
    /// its MP table (it lists one entry per package).
    Pc,
}

/// QEMU answers here, or why not.
fn qemu_installed() -> Result<(), String> {
    // Under the lock too: its child must not show up in another test's "left behind" check.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    match Command::new(QEMU).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("{QEMU} --version failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("{QEMU}: {e} (Debian package qemu-system-x86)")),
    }
}

/// /dev/kvm can be opened here, or why not.
fn kvm_usable() -> Result<(), String> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map(drop).map_err(|e| format!("/dev/kvm: {e}"))
}

/// A QEMU process, killed and reaped when dropped.
struct Qemu {
    child: Child,
    console: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

struct Boot {
    console: String,
    /// QEMU ended on its own (guest reset or shutdown with -no-reboot), before the deadline.
    exited: bool,
    elapsed: Duration,
}

fn spawn(accel: Accel, machine: Machine, kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Qemu {
    let mut qemu = Command::new(QEMU);
    match machine {
        Machine::Microvm => {
            qemu.args(["-M", "microvm,acpi=off", "-smp", "2"]);
            qemu.args(["-device", "isa-debug-exit,iobase=0xcf9,iosize=1"]);
        }
        Machine::Pc => {
            qemu.args(["-M", "pc", "-smp", "2,sockets=2"]);
        }
    }
    match accel {
        Accel::Tcg => qemu.args(["-accel", "tcg"]),
        // kvm_pvm refuses QEMU's IA32_ARCH_CAPABILITIES write; other hosts do not need it either.
        Accel::Kvm => qemu.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
    };
    qemu.args(["-m", &MEMORY_MIB.to_string(), "-no-reboot", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-kernel"])
        .arg(kernel)
        .args(["-append", cmdline]);
    if let Some(initrd) = initrd {
        qemu.arg("-initrd").arg(initrd);
    }
    let mut child = qemu.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let console = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&console);
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    Qemu { child, console, reader: Some(reader) }
}

/// The children of this test process (all its threads); empty once every QEMU is reaped.
fn children() -> Vec<String> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        children.extend(listed.split_whitespace().map(str::to_owned));
    }
    children
}

/// Runs QEMU until it exits, `stop(console)` holds, or the deadline passes; then kills it and
/// checks that no process is left behind.
fn run_qemu(
    accel: Accel,
    machine: Machine,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    stop: impl Fn(&str) -> bool,
) -> Boot {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut qemu = spawn(accel, machine, kernel, initrd, cmdline);
    let mut exited = false;
    while started.elapsed() < DEADLINE {
        if qemu.child.try_wait().unwrap().is_some() {
            exited = true;
            break;
        }
        if stop(&qemu.console.lock().unwrap()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let _ = qemu.child.kill();
    let _ = qemu.child.wait();
    if let Some(reader) = qemu.reader.take() {
        reader.join().unwrap();
    }
    let console = qemu.console.lock().unwrap().clone();
    drop(qemu);
    assert_eq!(children(), Vec::<String>::new(), "QEMU left behind");
    Boot { console, exited, elapsed }
}

/// Deterministic, incompressible-looking initrd bytes.
fn initrd_bytes(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// TCG, and KVM where usable; without KVM the calling test skips its KVM half (through
/// boxbench-testkit: a failure under BOXBENCH_REQUIRE_ALL=1) and runs the TCG one.
fn accels() -> Vec<Accel> {
    match kvm_usable() {
        Ok(()) => vec![Accel::Tcg, Accel::Kvm],
        Err(why) => {
            boxbench_testkit::skip(format_args!("the KVM boots: {why}"));
            vec![Accel::Tcg]
        }
    }
}

fn check_report(boot: &Boot, entry: BootEntry, cmdline: &str, initrd: &[u8]) -> GuestReport {
    let report = GuestReport::parse(&boot.console).unwrap_or_else(|e| panic!("{e}; console:\n{}", boot.console));
    assert!(boot.console.contains(MARKER), "no marker; console:\n{}", boot.console);
    assert!(boot.exited, "QEMU did not end after the guest's reboot");
    assert_eq!(report.entry, Some(entry));
    assert_eq!(report.cmdline, cmdline);
    assert_eq!(report.initrd_bytes, initrd.len() as u64);
    assert_eq!(report.initrd_crc32, crc32fast::hash(initrd));
    assert_eq!(report.mem_mib, MEMORY_MIB);
    assert!(report.errors.is_empty(), "guest errors: {:?}", report.errors);
    report
}

#[test]
fn elf_boots_through_pvh_on_microvm() {
    boxbench_testkit::require!(qemu_installed());
    let dir = tempfile::tempdir().unwrap();
    // The guest checksums it in user mode: fast even where guest kernel code is emulated (kvm_pvm).
    let initrd = initrd_bytes(1 << 20);
    let initrd_path = dir.path().join("initrd");
    std::fs::write(&initrd_path, &initrd).unwrap();
    let cmdline = "console=ttyS0 boxbench a=\"b c\"";
    for accel in accels() {
        let boot = run_qemu(accel, Machine::Microvm, elf_path(), Some(&initrd_path), cmdline, |_| false);
        let report = check_report(&boot, BootEntry::Pvh, cmdline, &initrd);
        // QEMU's microvm machine has no MP table: the guest starts no AP and says so.
        assert_eq!((report.cpus, report.mp_cpus), (1, Some(0)));
        eprintln!("{accel:?} microvm ELF/PVH: {:?} to exit", boot.elapsed);
    }
}

#[test]
fn elf_and_bzimage_boot_through_seabios_on_pc() {
    boxbench_testkit::require!(qemu_installed());
    let dir = tempfile::tempdir().unwrap();
    let initrd = initrd_bytes(4 << 10);
    let initrd_path = dir.path().join("initrd");
    std::fs::write(&initrd_path, &initrd).unwrap();
    let cmdline = "boxbench.pc=1";
    let mut accels = accels();
    if KvmFlavour::detect() == KvmFlavour::Pvm {
        // Not a skip: on kvm_pvm this test is TCG's alone by design. SeaBIOS's kernel-mode code is
        // emulated instruction by instruction there (~15 s per boot), and the KVM path through
        // SeaBIOS is what hardware-virtualisation hosts check.
        accels.retain(|accel| matches!(accel, Accel::Tcg));
    }
    for accel in accels {
        for (kernel, entry) in [(elf_path(), BootEntry::Pvh), (bzimage_path(), BootEntry::Linux32)] {
            let boot = run_qemu(accel, Machine::Pc, kernel, Some(&initrd_path), cmdline, |_| false);
            let report = check_report(&boot, entry, cmdline, &initrd);
            assert_eq!((report.cpus, report.mp_cpus), (2, None), "both CPUs of the MP table answer");
            eprintln!("{accel:?} pc {entry:?}: {:?} to exit", boot.elapsed);
        }
    }
}

#[test]
fn failure_switches_fail_as_promised() {
    boxbench_testkit::require!(qemu_installed());
    let report_printed = |console: &str| console.contains("cmdline=\"");
    for accel in accels() {
        let boot = run_qemu(accel, Machine::Microvm, elf_path(), None, TEST_TRIPLE_FAULT, |_| false);
        assert!(boot.exited, "a triple fault ends QEMU under -no-reboot; console:\n{}", boot.console);
        assert_eq!(GuestReport::parse(&boot.console).unwrap().cmdline, TEST_TRIPLE_FAULT);
        assert!(!boot.console.contains(MARKER));

        // Stop one second after the report appeared: the guest must still be running then.
        let report_seen = std::cell::Cell::new(None::<Instant>);
        let boot = run_qemu(accel, Machine::Microvm, elf_path(), None, TEST_SPIN, |console| {
            if report_seen.get().is_none() && report_printed(console) {
                report_seen.set(Some(Instant::now()));
            }
            report_seen.get().is_some_and(|seen| seen.elapsed() > Duration::from_secs(1))
        });
        assert!(!boot.exited, "the spinning guest kept running until killed; console:\n{}", boot.console);
        assert_eq!(GuestReport::parse(&boot.console).unwrap().cmdline, TEST_SPIN);
        assert!(!boot.console.contains(MARKER));

        let boot = run_qemu(accel, Machine::Microvm, elf_path(), None, TEST_FLOOD, |console| {
            console.contains("boxbench-guest flood 100\n")
        });
        assert!(!boot.exited, "the flooding guest kept running until killed");
        let flood_lines = (0..=100).all(|n| boot.console.contains(&format!("boxbench-guest flood {n}\n")));
        assert!(flood_lines, "flood lines 0 to 100; console:\n{}", boot.console);
        assert!(!boot.console.contains(MARKER));
    }
}
