//! boxbench's micro-VM guest kernel: Linux 6.1 from Debian's `linux-source-6.1` package, built
//! from `make tinyconfig` plus the recipe in `guest-images/linux/` (the config fragment
//! [`FRAGMENT_FILE`] and the kvm_pvm compatibility patch [`PATCH_FILE`]).
//!
//! The build unpacks the source into `out/linux-build/`, applies the patch, configures, checks
//! that every option of the fragment survived Kconfig, compiles, and copies the ELF `vmlinux`
//! (PVH entry), the `bzImage` and the `.config` into `out/microvm-kernel/`. It is cached by a hash
//! of the recipe (fragment, patch, source package version, [`KERNEL_FORMAT_VERSION`]): the stamp
//! `out/microvm-kernel/.recipe-hash` is written last, so a half-built kernel is never taken as
//! built. Everything the build tools print goes to `out/linux-build/build.log`; a failing step
//! stops the build with the step's name and the last lines of its output.
//!
//! [`kvm_pvm_cmdline`] is what a VM backend appends to the kernel command line of this kernel
//! when the host's `/dev/kvm` is kvm_pvm.

use std::fmt;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::lock::{DirLock, LockError};
use crate::progress::{Progress, StepState};

/// The Debian package that ships the kernel source.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";

/// The source tarball [`SOURCE_PACKAGE`] installs.
pub const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The config fragment applied on top of `make tinyconfig`, in the recipe directory.
pub const FRAGMENT_FILE: &str = "microvm.config";

/// The kvm_pvm compatibility patch (boot parameters, all off by default), in the recipe directory.
pub const PATCH_FILE: &str = "pvm-compat.patch";

/// The build directory under the output directory (source tree and `build.log`).
pub const BUILD_DIR: &str = "linux-build";

/// The directory under the output directory holding the built kernel.
pub const KERNEL_DIR: &str = "microvm-kernel";

/// The builder's log, in [`BUILD_DIR`].
pub const BUILD_LOG: &str = "build.log";

/// Bumped whenever the builder changes what it makes from the same recipe.
pub const KERNEL_FORMAT_VERSION: u32 = 1;

/// How many lines of a failing step's output its error shows.
const FAILURE_TAIL_LINES: usize = 20;

/// The stamp holding the recipe hash the kernel in [`KERNEL_DIR`] was built from.
const STAMP_FILE: &str = ".recipe-hash";

/// The kernel release file in [`KERNEL_DIR`].
const RELEASE_FILE: &str = "release";

/// The boot parameters of the patch ([`PATCH_FILE`]); each is off unless named.
pub mod pvm_compat {
    /// Skip the alternatives int3 self-test (kvm_pvm does not deliver its int3 trap).
    pub const SKIP_INT3_SELFTEST: &str = "pvm_compat.skip_int3_selftest";
    /// Skip the `fwait` of `fpu__drop()` (kvm_pvm cannot emulate it).
    pub const SKIP_FPU_DROP_FWAIT: &str = "pvm_compat.skip_fpu_drop_fwait";
    /// Run a user `syscall` that faulted at `entry_SYSCALL_64` from the page-fault handler.
    pub const SYSCALL_VIA_FAULT: &str = "pvm_compat.syscall_via_fault";
}

/// The kernel command-line parameters this kernel needs to boot under kvm_pvm, to append after the
/// backend's own (`console=ttyS0 panic=-1 ...`; the backend must not add `reboot=t` as well):
/// the patch's three switches; CPU features kvm_pvm's emulator cannot execute in guest kernel mode
/// cleared (cx16, popcnt, smap, smep, fsgsbase, rdpid, invpcid, pcid, and erms/fsrm so memcpy and
/// memset use `rep movsq`/`stosq`, 8x fewer emulated iterations); no XSAVE (`xrstor`); rodata
/// left writable (making it read-only costs seconds of emulation); and reboot through the PC
/// reset-control port 0xcf9 (a triple fault reaches an `int3` first). The VM also needs the
/// uncompressed initramfs and 64 MiB of memory to boot in about 17 s; those are the backend's.
pub fn kvm_pvm_cmdline() -> &'static str {
    concat!(
        "pvm_compat.skip_int3_selftest pvm_compat.skip_fpu_drop_fwait pvm_compat.syscall_via_fault ",
        "clearcpuid=141,151,308,295,288,534,298,145,297,580 noxsave rodata=off reboot=p"
    )
}

