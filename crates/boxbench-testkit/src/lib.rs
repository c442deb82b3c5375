//! The skip policy of boxbench's tests, in one place.
//!
//! Many of boxbench's tests are real: they need root, `/dev/kvm`, a Debian package (crun, QEMU,
//! qemu-img, mmdebstrap, ...), a built guest image, or an opt-in such as `BOXBENCH_FULL_OS=1`. A test
//! whose host lacks one of these does not return quietly and pass: it calls [`skip`] (or the
//! [`require!`] macro, or [`require`]), and this crate decides what that means.
//!
//! - With `BOXBENCH_REQUIRE_ALL=1` (`.ci/run` sets it) the skip panics with one line,
//!   `required but unavailable: <why>`, so the test fails: a machine meant to run everything cannot
//!   report green with a real test unrun.
//! - Otherwise the test goes on being a skip: `SKIPPED <test>: <why>` goes to the process's stderr
//!   (written directly, so the test harness does not capture it), and when `BOXBENCH_SKIP_LOG` names
//!   a file, the line `<test>\t<why>` is appended to it (opened with `O_APPEND`, one `write` per
//!   line, so parallel tests and test binaries do not interleave). `scripts/test.sh` prints those
//!   lines after `cargo test`.
//!
//! `<test>` is `<test binary>/<test name>`: the binary's file name without cargo's hash suffix, and the
//! name libtest gives the test's thread (`full_os/full_os_disk_is_built_measured_and_cached`).
//!
//! What this crate does not decide is whether a test *should* run on a kind of host. A test whose
//! subject does not exist on some host kind by design (kvm_pvm's instruction emulator on a VMX host,
//! say) asserts what that host does instead, or is `#[ignore = "why"]`; a skip is for something this
//! host lacks and another host of the same kind could have.
//!
//! ```no_run
//! use boxbench_testkit::require;
//!
//! fn kvm_available() -> Result<(), String> {
//!     std::fs::File::open("/dev/kvm").map(drop).map_err(|e| format!("/dev/kvm: {e}"))
//! }
//!
//! fn a_kvm_test() {
//!     require!(kvm_available());
//!     require!(std::path::Path::new("/usr/bin/qemu-img").exists(), "no qemu-img (Debian package qemu-utils)");
//!     // ... the test's real work and assertions ...
//! }
//! # a_kvm_test();
//! ```

use std::ffi::OsStr;
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable that turns every skip into a failure when it is `1`.
pub const REQUIRE_ALL_ENV: &str = "BOXBENCH_REQUIRE_ALL";
/// The environment variable naming the file each skip is appended to.
pub const SKIP_LOG_ENV: &str = "BOXBENCH_SKIP_LOG";

/// True when the test runs as root (effective uid 0), the requirement most real tests share.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1)) == Some("0")
    })
}

/// Skips the calling test because `why` (what is missing, and where possible which Debian package or
/// setting provides it) — or, under `BOXBENCH_REQUIRE_ALL=1`, fails it. The caller returns after it.
#[track_caller]
pub fn skip(why: impl Display) {
    Policy::from_env().skip(&test_id(), &why.to_string());
}

/// `Some(value)` when what the test needs is available, else [`skip`]s with the error and gives `None`.
#[track_caller]
pub fn require<T, E: Display>(available: Result<T, E>) -> Option<T> {
    match available {
        Ok(value) => Some(value),
        Err(why) => {
            skip(why);
            None
        }
    }
}

/// In a test function: `require!(result)` evaluates to the `Ok` value of a `Result<T, impl Display>`,
/// and `require!(condition, "why {}", args)` goes on when the condition holds; otherwise each
/// [`skip`]s (fails under `BOXBENCH_REQUIRE_ALL=1`) and returns from the calling function.
#[macro_export]
macro_rules! require {
    ($available:expr, $($why:tt)+) => {
        if !$available {
            $crate::skip(::std::format_args!($($why)+));
            return;
        }
    };
    ($result:expr $(,)?) => {
        match $crate::require($result) {
            ::std::option::Option::Some(value) => value,
            ::std::option::Option::None => return,
        }
    };
}

/// What a skip does, read from the environment by [`skip`]; built from explicit values in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Every skip fails the test (`BOXBENCH_REQUIRE_ALL=1`).
    pub require_all: bool,
    /// Where each skip is appended (`BOXBENCH_SKIP_LOG`).
    pub skip_log: Option<PathBuf>,
}

impl Policy {
    /// The policy `BOXBENCH_REQUIRE_ALL` and `BOXBENCH_SKIP_LOG` set.
    pub fn from_env() -> Self {
        Self::from_values(std::env::var_os(REQUIRE_ALL_ENV).as_deref(), std::env::var_os(SKIP_LOG_ENV).as_deref())
    }

    /// The policy these values of `BOXBENCH_REQUIRE_ALL` and `BOXBENCH_SKIP_LOG` give. Panics on a
    /// `BOXBENCH_REQUIRE_ALL` other than unset, empty, `0` or `1`: a misspelt switch must not quietly
    /// get the lenient policy.
    pub fn from_values(require_all: Option<&OsStr>, skip_log: Option<&OsStr>) -> Self {
        let require_all = match require_all.map(OsStr::to_str) {
            None | Some(Some("" | "0")) => false,
            Some(Some("1")) => true,
            Some(other) => panic!("{REQUIRE_ALL_ENV} must be 1 or 0, not {other:?}"),
        };
        let skip_log = skip_log.filter(|path| !path.is_empty()).map(PathBuf::from);
        Self { require_all, skip_log }
    }

    /// Skips `test` because `why`: panics under `require_all`, else says so on stderr and in the log.
    #[track_caller]
    pub fn skip(&self, test: &str, why: &str) {
        // Straight to the file descriptor, past libtest's capture: a skip is seen without --nocapture.
        self.skip_to(test, why, &mut std::io::stderr().lock());
    }

