//! Building the default guest images on first use, with progress lines on stderr.

use std::time::Instant;

use boxbench_images::microvm_kernel::{self, MicroVmKernel, MicroVmKernelError};
use boxbench_images::{BuiltImages, ImageBuilder, Progress, StepState};

/// Builds (or finds up to date) the default images under `guest-images/out/`, telling the user what it
/// builds on stderr; `verbose` also prints the steps that were already up to date.
pub fn build_default(verbose: bool) -> Result<BuiltImages, boxbench_images::ImageError> {
    ImageBuilder::default_dirs().build(&ProgressLines::new(verbose))
}

/// Builds (or finds up to date) boxbench's micro-VM kernel from `guest-images/linux/` (about five
/// minutes on two cores the first time).
pub fn build_microvm_kernel(progress: &dyn Progress) -> Result<MicroVmKernel, MicroVmKernelError> {
    let builder = ImageBuilder::default_dirs();
    microvm_kernel::build_microvm_kernel(builder.out_dir(), &builder.microvm_kernel_recipe(), progress)
}

/// boxbench's micro-VM kernel if it is built for the current recipe (`None` when it is not, or its
/// recipe cannot be read).
pub fn built_microvm_kernel() -> Option<MicroVmKernel> {
    let builder = ImageBuilder::default_dirs();
    microvm_kernel::built_microvm_kernel(builder.out_dir(), &builder.microvm_kernel_recipe()).ok().flatten()
}

/// Renders the builder's steps as lines on stderr, with the time each build took.
#[derive(Debug)]
pub struct ProgressLines {
    verbose: bool,
    started: std::cell::Cell<Instant>,
}

impl ProgressLines {
    pub fn new(verbose: bool) -> Self {
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
