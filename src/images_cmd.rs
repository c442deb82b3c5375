//! `boxbench images build|sizes`: builds the guest images and reports their sizes.

use std::fmt::Write as _;
use std::process::ExitCode;

use boxbench::images::{ProgressLines, build_default};
use boxbench_images::ImageBuilder;
use clap::{Args, Subcommand};

/// `boxbench images …`
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Builds every guest image that is missing or out of date (cached by a hash of its recipe), and
    /// fetches Debian's cloud kernel for the Linux VM guests.
    Build(BuildArgs),
    /// Prints each artefact's size, uncompressed and compressed.
    Sizes(SizesArgs),
}

/// Arguments of `boxbench images build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Also build the full-OS VM disk (Debian minbase with a kernel, by mmdebstrap; a few minutes).
    #[arg(long)]
    pub full_os: bool,
}

/// Arguments of `boxbench images sizes`.
#[derive(Debug, Args)]
pub struct SizesArgs {
    /// Print the sizes as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `boxbench images …`.
pub fn images(cmd: &ImagesCommand) -> anyhow::Result<ExitCode> {
    let mut out = String::new();
    match cmd {
        ImagesCommand::Build(args) => {
            let images = build_default(true)?;
            let builder = ImageBuilder::default_dirs();
            let kernel = builder.fetch_debian_cloud_kernel(&ProgressLines::new(true))?;
            let microvm_kernel = boxbench::images::build_microvm_kernel(&ProgressLines::new(true))?;
            if args.full_os {
                let disk = builder.build_full_os_disk(&ProgressLines::new(true))?;
                writeln!(out, "full-OS disk: {} ({} packages)", disk.qcow2.display(), disk.packages)?;
            }
            writeln!(out, "rootfs:    {}", images.rootfs.display())?;
            writeln!(out, "bundle:    {}", images.bundle.display())?;
            writeln!(out, "initramfs: {}", images.initramfs_gz.display())?;
            writeln!(out, "oci image: {}", images.oci_layout.display())?;
            writeln!(out, "debian cloud kernel {}: {}", kernel.release, kernel.vmlinuz.display())?;
            writeln!(out, "micro-VM kernel {}: {}", microvm_kernel.release, microvm_kernel.vmlinux.display())?;
        }
        ImagesCommand::Sizes(args) => {
            let sizes = ImageBuilder::default_dirs().sizes()?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&sizes)?)?;
            } else {
                writeln!(out, "{:<24} {:>14} {:>14}  how", "artefact", "uncompressed", "compressed")?;
                for s in sizes {
                    writeln!(
                        out,
                        "{:<24} {:>11.2} MB {:>11.2} MB  {}",
                        s.name,
                        s.uncompressed_bytes as f64 / 1e6,
                        s.compressed_bytes as f64 / 1e6,
                        s.method
                    )?;
                }
            }
        }
    }
    crate::write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}
