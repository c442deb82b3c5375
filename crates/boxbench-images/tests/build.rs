//! Real builds into temporary output directories, from the checked-in recipes and Debian's
//! busybox-static (downloaded once into a cache shared by these tests).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use boxbench_images::{BuiltImages, ImageBuilder, NoProgress, StepState, artefact};
use boxbench_testkit::require;

/// The workspace's recipe directory.
fn recipes() -> PathBuf {
    ImageBuilder::default_dirs().recipes_dir().to_owned()
}

/// A builder into `out`, sharing the test cache of downloaded packages.
fn builder(out: &Path) -> ImageBuilder {
    ImageBuilder::new(out.to_owned(), recipes())
        .with_cache_dir(Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-cache"))
}

/// This host has what fetching busybox-static takes, or why not.
fn apt_available() -> Result<(), String> {
    match ["apt-get", "dpkg"].into_iter().find(|tool| which(tool).is_none()) {
        Some(tool) => Err(format!("{tool} is not installed: apt-get and dpkg are needed to fetch busybox-static")),
        None => Ok(()),
    }
}

/// Builds into a fresh temporary directory, or says why this host cannot.
fn build_fresh() -> Result<(tempfile::TempDir, BuiltImages), String> {
    apt_available()?;
    let out = tempfile::tempdir().unwrap();
    let built = builder(out.path()).build(&NoProgress).unwrap();
    Ok((out, built))
}

/// One build shared by the tests that only read artefacts, kept (and reused, as a cache hit) in the
/// target directory; or why this host cannot build it (each test skips with that reason).
fn shared_build() -> Result<&'static BuiltImages, String> {
    static SHARED: OnceLock<Result<BuiltImages, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            apt_available()?;
            Ok(builder(&shared_out()).build(&NoProgress).unwrap())
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn shared_out() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-out")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

#[test]
fn rootfs_has_busybox_applets_workloads_and_mount_points() {
    let built = require!(shared_build());
    let rootfs = &built.rootfs;
    let busybox = fs::metadata(rootfs.join("bin/busybox")).unwrap();
    assert!(busybox.len() > 500_000, "busybox is {} bytes", busybox.len());
    assert_eq!(busybox.permissions().mode() & 0o777, 0o755);
    for applet in ["bin/sh", "bin/mount", "bin/sleep", "bin/uname", "sbin/reboot"] {
        assert_eq!(fs::read_link(rootfs.join(applet)).unwrap(), Path::new("/bin/busybox"), "{applet}");
    }
    for script in boxbench_images::rootfs::REQUIRED_RECIPES {
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
    let built = require!(shared_build());
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
    let built = require!(shared_build());
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
    let (out, first) = require!(build_fresh());
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
    let (out, _) = require!(build_fresh());
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

#[test]
fn failed_rootfs_assembly_names_the_file_and_leaves_no_staging_behind() {
    require!(apt_available());
    let out = tempfile::tempdir().unwrap();
    let broken = tempfile::tempdir().unwrap();
    for file in walk(&recipes()) {
        let rel = file.strip_prefix(recipes()).unwrap();
        fs::create_dir_all(broken.path().join(rel).parent().unwrap()).unwrap();
        fs::copy(&file, broken.path().join(rel)).unwrap();
    }
    // A recipe file where the rootfs has its /usr directory.
    fs::write(broken.path().join("usr"), "not a directory\n").unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-cache");
    let err = ImageBuilder::new(out.path().to_owned(), broken.path().to_owned())
        .with_cache_dir(cache)
        .build(&NoProgress)
        .unwrap_err();
    assert!(err.to_string().starts_with("recipe ") && err.to_string().contains("/usr cannot be installed"), "{err}");
    assert!(!out.path().join(".work").exists(), "staging directory left behind");
    assert!(!out.path().join("bundle/rootfs").exists());
    assert!(!out.path().join(".stamps").join(artefact::ROOTFS).exists());
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

#[test]
fn initramfs_lists_the_rootfs_plus_a_console_node_and_matches_its_gzip() {
    let built = require!(shared_build());
    let cpio = fs::read(&built.initramfs_cpio).unwrap();
    let mut gunzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(fs::File::open(&built.initramfs_gz).unwrap()),
        &mut gunzipped,
    )
    .unwrap();
    assert_eq!(gunzipped, cpio, "initramfs.cpio.gz is the gzip of initramfs.cpio");
    assert!(cpio.starts_with(b"070701"));
    require!(which("cpio").is_some(), "the cpio listing: cpio is not installed (Debian package cpio)");
    let listing = command_output("cpio", &["-itv", "-F", built.initramfs_cpio.to_str().unwrap()]);
    // `cpio -tv` lines end with the name, then ` -> TARGET` for a symlink.
    let names: Vec<&str> = listing.lines().filter_map(|l| l.split(" -> ").next()?.split_whitespace().last()).collect();
    for name in ["init", "bin/busybox", "bin/sh", "boxbench/workloads/hello", "etc/passwd", "dev", "dev/console", "tmp"]
    {
        assert!(names.contains(&name), "{name} missing from the initramfs: {names:?}");
    }
    let console = listing.lines().find(|l| l.ends_with(" dev/console")).unwrap();
    assert!(console.starts_with("crw-------"), "{console}");
    // Every rootfs entry is in the archive, plus dev/console.
    let rootfs_entries = walk_all(&built.rootfs).len();
    assert_eq!(names.len(), rootfs_entries + 1);
}

#[test]
fn two_builds_give_identical_archives_and_digests() {
    let (first_out, first) = require!(build_fresh());
    let (_second_out, second) = require!(build_fresh());
    assert_ne!(first_out.path(), _second_out.path());
    for (a, b) in [
        (&first.initramfs_cpio, &second.initramfs_cpio),
        (&first.initramfs_gz, &second.initramfs_gz),
        (&first.rootfs_tar, &second.rootfs_tar),
        (&first.oci_layout.join("index.json"), &second.oci_layout.join("index.json")),
    ] {
        assert!(fs::read(a).unwrap() == fs::read(b).unwrap(), "{} differs from {}", a.display(), b.display());
    }
}

#[test]
fn oci_layout_blobs_match_their_digests_and_the_manifest() {
    let built = require!(shared_build());
    let layout = &built.oci_layout;
    let oci_layout: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index = oci_spec::image::ImageIndex::from_file(layout.join("index.json")).unwrap();
    assert_eq!(index.manifests().len(), 1);
    let blob = |descriptor: &oci_spec::image::Descriptor| -> Vec<u8> {
        let hex = descriptor.digest().digest();
        let bytes = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
        assert_eq!(sha256_hex(&bytes), hex, "blob content matches its name");
        assert_eq!(bytes.len() as u64, descriptor.size(), "descriptor size of {hex}");
        bytes
    };
    let manifest: oci_spec::image::ImageManifest = serde_json::from_slice(&blob(&index.manifests()[0])).unwrap();
    let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&blob(manifest.config())).unwrap();
    assert_eq!(manifest.layers().len(), 1);
    let layer = blob(&manifest.layers()[0]);
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(layer.as_slice()), &mut tar).unwrap();
    assert_eq!(tar, fs::read(&built.rootfs_tar).unwrap(), "the layer is the gzip of rootfs.tar");
    assert_eq!(config.rootfs().diff_ids(), &vec![format!("sha256:{}", sha256_hex(&tar))]);
    let run = config.config().as_ref().unwrap();
    assert_eq!(run.cmd().as_ref().unwrap(), &vec!["/boxbench/workloads/hello".to_owned()]);
    assert_eq!(run.env().as_ref().unwrap(), &vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()]);
    // Nothing but the three blobs: stale blobs of earlier builds do not accumulate.
    assert_eq!(fs::read_dir(layout.join("blobs/sha256")).unwrap().count(), 3);
}

