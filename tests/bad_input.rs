//! Every bad input through the real binary: a non-zero exit, one line naming the file or setting, and
//! nothing left on the host. Bad files (kernel, initrd, rootfs, bundle), bad settings, and a user who
//! is not root.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");
/// The unprivileged user and group the not-root rows run as (nobody, nogroup).
const NOBODY: u32 = 65534;

/// Who runs boxbench for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// This test's user, root.
    Root,
    /// An unprivileged user with no supplementary group.
    Nobody,
    /// An unprivileged user in the group `gid` (the group /dev/kvm is opened by).
    NobodyInGroup(u32),
}

/// One bad input: the arguments and what the first line of stderr must contain.
struct Row {
    name: &'static str,
    args: Vec<String>,
    /// Every one of these is in the first line of stderr.
    expect: Vec<String>,
    /// A clap error: its first line is checked, the usage lines after it are clap's.
    clap: bool,
    run_as: RunAs,
}

fn row(name: &'static str, args: &[&str], expect: &str) -> Row {
    Row {
        name,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        expect: vec![expect.to_owned()],
        clap: false,
        run_as: RunAs::Root,
    }
}

fn clap_row(name: &'static str, args: &[&str], expect: &str) -> Row {
    Row { clap: true, ..row(name, args, expect) }
}

/// A newc cpio archive of regular files with its `TRAILER!!!` entry: the initramfs format.
fn newc(files: &[(&str, &[u8])]) -> Vec<u8> {
    let files: Vec<(&str, u32, &[u8])> = files.iter().map(|&(name, data)| (name, 0o755, data)).collect();
    boxbench_images::cpio::archive_of_files(&files).unwrap()
}

/// The path of `program` on `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|p| p.is_file())
}

