//! One launch driven through its whole life with a deadline: the loop every caller (CLI, benches,
//! soak) uses, so a hung instance is handled the same way everywhere.

use std::time::{Duration, Instant};

use crate::launcher::{LaunchError, Launcher};
use crate::record::{Outcome, Record};
use crate::spec::InstanceSpec;

/// How long a killed instance has to go away before boxbench gives up on it.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// Prepares, launches and waits for one instance of `launcher`; kills it if the spec's deadline
/// passes (the record then says so) and returns its record after everything is released.
pub fn launch_once(launcher: &dyn Launcher, spec: &InstanceSpec) -> Result<Record, LaunchError> {
    let mut instance = launcher.prepare(spec)?;
    let deadline = Instant::now() + spec.timeout;
    instance.launch()?;
    let outcome = match instance.wait(deadline)? {
        Some(outcome) => outcome,
        None => {
            instance.kill()?;
            instance.wait(Instant::now() + KILL_GRACE)?;
            Outcome::DeadlineExceeded { seconds: spec.timeout.as_secs_f64() }
        }
    };
    instance.finish(outcome)
}
