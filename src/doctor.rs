//! `boxbench doctor`: what this host can run, and why not where it cannot.

use std::fmt::Write as _;
use std::process::ExitCode;

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::host::{HostFacts, KvmFlavour};
use boxbench_images::ImageBuilder;
use boxbench_peers::{DaemonPlan, DockerVersions, PeerStatus, daemon_plan, docker_versions, probe_all};
use clap::Args;
use serde::Serialize;

/// Arguments of `boxbench doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the findings as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// What `doctor` found.
#[derive(Debug, Serialize)]
struct Findings {
    host: HostFacts,
    host_label: String,
    cgroup: Result<CgroupHost, String>,
    images_built: bool,
    images_dir: String,
    /// The micro-VM kernel's release, when built for the current recipe.
    microvm_kernel: Option<String>,
    /// Debian's cloud kernel release, when fetched.
    debian_cloud_kernel: Option<String>,
    /// Whether the full-OS VM disk (claim 3) is built.
    full_os_disk: bool,
    linux_guests: String,
    /// Which guests see a disk of boxbench's VMM (`run -b microvm --disk PATH`).
    disks: &'static str,
    /// What Docker will run on: a daemon that answers, a private dockerd compare starts, or nothing.
    docker_daemon: DaemonPlan,
    /// Both halves of `docker version`: the client's, and the server's through the Engine API.
    docker_versions: DockerVersions,
    peers: Vec<PeerStatus>,
}

/// Which guests can use a virtio-blk disk of boxbench's VMM.
const DISK_GUESTS: &str = "`run -b microvm --disk PATH` gives the VM a virtio-blk disk (virtio-mmio, announced on \
                           the kernel command line): boxbench's micro-VM kernel sees it as /dev/vda; Debian's cloud \
                           kernel does not (its virtio_mmio module takes no command-line devices)";

/// How Linux guests run on a host with this KVM.
fn linux_guests(kvm: KvmFlavour) -> String {
    match kvm {
        KvmFlavour::Vmx | KvmFlavour::Svm => "boot under KVM in every VMM".to_owned(),
        KvmFlavour::Pvm => "boxbench's micro-VM kernel boots under this KVM with its kvm_pvm compatibility \
                            parameters, in about a minute (guest kernel code is emulated); a stock kernel is \
                            refused by boxbench's VMM (--force tries anyway); compare boots Linux under QEMU's \
                            TCG emulation"
            .to_owned(),
        KvmFlavour::Absent | KvmFlavour::Unknown => "only under QEMU's TCG emulation (no usable KVM)".to_owned(),
    }
}

/// Runs `boxbench doctor`.
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let host = HostFacts::detect();
    let builder = ImageBuilder::default_dirs();
    let paths = builder.paths();
    let findings = Findings {
        host_label: host.label(),
        linux_guests: linux_guests(host.kvm),
        disks: DISK_GUESTS,
        host,
        cgroup: CgroupHost::detect().map_err(|e| e.to_string()),
        images_built: paths.bundle.join("config.json").is_file() && paths.rootfs.is_dir(),
        images_dir: builder.out_dir().display().to_string(),
        microvm_kernel: boxbench::images::built_microvm_kernel().map(|k| k.release),
        debian_cloud_kernel: builder.debian_cloud_kernel().map(|k| k.release),
        full_os_disk: builder.full_os_disk().is_some(),
        docker_daemon: daemon_plan(),
        docker_versions: docker_versions(std::env::var("DOCKER_HOST").ok().as_deref()),
        peers: probe_all(),
    };
    let mut out = String::new();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&findings)?)?;
        crate::write_stdout(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    writeln!(out, "host:      {}", findings.host_label)?;
    writeln!(out, "root:      {}", yes_no(findings.host.root))?;
    writeln!(out, "kvm:       {}", findings.host.kvm.label())?;
    match &findings.cgroup {
        Ok(c) => writeln!(
            out,
            "cgroups:   {} — memory controller {:?} at {}",
            c.mode,
            c.memory_version,
            c.memory_root.display()
        )?,
        Err(e) => writeln!(out, "cgroups:   unusable: {e}")?,
    }
    let or_missing = |found: &Option<String>, how: &str| found.clone().unwrap_or_else(|| format!("not yet: {how}"));
    writeln!(
        out,
        "images:    {} ({})",
        if findings.images_built {
            "rootfs, bundle, initramfs, OCI image built"
        } else {
            "not built yet: `boxbench images build`"
        },
        findings.images_dir
    )?;
    writeln!(out, "           micro-VM kernel {}", or_missing(&findings.microvm_kernel, "`boxbench images build`"))?;
    writeln!(
        out,
        "           Debian cloud kernel {}",
        or_missing(&findings.debian_cloud_kernel, "`boxbench images build`")
    )?;
    writeln!(
        out,
        "           full-OS VM disk {}",
        if findings.full_os_disk {
            "built"
        } else {
            "not yet: `boxbench images build --full-os` (or compare builds it)"
        }
    )?;
    writeln!(out, "linux VMs: {}", findings.linux_guests)?;
    writeln!(out, "disks:     {}", findings.disks)?;
    writeln!(out, "docker:    {}", findings.docker_daemon.describe())?;
    let versions = &findings.docker_versions;
    match (&versions.client_version, &versions.client_binary) {
        (Some(version), Some(binary)) => writeln!(out, "           client {version} ({})", binary.display())?,
        _ => writeln!(out, "           client not installed (Debian package docker.io)")?,
    }
    match &versions.server {
        Ok(server) => writeln!(
            out,
            "           server {}, API {} (minimum {}), {}, {}/{} (GET /version at {})",
            server.version,
            server.api_version,
            server.min_api_version,
            server.go_version,
            server.os,
            server.arch,
            versions.host
        )?,
        Err(why) => writeln!(out, "           server not asked: {why}")?,
    }
    writeln!(out, "peers:")?;
    for peer in &findings.peers {
        let state = if peer.usable { "usable" } else { "not usable" };
        let version = peer.version.as_deref().unwrap_or("-");
        let detail = match (&peer.detail, peer.binary.is_none(), peer.debian_package) {
            (_, true, Some(package)) => format!("not installed (Debian package: {package})"),
            (Some(detail), _, _) => detail.clone(),
            (None, _, _) => String::new(),
        };
        writeln!(out, "  {:<14} {:<10} {:<24} {}", peer.name, state, version, detail)?;
    }
    crate::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}
