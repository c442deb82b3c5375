//! The report's plots, drawn with plotters as SVG (embedded in the HTML) and PNG (for READMEs):
//! boot phases per backend as stacked bars, the distribution of the time to the marker, memory per
//! instance, image sizes per kind and density (instances against host memory used). Every plot has
//! its title and, under it, the line naming the host.
//!
//! Text is rendered from DejaVu Sans (Debian package `fonts-dejavu-core`), read once at run time; set
//! `BOXBENCH_FONT` to another TrueType file to use that instead.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::schema::{MultiHost, Results, Series, VmKind};
use crate::units::{Unit, axis_mib, axis_ms, format_ms, mib};

/// The regular text font, from `fonts-dejavu-core`.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The bold font of titles, from `fonts-dejavu-core` (the regular one stands in when it is absent).
const DEFAULT_BOLD_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

/// Width and height of every plot, in pixels.
const SIZE: (u32, u32) = (1100, 640);
/// Height of the title block (title and host line).
const HEADER_PX: u32 = 66;
/// Label font size.
const LABEL_PX: u32 = 14;

/// The colours of bars and lines, in order (colour-blind-friendly, after Okabe and Ito).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 60, 160),
    RGBColor(80, 80, 80),
];

/// A plot that could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The font file for plot text could not be read.
    #[error("font for plot text {path}: {source} (install fonts-dejavu-core or set BOXBENCH_FONT)")]
    FontUnreadable {
        /// The font file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The font file is not a TrueType/OpenType font.
    #[error("font for plot text {0}: not a TrueType/OpenType font")]
    FontInvalid(PathBuf),
    /// plotters failed drawing a plot.
    #[error("plot {plot}: {message}")]
    Draw {
        /// The plot's name.
        plot: String,
        /// What plotters said.
        message: String,
    },
    /// A plot file could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Which plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotKind {
    /// Cumulative median of each phase per series, as stacked bars on a log time axis.
    BootPhases,
    /// Box plot of the time to the marker per series.
    TimeToMarker,
    /// Median memory per instance (cgroup peak, PSS, overhead) per series.
    MemoryPerInstance,
    /// Image sizes on a log scale, by kind.
    ImageSizes,
    /// Host memory used against instances running, per backend.
    Density,
    /// Median time to the marker per series, one bar per host (multi-host comparisons).
    HostsTimeToMarker,
    /// Median cgroup peak per series, one bar per host (multi-host comparisons).
    HostsMemory,
    /// Claim 7: a `docker run`'s wall time split into the client's and the daemon's parts, as a
    /// stacked bar beside the same container through the Engine API.
    DockerSplit,
}

impl PlotKind {
    /// The plots of a one-host report.
    pub const SINGLE_HOST: [PlotKind; 6] = [
        PlotKind::BootPhases,
        PlotKind::TimeToMarker,
        PlotKind::MemoryPerInstance,
        PlotKind::ImageSizes,
        PlotKind::Density,
        PlotKind::DockerSplit,
    ];

    /// The file name stem.
    pub fn name(self) -> &'static str {
        match self {
            PlotKind::BootPhases => "boot_phases",
            PlotKind::TimeToMarker => "time_to_marker",
            PlotKind::MemoryPerInstance => "memory_per_instance",
            PlotKind::ImageSizes => "image_sizes",
            PlotKind::Density => "density",
            PlotKind::HostsTimeToMarker => "hosts_time_to_marker",
            PlotKind::HostsMemory => "hosts_memory",
            PlotKind::DockerSplit => "docker_split",
        }
    }

    /// The title drawn on the plot.
    pub fn title(self) -> &'static str {
        match self {
            PlotKind::BootPhases => "Boot phases per backend (cumulative medians, log time axis)",
            PlotKind::TimeToMarker => "Time from launch to the workload's marker (each launch; box: quartiles)",
            PlotKind::MemoryPerInstance => "Memory per instance (medians, log axis)",
            PlotKind::ImageSizes => "Image size per kind (log axis)",
            PlotKind::Density => "Density: host memory used against instances running",
            PlotKind::HostsTimeToMarker => "Median time to the marker per backend and host (log axis)",
            PlotKind::HostsMemory => "Median cgroup peak per instance per backend and host (log axis)",
            PlotKind::DockerSplit => "A docker run split: the client's parts and the daemon's (medians)",
        }
    }
}