#[test]
fn rootfs_tar_holds_every_rootfs_entry_owned_by_root_at_time_zero() {
    let built = require!(shared_build());
    let mut archive = tar::Archive::new(fs::File::open(&built.rootfs_tar).unwrap());
    let mut paths = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        assert_eq!((header.mtime().unwrap(), header.uid().unwrap(), header.gid().unwrap()), (0, 0, 0));
        paths.push(entry.path().unwrap().into_owned());
    }
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
    assert_eq!(paths, sorted, "entries in byte order");
    assert_eq!(paths.len(), walk_all(&built.rootfs).len());
    assert!(paths.contains(&PathBuf::from("boxbench/workloads/idle")));
}

#[test]
fn sizes_are_measured_for_every_built_artefact() {
    let built = require!(shared_build());
    let sizes = builder(&shared_out()).sizes().unwrap();
    let names: Vec<&str> = sizes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [artefact::ROOTFS, artefact::INITRAMFS, artefact::OCI_IMAGE]);
    for size in &sizes {
        assert!(size.compressed_bytes > 0, "{size:?}");
        assert!(size.compressed_bytes < size.uncompressed_bytes, "{size:?}");
    }
    assert_eq!(sizes[1].uncompressed_bytes, fs::metadata(&built.initramfs_cpio).unwrap().len());
    assert_eq!(sizes[2].uncompressed_bytes, fs::metadata(&built.rootfs_tar).unwrap().len());
    let busybox = fs::metadata(built.rootfs.join("bin/busybox")).unwrap().len();
    assert!(sizes[0].uncompressed_bytes > busybox, "{:?}", sizes[0]);
    let json = serde_json::to_value(&sizes).unwrap();
    assert_eq!(json[0]["name"], "rootfs");
    assert!(json[0]["compressed_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn sizes_of_an_unbuilt_directory_name_the_missing_artefact() {
    let out = tempfile::tempdir().unwrap();
    let err = builder(out.path()).sizes().unwrap_err();
    assert!(err.to_string().contains("bundle/rootfs"), "{err}");
}

#[test]
fn concurrent_builds_into_one_directory_both_succeed() {
    require!(apt_available());
    let out = tempfile::tempdir().unwrap();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..2).map(|_| scope.spawn(|| builder(out.path()).build(&NoProgress).map_err(|e| e.to_string()))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results[0].as_ref().unwrap(), results[1].as_ref().unwrap());
    // Nothing left behind but the artefacts, their stamps, the lock and the cache.
    let mut left: Vec<String> =
        fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, [".lock", ".stamps", "bundle", "initramfs.cpio", "initramfs.cpio.gz", "oci", "rootfs.tar"]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn command_output(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Every entry (file, directory, symlink) under `dir`, not following symlinks.
fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        entries.push(path.clone());
        if path.is_dir() && !path.is_symlink() {
            entries.extend(walk_all(&path));
        }
    }
    entries
}