    /// [`Policy::skip`], saying so on `stderr`.
    #[track_caller]
    fn skip_to(&self, test: &str, why: &str, stderr: &mut dyn Write) {
        let (test, why) = (one_line(test), one_line(why));
        if self.require_all {
            panic!("required but unavailable: {why}");
        }
        // A closed stderr loses the message, not the test.
        let _ = stderr.write_all(format!("SKIPPED {test}: {why}\n").as_bytes());
        if let Some(log) = &self.skip_log
            && let Err(e) = append_line(log, &format!("{test}\t{why}\n"))
        {
            panic!("cannot append a skip to {SKIP_LOG_ENV} {}: {e}", log.display());
        }
    }
}

/// `<test binary>/<test name>` for the calling thread (libtest names each test's thread after it).
pub fn test_id() -> String {
    let exe = std::env::current_exe().ok();
    let binary = exe
        .as_deref()
        .and_then(Path::file_name)
        .map_or_else(|| "unknown binary".to_owned(), |name| binary_name(&name.to_string_lossy()).to_owned());
    let thread = std::thread::current();
    format!("{binary}/{}", thread.name().unwrap_or("unnamed thread"))
}

/// A test binary's name without the `-<16 hex digits>` cargo appends.
fn binary_name(file_name: &str) -> &str {
    match file_name.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => name,
        _ => file_name,
    }
}

/// `text` on one line with no tab, so each skip is one line of two tab-separated fields.
fn one_line(text: &str) -> String {
    text.split(['\n', '\r', '\t']).filter(|part| !part.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Appends `line` to `path` (created if missing) in a single `write` on an `O_APPEND` descriptor.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).create(true).open(path)?;
    let written = file.write(line.as_bytes())?;
    if written != line.len() {
        return Err(std::io::Error::other(format!("short write: {written} of {} bytes", line.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenient(log: &Path) -> Policy {
        Policy { require_all: false, skip_log: Some(log.to_owned()) }
    }

    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }

    #[test]
    fn the_switch_is_1_or_0_and_a_log_path_is_optional() {
        let off = Policy { require_all: false, skip_log: None };
        assert_eq!(Policy::from_values(None, None), off);
        assert_eq!(Policy::from_values(Some(OsStr::new("")), Some(OsStr::new(""))), off);
        assert_eq!(Policy::from_values(Some(OsStr::new("0")), None), off);
        assert_eq!(
            Policy::from_values(Some(OsStr::new("1")), Some(OsStr::new("/tmp/skips"))),
            Policy { require_all: true, skip_log: Some(PathBuf::from("/tmp/skips")) }
        );
        let misspelt = std::panic::catch_unwind(|| Policy::from_values(Some(OsStr::new("yes")), None)).unwrap_err();
        assert_eq!(panic_message(&*misspelt), "BOXBENCH_REQUIRE_ALL must be 1 or 0, not Some(\"yes\")");
    }

    #[test]
    fn under_require_all_a_skip_fails_with_one_line_and_logs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips");
        let policy = Policy { require_all: true, ..lenient(&log) };
        let failed = std::panic::catch_unwind(|| {
            policy.skip_to("full_os/disk", "qemu-img is not installed\n(Debian package qemu-utils)", &mut Vec::new());
        })
        .unwrap_err();
        assert_eq!(
            panic_message(&*failed),
            "required but unavailable: qemu-img is not installed (Debian package qemu-utils)"
        );
        assert!(!log.exists(), "a failure is not a skip");
    }

    #[test]
    fn a_skip_appends_one_tab_separated_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips");
        let policy = lenient(&log);
        let mut stderr = Vec::new();
        policy.skip_to(
            "oci_runtime/crun_hello_exits_cleanly",
            "crun not found on PATH (Debian package: crun)",
            &mut stderr,
        );
        policy.skip_to("vm/a\ttest", "no /dev/kvm\n\tat all", &mut stderr);
        assert_eq!(
            String::from_utf8(stderr).unwrap(),
            "SKIPPED oci_runtime/crun_hello_exits_cleanly: crun not found on PATH (Debian package: crun)\n\
             SKIPPED vm/a test: no /dev/kvm at all\n"
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "oci_runtime/crun_hello_exits_cleanly\tcrun not found on PATH (Debian package: crun)\n\
             vm/a test\tno /dev/kvm at all\n"
        );
        let unwritable = lenient(&dir.path().join("no-such-dir/skips"));
        let failed = std::panic::catch_unwind(|| unwritable.skip_to("t", "why", &mut Vec::new())).unwrap_err();
        assert!(panic_message(&*failed).starts_with("cannot append a skip to BOXBENCH_SKIP_LOG "));
    }

    #[test]
    fn parallel_skips_keep_their_lines_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("skips");
        let why = "x".repeat(300);
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let (policy, why) = (lenient(&log), &why);
                scope.spawn(move || {
                    (0..50).for_each(|i| policy.skip_to(&format!("t{thread}/{i}"), why, &mut Vec::new()))
                });
            }
        });
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 8 * 50);
        assert!(text.lines().all(|line| line.split_once('\t').is_some_and(|(_, w)| w == why)), "{text}");
    }

    #[test]
    fn the_test_id_is_the_binary_and_the_test_name() {
        assert_eq!(test_id(), "boxbench_testkit/tests::the_test_id_is_the_binary_and_the_test_name");
        assert_eq!(binary_name("full_os-0123456789abcdef"), "full_os");
        assert_eq!(binary_name("boxbench-testkit"), "boxbench-testkit");
        assert_eq!(binary_name("no-hash-0123"), "no-hash-0123");
    }
}