/// A plot written to disk, with its SVG text for embedding.
#[derive(Debug, Clone)]
pub struct RenderedPlot {
    /// Which plot.
    pub kind: PlotKind,
    /// The SVG file.
    pub svg_path: PathBuf,
    /// The PNG file.
    pub png_path: PathBuf,
    /// The SVG document.
    pub svg: String,
}

/// The data a plot draws, taken from one host's results or from several hosts'.
#[derive(Debug, Clone, Copy)]
pub enum PlotSource<'a> {
    /// One host.
    Host(&'a Results),
    /// Several hosts.
    Hosts(&'a MultiHost),
}

/// Whether `kind` has anything to draw from `source`.
pub fn has_data(kind: PlotKind, source: PlotSource) -> bool {
    match (kind, source) {
        (PlotKind::BootPhases, PlotSource::Host(r)) => !timeline_series(r).is_empty(),
        (PlotKind::TimeToMarker, PlotSource::Host(r)) => {
            r.series.iter().any(|s| !s.phase_samples("workload_ms").is_empty())
        }
        (PlotKind::MemoryPerInstance, PlotSource::Host(r)) => !memory_rows(r).is_empty(),
        (PlotKind::ImageSizes, PlotSource::Host(r)) => !r.images.is_empty(),
        (PlotKind::Density, PlotSource::Host(r)) => !density_lines(r).is_empty(),
        (PlotKind::HostsTimeToMarker, PlotSource::Hosts(m)) => !hosts_rows(m, host_marker).is_empty(),
        (PlotKind::HostsMemory, PlotSource::Hosts(m)) => !hosts_rows(m, host_peak).is_empty(),
        (PlotKind::DockerSplit, PlotSource::Host(r)) => r.docker_split.as_ref().is_some_and(|s| !s.parts().is_empty()),
        _ => false,
    }
}

/// Draws `kind` from `source` as `<dir>/<name>.svg` and `<dir>/<name>.png`.
pub fn render(kind: PlotKind, source: PlotSource, dir: &Path) -> Result<RenderedPlot, PlotError> {
    register_fonts()?;
    let svg_path = dir.join(format!("{}.svg", kind.name()));
    let png_path = dir.join(format!("{}.png", kind.name()));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(kind, source, &root)?;
        root.present().map_err(|e| draw_error(kind, e))?;
    }
    {
        let root = BitMapBackend::new(&png_path, SIZE).into_drawing_area();
        draw(kind, source, &root)?;
        root.present().map_err(|e| draw_error(kind, e))?;
    }
    std::fs::write(&svg_path, &svg).map_err(|source| PlotError::Write { path: svg_path.clone(), source })?;
    Ok(RenderedPlot { kind, svg_path, png_path, svg })
}

fn draw_error(kind: PlotKind, error: impl std::fmt::Display) -> PlotError {
    PlotError::Draw { plot: kind.name().to_owned(), message: error.to_string() }
}

/// The default font files the plots read, those of them that exist (a host that runs boxbench
/// elsewhere, such as an svm-host L1, carries them).
pub fn default_font_files() -> Vec<PathBuf> {
    [DEFAULT_FONT, DEFAULT_BOLD_FONT].iter().map(PathBuf::from).filter(|p| p.is_file()).collect()
}

