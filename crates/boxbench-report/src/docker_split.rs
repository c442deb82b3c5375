//! Claim 7, "Docker is client–server over REST": a `docker run` by the CLI beside the same
//! container started by boxbench through the Engine API and the client's start-up alone, launched
//! in the same interleaved rounds, and the CLI's wall time split into its parts — the client's side
//! (start-up, the REST transport), the daemon's (each call's work), and what the split cannot
//! attribute (the CLI's extra over the same calls made directly).
//!
//! # The split (each part a series of samples, its median with a 95% interval)
//!
//! - client start-up: `docker --version`, launched through the same harness path as `docker run`;
//! - REST transport: the API run's six round trips (ping, create, attach, start, wait, remove) at the
//!   cost of its ping, which has no daemon work behind it (`6 × ping_ms`);
//! - daemon: create, attach, start, wait, remove — each call's time less one ping (start includes
//!   containerd and runc starting the container, wait the workload running until its exit);
//! - harness: the API run's time outside its calls (its cgroup's removal, the console's end);
//! - the CLI's extra over direct API calls: the CLI's wall time less the client's start-up and the
//!   API run's wall time, round by round — what going through the docker client costs beyond its
//!   start-up: its own work between the calls, its waits for a CPU, and any daemon work its run
//!   takes longer over than boxbench's identical calls (this split does not tell those apart, so the
//!   part is on neither side: [`Side::Unattributed`]).
//!
//! The parts' medians add up to the CLI's median within the intervals ([`DockerSplit::sum_check`]):
//! the split is of the CLI's own wall time, not a model of it.

use boxbench_core::bootstrap::ratio_interval;
use boxbench_core::stats::Summary;
use serde::{Deserialize, Serialize};

use crate::claims::{Claim, ClaimVerdict, Evidence, Figure, Finding, Verdict};
use crate::document::Document;
use crate::plots::PlotKind;
use crate::schema::{Results, Series};
use crate::units::{Unit, format_bytes, format_ms};

/// The round trips of an API run as its records' `details_ms` name them (boxbench-peers'
/// `docker_api::ROUND_TRIPS`), the ping first.
pub const ROUND_TRIPS: [&str; 6] = ["ping_ms", "create_ms", "attach_ms", "start_ms", "wait_ms", "remove_ms"];

/// What claim 7 measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerSplit {
    /// The docker client's version (`docker --version`).
    pub client_version: String,
    /// The daemon's `/version`, the server half of `docker version`.
    pub server: EngineServer,
    /// The API version the calls were made in.
    pub api_version: String,
    /// The daemon's socket.
    pub socket: String,
    /// Whether boxbench started a private dockerd for the run.
    pub private_daemon: bool,
    /// `docker run --rm --network none` by the CLI (backend `docker`).
    pub cli: Series,
    /// `docker --version` (backend `docker-client`).
    pub client_startup: Series,
    /// The same container through the Engine API (backend `docker-api`, round trips in
    /// `details`).
    pub api: Series,
    /// The harness's calibration on docker's path (`calibration:docker`), if measured.
    #[serde(default)]
    pub calibration: Option<Series>,
    /// The CLI's `docker run` through a tap on the socket (backend `docker-tapped`): in `details`,
    /// `first_request_ms` and each of the client's own calls (`cli_<call>_ms`), if measured.
    #[serde(default)]
    pub tapped: Option<Series>,
}

/// The daemon's `/version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineServer {
    /// The engine's version.
    pub version: String,
    /// The newest API version it speaks.
    pub api_version: String,
    /// The oldest it accepts.
    pub min_api_version: String,
    /// Its Go toolchain.
    pub go_version: String,
    /// `linux/amd64`.
    pub os_arch: String,
}

/// Which side of the client–server line a part is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The client, and the REST hop between it and the daemon.
    ClientServer,
    /// The daemon (and containerd, the shim and runc behind it).
    Daemon,
    /// boxbench's own harness around the calls.
    Harness,
    /// The CLI's time beyond its start-up and the API run, which this split cannot attribute to the
    /// client or the daemon.
    Unattributed,
}

