//! The container's filesystem: checking the root filesystem and what runs from it, the mounts a
//! container gets, and the setup steps that build its mount namespace — private propagation, the
//! rootfs bound onto itself (read-only if asked), proc, sysfs and a minimal `/dev` on a tmpfs, then
//! `pivot_root(".", ".")` and a lazy unmount of the old root, which needs no `put_old` directory and
//! so works on a read-only root — and, once the container's root is `/`, OCI's masked and
//! read-only paths (`/proc/kcore`, `/proc/sys`...).
//!
//! Mount types: proc, tmpfs, sysfs, devpts, mqueue, bind (`rbind`), and `cgroup`, which binds the
//! host's cgroup tree (every hierarchy of a v1 or hybrid host, the one of a v2 host) read-only if
//! asked, so it works the same in a user namespace. A mount point under a tmpfs the container mounted
//! (`/dev/pts`, `/dev/shm`, `/dev/mqueue`) is made in it. In a user namespace, which may not mknod,
//! `/dev`'s default devices are the host's bound onto empty files, as runc does rootless.
//!
//! Paths inside the rootfs are resolved here the way the container will see them: a symlink is
//! followed relative to the rootfs, never to the host, so checking `/bin/sh` checks the container's.

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use crate::syscalls::Step;

/// The `PATH` a workload gets when its environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How many symlinks resolving one path may follow (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// The device nodes every container's `/dev` has (the OCI runtime spec's defaults): name, major,
/// minor.
const DEFAULT_DEVICES: [(&str, u32, u32); 6] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

/// The symlinks of a container's `/dev`: name and target.
const DEFAULT_DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// The paths OCI's default config hides from the workload (`linux.maskedPaths` of `crun spec` and
/// `runc spec`): `/dev/null` over a file, an empty read-only tmpfs over a directory.
pub const DEFAULT_MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// The paths OCI's default config makes read-only (`linux.readonlyPaths`).
pub const DEFAULT_READONLY_PATHS: [&str; 5] =
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// A problem with the root filesystem, a path in it or a mount.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The rootfs path cannot be read.
    #[error("rootfs {path}: {source}")]
    Unreadable { path: PathBuf, source: io::Error },
    /// The rootfs path is not a directory.
    #[error("rootfs {0}: not a directory")]
    NotADirectory(PathBuf),
    /// The workload's program is not an executable file in the rootfs.
    #[error("rootfs {rootfs}: no executable {program:?} in it ({reason})")]
    NoExecutable { rootfs: PathBuf, program: String, reason: String },
    /// The working directory is not a directory in the rootfs.
    #[error("rootfs {rootfs}: working directory {cwd:?} is not a directory in it")]
    BadCwd { rootfs: PathBuf, cwd: String },
    /// A mount's destination cannot be used.
    #[error("rootfs {rootfs}: cannot mount on {destination:?}: {reason}")]
    MountTarget { rootfs: PathBuf, destination: String, reason: String },
    /// A mount's destination is not an absolute path.
    #[error("mount destination {0:?} is not an absolute path")]
    RelativeDestination(String),
    /// A filesystem type boxbench does not mount.
    #[error(
        "mount on {destination:?}: unsupported type {fstype:?} (supported: proc, tmpfs, sysfs, devpts, mqueue, cgroup, bind)"
    )]
    UnsupportedType { destination: String, fstype: String },
    /// A mount option boxbench does not know or that does not apply to the mount's type.
    #[error("mount on {destination:?}: unsupported option {option:?}")]
    UnsupportedOption { destination: String, option: String },
    /// A bind mount's source cannot be read.
    #[error("bind mount on {destination:?}: source {source_path}: {error}")]
    BindSource { destination: String, source_path: PathBuf, error: io::Error },
    /// `/dev` is mounted with something else than a tmpfs, where the default devices could not go.
    #[error("mount on \"/dev\": must be a tmpfs (boxbench creates the default device nodes in it)")]
    DevNotTmpfs,
    /// A string for the container holds a NUL byte.
    #[error("{0} contains a NUL byte")]
    Nul(String),
}

