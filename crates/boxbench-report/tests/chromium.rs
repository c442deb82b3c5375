//! The HTML report in a real browser: headless Chromium (Debian's `chromium`) loads it from disk and
//! must build an SVG element per plot and paint the plots (their colours appear in a screenshot).
//! Where Chromium is not installed it is a skip through boxbench-testkit (a failure under
//! `BOXBENCH_REQUIRE_ALL=1`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use boxbench_report::schema::{ImageKind, VmKind};
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

/// A tall window at half-resolution pixels: the whole report at once, a quarter of the screenshot to
/// decode, the plots still plain.
const WHOLE_PAGE: Window = Window { size: "1280,16000", scale: "0.5" };
/// The first screen a reader sees on a common laptop display.
const FIRST_SCREEN: Window = Window { size: "1400,900", scale: "1" };

/// Chromium's window: its size in CSS pixels and its device scale factor.
struct Window {
    size: &'static str,
    scale: &'static str,
}

/// Runs headless Chromium on `page` with `mode` (`--dump-dom` or `--screenshot=…`) in `window`, in a
/// fresh profile, killed if it overruns its deadline.
fn run_chromium(chromium: &Path, page: &Path, mode: &str, window: &Window) -> Output {
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
        ])
        .arg(format!("--window-size={}", window.size))
        .arg(format!("--force-device-scale-factor={}", window.scale))
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

/// A PNG's width, height and RGB pixels, row by row.
fn decode_png(path: &Path) -> (usize, usize, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    let channels = frame.color_type.samples();
    let pixels = buffer[..frame.buffer_size()].chunks(channels).map(|p| [p[0], p[1], p[2]]).collect();
    (frame.width as usize, frame.height as usize, pixels)
}

#[test]
fn html_report_renders_its_plots_in_headless_chromium() {
    let chromium = boxbench_testkit::require!(find_chromium());
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&common::full_results(), &dir.path().join("report")).unwrap();

    let dom = run_chromium(&chromium, &files.report_html, "--dump-dom", &WHOLE_PAGE);
    assert!(dom.status.success(), "chromium --dump-dom failed: {:?}", dom.status);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(dom.matches("<svg").count(), files.plots.len(), "one svg element per plot");
    for (svg, _) in &files.plots {
        let name = svg.file_stem().unwrap().to_string_lossy();
        assert!(dom.contains(&format!("id=\"plot-{name}\"")), "plot {name} in the DOM");
    }
    assert!(dom.matches("<rect").count() > 20 && dom.contains("<text"), "the plots' shapes and labels are in the DOM");

    let shot = dir.path().join("shot.png");
    let run = run_chromium(&chromium, &files.report_html, &format!("--screenshot={}", shot.display()), &WHOLE_PAGE);
    assert!(run.status.success(), "chromium --screenshot failed: {:?}", run.status);
    let (_, _, pixels) = decode_png(&shot);
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 10);
    let (mut orange, mut painted) = (0usize, 0usize);
    for p in &pixels {
        if near(p, PLOT_ORANGE) {
            orange += 1;
        }
        if !near(p, [255, 255, 255]) {
            painted += 1;
        }
    }
    let total = pixels.len();
    assert!(painted > total / 100, "the page is not blank: {painted} of {total} pixels painted");
    assert!(orange > 2_500, "the plots' bars were painted: {orange} orange pixels");
}

/// The finding colours of the verdict matrices' cells (the report's style sheet): supports,
/// comparable, contradicts.
const FINDING_COLOURS: [(&str, [u8; 3]); 3] =
    [("supports", [0xbf, 0xe3, 0xc6]), ("comparable", [0xf5, 0xe3, 0xa3]), ("contradicts", [0xf3, 0xbc, 0xbc])];

/// Appended to a copy of the report: the browser's own layout of every verdict card and its matrix,
/// written into the DOM so `--dump-dom` carries it out.
const LAYOUT_PROBE: &str = r#"<script>
const rect = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom].map(Math.round).join(' '); };
const lines = [`viewport ${window.innerWidth} ${window.innerHeight}`];
for (const card of document.querySelectorAll('.glance .card')) {
  const matrix = card.querySelector('table.matrix');
  lines.push(`${card.id} card ${rect(card)} matrix ${matrix ? rect(matrix) : 'none'}`);
}
const out = document.createElement('pre');
out.id = 'layout-probe';
out.textContent = lines.join('\n');
document.body.appendChild(out);
</script>"#;

