//! `boxbench compare`: every series this host can run, in the regimes asked for — interleaved (A B C
//! A B C …, so drift and noise hit all alike) and warm (each backend back to back) — after discarded
//! warm-up launches, with each backend's harness calibration, the `uname` evidence and the image
//! sizes, gathered into the report crate's [`Results`].

use std::collections::BTreeMap;
use std::time::Duration;

use boxbench_core::host::{HostFacts, KvmFlavour};
use boxbench_core::interrupt;
use boxbench_core::measure::{INTERRUPTED, density, launch_once};
use boxbench_core::stats::Summary;
use boxbench_core::{InstanceSpec, Launcher, Record, Workload};
use boxbench_images::ImageBuilder;
use boxbench_peers::CalibrationLauncher;
use boxbench_report::{
    ContainerKind, DensityPoint, DensityResult, HostSection, ImageKind, ImageSize, LoadAverage, Results, RunSettings,
    Series, VmKind,
};

use crate::backends::{self, AccelChoice, BackendChoice, BackendOptions, GuestChoice, KernelChoice};

/// What `compare` runs and how often.
#[derive(Debug, Clone)]
pub struct CompareSettings {
    /// Measured launches per series.
    pub runs: usize,
    /// Launches per series discarded before measuring (caches, page faults of the first run).
    pub warmup: usize,
    /// Launches of the `uname` workload per series (claim 4's evidence).
    pub uname_runs: usize,
    /// Instances of the `idle` workload started at once per series in the density step (0: none).
    pub density: usize,
    /// Measured launches of each Linux series under kvm_pvm's KVM, whose guest kernel code is
    /// emulated (about a minute a launch): 0 leaves them out, with a note saying so. They take one
    /// `uname` launch (when `uname_runs` asks for any), no warm-up and no density step.
    pub pvm_linux_runs: usize,
    /// Whether the full-OS disk is built for this run (its system containers are measured then).
    pub full_os: bool,
    /// Measured launches of the full-OS disk booted in a VM through its firmware (0 leaves them out).
    pub full_os_vm_runs: usize,
    /// Only these backends (all when empty).
    pub only: Vec<BackendChoice>,
    /// Each launch's deadline.
    pub timeout: Duration,
    /// The options every backend is built with (images, dockerd, firecracker binary).
    pub options: BackendOptions,
    /// The command line, recorded in the results.
    pub command_line: Vec<String>,
    /// The name the results give the host (default: its hostname); a fleet run passes the
    /// inventory's name, so the report's columns and its missing hosts use the same names.
    pub label: Option<String>,
    /// Which regimes the `hello` launches are measured in.
    pub regime: Regime,
}

/// How the `hello` launches of the series are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Regime {
    /// One launch of each series in turn (A B A B …): drift and noise hit every backend alike, and
    /// each launch follows other backends' work. The verdicts use it.
    Interleaved,
    /// Each series' launches back to back (A A … B B …), as `boxbench run -n N` does: the backend's
    /// own caches stay warm. The verdicts use it only when it is the one regime measured.
    Warm,
    /// Both: the interleaved rounds first, then each series back to back.
    Both,
}

impl Regime {
    fn interleaved(self) -> bool {
        self != Regime::Warm
    }

    fn warm(self) -> bool {
        self != Regime::Interleaved
    }
}

/// The harness's calibration of one backend ([`CalibrationLauncher`]), launched beside its series.
struct Calibration {
    launcher: CalibrationLauncher,
    spec: InstanceSpec,
    records: Vec<Record>,
}

/// One series to measure: a backend with its guest and accelerator settings.
#[derive(Debug, Clone)]
pub struct SeriesPlan {
    /// The backend.
    pub choice: BackendChoice,
    /// Its options (guest, accelerator).
    pub options: BackendOptions,
    /// What kind of VM it is (`None` for containers).
    pub vm_kind: Option<VmKind>,
    /// What kind of container it is, where not an application container (`None` for VMs too).
    pub container_kind: Option<ContainerKind>,
}

impl SeriesPlan {
    /// A VM restored from a snapshot: it replays the snapshot's `hello` workload, so it runs no other.
    pub fn is_from_snapshot(&self) -> bool {
        self.vm_kind == Some(VmKind::OwnGuestFromSnapshot)
    }

    /// A Linux guest under kvm_pvm's KVM: every guest kernel instruction emulated, about a minute a
    /// launch.
    pub fn is_pvm_emulated(&self) -> bool {
        self.vm_kind == Some(VmKind::LinuxPvmEmulated)
    }

    /// The full-OS disk booted in a VM through its firmware and boot loader: minutes a launch under
    /// TCG, measured only when asked ([`CompareSettings::full_os_vm_runs`]).
    pub fn is_full_os_vm(&self) -> bool {
        matches!(self.vm_kind, Some(VmKind::FullOsTcg | VmKind::FullOsHardware | VmKind::FullOsSvmEmulated))
    }

