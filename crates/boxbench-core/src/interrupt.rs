//! Ctrl-C (and `kill`) for every command that launches instances: a process-wide flag that SIGINT
//! and SIGTERM set.
//!
//! The CLI calls [`install`] once; from then on a SIGINT or SIGTERM only sets the flag. [`launch_once`] and
//! [`density`] check it while they wait (every [`POLL`]) and kill the instance in flight, whose drop
//! then removes its cgroup; the CLI loops check [`requested`] between launches, stop launching and
//! exit non-zero. The handler is installed with `SA_RESETHAND`, so a second signal kills boxbench
//! outright if the teardown itself hangs.
//!
//! [`launch_once`]: crate::measure::launch_once
//! [`density`]: crate::measure::density

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// How often a wait looks at the flag.
pub const POLL: Duration = Duration::from_millis(50);

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The SIGINT/SIGTERM handler could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InterruptError {
    /// sigaction failed.
    #[error("installing the SIGINT/SIGTERM handler: {0}")]
    Install(#[from] nix::Error),
}

extern "C" fn on_sigint(_signal: libc::c_int) {
    // An atomic store is async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM set the flag instead of killing the process (a second one kills it).
pub fn install() -> Result<(), InterruptError> {
    let action = SigAction::new(SigHandler::Handler(on_sigint), SaFlags::SA_RESETHAND, SigSet::empty());
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to a static AtomicBool, which is async-signal-safe, and
        // touches no other state of the process.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// True once SIGINT or SIGTERM has arrived (always false when [`install`] was not called).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
