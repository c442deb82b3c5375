//! QEMU as a VM backend: the `microvm` machine (no firmware, no PCI; the closest QEMU comes to a
//! micro-VM monitor) and `q35` (a full PC with SeaBIOS), booting the same kernel, initramfs, memory
//! and vCPUs as boxbench's own micro-VM.
//!
//! The serial port is QEMU's stdout, captured with its stderr as the console; `-no-reboot` turns the
//! guest's reset (Linux `reboot=t` after the workload, boxbench's own guest through the i8042
//! controller) into QEMU's exit. A Linux guest's `/init` prints `BOXBENCH_EXIT_STATUS=N`, which is
//! the instance's exit status; boxbench's own guest has no workload, and its clean reset after the
//! marker is an exit with status 0.
//!
//! Acceleration: KVM where it runs the guest, else TCG. On a kvm_pvm host (software nested KVM) a
//! stock Linux guest does not boot in useful time, so `Accel::Auto` picks TCG for Linux guests
//! there (the record says the guest's code was emulated) and KVM for boxbench's own guest, which
//! runs fine on it.
//!
//! On kvm_pvm, `Accel::Kvm` with [`PvmCompat`] boots boxbench's micro-VM kernel under KVM the way
//! boxbench's own VMM does: the kernel's opt-in compatibility parameters, a CPU model without the
//! architectural-capabilities MSR, and `reboot=p` writing the PC reset-control port 0xCF9, where an
//! `isa-debug-exit` device ends QEMU (with an odd status, `(value << 1) | 1`, which is the guest's
//! reset here, not an error).
//!
//! Phases: QEMU shows no "VMM ready" or "guest userspace" event on its command line interface, so
//! `ready_ms` and `userspace_ms` stay `None`; `first_output_ms` is the first serial byte,
//! `workload_ms` the marker.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Instant;

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::host::KvmFlavour;
use boxbench_core::spec::VM_DEFAULTS;
use boxbench_core::{Instance, InstanceSpec, LaunchError, Launcher, Outcome, Phases, READY_MARKER, Record, Workload};

use crate::full_os_boot::{BootTimestamps, VM_STAMPS};
use crate::process::{ChildSetup, Streams};
use crate::run::{ToolRun, record};
use crate::tool::{Tool, ToolError};

/// A QEMU backend that cannot be used as asked.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// qemu-system-x86_64 is missing or unusable.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// KVM was asked for but the host has no usable /dev/kvm.
    #[error("QemuOptions::accel is Kvm but /dev/kvm is not usable on this host")]
    NoKvm,
}

/// Which QEMU machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// `-M microvm,acpi=off`: no firmware, no PCI, the kernel loaded directly (PVH ELF or bzImage).
    #[default]
    Microvm,
    /// `-M q35`: a full PC with SeaBIOS firmware.
    Q35,
}

impl Machine {
    /// The backend name (`qemu-microvm`, `qemu-q35`).
    pub fn backend_name(self) -> &'static str {
        match self {
            Machine::Microvm => "qemu-microvm",
            Machine::Q35 => "qemu-q35",
        }
    }

    fn argument(self) -> &'static str {
        match self {
            // A Linux guest without an RTC probes its legacy ports for seconds (`rtc_cmos`).
            Machine::Microvm => "microvm,acpi=off,rtc=on",
            Machine::Q35 => "q35",
        }
    }
}

/// How QEMU runs guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// KVM where it runs the guest (hardware KVM; kvm_pvm for boxbench's own guest), else TCG.
    #[default]
    Auto,
    /// Always KVM (`-accel kvm`).
    Kvm,
    /// Always TCG (`-accel tcg`): guest code emulated.
    Tcg,
}

/// What the kernel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestKind {
    /// A Linux kernel with boxbench's initramfs: the workload is named on the command line.
    #[default]
    Linux,
    /// boxbench's own minimal guest (crate boxbench-guest): prints a report and the marker, then
    /// resets through the i8042 controller.
    Boxbench,
    /// boxbench's full-OS disk (`images.disk`), booted to systemd and its workload service through
    /// SeaBIOS and SYSLINUX, on q35 only ([`crate::qemu_full_os`] says why not microvm).
    FullOs,
}