    /// The series' name in progress lines and errors.
    pub fn label(&self) -> String {
        match self.vm_kind {
            Some(kind) => format!("{} ({})", self.choice.name(), kind.label()),
            None => self.choice.name().to_owned(),
        }
    }

    /// The `boxbench run` command that reproduces one launch of this series.
    pub fn command(&self, workload: &str) -> String {
        let mut cmd = format!("boxbench run --backend {} --workload {workload}", self.choice.name());
        if self.choice.is_vm() {
            let guest = match self.options.guest() {
                GuestChoice::Boxbench => "boxbench",
                GuestChoice::Linux => "linux",
                GuestChoice::FullOs => "full-os",
            };
            cmd.push_str(&format!(" --guest {guest}"));
            if self.options.guest() == GuestChoice::Linux && self.options.kernel == Some(KernelChoice::DebianCloud) {
                cmd.push_str(" --kernel debian-cloud");
            }
            if let Some(dir) = &self.options.restore {
                cmd.push_str(&format!(" --restore {}", dir.display()));
            }
            if matches!(self.choice, BackendChoice::QemuMicrovm | BackendChoice::QemuQ35) {
                let accel = match self.options.accel {
                    AccelChoice::Auto => "auto",
                    AccelChoice::Kvm => "kvm",
                    AccelChoice::Tcg => "tcg",
                };
                cmd.push_str(&format!(" --accel {accel}"));
            }
        }
        cmd
    }
}

/// The series a host runs by default: every container backend, boxbench's VMM and QEMU on boxbench's
/// own guest (the VM floor, under this host's KVM), and Linux guests where they boot usefully — under
/// hardware KVM on VMX/SVM hosts, under QEMU's TCG emulator elsewhere (kvm_pvm emulates guest kernel
/// code far slower than TCG). On kvm_pvm, boxbench's micro-VM kernel under KVM in boxbench's VMM and
/// in QEMU is planned too, as [`VmKind::LinuxPvmEmulated`]: `compare` measures it only when asked
/// ([`CompareSettings::pvm_linux_runs`]).
pub fn default_plan(kvm: KvmFlavour, cpu_emulated: bool, base: &BackendOptions) -> Vec<SeriesPlan> {
    let with = |guest: GuestChoice, accel: AccelChoice| BackendOptions { guest: Some(guest), accel, ..base.clone() };
    let mut plan: Vec<SeriesPlan> = [
        BackendChoice::Container,
        BackendChoice::Crun,
        BackendChoice::Runc,
        BackendChoice::Youki,
        BackendChoice::Runsc,
        BackendChoice::Podman,
        BackendChoice::Docker,
    ]
    .into_iter()
    .map(|choice| SeriesPlan { choice, options: base.clone(), vm_kind: None, container_kind: None })
    .collect();
    if kvm != KvmFlavour::Absent {
        plan.push(SeriesPlan {
            choice: BackendChoice::Microvm,
            options: with(GuestChoice::Boxbench, AccelChoice::Kvm),
            vm_kind: Some(VmKind::OwnGuestFloor),
            container_kind: None,
        });
        // The same VM restored from a snapshot taken at its marker (`compare` takes it first).
        plan.push(SeriesPlan {
            choice: BackendChoice::Microvm,
            options: with(GuestChoice::Boxbench, AccelChoice::Kvm),
            vm_kind: Some(VmKind::OwnGuestFromSnapshot),
            container_kind: None,
        });
        // The same minimal guest in the other VMMs compares the monitors themselves; Firecracker is
        // measured where its binary is given or on PATH, and the report notes it skipped otherwise.
        for choice in [BackendChoice::QemuMicrovm, BackendChoice::Firecracker] {
            plan.push(SeriesPlan {
                choice,
                options: with(GuestChoice::Boxbench, AccelChoice::Kvm),
                vm_kind: Some(VmKind::OwnGuestOtherVmm),
                container_kind: None,
            });
        }
    }
    let (linux_accel, linux_kind) = if kvm.is_hardware() {
        (AccelChoice::Kvm, if cpu_emulated { VmKind::LinuxSvmEmulated } else { VmKind::LinuxHardware })
    } else {
        (AccelChoice::Tcg, VmKind::LinuxTcg)
    };
    // The full-OS disk, booted as a system container on the host and as a VM through its firmware.
    for choice in [BackendChoice::Nspawn, BackendChoice::Lxc] {
        plan.push(SeriesPlan {
            choice,
            options: base.clone(),
            vm_kind: None,
            container_kind: Some(ContainerKind::System),
        });
    }
    let full_os_kind = match (kvm.is_hardware(), cpu_emulated) {
        (true, false) => VmKind::FullOsHardware,
        (true, true) => VmKind::FullOsSvmEmulated,
        (false, _) => VmKind::FullOsTcg,
    };
    plan.push(SeriesPlan {
        choice: BackendChoice::QemuQ35,
        options: with(GuestChoice::FullOs, linux_accel),
        vm_kind: Some(full_os_kind),
        container_kind: None,
    });
    let mut linux_vms = vec![BackendChoice::QemuMicrovm, BackendChoice::QemuQ35];
    if kvm.is_hardware() {
        linux_vms.insert(0, BackendChoice::Microvm);
        linux_vms.push(BackendChoice::Firecracker);
    }
    for choice in linux_vms {
        plan.push(SeriesPlan {
            choice,
            options: with(GuestChoice::Linux, linux_accel),
            vm_kind: Some(linux_kind),
            container_kind: None,
        });
    }
    if kvm == KvmFlavour::Pvm {
        for choice in [BackendChoice::Microvm, BackendChoice::QemuMicrovm] {
            plan.push(SeriesPlan {
                choice,
                options: with(GuestChoice::Linux, AccelChoice::Kvm),
                vm_kind: Some(VmKind::LinuxPvmEmulated),
                container_kind: None,
            });
        }
    }
    plan
}