/// True when a user that is neither the owner nor in the group may run `path` (every directory above
/// it searchable by others, the file executable by others).
fn others_may_execute(path: &Path) -> bool {
    path.ancestors()
        .all(|p| p.as_os_str().is_empty() || fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// The rows that run boxbench as an unprivileged user, with what it must say there: root is needed
/// for containers; the micro-VM needs /dev/kvm, and beyond it (in /dev/kvm's group) its cgroup.
fn not_root_rows(docker_host: &str) -> Vec<Row> {
    if on_path("setpriv").is_none() {
        boxbench_testkit::skip("the not-root rows: no setpriv on PATH (Debian package util-linux)");
        return Vec::new();
    }
    if !others_may_execute(Path::new(BOXBENCH)) {
        boxbench_testkit::skip(format_args!("the not-root rows: an unprivileged user cannot execute {BOXBENCH}"));
        return Vec::new();
    }
    let as_user = |name, args: &[&str], expect: &[&str], run_as| Row {
        run_as,
        expect: expect.iter().map(|s| (*s).to_owned()).collect(),
        ..row(name, args, "")
    };
    let mut rows = vec![as_user(
        "container not as root",
        &["run", "-b", "container"],
        &[&format!("the container backend needs root (running as uid {NOBODY})")],
        RunAs::Nobody,
    )];
    let socket = docker_host.trim_start_matches("unix://");
    rows.push(as_user(
        "no permission on the docker socket",
        &["run", "-b", "docker", "--docker-host", docker_host],
        &[&format!("no Docker daemon answers at {docker_host} (docker socket {socket}: Permission denied")],
        RunAs::Nobody,
    ));
    let microvm = ["run", "-b", "microvm", "--guest", "boxbench"];
    let cgroup_refused: &[&str] = &["microvm launch: /sys/fs/cgroup/", "Permission denied"];
    match fs::metadata("/dev/kvm") {
        Err(e) => boxbench_testkit::skip(format_args!("the micro-VM not-root rows: /dev/kvm: {e}")),
        Ok(kvm) => {
            let mode = kvm.permissions().mode();
            let refused: &[&str] =
                if mode & 0o006 == 0o006 { cgroup_refused } else { &["microvm launch: /dev/kvm: permission denied"] };
            rows.push(as_user("micro-VM not as root", &microvm, refused, RunAs::Nobody));
            if mode & 0o060 == 0o060 && kvm.gid() != 0 {
                rows.push(as_user(
                    "micro-VM not as root, in /dev/kvm's group",
                    &microvm,
                    cgroup_refused,
                    RunAs::NobodyInGroup(kvm.gid()),
                ));
            }
        }
    }
    rows
}

/// A deterministic "random" file (xorshift), so a failure reproduces.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn rows(dir: &Path) -> Vec<Row> {
    let p = |name: &str| dir.join(name).display().to_string();
    fs::write(dir.join("empty"), b"").unwrap();
    fs::write(dir.join("text"), b"this is not a kernel\n").unwrap();
    fs::write(dir.join("random"), random_bytes(64 * 1024)).unwrap();
    let bzimage = fs::read(boxbench_guest::bzimage_path()).unwrap();
    fs::write(dir.join("truncated"), &bzimage[..1000]).unwrap();
    fs::write(dir.join("bzImage"), &bzimage).unwrap();
    let mut elf = fs::read(boxbench_guest::elf_path()).unwrap();
    // e_machine (offset 18, little-endian): 183 is AArch64.
    elf[18..20].copy_from_slice(&183u16.to_le_bytes());
    fs::write(dir.join("aarch64.elf"), elf).unwrap();
    let initramfs = newc(&[("init", &random_bytes(4096)), ("etc/hostname", b"box\n")]);
    fs::write(dir.join("initramfs-truncated.cpio"), &initramfs[..2000]).unwrap();
    // The archive up to the end of its first entry's data (a 110-byte header and "init\0" padded to
    // 116 bytes, then 4096 bytes): no TRAILER!!! entry.
    fs::write(dir.join("initramfs-no-trailer.cpio"), &initramfs[..116 + 4096]).unwrap();
    let mut bad_header = initramfs.clone();
    bad_header[6 + 8 * 6..6 + 8 * 7].copy_from_slice(b"12x45678"); // filesize
    fs::write(dir.join("initramfs-bad-header.cpio"), bad_header).unwrap();
    // A 4 MiB initramfs: a valid archive that a 4 MiB guest has no room for beside the kernel.
    fs::write(dir.join("initramfs-4mib.cpio"), newc(&[("init", &random_bytes(4 << 20))])).unwrap();
    fs::create_dir(dir.join("rootfs-without-workload")).unwrap();
    fs::create_dir_all(dir.join("bundle-without-config/rootfs")).unwrap();
    fs::create_dir_all(dir.join("bundle-not-json/rootfs")).unwrap();
    fs::write(dir.join("bundle-not-json/config.json"), b"{not json").unwrap();
    fs::create_dir_all(dir.join("bundle-empty-config/rootfs")).unwrap();
    fs::write(dir.join("bundle-empty-config/config.json"), b"").unwrap();
    fs::create_dir_all(dir.join("bundle-truncated-config/rootfs")).unwrap();
    fs::write(
        dir.join("bundle-truncated-config/config.json"),
        br#"{"ociVersion": "1.0.2", "process": {"args": ["/box"#,
    )
    .unwrap();
    fs::create_dir_all(dir.join("bundle-unsupported/rootfs")).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/boxbench/workloads/hello"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {"sysctl": {"kernel.msgmax": "8192"}}
    });
    fs::write(dir.join("bundle-unsupported/config.json"), config.to_string()).unwrap();
    // What `runc spec --rootless` writes, less its user namespace: the mappings have nowhere to go.
    fs::create_dir_all(dir.join("bundle-rootless-without-userns/rootfs")).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/boxbench/workloads/hello"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "uidMappings": [{"containerID": 0, "hostID": 0, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 0, "size": 1}]
        }
    });
    fs::write(dir.join("bundle-rootless-without-userns/config.json"), config.to_string()).unwrap();
    fs::create_dir_all(dir.join("bundle-unknown-syscall/rootfs")).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/boxbench/workloads/hello"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW",
                              "syscalls": [{"names": ["mkdir", "frobnicate"], "action": "SCMP_ACT_ERRNO"}]}}
    });
    fs::write(dir.join("bundle-unknown-syscall/config.json"), config.to_string()).unwrap();

    // boxbench's own guest, whatever the host's default: nothing to build before the file is checked.
    let vm = |flag: &str, file: &str| {
        ["run", "-b", "microvm", "--guest", "boxbench", flag].into_iter().map(str::to_owned).chain([p(file)]).collect()
    };
    let not_initramfs = "not an initramfs (no cpio or compressed-archive magic)";
    let mut rows: Vec<Row> = [
        ("kernel missing", "--kernel", "missing", "no such file"),
        ("kernel empty", "--kernel", "empty", "neither an ELF vmlinux nor a bzImage"),
        ("kernel truncated bzImage", "--kernel", "truncated", "truncated"),
        ("kernel random bytes", "--kernel", "random", "neither an ELF vmlinux nor a bzImage"),
        ("kernel text file", "--kernel", "text", "neither an ELF vmlinux nor a bzImage"),
        ("kernel ELF for AArch64", "--kernel", "aarch64.elf", "ELF for machine 183, not x86-64"),
        ("disk missing", "--disk", "missing", "no such file"),
        ("disk empty", "--disk", "empty", "empty file"),
        ("disk not a whole number of sectors", "--disk", "text", "21 bytes is not a multiple of 512"),
        ("disk a directory", "--disk", "rootfs-without-workload", "not a regular file"),
        ("initrd missing", "--initrd", "missing", "no such file"),
        ("initrd empty", "--initrd", "empty", "empty file"),
        ("initrd random bytes", "--initrd", "random", not_initramfs),
        ("initrd text file", "--initrd", "text", not_initramfs),
        ("initrd a kernel", "--initrd", "bzImage", not_initramfs),
        (
            "initrd cpio cut inside an entry",
            "--initrd",
            "initramfs-truncated.cpio",
            "truncated cpio archive (entry \"init\" at offset 0 has 4096 bytes of data ending at 4212, past the \
             file's 2000)",
        ),
        (
            "initrd cpio without its trailer",
            "--initrd",
            "initramfs-no-trailer.cpio",
            "truncated cpio archive (the file ends at 4212 bytes after entry \"init\", with no TRAILER!!! entry)",
        ),
        (
            "initrd cpio with a bad header",
            "--initrd",
            "initramfs-bad-header.cpio",
            "malformed cpio archive (header at offset 0: filesize is \"12x45678\", not 8 hexadecimal digits)",
        ),
    ]
    .into_iter()
    .map(|(name, flag, file, what)| Row {
        args: vm(flag, file),
        expect: vec![format!("{} {}: {what}", flag.trim_start_matches("--"), p(file))],
        ..row(name, &[], "")
    })
    .collect();
    let container =
        |flag: &str, file: &str| vec!["run".to_owned(), "-b".into(), "container".into(), flag.into(), p(file)];
    for (name, flag, file, what) in [
        ("rootfs missing", "--rootfs", "missing", format!("rootfs {}", p("missing"))),
        ("rootfs is a file", "--rootfs", "text", format!("rootfs {}: not a directory", p("text"))),
        (
            "rootfs without the workload",
            "--rootfs",
            "rootfs-without-workload",
            format!("rootfs {}: no executable \"/boxbench/workloads/hello\"", p("rootfs-without-workload")),
        ),
        (
            "bundle without config.json",
            "--bundle",
            "bundle-without-config",
            format!("bundle {}/config.json", p("bundle-without-config")),
        ),
        (
            "bundle config not JSON",
            "--bundle",
            "bundle-not-json",
            format!("bundle {}/config.json: not valid JSON", p("bundle-not-json")),
        ),
        (
            "bundle with an unsupported field",
            "--bundle",
            "bundle-unsupported",
            format!("bundle {}/config.json: unsupported field \"linux.sysctl\"", p("bundle-unsupported")),
        ),
        (
            "bundle with uid/gid mappings but no user namespace",
            "--bundle",
            "bundle-rootless-without-userns",
            format!(
                "bundle {}/config.json: field \"linux.uidMappings\": needs a user namespace",
                p("bundle-rootless-without-userns")
            ),
        ),
        (
            "bundle whose seccomp profile names an unknown system call",
            "--bundle",
            "bundle-unknown-syscall",
            format!(
                "bundle {}/config.json: field \"linux.seccomp.syscalls[0].names[1]\": unknown system call \"frobnicate\"",
                p("bundle-unknown-syscall")
            ),
        ),
        (
            "bundle config.json empty",
            "--bundle",
            "bundle-empty-config",
            format!("bundle {}/config.json: not valid JSON: EOF while parsing", p("bundle-empty-config")),
        ),
        (
            "bundle config.json truncated mid-JSON",
            "--bundle",
            "bundle-truncated-config",
            format!("bundle {}/config.json: not valid JSON: EOF while parsing", p("bundle-truncated-config")),
        ),
    ] {
        rows.push(Row { args: container(flag, file), expect: vec![what], ..row(name, &[], "") });
    }
    let mut small_vm = vm("--initrd", "initramfs-4mib.cpio");
    small_vm.extend(["--memory".to_owned(), "4".to_owned()]);
    rows.push(Row {
        args: small_vm,
        expect: vec![
            format!("initrd {}: ", p("initramfs-4mib.cpio")),
            "bytes do not fit between the kernel's end".into(),
        ],
        ..row("initrd larger than the guest memory leaves it", &[], "")
    });
    rows.extend([
        row("memory 0", &["run", "--memory", "0"], "--memory must be at least 1 MiB"),
        row("memory huge", &["run", "--memory", "99999999999"], "--memory 99999999999 MiB is more than this host's"),
        row("memory overflowing", &["run", "--memory", "18446744073709551615"], "--memory is too large"),
        row("vcpus 0", &["run", "--vcpus", "0"], "--vcpus must be at least 1"),
        row(
            "memory 1 MiB for the micro-VM's kernel",
            &["run", "-b", "microvm", "--guest", "boxbench", "--memory", "1"],
            "memory_mib: 1 MiB is too small for kernel ",
        ),
        row(
            "vcpus 255 in the micro-VM",
            &["run", "-b", "microvm", "--guest", "boxbench", "--vcpus", "255"],
            "vcpus: 255 do not fit in the MP table",
        ),
        clap_row("vcpus 1000", &["run", "--vcpus", "1000"], "error: invalid value '1000' for '--vcpus <VCPUS>'"),
        clap_row(
            "unknown backend",
            &["run", "--backend", "nope"],
            "error: invalid value 'nope' for '--backend <BACKEND>'",
        ),
        clap_row(
            "unknown workload",
            &["run", "--workload", "nope"],
            "error: invalid value 'nope' for '--workload <WORKLOAD>'",
        ),
        clap_row("timeout 0", &["run", "--timeout", "0"], "error: invalid value '0' for '--timeout <TIMEOUT>'"),
        clap_row(
            "soak count 0",
            &["soak", "-b", "container", "--count", "0"],
            "error: invalid value '0' for '--count <COUNT>'",
        ),
        clap_row(
            "soak parallel 0",
            &["soak", "-b", "container", "--parallel", "0"],
            "error: invalid value '0' for '--parallel <PARALLEL>'",
        ),
    ]);
    // `boxbench report` over files that are not boxbench's results (a fleet's bad host).
    fs::write(dir.join("not-results.json"), b"{\"name\": \"a package.json\"}\n").unwrap();
    fs::write(dir.join("other-schema.json"), b"{\"schema_version\": 99, \"hosts\": []}\n").unwrap();
    let report_out = p("report-out");
    rows.extend([
        row(
            "report of a JSON that is not results",
            &["report", &p("not-results.json"), "--out", &report_out],
            &format!("{}: not a boxbench results document", p("not-results.json")),
        ),
        row(
            "report of another schema version",
            &["report", &p("other-schema.json"), "--out", &report_out],
            &format!("{}: schema_version 99 is not supported", p("other-schema.json")),
        ),
        row(
            "report --keep-going with no readable file",
            &["report", "--keep-going", &p("text"), &p("other-schema.json"), "--out", &report_out],
            "no readable results",
        ),
        row(
            "report --missing without a reason",
            &["report", &p("other-schema.json"), "--missing", "web-1", "--out", &report_out],
            "--missing \"web-1\": expected HOST=REASON",
        ),
    ]);
    // A Docker socket whose daemon is gone (the file stays, nothing listens), readable by root only.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).unwrap();
    let host = format!("unix://{}", socket.display());
    rows.push(row(
        "docker daemon not running",
        &["run", "-b", "docker", "--docker-host", &host],
        &format!("no Docker daemon answers at {host} (docker socket {}: Connection refused", socket.display()),
    ));
    rows.extend(not_root_rows(&host));
    rows
}

