//! The report as a sequence of blocks (headings, paragraphs, lists, tables, plots, code), written once
//! and rendered both as Markdown and as self-contained HTML, so the two never say different things.
//!
//! Inline text may hold `code` spans and **bold** spans; both renderers understand them.

use crate::claims::Finding;
use crate::glance::{Glance, Matrix, title, verdict_word};
use crate::plots::{PlotKind, RenderedPlot};

/// One block of the report.
#[derive(Debug, Clone)]
pub enum Block {
    /// A heading of level 1–4.
    Heading(u8, String),
    /// A paragraph.
    Paragraph(String),
    /// A bulleted list.
    List(Vec<String>),
    /// A table with a header row.
    Table {
        /// Column headings.
        header: Vec<String>,
        /// Rows, each as long as the header.
        rows: Vec<Vec<String>>,
    },
    /// A plot, by kind (rendered from the plots written beside the report).
    Plot(PlotKind),
    /// Preformatted text.
    Code(String),
    /// Every claim at a glance: its verdict, sentence and matrix (in HTML a grid of coloured cards).
    Glance(Vec<Glance>),
}

/// The report's blocks.
#[derive(Debug, Clone, Default)]
pub struct Document {
    blocks: Vec<Block>,
}

impl Document {
    /// Adds a heading.
    pub fn heading(&mut self, level: u8, text: impl Into<String>) {
        self.blocks.push(Block::Heading(level, text.into()));
    }

    /// Adds a paragraph.
    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Paragraph(text.into()));
    }

    /// Adds a list; nothing when `items` is empty.
    pub fn list(&mut self, items: Vec<String>) {
        if !items.is_empty() {
            self.blocks.push(Block::List(items));
        }
    }

    /// Adds a table; nothing when it has no rows.
    pub fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) {
        if !rows.is_empty() {
            self.blocks.push(Block::Table { header: header.iter().map(|h| (*h).to_owned()).collect(), rows });
        }
    }

    /// Adds a table whose header is computed.
    pub fn table_owned(&mut self, header: Vec<String>, rows: Vec<Vec<String>>) {
        if !rows.is_empty() {
            self.blocks.push(Block::Table { header, rows });
        }
    }

    /// Adds a plot.
    pub fn plot(&mut self, kind: PlotKind) {
        self.blocks.push(Block::Plot(kind));
    }

    /// Adds preformatted text.
    pub fn code(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Code(text.into()));
    }

    /// Adds the claims at a glance.
    pub fn glance(&mut self, glances: Vec<Glance>) {
        self.blocks.push(Block::Glance(glances));
    }

    /// The document as Markdown; plots link to `plots/<name>.svg` and `.png` (those in `plots`).
    pub fn to_markdown(&self, plots: &[RenderedPlot]) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    out.push_str(&format!("{} {}\n\n", "#".repeat(usize::from(*level)), text));
                }
                Block::Paragraph(text) => out.push_str(&format!("{text}\n\n")),
                Block::List(items) => {
                    for item in items {
                        out.push_str(&format!("- {item}\n"));
                    }
                    out.push('\n');
                }
                Block::Table { header, rows } => {
                    let line = |cells: &[String]| {
                        let cells: Vec<String> =
                            cells.iter().map(|c| c.replace('|', "\\|").replace('\n', " ")).collect();
                        format!("| {} |\n", cells.join(" | "))
                    };
                    out.push_str(&line(header));
                    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
                    for row in rows {
                        out.push_str(&line(row));
                    }
                    out.push('\n');
                }
                Block::Plot(kind) => {
                    if plots.iter().any(|p| p.kind == *kind) {
                        out.push_str(&format!(
                            "![{title}](plots/{name}.svg)\n\n([PNG](plots/{name}.png))\n\n",
                            title = kind.title(),
                            name = kind.name()
                        ));
                    }
                }
                Block::Code(text) => out.push_str(&format!("```text\n{text}\n```\n\n")),
                Block::Glance(glances) => {
                    for glance in glances {
                        out.push_str(&glance_markdown(glance));
                    }
                }
            }
        }
        out
    }

    /// The document as one self-contained HTML page: CSS inline, plots embedded as inline SVG.
    pub fn to_html(&self, title: &str, plots: &[RenderedPlot]) -> String {
        let mut body = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let level = (*level).clamp(1, 6);
                    body.push_str(&format!("<h{level}>{}</h{level}>\n", inline_html(text)));
                }
                Block::Paragraph(text) => body.push_str(&format!("<p>{}</p>\n", inline_html(text))),
                Block::List(items) => {
                    body.push_str("<ul>\n");
                    for item in items {
                        body.push_str(&format!("<li>{}</li>\n", inline_html(item)));
                    }
                    body.push_str("</ul>\n");
                }
                Block::Table { header, rows } => {
                    body.push_str("<table>\n<thead><tr>");
                    for h in header {
                        body.push_str(&format!("<th>{}</th>", inline_html(h)));
                    }
                    body.push_str("</tr></thead>\n<tbody>\n");
                    for row in rows {
                        body.push_str("<tr>");
                        for cell in row {
                            body.push_str(&format!("<td>{}</td>", inline_html(cell)));
                        }
                        body.push_str("</tr>\n");
                    }
                    body.push_str("</tbody>\n</table>\n");
                }
                Block::Plot(kind) => {
                    if let Some(plot) = plots.iter().find(|p| p.kind == *kind) {
                        body.push_str(&format!(
                            "<figure class=\"plot\" id=\"plot-{name}\">\n{svg}\n<figcaption>{title}</figcaption>\n</figure>\n",
                            name = kind.name(),
                            svg = strip_xml_declaration(&plot.svg),
                            title = escape(kind.title())
                        ));
                    }
                }
                Block::Code(text) => body.push_str(&format!("<pre><code>{}</code></pre>\n", escape(text))),
                Block::Glance(glances) => body.push_str(&glance_html(glances)),
            }
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{}</style>\n</head>\n<body>\n<main>\n{}</main>\n</body>\n</html>\n",
            escape(title),
            STYLE,
            body
        )
    }
}