/// Registers the fonts plotters renders text with, once per process.
pub fn register_fonts() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = REGISTERED.get_or_init(|| {
        let regular = std::env::var_os("BOXBENCH_FONT").map_or_else(|| PathBuf::from(DEFAULT_FONT), PathBuf::from);
        let load = |path: &Path, style: FontStyle| -> Result<(), PlotError> {
            let bytes =
                std::fs::read(path).map_err(|source| PlotError::FontUnreadable { path: path.to_owned(), source })?;
            // plotters keeps fonts for the life of the process and takes them as 'static: this
            // happens once per style (guarded by the OnceLock), so the leak is bounded.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", style, bytes)
                .map_err(|_| PlotError::FontInvalid(path.to_owned()))
        };
        load(&regular, FontStyle::Normal).map_err(|e| e.to_string())?;
        let bold = Path::new(DEFAULT_BOLD_FONT);
        let bold = if std::env::var_os("BOXBENCH_FONT").is_none() && bold.exists() { bold } else { &regular };
        load(bold, FontStyle::Bold).map_err(|e| e.to_string())
    });
    outcome.clone().map_err(|message| PlotError::Draw { plot: "fonts".to_owned(), message })
}

fn draw<DB: DrawingBackend>(
    kind: PlotKind,
    source: PlotSource,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), PlotError> {
    let err = |e| draw_error(kind, e);
    root.fill(&WHITE).map_err(err)?;
    let host_line = match source {
        PlotSource::Host(r) => r.host_line(),
        PlotSource::Hosts(m) => format!("hosts: {}", m.column_names().join(" | ")),
    };
    let (header, body) = root.split_vertically(HEADER_PX);
    header
        .draw_text(kind.title(), &("sans-serif", 22).into_font().style(FontStyle::Bold).color(&BLACK), (16, 10))
        .map_err(err)?;
    header
        .draw_text(&host_line, &("sans-serif", 14).into_font().color(&RGBColor(70, 70, 70)), (16, 40))
        .map_err(err)?;
    match (kind, source) {
        (PlotKind::BootPhases, PlotSource::Host(r)) => boot_phases(kind, &body, r),
        (PlotKind::TimeToMarker, PlotSource::Host(r)) => time_to_marker(kind, &body, r),
        (PlotKind::MemoryPerInstance, PlotSource::Host(r)) => grouped_bars(
            kind,
            &body,
            &memory_rows(r),
            &["cgroup peak", "PSS at marker", "runtime/VMM overhead", "shared daemons (PSS)"],
            Unit::Bytes,
            "bytes per instance",
        ),
        (PlotKind::ImageSizes, PlotSource::Host(r)) => {
            grouped_bars(kind, &body, &image_rows(r), &["on disk", "compressed"], Unit::Bytes, "image size")
        }
        (PlotKind::Density, PlotSource::Host(r)) => density(kind, &body, r),
        (PlotKind::HostsTimeToMarker, PlotSource::Hosts(m)) => {
            let names = m.column_names();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            grouped_bars(kind, &body, &hosts_rows(m, host_marker), &names, Unit::Milliseconds, "median time to marker")
        }
        (PlotKind::HostsMemory, PlotSource::Hosts(m)) => {
            let names = m.column_names();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            grouped_bars(kind, &body, &hosts_rows(m, host_peak), &names, Unit::Bytes, "median cgroup peak")
        }
        (PlotKind::DockerSplit, PlotSource::Host(r)) => docker_split(kind, &body, r),
        _ => Err(PlotError::Draw { plot: kind.name().to_owned(), message: "not drawn from this source".to_owned() }),
    }
}

