//! OCI runtime bundles: the subset of `config.json` boxbench's container runs, read against an
//! allow-list so that a setting it would silently ignore (seccomp, rlimits, a user namespace...)
//! is an error naming the field instead.
//!
//! Supported: `ociVersion`; `process` {`terminal`: false only, `user` {`uid`, `gid`}, `args`, `env`,
//! `cwd`, `noNewPrivileges`, `capabilities` {`bounding`, `effective`, `permitted`, `inheritable`,
//! `ambient`}}; `root` {`path`, `readonly`}; `hostname`; `mounts` of type proc, tmpfs, sysfs and
//! bind; `linux` {`namespaces` (pid, network, ipc, uts, mount, none joined by `path`),
//! `resources.memory.limit`, `maskedPaths`, `readonlyPaths`}.
//!
//! Where a bundle leaves the workload's isolation out, it gets OCI's defaults, the settings
//! `crun spec` writes: `noNewPrivileges` true, the capabilities of
//! [`CapabilitySets::oci_default`], and [`DEFAULT_MASKED_PATHS`] and [`DEFAULT_READONLY_PATHS`].
//! A set missing from a `capabilities` object that is there is empty, and an empty path list
//! protects nothing, as OCI reads them.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::capabilities::{self, CapabilityError, CapabilitySets};
use crate::namespaces::{Namespace, NamespaceSet};
use crate::rootfs::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS, MountSpec};

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
    /// A field boxbench does not support.
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

/// What a bundle asks for, within the supported subset.
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
    /// `process.cwd` (`/` if absent).
    pub cwd: String,
    /// `process.user.uid`.
    pub uid: u32,
    /// `process.user.gid`.
    pub gid: u32,
    /// `process.noNewPrivileges` (true if absent).
    pub no_new_privileges: bool,
    /// `process.capabilities` (OCI's default if absent).
    pub capabilities: CapabilitySets,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `mounts`, in order.
    pub mounts: Vec<MountSpec>,
    /// `linux.namespaces` (all five if absent).
    pub namespaces: NamespaceSet,
    /// `linux.resources.memory.limit`.
    pub memory_limit: Option<u64>,
    /// `linux.maskedPaths` (OCI's default list if absent).
    pub masked_paths: Vec<String>,
    /// `linux.readonlyPaths` (OCI's default list if absent).
    pub readonly_paths: Vec<String>,
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
        let top = Obj::new(path, String::new(), value)?;
        top.allow(&["ociVersion", "process", "root", "hostname", "mounts", "linux"])?;
        top.string("ociVersion")?;

        let process = top.object("process")?.ok_or_else(|| top.missing("process"))?;
        process.allow(&["terminal", "user", "args", "env", "cwd", "noNewPrivileges", "capabilities"])?;
        if process.boolean("terminal")? == Some(true) {
            return Err(process.value_error("terminal", "only false is supported (the console is a pipe)"));
        }
        let (uid, gid) = match process.object("user")? {
            Some(user) => {
                user.allow(&["uid", "gid"])?;
                (user.id("uid")?.unwrap_or(0), user.id("gid")?.unwrap_or(0))
            }
            None => (0, 0),
        };
        let args = process.strings("args")?.ok_or_else(|| process.missing("args"))?;
        if args.is_empty() {
            return Err(process.value_error("args", "must not be empty"));
        }
        let env = process.strings("env")?.unwrap_or_default();
        let cwd = process.string("cwd")?.unwrap_or_else(|| "/".to_owned());
        if !cwd.starts_with('/') {
            return Err(process.value_error("cwd", "must be an absolute path"));
        }
        let no_new_privileges = process.boolean("noNewPrivileges")?.unwrap_or(true);
        let capabilities = match process.object("capabilities")? {
            Some(caps) => capability_sets(&caps)?,
            None => CapabilitySets::oci_default(),
        };

        let root = top.object("root")?.ok_or_else(|| top.missing("root"))?;
        root.allow(&["path", "readonly"])?;
        let root_path = PathBuf::from(root.string("path")?.ok_or_else(|| root.missing("path"))?);
        let readonly = root.boolean("readonly")?.unwrap_or(false);

        let hostname = top.string("hostname")?;

        let mut mounts = Vec::new();
        for (index, entry) in top.array("mounts")?.unwrap_or_default().iter().enumerate() {
            let mount = Obj::new(path, format!("mounts[{index}]"), entry)?;
            mount.allow(&["destination", "type", "source", "options"])?;
            let destination = mount.string("destination")?.ok_or_else(|| mount.missing("destination"))?;
            let fstype = mount.string("type")?.unwrap_or_else(|| "none".to_owned());
            let source = mount.string("source")?.map(|s| dir.join(s));
            let options = mount.strings("options")?.unwrap_or_default();
            let spec = MountSpec::parse(&destination, &fstype, source.as_deref(), &options).map_err(|e| {
                BundleError::Value { path: path.to_owned(), field: mount.field.clone(), reason: e.to_string() }
            })?;
            mounts.push(spec);
        }

        let defaults = |paths: &[&str]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let (namespaces, memory_limit, masked_paths, readonly_paths) = match top.object("linux")? {
            Some(linux) => {
                linux.allow(&["namespaces", "resources", "maskedPaths", "readonlyPaths"])?;
                (
                    linux_namespaces(&linux)?,
                    linux_memory_limit(&linux)?,
                    absolute_paths(&linux, "maskedPaths")?.unwrap_or_else(|| defaults(&DEFAULT_MASKED_PATHS)),
                    absolute_paths(&linux, "readonlyPaths")?.unwrap_or_else(|| defaults(&DEFAULT_READONLY_PATHS)),
                )
            }
            None => (NamespaceSet::all(), None, defaults(&DEFAULT_MASKED_PATHS), defaults(&DEFAULT_READONLY_PATHS)),
        };
        if hostname.is_some() {
            namespaces.check_hostname().map_err(|e| top.value_error("hostname", &e.to_string()))?;
        }

        Ok(Self {
            config: path.to_owned(),
            root: dir.join(root_path),
            readonly,
            args,
            env,
            cwd,
            uid,
            gid,
            no_new_privileges,
            capabilities,
            hostname,
            mounts,
            namespaces,
            memory_limit,
            masked_paths,
            readonly_paths,
        })
    }
}

