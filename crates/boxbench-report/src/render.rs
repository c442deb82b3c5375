//! What the report says, section by section: the claims first, then every series with its statistics
//! and exact settings, image sizes, density, the uname evidence, the host and the caveats. One
//! [`Document`] per report, for one host or for several side by side.

use boxbench_core::Phases;
use boxbench_core::stats::Summary;

use crate::claims::{ClaimVerdict, Evidence, judge, ratio_text};
use crate::document::Document;
use crate::plots::PlotKind;
use crate::schema::{MemorySummaries, MultiHost, Results, VmKind};
use crate::units::{Unit, format_bytes, format_ratio};

/// The report of one host's results.
pub fn host_document(results: &Results) -> Document {
    let verdicts = judge(results);
    let mut doc = Document::default();
    doc.heading(1, "boxbench report");
    doc.paragraph(format!("**Host:** {}", results.host_line()));
    // The first screen answers every claim; the detailed tables follow.
    doc.glance(crate::glance::glances(&verdicts));
    doc.paragraph(format!("Generated {} by `{}`.", results.generated_at, command_line(&results.settings.command_line)));

    doc.heading(2, "Claims");
    doc.paragraph(
        "Each claim of container tutorials is stated so the data can test it; the verdict is derived from \
         the figures below, and says which kind of VM it rests on. Each pair of launch series is compared by the \
         ratio of their medians with its 95% bootstrap interval (2000 resamples, fixed seed): \"comparable\" when \
         the interval contains 1, \"supports\" or \"contradicts\" when it lies wholly on one side; single \
         measurements (image sizes, density) are comparable within 10%.",
    );
    let summary = verdicts
        .iter()
        .map(|v| {
            let kinds: Vec<&str> = v.rests_on.iter().map(|k| k.label()).collect();
            vec![
                v.claim.number().to_string(),
                v.statement.clone(),
                format!("**{}**", v.verdict),
                if kinds.is_empty() { "–".to_owned() } else { kinds.join("; ") },
            ]
        })
        .collect();
    doc.table(&["#", "claim", "verdict", "rests on"], summary);
    for verdict in &verdicts {
        claim_section(&mut doc, verdict);
    }

    doc.heading(2, "Boot time");
    doc.paragraph(boxbench_core::boundary::CLOCK_DESCRIPTION);
    doc.plot(PlotKind::BootPhases);
    doc.plot(PlotKind::TimeToMarker);
    let mut rows = Vec::new();
    for s in &results.series {
        for phase in Phases::NAMES {
            rows.push(summary_row(&s.name(), s.kind_label(), phase, s.phases.get(phase), Unit::Milliseconds));
        }
    }
    doc.table(&["series", "kind", "phase", "n", "median", "95% CI of median", "p99 (n ≥ 100)", "min", "max"], rows);
    // Sub-phases only some backends time (VMM set-up steps, a runtime's create and start).
    let rows: Vec<Vec<String>> = results
        .series
        .iter()
        .flat_map(|s| {
            s.details
                .iter()
                .map(|(name, summary)| summary_row(&s.name(), s.kind_label(), name, Some(*summary), Unit::Milliseconds))
        })
        .collect();
    if !rows.is_empty() {
        doc.paragraph("Backend-specific sub-phases (each the duration of the named step, in milliseconds):");
        doc.table(
            &["series", "kind", "sub-phase", "n", "median", "95% CI of median", "p99 (n ≥ 100)", "min", "max"],
            rows,
        );
    }

    crate::vmms::section(&mut doc, results);
    crate::harness::section(&mut doc, results);
    crate::docker_split::section(&mut doc, results);

    doc.heading(2, "Memory per instance");
    doc.plot(PlotKind::MemoryPerInstance);
    let mut rows = Vec::new();
    for s in &results.series {
        for figure in MemorySummaries::NAMES {
            if let Some(summary) = s.memory.get(figure) {
                rows.push(summary_row(&s.name(), s.kind_label(), figure, Some(summary), Unit::Bytes));
            }
        }
    }
    doc.table(&["series", "kind", "figure", "n", "median", "95% CI of median", "p99 (n ≥ 100)", "min", "max"], rows);

    doc.heading(2, "Image sizes");
    doc.plot(PlotKind::ImageSizes);
    let rows = results
        .images
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.kind.label().to_owned(),
                format!("{} ({} bytes)", format_bytes(i.bytes as f64), i.bytes),
                i.compressed_bytes
                    .map_or_else(|| "–".to_owned(), |b| format!("{} ({b} bytes)", format_bytes(b as f64))),
                i.path.as_ref().map_or_else(|| "–".to_owned(), |p| format!("`{}`", p.display())),
                i.description.clone(),
            ]
        })
        .collect();
    doc.table(&["image", "kind", "size", "compressed", "path", "what it holds"], rows);
    if results.images.is_empty() {
        doc.paragraph("No image sizes were measured.");
    }

    doc.heading(2, "Density");
    doc.plot(PlotKind::Density);
    let rows = results
        .density
        .iter()
        .map(|d| {
            vec![
                VmKind::backend_name(d.vm_kind, &d.backend),
                d.vm_kind.map_or("container", |k| k.label()).to_owned(),
                d.workload.clone(),
                format!("{} of {}", d.launched, d.instances),
                optional(d.launch_rate_per_s, |r| format!("{r:.2}/s")),
                optional(d.launch_wall_s, |s| format!("{s:.2} s")),
                optional(d.mem_available_drop_bytes, |b| format_bytes(b as f64)),
                optional(d.mem_available_drop_per_instance_bytes, format_bytes),
                optional(d.cgroup_peak_per_instance, |s| stats_text(&s, Unit::Bytes)),
            ]
        })
        .collect();
    doc.table(
        &[
            "backend",
            "kind",
            "workload",
            "instances reaching the marker",
            "launch rate",
            "launch wall time",
            "MemAvailable drop",
            "drop per instance",
            "cgroup peak per instance",
        ],
        rows,
    );
    for d in &results.density {
        let mut items = Vec::new();
        if let Some(command) = &d.command {
            items.push(format!("command: `{command}`"));
        }
        items.extend(d.settings.iter().map(|(k, v)| format!("{k}: `{v}`")));
        items.extend(d.notes.iter().cloned());
        if !items.is_empty() {
            doc.paragraph(format!("**{} density step:**", VmKind::backend_name(d.vm_kind, &d.backend)));
            doc.list(items);
        }
    }
    if results.density.is_empty() {
        doc.paragraph("No density step ran.");
    }

    doc.heading(2, "Kernel seen by the workload (`uname`)");
    let rows = results
        .uname_evidence()
        .into_iter()
        .map(|u| {
            vec![
                VmKind::backend_name(u.vm_kind, &u.backend),
                u.vm_kind.map_or("container", |k| k.label()).to_owned(),
                u.seen.as_ref().map_or_else(|| "nothing before the marker".to_owned(), |s| format!("`{s}`")),
                format!("`{}`", u.host_kernel),
                match u.uses_host_kernel {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "no".to_owned(),
                    None => "–".to_owned(),
                },
            ]
        })
        .collect();
    doc.table(&["backend", "kind", "release printed", "host kernel", "host's kernel?"], rows);

    doc.heading(2, "Series: exact commands, settings and outcomes");
    for s in &results.series {
        doc.heading(3, s.name());
        let mut items = vec![format!("kind: {}", s.kind_label()), format!("launches: {}", s.records.len())];
        items.extend(s.outcomes.iter().map(|(outcome, n)| format!("{n} × {outcome}")));
        items.extend(s.settings.iter().map(|(k, v)| format!("{k}: `{v}`")));
        items.extend(s.notes.iter().map(|n| format!("note: {n}")));
        doc.list(items);
        if let Some(command) = &s.command {
            doc.code(command.clone());
        }
    }

    doc.heading(2, "Host");
    host_table(&mut doc, std::slice::from_ref(results), &["value".to_owned()]);

    doc.heading(2, "Run settings");
    doc.code(command_line(&results.settings.command_line));
    let settings = &results.settings;
    let mut items = vec![
        format!("measured launches per series: {}", settings.runs_per_series),
        format!("warm-up launches per series (discarded): {}", settings.warmup_runs),
        format!("interleaved across backends: {}", if settings.interleaved { "yes" } else { "no" }),
        format!(
            "density instances: {}",
            settings.density_instances.map_or_else(|| "not run".to_owned(), |k| k.to_string())
        ),
    ];
    items.extend(settings.extra.iter().map(|(k, v)| format!("{k}: `{v}`")));
    doc.list(items);

    doc.heading(2, "Caveats");
    let mut caveats: Vec<String> = verdicts.iter().flat_map(|v| v.caveats.iter().cloned()).collect();
    caveats.extend(results.notes.iter().cloned());
    // hyperfine's warnings, per series: outliers and a slow first launch, in launch order.
    for s in &results.series {
        for (figure, what) in [("workload_ms", "time to marker"), ("exit_ms", "launch to exit")] {
            caveats.extend(boxbench_core::stats::warnings(&s.samples(figure), &format!("{} {what}", s.name())));
        }
    }
    let mut seen = Vec::new();
    caveats.retain(|c| {
        let first = !seen.contains(c);
        seen.push(c.clone());
        first
    });
    if caveats.is_empty() {
        doc.paragraph("None: the host and the series gave no reason to doubt a figure.");
    }
    doc.list(caveats);
    doc
}

