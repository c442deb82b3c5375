//! OCI runtime bundles: `config.json` read with the `oci-spec` crate, then held to what boxbench's
//! container honours, so that a setting it would silently ignore is an error naming the field.
//!
//! Two checks: a key `oci-spec` does not know (a typo, a newer field) is an unknown field, found by
//! comparing the file with the typed config written back; a field it knows that boxbench does not
//! honour (`hooks`, `linux.devices`, `process.apparmorProfile`...) is unsupported. Both errors name
//! the field's path, as `linux.resources.blockIO`.
//!
//! Honoured: everything `runc spec` and `runc spec --rootless` write — `process` {`terminal`: false,
//! `user` {`uid`, `gid`, `additionalGids`}, `args`, `env`, `cwd`, `capabilities` (all five sets),
//! `rlimits`, `noNewPrivileges`}; `root`; `hostname`; `mounts` (proc, tmpfs, sysfs, devpts, mqueue,
//! cgroup, bind); `linux` {`namespaces` (pid, network, ipc, uts, mount, user, cgroup), `uidMappings`,
//! `gidMappings`, `resources` {`memory.limit`, `cpu` {`shares`, `quota`, `period`}, `pids.limit`,
//! `devices` deny-all}, `seccomp`, `maskedPaths`, `readonlyPaths`}; `annotations` (informational).
//!
//! `linux.resources.devices` may only deny every device (`runc spec`'s one rule): the container's
//! `/dev` has only the default devices, and without `CAP_MKNOD` in the bounding set it cannot make
//! others, so a bundle that keeps `CAP_MKNOD` with that rule is refused rather than half-honoured.
//!
//! Where a bundle leaves the workload's isolation out, it gets OCI's defaults, the settings
//! `crun spec` writes: `noNewPrivileges` true, the capabilities of
//! [`CapabilitySets::oci_default`], and [`DEFAULT_MASKED_PATHS`] and [`DEFAULT_READONLY_PATHS`].
//! A set missing from a `capabilities` object that is there is empty, and an empty path list
//! protects nothing, as OCI reads them.

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxCapabilities, LinuxNamespaceType, PosixRlimitType, Spec};
use seccompiler::BpfProgram;
use serde_json::Value;

use crate::capabilities::{self, CapabilityError, CapabilitySets};
use crate::namespaces::{IdMap, IdMappings, Namespace, NamespaceSet};
use crate::resources::{CpuLimits, Limits};
use crate::rootfs::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, MountSpec};
use crate::seccomp;

/// The file of a bundle that describes it.
pub const CONFIG_FILE: &str = "config.json";

/// Why a bundle cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// config.json cannot be read.
    #[error("bundle {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// config.json is not JSON.
    #[error("bundle {path}: not valid JSON: {source}")]
    NotJson { path: PathBuf, source: serde_json::Error },
    /// config.json is JSON but not an OCI runtime config (a field of the wrong type...).
    #[error("bundle {path}: not an OCI runtime config: {reason}")]
    NotOci { path: PathBuf, reason: String },
    /// A field boxbench does not support, or does not know.
    #[error("bundle {path}: unsupported field \"{field}\"")]
    Unsupported { path: PathBuf, field: String },
    /// A field of the wrong type.
    #[error("bundle {path}: field \"{field}\" must be {expected}")]
    Invalid { path: PathBuf, field: String, expected: &'static str },
    /// A required field is absent.
    #[error("bundle {path}: missing field \"{field}\"")]
    Missing { path: PathBuf, field: String },
    /// A field whose value boxbench cannot honour.
    #[error("bundle {path}: field \"{field}\": {reason}")]
    Value { path: PathBuf, field: String, reason: String },
}

/// `process.user`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// `uid`.
    pub uid: u32,
    /// `gid`.
    pub gid: u32,
    /// `additionalGids`: the supplementary groups (none if absent).
    pub additional_gids: Vec<u32>,
}