/// How to run QEMU.
#[derive(Debug, Clone, Default)]
pub struct QemuOptions {
    /// The machine type.
    pub machine: Machine,
    /// The accelerator.
    pub accel: Accel,
    /// The kind of guest the spec's kernel is.
    pub guest: GuestKind,
    /// The QEMU binary (default: `qemu-system-x86_64` on PATH).
    pub binary: Option<PathBuf>,
    /// Arguments appended to the kernel command line (after boxbench's own, so they win).
    pub extra_kernel_args: Vec<String>,
    /// The guest is boxbench's micro-VM kernel with its kvm_pvm compatibility patch: used when a Linux
    /// guest runs under KVM on a kvm_pvm host.
    pub pvm_compat: Option<PvmCompat>,
}

/// How boxbench's micro-VM kernel boots under kvm_pvm (the parameters live with the kernel recipe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvmCompat {
    /// Kernel command-line parameters of the patch, with the `clearcpuid=`/`noxsave`/`rodata=off`
    /// set and `reboot=p`.
    pub cmdline: String,
    /// Guest memory when the spec sets none (memmap init costs emulated time per MiB).
    pub memory_bytes: u64,
}

/// QEMU as a boxbench backend.
#[derive(Debug)]
pub struct QemuLauncher {
    options: QemuOptions,
    tool: Tool,
    cgroups: CgroupHost,
    use_kvm: bool,
    kvm: KvmFlavour,
}

impl QemuLauncher {
    /// Finds QEMU and decides the accelerator.
    pub fn new(options: QemuOptions) -> Result<Self, LaunchError> {
        let unsupported = |e: QemuError| LaunchError::Unsupported(e.to_string());
        let tool = match &options.binary {
            Some(path) => Tool::at("qemu-system-x86_64", path),
            None => Tool::find("qemu-system-x86_64", "qemu-system-x86"),
        }
        .map_err(|e| unsupported(e.into()))?;
        let kvm = KvmFlavour::detect();
        let use_kvm = match options.accel {
            Accel::Tcg => false,
            Accel::Kvm if kvm == KvmFlavour::Absent => return Err(unsupported(QemuError::NoKvm)),
            Accel::Kvm => true,
            Accel::Auto => choose_kvm(kvm, options.guest),
        };
        let cgroups = CgroupHost::detect()?;
        Ok(Self { options, tool, cgroups, use_kvm, kvm })
    }

    /// The QEMU binary and version in use.
    pub fn tool(&self) -> &Tool {
        &self.tool
    }

    /// True if guests run under KVM, false under TCG.
    pub fn uses_kvm(&self) -> bool {
        self.use_kvm
    }

    /// The kvm_pvm compatibility in force: a Linux guest under KVM on a kvm_pvm host, when asked for.
    fn pvm_compat(&self) -> Option<&PvmCompat> {
        let applies = self.use_kvm && self.kvm == KvmFlavour::Pvm && self.options.guest == GuestKind::Linux;
        self.options.pvm_compat.as_ref().filter(|_| applies)
    }

    /// Guest memory in bytes: the spec's, else the kvm_pvm compatibility's, else boxbench's default.
    fn memory_bytes(&self, spec: &InstanceSpec) -> u64 {
        spec.memory_limit_bytes
            .or_else(|| self.pvm_compat().map(|c| c.memory_bytes))
            .unwrap_or(VM_DEFAULTS.memory_bytes)
    }

    /// The command line that boots `spec` (without the binary).
    fn arguments(&self, spec: &InstanceSpec, kernel: &Path) -> Vec<String> {
        let mut args = self.machine_arguments(spec);
        args.extend(["-kernel".to_owned(), kernel.display().to_string()]);
        if let Some(initrd) = &spec.images.initrd {
            args.extend(["-initrd".to_owned(), initrd.display().to_string()]);
        }
        args.extend(["-append".to_owned(), self.kernel_command_line(spec)]);
        args
    }

