//! Real builds into temporary output directories, from the checked-in recipes and Debian's
//! busybox-static (downloaded once into a cache shared by these tests).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use boxbench_images::{BuiltImages, ImageBuilder, NoProgress, StepState, artefact};

/// The workspace's recipe directory.
fn recipes() -> PathBuf {
    ImageBuilder::default_dirs().recipes_dir().to_owned()
}

/// A builder into `out`, sharing the test cache of downloaded packages.
fn builder(out: &Path) -> ImageBuilder {
    ImageBuilder::new(out.to_owned(), recipes()).with_cache_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-cache"))
}

/// Builds into a fresh temporary directory, or `None` (after saying why) when this host has no apt.
fn build_fresh() -> Option<(tempfile::TempDir, BuiltImages)> {
    if which("apt-get").is_none() || which("dpkg").is_none() {
        eprintln!("skipping: apt-get and dpkg are needed to fetch busybox-static");
        return None;
    }
    let out = tempfile::tempdir().unwrap();
    let built = builder(out.path()).build(&NoProgress).unwrap();
    Some((out, built))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

#[test]
fn rootfs_has_busybox_applets_workloads_and_mount_points() {
    let Some((_out, built)) = build_fresh() else { return };
    let rootfs = &built.rootfs;
    let busybox = fs::metadata(rootfs.join("bin/busybox")).unwrap();
    assert!(busybox.len() > 500_000, "busybox is {} bytes", busybox.len());
    assert_eq!(busybox.permissions().mode() & 0o777, 0o755);
    for applet in ["bin/sh", "bin/mount", "bin/sleep", "bin/uname", "sbin/reboot"] {
        assert_eq!(fs::read_link(rootfs.join(applet)).unwrap(), Path::new("/bin/busybox"), "{applet}");
    }
    for script in ["init", "boxbench/workloads/hello", "boxbench/workloads/idle", "boxbench/workloads/uname"] {
        let meta = fs::metadata(rootfs.join(script)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{script}");
        assert!(fs::read_to_string(rootfs.join(script)).unwrap().starts_with("#!/bin/sh\n"), "{script}");
    }
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "usr/bin", "usr/sbin", "sbin"] {
        assert!(rootfs.join(dir).is_dir(), "{dir}");
    }
    for mount_point in ["proc", "sys", "dev"] {
        assert_eq!(fs::read_dir(rootfs.join(mount_point)).unwrap().count(), 0, "{mount_point} is not empty");
    }
    assert_eq!(fs::metadata(rootfs.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
    assert!(fs::read_to_string(rootfs.join("etc/passwd")).unwrap().starts_with("root:x:0:0:"));
    assert_eq!(fs::read_to_string(rootfs.join("etc/hostname")).unwrap().trim(), "boxbench");
}

#[test]
fn workloads_print_the_marker_when_run_by_the_rootfs_busybox() {
    let Some((_out, built)) = build_fresh() else { return };
    let busybox = built.rootfs.join("bin/busybox");
    for workload in ["hello", "uname"] {
        let script = built.rootfs.join("boxbench/workloads").join(workload);
        let output = std::process::Command::new(&busybox).arg("sh").arg(&script).output().unwrap();
        assert!(output.status.success(), "{workload}: {output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert_eq!(stdout.lines().last(), Some(boxbench_core::READY_MARKER), "{workload}");
        if workload == "uname" {
            let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            assert_eq!(stdout.lines().next(), Some(release.trim()));
        }
    }
}

#[test]
fn bundle_config_has_the_exact_shape_the_launchers_parse() {
    let Some((_out, built)) = build_fresh() else { return };
    let text = fs::read_to_string(built.bundle.join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&text).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        r#"{"ociVersion":"1.0.2","process":{"terminal":false,"user":{"uid":0,"gid":0},
        "args":["/boxbench/workloads/hello"],"env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin","TERM=xterm"],"cwd":"/"},
        "root":{"path":"rootfs","readonly":true},"hostname":"boxbench","mounts":[{"destination":"/proc","type":"proc",
        "source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime",
        "mode=755","size=65536k"]},{"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec",
        "nodev","ro"]}],"linux":{"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},
        {"type":"mount"}]}}"#,
    )
    .unwrap();
    assert_eq!(config, expected);
    assert_eq!(built.rootfs, built.bundle.join("rootfs"));
    let paths = built.image_paths();
    assert_eq!(paths.bundle.as_deref(), Some(built.bundle.as_path()));
    assert_eq!(paths.rootfs.as_deref(), Some(built.rootfs.as_path()));
}

#[test]
fn second_build_reuses_every_artefact() {
    let Some((out, first)) = build_fresh() else { return };
    let steps = Mutex::new(Vec::new());
    let record = |artefact: &str, state: StepState| steps.lock().unwrap().push((artefact.to_owned(), state));
    let second = builder(out.path()).build(&record).unwrap();
    assert_eq!(first, second);
    let steps = steps.into_inner().unwrap();
    assert!(steps.contains(&(artefact::ROOTFS.to_owned(), StepState::UpToDate)), "{steps:?}");
    assert!(!steps.iter().any(|(_, s)| *s == StepState::Building), "{steps:?}");
}

#[test]
fn changed_recipe_rebuilds_the_rootfs() {
    let Some((out, _)) = build_fresh() else { return };
    let changed = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        for entry in walk(from) {
            let rel = entry.strip_prefix(from).unwrap();
            fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
            fs::copy(&entry, to.join(rel)).unwrap();
        }
    };
    copy(&recipes(), changed.path());
    fs::write(changed.path().join("etc/hostname"), "changed\n").unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-cache");
    let built = ImageBuilder::new(out.path().to_owned(), changed.path().to_owned())
        .with_cache_dir(cache)
        .build(&NoProgress)
        .unwrap();
    assert_eq!(fs::read_to_string(built.rootfs.join("etc/hostname")).unwrap(), "changed\n");
}

#[test]
fn missing_recipe_is_named_and_nothing_is_built() {
    let out = tempfile::tempdir().unwrap();
    let recipes = tempfile::tempdir().unwrap();
    let err = ImageBuilder::new(out.path().join("out"), recipes.path().to_owned()).build(&NoProgress).unwrap_err();
    assert!(err.to_string().contains("init"), "{err}");
    assert!(!out.path().join("out").exists());
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}