/// One of `process.rlimits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// Its OCI name, `RLIMIT_NOFILE`.
    pub name: &'static str,
    /// The resource number setrlimit(2) takes.
    pub resource: u32,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// What a bundle asks for, within what boxbench honours.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle's config.json.
    pub config: PathBuf,
    /// The root filesystem (relative `root.path` taken from the bundle directory).
    pub root: PathBuf,
    /// `root.readonly`.
    pub readonly: bool,
    /// `process.args`.
    pub args: Vec<String>,
    /// `process.env`.
    pub env: Vec<String>,
    /// `process.cwd`.
    pub cwd: String,
    /// `process.user`.
    pub user: User,
    /// `process.rlimits`, in order.
    pub rlimits: Vec<Rlimit>,
    /// `process.noNewPrivileges` (true if absent).
    pub no_new_privileges: bool,
    /// `process.capabilities` (OCI's default if absent).
    pub capabilities: CapabilitySets,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `mounts`, in order.
    pub mounts: Vec<MountSpec>,
    /// `linux.namespaces` (the default five if absent).
    pub namespaces: NamespaceSet,
    /// `linux.uidMappings` and `linux.gidMappings`, with a user namespace.
    pub id_mappings: Option<IdMappings>,
    /// `linux.resources.memory.limit`.
    pub memory_limit: Option<u64>,
    /// `linux.resources.cpu` and `linux.resources.pids`.
    pub limits: Limits,
    /// `linux.seccomp`, compiled (none if absent or allowing everything).
    pub seccomp: Vec<BpfProgram>,
    /// `linux.maskedPaths` (OCI's default list if absent).
    pub masked_paths: Vec<String>,
    /// `linux.readonlyPaths` (OCI's default list if absent).
    pub readonly_paths: Vec<String>,
}

/// The rlimit names OCI uses and their resource numbers.
fn rlimit_of(kind: PosixRlimitType) -> (&'static str, u32) {
    match kind {
        PosixRlimitType::RlimitCpu => ("RLIMIT_CPU", libc::RLIMIT_CPU),
        PosixRlimitType::RlimitFsize => ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
        PosixRlimitType::RlimitData => ("RLIMIT_DATA", libc::RLIMIT_DATA),
        PosixRlimitType::RlimitStack => ("RLIMIT_STACK", libc::RLIMIT_STACK),
        PosixRlimitType::RlimitCore => ("RLIMIT_CORE", libc::RLIMIT_CORE),
        PosixRlimitType::RlimitRss => ("RLIMIT_RSS", libc::RLIMIT_RSS),
        PosixRlimitType::RlimitNproc => ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
        PosixRlimitType::RlimitNofile => ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
        PosixRlimitType::RlimitMemlock => ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
        PosixRlimitType::RlimitAs => ("RLIMIT_AS", libc::RLIMIT_AS),
        PosixRlimitType::RlimitLocks => ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
        PosixRlimitType::RlimitSigpending => ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
        PosixRlimitType::RlimitMsgqueue => ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
        PosixRlimitType::RlimitNice => ("RLIMIT_NICE", libc::RLIMIT_NICE),
        PosixRlimitType::RlimitRtprio => ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
        PosixRlimitType::RlimitRttime => ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
    }
}

/// The first key of `original` (JSON `null`s aside) that the typed config written back lacks: a
/// field `oci-spec` does not know, by its dotted path.
fn unknown_field(original: &Value, known: &Value, at: &str) -> Option<String> {
    let join = |key: &str| if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") };
    match (original, known) {
        (Value::Object(original), Value::Object(known)) => {
            original.iter().filter(|(_, v)| !v.is_null()).find_map(|(key, value)| match known.get(key) {
                None => Some(join(key)),
                Some(known) => unknown_field(value, known, &join(key)),
            })
        }
        (Value::Object(original), _) => original.keys().next().map(|key| join(key)),
        (Value::Array(original), Value::Array(known)) if original.len() == known.len() => original
            .iter()
            .zip(known)
            .enumerate()
            .find_map(|(index, (value, known))| unknown_field(value, known, &format!("{at}[{index}]"))),
        _ => None,
    }
}

/// The section of a config `oci-spec` refused, and its message: serde's own names neither the
/// object nor the path (`missing field `cwd``), so each section is read on its own to find it.
fn section_at_fault(value: &Value) -> Option<(String, String)> {
    fn check<T: serde::de::DeserializeOwned>(field: String, value: Option<&Value>) -> Option<(String, String)> {
        let value = value.filter(|v| !v.is_null())?;
        serde_json::from_value::<T>(value.clone()).err().map(|e| (field, e.to_string()))
    }
    use oci_spec::runtime::{Hooks, Linux, Mount, Process, Root};
    check::<Process>("process".into(), value.get("process"))
        .or_else(|| check::<Root>("root".into(), value.get("root")))
        .or_else(|| {
            let mounts = value.get("mounts").and_then(Value::as_array)?;
            mounts.iter().enumerate().find_map(|(i, m)| check::<Mount>(format!("mounts[{i}]"), Some(m)))
        })
        .or_else(|| check::<Linux>("linux".into(), value.get("linux")))
        .or_else(|| check::<Hooks>("hooks".into(), value.get("hooks")))
}

