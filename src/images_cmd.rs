//! `boxbench images build|sizes`: builds the guest images and reports their sizes.

use std::process::ExitCode;
use std::time::Instant;

use boxbench_images::{BuiltImages, ImageBuilder, Progress, StepState};
use clap::Subcommand;

/// `boxbench images …`
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Builds every guest image that is missing or out of date (cached by a hash of its recipe).
    Build,
}

/// Runs `boxbench images …`.
pub fn images(cmd: &ImagesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ImagesCommand::Build => {
            let images = build_default(true)?;
            println!("rootfs: {}\nbundle: {}", images.rootfs.display(), images.bundle.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds (or finds up to date) the default images under `guest-images/out/`, telling the user what it
/// builds on stderr; `verbose` also prints the steps that were already up to date.
pub fn build_default(verbose: bool) -> anyhow::Result<BuiltImages> {
    Ok(ImageBuilder::default_dirs().build(&ProgressLines::new(verbose))?)
}

/// Renders the builder's steps as lines on stderr, with the time each build took.
#[derive(Debug)]
struct ProgressLines {
    verbose: bool,
    started: std::cell::Cell<Instant>,
}

impl ProgressLines {
    fn new(verbose: bool) -> Self {
        Self { verbose, started: std::cell::Cell::new(Instant::now()) }
    }
}

impl Progress for ProgressLines {
    fn step(&self, artefact: &str, state: StepState) {
        match state {
            StepState::Building | StepState::Downloading | StepState::WaitingForLock => {
                self.started.set(Instant::now());
                eprintln!("images: {artefact}: {state}…");
            }
            StepState::Built => {
                eprintln!("images: {artefact}: {state} in {:.1} s", self.started.get().elapsed().as_secs_f64())
            }
            StepState::UpToDate if self.verbose => eprintln!("images: {artefact}: {state}"),
            StepState::UpToDate => {}
        }
    }
}
