//! The container backend for real, as root, on a busybox rootfs built from the host's busybox.
//! Each test checks that the instance left nothing behind: no cgroup, no mount, no child process.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use boxbench_container::ContainerLauncher;
use boxbench_core::cgroup::CgroupHost;
use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, LaunchError, Launcher, Outcome, Record, Workload};
use common::{Fixture, SENTINEL};

/// The tests run one at a time: "nothing left behind" is checked against the whole process.
static SERIAL: Mutex<()> = Mutex::new(());

struct Env {
    launcher: ContainerLauncher,
    fixture: Fixture,
    _serial: MutexGuard<'static, ()>,
}

fn env() -> Option<Env> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: the container backend needs root");
        return None;
    }
    let serial = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let fixture = Fixture::build()?;
    let launcher = ContainerLauncher::new().expect("container launcher as root");
    Some(Env { launcher, fixture, _serial: serial })
}

fn command(argv: &[&str]) -> Workload {
    Workload::Command(argv.iter().map(|s| s.to_string()).collect())
}

impl Env {
    fn rootfs_spec(&self, workload: Workload) -> InstanceSpec {
        InstanceSpec::new(workload, ImagePaths { rootfs: Some(self.fixture.rootfs()), ..Default::default() })
    }

    fn bundle_spec(&self, workload: Workload) -> InstanceSpec {
        InstanceSpec::new(workload, ImagePaths { bundle: Some(self.fixture.bundle()), ..Default::default() })
    }

    fn run(&self, spec: &InstanceSpec) -> Record {
        let record = launch_once(&self.launcher, spec).expect("launch");
        self.assert_nothing_left();
        record
    }

    fn run_err(&self, spec: &InstanceSpec) -> LaunchError {
        let err = launch_once(&self.launcher, spec).expect_err("launch should fail");
        self.assert_nothing_left();
        err
    }

    fn assert_nothing_left(&self) {
        let prefix = format!("container-{}-", std::process::id());
        let host = CgroupHost::detect().unwrap();
        let left: Vec<_> = host
            .leftover_instances()
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
            .collect();
        assert!(left.is_empty(), "cgroups left behind: {left:?}");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.fixture.dir.path().display().to_string();
        assert!(!mountinfo.contains(&dir), "a mount of {dir} was left in the host's mount table");
        let children = child_processes();
        assert!(children.is_empty(), "child processes left behind: {children:?}");
    }
}

/// Pids whose parent is this process.
fn child_processes() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The fields after the command (which may hold spaces) start after its closing parenthesis.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            children.push(pid);
        }
    }
    children
}

#[test]
fn the_workload_is_pid_1() {
    let Some(env) = env() else { return };
    let record = env.run(&env.rootfs_spec(command(&["sh", "-c", "echo $$"])));
    assert_eq!(record.outcome, Outcome::Exited { code: 0 });
    assert_eq!(record.console, "1\n");
}

#[test]
fn the_container_has_its_own_hostname() {
    let Some(env) = env() else { return };
    let mut spec = env.rootfs_spec(command(&["hostname"]));
    spec.hostname = "bb-test-host".to_owned();
    let record = env.run(&spec);
    assert_eq!(record.console, "bb-test-host\n");
    assert_ne!(nix::unistd::gethostname().unwrap(), "bb-test-host");
}

#[test]
fn the_network_namespace_has_only_loopback() {
    let Some(env) = env() else { return };
    let record = env.run(&env.rootfs_spec(command(&["ls", "/sys/class/net"])));
    assert_eq!(record.console, "lo\n");
    let record = env.run(&env.rootfs_spec(command(&["cat", "/proc/net/dev"])));
    let interfaces: Vec<&str> =
        record.console.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(interfaces, ["lo"], "{}", record.console);
}

#[test]
fn the_rootfs_is_the_root() {
    let Some(env) = env() else { return };
    let record = env.run(&env.rootfs_spec(command(&["cat", "/boxbench/sentinel"])));
    assert_eq!(record.console, SENTINEL);
    let record = env.run(&env.rootfs_spec(command(&["ls", "/"])));
    assert_eq!(
        record.console.split_whitespace().collect::<Vec<_>>(),
        ["bin", "boxbench", "dev", "mnt", "proc", "sys", "tmp"]
    );
}