/// The kind of filesystem a container mount is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// procfs of the container's PID namespace.
    Proc,
    /// A fresh tmpfs.
    Tmpfs,
    /// sysfs of the container's network namespace.
    Sysfs,
    /// A new devpts instance.
    Devpts,
    /// The POSIX message queues of the container's IPC namespace.
    Mqueue,
    /// The host's cgroup tree, bound.
    Cgroup,
    /// A host path bound in (`recursive`: with the mounts under it).
    Bind { source: PathBuf, recursive: bool },
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Where it goes, an absolute path inside the container.
    pub destination: String,
    /// What is mounted.
    pub kind: MountKind,
    /// mount(2) flags from the options.
    pub flags: MsFlags,
    /// Filesystem options (tmpfs `mode=`, `size=`...), comma-joined for mount(2).
    pub data: Option<String>,
}

impl MountSpec {
    /// A mount from OCI's fields: `fstype` is the type (`bind`, or `none` with a `bind`/`rbind`
    /// option, for bind mounts), `source` the host path of a bind mount.
    pub fn parse(
        destination: &str,
        fstype: &str,
        source: Option<&Path>,
        options: &[String],
    ) -> Result<Self, RootfsError> {
        if !destination.starts_with('/') {
            return Err(RootfsError::RelativeDestination(destination.to_owned()));
        }
        let unsupported = |option: &str| RootfsError::UnsupportedOption {
            destination: destination.to_owned(),
            option: option.to_owned(),
        };
        let binds = options.iter().any(|o| o == "bind" || o == "rbind");
        let is_bind = fstype == "bind" || (fstype == "none" && binds);
        let mut kind = match fstype {
            "proc" => MountKind::Proc,
            "tmpfs" => MountKind::Tmpfs,
            "sysfs" => MountKind::Sysfs,
            "devpts" => MountKind::Devpts,
            "mqueue" => MountKind::Mqueue,
            "cgroup" | "cgroup2" => MountKind::Cgroup,
            _ if is_bind => {
                let source = source.ok_or_else(|| RootfsError::BindSource {
                    destination: destination.to_owned(),
                    source_path: PathBuf::new(),
                    error: io::Error::new(io::ErrorKind::InvalidInput, "no source given"),
                })?;
                MountKind::Bind { source: source.to_owned(), recursive: false }
            }
            other => {
                return Err(RootfsError::UnsupportedType {
                    destination: destination.to_owned(),
                    fstype: other.to_owned(),
                });
            }
        };
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for option in options {
            let (set, clear) = match option.as_str() {
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::MS_RELATIME | MsFlags::MS_NOATIME),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::MS_STRICTATIME | MsFlags::MS_NOATIME),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::MS_STRICTATIME | MsFlags::MS_RELATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "bind" | "rbind" if is_bind => {
                    if let MountKind::Bind { recursive, .. } = &mut kind {
                        *recursive |= option == "rbind";
                    }
                    continue;
                }
                other => {
                    let key = other.split_once('=').map(|(key, _)| key);
                    let tmpfs_data = matches!(key, Some("mode" | "size" | "nr_inodes" | "uid" | "gid"));
                    let devpts_data =
                        other == "newinstance" || matches!(key, Some("ptmxmode" | "mode" | "uid" | "gid"));
                    if (kind == MountKind::Tmpfs && tmpfs_data) || (kind == MountKind::Devpts && devpts_data) {
                        data.push(other.to_owned());
                        continue;
                    }
                    return Err(unsupported(other));
                }
            };
            flags = (flags | set) & !clear;
        }
        let data = (!data.is_empty()).then(|| data.join(","));
        Ok(Self { destination: destination.to_owned(), kind, flags, data })
    }

    /// The mounts a container gets when no bundle lists them: proc, a `/dev` tmpfs and read-only
    /// sysfs, with the options OCI runtimes use.
    pub fn defaults() -> Vec<MountSpec> {
        let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
        vec![
            MountSpec {
                destination: "/proc".to_owned(),
                kind: MountKind::Proc,
                flags: nosuid_noexec_nodev,
                data: None,
            },
            MountSpec::dev_tmpfs(),
            MountSpec {
                destination: "/sys".to_owned(),
                kind: MountKind::Sysfs,
                flags: nosuid_noexec_nodev | MsFlags::MS_RDONLY,
                data: None,
            },
        ]
    }

    fn dev_tmpfs() -> MountSpec {
        MountSpec {
            destination: "/dev".to_owned(),
            kind: MountKind::Tmpfs,
            flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            data: Some("mode=755,size=65536k".to_owned()),
        }
    }
}