    /// The machine, accelerator, memory, vCPUs and devices, without what the guest boots from.
    fn machine_arguments(&self, spec: &InstanceSpec) -> Vec<String> {
        let memory_mib = self.memory_bytes(spec).div_ceil(1 << 20);
        let mut args: Vec<String> = [
            "-M",
            self.options.machine.argument(),
            "-accel",
            if self.use_kvm { "kvm" } else { "tcg" },
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(["-m".to_owned(), format!("{memory_mib}M"), "-smp".to_owned(), spec.vcpus.max(1).to_string()]);
        if self.options.guest == GuestKind::Boxbench && self.options.machine == Machine::Microvm {
            // microvm has no i8042, through which boxbench's guest resets.
            args.extend(["-device".to_owned(), "i8042".to_owned()]);
        }
        if self.pvm_compat().is_some() {
            // kvm_pvm does not virtualise IA32_ARCH_CAPABILITIES; `reboot=p` writes port 0xCF9,
            // which this device turns into QEMU's exit (microvm has no reset-control register).
            args.extend(
                ["-cpu", "host,-arch-capabilities", "-device", "isa-debug-exit,iobase=0xcf9,iosize=1"]
                    .map(str::to_owned),
            );
        }
        args
    }

    fn kernel_command_line(&self, spec: &InstanceSpec) -> String {
        let mut words = vec![VM_DEFAULTS.base_cmdline.to_owned(), "reboot=t".to_owned()];
        // Both guests read their workload here: Linux's /init runs it, boxbench's own guest stays up
        // after its marker for `idle`.
        words.push(format!("boxbench.workload={}", spec.workload.name()));
        if let Some(compat) = self.pvm_compat() {
            words.extend(compat.cmdline.split_whitespace().map(str::to_owned));
        }
        words.extend(self.options.extra_kernel_args.iter().cloned());
        words.join(" ")
    }

    fn notes(&self, spec: &InstanceSpec) -> Vec<String> {
        let mut notes = vec![format!(
            "{} -M {} with {} MiB and {} vCPU; ready_ms and userspace_ms are not observable from outside QEMU",
            self.tool.label(),
            self.options.machine.argument(),
            self.memory_bytes(spec).div_ceil(1 << 20),
            spec.vcpus.max(1)
        )];
        if self.use_kvm {
            notes.push(format!("QEMU KVM on {}", self.kvm.label()));
            if let Some(compat) = self.pvm_compat() {
                notes.push(format!(
                    "kvm_pvm compatibility of boxbench's micro-VM kernel applied: `{}`, -cpu host,-arch-capabilities, \
                     reset through isa-debug-exit at port 0xcf9",
                    compat.cmdline
                ));
            }
        } else {
            notes.push("QEMU TCG: guest code emulated".to_owned());
            if self.options.accel == Accel::Auto && self.kvm == KvmFlavour::Pvm {
                notes.push("TCG chosen because a stock Linux guest does not boot under this host's kvm_pvm".to_owned());
            }
        }
        if spec.memory_limit_bytes.is_none() && self.pvm_compat().is_none() {
            notes.push(format!("guest memory {} MiB (boxbench's VM default)", VM_DEFAULTS.memory_bytes >> 20));
        }
        notes.push(if self.use_kvm {
            "memory.peak_bytes is QEMU's cgroup (guest pages touched, device state)".to_owned()
        } else {
            "memory.peak_bytes is QEMU's cgroup (guest pages touched, device state, TCG translation cache)".to_owned()
        });
        notes
    }
}

fn choose_kvm(kvm: KvmFlavour, guest: GuestKind) -> bool {
    match (kvm, guest) {
        (KvmFlavour::Absent, _) => false,
        (KvmFlavour::Vmx | KvmFlavour::Svm, _) => true,
        (_, GuestKind::Boxbench) => true,
        (KvmFlavour::Pvm | KvmFlavour::Unknown, GuestKind::Linux | GuestKind::FullOs) => false,
    }
}

impl Launcher for QemuLauncher {
    fn name(&self) -> &str {
        self.options.machine.backend_name()
    }