/// The capability sets' names checked before `oci-spec` reads them, so a wrong one is named with
/// its set (the crate's own message names neither).
fn check_capability_names(value: &Value) -> Result<(), (String, String)> {
    let Some(caps) = value.pointer("/process/capabilities").and_then(Value::as_object) else { return Ok(()) };
    for (set, names) in caps {
        let field = format!("process.capabilities.{set}");
        let Some(names) = names.as_array() else { continue };
        let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
        capabilities::mask_of(&names).map_err(|e| (field, e.to_string()))?;
    }
    Ok(())
}

impl Bundle {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| BundleError::Read { path: path.clone(), source })?;
        let value: Value =
            serde_json::from_str(&text).map_err(|source| BundleError::NotJson { path: path.clone(), source })?;
        Self::from_value(dir, &path, &value)
    }

    fn from_value(dir: &Path, path: &Path, value: &Value) -> Result<Self, BundleError> {
        let fail = Fail { config: path };
        if !value.is_object() {
            return Err(fail.invalid("(top level)", "an object"));
        }
        check_capability_names(value).map_err(|(field, reason)| fail.value(&field, reason))?;
        let spec: Spec = serde_json::from_value(value.clone()).map_err(|e| BundleError::NotOci {
            path: path.to_owned(),
            reason: match section_at_fault(value) {
                Some((field, reason)) => format!("field \"{field}\": {reason}"),
                None => e.to_string(),
            },
        })?;
        let known = serde_json::to_value(&spec)
            .map_err(|e| BundleError::NotOci { path: path.to_owned(), reason: e.to_string() })?;
        if let Some(field) = unknown_field(value, &known, "") {
            return Err(fail.unsupported(&field));
        }
        Self::from_spec(dir, &fail, value, &spec)
    }

    fn from_spec(dir: &Path, fail: &Fail<'_>, raw: &Value, spec: &Spec) -> Result<Self, BundleError> {
        let present = |pointer: &str| raw.pointer(pointer).is_some_and(|v| !v.is_null());
        // Known to oci-spec, not honoured here: named rather than ignored.
        let unsupported_top = [("/domainname", "domainname"), ("/hooks", "hooks")];
        let unsupported_process = [
            ("consoleSize", "consoleSize"),
            ("commandLine", "commandLine"),
            ("apparmorProfile", "apparmorProfile"),
            ("oomScoreAdj", "oomScoreAdj"),
            ("selinuxLabel", "selinuxLabel"),
            ("ioPriority", "ioPriority"),
            ("scheduler", "scheduler"),
            ("execCPUAffinity", "execCPUAffinity"),
            ("user/umask", "user.umask"),
            ("user/username", "user.username"),
        ];
        let unsupported_linux = [
            "netDevices",
            "sysctl",
            "cgroupsPath",
            "devices",
            "rootfsPropagation",
            "mountLabel",
            "intelRdt",
            "memoryPolicy",
            "personality",
            "timeOffsets",
        ];
        let unsupported_resources = [
            "blockIO",
            "hugepageLimits",
            "network",
            "rdma",
            "unified",
            "memory/reservation",
            "memory/swap",
            "memory/kernel",
            "memory/kernelTCP",
            "memory/swappiness",
            "memory/disableOOMKiller",
            "memory/useHierarchy",
            "memory/checkBeforeUpdate",
            "cpu/idle",
            "cpu/burst",
            "cpu/realtimeRuntime",
            "cpu/realtimePeriod",
            "cpu/cpus",
            "cpu/mems",
        ];
        let firsts = unsupported_top
            .iter()
            .map(|(pointer, field)| (pointer.to_string(), field.to_string()))
            .chain(unsupported_process.iter().map(|(p, f)| (format!("/process/{p}"), format!("process.{f}"))))
            .chain(unsupported_linux.iter().map(|k| (format!("/linux/{k}"), format!("linux.{k}"))))
            .chain(
                unsupported_resources
                    .iter()
                    .map(|k| (format!("/linux/resources/{k}"), format!("linux.resources.{}", k.replace('/', ".")))),
            );
        for (pointer, field) in firsts {
            if present(&pointer) {
                return Err(fail.unsupported(&field));
            }
        }

        let process = spec.process().as_ref().ok_or_else(|| fail.missing("process"))?;
        if process.terminal() == Some(true) {
            return Err(fail.value("process.terminal", "only false is supported (the console is a pipe)"));
        }
        let user = process.user();
        let user = User {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
        };
        let args = process.args().clone().ok_or_else(|| fail.missing("process.args"))?;
        if args.is_empty() {
            return Err(fail.value("process.args", "must not be empty"));
        }
        let env = process.env().clone().unwrap_or_default();
        // Required by OCI (and by oci-spec, which names it when missing).
        let cwd = process.cwd().to_string_lossy().into_owned();
        if !cwd.starts_with('/') {
            return Err(fail.value("process.cwd", "must be an absolute path"));
        }
        let no_new_privileges = process.no_new_privileges().unwrap_or(true);
        let capabilities = match process.capabilities() {
            Some(caps) => capability_sets(fail, caps)?,
            None => CapabilitySets::oci_default(),
        };
        let mut rlimits: Vec<Rlimit> = Vec::new();
        for (index, limit) in process.rlimits().iter().flatten().enumerate() {
            let (name, resource) = rlimit_of(limit.typ());
            let field = format!("process.rlimits[{index}]");
            if limit.soft() > limit.hard() {
                return Err(fail.value(&field, format!("{name}: soft {} above hard {}", limit.soft(), limit.hard())));
            }
            if rlimits.iter().any(|r| r.resource == resource) {
                return Err(fail.value(&field, format!("{name} is listed twice")));
            }
            rlimits.push(Rlimit { name, resource, soft: limit.soft(), hard: limit.hard() });
        }

        let root = spec.root().as_ref().ok_or_else(|| fail.missing("root"))?;
        if !present("/root/path") {
            return Err(fail.missing("root.path"));
        }
        let readonly = root.readonly().unwrap_or(false);
        let hostname = spec.hostname().clone();

        let mut mounts = Vec::new();
        for (index, mount) in spec.mounts().iter().flatten().enumerate() {
            let field = format!("mounts[{index}]");
            let destination = mount.destination().to_string_lossy().into_owned();
            let fstype = mount.typ().clone().unwrap_or_else(|| "none".to_owned());
            let source = mount.source().as_ref().map(|s| dir.join(s));
            let options = mount.options().clone().unwrap_or_default();
            let parsed = MountSpec::parse(&destination, &fstype, source.as_deref(), &options)
                .map_err(|e| fail.value(&field, e.to_string()))?;
            mounts.push(parsed);
        }

        let linux = spec.linux().as_ref();
        let namespaces = match linux.and_then(|l| l.namespaces().as_ref()) {
            None => NamespaceSet::all(),
            Some(list) => {
                let mut kinds = Vec::new();
                for (index, ns) in list.iter().enumerate() {
                    let field = format!("linux.namespaces[{index}]");
                    if ns.path().is_some() {
                        return Err(fail.unsupported(&format!("{field}.path")));
                    }
                    let kind = match ns.typ() {
                        LinuxNamespaceType::Pid => Namespace::Pid,
                        LinuxNamespaceType::Network => Namespace::Network,
                        LinuxNamespaceType::Ipc => Namespace::Ipc,
                        LinuxNamespaceType::Uts => Namespace::Uts,
                        LinuxNamespaceType::Mount => Namespace::Mount,
                        LinuxNamespaceType::User => Namespace::User,
                        LinuxNamespaceType::Cgroup => Namespace::Cgroup,
                        LinuxNamespaceType::Time => {
                            return Err(
                                fail.value(&format!("{field}.type"), "namespace type \"time\" is not supported")
                            );
                        }
                    };
                    kinds.push(kind);
                }
                NamespaceSet::new(kinds).map_err(|e| fail.value("linux.namespaces", e.to_string()))?
            }
        };
        if hostname.is_some() {
            namespaces.check_hostname().map_err(|e| fail.value("hostname", e.to_string()))?;
        }
        let id_mappings = id_mappings(fail, spec, &namespaces, &user)?;

        let resources = linux.and_then(|l| l.resources().as_ref());
        let memory_limit = match resources.and_then(|r| r.memory().as_ref()).and_then(|m| m.limit()) {
            None => None,
            Some(bytes) if bytes > 0 => Some(bytes as u64),
            Some(_) => return Err(fail.invalid("linux.resources.memory.limit", "a positive number of bytes")),
        };
        let cpu = resources.and_then(|r| r.cpu().as_ref());
        let limits = Limits {
            cpu: CpuLimits {
                shares: cpu.and_then(|c| c.shares()),
                quota: cpu.and_then(|c| c.quota()),
                period: cpu.and_then(|c| c.period()),
            },
            pids: resources.and_then(|r| r.pids().as_ref()).map(|p| p.limit()),
        };
        for (index, rule) in resources.and_then(|r| r.devices().as_ref()).iter().flat_map(|d| d.iter()).enumerate() {
            let field = format!("linux.resources.devices[{index}]");
            let access = rule.access().as_deref().unwrap_or("rwm");
            let deny_all = !rule.allow() && rule.typ().is_none() && rule.major().is_none() && rule.minor().is_none();
            let all_access = access.len() == 3 && ["r", "w", "m"].iter().all(|a| access.contains(a));
            if !(deny_all && all_access) {
                return Err(
                    fail.value(&field, "only the rule denying every device (allow false, access rwm) is supported")
                );
            }
            if capabilities.bounding & capabilities::mask_of(&["CAP_MKNOD"]).unwrap_or(0) != 0 {
                return Err(fail.value(
                    &field,
                    "denying every device needs CAP_MKNOD out of the bounding set (boxbench keeps devices out by \
                     giving the container only the default ones)",
                ));
            }
        }

        let seccomp = match linux.and_then(|l| l.seccomp().as_ref()) {
            None => Vec::new(),
            Some(profile) => {
                seccomp::compile(profile).map_err(|e| fail.value(&format!("linux.seccomp.{}", e.field), e.reason))?
            }
        };

        let defaults = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let absolute = |key: &str, paths: Option<&Vec<String>>, default: &[&str]| match paths {
            None => Ok(defaults(default)),
            Some(paths) => match paths.iter().find(|path| !path.starts_with('/')) {
                Some(relative) => {
                    Err(fail.value(&format!("linux.{key}"), format!("{relative:?} is not an absolute path")))
                }
                None => Ok(paths.clone()),
            },
        };
        let masked_paths =
            absolute("maskedPaths", linux.and_then(|l| l.masked_paths().as_ref()), &DEFAULT_MASKED_PATHS)?;
        let readonly_paths =
            absolute("readonlyPaths", linux.and_then(|l| l.readonly_paths().as_ref()), &DEFAULT_READONLY_PATHS)?;

        Ok(Self {
            config: fail.config.to_owned(),
            root: dir.join(root.path()),
            readonly,
            args,
            env,
            cwd,
            user,
            rlimits,
            no_new_privileges,
            capabilities,
            hostname,
            mounts,
            namespaces,
            id_mappings,
            memory_limit,
            limits,
            seccomp,
            masked_paths,
            readonly_paths,
        })
    }
}