/// Checks that `path` is a readable directory and returns its canonical form.
pub fn check_rootfs(path: &Path) -> Result<PathBuf, RootfsError> {
    let unreadable = |source| RootfsError::Unreadable { path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_dir() {
        return Err(RootfsError::NotADirectory(path.to_owned()));
    }
    path.canonicalize().map_err(unreadable)
}

/// Resolves `path` inside `root` as the container will see it, following symlinks relative to
/// `root` and never above it; returns the host path of what it names.
pub fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        let host = root.join(&candidate);
        let meta = std::fs::symlink_metadata(&host)?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(io::Error::other(format!("too many symlinks resolving {}", path.display())));
            }
            let target = std::fs::read_link(&host)?;
            if target.is_absolute() {
                resolved = PathBuf::new();
            }
            push_components(&mut pending, &target);
        } else {
            resolved = candidate;
        }
    }
    Ok(root.join(resolved))
}

/// Pushes the components of `path` onto a stack so that the first is popped first.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    stack.extend(names.into_iter().rev());
}

/// Finds the executable `program` names inside `rootfs`: a path (relative ones from `cwd`), or a
/// name searched in `path_var` as the shell would. Returns the path to hand execve inside the
/// container.
pub fn find_executable(rootfs: &Path, program: &str, cwd: &str, path_var: &str) -> Result<CString, RootfsError> {
    let missing =
        |reason: String| RootfsError::NoExecutable { rootfs: rootfs.to_owned(), program: program.to_owned(), reason };
    if program.is_empty() {
        return Err(missing("the command is empty".to_owned()));
    }
    let candidates: Vec<String> = if program.contains('/') {
        let in_container = if program.starts_with('/') { program.to_owned() } else { format!("{cwd}/{program}") };
        vec![in_container]
    } else {
        path_var.split(':').filter(|dir| !dir.is_empty()).map(|dir| format!("{dir}/{program}")).collect()
    };
    let mut last_reason = format!("no directory of PATH {path_var:?} has it");
    for candidate in candidates {
        match resolve_in_root(rootfs, Path::new(&candidate)).and_then(std::fs::metadata) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return CString::new(candidate).map_err(|_| RootfsError::Nul(format!("program {program:?}")));
            }
            Ok(_) => last_reason = format!("{candidate} is not an executable file"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if program.contains('/') {
                    last_reason = "no such file".to_owned();
                }
            }
            Err(e) => last_reason = format!("{candidate}: {e}"),
        }
    }
    Err(missing(last_reason))
}

/// Checks that `cwd` is a directory inside `rootfs`.
pub fn check_cwd(rootfs: &Path, cwd: &str) -> Result<(), RootfsError> {
    let is_dir = cwd.starts_with('/')
        && resolve_in_root(rootfs, Path::new(cwd)).and_then(std::fs::metadata).is_ok_and(|m| m.is_dir());
    if is_dir { Ok(()) } else { Err(RootfsError::BadCwd { rootfs: rootfs.to_owned(), cwd: cwd.to_owned() }) }
}

fn c_path(path: &Path) -> Result<CString, RootfsError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| RootfsError::Nul(format!("path {}", path.display())))
}

fn c_str(s: &str) -> Result<CString, RootfsError> {
    CString::new(s).map_err(|_| RootfsError::Nul(format!("{s:?}")))
}