#[test]
fn the_exit_status_propagates_and_stderr_is_on_the_console() {
    let Some(env) = env() else { return };
    let record = env.run(&env.rootfs_spec(command(&["sh", "-c", "echo out; echo err >&2; exit 7"])));
    assert_eq!(record.outcome, Outcome::Exited { code: 7 });
    assert_eq!(record.exit_code, Some(7));
    assert_eq!(record.console, "out\nerr\n");
    let record = env.run(&env.rootfs_spec(command(&["sh", "-c", "kill -TERM $$; sleep 1"])));
    // PID 1 ignores signals it has no handler for, even its own: it sleeps and exits 0.
    assert_eq!(record.outcome, Outcome::Exited { code: 0 });
}

#[test]
fn dev_has_the_default_devices() {
    let Some(env) = env() else { return };
    let script = "for d in null zero full random urandom tty; do test -c /dev/$d || echo missing $d; done; \
                  head -c 4 /dev/zero | wc -c; readlink /dev/fd; echo x > /dev/null && echo ok";
    let record = env.run(&env.rootfs_spec(command(&["sh", "-c", script])));
    assert_eq!(record.console, "4\n/proc/self/fd\nok\n");
}

#[test]
fn hello_fills_the_record() {
    let Some(env) = env() else { return };
    let record = env.run(&env.rootfs_spec(Workload::Hello));
    assert_eq!(record.backend, "container");
    assert!(record.outcome.is_success(), "{:?}", record.outcome);
    assert_eq!(record.console, "BOXBENCH_READY\n");
    let p = &record.phases;
    let (ready, userspace, first, workload, exit) = (
        p.ready_ms.unwrap(),
        p.userspace_ms.unwrap(),
        p.first_output_ms.unwrap(),
        p.workload_ms.unwrap(),
        p.exit_ms.unwrap(),
    );
    // Causal order, not timing: each phase happens after the one it depends on.
    assert!(0.0 < ready && ready <= userspace && ready <= first && first <= workload && workload <= exit, "{p:?}");
    assert!(record.memory.peak_bytes.unwrap() > 0);
}

#[test]
fn pss_is_sampled_at_the_marker() {
    let Some(env) = env() else { return };
    let record = env.run(&env.rootfs_spec(Workload::Idle).with_timeout(Duration::from_secs(1)));
    assert!(matches!(record.outcome, Outcome::DeadlineExceeded { .. }), "{:?}", record.outcome);
    assert!(record.console.contains("BOXBENCH_READY"));
    assert!(record.memory.pss_bytes.unwrap() > 0);
}

trait WithTimeout {
    fn with_timeout(self, timeout: Duration) -> Self;
}