/// A series ready to run: its launcher and the specs of its workloads.
struct Ready {
    plan: SeriesPlan,
    launcher: Box<dyn Launcher>,
    hello: InstanceSpec,
    uname: InstanceSpec,
    idle: InstanceSpec,
    hello_records: Vec<Record>,
    warm_records: Vec<Record>,
    uname_records: Vec<Record>,
}

impl Ready {
    /// The `hello` launches of this series: (warm-up, measured). It takes part in the first
    /// `warm-up + measured` rounds.
    fn hello_launches(&self, settings: &CompareSettings) -> (usize, usize) {
        if self.plan.is_pvm_emulated() {
            (0, settings.pvm_linux_runs)
        } else if self.plan.is_full_os_vm() {
            (0, settings.full_os_vm_runs)
        } else {
            (settings.warmup, settings.runs)
        }
    }

    /// How many `uname` launches this series makes.
    fn uname_runs(&self, settings: &CompareSettings) -> usize {
        if self.plan.is_from_snapshot() {
            return 0;
        }
        if self.plan.is_pvm_emulated() || self.plan.is_full_os_vm() {
            settings.uname_runs.min(1)
        } else {
            settings.uname_runs
        }
    }
}

/// Receives `compare`'s progress: the CLI draws a bar, tests ignore it.
pub trait CompareProgress {
    /// A series was set aside before measuring, and why.
    fn skipped(&self, series: &str, why: &str);
    /// The number of launches the run will make.
    fn planned(&self, launches: usize);
    /// One launch finished.
    fn launched(&self, series: &str, record: &Record);
}