/// `linux.uidMappings` and `linux.gidMappings`: required with a user namespace (the init's ids must
/// exist in it), refused without one.
fn id_mappings(
    fail: &Fail<'_>,
    spec: &Spec,
    namespaces: &NamespaceSet,
    user: &User,
) -> Result<Option<IdMappings>, BundleError> {
    let linux = spec.linux().as_ref();
    let convert = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.map(|maps| {
            maps.iter()
                .map(|m| IdMap { container_id: m.container_id(), host_id: m.host_id(), size: m.size() })
                .collect::<Vec<_>>()
        })
    };
    let uids = convert(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gids = convert(linux.and_then(|l| l.gid_mappings().as_ref()));
    if !namespaces.contains(Namespace::User) {
        if uids.is_some() {
            return Err(fail.value("linux.uidMappings", "needs a user namespace in linux.namespaces"));
        }
        if gids.is_some() {
            return Err(fail.value("linux.gidMappings", "needs a user namespace in linux.namespaces"));
        }
        return Ok(None);
    }
    let uids = uids
        .filter(|m| !m.is_empty())
        .ok_or_else(|| fail.value("linux.uidMappings", "a user namespace needs mappings"))?;
    let gids = gids
        .filter(|m| !m.is_empty())
        .ok_or_else(|| fail.value("linux.gidMappings", "a user namespace needs mappings"))?;
    let mappings = IdMappings { uids, gids };
    if !mappings.maps(0, 0) {
        return Err(
            fail.value("linux.uidMappings", "must map the container's root (uid and gid 0), who sets the container up")
        );
    }
    if !mappings.maps(user.uid, user.gid) {
        return Err(fail.value(
            "process.user",
            format!("uid {} gid {} are not mapped by linux.uidMappings/gidMappings", user.uid, user.gid),
        ));
    }
    Ok(Some(mappings))
}