/// Claim 7's stacked bars on a linear axis: the CLI's `docker run` as every part end to end, and the
/// Engine API run as its own parts (transport, the daemon's calls, the harness); a part whose
/// median is not positive is not drawn. The lowest row is left for the legend.
fn docker_split<DB: DrawingBackend>(
    kind: PlotKind,
    area: &DrawingArea<DB, Shift>,
    r: &Results,
) -> Result<(), PlotError> {
    use crate::docker_split::Side;
    let err = |e| draw_error(kind, e);
    let Some(split) = &r.docker_split else { return Ok(()) };
    let parts = split.parts();
    let labels = ["docker run (CLI)".to_owned(), "Engine API, no client".to_owned(), String::new()];
    let cli_total: f64 = parts.iter().map(|p| p.summary.median.max(0.0)).sum();
    let hi = cli_total.max(split.cli.phases.exit_ms.map_or(0.0, |s| s.median)) * 1.05;
    let n = labels.len();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(40)
        .x_label_area_size(44)
        .y_label_area_size(label_width(&labels))
        .build_cartesian_2d(0.0..hi.max(1.0), RowAxis { rows: n })
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("milliseconds (median of each part, end to end)")
        .x_label_formatter(&|v| axis_ms(*v))
        .y_label_formatter(&|v| labels.get(n.saturating_sub(1 + v.floor() as usize)).cloned().unwrap_or_default())
        .label_style(("sans-serif", LABEL_PX))
        .axis_desc_style(("sans-serif", LABEL_PX))
        .draw()
        .map_err(err)?;
    let (mut cli_at, mut api_at) = (0.0, 0.0);
    for (i, part) in parts.iter().enumerate() {
        let width = part.summary.median;
        if width <= 0.0 {
            continue;
        }
        let colour = if i < PALETTE.len() { PALETTE[i] } else { RGBColor(175, 175, 175) };
        let mut bars = vec![Rectangle::new(
            [(cli_at, row_base(0, n) + 0.2), (cli_at + width, row_base(0, n) + 0.8)],
            colour.filled(),
        )];
        cli_at += width;
        // The API run has no client: its bar is the transport, the daemon's calls and the harness.
        if matches!(part.side, Side::Daemon | Side::Harness) || part.name.starts_with("REST transport") {
            bars.push(Rectangle::new(
                [(api_at, row_base(1, n) + 0.2), (api_at + width, row_base(1, n) + 0.8)],
                colour.filled(),
            ));
            api_at += width;
        }
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(format!("{} ({})", part.name, format_ms(width)))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", LABEL_PX))
        .draw()
        .map_err(err)
}

/// A log axis range that holds every value with a margin: whole powers of ten.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.filter(|v| *v > 0.0 && v.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf((hi * 1.05).log10().ceil());
    (lo, if hi > lo { hi } else { lo * 10.0 })
}

/// Pixels the row labels need.
fn label_width(labels: &[String]) -> u32 {
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    (longest * LABEL_PX * 6 / 10 + 20).clamp(80, 460)
}

/// A vertical axis of `rows` labelled rows, row `i` spanning [i, i + 1), one tick at each row's centre.
#[derive(Debug, Clone, Copy)]
struct RowAxis {
    rows: usize,
}

impl Ranged for RowAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = value / self.rows.max(1) as f64;
        limit.0 + (f64::from(limit.1 - limit.0) * fraction).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() { Vec::new() } else { (0..self.rows).map(|i| i as f64 + 0.5).collect() }
    }

    fn range(&self) -> Range<f64> {
        0.0..self.rows as f64
    }
}

/// The y position of row `i` of `n` (first row at the top): rows span [pos, pos + 1).
fn row_base(i: usize, n: usize) -> f64 {
    (n - 1 - i) as f64
}

/// The series of the boot-phase plot: every series but `idle` (killed, so its exit is not its own)
/// with at least one phase.
fn timeline_series(r: &Results) -> Vec<&Series> {
    r.series
        .iter()
        .filter(|s| s.workload != "idle")
        .filter(|s| boxbench_core::Phases::NAMES.iter().any(|p| s.phases.get(p).is_some()))
        .collect()
}

