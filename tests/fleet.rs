//! deploy/ansible/fleet.yml for real: ansible-playbook over real SSH to two sshd on loopback
//! addresses, a host where nothing listens, a host whose compare overruns its deadline, and a host
//! reached as a login user that is not root and has no sudo; then the merged report, and nothing left
//! behind.
//!
//! The second sshd runs in mount and UTS namespaces of its own with its own /etc/machine-id and
//! hostname: to boxbench it is a second machine (another host id), as a systemd-nspawn machine would
//! be, while its KVM, kernel and cgroups are this host's. Only loopback addresses and this machine's
//! own namespaces are addressed.

use std::collections::BTreeSet;
use std::fs;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boxbench_core::host::HostFacts;
use boxbench_testkit::require;

const BOXBENCH: &str = env!("CARGO_BIN_EXE_boxbench");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// An sshd of this test, stopped (and reaped) when dropped.
struct Sshd {
    child: Child,
}

impl Sshd {
    /// Starts sshd on `addr:port` with the test's keys; `namespace` runs it in new mount and UTS
    /// namespaces with `machine_id` over /etc/machine-id and `hostname` set.
    fn start(dir: &Path, name: &str, addr: Ipv4Addr, port: u16, namespace: Option<(&Path, &str)>) -> Self {
        let config = dir.join(format!("sshd-{name}.conf"));
        fs::write(
            &config,
            format!(
                "ListenAddress {addr}:{port}\nHostKey {key}\nAuthorizedKeysFile {auth}\nPidFile none\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n",
                key = dir.join("host_key").display(),
                auth = dir.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let sshd = format!("exec /usr/sbin/sshd -D -e -f {}", config.display());
        let mut command = match namespace {
            None => {
                let mut c = Command::new("sh");
                c.args(["-c", &sshd]);
                c
            }
            Some((machine_id, hostname)) => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--uts", "--propagation", "private", "sh", "-c"]).arg(format!(
                    "mount --bind {} /etc/machine-id && hostname {hostname} && {sshd}",
                    machine_id.display()
                ));
                c
            }
        };
        let log = fs::File::create(dir.join(format!("sshd-{name}.log"))).unwrap();
        let child = command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let mut sshd = Self { child };
        // Readiness, not a measurement: sshd listens within moments; a minute covers a loaded host.
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((addr, port)).is_err() {
            if let Some(status) = sshd.child.try_wait().unwrap() {
                panic!(
                    "sshd {name} exited ({status}): {}",
                    fs::read_to_string(dir.join(format!("sshd-{name}.log"))).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "sshd {name} did not listen on {addr}:{port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An unprivileged login user of this test (no sudo rights: none are given, and this host may not
/// have sudo at all), with a temporary home holding the test's client key. Removed with its home
/// (`userdel -r`) when dropped, after its processes (sshd sessions closing) have gone.
struct LoginUser {
    name: String,
    uid: u32,
    home: PathBuf,
}

impl LoginUser {
    fn create(name: &str, home: &Path, public_key: &Path) -> Self {
        // '*': no password, but not a locked account, which sshd without PAM refuses even with a key.
        let status = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", "--password", "*", "--home-dir"])
            .arg(home)
            .arg(name)
            .status()
            .unwrap();
        assert!(status.success(), "useradd {name}");
        let user = Self { name: name.to_owned(), uid: fs::metadata(home).unwrap().uid(), home: home.to_owned() };
        let ssh = home.join(".ssh");
        fs::create_dir(&ssh).unwrap();
        fs::copy(public_key, ssh.join("authorized_keys")).unwrap();
        let status = Command::new("chown").arg("-R").arg(format!("{name}:")).arg(&ssh).status().unwrap();
        assert!(status.success(), "chown {}", ssh.display());
        user
    }

    /// Pids of the processes running as this user.
    fn processes(&self) -> Vec<u32> {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok().map(|pid| (pid, e)))
            .filter(|(_, e)| e.metadata().is_ok_and(|m| m.uid() == self.uid))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Waits for the user's processes to end (sessions close within moments of the play's end; a
    /// minute covers a loaded host); returns those still running after that.
    fn wait_for_no_processes(&self) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LoginUser {
    fn drop(&mut self) {
        for pid in self.wait_for_no_processes() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = Command::new("userdel").arg("--remove").arg(&self.name).stderr(Stdio::null()).status();
    }
}

/// A port nothing listens on now at `addr`.
fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0)).unwrap().local_addr().unwrap().port()
}

fn on_path(program: &str) -> Result<PathBuf, String> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{program} is not installed (scripts/setup-host.sh installs it)"))
}

/// Pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && entry.file_name().to_string_lossy().parse::<u32>().is_ok() {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|e| e.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn the_playbook_measures_each_host_over_ssh_and_merges_one_report() {
    require!(boxbench_testkit::is_root(), "sshd, namespaces and the container backend need root");
    require!(on_path("ansible-playbook"));
    require!(on_path("ssh-keygen"));
    require!(on_path("unshare"));
    require!(on_path("useradd"));
    require!(on_path("userdel"));
    require!(Path::new("/usr/sbin/sshd").exists().then_some(()).ok_or("openssh-server is not installed"));
    require!(Path::new("/etc/machine-id").exists().then_some(()).ok_or("this host has no /etc/machine-id"));

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for key in ["host_key", "client_key"] {
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(key))
            .status()
            .unwrap();
        assert!(status.success());
    }
    fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    fs::write(dir.join("machine-id"), "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n").unwrap();
    // sshd's privilege-separation directory; removed again if this test made it.
    let privsep = Path::new("/run/sshd");
    let made_privsep = !privsep.exists();
    fs::create_dir_all(privsep).unwrap();

    // The user's home is outside the test's directory, which only root may enter.
    let home_parent = tempfile::tempdir().unwrap();
    fs::set_permissions(home_parent.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let user_name = format!("bbfleet{}", std::process::id());
    let user = LoginUser::create(&user_name, &home_parent.path().join("home"), &dir.join("client_key.pub"));

    let loopback_b = Ipv4Addr::new(127, 0, 0, 2);
    let (port_a, port_b) = (free_port(Ipv4Addr::LOCALHOST), free_port(loopback_b));
    let port_gone = free_port(Ipv4Addr::new(127, 0, 0, 3));
    let sshd_a = Sshd::start(dir, "a", Ipv4Addr::LOCALHOST, port_a, None);
    let sshd_b = Sshd::start(dir, "b", loopback_b, port_b, Some((&dir.join("machine-id"), "boxbench-fleet-b")));

    let fleet = dir.join("fleet");
    let remote = dir.join("remote");
    let control = dir.join("control");
    for d in [&remote, &control] {
        fs::create_dir(d).unwrap();
    }
    let host = |addr: &str, port: u16| serde_json::json!({"ansible_host": addr, "ansible_port": port});
    let mut late = host("127.0.0.1", port_a);
    // Over its deadline: a million container launches do not end in 10 s on any host.
    late["boxbench_runs"] = 1_000_000.into();
    late["boxbench_backends"] = serde_json::json!(["container"]);
    late["boxbench_timeout"] = 10.into();
    let inventory = serde_json::json!({
        "boxbench": {
            "hosts": {
                "loop-a": host("127.0.0.1", port_a),
                "loop-b": host("127.0.0.2", port_b),
                "gone": host("127.0.0.3", port_gone),
                "late": late,
                "plain": {"ansible_host": "127.0.0.1", "ansible_port": port_a, "ansible_user": user_name},
            },
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": dir.join("client_key"),
                "boxbench_runs": 2,
                "boxbench_backends": ["container", "microvm"],
                "boxbench_extra_args": ["--warmup", "0", "--uname-runs", "1", "--density", "0", "--no-full-os"],
                // The images scripts/test.sh built: these hosts are this machine.
                "boxbench_images_dir": Path::new(REPO).join("guest-images"),
                "boxbench_remote_tmp": remote,
            }
        },
        // The control machine's paths are localhost's variables.
        "all": {"vars": {"boxbench_binary": BOXBENCH, "boxbench_fleet_dir": fleet}}
    });
    let inventory_path = dir.join("inventory.yml");
    fs::write(&inventory_path, serde_json::to_vec_pretty(&inventory).unwrap()).unwrap();

    let output = Command::new("ansible-playbook")
        .arg("-i")
        .arg(&inventory_path)
        .arg(Path::new(REPO).join("deploy/ansible/fleet.yml"))
        .env("ANSIBLE_HOME", dir.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-local"))
        .env("ANSIBLE_REMOTE_TEMP", dir.join("ansible-remote"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        // No ControlPersist master left running after the play.
        .env("ANSIBLE_SSH_ARGS", "-o ControlMaster=no -o UserKnownHostsFile=/dev/null")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
        .env("TMPDIR", &control)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    fs::write(dir.join("ansible.log"), &log).unwrap();

    // Three hosts failed: the play says so.
    assert!(!output.status.success(), "the play exited 0 with three hosts failed:\n{log}");

    // Both reachable hosts' results came back, each its own host, each with this host's KVM flavour.
    let this_host = HostFacts::detect();
    let mut ids = Vec::new();
    for name in ["loop-a", "loop-b"] {
        let path = fleet.join(name).join("results.json");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{log}", path.display()));
        let results: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(results["host"]["label"], name);
        assert_eq!(results["host"]["facts"]["kvm"], serde_json::to_value(this_host.kvm).unwrap(), "{name}");
        assert_eq!(results["settings"]["runs_per_series"], 2);
        ids.push(results["host"]["facts"]["host_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], this_host.host_id, "loop-a is this machine");
    assert_ne!(ids[0], ids[1], "loop-b has its own machine id");

    // The failed hosts: one line each, saying why.
    let error = |name: &str| fs::read_to_string(fleet.join(name).join("error.txt")).unwrap_or_default();
    let gone = error("gone");
    assert_eq!(gone.lines().count(), 1, "{gone}");
    assert!(gone.contains("unreachable") && gone.contains("127.0.0.3"), "{gone}");
    let overran = error("late");
    assert_eq!(overran.lines().count(), 1, "{overran}");
    assert!(overran.contains("Run boxbench compare: over its deadline"), "{overran}");
    assert!(!fleet.join("late/results.json").exists());
    let no_root = error("plain");
    assert_eq!(no_root.lines().count(), 1, "{no_root}");
    if on_path("sudo").is_ok() {
        // sudo is there but gives this user nothing: Ansible's become says so ("Missing sudo password").
        assert!(no_root.contains("sudo"), "{no_root}");
    } else {
        let cause = format!("not root: logged in as {user_name} (uid {}) and sudo is not installed", user.uid);
        assert!(no_root.contains(&cause), "{no_root}");
    }

    // One merged report: two host columns, the missing hosts named with their errors.
    let comparison: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(fleet.join("comparison.json")).unwrap_or_else(|e| panic!("{e}\n{log}")),
    )
    .unwrap();
    let hosts = comparison["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 2);
    let missing: Vec<&str> =
        comparison["missing"].as_array().unwrap().iter().map(|m| m["host"].as_str().unwrap()).collect();
    assert_eq!(BTreeSet::from_iter(missing), BTreeSet::from(["gone", "late", "plain"]));
    let md = fs::read_to_string(fleet.join("report.md")).unwrap();
    let kvm_row = md.lines().find(|l| l.starts_with("| KVM |")).unwrap();
    assert_eq!(kvm_row.matches(this_host.kvm.label()).count(), 2, "{kvm_row}");
    assert!(md.contains("| claim |") && md.contains("loop-a") && md.contains("loop-b"), "{md}");
    assert!(md.contains(&format!("**gone**: {}", gone.trim())), "{md}");
    assert!(md.contains("**late**: Run boxbench compare: over its deadline"), "{md}");
    assert!(md.contains(&format!("**plain**: {}", no_root.trim())), "{md}");
    assert!(fleet.join("report.html").exists());

    // Nothing left on either host or on the control machine: no working directory, no process of
    // the run, the sshds stopped.
    assert!(entries(&remote).is_empty(), "left on the hosts: {:?}", entries(&remote));
    assert!(entries(&control).is_empty(), "left on the control machine: {:?}", entries(&control));
    let pids = [sshd_a.pid(), sshd_b.pid()];
    drop(sshd_a);
    drop(sshd_b);
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "sshd {pid} still runs");
    }
    let left = processes_mentioning(&dir.display().to_string());
    assert!(left.is_empty(), "processes left: {left:?}");
    let left = user.wait_for_no_processes();
    assert!(left.is_empty(), "processes of {user_name} left: {left:?}");
    let home = user.home.clone();
    drop(user);
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    assert!(!passwd.lines().any(|l| l.starts_with(&format!("{user_name}:"))), "{user_name} not removed");
    assert!(!home.exists(), "{} left", home.display());
    if made_privsep {
        fs::remove_dir(privsep).unwrap();
    }

    // A results.json of another schema among the fetched ones: the report still merges the others and
    // names that host and why, with a non-zero exit.
    fs::create_dir(fleet.join("old")).unwrap();
    fs::write(fleet.join("old/results.json"), "{\"schema_version\": 0, \"host\": {}}\n").unwrap();
    let out = dir.join("merged");
    let report = Command::new(BOXBENCH)
        .arg("report")
        .args(["loop-a", "loop-b", "old"].map(|h| fleet.join(h).join("results.json")))
        .arg("--out")
        .arg(&out)
        .arg("--keep-going")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&report.stderr);
    assert_eq!(report.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing host old:") && stderr.contains("schema_version 0 is not supported"), "{stderr}");
    let md = fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("**old**:") && md.contains("schema_version 0 is not supported"), "{md}");
}