    fn prepare(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let name = self.name();
        if self.options.guest == GuestKind::FullOs {
            return self.prepare_full_os(spec);
        }
        let kernel = spec.images.kernel.as_ref().ok_or_else(|| {
            LaunchError::InvalidSpec(format!("{name} needs images.kernel (a bzImage or PVH vmlinux)"))
        })?;
        if !kernel.is_file() {
            return Err(LaunchError::InvalidSpec(format!("{}: kernel not found", kernel.display())));
        }
        if let Some(initrd) = spec.images.initrd.as_ref().filter(|p| !p.is_file()) {
            return Err(LaunchError::InvalidSpec(format!("{}: initrd not found", initrd.display())));
        }
        if self.options.guest == GuestKind::Linux {
            if spec.images.initrd.is_none() {
                return Err(LaunchError::InvalidSpec(format!(
                    "{name} needs images.initrd (boxbench's initramfs) for a Linux guest"
                )));
            }
            if let Workload::Command(_) = spec.workload {
                return Err(LaunchError::InvalidSpec(format!(
                    "{name} runs named workloads only (the guest's /init runs /boxbench/workloads/NAME)"
                )));
            }
        }
        let run = ToolRun::new(name, &self.cgroups)?;
        Ok(Box::new(QemuInstance {
            backend: self.options.machine.backend_name(),
            binary: self.tool.path.clone(),
            args: self.arguments(spec, kernel),
            guest: self.options.guest,
            reset_through_debug_exit: self.pvm_compat().is_some(),
            guest_bytes: self.memory_bytes(spec).div_ceil(1 << 20) << 20,
            run,
            notes: self.notes(spec),
            overlay: None,
        }))
    }
}

impl QemuLauncher {
    /// An instance booting the full-OS disk `images.disk` through its boot loader, on a qcow2 overlay
    /// of its own.
    fn prepare_full_os(&self, spec: &InstanceSpec) -> Result<Box<dyn Instance>, LaunchError> {
        let name = self.name();
        if self.options.machine != Machine::Q35 {
            return Err(LaunchError::Unsupported(format!(
                "{name} does not boot the full-OS disk (its Debian kernel needs ACPI to find a virtio-mmio root \
                 disk, and hangs calibrating its TSC on QEMU's microvm with ACPI); qemu-q35 boots it"
            )));
        }
        let disk = spec.images.disk.as_ref().ok_or_else(|| {
            LaunchError::InvalidSpec(format!("{name} needs images.disk (the full-OS disk) for a full-OS guest"))
        })?;
        crate::qemu_full_os::check_disk(disk)?;
        if let Workload::Command(_) = spec.workload {
            return Err(LaunchError::InvalidSpec(format!(
                "{name} runs named workloads only (the disk's workload service runs /boxbench/workloads/NAME)"
            )));
        }
        let overlay = tempfile::Builder::new()
            .prefix("boxbench-full-os-")
            .tempdir()
            .map_err(|e| LaunchError::Unsupported(format!("temporary directory for {name}: {e}")))?;
        let overlay_file = overlay.path().join("overlay.qcow2");
        let qemu_img = self.tool.path.with_file_name("qemu-img");
        let qemu_img = if qemu_img.is_file() { qemu_img } else { PathBuf::from("qemu-img") };
        crate::qemu_full_os::create_overlay(&qemu_img, disk, &overlay_file)?;
        let mut args = self.machine_arguments(spec);
        args.extend(crate::qemu_full_os::arguments(spec, &overlay_file));
        let mut run = ToolRun::new(name, &self.cgroups)?;
        run.stamp_console(VM_STAMPS);
        let mut notes = self.notes(spec);
        notes.push(format!(
            "full-OS VM: SeaBIOS, SYSLINUX, the disk's kernel and initramfs, systemd, on a qcow2 overlay of {}",
            disk.display()
        ));
        notes.push(
            "details: loader_ms (SYSLINUX banner) and kernel_ms (the kernel's first line) as they reached the              console; initrd_ms, init_ms, multi_user_ms: systemd's guest-clock timestamps placed after kernel_ms"
                .to_owned(),
        );
        Ok(Box::new(QemuInstance {
            backend: self.options.machine.backend_name(),
            binary: self.tool.path.clone(),
            args,
            guest: GuestKind::FullOs,
            reset_through_debug_exit: false,
            guest_bytes: self.memory_bytes(spec).div_ceil(1 << 20) << 20,
            run,
            notes,
            overlay: Some(overlay),
        }))
    }
}

/// One VM run by QEMU.
struct QemuInstance {
    backend: &'static str,
    binary: PathBuf,
    args: Vec<String>,
    guest: GuestKind,
    /// The guest resets through `isa-debug-exit`, so an odd status of 3 or more is its reset.
    reset_through_debug_exit: bool,
    /// Guest RAM as QEMU maps it (`-m` in whole MiB).
    guest_bytes: u64,
    run: ToolRun,
    notes: Vec<String>,
    /// The launch's own copy-on-write overlay of the full-OS disk, removed with the instance.
    overlay: Option<tempfile::TempDir>,
}

impl fmt::Debug for QemuInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QemuInstance").field("backend", &self.backend).field("args", &self.args).finish()
    }
}

