//! Which backends the CLI offers, how each is constructed from the command line, and which images it
//! runs from when the user names none.

use std::path::PathBuf;

use anyhow::Context;
use boxbench_core::{ImagePaths, Launcher};
use clap::{Args, ValueEnum};

/// The `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// boxbench's own namespace container launcher.
    Container,
}

/// Options that select a backend's images and settings.
#[derive(Debug, Clone, Args)]
pub struct BackendOptions {
    /// A root filesystem directory to run (containers); default: the built busybox rootfs.
    #[arg(long, conflicts_with = "bundle")]
    pub rootfs: Option<PathBuf>,
    /// An OCI runtime bundle directory (`config.json` + its root) to run (containers).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
}

/// Constructs the launcher of `choice`.
pub fn launcher(choice: BackendChoice, _options: &BackendOptions) -> anyhow::Result<Box<dyn Launcher>> {
    Ok(match choice {
        BackendChoice::Container => Box::new(boxbench_container::ContainerLauncher::new()?),
    })
}

/// The images an instance of `choice` runs from: the user's, or the built defaults (built on first use).
pub fn image_paths(choice: BackendChoice, options: &BackendOptions) -> anyhow::Result<ImagePaths> {
    match choice {
        BackendChoice::Container if options.rootfs.is_some() || options.bundle.is_some() => {
            Ok(ImagePaths { rootfs: options.rootfs.clone(), bundle: options.bundle.clone(), ..ImagePaths::default() })
        }
        BackendChoice::Container => {
            let built = crate::images::build_default(false).context("building the default guest images")?;
            Ok(ImagePaths { rootfs: Some(built.rootfs), ..ImagePaths::default() })
        }
    }
}