/// `process.capabilities`: each set's names, a set that is not there being empty.
fn capability_sets(caps: &Obj<'_>) -> Result<CapabilitySets, BundleError> {
    const SETS: [&str; 5] = ["bounding", "effective", "permitted", "inheritable", "ambient"];
    caps.allow(&SETS)?;
    let mut masks = [0u64; 5];
    for (mask, set) in masks.iter_mut().zip(SETS) {
        let names = caps.strings(set)?.unwrap_or_default();
        *mask = capabilities::mask_of(&names).map_err(|e| caps.value_error(set, &e.to_string()))?;
    }
    let [bounding, effective, permitted, inheritable, ambient] = masks;
    CapabilitySets::new(bounding, effective, permitted, inheritable, ambient).map_err(|e| match e {
        CapabilityError::EffectiveNotPermitted(_) => caps.value_error("effective", &e.to_string()),
        CapabilityError::InheritableNotBounding(_) => caps.value_error("inheritable", &e.to_string()),
        CapabilityError::Unknown(_) => {
            BundleError::Value { path: caps.config.to_owned(), field: caps.field.clone(), reason: e.to_string() }
        }
    })
}

/// A list of absolute paths inside the container at `linux.<key>`, if the bundle has it.
fn absolute_paths(linux: &Obj<'_>, key: &str) -> Result<Option<Vec<String>>, BundleError> {
    let Some(paths) = linux.strings(key)? else { return Ok(None) };
    if let Some(relative) = paths.iter().find(|path| !path.starts_with('/')) {
        return Err(linux.value_error(key, &format!("{relative:?} is not an absolute path")));
    }
    Ok(Some(paths))
}

fn linux_namespaces(linux: &Obj<'_>) -> Result<NamespaceSet, BundleError> {
    let Some(entries) = linux.array("namespaces")? else {
        return Ok(NamespaceSet::all());
    };
    let mut kinds = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let ns = Obj::new(linux.config, format!("{}.namespaces[{index}]", linux.field), entry)?;
        ns.allow(&["type"])?;
        let kind = ns.string("type")?.ok_or_else(|| ns.missing("type"))?;
        kinds.push(Namespace::from_oci(&kind).map_err(|e| ns.value_error("type", &e.to_string()))?);
    }
    NamespaceSet::new(kinds).map_err(|e| linux.value_error("namespaces", &e.to_string()))
}

fn linux_memory_limit(linux: &Obj<'_>) -> Result<Option<u64>, BundleError> {
    let Some(resources) = linux.object("resources")? else { return Ok(None) };
    resources.allow(&["memory"])?;
    let Some(memory) = resources.object("memory")? else { return Ok(None) };
    memory.allow(&["limit"])?;
    match memory.get("limit") {
        None => Ok(None),
        Some(value) => match value.as_u64() {
            Some(bytes) if bytes > 0 => Ok(Some(bytes)),
            _ => Err(memory.invalid("limit", "a positive number of bytes")),
        },
    }
}

