//! The container backend for real, as root, on a busybox rootfs built from the host's busybox.
//! Each test checks that the instance left nothing behind: no cgroup, no mount, no child process.

mod common;

use std::time::Duration;

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::measure::launch_once;
use boxbench_core::{ImagePaths, InstanceSpec, LaunchError, Launcher, Outcome, Record, Workload};
use boxbench_testkit::require;
use common::{Env, SENTINEL, env};

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
    let env = require!(env());
    let record = env.run(&env.rootfs_spec(command(&["sh", "-c", "echo $$"])));
    assert_eq!(record.outcome, Outcome::Exited { code: 0 });
    assert_eq!(record.console, "1\n");
}

#[test]
fn the_container_has_its_own_hostname() {
    let env = require!(env());
    let mut spec = env.rootfs_spec(command(&["hostname"]));
    spec.hostname = "bb-test-host".to_owned();
    let record = env.run(&spec);
    assert_eq!(record.console, "bb-test-host\n");
    assert_ne!(nix::unistd::gethostname().unwrap(), "bb-test-host");
}

#[test]
fn the_network_namespace_has_only_loopback() {
    let env = require!(env());
    let record = env.run(&env.rootfs_spec(command(&["ls", "/sys/class/net"])));
    assert_eq!(record.console, "lo\n");
    let record = env.run(&env.rootfs_spec(command(&["cat", "/proc/net/dev"])));
    let interfaces: Vec<&str> =
        record.console.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    assert_eq!(interfaces, ["lo"], "{}", record.console);
}

#[test]
fn the_rootfs_is_the_root() {
    let env = require!(env());
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
    let env = require!(env());
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
    let env = require!(env());
    let script = "for d in null zero full random urandom tty; do test -c /dev/$d || echo missing $d; done; \
                  head -c 4 /dev/zero | wc -c; readlink /dev/fd; echo x > /dev/null && echo ok";
    let record = env.run(&env.rootfs_spec(command(&["sh", "-c", script])));
    assert_eq!(record.console, "4\n/proc/self/fd\nok\n");
}

#[test]
fn hello_fills_the_record() {
    let env = require!(env());
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
    let env = require!(env());
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
    let env = require!(env());
    let record = env.run(&env.rootfs_spec(Workload::Uname));
    let host = nix::sys::utsname::uname().unwrap();
    assert_eq!(record.console, format!("{}\nBOXBENCH_READY\n", host.release().to_string_lossy()));
}