/// Runs the comparison and returns its results (not yet written anywhere).
pub fn compare(settings: &CompareSettings, progress: &dyn CompareProgress) -> Results {
    let load_before = LoadAverage::now();
    let facts = HostFacts::detect();
    let mut notes = Vec::new();
    let plan: Vec<SeriesPlan> = default_plan(facts.kvm, facts.cpu_emulated, &settings.options)
        .into_iter()
        .filter(|p| settings.only.is_empty() || settings.only.contains(&p.choice))
        .collect();

    // The snapshot the "VM from snapshot" series starts from, taken now and removed at the end.
    let snapshot_dir = plan.iter().any(SeriesPlan::is_from_snapshot).then(|| take_snapshot(settings));
    let mut ready = Vec::new();
    for mut series in plan {
        if series.is_from_snapshot() {
            match &snapshot_dir {
                Some(Ok(dir)) => series.options.restore = Some(dir.path().join("snapshot")),
                Some(Err(why)) => {
                    progress.skipped(&series.label(), why);
                    notes.push(format!("{} not measured: {why}", series.label()));
                    continue;
                }
                None => {}
            }
        }
        let full_os = series.is_full_os_vm() || series.container_kind.is_some();
        if full_os && !settings.full_os {
            notes.push(format!("{} not measured: it boots the full-OS disk, not built in this run", series.label()));
            continue;
        }
        if series.is_full_os_vm() && settings.full_os_vm_runs == 0 {
            notes.push(format!(
                "{} not measured: a firmware boot of the full-OS disk takes minutes under TCG here \
                 (`boxbench compare --full-os-vm-runs N` measures it; `{} --timeout 600` runs one)",
                series.label(),
                series.command("hello")
            ));
            continue;
        }
        if series.is_pvm_emulated() && settings.pvm_linux_runs == 0 {
            notes.push(format!(
                "{} not measured: guest kernel code is emulated, about a minute a launch here \
                 (`boxbench compare --pvm-linux-runs N` measures it; `{} --timeout 300` runs one)",
                series.label(),
                series.command("hello")
            ));
            continue;
        }
        match prepare(&series, settings) {
            Ok(r) => ready.push(r),
            Err(why) => {
                progress.skipped(&series.label(), &why);
                notes.push(format!("{} not measured: {why}", series.label()));
            }
        }
    }

    let mut calibrations = calibrations(&ready, settings, &mut notes);
    let hello_total = |r: &Ready| {
        let (warmup, measured) = r.hello_launches(settings);
        warmup + measured
    };
    let calibration_total = settings.warmup + settings.runs;
    let rounds = ready.iter().map(hello_total).max().unwrap_or(0);
    let regimes = usize::from(settings.regime.interleaved()) + usize::from(settings.regime.warm());
    let launches: usize = ready.iter().map(|r| regimes * hello_total(r) + r.uname_runs(settings)).sum::<usize>()
        + calibrations.len() * calibration_total;
    // Claim 7 splits a docker run where docker itself runs here.
    let docker_ready = ready.iter().any(|r| r.plan.choice == BackendChoice::Docker);
    let split_launches =
        if docker_ready { crate::docker_split::LAUNCHES_PER_ROUND * (settings.warmup + settings.runs) } else { 0 };
    progress.planned(launches + density_launches(&ready, settings.density) + split_launches);
    if settings.regime.interleaved() {
        for round in 0..rounds {
            for series in &mut ready {
                // A series with fewer launches (kvm_pvm Linux) takes part in the first rounds.
                let (warmup, measured) = series.hello_launches(settings);
                if round >= warmup + measured {
                    continue;
                }
                if let Some(record) = launch(series, &series.hello, progress) {
                    if round >= warmup {
                        series.hello_records.push(record);
                    }
                }
            }
            // Each backend's calibration takes its turn in the same rounds.
            for calibration in &mut calibrations {
                if round < calibration_total {
                    calibrate(calibration, round >= settings.warmup, progress);
                }
            }
        }
    }
    if settings.regime.warm() {
        for series in &mut ready {
            let (warmup, measured) = series.hello_launches(settings);
            for run in 0..warmup + measured {
                if let Some(record) = launch(series, &series.hello, progress) {
                    if run >= warmup {
                        series.warm_records.push(record);
                    }
                }
            }
        }
        if !settings.regime.interleaved() {
            for calibration in &mut calibrations {
                for run in 0..calibration_total {
                    calibrate(calibration, run >= settings.warmup, progress);
                }
            }
        }
    }
    for round in 0..settings.uname_runs {
        for series in &mut ready {
            if round >= series.uname_runs(settings) {
                continue;
            }
            if let Some(record) = launch(series, &series.uname, progress) {
                series.uname_records.push(record);
            }
        }
    }

    let density_results: Vec<DensityResult> = if settings.density == 0 {
        Vec::new()
    } else {
        ready
            .iter()
            .filter(|series| !series.plan.is_pvm_emulated() && !series.plan.is_from_snapshot())
            .filter_map(|series| density_step(series, settings.density, progress))
            .collect()
    };

    // The label names the machine; the facts' own line (kernel, CPUs, KVM, cgroups) follows it.
    let label = settings.label.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
    });
    let host = HostSection::capture(label, facts, load_before);
    let run_settings = RunSettings {
        command_line: settings.command_line.clone(),
        runs_per_series: settings.runs,
        warmup_runs: settings.warmup,
        interleaved: settings.regime.interleaved(),
        density_instances: (settings.density > 0).then_some(settings.density),
        extra: BTreeMap::from([
            ("timeout_s".to_owned(), settings.timeout.as_secs_f64().to_string()),
            // Every VMM boots with these unless a series' settings say otherwise (kvm_pvm's Linux guest).
            ("vm_defaults".to_owned(), boxbench_core::spec::VM_DEFAULTS.describe()),
        ]),
    };
    let mut results = Results::new(timestamp(), host, run_settings);
    for series in ready {
        let Ready { plan, hello_records, warm_records, uname_records, .. } = series;
        if plan.choice.is_application_kernel() {
            results.application_kernels.push(plan.choice.name().to_owned());
        }
        // The verdicts' series are the interleaved ones when measured; the warm ones go beside them.
        let (hello_records, warm_records) =
            if settings.regime.interleaved() { (hello_records, warm_records) } else { (warm_records, Vec::new()) };
        if !warm_records.is_empty() {
            results.warm.push(
                Series::new(plan.choice.name().to_owned(), "hello".to_owned(), plan.vm_kind, warm_records)
                    .with_container_kind(plan.container_kind)
                    .with_command(plan.command("hello")),
            );
        }
        for (workload, records) in [("hello", hello_records), ("uname", uname_records)] {
            if records.is_empty() {
                continue;
            }
            results.series.push(
                Series::new(plan.choice.name().to_owned(), workload.to_owned(), plan.vm_kind, records)
                    .with_container_kind(plan.container_kind)
                    .with_command(plan.command(workload)),
            );
        }
    }
    for calibration in calibrations {
        if !calibration.records.is_empty() {
            let name = calibration.launcher.name().to_owned();
            results.calibration.push(Series::new(name, "hello".to_owned(), None, calibration.records));
        }
    }
    drop(snapshot_dir);
    // After the series' launchers (and a private dockerd of theirs) are gone.
    if docker_ready {
        results.docker_split = docker_split(settings, progress, &results, &mut notes);
    }
    results.density = density_results;
    results.images = image_sizes(&mut notes);
    results.notes = notes;
    results
}

