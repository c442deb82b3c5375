//! `boxbench doctor`: what this host can run, and why not where it cannot.

use std::process::ExitCode;

use boxbench_core::cgroup::CgroupHost;
use boxbench_core::host::HostFacts;
use boxbench_images::ImageBuilder;
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
}

/// Runs `boxbench doctor`.
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let host = HostFacts::detect();
    let builder = ImageBuilder::default_dirs();
    let paths = builder.paths();
    let findings = Findings {
        host_label: host.label(),
        host,
        cgroup: CgroupHost::detect().map_err(|e| e.to_string()),
        images_built: paths.bundle.join("config.json").is_file() && paths.rootfs.is_dir(),
        images_dir: builder.out_dir().display().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
        return Ok(ExitCode::SUCCESS);
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("host:      {}", findings.host_label);
    println!("root:      {}", yes_no(findings.host.root));
    println!("kvm:       {}", findings.host.kvm.label());
    match &findings.cgroup {
        Ok(c) => {
            println!("cgroups:   {} — memory controller {:?} at {}", c.mode, c.memory_version, c.memory_root.display())
        }
        Err(e) => println!("cgroups:   unusable: {e}"),
    }
    println!(
        "images:    {} ({})",
        if findings.images_built { "built" } else { "not built yet: `boxbench images build`" },
        findings.images_dir
    );
    Ok(ExitCode::SUCCESS)
}
