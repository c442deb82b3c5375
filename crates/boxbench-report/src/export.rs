//! Exports as hyperfine users expect them (`--export-json`, `--export-csv`, `--export-markdown`
//! of `run` and `compare`): one row per series and figure, with n, the median and its 95% interval,
//! min and max, for piping into other tools.

use std::path::{Path, PathBuf};

use boxbench_core::Phases;
use boxbench_core::stats::Summary;
use serde::Serialize;

use crate::schema::Results;

/// The memory figures exported, in the order rows are written.
pub const MEMORY_FIGURES: [&str; 4] = ["peak_bytes", "pss_bytes", "overhead_bytes", "shared_daemons_pss_bytes"];

/// An export that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The file could not be written.
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    /// The file's directory does not exist (checked before any launch).
    #[error("{path}: its directory does not exist")]
    NoDirectory { path: PathBuf },
    /// The JSON could not be produced.
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

/// One exported row: a figure of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportRow {
    /// The series ("crun × hello").
    pub series: String,
    /// The figure (a phase such as `workload_ms`, or a memory figure such as `peak_bytes`).
    pub figure: String,
    /// `ms` or `bytes`.
    pub unit: &'static str,
    /// Samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Low end of the median's 95% bootstrap interval (`null` below two samples).
    pub ci_low: Option<f64>,
    /// High end of that interval.
    pub ci_high: Option<f64>,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
}

impl ExportRow {
    /// The row of `figure` of `series`, in `unit`.
    pub fn new(series: &str, figure: &str, unit: &'static str, summary: &Summary) -> Self {
        Self {
            series: series.to_owned(),
            figure: figure.to_owned(),
            unit,
            n: summary.n,
            median: summary.median,
            ci_low: summary.median_ci.map(|[lo, _]| lo),
            ci_high: summary.median_ci.map(|[_, hi]| hi),
            min: summary.min,
            max: summary.max,
        }
    }
}

/// The rows of one series: its phases (ms), then its memory figures (bytes), where observed.
pub fn series_rows(
    series: &str,
    phase: impl Fn(&str) -> Option<Summary>,
    memory: impl Fn(&str) -> Option<Summary>,
) -> Vec<ExportRow> {
    let phases = Phases::NAMES.into_iter().filter_map(|name| Some(ExportRow::new(series, name, "ms", &phase(name)?)));
    let memory =
        MEMORY_FIGURES.into_iter().filter_map(|name| Some(ExportRow::new(series, name, "bytes", &memory(name)?)));
    phases.chain(memory).collect()
}

/// The rows of a `compare` run: every series.
pub fn results_rows(results: &Results) -> Vec<ExportRow> {
    results.series.iter().flat_map(|s| series_rows(&s.name(), |p| s.phases.get(p), |m| s.memory.get(m))).collect()
}

/// The formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `{"results": [row, ...]}`, as hyperfine's JSON has its `results` array.
    Json,
    /// A header line, then one comma-separated line per row.
    Csv,
    /// A Markdown table.
    Markdown,
}

const HEADER: [&str; 9] = ["series", "figure", "unit", "n", "median", "ci_low", "ci_high", "min", "max"];

fn number(value: f64) -> String {
    format!("{value}")
}

fn cells(row: &ExportRow) -> [String; 9] {
    let optional = |v: Option<f64>| v.map(number).unwrap_or_default();
    [
        row.series.clone(),
        row.figure.clone(),
        row.unit.to_owned(),
        row.n.to_string(),
        number(row.median),
        optional(row.ci_low),
        optional(row.ci_high),
        number(row.min),
        number(row.max),
    ]
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_owned() }
}

/// `rows` in `format`.
pub fn render(rows: &[ExportRow], format: ExportFormat) -> Result<String, serde_json::Error> {
    Ok(match format {
        ExportFormat::Json => serde_json::to_string_pretty(&serde_json::json!({ "results": rows }))? + "\n",
        ExportFormat::Csv => {
            let mut out = HEADER.join(",") + "\n";
            for row in rows {
                out += &(cells(row).iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",") + "\n");
            }
            out
        }
        ExportFormat::Markdown => {
            let mut out = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(HEADER.len()));
            for row in rows {
                let cells: Vec<String> = cells(row).iter().map(|c| c.replace('|', "\\|")).collect();
                out += &format!("| {} |\n", cells.join(" | "));
            }
            out
        }
    })
}

/// Checks, before anything is measured, that `path` can be created: its directory exists.
pub fn check_path(path: &Path) -> Result<(), ExportError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if dir.is_dir() { Ok(()) } else { Err(ExportError::NoDirectory { path: path.to_owned() }) }
}

/// Writes `rows` to `path` in `format`.
pub fn write(rows: &[ExportRow], format: ExportFormat, path: &Path) -> Result<(), ExportError> {
    let text = render(rows, format).map_err(|source| ExportError::Json { path: path.to_owned(), source })?;
    std::fs::write(path, text).map_err(|source| ExportError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<ExportRow> {
        let time = Summary::of(&[10.0, 12.0, 11.0]).unwrap();
        let peak = Summary::of(&[1024.0]).unwrap();
        series_rows("crun × hello", |p| (p == "workload_ms").then_some(time), |m| (m == "peak_bytes").then_some(peak))
    }

    #[test]
    fn one_row_per_observed_figure_with_its_interval() {
        let rows = rows();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].figure.as_str(), rows[0].unit, rows[0].n, rows[0].median), ("workload_ms", "ms", 3, 11.0));
        assert!(rows[0].ci_low.is_some() && rows[0].ci_high.is_some());
        assert_eq!((rows[1].figure.as_str(), rows[1].unit, rows[1].ci_low), ("peak_bytes", "bytes", None));
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let mut rows = rows();
        rows[1].series = "a, \"b\"".to_owned();
        let csv = render(&rows, ExportFormat::Csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "series,figure,unit,n,median,ci_low,ci_high,min,max");
        assert!(lines[1].starts_with("crun × hello,workload_ms,ms,3,11,"), "{csv}");
        assert!(lines[2].starts_with("\"a, \"\"b\"\"\",peak_bytes,bytes,1,1024,,,1024,1024"), "{csv}");
    }

    #[test]
    fn markdown_is_a_table_and_json_has_a_results_array() {
        let md = render(&rows(), ExportFormat::Markdown).unwrap();
        assert!(
            md.starts_with("| series | figure | unit | n | median | ci_low | ci_high | min | max |\n|---|"),
            "{md}"
        );
        assert_eq!(md.lines().count(), 4);
        let json: serde_json::Value = serde_json::from_str(&render(&rows(), ExportFormat::Json).unwrap()).unwrap();
        assert_eq!(json["results"][0]["series"], "crun × hello");
        assert_eq!(json["results"][1]["ci_low"], serde_json::Value::Null);
    }

    #[test]
    fn a_path_in_a_missing_directory_is_refused_naming_it() {
        let err = check_path(Path::new("/nonexistent-boxbench-dir/out.csv")).unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent-boxbench-dir/out.csv: its directory does not exist");
        assert!(check_path(Path::new("out.csv")).is_ok());
    }
}