/// The setup steps that give the container its filesystem: `rootfs` (canonical, from
/// [`check_rootfs`]) becomes `/` with `mounts` on it and a populated `/dev` tmpfs (added if
/// `mounts` has no `/dev`; its devices bound from the host's in a `user_namespace`); the steps end
/// with the container's working directory at its new `/`.
pub fn rootfs_steps(
    rootfs: &Path,
    readonly: bool,
    mounts: &[MountSpec],
    user_namespace: bool,
) -> Result<Vec<Step>, RootfsError> {
    let rootfs_c = c_path(rootfs)?;
    let mut steps = vec![
        // Nothing mounted from here on may propagate back to the host's mount namespace.
        Step::Mount {
            source: None,
            target: c_str("/")?,
            fstype: None,
            flags: MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            data: None,
        },
        // pivot_root needs the new root to be a mount point.
        Step::Mount {
            source: Some(rootfs_c.clone()),
            target: rootfs_c.clone(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
        },
    ];
    let mut mounts = mounts.to_vec();
    match mounts.iter().find(|m| m.destination == "/dev") {
        Some(dev) if dev.kind != MountKind::Tmpfs => return Err(RootfsError::DevNotTmpfs),
        Some(_) => {}
        None => mounts.insert(0, MountSpec::dev_tmpfs()),
    }
    let mut mounted = Vec::new();
    for mount in &mounts {
        mount_steps(rootfs, mount, user_namespace, &mounted, &mut steps)?;
        mounted.push((mount.destination.clone(), mount.kind == MountKind::Tmpfs));
    }
    if readonly {
        steps.push(Step::Mount {
            source: None,
            target: rootfs_c.clone(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            data: None,
        });
    }
    steps.extend([
        Step::Chdir(rootfs_c),
        // With both arguments ".", the old root ends up stacked on the new one, and the lazy
        // unmount of "." takes it away: no put_old directory, so a read-only root works too.
        Step::PivotRoot { new_root: c_str(".")?, put_old: c_str(".")? },
        Step::UmountDetach(c_str(".")?),
        Step::Chdir(c_str("/")?),
    ]);
    Ok(steps)
}

/// The steps that make `readonly` paths read-only, then hide `masked` ones, as crun and runc do
/// after pivot_root: the paths are the container's (absolute, as the bundle checks), and one its
/// kernel does not have is skipped.
pub fn protected_path_steps<S: AsRef<str>>(readonly: &[S], masked: &[S]) -> Result<Vec<Step>, RootfsError> {
    let readonly = readonly.iter().map(|path| c_str(path.as_ref()).map(Step::ReadonlyPath));
    let masked = masked.iter().map(|path| c_str(path.as_ref()).map(Step::MaskPath));
    readonly.chain(masked).collect()
}

/// The latest earlier mount (destination, is a tmpfs) that `destination` lies under, and the rest of
/// its path: such a mount point is not in the rootfs directory but on what the setup mounted (made
/// in a tmpfs, the kernel's own in sysfs or a bound host tree).
fn under_earlier_mount<'a>(destination: &str, mounted: &'a [(String, bool)]) -> Option<(&'a str, bool, PathBuf)> {
    mounted.iter().rev().find_map(|(point, tmpfs)| {
        let rest = Path::new(destination).strip_prefix(point).ok()?;
        (rest.components().count() > 0).then(|| (point.as_str(), *tmpfs, rest.to_owned()))
    })
}

/// Where the host's cgroup hierarchies are mounted; a `cgroup` mount binds this tree.
const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn mount_steps(
    rootfs: &Path,
    mount: &MountSpec,
    user_namespace: bool,
    mounted: &[(String, bool)],
    steps: &mut Vec<Step>,
) -> Result<(), RootfsError> {
    let target_error = |reason: String| RootfsError::MountTarget {
        rootfs: rootfs.to_owned(),
        destination: mount.destination.clone(),
        reason,
    };
    let (target, target_is_dir) = match under_earlier_mount(&mount.destination, mounted) {
        Some((point, tmpfs, rest)) => {
            let base = resolve_in_root(rootfs, Path::new(point)).map_err(|e| target_error(e.to_string()))?;
            let target = base.join(&rest);
            if tmpfs {
                if rest.components().count() > 1 {
                    return Err(target_error(format!("only a directory right under the tmpfs on {point} can be made")));
                }
                steps.push(Step::Mkdir(c_path(&target)?));
            }
            (target, true)
        }
        None => {
            let target = resolve_in_root(rootfs, Path::new(&mount.destination))
                .map_err(|e| target_error(format!("{e} (the mount point must exist in the rootfs)")))?;
            let is_dir = std::fs::metadata(&target).map_err(|e| target_error(e.to_string()))?.is_dir();
            (target, is_dir)
        }
    };
    let target_c = c_path(&target)?;
    let data = mount.data.as_deref().map(c_str).transpose()?;
    let fstype = match &mount.kind {
        MountKind::Proc => Some("proc"),
        MountKind::Tmpfs => Some("tmpfs"),
        MountKind::Sysfs => Some("sysfs"),
        MountKind::Devpts => Some("devpts"),
        MountKind::Mqueue => Some("mqueue"),
        MountKind::Bind { .. } | MountKind::Cgroup => None,
    };
    if !target_is_dir && !matches!(mount.kind, MountKind::Bind { .. }) {
        return Err(target_error("not a directory".to_owned()));
    }
    if mount.kind == MountKind::Cgroup {
        steps.push(Step::BindTree {
            source: c_str(HOST_CGROUP_ROOT)?,
            target: target_c.clone(),
            readonly: mount.flags.contains(MsFlags::MS_RDONLY),
        });
    }
    if let Some(fstype) = fstype {
        steps.push(Step::Mount {
            source: Some(c_str(fstype)?),
            target: target_c.clone(),
            fstype: Some(c_str(fstype)?),
            flags: mount.flags,
            data,
        });
    }
    if let MountKind::Bind { source, recursive } = &mount.kind {
        let source_meta = std::fs::metadata(source).map_err(|error| RootfsError::BindSource {
            destination: mount.destination.clone(),
            source_path: source.clone(),
            error,
        })?;
        if source_meta.is_dir() != target_is_dir {
            return Err(target_error(format!("{} and the mount point are not both directories", source.display())));
        }
        let rec = if *recursive { MsFlags::MS_REC } else { MsFlags::empty() };
        steps.push(Step::Mount {
            source: Some(c_path(source)?),
            target: target_c.clone(),
            fstype: None,
            flags: MsFlags::MS_BIND | rec,
            data: None,
        });
        // A bind mount takes its flags (ro, nosuid...) only from a remount.
        if !mount.flags.is_empty() {
            steps.push(Step::Mount {
                source: None,
                target: target_c.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | mount.flags,
                data: None,
            });
        }
    }
    if mount.kind == MountKind::Devpts && mount.destination == "/dev/pts" {
        // The container's /dev/ptmx is its own devpts instance's.
        steps.push(Step::Symlink { target: c_str("pts/ptmx")?, link: c_path(&target.with_file_name("ptmx"))? });
    }
    if mount.destination == "/dev" {
        steps.push(Step::Umask(0));
        for (name, major, minor) in DEFAULT_DEVICES {
            let path = c_path(&target.join(name))?;
            if user_namespace {
                steps.push(Step::EmptyFile(path.clone()));
                steps.push(Step::Mount {
                    source: Some(c_path(&Path::new("/dev").join(name))?),
                    target: path,
                    fstype: None,
                    flags: MsFlags::MS_BIND,
                    data: None,
                });
            } else {
                steps.push(Step::CharDevice { path, major, minor, perm: 0o666 });
            }
        }
        for (name, link_target) in DEFAULT_DEV_LINKS {
            steps.push(Step::Symlink { target: c_str(link_target)?, link: c_path(&target.join(name))? });
        }
        steps.push(Step::Umask(0o022));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::syscalls::recording::RecordingSyscalls;
    use crate::syscalls::{ChildFds, run_steps};

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_become_flags_and_tmpfs_data() {
        let dev = MountSpec::parse("/dev", "tmpfs", None, &opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]))
            .unwrap();
        assert_eq!(dev.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(dev.data.as_deref(), Some("mode=755,size=65536k"));
        let sys = MountSpec::parse("/sys", "sysfs", None, &opts(&["nosuid", "noexec", "nodev", "ro"])).unwrap();
        assert_eq!(sys.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_RDONLY);
        let rw = MountSpec::parse("/x", "tmpfs", None, &opts(&["ro", "rw"])).unwrap();
        assert_eq!(rw.flags, MsFlags::empty());
        let bind = MountSpec::parse("/data", "none", Some(Path::new("/srv")), &opts(&["rbind", "ro"])).unwrap();
        assert_eq!(bind.kind, MountKind::Bind { source: "/srv".into(), recursive: true });
    }

    #[test]
    fn unknown_options_and_types_are_named() {
        let err = MountSpec::parse("/proc", "proc", None, &opts(&["mode=755"])).unwrap_err();
        assert_eq!(err.to_string(), "mount on \"/proc\": unsupported option \"mode=755\"");
        let err = MountSpec::parse("/x", "overlay", None, &[]).unwrap_err();
        assert!(err.to_string().contains("unsupported type \"overlay\""), "{err}");
        let err = MountSpec::parse("proc", "proc", None, &[]).unwrap_err();
        assert!(err.to_string().contains("not an absolute path"), "{err}");
    }

    #[test]
    fn symlinks_resolve_inside_the_root_never_above_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/tool"), "").unwrap();
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/usr/bin/tool", r.join("usr/bin/abs")).unwrap();
        symlink("../../../../usr/bin/tool", r.join("usr/bin/escape")).unwrap();
        assert_eq!(resolve_in_root(r, Path::new("/bin/tool")).unwrap(), r.join("usr/bin/tool"));
        assert_eq!(resolve_in_root(r, Path::new("/bin/abs")).unwrap(), r.join("usr/bin/tool"));
        assert_eq!(resolve_in_root(r, Path::new("/bin/escape")).unwrap(), r.join("usr/bin/tool"));
        symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, Path::new("/loop")).is_err());
    }

    #[test]
    fn executables_are_found_on_path_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), "").unwrap();
        std::fs::set_permissions(r.join("bin/busybox"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(r.join("bin/data"), "").unwrap();
        symlink("busybox", r.join("bin/sh")).unwrap();
        let found = find_executable(r, "sh", "/", DEFAULT_PATH).unwrap();
        assert_eq!(found.to_str().unwrap(), "/bin/sh");
        assert_eq!(find_executable(r, "/bin/sh", "/", "").unwrap().to_str().unwrap(), "/bin/sh");
        let err = find_executable(r, "/bin/data", "/", DEFAULT_PATH).unwrap_err();
        assert!(err.to_string().contains("not an executable file"), "{err}");
        let err = find_executable(r, "nosuch", "/", DEFAULT_PATH).unwrap_err();
        assert!(err.to_string().contains("\"nosuch\""), "{err}");
    }

    #[test]
    fn setup_is_private_then_bound_then_mounted_then_pivoted() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in ["proc", "dev", "sys"] {
            std::fs::create_dir(r.join(dir)).unwrap();
        }
        let steps = rootfs_steps(r, true, &MountSpec::defaults(), false).unwrap();
        let sys = RecordingSyscalls::default();
        run_steps(&sys, &steps, &ChildFds { console: 3, stdin: 4, cgroup: 5, controllers: [-1; 2], sync: -1 }).unwrap();
        let calls = sys.calls.borrow();
        let rs = r.display().to_string();
        let private = (MsFlags::MS_REC | MsFlags::MS_PRIVATE).bits();
        assert_eq!(calls[0], format!("mount - / - {private:#x} -"));
        assert_eq!(calls[1], format!("mount {rs} {rs} - {:#x} -", (MsFlags::MS_BIND | MsFlags::MS_REC).bits()));
        assert!(calls[2].starts_with(&format!("mount proc {rs}/proc proc")), "{}", calls[2]);
        assert!(calls[3].starts_with(&format!("mount tmpfs {rs}/dev tmpfs")), "{}", calls[3]);
        assert!(calls[3].ends_with("mode=755,size=65536k"), "{}", calls[3]);
        assert!(calls.contains(&format!("mknod {rs}/dev/null c 1:3 666")));
        assert!(calls.contains(&format!("symlink /proc/self/fd {rs}/dev/fd")));
        let umask0 = calls.iter().position(|c| c == "umask 0").unwrap();
        let first_mknod = calls.iter().position(|c| c.starts_with("mknod")).unwrap();
        assert!(umask0 < first_mknod);
        let tail: Vec<&str> = calls[calls.len() - 5..].iter().map(String::as_str).collect();
        let ro = (MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY).bits();
        assert_eq!(
            tail,
            [
                format!("mount - {rs} - {ro:#x} -").as_str(),
                format!("chdir {rs}").as_str(),
                "pivot_root . .",
                "umount_detach .",
                "chdir /"
            ]
        );
    }

    #[test]
    fn protected_paths_are_made_read_only_before_masking() {
        let steps = protected_path_steps(&DEFAULT_READONLY_PATHS, &DEFAULT_MASKED_PATHS).unwrap();
        assert_eq!(steps.len(), 15);
        assert_eq!(steps[0], Step::ReadonlyPath(c"/proc/bus".to_owned()));
        assert_eq!(steps[3], Step::ReadonlyPath(c"/proc/sys".to_owned()));
        assert_eq!(steps[5], Step::MaskPath(c"/proc/acpi".to_owned()));
        assert_eq!(steps[14], Step::MaskPath(c"/proc/scsi".to_owned()));
        assert!(protected_path_steps::<&str>(&[], &[]).unwrap().is_empty());
        assert!(matches!(protected_path_steps(&["/a\0b"], &[]), Err(RootfsError::Nul(_))));
    }

    #[test]
    fn missing_mount_points_and_non_tmpfs_dev_are_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("proc")).unwrap();
        let err = rootfs_steps(root.path(), false, &MountSpec::defaults(), false).unwrap_err();
        assert!(err.to_string().contains("cannot mount on \"/dev\""), "{err}");
        let bind_dev = MountSpec::parse("/dev", "bind", Some(Path::new("/dev")), &[]).unwrap();
        assert!(matches!(rootfs_steps(root.path(), false, &[bind_dev], false), Err(RootfsError::DevNotTmpfs)));
    }
}
