//! The `--json` document of a run (the stable interface other tools read) and its human rendering.

use std::collections::BTreeMap;

use boxbench_core::host::HostFacts;
use boxbench_core::stats::Summary;
use boxbench_core::{Phases, Record};
use boxbench_report::export::{self, ExportError, ExportFormat, ExportRow};
use serde::Serialize;

/// `--export-json`, `--export-csv`, `--export-markdown` of `run` and `compare`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExportArgs {
    /// Write the summary (one row per series and figure: n, median, 95% interval, min, max) as JSON.
    #[arg(long, value_name = "FILE")]
    pub export_json: Option<std::path::PathBuf>,
    /// Write the same rows as CSV.
    #[arg(long, value_name = "FILE")]
    pub export_csv: Option<std::path::PathBuf>,
    /// Write the same rows as a Markdown table.
    #[arg(long, value_name = "FILE")]
    pub export_markdown: Option<std::path::PathBuf>,
}

impl ExportArgs {
    fn files(&self) -> impl Iterator<Item = (ExportFormat, &std::path::Path)> {
        [
            (ExportFormat::Json, self.export_json.as_deref()),
            (ExportFormat::Csv, self.export_csv.as_deref()),
            (ExportFormat::Markdown, self.export_markdown.as_deref()),
        ]
        .into_iter()
        .filter_map(|(format, path)| Some((format, path?)))
    }

    /// Checks every export path before anything is launched.
    pub fn check(&self) -> Result<(), ExportError> {
        self.files().try_for_each(|(_, path)| export::check_path(path))
    }

    /// Writes `rows` to every export file asked for.
    pub fn write(&self, rows: &[ExportRow]) -> Result<(), ExportError> {
        self.files().try_for_each(|(format, path)| export::write(rows, format, path))
    }
}

/// Everything `boxbench run --json` prints.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// The backend's name.
    pub backend: String,
    /// The workload, as the CLI named it.
    pub workload: String,
    /// The host the figures come from.
    pub host: HostFacts,
    /// One record per launch.
    pub runs: Vec<Record>,
    /// Per phase (`ready_ms`, `userspace_ms`, …): statistics over the runs that observed it, `null`
    /// when none did.
    pub summary: BTreeMap<&'static str, Option<Summary>>,
    /// Statistics of the memory figures, in bytes.
    pub memory_summary: BTreeMap<&'static str, Option<Summary>>,
    /// The harness's own cost: `workload_ms` and `exit_ms` of a trivial program launched through
    /// this backend's harness path, as many times, after the runs (empty when not calibrated).
    pub calibration: BTreeMap<&'static str, Option<Summary>>,
}

impl RunReport {
    /// Summarises `runs` of `backend` on `host`.
    pub fn new(backend: String, workload: String, host: HostFacts, runs: Vec<Record>) -> Self {
        let series = |get: &dyn Fn(&Record) -> Option<f64>| -> Option<Summary> {
            Summary::of(&runs.iter().filter_map(get).collect::<Vec<f64>>())
        };
        let summary = Phases::NAMES.into_iter().map(|name| (name, series(&|r: &Record| r.phases.get(name)))).collect();
        let memory_summary = BTreeMap::from([
            ("peak_bytes", series(&|r: &Record| r.memory.peak_bytes.map(|b| b as f64))),
            ("pss_bytes", series(&|r: &Record| r.memory.pss_bytes.map(|b| b as f64))),
            ("overhead_bytes", series(&|r: &Record| r.memory.overhead_bytes.map(|b| b as f64))),
            ("shared_daemons_pss_bytes", series(&|r: &Record| r.memory.shared_daemons_pss_bytes.map(|b| b as f64))),
        ]);
        Self { backend, workload, host, runs, summary, memory_summary, calibration: BTreeMap::new() }
    }

    /// Adds the summary of the calibration launches `records` ([`RunReport::calibration`]).
    pub fn with_calibration(mut self, records: &[Record]) -> Self {
        self.calibration = ["workload_ms", "exit_ms"]
            .into_iter()
            .map(|name| (name, Summary::of(&records.iter().filter_map(|r| r.phases.get(name)).collect::<Vec<f64>>())))
            .collect();
        self
    }