impl WithTimeout for InstanceSpec {
    fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[test]
fn the_uname_workload_sees_the_host_kernel() {
    let Some(env) = env() else { return };
    let record = env.run(&env.rootfs_spec(Workload::Uname));
    let host = nix::sys::utsname::uname().unwrap();
    assert_eq!(record.console, format!("{}\nBOXBENCH_READY\n", host.release().to_string_lossy()));
}

#[test]
fn a_bundle_runs_its_args_unless_a_command_overrides_them() {
    let Some(env) = env() else { return };
    let record = env.run(&env.bundle_spec(Workload::Hello));
    assert!(
        record.console.ends_with("\nBOXBENCH_READY\n") && record.console.lines().count() == 2,
        "{}",
        record.console
    );
    let record = env.run(&env.bundle_spec(command(&["cat", "/boxbench/sentinel"])));
    assert_eq!(record.console, SENTINEL);
}

#[test]
fn a_readonly_bundle_root_cannot_be_written() {
    let Some(env) = env() else { return };
    let record = env.run(&env.bundle_spec(command(&[
        "sh",
        "-c",
        "touch /new 2>/dev/null || echo refused; touch /dev/ok && echo dev",
    ])));
    assert_eq!(record.console, "refused\ndev\n");
    assert!(!env.fixture.rootfs().join("new").exists());
}

#[test]
fn a_bundle_sets_user_no_new_privileges_cwd_and_env() {
    let Some(env) = env() else { return };
    let mut value = env.fixture.config();
    value["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1001});
    value["process"]["noNewPrivileges"] = serde_json::json!(true);
    value["process"]["cwd"] = serde_json::json!("/tmp");
    value["process"]["env"] = serde_json::json!(["PATH=/bin", "GREETING=hi"]);
    env.fixture.write_config(&value);
    let script = "id -u; id -g; id -G; pwd; echo $GREETING; grep NoNewPrivs /proc/self/status; hostname";
    let mut spec = env.bundle_spec(command(&["sh", "-c", script]));
    spec.hostname = "from-the-spec".to_owned();
    let record = env.run(&spec);
    assert_eq!(record.console, "1000\n1001\n1001\n/tmp\nhi\nNoNewPrivs:\t1\nfrom-the-spec\n");
}

#[test]
fn a_bundle_bind_mount_is_seen_read_only_and_leaves_no_mount() {
    let Some(env) = env() else { return };
    let shared = env.fixture.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("note"), "from the host").unwrap();
    let mut value = env.fixture.config();
    value["mounts"].as_array_mut().unwrap().push(serde_json::json!(
        {"destination": "/mnt", "type": "bind", "source": shared, "options": ["rbind", "ro", "nosuid"]}
    ));
    env.fixture.write_config(&value);
    let script = "cat /mnt/note; echo; touch /mnt/x 2>/dev/null || echo refused";
    let record = env.run(&env.bundle_spec(command(&["sh", "-c", script])));
    assert_eq!(record.console, "from the host\nrefused\n");
    assert!(!shared.join("x").exists());
}

#[test]
fn the_memory_limit_is_enforced() {
    let Some(env) = env() else { return };
    let mut spec = env.rootfs_spec(command(&["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]));
    spec.memory_limit_bytes = Some(32 << 20);
    let record = env.run(&spec);
    assert_eq!(record.outcome, Outcome::OutOfMemory, "console: {}", record.console);
    let peak = record.memory.peak_bytes.unwrap();
    assert!(peak <= 32 << 20, "peak {peak} above the 32 MiB limit");
}

#[test]
fn the_deadline_kills_an_idle_workload() {
    let Some(env) = env() else { return };
    let record = env.run(&env.bundle_spec(command(&["/boxbench/workloads/idle"])).with_timeout(Duration::from_secs(1)));
    assert_eq!(record.outcome, Outcome::DeadlineExceeded { seconds: 1.0 });
    assert_eq!(record.exit_code, None);
    assert!(record.phases.workload_ms.is_some());
}

#[test]
fn a_missing_rootfs_is_named() {
    let Some(env) = env() else { return };
    let missing = env.fixture.dir.path().join("nowhere");
    let spec = InstanceSpec::new(Workload::Hello, ImagePaths { rootfs: Some(missing.clone()), ..Default::default() });
    let err = env.run_err(&spec);
    assert!(matches!(err, LaunchError::InvalidSpec(_)));
    assert!(err.to_string().starts_with(&format!("rootfs {}: ", missing.display())), "{err}");
    let file = env.fixture.rootfs().join("boxbench/sentinel");
    let spec = InstanceSpec::new(Workload::Hello, ImagePaths { rootfs: Some(file.clone()), ..Default::default() });
    assert_eq!(env.run_err(&spec).to_string(), format!("rootfs {}: not a directory", file.display()));
}

#[test]
fn a_missing_executable_is_named_before_launch() {
    let Some(env) = env() else { return };
    let err = env.run_err(&env.rootfs_spec(command(&["/no/such/program"])));
    assert!(err.to_string().contains("no executable \"/no/such/program\""), "{err}");
    std::fs::remove_file(env.fixture.rootfs().join("boxbench/workloads/hello")).unwrap();
    let err = env.run_err(&env.rootfs_spec(Workload::Hello));
    assert!(err.to_string().contains("\"/boxbench/workloads/hello\""), "{err}");
    // A dangling symlink inside the rootfs is followed there, not on the host.
    std::os::unix::fs::symlink("/bin/nothing", env.fixture.rootfs().join("bin/dangling")).unwrap();
    let err = env.run_err(&env.rootfs_spec(command(&["dangling"])));
    assert!(err.to_string().contains("\"dangling\""), "{err}");
}

#[test]
fn bad_bundles_are_named() {
    let Some(env) = env() else { return };
    let config = env.fixture.bundle().join("config.json");
    std::fs::write(&config, "{\"ociVersion\": ").unwrap();
    let err = env.run_err(&env.bundle_spec(Workload::Hello));
    assert!(err.to_string().starts_with(&format!("bundle {}: not valid JSON", config.display())), "{err}");

    let mut value = env.fixture.config();
    value["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO"});
    env.fixture.write_config(&value);
    let err = env.run_err(&env.bundle_spec(Workload::Hello));
    assert_eq!(err.to_string(), format!("bundle {}: unsupported field \"linux.seccomp\"", config.display()));
}

#[test]
fn a_refused_memory_limit_is_an_error() {
    let Some(env) = env() else { return };
    let mut spec = env.rootfs_spec(Workload::Hello);
    spec.memory_limit_bytes = Some(0);
    let err = env.run_err(&spec);
    assert!(err.to_string().starts_with("memory limit \"0\""), "{err}");
}

#[test]
fn a_setup_step_the_kernel_refuses_is_named_and_cleaned_up() {
    let Some(env) = env() else { return };
    let mut value = env.fixture.config();
    value["mounts"][1]["options"] = serde_json::json!(["nosuid", "size=lots"]);
    env.fixture.write_config(&value);
    let err = env.run_err(&env.bundle_spec(Workload::Hello));
    let text = err.to_string();
    assert!(text.starts_with("container setup failed: mount tmpfs on ") && text.contains("size=lots"), "{text}");
}

#[test]
fn an_exec_the_kernel_refuses_is_named_and_cleaned_up() {
    let Some(env) = env() else { return };
    env.fixture.write_executable("bin/notelf", "this is not a program\n");
    let err = env.run_err(&env.rootfs_spec(command(&["/bin/notelf"])));
    assert_eq!(err.to_string(), "execve \"/bin/notelf\" in the container: ENOEXEC: Exec format error");
}

#[test]
fn the_launcher_refuses_an_empty_spec() {
    let Some(env) = env() else { return };
    let spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
    let err = env.launcher.prepare(&spec).unwrap_err();
    assert!(err.to_string().contains("images.rootfs"), "{err}");
}

#[test]
fn dropping_a_running_instance_releases_everything() {
    let Some(env) = env() else { return };
    let mut instance = env.launcher.prepare(&env.rootfs_spec(Workload::Idle)).unwrap();
    instance.launch().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_millis(50);
    assert_eq!(instance.wait(deadline).unwrap(), None, "the idle workload should still run");
    drop(instance);
    env.assert_nothing_left();
}

#[test]
fn a_killed_instance_is_signaled() {
    let Some(env) = env() else { return };
    let mut instance = env.launcher.prepare(&env.rootfs_spec(Workload::Idle)).unwrap();
    instance.launch().unwrap();
    instance.kill().unwrap();
    let outcome = instance.wait(std::time::Instant::now() + Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, Some(Outcome::Signaled { signal: 9 }));
    let record = instance.finish(outcome.unwrap()).unwrap();
    assert_eq!(record.exit_code, None);
    env.assert_nothing_left();
}

#[test]
fn the_workload_runs_in_the_instance_cgroup() {
    let Some(env) = env() else { return };
    let record = env.run(&env.rootfs_spec(command(&["cat", "/proc/self/cgroup"])));
    let expected = format!("/boxbench/container-{}-", std::process::id());
    assert!(record.console.contains(&expected), "{}", record.console);
}

#[test]
fn a_limit_too_small_to_start_in_is_out_of_memory() {
    let Some(env) = env() else { return };
    let mut spec = env.rootfs_spec(Workload::Hello);
    spec.memory_limit_bytes = Some(4096);
    let record = env.run(&spec);
    assert_eq!(record.outcome, Outcome::OutOfMemory, "console: {}", record.console);
}

#[test]
fn the_workload_starts_with_default_signal_handling() {
    let Some(env) = env() else { return };
    // Rust ignores SIGPIPE in boxbench itself; the workload must not inherit that, nor a blocked mask.
    let record = env.run(&env.rootfs_spec(command(&["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])));
    assert_eq!(record.console, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}