/// Claim 7's split of a docker run, with the docker harness's calibration of this run beside it; a
/// split that cannot be measured is a note.
fn docker_split(
    settings: &CompareSettings,
    progress: &dyn CompareProgress,
    results: &Results,
    notes: &mut Vec<String>,
) -> Option<boxbench_report::docker_split::DockerSplit> {
    let images = match backends::image_paths(BackendChoice::Docker, &settings.options) {
        Ok(images) => images,
        Err(e) => {
            notes.push(format!("claim 7 (docker run split) not measured: {e}"));
            return None;
        }
    };
    let split_settings = crate::docker_split::SplitSettings {
        runs: settings.runs,
        warmup: settings.warmup,
        timeout: settings.timeout,
        start_dockerd: settings.options.start_dockerd,
        docker_host: settings.options.docker_host.clone(),
        images,
    };
    match crate::docker_split::measure(&split_settings, progress) {
        Ok(mut split) => {
            let calibration = format!("{}docker", boxbench_core::boundary::CALIBRATION_PREFIX);
            split.calibration = results.calibration.iter().find(|s| s.backend == calibration).cloned();
            Some(split)
        }
        Err(why) => {
            progress.skipped("docker run split (claim 7)", &why);
            notes.push(format!("claim 7 (docker run split) not measured: {why}"));
            None
        }
    }
}

/// One launch of boxbench's VMM on its own guest with `--snapshot-at-marker`, into a new temporary
/// directory (removed when dropped): the snapshot the "VM from snapshot" series restores.
fn take_snapshot(settings: &CompareSettings) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("boxbench-snapshot-")
        .tempdir()
        .map_err(|e| format!("snapshot directory: {e}"))?;
    let options = BackendOptions {
        guest: Some(GuestChoice::Boxbench),
        snapshot_at_marker: Some(dir.path().join("snapshot")),
        ..settings.options.clone()
    };
    let launcher = backends::launcher(BackendChoice::Microvm, &options).map_err(|e| e.to_string())?;
    let images = backends::image_paths(BackendChoice::Microvm, &options).map_err(|e| e.to_string())?;
    let mut spec = InstanceSpec::new(Workload::Hello, images);
    spec.timeout = settings.timeout;
    let record = launch_once(launcher.as_ref(), &spec).map_err(|e| e.to_string())?;
    if !record.outcome.is_success() || !record.notes.iter().any(|n| n.starts_with("snapshot written")) {
        return Err(format!("taking its snapshot: {}", record.outcome));
    }
    Ok(dir)
}

fn prepare(series: &SeriesPlan, settings: &CompareSettings) -> Result<Ready, String> {
    if interrupt::requested() {
        return Err(INTERRUPTED.to_owned());
    }
    let launcher = backends::launcher(series.choice, &series.options).map_err(|e| e.to_string())?;
    let images = backends::image_paths(series.choice, &series.options).map_err(|e| e.to_string())?;
    // A kvm_pvm Linux boot takes about a minute, more on a loaded host: its deadline only bounds a hang.
    let timeout = if series.is_pvm_emulated() || series.is_full_os_vm() {
        settings.timeout.max(PVM_LINUX_TIMEOUT)
    } else {
        settings.timeout
    };
    let spec = |workload: Workload| {
        let mut spec = InstanceSpec::new(workload, images.clone());
        spec.timeout = timeout;
        spec
    };
    // One probe launch proves the series runs here before it takes a slot in every round.
    let hello = spec(Workload::Hello);
    let probe = launch_once(launcher.as_ref(), &hello).map_err(|e| e.to_string())?;
    if !probe.outcome.is_success() {
        return Err(format!("its probe launch {}: {}", probe.outcome, probe.console_tail(3).replace('\n', " | ")));
    }
    Ok(Ready {
        plan: series.clone(),
        launcher,
        hello,
        uname: spec(Workload::Uname),
        idle: spec(Workload::Idle),
        hello_records: Vec::new(),
        warm_records: Vec::new(),
        uname_records: Vec::new(),
    })
}

/// One launch of a series; a launch that cannot even start is reported and counted as absent.
fn launch(series: &Ready, spec: &InstanceSpec, progress: &dyn CompareProgress) -> Option<Record> {
    // Ctrl-C: launch_once killed the instance in flight; the remaining launches are skipped.
    if interrupt::requested() {
        return None;
    }
    match launch_once(series.launcher.as_ref(), spec) {
        Ok(record) => {
            progress.launched(&series.plan.label(), &record);
            Some(record)
        }
        Err(e) => {
            progress.skipped(&series.plan.label(), &format!("a launch failed: {e}"));
            None
        }
    }
}