    /// The export rows of this run: one per observed phase and memory figure.
    pub fn export_rows(&self) -> Vec<ExportRow> {
        let series = format!("{} × {}", self.backend, self.workload);
        export::series_rows(
            &series,
            |p| self.summary.get(p).copied().flatten(),
            |m| self.memory_summary.get(m).copied().flatten(),
        )
    }

    /// The human-readable table: one row per phase, then memory, outcomes and the host line.
    pub fn render_text(&self) -> String {
        let mut out = format!("{} × {} ({} runs)\n", self.backend, self.workload, self.runs.len());
        out.push_str(&format!(
            "{:<24} {:>5} {:>10} {:>21} {:>10} {:>10} {:>10}\n",
            "phase", "n", "median", "95% CI of median", "p99", "min", "max"
        ));
        // p99 only from P99_MIN_SAMPLES launches: below that it is the maximum, shown beside it.
        let ci = |s: &Summary, scale: fn(f64) -> f64, unit: &str| {
            s.median_ci.map_or_else(|| "–".to_owned(), |[lo, hi]| format!("{:.2}–{:.2}{unit}", scale(lo), scale(hi)))
        };
        let p99 = |s: &Summary, scale: fn(f64) -> f64, unit: &str| {
            s.p99.map_or_else(|| "–".to_owned(), |p| format!("{:.2}{unit}", scale(p)))
        };
        let ms = |v: f64| v;
        for name in Phases::NAMES {
            match self.summary.get(name).copied().flatten() {
                Some(s) => out.push_str(&format!(
                    "{:<24} {:>5} {:>8.2}ms {:>21} {:>10} {:>8.2}ms {:>8.2}ms\n",
                    name,
                    s.n,
                    s.median,
                    ci(&s, ms, "ms"),
                    p99(&s, ms, "ms"),
                    s.min,
                    s.max
                )),
                None => out.push_str(&format!("{name:<24} {:>5} {:>10}\n", 0, "not observed")),
            }
        }
        for (name, summary) in &self.memory_summary {
            if let Some(s) = summary {
                out.push_str(&format!(
                    "{:<24} {:>5} {:>7.2}MiB {:>21} {:>10} {:>7.2}MiB {:>7.2}MiB\n",
                    name,
                    s.n,
                    mib(s.median),
                    ci(s, mib, "MiB"),
                    p99(s, mib, "MiB"),
                    mib(s.min),
                    mib(s.max)
                ));
            }
        }
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        for run in &self.runs {
            *outcomes.entry(run.outcome.to_string()).or_default() += 1;
        }
        for (outcome, count) in outcomes {
            out.push_str(&format!("{count} × {outcome}\n"));
        }
        let mut notes: Vec<&String> = self.runs.iter().flat_map(|r| &r.notes).collect();
        notes.sort();
        notes.dedup();
        for note in notes {
            out.push_str(&format!("note: {note}\n"));
        }
        for phase in ["workload_ms", "exit_ms"] {
            let samples: Vec<f64> = self.runs.iter().filter_map(|r| r.phases.get(phase)).collect();
            for warning in boxbench_core::stats::warnings(&samples, phase) {
                out.push_str(&format!("warning: {warning}\n"));
            }
        }
        if let (Some(Some(marker)), Some(Some(exit))) =
            (self.calibration.get("workload_ms"), self.calibration.get("exit_ms"))
        {
            out.push_str(&format!(
                "calibration: the harness itself (busybox echo through {}'s path, n={}): {:.2}ms to marker, {:.2}ms to exit\n",
                self.backend, exit.n, marker.median, exit.median
            ));
        }
        out.push_str(&format!("host: {}\n", self.host.label()));
        out
    }

