//! The record of one launch, identical in shape for every backend.

use serde::{Deserialize, Serialize};

/// The phases of one launch, in milliseconds since launch start. A phase the backend cannot observe
/// is `None` (serialised as `null`), never an invented figure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// The runtime or VMM is set up and about to run guest or container code.
    pub ready_ms: Option<f64>,
    /// The first guest or container userspace instruction ran.
    pub userspace_ms: Option<f64>,
    /// The workload's marker line appeared on its console.
    pub workload_ms: Option<f64>,
    /// The instance is gone and everything it held is released.
    pub exit_ms: Option<f64>,
    /// The first byte appeared on the console (a VM's serial port, a container's stdout).
    pub first_output_ms: Option<f64>,
}

impl Phases {
    /// The phase names of the `--json` summary, in timeline order.
    pub const NAMES: [&'static str; 5] = ["ready_ms", "first_output_ms", "userspace_ms", "workload_ms", "exit_ms"];

    /// The value of the phase called `name` (one of [`Phases::NAMES`]).
    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "ready_ms" => self.ready_ms,
            "userspace_ms" => self.userspace_ms,
            "workload_ms" => self.workload_ms,
            "exit_ms" => self.exit_ms,
            "first_output_ms" => self.first_output_ms,
            _ => None,
        }
    }

    /// The phase called `name` as a duration since launch start, for a benchmark sample: `None` when
    /// the launch did not observe it (or it is not a finite, non-negative time), never a zero that
    /// would pass for a very fast launch.
    pub fn elapsed(&self, name: &str) -> Option<std::time::Duration> {
        self.get(name).and_then(|ms| std::time::Duration::try_from_secs_f64(ms / 1e3).ok())
    }
}

/// How an instance ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The workload (or the guest, through a clean power-off) exited with this status.
    Exited { code: i32 },
    /// The workload was killed by this signal.
    Signaled { signal: i32 },
    /// The memory limit was reached and the kernel's OOM killer ended the instance.
    OutOfMemory,
    /// The deadline passed and boxbench killed the instance.
    DeadlineExceeded { seconds: f64 },
    /// The guest or runtime failed; the reason says how (triple fault, KVM error, runtime error).
    Failed { reason: String },
}

impl Outcome {
    /// The exit status the instance reported, if it exited on its own.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Outcome::Exited { code } => Some(*code),
            _ => None,
        }
    }

    /// True for a clean exit with status 0.
    pub fn is_success(&self) -> bool {
        self.exit_code() == Some(0)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited { code } => write!(f, "exited with status {code}"),
            Outcome::Signaled { signal } => write!(f, "killed by signal {signal}"),
            Outcome::OutOfMemory => f.write_str("killed by the OOM killer at its memory limit"),
            Outcome::DeadlineExceeded { seconds } => write!(f, "killed at its {seconds} s deadline"),
            Outcome::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// Memory an instance used, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryUsage {
    /// Peak of the per-instance cgroup: everything the instance's processes charged (all-inclusive).
    pub peak_bytes: Option<u64>,
    /// Proportional set size of the instance's host processes, sampled when the marker appeared.
    pub pss_bytes: Option<u64>,
    /// What the runtime or VMM itself costs beyond the workload or guest pages, where measurable.
    pub overhead_bytes: Option<u64>,
    /// Proportional set size, at the marker, of the long-running daemons the instance needed but shares
    /// with every other instance (Docker's dockerd and containerd); not in `peak_bytes`.
    #[serde(default)]
    pub shared_daemons_pss_bytes: Option<u64>,
}

/// Everything measured about one launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The backend that launched it.
    pub backend: String,
    /// The timeline.
    pub phases: Phases,
    /// The exit status, when the instance exited on its own (`null` otherwise).
    pub exit_code: Option<i32>,
    /// How it ended.
    pub outcome: Outcome,
    /// What it printed on its console (the tail, if it flooded).
    pub console: String,
    /// What it cost in memory.
    pub memory: MemoryUsage,
    /// Facts a reader needs to weigh the figures (e.g. "guest kernel code emulated by kvm_pvm").
    pub notes: Vec<String>,
    /// Backend-specific sub-phase timings in milliseconds, by stable key (e.g. `vm_build_ms`): figures
    /// of this launch only, where `notes` hold what is true of the whole series.
    #[serde(default)]
    pub details_ms: std::collections::BTreeMap<String, f64>,
}

impl Record {
    /// The last `n` lines of the console, for error reports.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_invalid_phase_is_no_sample() {
        let phases =
            Phases { userspace_ms: Some(f64::NAN), workload_ms: Some(-1.0), exit_ms: Some(2.5), ..Phases::default() };
        assert_eq!(phases.elapsed("exit_ms"), Some(std::time::Duration::from_micros(2500)));
        // The boot_time bench turned these into 0 ms samples (NaN.max(0.0) is 0).
        assert_eq!(phases.elapsed("ready_ms"), None);
        assert_eq!(phases.elapsed("userspace_ms"), None);
        assert_eq!(phases.elapsed("workload_ms"), None);
        assert_eq!(phases.elapsed("no_such_phase"), None);
    }

    #[test]
    fn unobserved_phases_serialise_as_null() {
        let phases = Phases { ready_ms: Some(1.5), ..Phases::default() };
        let json = serde_json::to_value(&phases).unwrap();
        assert_eq!(json["ready_ms"], 1.5);
        assert!(json["userspace_ms"].is_null());
        assert!(json["workload_ms"].is_null());
        assert!(json["exit_ms"].is_null());
    }

    #[test]
    fn outcome_serialises_with_its_kind() {
        let json = serde_json::to_value(Outcome::Exited { code: 3 }).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "exited", "code": 3}));
        assert_eq!(Outcome::OutOfMemory.exit_code(), None);
        assert!(Outcome::Exited { code: 0 }.is_success());
    }

    #[test]
    fn console_tail_keeps_the_last_lines() {
        let record = Record {
            backend: "test".into(),
            phases: Phases::default(),
            exit_code: None,
            outcome: Outcome::Signaled { signal: 9 },
            console: "a\nb\nc\nd".into(),
            memory: MemoryUsage::default(),
            notes: vec![],
            details_ms: Default::default(),
        };
        assert_eq!(record.console_tail(2), "c\nd");
        assert_eq!(record.console_tail(10), "a\nb\nc\nd");
    }
}