impl Side {
    /// The label reports use.
    pub fn label(self) -> &'static str {
        match self {
            Side::ClientServer => "client–server",
            Side::Daemon => "daemon and runtime",
            Side::Harness => "harness",
            Side::Unattributed => "unattributed",
        }
    }
}

/// One part of the split.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// What it is ("client start-up").
    pub name: String,
    /// Its side.
    pub side: Side,
    /// Its samples, milliseconds.
    pub samples: Vec<f64>,
    /// Their statistics.
    pub summary: Summary,
}

/// Whether the parts account for the CLI's wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SumCheck {
    /// The CLI's median wall time.
    pub cli_ms: f64,
    /// The parts' medians added up.
    pub parts_ms: f64,
    /// How far apart they may be: the calibration's median (the harness's own cost on docker's
    /// path) plus the half-widths of the CLI median's and the parts' median intervals.
    pub tolerance_ms: f64,
}

impl SumCheck {
    /// True when the sum is within the tolerance of the CLI's wall time.
    pub fn holds(&self) -> bool {
        (self.cli_ms - self.parts_ms).abs() <= self.tolerance_ms
    }
}

fn exit_samples(series: &Series) -> Vec<f64> {
    series.phase_samples("exit_ms")
}

/// Per record, the value of `f` where every round trip was timed.
fn per_api_record(series: &Series, f: impl Fn(&boxbench_core::Record) -> Option<f64>) -> Vec<f64> {
    series.records.iter().filter(|r| ROUND_TRIPS.iter().all(|t| r.details_ms.contains_key(*t))).filter_map(f).collect()
}

impl DockerSplit {
    /// The parts, client side first; parts without samples are left out.
    pub fn parts(&self) -> Vec<Part> {
        let mut parts = Vec::new();
        let mut push = |name: &str, side: Side, samples: Vec<f64>| {
            if let Some(summary) = Summary::of(&samples) {
                parts.push(Part { name: name.to_owned(), side, samples, summary });
            }
        };
        push("client start-up", Side::ClientServer, exit_samples(&self.client_startup));
        // Round by round: the CLI's wall less the client's start-up and the API run beside it.
        let (cli, client, api) = (exit_samples(&self.cli), exit_samples(&self.client_startup), exit_samples(&self.api));
        let own: Vec<f64> = cli.iter().zip(&client).zip(&api).map(|((c, s), a)| c - s - a).collect();
        push(CLI_EXTRA, Side::Unattributed, own);
        let trips = ROUND_TRIPS.len() as f64;
        push(
            &format!("REST transport ({} round trips)", ROUND_TRIPS.len()),
            Side::ClientServer,
            per_api_record(&self.api, |r| Some(trips * r.details_ms["ping_ms"])),
        );
        for trip in &ROUND_TRIPS[1..] {
            let call = trip.trim_end_matches("_ms");
            push(
                &format!("daemon: {call}"),
                Side::Daemon,
                per_api_record(&self.api, |r| Some(r.details_ms[*trip] - r.details_ms["ping_ms"])),
            );
        }
        push(
            "harness around the calls",
            Side::Harness,
            per_api_record(&self.api, |r| {
                let calls: f64 = ROUND_TRIPS.iter().map(|t| r.details_ms[*t]).sum();
                r.phases.exit_ms.map(|exit| exit - calls)
            }),
        );
        parts
    }

    /// Whether the parts' medians add up to the CLI's median wall time within the harness's
    /// calibration and the medians' intervals; `None` without a CLI series.
    pub fn sum_check(&self) -> Option<SumCheck> {
        let cli = self.cli.phases.exit_ms?;
        let parts = self.parts();
        let half = |s: &Summary| s.median_ci.map_or(0.0, |[lo, hi]| (hi - lo) / 2.0);
        let calibration = self.calibration.as_ref().and_then(|c| c.phases.exit_ms).map_or(0.0, |s| s.median);
        Some(SumCheck {
            cli_ms: cli.median,
            parts_ms: parts.iter().map(|p| p.summary.median).sum(),
            tolerance_ms: calibration + half(&cli) + parts.iter().map(|p| half(&p.summary)).sum::<f64>(),
        })
    }

