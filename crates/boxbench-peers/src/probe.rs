//! Which peer tools this host has and whether each backend can run, for `boxbench doctor`.

use std::path::{Path, PathBuf};

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::host::KvmFlavour;
use serde::Serialize;

use crate::docker::DaemonPlan;
use crate::oci_runtime::{OciRuntime, RUNSC_PLATFORM, missing_cgroup_manager};
use crate::tool::{Tool, find_on_path};

/// One peer backend's state on this host.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// The backend name (`crun`, `qemu-microvm`, ...).
    pub name: &'static str,
    /// The tool's binary, if found.
    pub binary: Option<PathBuf>,
    /// The version it reports.
    pub version: Option<String>,
    /// Whether the backend can launch instances here as boxbench drives it.
    pub usable: bool,
    /// Why not, or what a user should know about how it will run.
    pub detail: Option<String>,
    /// The Debian package that provides the tool (`None`: not packaged in Debian).
    pub debian_package: Option<&'static str>,
}

/// The state of every peer backend, in [`crate::BACKENDS`] order.
pub fn probe_all() -> Vec<PeerStatus> {
    let root = nix::unistd::geteuid().is_root();
    let cgroups = CgroupHost::detect();
    let kvm = KvmFlavour::detect();
    // Everything boxbench runs goes into a per-instance cgroup, which needs root and a memory
    // controller.
    let host_problem = if !root {
        Some("boxbench needs root for per-instance cgroups".to_owned())
    } else {
        cgroups.as_ref().err().map(|e| e.to_string())
    };
    let mut statuses = Vec::new();
    for runtime in OciRuntime::ALL {
        let mut status =
            tool_status(runtime.name(), find_on_path(runtime.name()), runtime.debian_package(), host_problem.clone());
        if status.binary.is_none() && runtime.debian_package().is_none() {
            status.detail = Some(format!("not found on PATH ({})", runtime.install_hint()));
        } else if let (true, Some(binary), Ok(host)) = (status.usable, &status.binary, &cgroups)
            && let Some(problem) = missing_cgroup_manager(runtime, binary, host.mode)
        {
            status.usable = false;
            status.detail = Some(problem);
        } else if status.usable && runtime.is_application_kernel() {
            status.detail = Some(format!(
                "gVisor application kernel on the {RUNSC_PLATFORM} platform (this release has no systrap; \
                 boxbench does not use its KVM platform)"
            ));
        }
        statuses.push(status);
    }
    statuses.push(tool_status("podman", find_on_path("podman"), Some("podman"), host_problem.clone()));
    let docker_client = crate::docker::default_client();
    let mut docker = tool_status("docker", docker_client, Some("docker.io"), host_problem.clone());
    if docker.usable {
        // Which daemon compare will measure through: one that answers, or a private one it starts.
        let plan = crate::docker::daemon_plan();
        docker.usable = matches!(plan, DaemonPlan::Running { .. } | DaemonPlan::StartPrivate { .. });
        docker.detail = Some(plan.brief());
    }
    statuses.push(docker);
    let qemu = find_on_path("qemu-system-x86_64");
    let accel_detail = match kvm {
        KvmFlavour::Absent => "no /dev/kvm: guests run under TCG (emulated)".to_owned(),
        KvmFlavour::Pvm => {
            "kvm_pvm host: Linux guests run under TCG (emulated), boxbench's own guest under KVM".to_owned()
        }
        other => format!("{}: guests run under KVM", other.label()),
    };
    for name in ["qemu-microvm", "qemu-q35"] {
        let mut status = tool_status(name, qemu.clone(), Some("qemu-system-x86"), host_problem.clone());
        if status.usable {
            status.detail = Some(accel_detail.clone());
        }
        statuses.push(status);
    }
    let kvm_problem = (kvm == KvmFlavour::Absent).then(|| "Firecracker needs /dev/kvm".to_owned());
    let mut firecracker =
        tool_status("firecracker", find_on_path("firecracker"), None, host_problem.clone().or(kvm_problem));
    if firecracker.binary.is_none() {
        firecracker.detail =
            Some("not on PATH and not packaged in Debian; give a binary with --firecracker".to_owned());
    }
    statuses.push(firecracker);
    for kind in crate::SystemContainer::ALL {
        let (program, package) = kind.program();
        let mut status = tool_status(kind.backend_name(), find_on_path(program), Some(package), host_problem.clone());
        if status.usable {
            status.detail = Some(format!("system container: {program} boots the full-OS disk's tree to systemd"));
        }
        statuses.push(status);
    }
    statuses
}

fn tool_status(
    name: &'static str,
    binary: Option<PathBuf>,
    debian_package: Option<&'static str>,
    host_problem: Option<String>,
) -> PeerStatus {
    let Some(binary) = binary else {
        let detail = match debian_package {
            Some(package) => format!("not found on PATH (Debian package: {package})"),
            None => "not found on PATH".to_owned(),
        };
        return PeerStatus { name, binary: None, version: None, usable: false, detail: Some(detail), debian_package };
    };
    match Tool::at(name, Path::new(&binary)) {
        Ok(tool) => PeerStatus {
            name,
            binary: Some(binary),
            version: Some(tool.version),
            usable: host_problem.is_none(),
            detail: host_problem,
            debian_package,
        },
        Err(e) => PeerStatus {
            name,
            binary: Some(binary),
            version: None,
            usable: false,
            detail: Some(e.to_string()),
            debian_package,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_is_probed_with_a_reason_when_unusable() {
        let statuses = probe_all();
        let names: Vec<&str> = statuses.iter().map(|s| s.name).collect();
        assert_eq!(names, crate::BACKENDS.to_vec());
        for status in &statuses {
            if !status.usable {
                assert!(status.detail.is_some(), "{} unusable without a reason", status.name);
            }
            if status.binary.is_some() && status.usable {
                assert!(status.version.is_some(), "{} usable without a version", status.name);
            }
        }
    }

    #[test]
    fn missing_tool_names_its_package() {
        let status = tool_status("crun", None, Some("crun"), None);
        assert!(!status.usable);
        assert_eq!(status.detail.as_deref(), Some("not found on PATH (Debian package: crun)"));
    }
}
