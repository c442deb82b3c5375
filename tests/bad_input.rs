//! Every bad input through the real binary: a non-zero exit, one line naming the file or setting, and
//! nothing left on the host.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");

/// One bad input: the arguments and what the first line of stderr must contain.
struct Row {
    name: &'static str,
    args: Vec<String>,
    expect: String,
    /// A clap error: its first line is checked, the usage lines after it are clap's.
    clap: bool,
}

fn row(name: &'static str, args: &[&str], expect: &str) -> Row {
    Row { name, args: args.iter().map(|s| (*s).to_owned()).collect(), expect: expect.to_owned(), clap: false }
}

fn clap_row(name: &'static str, args: &[&str], expect: &str) -> Row {
    Row { clap: true, ..row(name, args, expect) }
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
    let mut elf = fs::read(boxbench_guest::elf_path()).unwrap();
    // e_machine (offset 18, little-endian): 183 is AArch64.
    elf[18..20].copy_from_slice(&183u16.to_le_bytes());
    fs::write(dir.join("aarch64.elf"), elf).unwrap();
    fs::create_dir(dir.join("rootfs-without-workload")).unwrap();
    fs::create_dir_all(dir.join("bundle-without-config/rootfs")).unwrap();
    fs::create_dir_all(dir.join("bundle-not-json/rootfs")).unwrap();
    fs::write(dir.join("bundle-not-json/config.json"), b"{not json").unwrap();
    fs::create_dir_all(dir.join("bundle-unsupported/rootfs")).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/boxbench/workloads/hello"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ALLOW"}}
    });
    fs::write(dir.join("bundle-unsupported/config.json"), config.to_string()).unwrap();

    let vm = |flag: &str, file: &str| vec!["run".to_owned(), "-b".into(), "microvm".into(), flag.into(), p(file)];
    let mut rows: Vec<Row> = [
        ("kernel missing", "--kernel", "missing", "no such file"),
        ("kernel empty", "--kernel", "empty", "neither an ELF vmlinux nor a bzImage"),
        ("kernel truncated bzImage", "--kernel", "truncated", "truncated"),
        ("kernel random bytes", "--kernel", "random", "neither an ELF vmlinux nor a bzImage"),
        ("kernel text file", "--kernel", "text", "neither an ELF vmlinux nor a bzImage"),
        ("kernel ELF for AArch64", "--kernel", "aarch64.elf", "ELF for machine 183, not x86-64"),
        ("initrd missing", "--initrd", "missing", "no such file"),
        ("initrd empty", "--initrd", "empty", "empty file"),
    ]
    .into_iter()
    .map(|(name, flag, file, what)| Row {
        name,
        args: vm(flag, file),
        expect: format!("{} {}: {what}", flag.trim_start_matches("--"), p(file)),
        clap: false,
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
            format!("bundle {}/config.json: unsupported field \"linux.seccomp\"", p("bundle-unsupported")),
        ),
    ] {
        rows.push(Row { name, args: container(flag, file), expect: what, clap: false });
    }
    rows.extend([
        row("memory 0", &["run", "--memory", "0"], "--memory must be at least 1 MiB"),
        row("memory huge", &["run", "--memory", "99999999999"], "--memory 99999999999 MiB is more than this host's"),
        row("memory overflowing", &["run", "--memory", "18446744073709551615"], "--memory is too large"),
        row("vcpus 0", &["run", "--vcpus", "0"], "--vcpus must be at least 1"),
        row(
            "vcpus 255 in the micro-VM",
            &["run", "-b", "microvm", "--vcpus", "255"],
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
    rows
}

#[test]
fn every_bad_input_is_refused_in_one_line_naming_it_and_leaves_nothing() {
    if !common::is_root() {
        eprintln!("skipping: the container and micro-VM backends need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    assert!(rows.len() >= 25);
    let temp_before = common::temp_entries();
    for row in &rows {
        let spawned =
            Command::new(BOXBENCH).args(&row.args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let pid = spawned.id();
        let child = spawned.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        let name = row.name;
        assert!(!child.status.success(), "{name}: exited 0\n{stderr}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(first.contains(&row.expect), "{name}: first line {first:?} lacks {:?}", row.expect);
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
}

#[test]
fn a_closed_stdout_is_a_one_line_error_after_the_instances_are_gone() {
    if !common::is_root() {
        eprintln!("skipping: the container backend needs root");
        return;
    }
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