fn claim_section(doc: &mut Document, verdict: &ClaimVerdict) {
    doc.heading(3, format!("Claim {}: {}", verdict.claim.number(), verdict.statement));
    doc.paragraph(format!("**Verdict: {}.**", verdict.verdict));
    let mut facts = Vec::new();
    if !verdict.rests_on.is_empty() {
        let kinds: Vec<&str> = verdict.rests_on.iter().map(|k| k.label()).collect();
        facts.push(format!("Rests on: {}.", kinds.join("; ")));
    }
    if let Some(workload) = &verdict.workload {
        facts.push(format!("Workload compared: `{workload}`."));
    }
    doc.list(facts);
    doc.table(
        &["metric", "subject", "stands for", "figure", "against", "figure", "ratio", "finding"],
        evidence_rows(&verdict.evidence),
    );
    if !verdict.context.is_empty() {
        doc.paragraph("Also measured (context, not deciding the verdict):");
        doc.table(
            &["metric", "subject", "stands for", "figure", "against", "figure", "ratio", "finding"],
            evidence_rows(&verdict.context),
        );
    }
    if !verdict.caveats.is_empty() {
        doc.paragraph("Caveats:");
        doc.list(verdict.caveats.clone());
    }
}

fn evidence_rows(evidence: &[Evidence]) -> Vec<Vec<String>> {
    evidence
        .iter()
        .map(|e| {
            vec![
                e.metric.clone(),
                e.subject.clone(),
                e.group.clone(),
                e.subject_figure.to_string(),
                e.reference.clone(),
                e.reference_figure.to_string(),
                ratio_text(e),
                e.finding.to_string(),
            ]
        })
        .collect()
}

