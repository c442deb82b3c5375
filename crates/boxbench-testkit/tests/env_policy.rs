//! The policy as a test sees it, through the environment: this binary runs itself as a child with
//! `BOXBENCH_REQUIRE_ALL` and `BOXBENCH_SKIP_LOG` set each way, and the child skips from threads named
//! like libtest's test threads, through both forms of `require!`. A child process, so the variables
//! are set for that process alone (tests changing their own environment would race), and no harness,
//! so the child's skips run whatever switches `cargo test` was given.

use std::path::Path;
use std::process::{Command, Output};

const CHILD: &str = "BOXBENCH_TESTKIT_CHILD";
const QEMU_IMG: &str = "qemu-img is not installed (Debian package qemu-utils)";

fn skips_through_a_result() {
    let seven: u32 = boxbench_testkit::require!(Ok::<u32, String>(7));
    assert_eq!(seven, 7);
    boxbench_testkit::require!(Err::<(), _>(QEMU_IMG));
    unreachable!("require! returns from the test");
}

fn skips_through_a_condition() {
    boxbench_testkit::require!(seven_is_seven(), "never");
    boxbench_testkit::require!(!seven_is_seven(), "no {} here", "/dev/kvm");
    unreachable!("require! returns from the test");
}

fn seven_is_seven() -> bool {
    std::hint::black_box(7) == 7
}

/// The child: each probe on a thread named like a libtest test; exits 101 when one panicked.
fn child() {
    let probes: [(&str, fn()); 2] = [
        ("probe::through_a_result", skips_through_a_result),
        ("probe::through_a_condition", skips_through_a_condition),
    ];
    for (name, probe) in probes {
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(probe).unwrap();
        if thread.join().is_err() {
            std::process::exit(101);
        }
    }
}

fn run_child(require_all: Option<&str>, skip_log: Option<&Path>) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(CHILD, "1").env_remove("BOXBENCH_REQUIRE_ALL").env_remove("BOXBENCH_SKIP_LOG");
    if let Some(value) = require_all {
        command.env("BOXBENCH_REQUIRE_ALL", value);
    }
    if let Some(log) = skip_log {
        command.env("BOXBENCH_SKIP_LOG", log);
    }
    command.output().unwrap()
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skips.tsv");

    // Lenient: both probes skip, each says so on stderr and appends its line.
    let out = run_child(None, Some(&log));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr.contains(&format!("SKIPPED env_policy/probe::through_a_result: {QEMU_IMG}\n")), "{stderr}");
    assert!(stderr.contains("SKIPPED env_policy/probe::through_a_condition: no /dev/kvm here\n"), "{stderr}");
    assert!(!stderr.contains("never"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        format!(
            "env_policy/probe::through_a_result\t{QEMU_IMG}\nenv_policy/probe::through_a_condition\tno /dev/kvm here\n"
        )
    );

    // BOXBENCH_REQUIRE_ALL=0 and no log: lenient, nothing written anywhere but stderr.
    let out = run_child(Some("0"), None);
    assert!(out.status.success(), "{out:?}");

    // BOXBENCH_REQUIRE_ALL=1: the first skip fails its test with the one line, and is not logged.
    std::fs::remove_file(&log).unwrap();
    let out = run_child(Some("1"), Some(&log));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{out:?}");
    assert!(stderr.contains("thread 'probe::through_a_result' ") && stderr.contains("panicked at"), "{stderr}");
    assert!(stderr.contains(&format!("\nrequired but unavailable: {QEMU_IMG}\n")), "{stderr}");
    assert!(!stderr.contains("SKIPPED"), "{stderr}");
    assert!(!log.exists(), "a failure is not logged as a skip");

    // A misspelt switch is an error, not the lenient policy.
    let out = run_child(Some("yes"), None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "{out:?}");
    assert!(stderr.contains("BOXBENCH_REQUIRE_ALL must be 1 or 0, not Some(\"yes\")"), "{stderr}");

    println!("env_policy: lenient, logged, REQUIRE_ALL=0, REQUIRE_ALL=1 and a misspelt switch behave as documented");
}
