//! What goes into the L1 host: busybox and the two init stages, Debian's cloud kernel's KVM modules,
//! the programs the inner command runs (boxbench itself, QEMU, the OCI runtimes) with the shared
//! libraries `ldd` names, QEMU's firmware, and boxbench's built guest images. Programs and images
//! keep their host paths, so the binary finds its images where it was built to look, and nothing
//! inside needs to be told.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use boxbench_images::{DebianKernel, L1InitramfsError, L1Payload};

use crate::init;

/// The kernel modules that give the L1 a /dev/kvm on AMD-V, in load order (`irqbypass` before
/// `kvm`, which `kvm-amd` needs), and fw_cfg's sysfs driver that hands it the command; paths under
/// the kernel's modules tree.
pub const MODULES: [&str; 4] = [
    "kernel/virt/lib/irqbypass.ko",
    "kernel/arch/x86/kvm/kvm.ko",
    "kernel/arch/x86/kvm/kvm-amd.ko",
    "kernel/drivers/firmware/qemu_fw_cfg.ko",
];

/// QEMU's firmware directories (option ROMs for `-kernel`, qboot for microvm, SeaBIOS for q35).
const QEMU_FIRMWARE_DIRS: [&str; 2] = ["/usr/share/qemu", "/usr/share/seabios"];

/// Where the guest images live under the images directory, and what of them the L1 leaves out:
/// build trees, locks, downloads other than busybox's `.deb` and apt's recorded answers, the
/// full-OS disk (hundreds of MB) and the L1 archives themselves.
fn images_left_out() -> [PathBuf; 6] {
    use boxbench_images::{full_os, kernel, l1_initramfs, microvm_kernel};
    [
        PathBuf::from(microvm_kernel::BUILD_DIR),
        PathBuf::from(full_os::DIR),
        PathBuf::from(l1_initramfs::L1_DIR),
        PathBuf::from(".work"),
        Path::new(kernel::UNPACK_DIR).join("lib"),
        PathBuf::from("cache"),
    ]
}