/// One calibration per backend of the `ready` series ([`backends::calibration`]). A backend whose
/// calibration cannot be set up is measured without it, with a note saying why.
fn calibrations(ready: &[Ready], settings: &CompareSettings, notes: &mut Vec<String>) -> Vec<Calibration> {
    let mut calibrations: Vec<Calibration> = Vec::new();
    let mut seen = Vec::new();
    for series in ready {
        let choice = series.plan.choice;
        if seen.contains(&choice) {
            continue;
        }
        seen.push(choice);
        match backends::calibration(choice, &settings.options) {
            Ok(launcher) => {
                let mut spec = InstanceSpec::new(Workload::Hello, Default::default());
                spec.timeout = settings.timeout;
                calibrations.push(Calibration { launcher, spec, records: Vec::new() });
            }
            Err(e) => notes.push(format!("harness not calibrated: {e}")),
        }
    }
    calibrations
}

/// One calibration launch, kept when `measured` (not a warm-up) and successful.
fn calibrate(calibration: &mut Calibration, measured: bool, progress: &dyn CompareProgress) {
    if interrupt::requested() {
        return;
    }
    match launch_once(&calibration.launcher, &calibration.spec) {
        Ok(record) => {
            progress.launched(calibration.launcher.name(), &record);
            if measured {
                calibration.records.push(record);
            }
        }
        Err(e) => progress.skipped(calibration.launcher.name(), &format!("a calibration launch failed: {e}")),
    }
}

/// The least deadline of a launch of a kvm_pvm Linux series.
const PVM_LINUX_TIMEOUT: Duration = Duration::from_secs(300);

/// A series whose launches take seconds (a Linux guest under emulation) gets few density instances:
/// each is a whole emulated machine.
const SLOW_SERIES_MS: f64 = 1000.0;
const SLOW_SERIES_DENSITY: usize = 3;

fn density_count(series: &Ready, wanted: usize) -> usize {
    let median = Summary::of(&series.hello_records.iter().filter_map(|r| r.phases.workload_ms).collect::<Vec<_>>());
    if median.is_some_and(|m| m.median > SLOW_SERIES_MS) { wanted.min(SLOW_SERIES_DENSITY) } else { wanted }
}

fn density_launches(ready: &[Ready], wanted: usize) -> usize {
    if wanted == 0 {
        return 0;
    }
    ready.iter().filter(|s| !s.plan.is_pvm_emulated()).map(|s| density_count(s, wanted).max(SLOW_SERIES_DENSITY)).sum()
}

/// K `idle` instances of one series running at once: the host memory each costs and the launch rate.
fn density_step(series: &Ready, wanted: usize, progress: &dyn CompareProgress) -> Option<DensityResult> {
    if interrupt::requested() {
        return None;
    }
    let count = density_count(series, wanted);
    let label = series.plan.label();
    let run = match density(series.launcher.as_ref(), &series.idle, count) {
        Ok(run) => run,
        Err(e) => {
            progress.skipped(&format!("{label} density"), &e.to_string());
            return None;
        }
    };
    for record in &run.records {
        progress.launched(&format!("{label} density"), record);
    }
    let launch_wall_s = run.launch_wall.map(|d| d.as_secs_f64());
    let drop = run.curve.last().map(|&(_, bytes)| bytes);
    let peaks: Vec<f64> = run.records.iter().filter_map(|r| r.memory.peak_bytes).map(|b| b as f64).collect();
    let mut notes = vec![
        "instances started one after another, each waited for until its marker, all kept running; \
         host memory is the drop of MemAvailable since before the first (other activity on the host counts too)"
            .to_owned(),
    ];
    notes.extend(run.stopped_because.iter().map(|why| format!("stopped early: {why}")));
    Some(DensityResult {
        backend: series.plan.choice.name().to_owned(),
        vm_kind: series.plan.vm_kind,
        workload: "idle".to_owned(),
        instances: run.requested,
        launched: run.launched,
        launch_wall_s,
        launch_rate_per_s: launch_wall_s.filter(|s| *s > 0.0).map(|s| run.launched as f64 / s),
        mem_available_drop_bytes: drop,
        mem_available_drop_per_instance_bytes: drop
            .filter(|_| run.launched > 0)
            .map(|b| b as f64 / run.launched as f64),
        cgroup_peak_per_instance: Summary::of(&peaks),
        curve: run
            .curve
            .iter()
            .map(|&(instances, host_memory_used_bytes)| DensityPoint { instances, host_memory_used_bytes })
            .collect(),
        command: Some(format!("{} (density: {count} at once)", series.plan.command("idle"))),
        settings: BTreeMap::from([("instances".to_owned(), count.to_string())]),
        notes,
    })
}