/// The memory a kvm_pvm guest of this kernel is given (memmap init costs emulated time per MiB).
pub const KVM_PVM_MEMORY_BYTES: u64 = 64 << 20;

/// Host programs the build runs, and the Debian package that provides each.
pub const BUILD_TOOLS: &[(&str, &str)] = &[
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("patch", "patch"),
    ("make", "make"),
    ("gcc", "gcc"),
    ("ld", "binutils"),
    ("objcopy", "binutils"),
    ("bison", "bison"),
    ("flex", "flex"),
    ("bc", "bc"),
    ("perl", "perl"),
];

/// Header files the build compiles against (objtool needs libelf), and their Debian packages.
pub const BUILD_HEADERS: &[(&str, &str)] = &[("/usr/include/gelf.h", "libelf-dev")];

/// Text in a failing step's output that means a Debian package is missing, and that package.
const MISSING_PACKAGE_HINTS: &[(&str, &str)] = &[
    ("gelf.h", "libelf-dev"),
    ("libelf", "libelf-dev"),
    ("openssl/", "libssl-dev"),
    ("bison: not found", "bison"),
    ("flex: not found", "flex"),
    ("bc: not found", "bc"),
    ("perl: not found", "perl"),
    ("cpio: not found", "cpio"),
];

/// The steps of a build, as [`Progress`] artefact names.
pub mod step {
    /// Unpacking the source tarball and applying the patch.
    pub const UNPACK: &str = "microvm-kernel: unpack + patch";
    /// `make tinyconfig`, merging the fragment, `make olddefconfig` and the fragment check.
    pub const CONFIGURE: &str = "microvm-kernel: configure";
    /// `make vmlinux bzImage` (about 5 min on 2 cores).
    pub const COMPILE: &str = "microvm-kernel: compile";
    /// The whole kernel: `UpToDate` when the cached one fits the recipe, `Built` at the end.
    pub const KERNEL: &str = "microvm-kernel";
}

/// The micro-VM kernel could not be built or found.
#[derive(Debug, thiserror::Error)]
pub enum MicroVmKernelError {
    /// A host program the build needs is not installed.
    #[error("`{tool}` is needed to build the micro-VM kernel: apt-get install -y {package}")]
    MissingTool { tool: &'static str, package: &'static str },
    /// A header file the build needs is not installed.
    #[error("{header} is needed to build the micro-VM kernel: apt-get install -y {package}")]
    MissingHeader { header: &'static str, package: &'static str },
    /// The kernel source package is not installed.
    #[error("{tarball} is missing: apt-get install -y {package}")]
    NoSource { package: &'static str, tarball: PathBuf },
    /// A recipe or output file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A line of the config fragment is neither `CONFIG_X=value`, `# CONFIG_X is not set` nor a comment.
    #[error("{path}:{line}: not a config option: {text}")]
    BadFragmentLine { path: PathBuf, line: usize, text: String },
    /// Options of the fragment that Kconfig dropped or changed.
    #[error("{path}: the kernel's .config does not have {}", join_dropped(.dropped))]
    FragmentDropped { path: PathBuf, dropped: Vec<DroppedOption> },
    /// A build step's command could not be started.
    #[error("kernel build step `{step}`: cannot run `{command}`: {source}")]
    Spawn { step: &'static str, command: String, source: std::io::Error },
    /// A build step failed; `tail` is the last lines of its output (the whole log is `log`).
    #[error("kernel build step `{step}` failed: `{command}` ({status}){hint}; last lines of {log}:\n{tail}", hint = package_hint(.tail))]
    StepFailed { step: &'static str, command: String, status: std::process::ExitStatus, log: PathBuf, tail: String },
    /// The build finished but a file it should have made is not there.
    #[error("the kernel build made no {0}")]
    MissingOutput(PathBuf),
    /// The build directory's lock failed.
    #[error(transparent)]
    Lock(#[from] LockError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MicroVmKernelError + '_ {
    move |source| MicroVmKernelError::Io { path: path.to_owned(), source }
}

fn join_dropped(dropped: &[DroppedOption]) -> String {
    dropped.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// ", missing Debian package P? (apt-get install -y P)" when the output names a known missing file.
fn package_hint(tail: &str) -> String {
    MISSING_PACKAGE_HINTS
        .iter()
        .find(|(needle, _)| tail.contains(needle))
        .map(|(_, package)| format!(" (is the Debian package {package} missing? apt-get install -y {package})"))
        .unwrap_or_default()
}

/// The built kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MicroVmKernel {
    /// The ELF kernel with the PVH entry note, debug info stripped (`out/microvm-kernel/vmlinux`).
    pub vmlinux: PathBuf,
    /// The bzImage (`out/microvm-kernel/bzImage`).
    pub bz_image: PathBuf,
    /// The kernel's configuration (`out/microvm-kernel/config`).
    pub config: PathBuf,
    /// The kernel release the guest's `uname -r` reports, e.g. `6.1.192-boxbench`.
    pub release: String,
    /// The recipe hash it was built from (hex SHA-256).
    pub config_hash: String,
}

impl MicroVmKernel {
    fn in_dir(dir: &Path, release: String, config_hash: String) -> Self {
        Self {
            vmlinux: dir.join("vmlinux"),
            bz_image: dir.join("bzImage"),
            config: dir.join("config"),
            release,
            config_hash,
        }
    }
}

/// The value a config symbol has in a `.config`, or must have by a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigValue {
    /// `# CONFIG_X is not set`, or absent.
    Unset,
    /// `CONFIG_X=value` (value as written: `y`, `8`, `"-boxbench"`).
    Set(String),
}

impl fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigValue::Unset => f.write_str("unset"),
            ConfigValue::Set(value) => f.write_str(value),
        }
    }
}