/// `process.capabilities`: each set's names, a set that is not there being empty.
fn capability_sets(fail: &Fail<'_>, caps: &LinuxCapabilities) -> Result<CapabilitySets, BundleError> {
    let mask = |set: &str, names: &Option<oci_spec::runtime::Capabilities>| -> Result<u64, BundleError> {
        let names: Vec<String> = names
            .iter()
            .flatten()
            .map(|cap| serde_json::to_value(cap).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
            .collect();
        capabilities::mask_of(&names).map_err(|e| fail.value(&format!("process.capabilities.{set}"), e.to_string()))
    };
    let sets = CapabilitySets::new(
        mask("bounding", caps.bounding())?,
        mask("effective", caps.effective())?,
        mask("permitted", caps.permitted())?,
        mask("inheritable", caps.inheritable())?,
        mask("ambient", caps.ambient())?,
    );
    sets.map_err(|e| match e {
        CapabilityError::EffectiveNotPermitted(_) => fail.value("process.capabilities.effective", e.to_string()),
        CapabilityError::InheritableNotBounding(_) => fail.value("process.capabilities.inheritable", e.to_string()),
        CapabilityError::Unknown(_) => fail.value("process.capabilities", e.to_string()),
    })
}

/// Errors about one config file.
struct Fail<'a> {
    config: &'a Path,
}

