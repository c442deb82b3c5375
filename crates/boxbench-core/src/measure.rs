//! One launch driven through its whole life with a deadline: the loop every caller (CLI, benches,
//! soak) uses, so a hung instance is handled the same way everywhere.

use std::time::{Duration, Instant};

use crate::interrupt;
use crate::launcher::{LaunchError, Launcher};
use crate::record::{Outcome, Record};
use crate::spec::InstanceSpec;

/// How long a killed instance has to go away before boxbench gives up on it.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// The failure reason of an instance killed because of a Ctrl-C.
pub const INTERRUPTED: &str = "interrupted by SIGINT or SIGTERM";

/// Prepares, launches and waits for one instance of `launcher`; kills it if the spec's deadline
/// passes (the record then says so) and returns its record after everything is released.
pub fn launch_once(launcher: &dyn Launcher, spec: &InstanceSpec) -> Result<Record, LaunchError> {
    let mut instance = launcher.prepare(spec)?;
    let deadline = Instant::now() + spec.timeout;
    instance.launch()?;
    // The wait is sliced so that a Ctrl-C (see `crate::interrupt`) kills the instance within a slice.
    let outcome = loop {
        if let Some(outcome) = instance.wait(deadline.min(Instant::now() + interrupt::POLL))? {
            break outcome;
        }
        let interrupted = interrupt::requested();
        if interrupted || Instant::now() >= deadline {
            instance.kill()?;
            instance.wait(Instant::now() + KILL_GRACE)?;
            break if interrupted {
                Outcome::Failed { reason: INTERRUPTED.to_owned() }
            } else {
                Outcome::DeadlineExceeded { seconds: spec.timeout.as_secs_f64() }
            };
        }
    };
    instance.finish(outcome)
}

/// How often a density run looks for an instance's marker.
const MARKER_POLL: Duration = Duration::from_millis(1);

/// What a density run saw: many instances of one backend running at once.
#[derive(Debug)]
pub struct DensityRun {
    /// Instances asked for.
    pub requested: usize,
    /// Instances that reached their marker (started one after another, all kept running).
    pub launched: usize,
    /// Time from the first launch to the last marker.
    pub launch_wall: Option<Duration>,
    /// The host's MemAvailable drop with `n` instances up, for n = 1..=launched.
    pub curve: Vec<(usize, u64)>,
    /// Every instance's record, after all were killed together (their `peak_bytes` is each one's
    /// all-inclusive peak while they all ran).
    pub records: Vec<Record>,
    /// Why the run stopped short of `requested`, if it did.
    pub stopped_because: Option<String>,
}

/// Starts `count` instances of `spec` (a workload that stays up after its marker, such as `idle`) one
/// after another, each waited for until its marker, and keeps them all running; records the host's
/// MemAvailable drop as each comes up, then kills them all and collects their records.
pub fn density(launcher: &dyn Launcher, spec: &InstanceSpec, count: usize) -> Result<DensityRun, LaunchError> {
    let before = crate::host::mem_available_bytes();
    let started = Instant::now();
    let mut running = Vec::with_capacity(count);
    let mut curve = Vec::with_capacity(count);
    let mut launch_wall = None;
    let mut stopped_because = None;
    for n in 1..=count {
        let mut instance = launcher.prepare(spec)?;
        instance.launch()?;
        let deadline = Instant::now() + spec.timeout;
        let up = loop {
            if instance.marker_seen() {
                break Ok(());
            }
            match instance.wait(Instant::now() + MARKER_POLL)? {
                Some(outcome) => break Err(format!("instance {n} {outcome} before its marker")),
                None if interrupt::requested() => break Err(format!("instance {n}: {INTERRUPTED}")),
                None if Instant::now() >= deadline => {
                    break Err(format!("instance {n} showed no marker within {:?}", spec.timeout));
                }
                None => {}
            }
        };
        running.push(instance);
        if let Err(why) = up {
            stopped_because = Some(why);
            break;
        }
        launch_wall = Some(started.elapsed());
        if let (Some(before), Some(now)) = (before, crate::host::mem_available_bytes()) {
            curve.push((n, before.saturating_sub(now)));
        }
    }
    let launched = if stopped_because.is_some() { running.len() - 1 } else { running.len() };
    let mut records = Vec::with_capacity(running.len());
    for mut instance in running {
        instance.kill()?;
        let outcome = instance
            .wait(Instant::now() + KILL_GRACE)?
            .unwrap_or(Outcome::Failed { reason: "still running after it was killed".to_owned() });
        records.push(instance.finish(outcome)?);
    }
    Ok(DensityRun { requested: count, launched, launch_wall, curve, records, stopped_because })
}