/// The L1 payload could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// busybox-static is not installed.
    #[error("{0} is missing (install the Debian package busybox-static)")]
    NoBusybox(PathBuf),
    /// The kernel package lacks a module the L1 needs.
    #[error("{package} has no {module} (the L1 needs kvm_amd for /dev/kvm and qemu_fw_cfg for its command)")]
    NoModule { package: String, module: String },
    /// `ldd` could not be run on a program or named a library that is not there.
    #[error("finding the shared libraries of {program}: {reason}")]
    Libraries { program: PathBuf, reason: String },
    /// A file or tree could not be added.
    #[error(transparent)]
    Initramfs(#[from] L1InitramfsError),
    /// A directory could not be read.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The host files an L1 is made of.
#[derive(Debug, Clone)]
pub struct PayloadSources {
    /// The L1's kernel (Debian's cloud kernel, whose modules tree holds kvm-amd).
    pub kernel: DebianKernel,
    /// The static busybox that is the L1's userspace.
    pub busybox: PathBuf,
    /// Programs to carry with their shared libraries, at their host paths (boxbench first).
    pub programs: Vec<PathBuf>,
    /// Single files to carry at their host paths (boxbench's own guest ELF).
    pub files: Vec<PathBuf>,
    /// The guest-images directory (`out/` and the recipes), carried at its host path.
    pub images_dir: PathBuf,
}

/// The payload of `sources`.
pub fn assemble(sources: &PayloadSources) -> Result<L1Payload, PayloadError> {
    let mut payload = L1Payload::new();
    if !sources.busybox.is_file() {
        return Err(PayloadError::NoBusybox(sources.busybox.clone()));
    }
    add_program_at(&mut payload, Path::new("/bin/busybox"), &sources.busybox)?;
    payload.add_bytes(Path::new("/init"), init::stage1(), 0o755)?;

    let release_dir = PathBuf::from("/lib/modules").join(&sources.kernel.release);
    let mut modules = Vec::new();
    for module in MODULES {
        let source = sources.kernel.modules_dir.join(module);
        if !source.is_file() {
            return Err(PayloadError::NoModule {
                package: sources.kernel.package.clone(),
                module: module.rsplit('/').next().unwrap_or(module).to_owned(),
            });
        }
        let dest = release_dir.join(module);
        payload.add_file(&dest, &source)?;
        modules.push(dest);
    }
    let module_refs: Vec<&Path> = modules.iter().map(PathBuf::as_path).collect();
    payload.add_bytes(Path::new("/sbin/l1-init"), init::stage2(&module_refs), 0o755)?;
    payload.add_bytes(
        Path::new("/etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    payload.add_bytes(Path::new("/etc/group"), "root:x:0:\nkvm:x:104:\nnogroup:x:65534:\n", 0o644)?;

    for program in &sources.programs {
        add_program(&mut payload, program)?;
    }
    for file in &sources.files {
        payload.add_file(file, file)?;
    }
    for dir in QEMU_FIRMWARE_DIRS.map(Path::new).into_iter().filter(|d| d.is_dir()) {
        payload.add_tree(dir, dir)?;
    }
    add_images(&mut payload, &sources.images_dir)?;
    Ok(payload)
}

/// Adds `program` and every shared library `ldd` names for it, at their host paths.
fn add_program(payload: &mut L1Payload, program: &Path) -> Result<(), PayloadError> {
    add_program_at(payload, program, program)
}

/// Adds `program` at `dest` and every shared library `ldd` names for it at its host path.
fn add_program_at(payload: &mut L1Payload, dest: &Path, program: &Path) -> Result<(), PayloadError> {
    payload.add_file(dest, program)?;
    for library in shared_libraries(program)? {
        if !payload.contains(&library) {
            payload.add_file(&library, &library)?;
        }
    }
    Ok(())
}

/// The shared libraries of `program`, by `ldd`: the path after `=>`, or the loader's own path.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, PayloadError> {
    let fail = |reason: String| PayloadError::Libraries { program: program.to_owned(), reason };
    let output = Command::new("ldd").arg(program).output().map_err(|e| fail(format!("running ldd: {e}")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let errors = String::from_utf8_lossy(&output.stderr);
    // A static program: ldd says so (on stdout or stderr, by glibc version) and may exit 1.
    if [&text, &errors].iter().any(|t| t.contains("not a dynamic executable") || t.contains("statically linked")) {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        return Err(fail(errors.trim().to_owned()));
    }
    parse_ldd(&text).map_err(fail)
}

/// The library paths in `ldd`'s output; a library it did not find is an error naming it.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                target.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        // The vDSO has no file.
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// Adds the guest-images directory: the recipes and the built images, less [`images_left_out`],
/// plus busybox's `.deb` and apt's recorded answers from the download cache (the image builder
/// checks its stamps against them; the L1 has no apt).
fn add_images(payload: &mut L1Payload, images_dir: &Path) -> Result<(), PayloadError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| PayloadError::Io { path, source }
    };
    for dirent in fs::read_dir(images_dir).map_err(io_err(images_dir))? {
        let path = dirent.map_err(io_err(images_dir))?.path();
        if path.file_name().is_some_and(|n| n == "out") {
            continue;
        }
        if path.is_dir() {
            payload.add_tree(&path, &path)?;
        }
    }
    let out = images_dir.join("out");
    let left_out = images_left_out();
    let keep = |path: &Path| {
        let relative = path.strip_prefix(&out).unwrap_or(path);
        let lock = path.extension().is_some_and(|e| e == "lock") || path.file_name().is_some_and(|n| n == ".lock");
        !lock && !left_out.iter().any(|left| relative == left)
    };
    payload.add_tree_where(&out, &out, &keep)?;
    let cache = out.join("cache");
    if cache.is_dir() {
        for dirent in fs::read_dir(&cache).map_err(io_err(&cache))? {
            let path = dirent.map_err(io_err(&cache))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let wanted = name.starts_with(".apt-")
                || (name.starts_with(&format!("{}_", boxbench_images::BUSYBOX_PACKAGE)) && name.ends_with(".deb"));
            if wanted && path.is_file() {
                payload.add_file(&path, &path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibseccomp.so.2 => /lib/x86_64-linux-gnu/libseccomp.so.2 (0x00007f3b)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f3b)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3b)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libseccomp.so.2"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_is_named() {
        let err = parse_ldd("\tlibyajl.so.2 => not found\n").unwrap_err();
        assert_eq!(err, "libyajl.so.2 not found");
    }

    #[test]
    fn a_real_program_brings_its_libraries() {
        let libraries = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(libraries.iter().any(|l| l.to_string_lossy().contains("libc.so")), "{libraries:?}");
        assert!(libraries.iter().all(|l| l.is_file()));
    }

    #[test]
    fn a_static_program_has_none() {
        assert_eq!(shared_libraries(Path::new("/bin/busybox")).unwrap(), Vec::<PathBuf>::new());
    }
}