    /// What the last launch printed (its console, or the tail of a flood), under a heading line, for
    /// the text output after the table; nothing without a launch.
    pub fn render_last_console(&self) -> String {
        let Some(last) = self.runs.last() else { return String::new() };
        if last.console.is_empty() {
            return "console of the last launch: empty\n".to_owned();
        }
        let mut out = format!("console of the last launch:\n{}", last.console);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use boxbench_core::{MemoryUsage, Outcome};

    fn record(ready: Option<f64>, exit: f64, peak: u64) -> Record {
        Record {
            backend: "container".into(),
            phases: Phases { ready_ms: ready, exit_ms: Some(exit), ..Phases::default() },
            exit_code: Some(0),
            outcome: Outcome::Exited { code: 0 },
            console: "BOXBENCH_READY\n".into(),
            memory: MemoryUsage { peak_bytes: Some(peak), ..MemoryUsage::default() },
            notes: vec![],
            details_ms: Default::default(),
        }
    }

    #[test]
    fn json_keeps_the_stable_names_and_null_for_unobserved_phases() {
        let runs = vec![record(Some(1.0), 4.0, 1 << 20), record(None, 6.0, 3 << 20)];
        let report = RunReport::new("container".into(), "hello".into(), HostFacts::detect(), runs);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["backend"], "container");
        assert!(json["host"]["kernel"].is_string());
        let run = &json["runs"][0];
        for key in ["ready_ms", "userspace_ms", "workload_ms", "exit_ms"] {
            assert!(run["phases"].get(key).is_some(), "phase {key} missing");
        }
        assert_eq!(run["exit_code"], 0);
        assert_eq!(run["console"], "BOXBENCH_READY\n");
        assert_eq!(run["memory"]["peak_bytes"], 1 << 20);
        assert!(run["memory"].get("pss_bytes").is_some());
        assert_eq!(json["summary"]["exit_ms"]["n"], 2);
        assert_eq!(json["summary"]["exit_ms"]["median"], 5.0);
        assert_eq!(json["summary"]["ready_ms"]["n"], 1);
        assert!(json["summary"]["workload_ms"].is_null());
    }

    #[test]
    fn text_says_which_phases_were_not_observed() {
        let report =
            RunReport::new("container".into(), "hello".into(), HostFacts::detect(), vec![record(None, 4.0, 0)]);
        let text = report.render_text();
        assert!(text.contains("userspace_ms"));
        assert!(text.contains("not observed"));
        assert!(text.contains("1 × exited with status 0"));
        assert!(text.contains("host: Linux"));
        assert!(!text.contains("calibration:"));
    }

    #[test]
    fn calibration_is_printed_beside_the_figures_and_kept_in_json() {
        let mut calibration = record(None, 2.0, 0);
        calibration.phases.workload_ms = Some(1.5);
        let report = RunReport::new("crun".into(), "hello".into(), HostFacts::detect(), vec![record(None, 30.0, 0)])
            .with_calibration(&[calibration]);
        let text = report.render_text();
        assert!(
            text.contains("calibration: the harness itself (busybox echo through crun's path, n=1): 1.50ms to marker, 2.00ms to exit"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["calibration"]["exit_ms"]["median"], 2.0);
    }

    #[test]
    fn the_last_console_follows_under_a_heading_and_ends_a_line() {
        let mut first = record(None, 4.0, 0);
        first.console = "first\n".into();
        let mut last = record(None, 5.0, 0);
        last.console = "hello-from-cmd".into();
        let report = RunReport::new("container".into(), "echo".into(), HostFacts::detect(), vec![first, last]);
        assert_eq!(report.render_last_console(), "console of the last launch:\nhello-from-cmd\n");
        let mut silent = record(None, 4.0, 0);
        silent.console = String::new();
        let report = RunReport::new("container".into(), "true".into(), HostFacts::detect(), vec![silent]);
        assert_eq!(report.render_last_console(), "console of the last launch: empty\n");
        let none = RunReport::new("container".into(), "hello".into(), HostFacts::detect(), vec![]);
        assert_eq!(none.render_last_console(), "");
    }
}