fn summary_row(series: &str, kind: &str, figure: &str, summary: Option<Summary>, unit: Unit) -> Vec<String> {
    let mut row = vec![series.to_owned(), kind.to_owned(), figure.to_owned()];
    match summary {
        Some(s) => row.extend([
            s.n.to_string(),
            unit.format(s.median),
            optional(s.median_ci, |[lo, hi]| format!("{}–{}", unit.format(lo), unit.format(hi))),
            optional(s.p99, |p| unit.format(p)),
            unit.format(s.min),
            unit.format(s.max),
        ]),
        None => row.extend(["0", "not observed", "–", "–", "–", "–"].map(str::to_owned)),
    }
    row
}

fn stats_text(s: &Summary, unit: Unit) -> String {
    format!(
        "median {} (95% CI {}), p99 {}, min {}, max {} (n={})",
        unit.format(s.median),
        optional(s.median_ci, |[lo, hi]| format!("{}–{}", unit.format(lo), unit.format(hi))),
        optional(s.p99, |p| unit.format(p)),
        unit.format(s.min),
        unit.format(s.max),
        s.n
    )
}

fn optional<T>(value: Option<T>, show: impl FnOnce(T) -> String) -> String {
    value.map_or_else(|| "–".to_owned(), show)
}

/// A command line as a shell would show it (arguments with spaces quoted).
fn command_line(argv: &[String]) -> String {
    if argv.is_empty() {
        return "(not recorded)".to_owned();
    }
    let quoted: Vec<String> = argv
        .iter()
        .map(|a| if a.is_empty() || a.contains(char::is_whitespace) { format!("'{a}'") } else { a.clone() })
        .collect();
    quoted.join(" ")
}