/// Every built artefact's size, classified for claim 3.
fn image_sizes(notes: &mut Vec<String>) -> Vec<ImageSize> {
    let builder = ImageBuilder::default_dirs();
    let sizes = match builder.sizes() {
        Ok(sizes) => sizes,
        Err(e) => {
            notes.push(format!("image sizes not measured: {e}"));
            return Vec::new();
        }
    };
    let mut images: Vec<ImageSize> = sizes
        .into_iter()
        .map(|s| {
            // A sparse raw disk's second figure is the bytes it occupies on the host, not a
            // compressed size: that is the size it is stored at.
            let (bytes, compressed_bytes, description) = if s.name == boxbench_images::artefact::FULL_OS_RAW {
                let description = format!(
                    "the full-OS tree as a raw ext4 disk (mkfs.ext4 -d): bytes allocated on the host, as it \
                     is stored (a sparse file whose apparent length is {} bytes)",
                    s.uncompressed_bytes
                );
                (s.compressed_bytes, None, description)
            } else {
                (s.uncompressed_bytes, Some(s.compressed_bytes), s.method)
            };
            ImageSize {
                kind: image_kind(&s.name),
                bytes,
                compressed_bytes,
                path: Some(s.path),
                description,
                name: s.name,
            }
        })
        .collect();
    for (name, path) in
        [("boxbench-guest.elf", boxbench_guest::elf_path()), ("boxbench-guest.bzImage", boxbench_guest::bzimage_path())]
    {
        if let Ok(meta) = std::fs::metadata(path) {
            images.push(ImageSize {
                name: name.to_owned(),
                kind: ImageKind::MicroVmKernelInitrd,
                bytes: meta.len(),
                compressed_bytes: None,
                path: Some(path.to_owned()),
                description: "boxbench's own minimal guest: the whole VM image, no initramfs".to_owned(),
            });
        }
    }
    // A micro-VM is its kernel plus its initramfs: count them together, as a VMM loads them.
    let initramfs = images.iter().find(|i| i.name == boxbench_images::artefact::INITRAMFS);
    let initramfs_bytes = initramfs.map(|i| i.compressed_bytes.unwrap_or(i.bytes));
    let debian = images.iter().find(|i| i.name == boxbench_images::artefact::DEBIAN_KERNEL).map(|k| k.bytes);
    let microvm_kernel = crate::images::built_microvm_kernel();
    // The micro-VM kernel on its own, beside Debian's cloud kernel: what a distribution kernel weighs
    // against one configured for a micro-VM.
    for (path, what) in microvm_kernel.iter().flat_map(|k| {
        [
            (&k.bz_image, "bzImage: what a VMM loads with the 64-bit boot protocol"),
            (&k.vmlinux, "ELF vmlinux: the PVH entry"),
        ]
    }) {
        if let Ok(meta) = std::fs::metadata(path) {
            let file = path.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
            images.push(ImageSize {
                name: format!("microvm-kernel-{file}"),
                kind: ImageKind::Other,
                bytes: meta.len(),
                compressed_bytes: None,
                path: Some(path.clone()),
                description: format!(
                    "boxbench's micro-VM kernel {}, {what}",
                    microvm_kernel.as_ref().map_or("", |k| k.release.as_str())
                ),
            });
        }
    }
    let microvm = microvm_kernel.as_ref().and_then(|k| std::fs::metadata(&k.bz_image).ok()).map(|m| m.len());
    let kernels = [
        ("debian-cloud-vmlinuz+initramfs", debian, "Debian's cloud bzImage"),
        ("microvm-kernel+initramfs", microvm, "boxbench's micro-VM kernel (bzImage)"),
    ];
    for (name, kernel_bytes, what) in kernels {
        if let (Some(kernel_bytes), Some(initramfs_bytes)) = (kernel_bytes, initramfs_bytes) {
            images.push(ImageSize {
                name: name.to_owned(),
                kind: ImageKind::MicroVmKernelInitrd,
                bytes: kernel_bytes + initramfs_bytes,
                compressed_bytes: None,
                path: None,
                description: format!("{what} plus the gzip busybox initramfs, as a VMM loads them"),
            });
        }
    }
    images
}

fn image_kind(name: &str) -> ImageKind {
    use boxbench_images::artefact;
    match name {
        n if n == artefact::ROOTFS || n == artefact::OCI_IMAGE => ImageKind::ContainerImage,
        n if n == artefact::FULL_OS_RAW || n == artefact::FULL_OS_QCOW2 => ImageKind::FullOsVmDisk,
        _ => ImageKind::Other,
    }
}