impl Fail<'_> {
    fn unsupported(&self, field: &str) -> BundleError {
        BundleError::Unsupported { path: self.config.to_owned(), field: field.to_owned() }
    }

    fn invalid(&self, field: &str, expected: &'static str) -> BundleError {
        BundleError::Invalid { path: self.config.to_owned(), field: field.to_owned(), expected }
    }

    fn missing(&self, field: &str) -> BundleError {
        BundleError::Missing { path: self.config.to_owned(), field: field.to_owned() }
    }

    fn value(&self, field: &str, reason: impl Into<String>) -> BundleError {
        BundleError::Value { path: self.config.to_owned(), field: field.to_owned(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rootfs::MountKind;

    /// The bundle the images helper writes at guest-images/out/bundle/config.json.
    fn images_bundle() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["/boxbench/workloads/hello"],
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/"
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "boxbench",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
        })
    }

    fn parse(value: &Value) -> Result<Bundle, BundleError> {
        Bundle::from_value(Path::new("/b"), Path::new("/b/config.json"), value)
    }

    #[test]
    fn the_images_bundle_parses() {
        let bundle = parse(&images_bundle()).unwrap();
        assert_eq!(bundle.root, Path::new("/b/rootfs"));
        assert!(bundle.readonly);
        assert_eq!(bundle.args, ["/boxbench/workloads/hello"]);
        assert_eq!(bundle.hostname.as_deref(), Some("boxbench"));
        assert_eq!(bundle.mounts.len(), 3);
        assert_eq!(bundle.mounts[2].kind, MountKind::Sysfs);
        assert_eq!(bundle.namespaces, NamespaceSet::all());
        assert_eq!(bundle.memory_limit, None);
    }

    #[test]
    fn unsupported_fields_are_named_with_their_path() {
        let mut value = images_bundle();
        value["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        let err = parse(&value).unwrap_err();
        assert_eq!(err.to_string(), "bundle /b/config.json: unsupported field \"linux.sysctl\"");

        // Unknown to oci-spec (a typo, a newer field): named by its path too.
        let mut value = images_bundle();
        value["linux"]["resources"] = json!({"memory": {"limit": 1048576, "limt": 1}});
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"linux.resources.memory.limt\""));
        let mut value = images_bundle();
        value["mounts"][2]["propagation"] = json!("shared");
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"mounts[2].propagation\""));
        let mut value = images_bundle();
        value["linux"]["resources"] = json!({"blockIO": {"weight": 10}});
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"linux.resources.blockIO\""));
        let mut value = images_bundle();
        value["hooks"] = json!({"prestart": [{"path": "/bin/true"}]});
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"hooks\""));

        let mut value = images_bundle();
        value["process"]["capabilities"] = json!({"bounding": [], "permitted": [], "extra": []});
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"process.capabilities.extra\""));

        let mut value = images_bundle();
        value["process"]["apparmorProfile"] = json!("docker-default");
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"process.apparmorProfile\""));

        let mut value = images_bundle();
        value["linux"]["namespaces"][1]["path"] = json!("/proc/1/ns/net");
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"linux.namespaces[1].path\""));
    }

    #[test]
    fn values_boxbench_cannot_honour_are_refused() {
        let mut value = images_bundle();
        value["process"]["terminal"] = json!(true);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"process.terminal\""), "{err}");

        let mut value = images_bundle();
        value["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "time"}]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"linux.namespaces[1].type\"") && err.contains("\"time\""), "{err}");

        let mut value = images_bundle();
        value["linux"]["namespaces"] = json!([{"type": "mount"}]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"hostname\"") && err.contains("uts"), "{err}");

        let mut value = images_bundle();
        value["mounts"][1]["options"] = json!(["nosuid", "huge=always"]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"mounts[1]\"") && err.contains("huge=always"), "{err}");

        let mut value = images_bundle();
        value["process"]["args"] = json!("/bin/true");
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.starts_with("bundle /b/config.json: not an OCI runtime config: field \"process\": "), "{err}");

        let mut value = images_bundle();
        value["process"].as_object_mut().unwrap().remove("cwd");
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("field \"process\": missing field `cwd`"), "{err}");
        let mut value = images_bundle();
        value["mounts"][1]["options"] = json!("nosuid");
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("field \"mounts[1]\": "), "{err}");
    }

    #[test]
    fn absent_isolation_settings_are_ocis_defaults() {
        let bundle = parse(&images_bundle()).unwrap();
        assert!(bundle.no_new_privileges);
        assert_eq!(bundle.capabilities, CapabilitySets::oci_default());
        assert_eq!(bundle.masked_paths, DEFAULT_MASKED_PATHS);
        assert_eq!(bundle.readonly_paths, DEFAULT_READONLY_PATHS);
        let mut value = images_bundle();
        value.as_object_mut().unwrap().remove("linux");
        let bundle = parse(&value).unwrap();
        assert_eq!(bundle.masked_paths, DEFAULT_MASKED_PATHS);
        assert_eq!(bundle.readonly_paths, DEFAULT_READONLY_PATHS);
    }

    #[test]
    fn isolation_settings_are_read_as_given() {
        let mut value = images_bundle();
        value["process"]["noNewPrivileges"] = json!(false);
        value["process"]["capabilities"] = json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_CHOWN", "CAP_KILL"],
            "inheritable": ["CAP_CHOWN"],
            "ambient": ["CAP_CHOWN"]
        });
        value["linux"]["maskedPaths"] = json!(["/proc/kcore"]);
        value["linux"]["readonlyPaths"] = json!([]);
        let bundle = parse(&value).unwrap();
        assert!(!bundle.no_new_privileges);
        let (chown, kill) = (1 << 0, 1 << 5);
        assert_eq!(bundle.capabilities, CapabilitySets::new(chown | kill, kill, chown | kill, chown, chown).unwrap());
        assert_eq!(bundle.capabilities.ambient, chown);
        assert_eq!(bundle.masked_paths, ["/proc/kcore"]);
        assert!(bundle.readonly_paths.is_empty());

        // Only what a set lists: an absent set is empty.
        value["process"]["capabilities"] = json!({"bounding": ["CAP_KILL"]});
        let caps = parse(&value).unwrap().capabilities;
        assert_eq!((caps.bounding, caps.effective, caps.permitted, caps.inheritable), (kill, 0, 0, 0));
    }

    #[test]
    fn the_capabilities_crun_spec_writes_parse() {
        let mut value = images_bundle();
        let three = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        value["process"]["capabilities"] = json!({
            "bounding": three, "effective": three, "inheritable": [], "permitted": three, "ambient": three
        });
        assert_eq!(parse(&value).unwrap().capabilities, CapabilitySets::oci_default());
    }

    #[test]
    fn bad_isolation_settings_name_their_field() {
        let mut value = images_bundle();
        value["process"]["capabilities"] = json!({"bounding": ["CAP_KILL", "CAP_TELEPORT"]});
        let err = parse(&value).unwrap_err().to_string();
        assert_eq!(
            err,
            "bundle /b/config.json: field \"process.capabilities.bounding\": unknown capability \"CAP_TELEPORT\""
        );
        value["process"]["capabilities"] = json!({"effective": ["CAP_KILL"]});
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"process.capabilities.effective\"") && err.contains("CAP_KILL"), "{err}");
        value["process"]["capabilities"] = json!({"inheritable": ["CAP_KILL"]});
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"process.capabilities.inheritable\""), "{err}");
        value["process"]["capabilities"] = json!({"ambient": "CAP_KILL"});
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("not an OCI runtime config"), "{err}");

        let mut value = images_bundle();
        value["linux"]["maskedPaths"] = json!(["/proc/kcore", "proc/keys"]);
        let err = parse(&value).unwrap_err().to_string();
        assert_eq!(err, "bundle /b/config.json: field \"linux.maskedPaths\": \"proc/keys\" is not an absolute path");
        let mut value = images_bundle();
        value["linux"]["readonlyPaths"] = json!([1]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("not an OCI runtime config"), "{err}");
    }

    #[test]
    fn memory_limit_and_user_are_read() {
        let mut value = images_bundle();
        value["linux"]["resources"] = json!({"memory": {"limit": 33554432}});
        value["process"]["user"] = json!({"uid": 1000, "gid": 100});
        let bundle = parse(&value).unwrap();
        assert_eq!(bundle.memory_limit, Some(32 << 20));
        assert_eq!((bundle.user.uid, bundle.user.gid), (1000, 100));
        value["linux"]["resources"]["memory"]["limit"] = json!(-1);
        assert!(parse(&value).unwrap_err().to_string().contains("\"linux.resources.memory.limit\""));
    }

    fn runc_spec(rootless: bool) -> Value {
        let text = if rootless { RUNC_SPEC_ROOTLESS } else { RUNC_SPEC };
        let mut value: Value = serde_json::from_str(text).unwrap();
        value["process"]["terminal"] = json!(false);
        value["process"]["args"] = json!(["/boxbench/workloads/hello"]);
        value
    }

    /// What `runc spec` (1.1.5) writes, and with `--rootless`.
    const RUNC_SPEC: &str = include_str!("../tests/data/runc-spec.json");
    const RUNC_SPEC_ROOTLESS: &str = include_str!("../tests/data/runc-spec-rootless.json");

    #[test]
    fn what_runc_spec_writes_is_read_whole() {
        let bundle = parse(&runc_spec(false)).unwrap();
        assert_eq!(
            bundle.rlimits,
            [Rlimit { name: "RLIMIT_NOFILE", resource: libc::RLIMIT_NOFILE, soft: 1024, hard: 1024 }]
        );
        assert_eq!(bundle.capabilities, CapabilitySets::oci_default());
        let kinds: Vec<MountKind> = bundle.mounts.iter().map(|m| m.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                MountKind::Proc,
                MountKind::Tmpfs,
                MountKind::Devpts,
                MountKind::Tmpfs,
                MountKind::Mqueue,
                MountKind::Sysfs,
                MountKind::Cgroup
            ]
        );
        assert_eq!(bundle.mounts[2].data.as_deref(), Some("newinstance,ptmxmode=0666,mode=0620,gid=5"));
        assert_eq!(bundle.namespaces, NamespaceSet::all());
        assert!(bundle.id_mappings.is_none() && bundle.seccomp.is_empty() && bundle.limits.is_empty());
        assert_eq!(bundle.hostname.as_deref(), Some("runc"));
    }

    #[test]
    fn what_runc_spec_rootless_writes_is_read_whole() {
        let bundle = parse(&runc_spec(true)).unwrap();
        assert!(bundle.namespaces.contains(Namespace::User));
        assert!(!bundle.namespaces.contains(Namespace::Network));
        let maps = bundle.id_mappings.unwrap();
        assert_eq!(maps.uids, [IdMap { container_id: 0, host_id: 0, size: 1 }]);
        assert_eq!(maps.gids, maps.uids);
        assert_eq!(bundle.mounts[5].kind, MountKind::Bind { source: "/sys".into(), recursive: true });
    }

    #[test]
    fn rootless_settings_without_a_user_namespace_and_the_reverse_are_named() {
        let mut value = runc_spec(true);
        value["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"linux.uidMappings\": needs a user namespace"), "{err}");
        let mut value = runc_spec(true);
        value["linux"].as_object_mut().unwrap().remove("gidMappings");
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"linux.gidMappings\""), "{err}");
        let mut value = runc_spec(true);
        value["process"]["user"] = json!({"uid": 1000, "gid": 0});
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"process.user\"") && err.contains("uid 1000"), "{err}");
    }

    #[test]
    fn resources_seccomp_groups_and_rlimits_are_read() {
        let mut value = runc_spec(false);
        value["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [5, 100]});
        value["process"]["rlimits"] = json!([{"type": "RLIMIT_FSIZE", "soft": 1024, "hard": 4096}]);
        value["linux"]["resources"]["cpu"] = json!({"shares": 512, "quota": 20000, "period": 100000});
        value["linux"]["resources"]["pids"] = json!({"limit": 8});
        value["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        });
        let bundle = parse(&value).unwrap();
        assert_eq!(bundle.user.additional_gids, [5, 100]);
        assert_eq!(bundle.rlimits[0].name, "RLIMIT_FSIZE");
        assert_eq!(bundle.limits.pids, Some(8));
        assert_eq!(bundle.limits.cpu.quota, Some(20000));
        assert_eq!(bundle.seccomp.len(), 1);

        value["process"]["rlimits"] = json!([{"type": "RLIMIT_FSIZE", "soft": 4097, "hard": 4096}]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"process.rlimits[0]\"") && err.contains("soft 4097 above hard 4096"), "{err}");
        value["process"]["rlimits"] = json!([]);
        value["linux"]["seccomp"]["syscalls"][0]["names"][1] = json!("mkdir_now");
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"linux.seccomp.syscalls[0].names[1]\"") && err.contains("mkdir_now"), "{err}");
    }

    #[test]
    fn only_the_deny_all_device_rule_is_honoured_and_only_without_cap_mknod() {
        let mut value = runc_spec(false);
        value["linux"]["resources"]["devices"] =
            json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"linux.resources.devices[0]\""), "{err}");
        let mut value = runc_spec(false);
        value["process"]["capabilities"]["bounding"] = json!(["CAP_MKNOD"]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"linux.resources.devices[0]\"") && err.contains("CAP_MKNOD"), "{err}");
    }

    #[test]
    fn unreadable_and_non_json_configs_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with(&format!("bundle {}/config.json: ", dir.path().display())), "{err}");
        std::fs::write(dir.path().join(CONFIG_FILE), "{not json").unwrap();
        let err = Bundle::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json: not valid JSON"), "{err}");
    }
}