/// A report of every claim with five container runtimes and three VM kinds, as wide as a real
/// `compare` run on this host gives, and every finding among its cells (runc's launches overlap the
/// microvm's: comparable), the own guest's long uname line and as many images as a real run.
fn wide_results() -> boxbench_report::Results {
    let mut r = common::full_results();
    for (backend, ms) in [("runc", 3.15), ("youki", 9.0), ("podman", 180.0)] {
        let marker: Vec<f64> = [0.9, 1.0, 1.1, 0.95, 1.05].iter().map(|f| f * ms).collect();
        r.series.push(common::series(backend, None, &marker, 4));
    }
    // boxbench's own guest prints its whole set-up line where a Linux guest prints its release.
    let own_guest = "boxbench-guest cpus=1 mem_mib=256 initrd_bytes=0 initrd_crc32=00000000 cmdline=\"console=ttyS0\"";
    r.series.push(common::uname_series("microvm", Some(VmKind::OwnGuestFloor), own_guest));
    r.series.push(common::uname_series("crun", None, common::HOST_KERNEL));
    // As many images as a real run measures: six VM images against two container images.
    r.images.push(common::image("oci-image", ImageKind::ContainerImage, 2 * common::MIB));
    for name in ["boxbench-guest.elf", "boxbench-guest.bzImage", "debian-cloud-vmlinuz+initramfs"] {
        r.images.push(common::image(name, ImageKind::MicroVmKernelInitrd, 3 * common::MIB));
    }
    r
}

#[test]
fn first_screen_of_the_html_report_shows_every_claims_verdict_matrix() {
    let chromium = boxbench_testkit::require!(find_chromium());
    let dir = tempfile::tempdir().unwrap();
    let files = write_report(&wide_results(), &dir.path().join("report")).unwrap();
    let html = std::fs::read_to_string(&files.report_html).unwrap();
    let probed = dir.path().join("probed.html");
    std::fs::write(&probed, html.replace("</body>", &format!("{LAYOUT_PROBE}\n</body>"))).unwrap();

    // Layout: the browser places every claim's card, matrix included, inside the 1400×900 viewport.
    let dom = run_chromium(&chromium, &probed, "--dump-dom", &FIRST_SCREEN);
    assert!(dom.status.success(), "chromium --dump-dom failed: {:?}", dom.status);
    let dom = String::from_utf8_lossy(&dom.stdout);
    let probe =
        dom.split("<pre id=\"layout-probe\">").nth(1).and_then(|p| p.split("</pre>").next()).expect("probe ran");
    let mut lines = probe.lines();
    let viewport: Vec<i64> = lines.next().unwrap().split(' ').skip(1).map(|n| n.parse().unwrap()).collect();
    // A 1400×900 window: headless Chromium's --dump-dom keeps room for a browser's bars (a 757 px high
    // viewport), so the cards must fit what a reader sees in such a window, not just the screenshot.
    let (viewport_width, viewport_height) = (viewport[0], viewport[1]);
    assert!(viewport_width == 1400 && viewport_height <= 900, "chromium's viewport: {viewport:?}");
    let mut matrices = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split(' ').collect();
        let numbers = |at: usize| -> Vec<i64> { words[at..at + 4].iter().map(|n| n.parse().unwrap()).collect() };
        let (id, card) = (words[0], numbers(2));
        assert_eq!(words[6], "matrix", "{line}");
        assert_ne!(words[7], "none", "{id} has a matrix: {line}");
        let matrix = numbers(7);
        for (what, [left, top, right, bottom]) in
            [("card", &card), ("matrix", &matrix)].map(|(w, r)| (w, [r[0], r[1], r[2], r[3]]))
        {
            assert!(
                left >= 0 && top >= 0 && right <= viewport_width && bottom <= viewport_height,
                "{id}'s {what} off the first screen ({viewport:?}): {line}\n{probe}"
            );
        }
        assert!(
            matrix[0] >= card[0] && matrix[2] <= card[2] && matrix[3] <= card[3],
            "{id}'s matrix overflows its card: {line}"
        );
        matrices.push((id.to_owned(), matrix));
    }
    let ids: Vec<&str> = matrices.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["glance-claim-1", "glance-claim-2", "glance-claim-3", "glance-claim-4"], "{probe}");

    // Paint: a 1400×900 screenshot shows coloured finding cells inside each matrix's box.
    let shot = std::env::var_os("BOXBENCH_KEEP_SCREENSHOT")
        .map_or_else(|| dir.path().join("first-screen.png"), std::path::PathBuf::from);
    let run = run_chromium(&chromium, &files.report_html, &format!("--screenshot={}", shot.display()), &FIRST_SCREEN);
    assert!(run.status.success(), "chromium --screenshot failed: {:?}", run.status);
    let (width, height, pixels) = decode_png(&shot);
    assert_eq!((width, height), (1400, 900), "screenshot size");
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 6);
    let mut seen_anywhere = [0usize; 3];
    for (id, m) in &matrices {
        let mut coloured = 0;
        for y in m[1] as usize..(m[3] as usize).min(height) {
            for x in m[0] as usize..(m[2] as usize).min(width) {
                for (i, (_, colour)) in FINDING_COLOURS.iter().enumerate() {
                    if near(&pixels[y * width + x], *colour) {
                        coloured += 1;
                        seen_anywhere[i] += 1;
                    }
                }
            }
        }
        // At least one whole cell (about 60×30 pixels) painted in a finding colour.
        assert!(coloured > 1_500, "{id}: only {coloured} pixels of finding colour in its matrix {m:?}");
    }
    for ((name, _), n) in FINDING_COLOURS.iter().zip(seen_anywhere) {
        assert!(n > 0, "no {name} cell on the first screen: {seen_anywhere:?}");
    }
}
