//! Verdicts at a glance from judged synthetic results: each claim's matrix (VM kinds down, containers
//! across) and its sentence, and the Markdown report's tables of them.

mod common;

use boxbench_report::claims::{Claim, Finding, judge};
use boxbench_report::glance::{Glance, glances, stdout_line};
use boxbench_report::schema::VmKind;
use common::*;

fn glance_of(results: &boxbench_report::Results, claim: Claim) -> Glance {
    glances(&judge(results)).into_iter().find(|g| g.claim == claim).unwrap()
}

#[test]
fn start_time_matrix_has_every_vm_down_and_every_container_across_with_the_judged_findings() {
    let results = full_results();
    let verdict = judge(&results).into_iter().find(|v| v.claim == Claim::VmSlowerToStart).unwrap();
    let matrix = glance_of(&results, Claim::VmSlowerToStart).matrix.unwrap();
    assert_eq!(matrix.metric, "time to marker");
    assert_eq!(matrix.columns, ["container", "crun"]);
    let rows: Vec<(&str, &str)> = matrix.rows.iter().map(|r| (r.subject.as_str(), r.kind.as_str())).collect();
    assert_eq!(
        rows,
        [
            ("microvm (own guest)", VmKind::OwnGuestFloor.label()),
            ("qemu-own-guest (own guest)", VmKind::OwnGuestOtherVmm.label()),
            ("qemu-tcg (Linux, TCG)", VmKind::LinuxTcg.label()),
        ]
    );
    // Each cell is the judged pair: its ratio, interval and finding.
    for (row, subject) in matrix.rows.iter().zip(["microvm", "qemu-own-guest", "qemu-tcg"]) {
        for (cell, column) in row.cells.iter().zip(&matrix.columns) {
            let cell = cell.as_ref().unwrap();
            let pair = verdict
                .evidence
                .iter()
                .find(|e| e.subject.starts_with(subject) && e.reference.starts_with(column.as_str()))
                .unwrap();
            assert_eq!((cell.ratio, cell.ratio_ci, cell.finding), (pair.ratio, pair.ratio_ci, pair.finding));
        }
    }
    // Medians 3.1 / 6.2 ms: the own VM floor beat crun; QEMU's TCG Linux (4100 ms) did not.
    let microvm_vs_crun = matrix.rows[0].cells[1].as_ref().unwrap();
    assert_eq!((microvm_vs_crun.main.as_str(), microvm_vs_crun.finding), ("0.50×", Finding::Contradicts));
    assert_eq!(matrix.rows[2].cells[1].as_ref().unwrap().finding, Finding::Supports);
}

#[test]
fn image_and_kernel_sentences_state_the_measured_sizes_and_releases() {
    let results = full_results();
    assert_eq!(
        glance_of(&results, Claim::ImageSizes).sentence,
        "On this host the container images measured 2.00 MiB; VM kernel + initramfs, no disk (a micro-VM's whole \
         image): 9.00 MiB; full-OS VM disk: 350 MiB to 1.17 GiB; 1 of 3 pairs have the VM image at 1 GB or more and \
         the container image below."
    );
    let kernel = glance_of(&results, Claim::KernelSharing);
    assert_eq!(
        kernel.sentence,
        format!(
            "On this host the containers printed `{HOST_KERNEL}`; a Linux guest under QEMU TCG emulation printed \
             `6.1.0-tiny` (the host runs `{HOST_KERNEL}`)."
        )
    );
    let matrix = kernel.matrix.unwrap();
    assert_eq!(matrix.columns, ["container"]);
    let cell = matrix.rows[0].cells[0].as_ref().unwrap();
    assert_eq!((cell.main.as_str(), cell.finding), ("`6.1.0-tiny`", Finding::Supports));
}

#[test]
fn a_container_on_another_kernel_colours_the_kernel_matrix_against_the_claim() {
    let mut results = full_results();
    results.series.push(uname_series("crun", None, "5.10.0-other"));
    let matrix = glance_of(&results, Claim::KernelSharing).matrix.unwrap();
    let findings: Vec<Finding> = matrix.rows[0].cells.iter().map(|c| c.as_ref().unwrap().finding).collect();
    assert_eq!(matrix.columns, ["container", "crun"]);
    assert_eq!(findings, [Finding::Supports, Finding::Contradicts]);
}

#[test]
fn the_start_time_sentence_spans_each_vm_kinds_intervals_against_the_containers() {
    let results = full_results();
    let glance = glance_of(&results, Claim::VmSlowerToStart);
    let verdict = judge(&results).into_iter().find(|v| v.claim == Claim::VmSlowerToStart).unwrap();
    let tcg: Vec<[f64; 2]> =
        verdict.evidence.iter().filter(|e| e.vm_kind == Some(VmKind::LinuxTcg)).map(|e| e.ratio_ci.unwrap()).collect();
    let lo = tcg.iter().map(|b| b[0]).fold(f64::INFINITY, f64::min);
    let hi = tcg.iter().map(|b| b[1]).fold(0.0, f64::max);
    let expected = format!(
        "a Linux guest under QEMU TCG emulation took {lo:.0}–{hi:.0}× as long (longer than all 2 at 95% confidence)"
    );
    assert!(
        glance.sentence.starts_with("On this host, to reach its marker, against container and crun: "),
        "{}",
        glance.sentence
    );
    assert!(glance.sentence.contains(&expected), "{}\nwanted: {expected}", glance.sentence);
    let line = stdout_line(&glance);
    assert!(
        line.starts_with("Claim 1 (VMs are slower to start than containers): holds in part. On this host"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);
}

#[test]
fn markdown_report_opens_with_each_claims_matrix_with_findings_written_out() {
    let dir = tempfile::tempdir().unwrap();
    let files = boxbench_report::write_report(&full_results(), dir.path()).unwrap();
    let md = std::fs::read_to_string(files.report_md).unwrap();
    let first_claims_heading = md.find("## Claims").unwrap();
    let glance = &md[..first_claims_heading];
    for n in 1..=4 {
        assert!(glance.contains(&format!("**Claim {n}: ")), "claim {n} at a glance:\n{glance}");
    }
    assert!(glance.contains("| time to marker | container | crun |"), "{glance}");
    assert!(glance.contains("| qemu-tcg (Linux, TCG) | **"), "{glance}");
    assert!(glance.contains(") supports |") && glance.contains(") contradicts |"), "{glance}");
    // The detailed tables stay below.
    assert!(md[first_claims_heading..].contains("**Verdict: "), "{md}");
}