    /// The median of the daemons' PSS (dockerd and containerd) sampled at the API runs' markers.
    pub fn daemon_pss(&self) -> Option<Summary> {
        self.api.memory.shared_daemons_pss_bytes.or(self.cli.memory.shared_daemons_pss_bytes)
    }
}

/// The claim's statement.
pub const STATEMENT: &str = "Docker is client–server over REST: `docker run` is a client making REST calls (create, \
    attach, start, wait, remove) to a daemon that does the work. The verdict says how much of a container start is \
    the client–server architecture and how much the daemon and the runtime.";

/// The part that is the CLI's wall time beyond its start-up and the API run.
pub const CLI_EXTRA: &str = "CLI's extra over direct API calls";

/// The reference every part is a share of.
const REFERENCE: &str = "docker run (CLI)";

/// Claim 7's verdict, where the run measured it.
pub fn judge(results: &Results) -> Option<ClaimVerdict> {
    let split = results.docker_split.as_ref()?;
    let mut caveats = Vec::new();
    let cli_samples = exit_samples(&split.cli);
    let reference_figure =
        split.cli.phases.exit_ms.map(|summary| Figure::Summary { unit: Unit::Milliseconds, summary });
    let evidence: Vec<Evidence> = match &reference_figure {
        None => Vec::new(),
        Some(reference_figure) => split
            .parts()
            .into_iter()
            .map(|part| {
                let cli_median = split.cli.phases.exit_ms.map_or(f64::NAN, |s| s.median);
                Evidence {
                    metric: "share of docker run's wall time".to_owned(),
                    group: part.side.label().to_owned(),
                    vm_kind: None,
                    subject: part.name.clone(),
                    subject_figure: Figure::Summary { unit: Unit::Milliseconds, summary: part.summary },
                    reference: REFERENCE.to_owned(),
                    reference_figure: reference_figure.clone(),
                    reference_group: "docker run".to_owned(),
                    ratio: Some(part.summary.median / cli_median),
                    ratio_ci: ratio_interval(&part.samples, &cli_samples),
                    // The parts are a decomposition: none argues for or against the claim alone.
                    finding: Finding::Comparable,
                }
            })
            .collect(),
    };
    let failures: usize = [&split.cli, &split.client_startup, &split.api].iter().map(|s| s.failures()).sum();
    if failures > 0 {
        caveats.push(format!("{failures} launches of the split did not exit cleanly; their figures are left out"));
    }
    if let Some(check) = split.sum_check().filter(|c| !c.holds()) {
        caveats.push(format!(
            "the parts' medians add up to {} against the CLI's {} (tolerance {}): medians of parts need not add \
             up to the median of the whole on a noisy host",
            format_ms(check.parts_ms),
            format_ms(check.cli_ms),
            format_ms(check.tolerance_ms)
        ));
    }
    let verdict = if split.api.records.is_empty() || split.cli.records.is_empty() {
        Verdict::Inconclusive("the Engine API or the CLI series has no launches".to_owned())
    } else if split.api.failures() == split.api.records.len() {
        Verdict::Inconclusive("no launch through the Engine API exited cleanly".to_owned())
    } else if split.api.records.iter().any(|r| r.outcome.is_success() && r.phases.workload_ms.is_some()) {
        // The daemon alone, driven over REST with no docker client, ran the container to its marker.
        Verdict::Holds
    } else {
        Verdict::DoesNotHold
    };
    Some(ClaimVerdict {
        claim: Claim::DockerClientServer,
        statement: STATEMENT.to_owned(),
        verdict,
        rests_on: Vec::new(),
        workload: Some(split.cli.workload.clone()),
        evidence,
        context: Vec::new(),
        caveats,
    })
}

/// The sum of the shares of `side` in `verdict`'s evidence, as a percentage range over the parts'
/// intervals ("41%").
fn side_share(verdict: &ClaimVerdict, side: Side) -> f64 {
    verdict.evidence.iter().filter(|e| e.group == side.label()).filter_map(|e| e.ratio).sum::<f64>() * 100.0
}