/// One option of a config fragment: the symbol (with its `CONFIG_` prefix) and its wanted value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentOption {
    /// The symbol, e.g. `CONFIG_PVH`.
    pub name: String,
    /// The value it must end up with.
    pub wanted: ConfigValue,
}

/// An option of the fragment whose value in the `.config` differs from the fragment's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedOption {
    /// The option as the fragment wants it.
    pub option: FragmentOption,
    /// What the `.config` has.
    pub actual: ConfigValue,
}

impl fmt::Display for DroppedOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.option.name;
        match &self.option.wanted {
            ConfigValue::Set(value) => write!(f, "{name}={value} (it is {})", self.actual),
            ConfigValue::Unset => write!(f, "{name} unset (it is {})", self.actual),
        }
    }
}

/// Parses one `.config`/fragment line: `Some((name, value))` for an option (set or "is not set"),
/// `None` for a blank or comment line, `Err(())` for anything else.
fn parse_config_line(line: &str) -> Result<Option<(&str, ConfigValue)>, ()> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# ") {
        if let Some(name) = rest.strip_suffix(" is not set").filter(|n| is_config_symbol(n)) {
            return Ok(Some((name, ConfigValue::Unset)));
        }
    }
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    match line.split_once('=') {
        Some((name, value)) if is_config_symbol(name) && !value.is_empty() => {
            Ok(Some((name, ConfigValue::Set(value.to_owned()))))
        }
        _ => Err(()),
    }
}