/// QEMU's exit status as the guest's reset when it resets through `isa-debug-exit`: that device
/// exits with `(value << 1) | 1`, and the kernel's reset writes a value with bit 1 set, so its
/// statuses are odd and at least 3 (QEMU's own errors exit 1).
fn vm_status(status: ExitStatus, reset_through_debug_exit: bool) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(code) if reset_through_debug_exit && code >= 3 && code % 2 == 1 => ExitStatus::from_raw(0),
        _ => status,
    }
}

/// How a VM run ended, from the VMM's exit status, what the guest printed on its console and what
/// the VMM itself printed (its stderr or log).
pub(crate) fn guest_outcome(status: ExitStatus, console: &str, vmm_messages: &str, guest: GuestKind) -> Outcome {
    if !status.success() {
        let reason = vmm_messages
            .lines()
            .chain(console.lines())
            .find(|l| l.starts_with("qemu-system") || l.contains("Error"))
            .map_or_else(|| format!("the VMM exited with {status}"), |l| l.trim().to_owned());
        return Outcome::Failed { reason };
    }
    if let Some(code) = VM_DEFAULTS.exit_status(console) {
        return Outcome::Exited { code };
    }
    if let Some(panic) = console.lines().find(|l| l.contains("Kernel panic")) {
        return Outcome::Failed { reason: panic.trim().to_owned() };
    }
    match guest {
        GuestKind::Boxbench if console.contains(READY_MARKER) => Outcome::Exited { code: 0 },
        GuestKind::Boxbench => Outcome::Failed { reason: "guest reset before printing its marker".to_owned() },
        GuestKind::Linux | GuestKind::FullOs => {
            Outcome::Failed { reason: format!("guest reset without printing {}N", VM_DEFAULTS.exit_status_prefix) }
        }
    }
}

impl Instance for QemuInstance {
    fn launch(&mut self) -> Result<(), LaunchError> {
        let mut command = Command::new(&self.binary);
        command.args(&self.args);
        let hook = self.run.measure_vmm_overhead(self.guest_bytes);
        self.run.start(command, ChildSetup::Plain, Streams::StderrApart, hook)
    }

    fn wait(&mut self, deadline: Instant) -> Result<Option<Outcome>, LaunchError> {
        // The outcome depends on the console, which is complete only in `finish`; a provisional
        // status-based one is returned here and refined there.
        Ok(self
            .run
            .wait(deadline)?
            .map(|status| guest_outcome(vm_status(status, self.reset_through_debug_exit), "", "", self.guest)))
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
        let stderr = stopped.stderr.clone().unwrap_or_default();
        let outcome = match (&outcome, stopped.status) {
            (Outcome::DeadlineExceeded { .. }, _) | (_, None) => outcome,
            (_, Some(status)) => guest_outcome(
                vm_status(status, self.reset_through_debug_exit),
                &stopped.console.text,
                &stderr,
                self.guest,
            ),
        };
        self.run.remove_cgroup()?;
        let mut notes = std::mem::take(&mut self.notes);
        if let Some(messages) = vmm_messages_note("QEMU", &stderr) {
            notes.push(messages);
        }
        let details = (self.guest == GuestKind::FullOs).then(|| full_os_details(&stopped));
        drop(self.overlay.take());
        let mut record = record(self.backend, stopped, outcome, Phases::default(), None, notes);
        if let Some(details) = details {
            record.phases.userspace_ms = details.get("initrd_ms").or(details.get("init_ms")).copied();
            record.details_ms = details;
        }
        Ok(record)
    }
}