/// The chart every row plot draws on: one row per label (first label on top) against a logarithmic
/// x axis over `range`, with its mesh, labels and axis description drawn.
fn row_chart<'a, DB: DrawingBackend + 'a>(
    kind: PlotKind,
    area: &'a DrawingArea<DB, Shift>,
    labels: &[String],
    (lo, hi): (f64, f64),
    x_desc: &str,
    x_format: &dyn Fn(&f64) -> String,
) -> Result<ChartContext<'a, DB, Cartesian2d<LogCoord<f64>, RowAxis>>, PlotError> {
    let err = |e| draw_error(kind, e);
    let n = labels.len();
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(40)
        .x_label_area_size(44)
        .y_label_area_size(label_width(labels))
        .build_cartesian_2d((lo..hi).log_scale(), RowAxis { rows: n })
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .x_label_formatter(x_format)
        .y_label_formatter(&|v| labels.get(n.saturating_sub(1 + v.floor() as usize)).cloned().unwrap_or_default())
        .label_style(("sans-serif", LABEL_PX))
        .axis_desc_style(("sans-serif", LABEL_PX))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// Draws horizontal bars from `segments` per row (x from, x to, legend index) on a log axis.
fn boot_phases<DB: DrawingBackend>(
    kind: PlotKind,
    area: &DrawingArea<DB, Shift>,
    r: &Results,
) -> Result<(), PlotError> {
    let err = |e| draw_error(kind, e);
    let series = timeline_series(r);
    let labels: Vec<String> = series.iter().map(|s| s.name()).collect();
    let legend = ["launch → ready", "→ first output", "→ userspace", "→ marker", "→ exit"];
    let (lo, hi) = log_range(
        series.iter().flat_map(|s| boxbench_core::Phases::NAMES.map(|p| s.phases.get(p).map_or(0.0, |x| x.median))),
    );
    let n = series.len();
    let mut chart =
        row_chart(kind, area, &labels, (lo, hi), "milliseconds since launch start (median of each phase)", &|v| {
            axis_ms(*v)
        })?;
    for (phase_index, phase) in boxbench_core::Phases::NAMES.iter().enumerate() {
        let colour = PALETTE[phase_index % PALETTE.len()];
        let mut bars = Vec::new();
        for (i, s) in series.iter().enumerate() {
            let mut start = lo;
            for earlier in &boxbench_core::Phases::NAMES[..phase_index] {
                if let Some(x) = s.phases.get(earlier) {
                    start = start.max(x.median);
                }
            }
            if let Some(end) = s.phases.get(phase).map(|x| x.median).filter(|end| *end > start) {
                let y = row_base(i, n);
                bars.push(Rectangle::new([(start, y + 0.2), (end, y + 0.8)], colour.filled()));
            }
        }
        // A phase no series observed gets no legend entry: the legend names only what is drawn.
        if bars.is_empty() {
            continue;
        }
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(legend[phase_index])
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
    }
    draw_legend(kind, &mut chart)
}

fn draw_legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    kind: PlotKind,
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        // Rows run from the containers (short bars) at the top to the Linux VMs (long bars) at the
        // bottom, so the upper right is the corner the bars leave free.
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", LABEL_PX))
        .draw()
        .map_err(|e| draw_error(kind, e))
}

/// Linear-interpolated quantile of an ascending, non-empty slice.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (below, above) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[below] + (sorted[above] - sorted[below]) * (pos - below as f64)
}