/// A row of the host table: its name and how to read it from a host's results.
type HostFact = (&'static str, fn(&Results) -> String);

/// The host facts, a column per host.
fn host_table(doc: &mut Document, hosts: &[Results], columns: &[String]) {
    let facts: [HostFact; 11] = [
        ("label", |r| if r.host.label.is_empty() { "–".to_owned() } else { r.host.label.clone() }),
        ("kernel", |r| r.host.facts.kernel.clone()),
        ("CPU", |r| r.host.facts.cpu_model.clone()),
        ("CPUs", |r| r.host.facts.cpus.to_string()),
        ("memory", |r| format_bytes(r.host.facts.memory_bytes as f64)),
        ("KVM", |r| r.host.facts.kvm.label().to_owned()),
        ("cgroups", |r| r.host.facts.cgroup_mode.map_or_else(|| "none".to_owned(), |m| m.to_string())),
        ("root", |r| if r.host.facts.root { "yes" } else { "no" }.to_owned()),
        ("nested (host is a VM)", |r| if r.host.nested { "yes" } else { "no" }.to_owned()),
        ("load before (1, 5, 15 min)", |r| r.host.load_before.to_string()),
        ("load after (1, 5, 15 min)", |r| r.host.load_after.to_string()),
    ];
    let rows = facts
        .iter()
        .map(|(name, get)| std::iter::once((*name).to_owned()).chain(hosts.iter().map(get)).collect())
        .collect();
    let header = std::iter::once("fact".to_owned()).chain(columns.iter().cloned()).collect();
    doc.table_owned(header, rows);
}

/// The comparison of several hosts: a column per host.
pub fn multi_host_document(hosts: &MultiHost, host_dirs: &[String]) -> Document {
    let columns = hosts.column_names();
    let header =
        |first: &str| -> Vec<String> { std::iter::once(first.to_owned()).chain(columns.iter().cloned()).collect() };
    let verdicts: Vec<Vec<ClaimVerdict>> = hosts.hosts.iter().map(judge).collect();
    let mut doc = Document::default();
    doc.heading(1, format!("boxbench comparison of {} hosts", hosts.hosts.len()));
    let links: Vec<String> = columns
        .iter()
        .zip(host_dirs)
        .zip(&hosts.hosts)
        .map(|((name, dir), r)| format!("**{name}**: {} — full report in `{dir}/report.html`", r.host.facts.label()))
        .collect();
    doc.list(links);
    crate::fleet::sections(&mut doc, hosts, &columns, &verdicts);

    doc.heading(2, "Claims");
    let claims = crate::claims::Claim::ALL;
    let rows = claims
        .iter()
        .enumerate()
        .map(|(i, claim)| {
            let mut row = vec![format!("{}. {}", claim.number(), claim.statement())];
            for host_verdicts in &verdicts {
                let v = &host_verdicts[i];
                let ratios: Vec<f64> = v.evidence.iter().filter_map(|e| e.ratio).collect();
                let range = match (ratios.iter().copied().reduce(f64::min), ratios.iter().copied().reduce(f64::max)) {
                    (Some(lo), Some(hi)) if lo == hi => format!(" (ratio {})", format_ratio(lo)),
                    (Some(lo), Some(hi)) => format!(" (ratios {}–{})", format_ratio(lo), format_ratio(hi)),
                    _ => String::new(),
                };
                row.push(format!("**{}**{range}", v.verdict));
            }
            row
        })
        .collect();
    doc.table_owned(header("claim"), rows);

    doc.heading(2, "Median time to the marker");
    doc.plot(PlotKind::HostsTimeToMarker);
    doc.table_owned(header("series"), series_rows(hosts, |s| s.phases.workload_ms.map(|x| (x, Unit::Milliseconds))));
    doc.heading(2, "Median launch to exit");
    doc.table_owned(header("series"), series_rows(hosts, |s| s.phases.exit_ms.map(|x| (x, Unit::Milliseconds))));
    doc.heading(2, "Median cgroup peak per instance");
    doc.plot(PlotKind::HostsMemory);
    doc.table_owned(header("series"), series_rows(hosts, |s| s.memory.peak_bytes.map(|x| (x, Unit::Bytes))));

    doc.heading(2, "Image sizes");
    let mut names: Vec<(String, String)> = Vec::new();
    for i in hosts.hosts.iter().flat_map(|h| &h.images) {
        let key = (i.name.clone(), i.kind.label().to_owned());
        if !names.contains(&key) {
            names.push(key);
        }
    }
    let rows = names
        .iter()
        .map(|(name, kind)| {
            std::iter::once(format!("{name} ({kind})"))
                .chain(hosts.hosts.iter().map(|h| {
                    h.images
                        .iter()
                        .find(|i| &i.name == name)
                        .map_or_else(|| "–".to_owned(), |i| format_bytes(i.bytes as f64))
                }))
                .collect()
        })
        .collect();
    doc.table_owned(header("image"), rows);

    doc.heading(2, "Density: host memory per instance and launch rate");
    let mut backends: Vec<String> = Vec::new();
    for d in hosts.hosts.iter().flat_map(|h| &h.density) {
        let name = VmKind::backend_name(d.vm_kind, &d.backend);
        if !backends.contains(&name) {
            backends.push(name);
        }
    }
    let rows = backends
        .iter()
        .map(|b| {
            std::iter::once(b.clone())
                .chain(hosts.hosts.iter().map(|h| {
                    h.density.iter().find(|d| &VmKind::backend_name(d.vm_kind, &d.backend) == b).map_or_else(
                        || "–".to_owned(),
                        |d| {
                            format!(
                                "{} per instance, {} ({} instances)",
                                optional(d.mem_available_drop_per_instance_bytes, format_bytes),
                                optional(d.launch_rate_per_s, |r| format!("{r:.2}/s")),
                                d.launched
                            )
                        },
                    )
                }))
                .collect()
        })
        .collect();
    doc.table_owned(header("backend"), rows);

    doc.heading(2, "Kernel seen by the `uname` workload");
    let mut uname_backends: Vec<String> = Vec::new();
    for u in hosts.hosts.iter().flat_map(Results::uname_evidence) {
        let name = VmKind::backend_name(u.vm_kind, &u.backend);
        if !uname_backends.contains(&name) {
            uname_backends.push(name);
        }
    }
    let rows = uname_backends
        .iter()
        .map(|b| {
            std::iter::once(b.clone())
                .chain(hosts.hosts.iter().map(|h| {
                    h.uname_evidence()
                        .into_iter()
                        .find(|u| &VmKind::backend_name(u.vm_kind, &u.backend) == b)
                        .and_then(|u| u.seen)
                        .map_or_else(|| "–".to_owned(), |seen| format!("`{seen}` (host `{}`)", h.host.facts.kernel))
                }))
                .collect()
        })
        .collect();
    doc.table_owned(header("backend"), rows);

    doc.heading(2, "Hosts");
    host_table(&mut doc, &hosts.hosts, &columns);

    doc.heading(2, "Caveats");
    for ((name, host_verdicts), r) in columns.iter().zip(&verdicts).zip(&hosts.hosts) {
        let mut caveats: Vec<String> = host_verdicts.iter().flat_map(|v| v.caveats.iter().cloned()).collect();
        caveats.extend(r.notes.iter().cloned());
        caveats.sort();
        caveats.dedup();
        if !caveats.is_empty() {
            doc.paragraph(format!("**{name}:**"));
            doc.list(caveats);
        }
    }
    doc
}

/// One row per series name found on any host, a "median (n)" cell per host.
fn series_rows(hosts: &MultiHost, get: fn(&crate::schema::Series) -> Option<(Summary, Unit)>) -> Vec<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    for s in hosts.hosts.iter().flat_map(|h| &h.series) {
        if !names.contains(&s.name()) {
            names.push(s.name());
        }
    }
    names
        .iter()
        .filter_map(|name| {
            let cells: Vec<Option<String>> = hosts
                .hosts
                .iter()
                .map(|h| {
                    let (s, unit) = get(h.series.iter().find(|s| &s.name() == name)?)?;
                    Some(format!("{} (n={})", unit.format(s.median), s.n))
                })
                .collect();
            cells.iter().any(Option::is_some).then(|| {
                std::iter::once(name.clone())
                    .chain(cells.into_iter().map(|c| c.unwrap_or_else(|| "–".to_owned())))
                    .collect()
            })
        })
        .collect()
}