/// The phases of a full-OS boot: the boot loader's banner and the kernel's first line as they reached
/// the console, and systemd's timestamps placed after the kernel line.
fn full_os_details(stopped: &crate::run::Stopped) -> std::collections::BTreeMap<String, f64> {
    let stamp = |i: usize| stopped.timeline.ms(stopped.console.stamps.get(i).copied().flatten());
    let (loader_ms, kernel_ms, initramfs_ms) = (stamp(0), stamp(1), stamp(2));
    let mut details = BootTimestamps::parse(&stopped.console.text).map(|t| t.vm_details(kernel_ms)).unwrap_or_default();
    for (name, value) in [("loader_ms", loader_ms), ("kernel_ms", kernel_ms)] {
        if let Some(value) = value {
            details.insert(name.to_owned(), value);
        }
    }
    // Debian's initramfs runs no systemd, which therefore has no initrd timestamp: its first line is it.
    if let Some(initramfs_ms) = initramfs_ms {
        details.entry("initrd_ms".to_owned()).or_insert(initramfs_ms);
    }
    details
}

/// A note quoting what the VMM printed on its stderr (first lines), if anything.
pub(crate) fn vmm_messages_note(vmm: &str, stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let shown: Vec<&str> = lines.iter().take(3).copied().collect();
    let more =
        if lines.len() > shown.len() { format!(" (+{} more lines)", lines.len() - shown.len()) } else { String::new() };
    Some(format!("{vmm} stderr: {}{more}", shown.join(" | ")))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;
    use boxbench_core::ImagePaths;

    fn launcher(options: QemuOptions, use_kvm: bool) -> QemuLauncher {
        QemuLauncher {
            options,
            tool: Tool {
                name: "qemu-system-x86_64".into(),
                path: "/usr/bin/qemu-system-x86_64".into(),
                version: "7.2.22".into(),
            },
            cgroups: CgroupHost {
                mode: boxbench_core::cgroup::CgroupMode::Unified,
                memory_version: boxbench_core::cgroup::MemoryVersion::V2,
                memory_root: "/sys/fs/cgroup".into(),
            },
            use_kvm,
            kvm: KvmFlavour::Pvm,
        }
    }

    #[test]
    fn microvm_linux_command_line() {
        let mut spec = InstanceSpec::new(Workload::Uname, ImagePaths::default());
        spec.images.initrd = Some("/img/initramfs.cpio.gz".into());
        spec.memory_limit_bytes = Some(128 << 20);
        spec.vcpus = 2;
        let args = launcher(QemuOptions::default(), false).arguments(&spec, Path::new("/img/vmlinuz"));
        let line = args.join(" ");
        assert!(line.starts_with("-M microvm,acpi=off,rtc=on -accel tcg -nodefaults"), "{line}");
        assert!(line.contains("-serial stdio -monitor none -no-reboot -m 128M -smp 2"), "{line}");
        assert!(line.contains("-kernel /img/vmlinuz -initrd /img/initramfs.cpio.gz"), "{line}");
        assert_eq!(args.last().unwrap(), "console=ttyS0 panic=-1 quiet reboot=t boxbench.workload=uname");
        assert!(!line.contains("i8042"));
    }

    #[test]
    fn own_guest_on_microvm_gets_an_i8042_and_its_workload() {
        let options =
            QemuOptions { guest: GuestKind::Boxbench, extra_kernel_args: vec!["x=1".into()], ..Default::default() };
        let spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
        let args = launcher(options, true).arguments(&spec, Path::new("/g.elf"));
        let line = args.join(" ");
        assert!(line.contains("-accel kvm") && line.contains("-device i8042") && line.contains("-m 256M"), "{line}");
        assert_eq!(args.last().unwrap(), "console=ttyS0 panic=-1 quiet reboot=t boxbench.workload=hello x=1");
    }

    #[test]
    fn micro_vm_kernel_under_kvm_pvm_gets_its_compatibility() {
        let compat = PvmCompat { cmdline: "pvm_compat.syscall_via_fault reboot=p".into(), memory_bytes: 64 << 20 };
        let options = QemuOptions { accel: Accel::Kvm, pvm_compat: Some(compat), ..Default::default() };
        let mut spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
        spec.images.initrd = Some("/img/initramfs.cpio".into());
        let args = launcher(options.clone(), true).arguments(&spec, Path::new("/img/vmlinux"));
        let line = args.join(" ");
        assert!(line.contains("-m 64M"), "{line}");
        assert!(line.contains("-cpu host,-arch-capabilities -device isa-debug-exit,iobase=0xcf9,iosize=1"), "{line}");
        assert_eq!(
            args.last().unwrap(),
            "console=ttyS0 panic=-1 quiet reboot=t boxbench.workload=hello pvm_compat.syscall_via_fault reboot=p"
        );
        // Under TCG the guest is not on kvm_pvm: nothing of the compatibility applies.
        let tcg = launcher(options, false).arguments(&spec, Path::new("/img/vmlinux")).join(" ");
        assert!(!tcg.contains("isa-debug-exit") && !tcg.contains("pvm_compat") && tcg.contains("-m 256M"), "{tcg}");
    }

    #[test]
    fn a_debug_exit_reset_is_the_guests_reset_only_when_the_device_is_there() {
        let reset = ExitStatus::from_raw(13 << 8);
        assert!(vm_status(reset, true).success());
        assert!(!vm_status(reset, false).success());
        // QEMU's own errors exit 1: never a reset.
        assert!(!vm_status(ExitStatus::from_raw(1 << 8), true).success());
    }

    #[test]
    fn accelerator_choice_follows_the_host() {
        assert!(!choose_kvm(KvmFlavour::Pvm, GuestKind::Linux));
        assert!(choose_kvm(KvmFlavour::Pvm, GuestKind::Boxbench));
        assert!(choose_kvm(KvmFlavour::Vmx, GuestKind::Linux));
        assert!(!choose_kvm(KvmFlavour::Absent, GuestKind::Boxbench));
    }

    #[test]
    fn outcomes_from_status_and_console() {
        let ok = ExitStatus::from_raw(0);
        let linux = "[ 1.0] Run /init\nBOXBENCH_READY\nBOXBENCH_EXIT_STATUS=3\n[ 1.2] reboot: Restarting system\n";
        assert_eq!(guest_outcome(ok, linux, "", GuestKind::Linux), Outcome::Exited { code: 3 });
        let panic = "[ 0.5] Kernel panic - not syncing: VFS: Unable to mount root fs\n";
        assert!(
            matches!(guest_outcome(ok, panic, "", GuestKind::Linux), Outcome::Failed { reason } if reason.contains("Kernel panic"))
        );
        assert_eq!(
            guest_outcome(ok, "boxbench-guest cpus=1\nBOXBENCH_READY\n", "", GuestKind::Boxbench),
            Outcome::Exited { code: 0 }
        );
        let failed = guest_outcome(
            ExitStatus::from_raw(1 << 8),
            "",
            "qemu-system-x86_64: -accel kvm: no KVM\n",
            GuestKind::Linux,
        );
        assert_eq!(failed, Outcome::Failed { reason: "qemu-system-x86_64: -accel kvm: no KVM".into() });
    }

    #[test]
    fn vmm_warnings_become_one_note() {
        assert_eq!(vmm_messages_note("QEMU", "\n"), None);
        let stderr = "qemu-system-x86_64: warning: a\nb\nc\nd\n";
        assert_eq!(
            vmm_messages_note("QEMU", stderr).unwrap(),
            "QEMU stderr: qemu-system-x86_64: warning: a | b | c (+1 more lines)"
        );
    }
}