/// Box plot drawn by hand (so whiskers are the real min and max on a log axis), every launch a dot.
fn time_to_marker<DB: DrawingBackend>(
    kind: PlotKind,
    area: &DrawingArea<DB, Shift>,
    r: &Results,
) -> Result<(), PlotError> {
    let err = |e| draw_error(kind, e);
    let rows: Vec<(String, Vec<f64>)> = r
        .series
        .iter()
        .map(|s| {
            let mut samples = s.phase_samples("workload_ms");
            samples.retain(|v| v.is_finite() && *v > 0.0);
            samples.sort_by(f64::total_cmp);
            (s.name(), samples)
        })
        .filter(|(_, samples)| !samples.is_empty())
        .collect();
    let labels: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
    let n = rows.len();
    // Headroom right of the slowest launch for the median's label.
    let (lo, hi) = log_range(rows.iter().flat_map(|(_, s)| s.iter().copied().chain([s[s.len() - 1] * 4.0])));
    let mut chart = row_chart(
        kind,
        area,
        &labels,
        (lo, hi),
        "milliseconds from launch start to the marker (whiskers: min and max)",
        &|v| axis_ms(*v),
    )?;
    for (i, (_, samples)) in rows.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let y = row_base(i, n);
        let (min, max) = (samples[0], samples[samples.len() - 1]);
        let (q1, median, q3) = (quantile(samples, 0.25), quantile(samples, 0.5), quantile(samples, 0.75));
        chart
            .draw_series([PathElement::new(vec![(min, y + 0.5), (max, y + 0.5)], colour.stroke_width(2))])
            .map_err(err)?;
        chart
            .draw_series(
                [min, max].map(|x| PathElement::new(vec![(x, y + 0.35), (x, y + 0.65)], colour.stroke_width(2))),
            )
            .map_err(err)?;
        chart
            .draw_series([Rectangle::new([(q1, y + 0.25), (q3, y + 0.75)], colour.mix(0.35).filled())])
            .map_err(err)?;
        chart.draw_series([Rectangle::new([(q1, y + 0.25), (q3, y + 0.75)], colour.stroke_width(2))]).map_err(err)?;
        chart
            .draw_series([PathElement::new(vec![(median, y + 0.2), (median, y + 0.8)], BLACK.stroke_width(3))])
            .map_err(err)?;
        chart
            .draw_series(samples.iter().map(|x| Circle::new((*x, y + 0.5), 3, BLACK.mix(0.6).filled())))
            .map_err(err)?;
        let label_style = ("sans-serif", LABEL_PX).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series([Text::new(format!("median {}", format_ms(median)), (max * 1.12, y + 0.5), label_style)])
            .map_err(err)?;
    }
    Ok(())
}

/// Rows of the memory plot: (series, [peak, PSS, overhead, shared daemons] medians).
fn memory_rows(r: &Results) -> Vec<(String, Vec<Option<f64>>)> {
    r.series
        .iter()
        .map(|s| {
            (
                s.name(),
                crate::schema::MemorySummaries::NAMES
                    .iter()
                    .map(|m| s.memory.get(m).map(|x| x.median))
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, values)| values.iter().any(Option::is_some))
        .collect()
}

/// Rows of the image plot: ("name [kind]", [bytes, compressed]), sorted by kind.
fn image_rows(r: &Results) -> Vec<(String, Vec<Option<f64>>)> {
    let mut images: Vec<&crate::schema::ImageSize> = r.images.iter().collect();
    images.sort_by_key(|i| (i.kind, i.bytes));
    images
        .iter()
        .map(|i| {
            (
                format!("{} [{}]", i.name, i.kind.label()),
                vec![Some(i.bytes as f64), i.compressed_bytes.map(|b| b as f64)],
            )
        })
        .collect()
}

fn host_marker(s: &Series) -> Option<f64> {
    s.phases.workload_ms.map(|x| x.median)
}

fn host_peak(s: &Series) -> Option<f64> {
    s.memory.peak_bytes.map(|x| x.median)
}

/// Rows of a multi-host plot: one per series name found on any host, a value per host.
fn hosts_rows(m: &MultiHost, get: fn(&Series) -> Option<f64>) -> Vec<(String, Vec<Option<f64>>)> {
    let mut names: Vec<String> = Vec::new();
    for s in m.hosts.iter().flat_map(|h| &h.series) {
        if !names.contains(&s.name()) {
            names.push(s.name());
        }
    }
    names
        .into_iter()
        .map(|name| {
            let values: Vec<Option<f64>> =
                m.hosts.iter().map(|h| h.series.iter().find(|s| s.name() == name).and_then(get)).collect();
            (name, values)
        })
        .filter(|(_, values)| values.iter().any(Option::is_some))
        .collect()
}

/// Horizontal bars on a log axis, several per row (one per entry of `legend`).
fn grouped_bars<DB: DrawingBackend>(
    kind: PlotKind,
    area: &DrawingArea<DB, Shift>,
    rows: &[(String, Vec<Option<f64>>)],
    legend: &[&str],
    unit: Unit,
    axis: &str,
) -> Result<(), PlotError> {
    let err = |e| draw_error(kind, e);
    let scale = |v: f64| if unit == Unit::Bytes { mib(v) } else { v };
    let rows: Vec<(String, Vec<Option<f64>>)> =
        rows.iter().map(|(l, values)| (l.clone(), values.iter().map(|v| v.map(scale)).collect())).collect();
    let labels: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
    let n = rows.len();
    let (lo, hi) = log_range(rows.iter().flat_map(|(_, v)| v.iter().flatten().copied()));
    let unit_name = match unit {
        Unit::Milliseconds => "milliseconds",
        Unit::Bytes => "MiB",
    };
    let mut chart = row_chart(kind, area, &labels, (lo, hi), &format!("{axis} ({unit_name})"), &|v| {
        if unit == Unit::Bytes { axis_mib(*v) } else { axis_ms(*v) }
    })?;
    let slot = 0.8 / legend.len().max(1) as f64;
    for (k, name) in legend.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, (_, values))| {
                let value = values.get(k).copied().flatten().filter(|v| *v > 0.0)?;
                let top = row_base(i, n) + 0.9 - slot * k as f64;
                Some(Rectangle::new([(lo, top - slot * 0.9), (value, top)], colour.filled()))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
    }
    draw_legend(kind, &mut chart)
}

