//! How the builder tells its caller what it is doing: the library never prints; the CLI renders the
//! steps it is given (a spinner, a log line), and tests pass [`NoProgress`].

use std::fmt;

/// The state an artefact's step reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Another process is building into the same directory; this one waits for its lock.
    WaitingForLock,
    /// Downloading a package (only when it is not cached).
    Downloading,
    /// Building the artefact.
    Building,
    /// The artefact was built.
    Built,
    /// The artefact was up to date and kept as it was.
    UpToDate,
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepState::WaitingForLock => "waiting for another build",
            StepState::Downloading => "downloading",
            StepState::Building => "building",
            StepState::Built => "built",
            StepState::UpToDate => "up to date",
        })
    }
}

/// Receives the builder's steps. `artefact` is one of the names in [`crate::artefact`].
pub trait Progress {
    /// The step on `artefact` reached `state`.
    fn step(&self, artefact: &str, state: StepState);
}

/// A [`Progress`] that ignores every step.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn step(&self, _artefact: &str, _state: StepState) {}
}

impl<F: Fn(&str, StepState)> Progress for F {
    fn step(&self, artefact: &str, state: StepState) {
        self(artefact, state)
    }
}