/// The command that runs boxbench with `row`'s arguments as `row`'s user.
fn command(row: &Row) -> Command {
    let mut command = match row.run_as {
        RunAs::Root => Command::new(BOXBENCH),
        RunAs::Nobody | RunAs::NobodyInGroup(_) => {
            let mut setpriv = Command::new("setpriv");
            setpriv.arg(format!("--reuid={NOBODY}")).arg(format!("--regid={NOBODY}"));
            match row.run_as {
                RunAs::NobodyInGroup(gid) => setpriv.arg(format!("--groups={gid}")),
                _ => setpriv.arg("--clear-groups"),
            };
            // setpriv execs boxbench in its own process: the pid stays boxbench's.
            setpriv.arg(BOXBENCH);
            setpriv
        }
    };
    command.args(&row.args);
    command
}

#[test]
fn every_bad_input_is_refused_in_one_line_naming_it_and_leaves_nothing() {
    boxbench_testkit::require!(common::is_root(), "the container and micro-VM backends need root");
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    assert!(rows.len() >= 25);
    let temp_before = common::temp_entries();
    for row in &rows {
        let spawned = command(row).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let pid = spawned.id();
        let child = spawned.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        let name = row.name;
        assert!(!child.status.success(), "{name}: exited 0\n{stderr}");
        let first = stderr.lines().next().unwrap_or("");
        for expect in &row.expect {
            assert!(first.contains(expect.as_str()), "{name}: first line {first:?} lacks {expect:?}");
        }
        if row.clap {
            assert_eq!(child.status.code(), Some(2), "{name}: {stderr}");
        } else {
            assert_eq!(stderr.lines().count(), 1, "{name}: not one line:\n{stderr}");
            assert!(first.starts_with("boxbench: "), "{name}: {first}");
            assert_eq!(child.status.code(), Some(1), "{name}: {stderr}");
        }
        // The child is reaped; its pid names any cgroup it made.
        common::assert_clean_after(pid, &temp_before, name);
    }
    assert!(!dir.path().join("report-out").exists(), "a refused report wrote its output directory");
}