/// The density plot's lines: (backend label, points of (instances, MiB)). A step without a curve
/// is drawn from its two measured ends: nothing running, and all its instances running.
fn density_lines(r: &Results) -> Vec<(String, Vec<(f64, f64)>)> {
    r.density
        .iter()
        .filter_map(|d| {
            let mut points: Vec<(f64, f64)> =
                d.curve.iter().map(|p| (p.instances as f64, mib(p.host_memory_used_bytes as f64))).collect();
            if points.is_empty() {
                points = vec![(0.0, 0.0), (d.launched as f64, mib(d.mem_available_drop_bytes? as f64))];
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Some((VmKind::backend_name(d.vm_kind, &d.backend), points))
        })
        .collect()
}

fn density<DB: DrawingBackend>(kind: PlotKind, area: &DrawingArea<DB, Shift>, r: &Results) -> Result<(), PlotError> {
    let err = |e| draw_error(kind, e);
    let lines = density_lines(r);
    let max_x = lines.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(1.0, f64::max);
    let max_y = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .margin_right(40)
        .x_label_area_size(44)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..max_x * 1.05, 0f64..max_y * 1.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("instances running at once")
        .y_desc("host memory used (MemAvailable drop)")
        .x_label_formatter(&|v| if v.fract() == 0.0 { format!("{v:.0}") } else { String::new() })
        .y_label_formatter(&|v| axis_mib(*v))
        .label_style(("sans-serif", LABEL_PX))
        .axis_desc_style(("sans-serif", LABEL_PX))
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(3)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(3)));
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, colour.filled()))).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", LABEL_PX))
        .draw()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_range_spans_whole_decades() {
        assert_eq!(log_range([2.5, 340.0].into_iter()), (1.0, 1000.0));
        assert_eq!(log_range([0.0, f64::NAN].into_iter()), (1.0, 10.0));
        assert_eq!(log_range([10.0].into_iter()), (10.0, 100.0));
    }

    #[test]
    fn quantiles_interpolate() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&sorted, 0.5), 2.5);
        assert_eq!(quantile(&sorted, 0.0), 1.0);
        assert_eq!(quantile(&sorted, 1.0), 4.0);
        assert_eq!(quantile(&[7.0], 0.25), 7.0);
    }
}
