//! `scripts/setup-host.sh` for real, as root: run twice, it leaves every command it promises
//! answering and the second run installs nothing; a command that does not answer is one line naming
//! it and its package; a package apt cannot install stops it with apt's last lines and the name.
//!
//! These tests install Debian packages on the host (the first run, on a fresh machine) and refresh
//! apt's lists, as `scripts/test.sh` does before them anyway. The script takes a lock, so the tests'
//! runs take turns.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use boxbench_testkit::{is_root, require};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup-host.sh");

/// The commands the issue names, which the script must promise (it may promise more).
const MUST_PROMISE: [&str; 18] = [
    "qemu-img",
    "qemu-system-x86_64",
    "crun",
    "runc",
    "runsc",
    "youki",
    "podman",
    "/usr/bin/docker",
    "dockerd",
    "containerd",
    "mmdebstrap",
    "mkfs.ext4",
    "chromium",
    "cpio",
    "/bin/busybox",
    "gcc",
    "make",
    "apt-get",
];

fn run_script(args: &[&str], path_prefix: Option<&Path>) -> Output {
    let mut command = Command::new(SCRIPT);
    command.args(args).stdin(Stdio::null());
    if let Some(dir) = path_prefix {
        let path = std::env::var("PATH").unwrap_or_default();
        command.env("PATH", format!("{}:{path}", dir.display()));
    }
    command.output().unwrap_or_else(|e| panic!("running {SCRIPT}: {e}"))
}

fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The script's checks: (package, argv).
fn promised() -> Vec<(String, Vec<String>)> {
    let list = run_script(&["--list"], None);
    let (stdout, stderr) = text(&list);
    assert!(list.status.success(), "setup-host.sh --list failed: {stderr}");
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (package, command) =
                line.split_once('\t').unwrap_or_else(|| panic!("not PACKAGE<TAB>COMMAND: {line:?}"));
            (package.to_owned(), command.split_whitespace().map(str::to_owned).collect())
        })
        .collect()
}

/// Version and status of each package, as dpkg has them.
fn dpkg_state(packages: &[&str]) -> BTreeMap<String, String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${Version} ${Status}\n"])
        .args(packages)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(p, rest)| (p.to_owned(), rest.to_owned())))
        .collect()
}

#[test]
fn twice_it_leaves_every_promised_command_answering_and_the_second_run_installs_nothing() {
    require!(is_root(), "setup-host.sh installs Debian packages: run the tests as root");
    let first = run_script(&[], None);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "first run failed:\n{stdout}{stderr}");
    assert!(stdout.contains("setup-host: all "), "{stdout}");

    let checks = promised();
    let packages: Vec<&str> = checks.iter().map(|(p, _)| p.as_str()).collect();
    let before = dpkg_state(&packages);
    let second = run_script(&[], None);
    let (stdout, stderr) = text(&second);
    assert!(second.status.success(), "second run failed:\n{stdout}{stderr}");
    assert!(stdout.contains("setup-host: nothing to install"), "{stdout}");
    assert!(!stdout.contains("installing") && !stdout.contains("refreshing"), "the second run did work:\n{stdout}");
    assert_eq!(dpkg_state(&packages), before, "the second run changed installed packages");

    let commands: Vec<&str> = checks.iter().map(|(_, argv)| argv[0].as_str()).collect();
    for wanted in MUST_PROMISE {
        assert!(commands.contains(&wanted), "setup-host.sh does not promise {wanted}: {commands:?}");
    }
    // Every promised command answers, asked here and not by the script.
    for (package, argv) in &checks {
        if argv[0] == "test" {
            let file = argv.last().unwrap();
            assert!(Path::new(file).is_file(), "{file} missing (package {package})");
            continue;
        }
        let answer = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{} (package {package}): {e}", argv.join(" ")));
        let (out, err) = text(&answer);
        assert!(answer.status.success(), "`{}` (package {package}): {}\n{out}{err}", argv.join(" "), answer.status);
        assert!(!(out.trim().is_empty() && err.trim().is_empty()), "`{}` printed nothing", argv.join(" "));
    }
    // QEMU from one release: the emulator and qemu-img report the same Debian version.
    let debian_version = |argv: &[&str]| {
        let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
        let first_line = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned();
        first_line.split_once("(Debian ").map(|(_, v)| v.trim_end_matches(')').to_owned())
    };
    assert_eq!(
        debian_version(&["qemu-img", "--version"]),
        debian_version(&["qemu-system-x86_64", "--version"]),
        "qemu-img and qemu-system-x86_64 come from different packages' versions"
    );
}

#[test]
fn a_command_that_does_not_answer_is_one_line_naming_it_and_its_package() {
    require!(is_root(), "setup-host.sh installs Debian packages: run the tests as root");
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("qemu-img");
    std::fs::write(&fake, "#!/bin/sh\necho 'qemu-img: cannot open shared object' >&2\nexit 127\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = run_script(&[], Some(bin.path()));
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "a broken qemu-img passed:\n{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    assert!(stderr.contains("qemu-img --version") && stderr.contains("package qemu-utils"), "{stderr}");
    assert!(stderr.contains("cannot open shared object"), "what it printed is quoted: {stderr}");
}

#[test]
fn a_package_apt_cannot_install_stops_it_with_apts_last_lines_and_the_name() {
    require!(is_root(), "setup-host.sh installs Debian packages: run the tests as root");
    let output = run_script(&["boxbench-no-such-package"], None);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "an unknown package passed:\n{stdout}{stderr}");
    assert!(stderr.contains("setup-host: apt cannot install boxbench-no-such-package"), "{stderr}");
    assert!(stderr.contains("Unable to locate package boxbench-no-such-package"), "apt's own line: {stderr}");
    assert!(!stdout.contains("installing"), "nothing was installed:\n{stdout}");
}
