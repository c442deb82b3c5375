//! `boxbench compare` measures Docker by default through the real binary: with no daemon answering it
//! starts a private dockerd, measures, stops it and leaves nothing of it behind; a private dockerd
//! that fails to start is one caveat line quoting its log, and the other series are still measured.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use boxbench_testkit::{is_root, require};

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// Runs a small compare of the container and docker backends with `path` as PATH; its results.json.
fn compare(out: &Path, path: &str) -> serde_json::Value {
    let output = Command::new(BOXBENCH)
        .args(["compare", "-b", "container", "-b", "docker", "-n", "2", "--warmup", "0", "--uname-runs", "0"])
        .args(["--density", "0", "--no-full-os", "--out"])
        .arg(out)
        .env("PATH", path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "compare failed:\n{}{stderr}", String::from_utf8_lossy(&output.stdout));
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

fn backends(results: &serde_json::Value) -> Vec<String> {
    results["series"].as_array().unwrap().iter().map(|s| s["backend"].as_str().unwrap().to_owned()).collect()
}

/// Live processes (not zombies, which have no command line) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

#[test]
fn without_a_daemon_compare_starts_a_private_dockerd_measures_docker_and_leaves_nothing() {
    require!(is_root(), "compare's backends need root");
    require!(on_path("dockerd") && Path::new("/usr/bin/docker").exists(), "no Docker (Debian package docker.io)");
    let out = tempfile::tempdir().unwrap();
    let results = compare(out.path(), &std::env::var("PATH").unwrap_or_default());
    assert_eq!(backends(&results), ["container", "docker"], "{:#}", results["notes"]);
    let docker = &results["series"][1];
    assert_eq!(docker["records"].as_array().unwrap().len(), 2);
    assert_eq!(docker["phases"]["workload_ms"]["n"], 2, "{:#}", docker["phases"]);
    // Claim 7: the split of a docker run, measured in the same compare.
    let split = &results["docker_split"];
    for (part, backend) in [("cli", "docker"), ("client_startup", "docker-client"), ("api", "docker-api")] {
        assert_eq!(split[part]["backend"], backend, "{split:#}");
        assert_eq!(split[part]["records"].as_array().unwrap().len(), 2, "{part}");
    }
    for trip in ["ping_ms", "create_ms", "attach_ms", "start_ms", "wait_ms", "remove_ms"] {
        assert_eq!(split["api"]["details"][trip]["n"], 2, "{trip}: {:#}", split["api"]["details"]);
    }
    assert!(split["server"]["version"].as_str().is_some_and(|v| !v.is_empty()), "{:#}", split["server"]);
    assert_eq!(split["calibration"]["backend"], "calibration:docker");
    assert_eq!(split["tapped"]["details"]["first_request_ms"]["n"], 2, "{:#}", split["tapped"]["details"]);
    assert_eq!(split["tapped"]["details"]["cli_start_ms"]["n"], 2, "{:#}", split["tapped"]["details"]);
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(report.contains("## Docker's client and server (claim 7)"), "claim 7's section");
    assert!(out.path().join("plots/docker_split.svg").is_file());
    if split["private_daemon"] == true {
        let dir = PathBuf::from(split["socket"].as_str().unwrap()).parent().unwrap().display().to_string();
        assert!(!Path::new(&dir).exists(), "{dir} left");
        assert_eq!(processes_mentioning(&dir), Vec::<String>::new(), "the split's dockerd or a shim left");
    }
    let notes: Vec<&str> = docker["notes"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    let Some(private) = notes.iter().find(|n| n.contains("private dockerd started by boxbench")) else {
        // A daemon already answered: it was used, and is not compare's to stop.
        assert!(notes.iter().any(|n| n.contains("already running")), "{notes:#?}");
        return;
    };
    // `... at unix:///tmp/boxbench-dockerd-XXXX/docker.sock; ...`: the private daemon's directory.
    let socket = private.split("unix://").nth(1).and_then(|rest| rest.split(';').next()).unwrap();
    let dir = PathBuf::from(socket).parent().unwrap().to_owned();
    assert!(dir.file_name().unwrap().to_string_lossy().starts_with("boxbench-dockerd-"), "{private}");
    assert!(!dir.exists(), "{} left", dir.display());
    let dir = dir.display().to_string();
    assert_eq!(processes_mentioning(&dir), Vec::<String>::new(), "dockerd, containerd or a shim left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir), "a mount of the private daemon left:\n{mounts}");
}

#[test]
fn a_private_dockerd_that_fails_to_start_is_one_caveat_and_the_rest_is_measured() {
    require!(is_root(), "compare's backends need root");
    require!(Path::new("/usr/bin/docker").exists(), "no docker client (Debian package docker.io)");
    let bin = tempfile::tempdir().unwrap();
    let fake = bin.path().join("dockerd");
    std::fs::write(
        &fake,
        r#"#!/bin/sh
[ "$1" = --version ] && { echo "Docker version 20.10.24+dfsg1, build 297e128"; exit 0; }
echo 'time="2026-12-07T00:00:00.1Z" level=info msg="Starting up"' >&2
echo 'time="2026-12-07T00:00:00.3Z" level=fatal msg="failed to start daemon: boxbench-test-graphdriver"' >&2
exit 1
"#,
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let out = tempfile::tempdir().unwrap();
    let results = compare(out.path(), &path);
    let notes: Vec<&str> = results["notes"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    if backends(&results).contains(&"docker".to_owned()) {
        // A daemon already answered at the system socket: no private one was started.
        return;
    }
    assert_eq!(backends(&results), ["container"], "the other series are measured");
    let docker: Vec<&&str> = notes.iter().filter(|n| n.starts_with("docker not measured")).collect();
    assert_eq!(docker.len(), 1, "{notes:#?}");
    assert!(!docker[0].contains('\n'), "one line: {}", docker[0]);
    assert!(docker[0].contains("private dockerd exit status: 1 before answering"), "{}", docker[0]);
    assert!(
        docker[0].contains(r#"level=fatal msg="failed to start daemon: boxbench-test-graphdriver""#),
        "{}",
        docker[0]
    );
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    let caveats = report.split("## Caveats").nth(1).expect("a Caveats section");
    assert!(caveats.contains("boxbench-test-graphdriver"), "{caveats}");
}