#[test]
fn a_closed_stdout_is_a_one_line_error_after_the_instances_are_gone() {
    boxbench_testkit::require!(common::is_root(), "the container backend needs root");
    let temp_before = common::temp_entries();
    // A pipe whose reading end is closed before boxbench writes its report, as `boxbench run | true`.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let spawned = Command::new(BOXBENCH)
        .args(["run", "--backend", "container", "--runs", "2", "--json"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = spawned.id();
    let child = spawned.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert_eq!(child.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().collect::<Vec<_>>(), ["boxbench: writing to stdout: Broken pipe (os error 32)"]);
    common::assert_clean_after(pid, &temp_before, "closed stdout");
}

/// True while another open file description holds a lock on `path` (probed with a non-blocking
/// shared lock, released at once).
fn locked_by_another(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(path).unwrap();
    // SAFETY: flock on a descriptor this function owns; the lock, if taken, goes with the file.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

#[test]
fn a_second_vm_on_a_disk_in_use_is_refused_in_one_line_and_the_lock_goes_with_the_first() {
    boxbench_testkit::require!(common::is_root(), "the micro-VM backend needs root");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("shared.img");
    fs::write(&disk, vec![0u8; 64 * 512]).unwrap();
    let temp_before = common::temp_entries();
    let vm = |workload: &str, extra: &[&str]| {
        let mut command = Command::new(BOXBENCH);
        command.args(["run", "-b", "microvm", "--guest", "boxbench", "--workload", workload, "--timeout", "120"]);
        command.args(extra).arg("--disk").arg(&disk);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    };
    // boxbench's own guest ignores the disk: the lock is the VMM's, whatever the guest.
    let mut first = vm("idle", &[]).spawn().unwrap();
    while !locked_by_another(&disk) {
        assert!(first.try_wait().unwrap().is_none(), "the first VM ended before it locked its disk");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for read_only in [false, true] {
        let extra: &[&str] = if read_only { &["--disk-read-only"] } else { &[] };
        let second = vm("hello", extra).spawn().unwrap();
        let pid = second.id();
        let output = second.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr.lines().collect::<Vec<_>>(),
            [format!("boxbench: microvm launch: disk {}: in use by another VM (locked)", disk.display())]
        );
        common::assert_clean_after(pid, &temp_before, "second VM on a locked disk");
    }
    // SAFETY: SIGINT to the child spawned above, still running (checked by the loop above).
    unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGINT) };
    let first_pid = first.id();
    first.wait().unwrap();
    common::assert_clean_after(first_pid, &temp_before, "first VM, interrupted");
    assert!(!locked_by_another(&disk), "the disk is still locked after its VM ended");
    let third = vm("hello", &[]).output().unwrap();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
}