/// Claim 7 in one sentence, from its evidence.
pub fn sentence(verdict: &ClaimVerdict) -> String {
    let Some(cli) = verdict.evidence.first().and_then(|e| e.reference_figure.value()) else {
        return "On this host nothing was measured that bears on this claim.".to_owned();
    };
    let part = |name: &str| {
        verdict
            .evidence
            .iter()
            .find(|e| e.subject.starts_with(name))
            .and_then(|e| e.subject_figure.value())
            .map_or_else(|| "unmeasured".to_owned(), format_ms)
    };
    format!(
        "On this host a docker run took {} (median); the client–server architecture was {:.0}% of it (client \
         start-up {}, REST transport {}), the daemon and runtime {:.0}% (start {}, wait {}); {:.0}% ({}) is the \
         CLI's extra over direct API calls, which this split does not attribute to either side.",
        format_ms(cli),
        side_share(verdict, Side::ClientServer),
        part("client start-up"),
        part("REST transport"),
        side_share(verdict, Side::Daemon),
        part("daemon: start"),
        part("daemon: wait"),
        side_share(verdict, Side::Unattributed),
        part(CLI_EXTRA),
    )
}

/// The report's section on claim 7's measurements: versions (as `docker version` shows them), the
/// split and its plot, the daemon's memory and the sum check.
pub fn section(doc: &mut Document, results: &Results) {
    let Some(split) = &results.docker_split else { return };
    doc.heading(2, "Docker's client and server (claim 7)");
    doc.paragraph(format!(
        "Client {}; server {} (API {}, minimum {}, {}, {}) at {}{}; the calls were made in API {}. Each round \
         launches `docker run` by the CLI, `docker --version` (the client's start-up), the same container \
         through the Engine API and, where measured, the CLI through a tap on the socket, on the same launch \
         boundary.",
        split.client_version,
        split.server.version,
        split.server.api_version,
        split.server.min_api_version,
        split.server.go_version,
        split.server.os_arch,
        split.socket,
        if split.private_daemon { " (a private dockerd started by boxbench)" } else { "" },
        split.api_version,
    ));
    doc.plot(PlotKind::DockerSplit);
    let rows = split
        .parts()
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.side.label().to_owned(),
                p.summary.n.to_string(),
                format_ms(p.summary.median),
                p.summary
                    .median_ci
                    .map_or_else(|| "–".to_owned(), |[lo, hi]| format!("{}–{}", format_ms(lo), format_ms(hi))),
            ]
        })
        .collect();
    doc.table(&["part", "side", "n", "median", "95% CI of median"], rows);
    let mut facts = Vec::new();
    for series in [&split.cli, &split.client_startup, &split.api] {
        if let Some(exit) = series.phases.exit_ms {
            facts.push(format!("{}: launch to exit {} (median, n={})", series.backend, format_ms(exit.median), exit.n));
        }
    }
    if let Some(tapped) = &split.tapped {
        let calls: Vec<String> = tapped
            .details
            .iter()
            .map(|(name, s)| format!("{} {}", name.trim_end_matches("_ms"), format_ms(s.median)))
            .collect();
        if let Some(exit) = tapped.phases.exit_ms {
            facts.push(format!(
                "the CLI's own calls, timed on a tap on the socket ({}, launch to exit {}; medians): {}",
                tapped.backend,
                format_ms(exit.median),
                calls.join(", ")
            ));
        }
    }
    if let Some(pss) = split.daemon_pss() {
        facts.push(format!(
            "dockerd and containerd PSS at the marker (shared by every container): {} (median, n={})",
            format_bytes(pss.median),
            pss.n
        ));
    }
    if let Some(check) = split.sum_check() {
        facts.push(format!(
            "the parts' medians add up to {} against the CLI's {}: {} (tolerance {}: the harness calibration plus \
             the medians' interval half-widths)",
            format_ms(check.parts_ms),
            format_ms(check.cli_ms),
            if check.holds() { "within tolerance" } else { "outside tolerance" },
            format_ms(check.tolerance_ms)
        ));
    }
    doc.list(facts);
}
