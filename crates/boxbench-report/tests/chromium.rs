//! The HTML report in a real browser: headless Chromium (Debian's `chromium`) loads it from disk and
//! must build an SVG element per plot and paint the plots (their colours appear in a screenshot).
//! Where Chromium is not installed it is a skip through boxbench-testkit (a failure under
//! `BOXBENCH_REQUIRE_ALL=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use boxbench_report::write_report;

const CHROMIUM_DEADLINE: Duration = Duration::from_secs(120);
/// The second bar colour of every plot (Okabe–Ito orange), used nowhere in the page's own style.
const PLOT_ORANGE: [u8; 3] = [230, 159, 0];

/// Chromium on PATH, or why there is none.
fn find_chromium() -> Result<PathBuf, &'static str> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or("chromium is not installed (Debian package chromium)")
}

/// Runs headless Chromium on `page` with `mode` (`--dump-dom` or `--screenshot=…`), in a fresh
/// profile, killed if it overruns its deadline.
fn run_chromium(chromium: &Path, page: &Path, mode: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let stdout_file = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,16000",
            // Half-resolution pixels: a quarter of the screenshot to decode, the plots still plain.
            "--force-device-scale-factor=0.5",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(mode)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(stdout_file.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let give_up = Instant::now() + CHROMIUM_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > give_up {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("chromium {mode} overran {CHROMIUM_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: std::fs::read(stdout_file.path()).unwrap(), stderr: Vec::new() }
}

#[test]
fn html_report_renders_its_plots_in_headless_chromium() {
    let chromium = boxbench_testkit::require!(find_chromium());
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&common::full_results(), &dir.path().join("report")).unwrap();

    let dom = run_chromium(&chromium, &files.report_html, "--dump-dom");
    assert!(dom.status.success(), "chromium --dump-dom failed: {:?}", dom.status);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg").count(), files.plots.len(), "one svg element per plot");
    for (svg, _) in &files.plots {
        let name = svg.file_stem().unwrap().to_string_lossy();
        assert!(dom.contains(&format!("id=\"plot-{name}\"")), "plot {name} in the DOM");
    }
    assert!(dom.matches("<rect").count() > 20 && dom.contains("<text"), "the plots' shapes and labels are in the DOM");

    let shot = dir.path().join("shot.png");
    let run = run_chromium(&chromium, &files.report_html, &format!("--screenshot={}", shot.display()));
    assert!(run.status.success(), "chromium --screenshot failed: {:?}", run.status);
    let decoder = png::Decoder::new(std::fs::File::open(&shot).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    let pixels = &pixels[..frame.buffer_size()];
    let near = |p: &[u8], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 10);
    let (mut orange, mut painted) = (0usize, 0usize);
    for p in pixels.chunks(channels) {
        if near(p, PLOT_ORANGE) {
            orange += 1;
        }
        if !near(p, [255, 255, 255]) {
            painted += 1;
        }
    }
    let total = pixels.len() / channels;
    assert!(painted > total / 100, "the page is not blank: {painted} of {total} pixels painted");
    assert!(orange > 2_500, "the plots' bars were painted: {orange} orange pixels");
}