/// A JSON object of the config at a dotted field path, read against an allow-list.
#[derive(Debug)]
struct Obj<'a> {
    config: &'a Path,
    field: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn new(config: &'a Path, field: String, value: &'a Value) -> Result<Self, BundleError> {
        match value {
            Value::Object(map) => Ok(Self { config, field, map }),
            _ if field.is_empty() => Err(BundleError::Invalid {
                path: config.to_owned(),
                field: "(top level)".to_owned(),
                expected: "an object",
            }),
            _ => Err(BundleError::Invalid { path: config.to_owned(), field, expected: "an object" }),
        }
    }

    fn child(&self, key: &str) -> String {
        if self.field.is_empty() { key.to_owned() } else { format!("{}.{key}", self.field) }
    }

    /// Refuses the first key not in `allowed`.
    fn allow(&self, allowed: &[&str]) -> Result<(), BundleError> {
        match self.map.keys().find(|key| !allowed.contains(&key.as_str())) {
            Some(key) => Err(BundleError::Unsupported { path: self.config.to_owned(), field: self.child(key) }),
            None => Ok(()),
        }
    }

    /// The value at `key`; JSON `null` counts as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn invalid(&self, key: &str, expected: &'static str) -> BundleError {
        BundleError::Invalid { path: self.config.to_owned(), field: self.child(key), expected }
    }

    fn missing(&self, key: &str) -> BundleError {
        BundleError::Missing { path: self.config.to_owned(), field: self.child(key) }
    }

    fn value_error(&self, key: &str, reason: &str) -> BundleError {
        BundleError::Value { path: self.config.to_owned(), field: self.child(key), reason: reason.to_owned() }
    }

    fn string(&self, key: &str) -> Result<Option<String>, BundleError> {
        self.get(key).map(|v| v.as_str().map(str::to_owned).ok_or_else(|| self.invalid(key, "a string"))).transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, BundleError> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| self.invalid(key, "true or false"))).transpose()
    }

    fn id(&self, key: &str) -> Result<Option<u32>, BundleError> {
        self.get(key)
            .map(|v| {
                v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or_else(|| self.invalid(key, "a 32-bit unsigned id"))
            })
            .transpose()
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, BundleError> {
        self.get(key)
            .map(|v| {
                v.as_array()
                    .and_then(|items| items.iter().map(|i| i.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| self.invalid(key, "an array of strings"))
            })
            .transpose()
    }

    fn array(&self, key: &str) -> Result<Option<Vec<Value>>, BundleError> {
        self.get(key).map(|v| v.as_array().cloned().ok_or_else(|| self.invalid(key, "an array"))).transpose()
    }

    fn object(&self, key: &str) -> Result<Option<Obj<'a>>, BundleError> {
        self.get(key).map(|v| Obj::new(self.config, self.child(key), v)).transpose()
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
        value["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"});
        let err = parse(&value).unwrap_err();
        assert_eq!(err.to_string(), "bundle /b/config.json: unsupported field \"linux.seccomp\"");

        let mut value = images_bundle();
        value["process"]["capabilities"] = json!({"bounding": [], "permitted": [], "extra": []});
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"process.capabilities.extra\""));

        let mut value = images_bundle();
        value["process"]["rlimits"] = json!([]);
        assert!(parse(&value).unwrap_err().to_string().ends_with("\"process.rlimits\""));

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
        value["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "user"}]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.contains("\"linux.namespaces[1].type\"") && err.contains("\"user\""), "{err}");

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
        assert!(err.ends_with("field \"process.args\" must be an array of strings"), "{err}");
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
        assert!(err.ends_with("field \"process.capabilities.ambient\" must be an array of strings"), "{err}");

        let mut value = images_bundle();
        value["linux"]["maskedPaths"] = json!(["/proc/kcore", "proc/keys"]);
        let err = parse(&value).unwrap_err().to_string();
        assert_eq!(err, "bundle /b/config.json: field \"linux.maskedPaths\": \"proc/keys\" is not an absolute path");
        let mut value = images_bundle();
        value["linux"]["readonlyPaths"] = json!([1]);
        let err = parse(&value).unwrap_err().to_string();
        assert!(err.ends_with("field \"linux.readonlyPaths\" must be an array of strings"), "{err}");
    }

    #[test]
    fn memory_limit_and_user_are_read() {
        let mut value = images_bundle();
        value["linux"]["resources"] = json!({"memory": {"limit": 33554432}});
        value["process"]["user"] = json!({"uid": 1000, "gid": 100});
        let bundle = parse(&value).unwrap();
        assert_eq!(bundle.memory_limit, Some(32 << 20));
        assert_eq!((bundle.uid, bundle.gid), (1000, 100));
        value["linux"]["resources"]["memory"]["limit"] = json!(-1);
        assert!(parse(&value).unwrap_err().to_string().contains("\"linux.resources.memory.limit\""));
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