fn is_config_symbol(name: &str) -> bool {
    name.strip_prefix("CONFIG_").is_some_and(|rest| {
        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// The options of a config fragment (`path` names it in errors). Comments and blank lines are
/// skipped; `# CONFIG_X is not set` asks for X to be unset.
pub fn parse_fragment(path: &Path, text: &str) -> Result<Vec<FragmentOption>, MicroVmKernelError> {
    let mut options = Vec::new();
    for (index, line) in text.lines().enumerate() {
        match parse_config_line(line) {
            Ok(Some((name, wanted))) => options.push(FragmentOption { name: name.to_owned(), wanted }),
            Ok(None) => {}
            Err(()) => {
                return Err(MicroVmKernelError::BadFragmentLine {
                    path: path.to_owned(),
                    line: index + 1,
                    text: line.trim().to_owned(),
                });
            }
        }
    }
    Ok(options)
}

/// The options of `fragment` whose value in the `.config` text `dot_config` is not the wanted one
/// (an option absent from the `.config` counts as unset).
pub fn dropped_options(fragment: &[FragmentOption], dot_config: &str) -> Vec<DroppedOption> {
    let mut values = std::collections::HashMap::new();
    for line in dot_config.lines() {
        if let Ok(Some((name, value))) = parse_config_line(line) {
            values.insert(name, value);
        }
    }
    fragment
        .iter()
        .filter_map(|option| {
            let actual = values.get(option.name.as_str()).cloned().unwrap_or(ConfigValue::Unset);
            (actual != option.wanted).then(|| DroppedOption { option: option.clone(), actual })
        })
        .collect()
}

/// The hash of everything the kernel is made from: the builder's format, the source package's
/// version, the fragment and the patch.
pub fn recipe_hash(recipe_dir: &Path, source_version: &str) -> Result<String, MicroVmKernelError> {
    let mut hasher = Sha256::new();
    hasher.update(format!("boxbench micro-VM kernel format {KERNEL_FORMAT_VERSION}\n"));
    hasher.update(format!("{SOURCE_PACKAGE} {source_version}\n"));
    for name in [FRAGMENT_FILE, PATCH_FILE] {
        let path = recipe_dir.join(name);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        hasher.update(format!("{name} {}\n", bytes.len()));
        hasher.update(bytes);
    }
    Ok(crate::hex(&hasher.finalize()))
}

/// The installed version of [`SOURCE_PACKAGE`], checking that its tarball is there.
fn source_version() -> Result<String, MicroVmKernelError> {
    let no_source = || MicroVmKernelError::NoSource { package: SOURCE_PACKAGE, tarball: PathBuf::from(SOURCE_TARBALL) };
    if !Path::new(SOURCE_TARBALL).is_file() {
        return Err(no_source());
    }
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", SOURCE_PACKAGE])
        .env("LC_ALL", "C")
        .stderr(Stdio::null())
        .output()
        .map_err(|_| no_source())?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || version.is_empty() {
        return Err(no_source());
    }
    Ok(version)
}

/// Fails naming the first of [`BUILD_TOOLS`] not found on `PATH` or [`BUILD_HEADERS`] missing.
fn check_build_dependencies() -> Result<(), MicroVmKernelError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for &(tool, package) in BUILD_TOOLS {
        if !dirs.iter().any(|dir| dir.join(tool).is_file()) {
            return Err(MicroVmKernelError::MissingTool { tool, package });
        }
    }
    for &(header, package) in BUILD_HEADERS {
        if !Path::new(header).is_file() {
            return Err(MicroVmKernelError::MissingHeader { header, package });
        }
    }
    Ok(())
}

/// The kernel built into `out_dir` from the current recipe in `recipe_dir`, if it is there (no
/// build, no lock). `Ok(None)` when it was never built or the recipe changed since.
pub fn built_microvm_kernel(out_dir: &Path, recipe_dir: &Path) -> Result<Option<MicroVmKernel>, MicroVmKernelError> {
    let kernel_dir = out_dir.join(KERNEL_DIR);
    match source_version() {
        Ok(version) => Ok(cached(&kernel_dir, &recipe_hash(recipe_dir, &version)?)),
        Err(err) => cached_without_source(&kernel_dir).map(Some).ok_or(err),
    }
}

/// The kernel in `dir`, whatever recipe it was built from, for a host without the source package:
/// one that only runs boxbench (an svm-host L1) cannot rebuild it and takes what was built.
fn cached_without_source(dir: &Path) -> Option<MicroVmKernel> {
    let stamp = fs::read_to_string(dir.join(STAMP_FILE)).ok()?;
    cached(dir, stamp.trim())
}

/// The kernel in `dir` if its stamp holds `hash` and all its files are there.
fn cached(dir: &Path, hash: &str) -> Option<MicroVmKernel> {
    let stamp = fs::read_to_string(dir.join(STAMP_FILE)).ok()?;
    if stamp.trim() != hash {
        return None;
    }
    let release = fs::read_to_string(dir.join(RELEASE_FILE)).ok()?.trim().to_owned();
    let kernel = MicroVmKernel::in_dir(dir, release, hash.to_owned());
    [&kernel.vmlinux, &kernel.bz_image, &kernel.config].iter().all(|p| p.is_file()).then_some(kernel)
}

/// Builds the micro-VM kernel from the recipe in `recipe_dir` (`guest-images/linux`) into
/// `out_dir/microvm-kernel`, unless the kernel there was built from the same recipe. Takes the
/// lock `out_dir/linux-build.lock` (a concurrent build waits, then finds the kernel built).
/// A successful build removes its source tree and keeps `out_dir/linux-build/build.log`.
pub fn build_microvm_kernel(
    out_dir: &Path,
    recipe_dir: &Path,
    progress: &dyn Progress,
) -> Result<MicroVmKernel, MicroVmKernelError> {
    let fragment_path = recipe_dir.join(FRAGMENT_FILE);
    let fragment_text = fs::read_to_string(&fragment_path).map_err(io_err(&fragment_path))?;
    let fragment = parse_fragment(&fragment_path, &fragment_text)?;
    let patch = recipe_dir.join(PATCH_FILE);
    if !patch.is_file() {
        return Err(io_err(&patch)(std::io::ErrorKind::NotFound.into()));
    }
    let kernel_dir = out_dir.join(KERNEL_DIR);
    let hash = match source_version() {
        Ok(version) => recipe_hash(recipe_dir, &version)?,
        Err(err) => {
            let kernel = cached_without_source(&kernel_dir).ok_or(err)?;
            progress.step(step::KERNEL, StepState::UpToDate);
            return Ok(kernel);
        }
    };
    if let Some(kernel) = cached(&kernel_dir, &hash) {
        progress.step(step::KERNEL, StepState::UpToDate);
        return Ok(kernel);
    }
    check_build_dependencies()?;

    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let _lock =
        DirLock::acquire(&out_dir.join("linux-build.lock"), || progress.step(step::KERNEL, StepState::WaitingForLock))?;
    // Another process may have built it while this one waited.
    if let Some(kernel) = cached(&kernel_dir, &hash) {
        progress.step(step::KERNEL, StepState::UpToDate);
        return Ok(kernel);
    }
    progress.step(step::KERNEL, StepState::Building);
    let stamp = kernel_dir.join(STAMP_FILE);
    match fs::remove_file(&stamp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&stamp)(e)),
        _ => {}
    }

    let build_dir = out_dir.join(BUILD_DIR);
    if build_dir.exists() {
        fs::remove_dir_all(&build_dir).map_err(io_err(&build_dir))?;
    }
    fs::create_dir_all(&build_dir).map_err(io_err(&build_dir))?;
    let log = BuildLog::create(build_dir.join(BUILD_LOG))?;
    let source_dir = build_dir.join(SOURCE_PACKAGE);
    let staging = out_dir.join(format!("{KERNEL_DIR}.tmp"));
    let recipe = Recipe { fragment_path: &fragment_path, fragment: &fragment, patch: &patch };
    let built = compile_into(&recipe, &log, &build_dir, &staging, progress);
    // The unpacked tree (over 1 GB) is never kept, built or not; the log is.
    let _ = fs::remove_dir_all(&source_dir);
    let release = match built {
        Ok(release) => release,
        Err(err) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    if kernel_dir.exists() {
        fs::remove_dir_all(&kernel_dir).map_err(io_err(&kernel_dir))?;
    }
    fs::rename(&staging, &kernel_dir).map_err(io_err(&kernel_dir))?;
    // The stamp last: only a complete kernel directory is ever taken as built.
    crate::write_atomically(&stamp, format!("{hash}\n").as_bytes()).map_err(io_err(&stamp))?;
    progress.step(step::KERNEL, StepState::Built);
    Ok(MicroVmKernel::in_dir(&kernel_dir, release, hash))
}

/// The recipe's files, read and checked.
#[derive(Debug)]
struct Recipe<'a> {
    fragment_path: &'a Path,
    fragment: &'a [FragmentOption],
    patch: &'a Path,
}