/// UTC time now as `YYYY-MM-DDTHH-MM-SSZ`, usable as a directory name.
pub fn timestamp() -> String {
    let t = boxbench_core::clock::UtcTime::now();
    format!("{:04}-{:02}-{:02}T{:02}-{:02}-{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_is_a_date_and_time() {
        let t = timestamp();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20"), "{t}");
        assert!(t.ends_with('Z'));
    }

    #[test]
    fn plan_on_kvm_pvm_boots_linux_only_under_tcg() {
        let plan = default_plan(KvmFlavour::Pvm, false, &BackendOptions::default());
        let linux: Vec<&SeriesPlan> =
            plan.iter().filter(|p| p.options.guest == Some(GuestChoice::Linux) && !p.is_pvm_emulated()).collect();
        assert!(!linux.is_empty());
        assert!(linux.iter().all(|p| p.options.accel == AccelChoice::Tcg && p.vm_kind == Some(VmKind::LinuxTcg)));
        // The micro-VM kernel under kvm_pvm's KVM, in boxbench's VMM and in QEMU: measured on request.
        let emulated: Vec<String> = plan.iter().filter(|p| p.is_pvm_emulated()).map(|p| p.command("hello")).collect();
        assert_eq!(
            emulated,
            [
                "boxbench run --backend microvm --workload hello --guest linux",
                "boxbench run --backend qemu-microvm --workload hello --guest linux --accel kvm"
            ]
        );
        let own_guest_vmms: Vec<BackendChoice> =
            plan.iter().filter(|p| p.options.guest == Some(GuestChoice::Boxbench)).map(|p| p.choice).collect();
        // boxbench's VMM twice: booting the guest, and restoring it from a snapshot taken at its marker.
        assert_eq!(
            own_guest_vmms,
            [BackendChoice::Microvm, BackendChoice::Microvm, BackendChoice::QemuMicrovm, BackendChoice::Firecracker]
        );
        assert!(plan.iter().any(|p| p.vm_kind == Some(VmKind::OwnGuestFloor)));
        assert!(plan.iter().any(|p| p.vm_kind == Some(VmKind::OwnGuestFromSnapshot) && p.is_from_snapshot()));
        let containers: Vec<BackendChoice> =
            plan.iter().filter(|p| p.vm_kind.is_none() && p.container_kind.is_none()).map(|p| p.choice).collect();
        let system: Vec<BackendChoice> =
            plan.iter().filter(|p| p.container_kind == Some(ContainerKind::System)).map(|p| p.choice).collect();
        assert_eq!(system, [BackendChoice::Nspawn, BackendChoice::Lxc]);
        let full_os: Vec<String> = plan.iter().filter(|p| p.is_full_os_vm()).map(|p| p.command("hello")).collect();
        assert_eq!(full_os, ["boxbench run --backend qemu-q35 --workload hello --guest full-os --accel tcg"]);
        assert!(plan.iter().filter(|p| p.is_full_os_vm()).all(|p| p.vm_kind == Some(VmKind::FullOsTcg)));
        assert_eq!(
            containers,
            [
                BackendChoice::Container,
                BackendChoice::Crun,
                BackendChoice::Runc,
                BackendChoice::Youki,
                BackendChoice::Runsc,
                BackendChoice::Podman,
                BackendChoice::Docker
            ]
        );
        let application_kernels: Vec<BackendChoice> =
            containers.into_iter().filter(|c| c.is_application_kernel()).collect();
        assert_eq!(application_kernels, [BackendChoice::Runsc]);
    }

    #[test]
    fn plan_on_hardware_kvm_boots_linux_in_every_vmm() {
        let plan = default_plan(KvmFlavour::Vmx, false, &BackendOptions::default());
        let linux: Vec<BackendChoice> =
            plan.iter().filter(|p| p.vm_kind == Some(VmKind::LinuxHardware)).map(|p| p.choice).collect();
        assert_eq!(
            linux,
            [BackendChoice::Microvm, BackendChoice::QemuMicrovm, BackendChoice::QemuQ35, BackendChoice::Firecracker]
        );
    }

    #[test]
    fn plan_on_an_emulated_svm_host_labels_its_linux_guests_so() {
        let plan = default_plan(KvmFlavour::Svm, true, &BackendOptions::default());
        let linux: Vec<&SeriesPlan> = plan.iter().filter(|p| p.options.guest == Some(GuestChoice::Linux)).collect();
        assert_eq!(linux.len(), 4);
        assert!(
            linux.iter().all(|p| p.vm_kind == Some(VmKind::LinuxSvmEmulated) && p.options.accel == AccelChoice::Kvm)
        );
        let full_os = plan.iter().find(|p| p.is_full_os_vm()).unwrap();
        assert_eq!(full_os.vm_kind, Some(VmKind::FullOsSvmEmulated));
        assert_eq!(full_os.options.accel, AccelChoice::Kvm);
    }

    #[test]
    fn without_kvm_no_vm_series_needs_it() {
        let plan = default_plan(KvmFlavour::Absent, false, &BackendOptions::default());
        assert!(plan.iter().filter(|p| p.choice.is_vm()).all(|p| p.options.accel == AccelChoice::Tcg));
    }

    #[test]
    fn series_command_reproduces_the_launch() {
        let plan = default_plan(KvmFlavour::Pvm, false, &BackendOptions::default());
        let q35 = plan
            .iter()
            .find(|p| p.choice == BackendChoice::QemuQ35 && p.options.guest == Some(GuestChoice::Linux))
            .unwrap();
        assert_eq!(q35.command("hello"), "boxbench run --backend qemu-q35 --workload hello --guest linux --accel tcg");
    }
}
