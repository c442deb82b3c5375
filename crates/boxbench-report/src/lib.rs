//! boxbench's report: plots and prose live here.
//!
//! A comparison run fills a [`Results`] document ([`schema`]: host facts, settings, one [`Series`] per
//! backend and workload with its raw records and statistics, image sizes, density steps).
//! [`write_report`] turns it into an output directory:
//!
//! ```text
//! <out>/results.json      the Results document (schema_version 1)
//! <out>/report.md         claims first, then every figure with n/median/p99/min/max
//! <out>/report.html       the same, self-contained: CSS inline, plots as inline SVG
//! <out>/plots/<name>.svg  each plot (boot_phases, time_to_marker, memory_per_instance,
//! <out>/plots/<name>.png    image_sizes, density), where there is data for it
//! ```
//!
//! [`load_results`] reads saved `results.json` files (or a saved comparison) back, and
//! [`write_comparison`] writes the report of several hosts side by side (plus each host's own
//! report under `hosts/`). The claim verdicts ([`claims`]) are pure functions of the results.

pub mod claims;
pub mod docker_split;
pub mod document;
pub mod export;
pub mod fleet;
pub mod glance;
pub mod harness;
pub mod plots;
pub mod render;
pub mod schema;
pub mod units;
pub mod vmms;

use std::fs;
use std::path::{Path, PathBuf};

pub use claims::{Claim, ClaimVerdict, Verdict, judge};
pub use schema::Results;
pub use schema::{
    ContainerKind, DensityPoint, DensityResult, HostSection, ImageKind, ImageSize, LoadAverage, MultiHost, RunSettings,
    SCHEMA_VERSION, Series, VmKind,
};

use plots::{PlotKind, PlotSource, RenderedPlot};

/// A report that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No results file was named.
    #[error("no results file given")]
    NoInput,
    /// A results file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A results file is not a valid results document.
    #[error("{path}: not a boxbench results document: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why parsing failed.
        source: serde_json::Error,
    },
    /// A JSON file that is not a results document at all (it has no `schema_version`).
    #[error("{path}: not a boxbench results document (no schema_version)")]
    NotResults {
        /// The file.
        path: PathBuf,
    },
    /// A results file has a schema this boxbench does not read.
    #[error("{path}: {source}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: schema::SchemaError,
    },
    /// An output file or directory could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The results could not be serialised.
    #[error("serialising results for {path}: {source}")]
    Serialise {
        /// The file being written.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
}

/// The files a report consists of.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    /// The output directory.
    pub dir: PathBuf,
    /// `results.json` (one host) or `comparison.json` (several).
    pub results_json: PathBuf,
    /// `report.md`.
    pub report_md: PathBuf,
    /// `report.html`.
    pub report_html: PathBuf,
    /// Each plot's SVG and PNG.
    pub plots: Vec<(PathBuf, PathBuf)>,
    /// For a comparison of several hosts: each host's own report.
    pub host_reports: Vec<ReportFiles>,
}

/// Writes the report of one host's `results` into `out_dir` (created if missing). On error, the files
/// and directories this call created are removed again.
pub fn write_report(results: &Results, out_dir: &Path) -> Result<ReportFiles, ReportError> {
    let mut output = Output::default();
    let written = write_host_report(results, out_dir, &mut output);
    output.finish(written)
}

/// Writes the report of several hosts into `out_dir`: `comparison.json`, `report.md` and
/// `report.html` with a column per host, the comparison plots, and each host's full report under
/// `hosts/<n>-<name>/`. One host gives the same report as [`write_report`].
pub fn write_comparison(hosts: &MultiHost, out_dir: &Path) -> Result<ReportFiles, ReportError> {
    if let ([only], true) = (hosts.hosts.as_slice(), hosts.missing.is_empty()) {
        return write_report(only, out_dir);
    }
    let mut output = Output::default();
    let written = write_multi_host_report(hosts, out_dir, &mut output);
    output.finish(written)
}

/// Reads results files: each a `results.json` of one host or a saved comparison of several, merged in
/// the order given (the runs of one host into one column).
pub fn load_results(paths: &[PathBuf]) -> Result<MultiHost, ReportError> {
    if paths.is_empty() {
        return Err(ReportError::NoInput);
    }
    let mut all = Vec::new();
    for path in paths {
        all.extend(load_file(path)?);
    }
    MultiHost::merge(all).map_err(|source| ReportError::Schema { path: paths[0].clone(), source })
}

/// Reads one results file: the hosts it holds.
pub fn load_file(path: &Path) -> Result<Vec<Results>, ReportError> {
    let text = fs::read_to_string(path).map_err(|source| ReportError::Read { path: path.to_owned(), source })?;
    let parse_error = |source| ReportError::Parse { path: path.to_owned(), source };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(parse_error)?;
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| ReportError::NotResults { path: path.to_owned() })?;
    if version != u64::from(SCHEMA_VERSION) {
        let found = u32::try_from(version).unwrap_or(u32::MAX);
        return Err(ReportError::Schema {
            path: path.to_owned(),
            source: schema::SchemaError::UnsupportedVersion { found },
        });
    }
    if value.get("hosts").is_some() {
        let multi: MultiHost = serde_json::from_str(&text).map_err(parse_error)?;
        Ok(multi.hosts)
    } else {
        Ok(vec![serde_json::from_str::<Results>(&text).map_err(parse_error)?])
    }
}