#[test]
fn a_bundle_runs_its_args_unless_a_command_overrides_them() {
    let env = require!(env());
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
    let env = require!(env());
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
    let env = require!(env());
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
    let env = require!(env());
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
    let env = require!(env());
    let mut spec = env.rootfs_spec(command(&["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]));
    spec.memory_limit_bytes = Some(32 << 20);
    let record = env.run(&spec);
    assert_eq!(record.outcome, Outcome::OutOfMemory, "console: {}", record.console);
    let peak = record.memory.peak_bytes.unwrap();
    assert!(peak <= 32 << 20, "peak {peak} above the 32 MiB limit");
}

#[test]
fn the_deadline_kills_an_idle_workload() {
    let env = require!(env());
    let record = env.run(&env.bundle_spec(command(&["/boxbench/workloads/idle"])).with_timeout(Duration::from_secs(1)));
    assert_eq!(record.outcome, Outcome::DeadlineExceeded { seconds: 1.0 });
    assert_eq!(record.exit_code, None);
    assert!(record.phases.workload_ms.is_some());
}

#[test]
fn a_missing_rootfs_is_named() {
    let env = require!(env());
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
    let env = require!(env());
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
    let env = require!(env());
    let config = env.fixture.bundle().join("config.json");
    std::fs::write(&config, "{\"ociVersion\": ").unwrap();
    let err = env.run_err(&env.bundle_spec(Workload::Hello));
    assert!(err.to_string().starts_with(&format!("bundle {}: not valid JSON", config.display())), "{err}");

    let mut value = env.fixture.config();
    value["linux"]["sysctl"] = serde_json::json!({"kernel.msgmax": "8192"});
    env.fixture.write_config(&value);
    let err = env.run_err(&env.bundle_spec(Workload::Hello));
    assert_eq!(err.to_string(), format!("bundle {}: unsupported field \"linux.sysctl\"", config.display()));
}

#[test]
fn a_refused_memory_limit_is_an_error() {
    let env = require!(env());
    let mut spec = env.rootfs_spec(Workload::Hello);
    spec.memory_limit_bytes = Some(0);
    let err = env.run_err(&spec);
    assert!(err.to_string().starts_with("memory limit \"0\""), "{err}");
}

#[test]
fn a_setup_step_the_kernel_refuses_is_named_and_cleaned_up() {
    let env = require!(env());
    let mut value = env.fixture.config();
    value["mounts"][1]["options"] = serde_json::json!(["nosuid", "size=lots"]);
    env.fixture.write_config(&value);
    let err = env.run_err(&env.bundle_spec(Workload::Hello));
    let text = err.to_string();
    assert!(text.starts_with("container setup failed: mount tmpfs on ") && text.contains("size=lots"), "{text}");
}

#[test]
fn an_exec_the_kernel_refuses_is_named_and_cleaned_up() {
    let env = require!(env());
    env.fixture.write_executable("bin/notelf", "this is not a program\n");
    let err = env.run_err(&env.rootfs_spec(command(&["/bin/notelf"])));
    assert_eq!(err.to_string(), "execve \"/bin/notelf\" in the container: ENOEXEC: Exec format error");
}

#[test]
fn the_launcher_refuses_an_empty_spec() {
    let env = require!(env());
    let spec = InstanceSpec::new(Workload::Hello, ImagePaths::default());
    let err = env.launcher.prepare(&spec).unwrap_err();
    assert!(err.to_string().contains("images.rootfs"), "{err}");
}

#[test]
fn dropping_a_running_instance_releases_everything() {
    let env = require!(env());
    let mut instance = env.launcher.prepare(&env.rootfs_spec(Workload::Idle)).unwrap();
    instance.launch().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_millis(50);
    assert_eq!(instance.wait(deadline).unwrap(), None, "the idle workload should still run");
    drop(instance);
    env.assert_nothing_left();
}

#[test]
fn a_killed_instance_is_signaled() {
    let env = require!(env());
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
    let env = require!(env());
    let record = env.run(&env.rootfs_spec(command(&["cat", "/proc/self/cgroup"])));
    let expected = format!("/boxbench/container-{}-", std::process::id());
    assert!(record.console.contains(&expected), "{}", record.console);
}

#[test]
fn a_limit_too_small_to_start_in_is_out_of_memory() {
    let env = require!(env());
    let mut spec = env.rootfs_spec(Workload::Hello);
    spec.memory_limit_bytes = Some(4096);
    let record = env.run(&spec);
    assert_eq!(record.outcome, Outcome::OutOfMemory, "console: {}", record.console);
}

#[test]
fn the_workload_starts_with_default_signal_handling() {
    let env = require!(env());
    // Rust ignores SIGPIPE in boxbench itself; the workload must not inherit that, nor a blocked mask.
    let record = env.run(&env.rootfs_spec(command(&["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"])));
    assert_eq!(record.console, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

// OCI's default isolation (issue 7, item 5), checked from inside the workload.

/// The host's masked paths that exist, each with whether it is a directory.
fn host_masked_paths() -> Vec<(&'static str, bool)> {
    boxbench_container::rootfs::DEFAULT_MASKED_PATHS
        .into_iter()
        .filter_map(|path| std::fs::metadata(path).ok().map(|meta| (path, meta.is_dir())))
        .collect()
}

#[test]
fn the_workload_sees_only_its_own_processes() {
    let env = require!(env());
    let host_pids = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    assert!(host_pids > 3, "the host should run more processes than the container");
    let record = env.run(&env.rootfs_spec(command(&["sh", "-c", "ps -o pid,comm; echo /proc/[0-9]*"])));
    let lines: Vec<&str> = record.console.lines().collect();
    // ps: its header, the shell as PID 1 and ps itself; then the shell's own glob of /proc.
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["PID", "COMMAND"], "{}", record.console);
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["1", "sh"], "{}", record.console);
    assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["2", "ps"], "{}", record.console);
    assert_eq!(lines[3..], ["/proc/1"], "{}", record.console);
}

#[test]
fn the_workload_cannot_mount_over_a_path_and_nothing_reaches_the_host() {
    let env = require!(env());
    let script = "mount -t tmpfs none /mnt && echo mounted; umount /proc && echo unmounted; \
                  grep -c ' /mnt ' /proc/self/mountinfo; touch /mnt/written 2>/dev/null";
    let host_mnt = env.fixture.rootfs().join("mnt");
    // A writable root (a rootfs directory) and a read-only one (the bundle).
    for (spec, writable) in [
        (env.rootfs_spec(command(&["sh", "-c", script])), true),
        (env.bundle_spec(command(&["sh", "-c", script])), false),
    ] {
        let record = env.run(&spec);
        // busybox's words for EPERM from mount(2).
        assert!(record.console.starts_with("mount: permission denied"), "{}", record.console);
        // Neither the mount nor the unmount of /proc happened.
        assert!(!record.console.contains("mounted\n"), "{}", record.console);
        assert!(record.console.contains("umount: can't unmount /proc: Operation not permitted"), "{}", record.console);
        assert!(record.console.ends_with("\n0\n"), "{}", record.console);
        // `run` checked the host has no mount left; the write went to the rootfs's own /mnt, not
        // to a tmpfs over it, and only where the root is writable.
        let written = host_mnt.join("written");
        assert_eq!(written.exists(), writable);
        let _ = std::fs::remove_file(written);
    }
}

#[test]
fn proc_sysrq_trigger_and_proc_sys_cannot_be_written() {
    let env = require!(env());
    let script = "echo h > /proc/sysrq-trigger; echo boxbench > /proc/sys/kernel/domainname; cat /proc/sys/kernel/domainname; \
                  grep -E ' /proc/(sys|sysrq-trigger|bus|fs|irq) ' /proc/self/mountinfo | cut -d' ' -f5,6";
    let record = env.run(&env.bundle_spec(command(&["sh", "-c", script])));
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let console = &record.console;
    if std::path::Path::new("/proc/sysrq-trigger").exists() {
        assert!(
            console.contains("can't create /proc/sysrq-trigger: Read-only file system")
                || console.contains("can't create /proc/sysrq-trigger: Permission denied"),
            "{console}"
        );
    } else {
        eprintln!("note: this kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ off); the write fails for that");
        assert!(console.contains("can't create /proc/sysrq-trigger"), "{console}");
    }
    assert!(console.contains("can't create /proc/sys/kernel/domainname: Read-only file system"), "{console}");
    assert!(console.contains(&host_domain), "{console}");
    // Every default read-only path the kernel has is a read-only mount.
    for path in boxbench_container::rootfs::DEFAULT_READONLY_PATHS {
        if std::path::Path::new(path).exists() {
            let line = console
                .lines()
                .find(|l| l.starts_with(&format!("{path} ")))
                .unwrap_or_else(|| panic!("{path} not mounted: {console}"));
            assert!(line.ends_with(" ro") || line.contains(" ro,"), "{line}");
        }
    }
}

#[test]
fn masked_paths_read_as_empty() {
    let env = require!(env());
    let masked = host_masked_paths();
    assert!(!masked.is_empty(), "the host has none of OCI's masked paths");
    if !std::path::Path::new("/proc/kcore").exists() {
        eprintln!("note: this kernel has no /proc/kcore (CONFIG_PROC_KCORE off); checking the masked paths it has");
    }
    let script: String = masked
        .iter()
        .map(|(path, is_dir)| {
            if *is_dir {
                format!("echo {path} $(ls -A {path} | wc -l); ")
            } else {
                format!("echo {path} $(cat {path} | wc -c); ")
            }
        })
        .collect();
    let expected: String = masked.iter().map(|(path, _)| format!("{path} 0\n")).collect();
    for spec in [env.rootfs_spec(command(&["sh", "-c", &script])), env.bundle_spec(command(&["sh", "-c", &script]))] {
        let record = env.run(&spec);
        assert_eq!(record.console, expected);
    }
    // Without the masks (an empty list in the bundle), the same paths show what they hold.
    let mut value = env.fixture.config();
    value["linux"]["maskedPaths"] = serde_json::json!([]);
    env.fixture.write_config(&value);
    let record = env.run(&env.bundle_spec(command(&["sh", "-c", &script])));
    assert_ne!(record.console, expected);
}

/// The `Cap*` and `NoNewPrivs` lines of the workload's /proc/self/status.
fn status_lines(env: &Env, spec: &InstanceSpec) -> String {
    let record = env.run(spec);
    assert_eq!(record.outcome, Outcome::Exited { code: 0 }, "{}", record.console);
    record.console
}

fn cap_lines(inh: u64, prm: u64, eff: u64, bnd: u64, amb: u64, nnp: u8) -> String {
    format!(
        "CapInh:\t{inh:016x}\nCapPrm:\t{prm:016x}\nCapEff:\t{eff:016x}\nCapBnd:\t{bnd:016x}\nCapAmb:\t{amb:016x}\nNoNewPrivs:\t{nnp}\n"
    )
}

const STATUS: &[&str] = &["grep", "-E", "^(Cap|NoNewPrivs)", "/proc/self/status"];

#[test]
fn the_workload_has_ocis_default_capabilities_and_no_new_privs() {
    let env = require!(env());
    let oci = boxbench_container::CapabilitySets::oci_default();
    assert_eq!(oci.effective, 0x2000_0420);
    let expected = cap_lines(0, oci.permitted, oci.effective, oci.bounding, 0, 1);
    assert_eq!(status_lines(&env, &env.rootfs_spec(command(STATUS))), expected);
    // The bundle has no capabilities nor noNewPrivileges: the same defaults, on a read-only root.
    assert_eq!(status_lines(&env, &env.bundle_spec(command(STATUS))), expected);
}

#[test]
fn a_bundles_capabilities_are_applied() {
    let env = require!(env());
    let (chown, kill, bind) = (1u64 << 0, 1u64 << 5, 1u64 << 10);
    let mut value = env.fixture.config();
    value["process"]["noNewPrivileges"] = serde_json::json!(false);
    value["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "inheritable": ["CAP_KILL"],
    });
    env.fixture.write_config(&value);
    // Root's exec makes permitted and effective its bounding and inheritable sets.
    let all = chown | kill | bind;
    assert_eq!(status_lines(&env, &env.bundle_spec(command(STATUS))), cap_lines(kill, all, all, all, 0, 0));

    // Another user keeps only the ambient set across exec; ambient needs permitted and inheritable.
    value["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    value["process"]["noNewPrivileges"] = serde_json::json!(true);
    value["process"]["capabilities"] = serde_json::json!({
        "bounding": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
        "effective": ["CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
    });
    env.fixture.write_config(&value);
    let record =
        env.run(&env.bundle_spec(command(&["sh", "-c", "id -u; grep -E '^(Cap|NoNewPrivs)' /proc/self/status"])));
    assert_eq!(record.console, format!("1000\n{}", cap_lines(bind, bind, bind, bind | kill, bind, 1)));
}

#[test]
fn a_bundles_readonly_paths_apply_to_its_own_files() {
    let env = require!(env());
    let mut value = env.fixture.config();
    value["root"]["readonly"] = serde_json::json!(false);
    value["linux"]["readonlyPaths"] = serde_json::json!(["/boxbench/sentinel", "/no/such/path"]);
    value["linux"]["maskedPaths"] = serde_json::json!(["/boxbench/workloads", "/tmp/none"]);
    env.fixture.write_config(&value);
    let script = "echo changed > /boxbench/sentinel; cat /boxbench/sentinel; echo; ls -A /boxbench/workloads | wc -l; \
                  touch /boxbench/new && echo writable";
    let record = env.run(&env.bundle_spec(command(&["sh", "-c", script])));
    assert_eq!(
        record.console,
        format!("sh: can't create /boxbench/sentinel: Read-only file system\n{SENTINEL}\n0\nwritable\n")
    );
    assert_eq!(std::fs::read_to_string(env.fixture.rootfs().join("boxbench/sentinel")).unwrap(), SENTINEL);
    assert!(env.fixture.rootfs().join("boxbench/workloads/hello").exists());
}

#[test]
fn a_bad_isolation_setting_is_named_before_launch() {
    let env = require!(env());
    let config = env.fixture.bundle().join("config.json");
    let mut value = env.fixture.config();
    value["process"]["capabilities"] = serde_json::json!({"bounding": ["CAP_SYS_MAGIC"]});
    env.fixture.write_config(&value);
    let err = env.run_err(&env.bundle_spec(Workload::Hello));
    assert_eq!(
        err.to_string(),
        format!(
            "bundle {}: field \"process.capabilities.bounding\": unknown capability \"CAP_SYS_MAGIC\"",
            config.display()
        )
    );
    let mut value = env.fixture.config();
    value["linux"]["readonlyPaths"] = serde_json::json!(["proc/sys"]);
    env.fixture.write_config(&value);
    let err = env.run_err(&env.bundle_spec(Workload::Hello));
    assert!(err.to_string().contains("\"linux.readonlyPaths\""), "{err}");
}