/// Unpacks, patches, configures and compiles the kernel in `build_dir`, and copies the results
/// into `staging` (`vmlinux` stripped of debug info, `bzImage`, `config`, `release`). Returns the
/// kernel release.
fn compile_into(
    recipe: &Recipe<'_>,
    log: &BuildLog,
    build_dir: &Path,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<String, MicroVmKernelError> {
    let source_dir = build_dir.join(SOURCE_PACKAGE);
    progress.step(step::UNPACK, StepState::Building);
    log.run(step::UNPACK, Command::new("tar").arg("-xf").arg(SOURCE_TARBALL).arg("-C").arg(build_dir))?;
    if !source_dir.join("Makefile").is_file() {
        return Err(MicroVmKernelError::MissingOutput(source_dir.join("Makefile")));
    }
    log.run(
        step::UNPACK,
        Command::new("patch").args(["-p1", "--forward", "--batch", "-i"]).arg(recipe.patch).current_dir(&source_dir),
    )?;
    progress.step(step::UNPACK, StepState::Built);

    progress.step(step::CONFIGURE, StepState::Building);
    let make = || {
        let mut command = Command::new("make");
        command.current_dir(&source_dir).env("KBUILD_BUILD_USER", "boxbench").env("KBUILD_BUILD_HOST", "boxbench");
        command
    };
    log.run(step::CONFIGURE, make().arg("tinyconfig"))?;
    log.run(
        step::CONFIGURE,
        Command::new("scripts/kconfig/merge_config.sh")
            .args(["-m", ".config"])
            .arg(recipe.fragment_path)
            .current_dir(&source_dir),
    )?;
    log.run(step::CONFIGURE, make().arg("olddefconfig"))?;
    let dot_config_path = source_dir.join(".config");
    let dot_config = fs::read_to_string(&dot_config_path).map_err(io_err(&dot_config_path))?;
    let dropped = dropped_options(recipe.fragment, &dot_config);
    if !dropped.is_empty() {
        return Err(MicroVmKernelError::FragmentDropped { path: recipe.fragment_path.to_owned(), dropped });
    }
    progress.step(step::CONFIGURE, StepState::Built);

    progress.step(step::COMPILE, StepState::Building);
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    log.run(step::COMPILE, make().arg(format!("-j{jobs}")).args(["vmlinux", "bzImage"]))?;
    let release = log.query(step::COMPILE, make().args(["-s", "kernelrelease"]))?.trim().to_owned();
    let built_vmlinux = source_dir.join("vmlinux");
    let built_bz_image = source_dir.join("arch/x86/boot/bzImage");
    for built in [&built_vmlinux, &built_bz_image] {
        if !built.is_file() {
            return Err(MicroVmKernelError::MissingOutput(built.clone()));
        }
    }
    progress.step(step::COMPILE, StepState::Built);

    if staging.exists() {
        fs::remove_dir_all(staging).map_err(io_err(staging))?;
    }
    fs::create_dir_all(staging).map_err(io_err(staging))?;
    let staged = MicroVmKernel::in_dir(staging, release.clone(), String::new());
    log.run(step::COMPILE, Command::new("objcopy").arg("--strip-debug").arg(&built_vmlinux).arg(&staged.vmlinux))?;
    fs::copy(&built_bz_image, &staged.bz_image).map_err(io_err(&staged.bz_image))?;
    fs::copy(&dot_config_path, &staged.config).map_err(io_err(&staged.config))?;
    let release_path = staging.join(RELEASE_FILE);
    fs::write(&release_path, format!("{release}\n")).map_err(io_err(&release_path))?;
    Ok(release)
}

/// The build's log file: every command's output is appended to it.
#[derive(Debug)]
struct BuildLog {
    path: PathBuf,
    file: fs::File,
}

impl BuildLog {
    fn create(path: PathBuf) -> Result<Self, MicroVmKernelError> {
        let file = fs::File::create(&path).map_err(io_err(&path))?;
        Ok(Self { path, file })
    }

    /// Runs `command` for `step` with its output appended to the log.
    fn run(&self, step: &'static str, command: &mut Command) -> Result<(), MicroVmKernelError> {
        self.run_with(step, command, false).map(drop)
    }

    /// Runs `command` for `step` and returns its standard output (also copied to the log); its
    /// standard error goes to the log.
    fn query(&self, step: &'static str, command: &mut Command) -> Result<String, MicroVmKernelError> {
        self.run_with(step, command, true)
    }

    fn run_with(
        &self,
        step: &'static str,
        command: &mut Command,
        capture_stdout: bool,
    ) -> Result<String, MicroVmKernelError> {
        let command_line = describe(command);
        let mut file = &self.file;
        let start = file.seek(SeekFrom::End(0)).map_err(io_err(&self.path))?;
        let header = format!("\n### [{step}] {command_line}\n");
        file.write_all(header.as_bytes()).map_err(io_err(&self.path))?;
        let to_log = || self.file.try_clone().map(Stdio::from).map_err(io_err(&self.path));
        let stdout = if capture_stdout { Stdio::piped() } else { to_log()? };
        let output = command
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(to_log()?)
            .output()
            .map_err(|source| MicroVmKernelError::Spawn { step, command: command_line.clone(), source })?;
        let captured = String::from_utf8_lossy(&output.stdout).into_owned();
        file.write_all(captured.as_bytes()).map_err(io_err(&self.path))?;
        if output.status.success() {
            return Ok(captured);
        }
        Err(MicroVmKernelError::StepFailed {
            step,
            command: command_line,
            status: output.status,
            log: self.path.clone(),
            tail: self.tail_since(start + header.len() as u64)?,
        })
    }

    /// The last [`FAILURE_TAIL_LINES`] non-empty lines written to the log after `offset`.
    fn tail_since(&self, offset: u64) -> Result<String, MicroVmKernelError> {
        let mut file = fs::File::open(&self.path).map_err(io_err(&self.path))?;
        file.seek(SeekFrom::Start(offset)).map_err(io_err(&self.path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&self.path))?;
        Ok(last_lines(&String::from_utf8_lossy(&bytes), FAILURE_TAIL_LINES))
    }
}

/// The last `count` non-empty lines of `text`, joined by newlines.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// `program arg...` as a readable command line.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines_are_options_comments_or_errors() {
        assert_eq!(parse_config_line("CONFIG_PVH=y"), Ok(Some(("CONFIG_PVH", ConfigValue::Set("y".into())))));
        assert_eq!(parse_config_line("# CONFIG_CRYPTO is not set"), Ok(Some(("CONFIG_CRYPTO", ConfigValue::Unset))));
        assert_eq!(parse_config_line("# a comment about CONFIG_X"), Ok(None));
        assert_eq!(parse_config_line("   "), Ok(None));
        assert_eq!(parse_config_line("PVH=y"), Err(()));
        assert_eq!(parse_config_line("CONFIG_PVH="), Err(()));
    }

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let text = (1..=30).map(|i| format!("line {i}\n\n")).collect::<String>();
        let tail = last_lines(&text, 3);
        assert_eq!(tail, "line 28\nline 29\nline 30");
    }

    #[test]
    fn a_failing_step_is_named_with_the_end_of_its_output_and_logged_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = BuildLog::create(dir.path().join(BUILD_LOG)).unwrap();
        log.run(step::UNPACK, Command::new("sh").args(["-c", "echo unpacked"])).unwrap();
        let script = "for i in $(seq 1 30); do echo out $i; done; echo 'gelf.h: No such file' >&2; exit 2";
        let err = log.run(step::COMPILE, Command::new("sh").args(["-c", script])).unwrap_err();
        let MicroVmKernelError::StepFailed { step, ref tail, .. } = err else { panic!("{err:?}") };
        assert_eq!(step, step::COMPILE);
        assert_eq!(tail.lines().count(), FAILURE_TAIL_LINES);
        assert!(tail.starts_with("out 12\n") && tail.ends_with("gelf.h: No such file"), "{tail}");
        assert!(!tail.contains("unpacked"), "an earlier step's output leaked into the tail: {tail}");
        let text = err.to_string();
        assert!(text.contains("`microvm-kernel: compile` failed") && text.contains("apt-get install -y libelf-dev"));
        let whole = fs::read_to_string(dir.path().join(BUILD_LOG)).unwrap();
        assert!(whole.contains("unpacked") && whole.contains("out 1\n") && whole.contains("out 30\n"));
        assert_eq!(log.query(step::COMPILE, Command::new("echo").arg("6.1.0-x")).unwrap(), "6.1.0-x\n");
    }

    #[test]
    fn missing_header_hints_at_the_package() {
        assert!(package_hint("fatal error: gelf.h: No such file or directory").contains("libelf-dev"));
        assert_eq!(package_hint("error: something else"), "");
    }
}