/// The paths one report call created, removed again if the call fails.
#[derive(Debug, Default)]
struct Output {
    created_files: Vec<PathBuf>,
    created_dirs: Vec<PathBuf>,
}

impl Output {
    fn dir(&mut self, path: &Path) -> Result<(), ReportError> {
        let mut missing = Vec::new();
        let mut cursor = Some(path);
        while let Some(p) = cursor.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            missing.push(p.to_owned());
            cursor = p.parent();
        }
        fs::create_dir_all(path).map_err(|source| ReportError::Write { path: path.to_owned(), source })?;
        // Outermost last, so removal (in reverse) takes the innermost first.
        self.created_dirs.extend(missing.into_iter().rev());
        Ok(())
    }

    fn file(&mut self, path: &Path, contents: &[u8]) -> Result<(), ReportError> {
        self.note_file(path);
        fs::write(path, contents).map_err(|source| ReportError::Write { path: path.to_owned(), source })
    }

    fn note_file(&mut self, path: &Path) {
        if !path.exists() {
            self.created_files.push(path.to_owned());
        }
    }

    fn finish(self, written: Result<ReportFiles, ReportError>) -> Result<ReportFiles, ReportError> {
        if written.is_err() {
            for file in &self.created_files {
                let _ = fs::remove_file(file);
            }
            for dir in self.created_dirs.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
        }
        written
    }
}

fn render_plots(
    kinds: &[PlotKind],
    source: PlotSource,
    dir: &Path,
    output: &mut Output,
) -> Result<Vec<RenderedPlot>, ReportError> {
    let kinds: Vec<PlotKind> = kinds.iter().copied().filter(|k| plots::has_data(*k, source)).collect();
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    output.dir(dir)?;
    let mut rendered = Vec::new();
    for kind in kinds {
        output.note_file(&dir.join(format!("{}.svg", kind.name())));
        output.note_file(&dir.join(format!("{}.png", kind.name())));
        rendered.push(plots::render(kind, source, dir)?);
    }
    Ok(rendered)
}

fn write_host_report(results: &Results, out_dir: &Path, output: &mut Output) -> Result<ReportFiles, ReportError> {
    results.check_version().map_err(|source| ReportError::Schema { path: out_dir.join("results.json"), source })?;
    output.dir(out_dir)?;
    let results_json = out_dir.join("results.json");
    let json = serde_json::to_vec_pretty(results)
        .map_err(|source| ReportError::Serialise { path: results_json.clone(), source })?;
    output.file(&results_json, &json)?;
    let plots = render_plots(&PlotKind::SINGLE_HOST, PlotSource::Host(results), &out_dir.join("plots"), output)?;
    let doc = render::host_document(results);
    let report_md = out_dir.join("report.md");
    output.file(&report_md, doc.to_markdown(&plots).as_bytes())?;
    let report_html = out_dir.join("report.html");
    let title = format!("boxbench report — {}", results.host_line());
    output.file(&report_html, doc.to_html(&title, &plots).as_bytes())?;
    Ok(ReportFiles {
        dir: out_dir.to_owned(),
        results_json,
        report_md,
        report_html,
        plots: plots.into_iter().map(|p| (p.svg_path, p.png_path)).collect(),
        host_reports: Vec::new(),
    })
}

fn write_multi_host_report(hosts: &MultiHost, out_dir: &Path, output: &mut Output) -> Result<ReportFiles, ReportError> {
    output.dir(out_dir)?;
    let comparison_json = out_dir.join("comparison.json");
    let json = serde_json::to_vec_pretty(hosts)
        .map_err(|source| ReportError::Serialise { path: comparison_json.clone(), source })?;
    output.file(&comparison_json, &json)?;
    let mut host_dirs = Vec::new();
    let mut host_reports = Vec::new();
    for (i, (results, name)) in hosts.hosts.iter().zip(hosts.column_names()).enumerate() {
        let slug: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
        let relative = format!("hosts/{}-{slug}", i + 1);
        host_reports.push(write_host_report(results, &out_dir.join(&relative), output)?);
        host_dirs.push(relative);
    }
    let plots = render_plots(
        &[PlotKind::HostsTimeToMarker, PlotKind::HostsMemory],
        PlotSource::Hosts(hosts),
        &out_dir.join("plots"),
        output,
    )?;
    let doc = render::multi_host_document(hosts, &host_dirs);
    let report_md = out_dir.join("report.md");
    output.file(&report_md, doc.to_markdown(&plots).as_bytes())?;
    let report_html = out_dir.join("report.html");
    output.file(
        &report_html,
        doc.to_html(&format!("boxbench comparison of {} hosts", hosts.hosts.len()), &plots).as_bytes(),
    )?;
    Ok(ReportFiles {
        dir: out_dir.to_owned(),
        results_json: comparison_json,
        report_md,
        report_html,
        plots: plots.into_iter().map(|p| (p.svg_path, p.png_path)).collect(),
        host_reports,
    })
}