/// The page's style sheet, inline so the page is one file.
const STYLE: &str =
    "body { font-family: 'DejaVu Sans', system-ui, sans-serif; color: #222; background: #fff; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5rem 2rem 4rem; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-top: .4rem; border-bottom: 2px solid #0072b2; padding-bottom: .3rem; }
h2 { font-size: 1.35rem; margin-top: 2.2rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1rem; margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .6rem 0 1.2rem; font-size: .88rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #eef4f9; }
tbody tr:nth-child(even) { background: #f8f8f8; }
code { font-family: 'DejaVu Sans Mono', monospace; font-size: .85em; background: #f2f2f2; padding: 0 .2em; }
pre { background: #f2f2f2; padding: .6rem; overflow-x: auto; white-space: pre-wrap; }
pre code { background: none; padding: 0; }
figure.plot { margin: 1rem 0 1.6rem; }
figure.plot svg { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .85rem; color: #555; }
strong { color: #003f6b; }
.glance .legend { font-size: .8rem; margin: .3rem 0 .5rem; }
.glance .legend span { padding: 0 .4em; margin-left: .3em; }
.glance .cards { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: .5rem 1rem; }
.glance .card { border: 1px solid #ccc; padding: .3rem .6rem; line-height: 1.25; }
.glance h3 { font-size: .95rem; margin: .2rem 0; }
.glance .verdict { font-weight: normal; background: #eef4f9; padding: 0 .4em; margin-left: .3em; }
.glance .sentence { font-size: .8rem; margin: .2rem 0 .4rem; }
table.matrix { font-size: .75rem; margin: .2rem 0; }
table.matrix th, table.matrix td { padding: .1rem .35rem; }
table.matrix td.one-line { white-space: nowrap; }
table.matrix tbody th { background: #f8f8f8; font-weight: normal; }
.supports { background: #bfe3c6 !important; }
.comparable { background: #f5e3a3 !important; }
.contradicts { background: #f3bcbc !important; }
.unmeasured { color: #888; }
";

/// A claim at a glance in Markdown: a bold title line with the verdict, the sentence, and the matrix
/// with each cell's finding written out (Markdown has no colour).
fn glance_markdown(glance: &Glance) -> String {
    let mut out = format!(
        "**Claim {}: {} — {}.** {}\n\n",
        glance.claim.number(),
        title(glance.claim),
        verdict_word(&glance.verdict),
        glance.sentence
    );
    if let Some(matrix) = &glance.matrix {
        let mut doc = Document::default();
        let header: Vec<String> =
            std::iter::once(matrix.metric.clone()).chain(matrix.columns.iter().cloned()).collect();
        let rows = matrix
            .rows
            .iter()
            .map(|row| {
                std::iter::once(row.subject.clone())
                    .chain(row.cells.iter().map(|cell| match cell {
                        Some(c) => format!("**{}** ({}) {}", c.main, c.detail, c.finding),
                        None => "not measured".to_owned(),
                    }))
                    .collect()
            })
            .collect();
        doc.table_owned(header, rows);
        out.push_str(&doc.to_markdown(&[]));
    }
    out
}

/// Every claim at a glance in HTML: a legend, then one card per claim, laid out in a grid so all of
/// them fit the first screen.
fn glance_html(glances: &[Glance]) -> String {
    let mut out = String::from(
        "<section class=\"glance\">\n<p class=\"legend\">Each cell: VM figure over container figure, ratio of \
         medians and its 95% interval. <span class=\"supports\">supports the claim</span> \
         <span class=\"comparable\">comparable (interval contains 1)</span> \
         <span class=\"contradicts\">contradicts the claim</span></p>\n<div class=\"cards\">\n",
    );
    for glance in glances {
        out.push_str(&format!(
            "<div class=\"card\" id=\"glance-claim-{n}\">\n<h3>{n}. {title} <span class=\"verdict\">{verdict}</span></h3>\n<p class=\"sentence\">{sentence}</p>\n",
            n = glance.claim.number(),
            title = escape(title(glance.claim)),
            verdict = escape(verdict_word(&glance.verdict)),
            sentence = inline_html(&glance.sentence),
        ));
        if let Some(matrix) = &glance.matrix {
            out.push_str(&matrix_html(matrix));
        }
        out.push_str("</div>\n");
    }
    out.push_str("</div>\n</section>\n");
    out
}

fn matrix_html(matrix: &Matrix) -> String {
    let mut out = format!("<table class=\"matrix\">\n<thead><tr><th>{}</th>", escape(&matrix.metric));
    for column in &matrix.columns {
        out.push_str(&format!("<th>{}</th>", escape(column)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &matrix.rows {
        out.push_str(&format!("<tr><th title=\"{}\">{}</th>", escape(&row.kind), escape(&row.subject)));
        for cell in &row.cells {
            match cell {
                Some(c) => {
                    // A single measurement's cell ("4.50× 9.00 MiB vs 2.00 MiB") stays on one line, so a
                    // claim with many images still fits the first screen.
                    let one_line = c.ratio.is_some() && c.ratio_ci.is_none();
                    out.push_str(&format!(
                        "<td class=\"{class}{extra}\" title=\"{class}\"><b>{main}</b>{break_}<small>{detail}</small></td>",
                        class = finding_class(c.finding),
                        extra = if one_line { " one-line" } else { "" },
                        main = inline_html(&c.main),
                        break_ = if one_line { " " } else { "<br>" },
                        detail = inline_html(&c.detail),
                    ));
                }
                None => out.push_str("<td class=\"unmeasured\">not measured</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// The CSS class (and colour) of a finding.
fn finding_class(finding: Finding) -> &'static str {
    match finding {
        Finding::Supports => "supports",
        Finding::Contradicts => "contradicts",
        Finding::Comparable => "comparable",
    }
}

/// plotters' SVG carries no XML declaration today; should one appear, it must go before inlining.
fn strip_xml_declaration(svg: &str) -> &str {
    let trimmed = svg.trim_start();
    if trimmed.starts_with("<?xml")
        && let Some(end) = trimmed.find("?>")
    {
        return trimmed[end + 2..].trim_start();
    }
    trimmed
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes inline text and turns `code` and **bold** spans into elements (an unpaired marker stays
/// as written).
fn inline_html(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next_code = rest.find('`');
        let next_bold = rest.find("**");
        let (start, marker, tag) = match (next_code, next_bold) {
            (Some(c), Some(b)) if b < c => (b, "**", "strong"),
            (Some(c), _) => (c, "`", "code"),
            (None, Some(b)) => (b, "**", "strong"),
            (None, None) => break,
        };
        let after = &rest[start + marker.len()..];
        let Some(end) = after.find(marker) else { break };
        out.push_str(&escape(&rest[..start]));
        let inner = &after[..end];
        let inner = if tag == "code" { escape(inner) } else { inline_html(inner) };
        out.push_str(&format!("<{tag}>{inner}</{tag}>"));
        rest = &after[end + marker.len()..];
    }
    out.push_str(&escape(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_spans_become_elements_and_text_is_escaped() {
        assert_eq!(inline_html("a `x<y` **b & c** d"), "a <code>x&lt;y</code> <strong>b &amp; c</strong> d");
        assert_eq!(inline_html("3 * 4 ** unpaired"), "3 * 4 ** unpaired");
        assert_eq!(inline_html("**`code` in bold**"), "<strong><code>code</code> in bold</strong>");
    }

    #[test]
    fn markdown_tables_escape_pipes() {
        let mut doc = Document::default();
        doc.table(&["a", "b"], vec![vec!["x|y".into(), "z".into()]]);
        doc.table(&["empty"], vec![]);
        assert_eq!(doc.to_markdown(&[]), "| a | b |\n|---|---|\n| x\\|y | z |\n\n");
    }
}
