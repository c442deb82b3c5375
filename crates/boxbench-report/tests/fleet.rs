//! The fleet report from synthetic results: runs of one host merged by host id into one column with
//! their launches pooled, hosts ordered and grouped by what decides their figures, the claim summary
//! per group, and missing hosts named in the report.

mod common;

use std::fs;

use boxbench_core::cgroup::CgroupMode;
use boxbench_core::host::KvmFlavour;
use boxbench_report::fleet::{MissingHost, groups, merge_runs};
use boxbench_report::schema::{MultiHost, VmKind};
use boxbench_report::{Results, write_comparison};
use common::*;

/// A run on the host `id` at `time`, with a container and a micro-VM series of the given launches.
fn run(id: &str, kvm: KvmFlavour, time: &str, container_ms: &[f64], vm_ms: &[f64]) -> Results {
    let mut r = results_on(host(kvm, 2, 0.2));
    r.host.label = format!("host-{id}");
    r.host.facts.host_id = format!("m{id}/Test CPU/{HOST_KERNEL}");
    r.generated_at = time.to_owned();
    r.series =
        vec![series("container", None, container_ms, 2), series("microvm", Some(VmKind::OwnGuestFloor), vm_ms, 130)];
    r.notes = vec![format!("run of {time}")];
    r
}

#[test]
fn runs_of_one_host_pool_their_launches_in_time_order() {
    let later = run("a", KvmFlavour::Vmx, "2026-12-07T10:00:00Z", &[4.0, 6.0], &[30.0]);
    let earlier = run("a", KvmFlavour::Vmx, "2026-12-07T09:00:00Z", &[2.0, 3.0, 5.0], &[10.0, 20.0]);
    let other = run("b", KvmFlavour::Vmx, "2026-12-07T09:30:00Z", &[1.0], &[1.0]);
    let merged = merge_runs(vec![later, other, earlier]);
    assert_eq!(merged.len(), 2, "two hosts");
    let a = merged.iter().find(|r| r.host.label == "host-a").unwrap();
    let container = a.series.iter().find(|s| s.backend == "container").unwrap();
    assert_eq!(container.records.len(), 5);
    let stats = container.phases.workload_ms.unwrap();
    assert_eq!((stats.n, stats.median, stats.min, stats.max), (5, 4.0, 2.0, 6.0));
    let vm = a.series.iter().find(|s| s.backend == "microvm").unwrap();
    assert_eq!(vm.phases.workload_ms.unwrap().n, 3);
    assert_eq!(vm.settings.get("memory").map(String::as_str), Some("128 MiB"));
    // The latest run's facts and time; both runs' notes, and one saying what was merged.
    assert_eq!(a.generated_at, "2026-12-07T10:00:00Z");
    assert!(a.notes.contains(&"run of 2026-12-07T09:00:00Z".to_owned()));
    assert!(a.notes.contains(&"run of 2026-12-07T10:00:00Z".to_owned()));
    assert!(
        a.notes
            .iter()
            .any(|n| n.starts_with("2 runs of this host") && n.contains("2026-12-07T09:00:00Z, 2026-12-07T10:00:00Z")),
        "{:?}",
        a.notes
    );
    let b = merged.iter().find(|r| r.host.label == "host-b").unwrap();
    assert_eq!(b.series[0].records.len(), 1);
}

#[test]
fn a_series_measured_with_other_settings_is_replaced_not_pooled() {
    let earlier = run("a", KvmFlavour::Vmx, "2026-12-07T09:00:00Z", &[2.0, 3.0], &[10.0]);
    let mut later = run("a", KvmFlavour::Vmx, "2026-12-07T10:00:00Z", &[8.0], &[30.0]);
    later.series[0].settings.insert("memory".into(), "256 MiB".into());
    let merged = merge_runs(vec![earlier, later]);
    let container = merged[0].series.iter().find(|s| s.backend == "container").unwrap();
    assert_eq!(container.records.len(), 1);
    assert!(merged[0].notes.iter().any(|n| n.contains("other settings")), "{:?}", merged[0].notes);
}

#[test]
fn results_without_a_host_id_are_never_merged() {
    let mut one = run("a", KvmFlavour::Vmx, "2026-12-07T09:00:00Z", &[2.0], &[10.0]);
    let mut two = one.clone();
    one.host.facts.host_id.clear();
    two.host.facts.host_id.clear();
    assert_eq!(merge_runs(vec![one, two]).len(), 2);
}

#[test]
fn hosts_are_ordered_and_grouped_by_what_decides_the_figures() {
    let mut pvm = run("p", KvmFlavour::Pvm, "t1", &[2.0], &[3.0]);
    pvm.host.facts.cgroup_mode = Some(CgroupMode::Hybrid);
    let vmx1 = run("v1", KvmFlavour::Vmx, "t2", &[2.0], &[30.0]);
    let mut vmx2 = run("v2", KvmFlavour::Vmx, "t3", &[2.0], &[30.0]);
    vmx2.host.nested = true;
    let vmx3 = run("v3", KvmFlavour::Vmx, "t4", &[2.0], &[30.0]);
    let merged = merge_runs(vec![vmx1, pvm, vmx2, vmx3]);
    let labels: Vec<&str> = merged.iter().map(|r| r.host.label.as_str()).collect();
    // Alike hosts side by side, in the order given within a group.
    assert_eq!(labels, ["host-v1", "host-v3", "host-v2", "host-p"]);
    let groups = groups(&merged);
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0].1, [0, 1]);
    assert!(groups[0].0.kvm.contains("VMX") && !groups[0].0.nested);
    assert!(groups[1].0.nested);
    assert!(groups[2].0.kvm.contains("kvm_pvm"));
}

#[test]
fn the_fleet_report_has_groups_a_claim_summary_and_the_missing_hosts() {
    let vmx = run("v", KvmFlavour::Vmx, "t1", &[2.0, 2.5, 3.0], &[30.0, 31.0, 32.0]);
    // On this one the micro-VM reaches its marker first: claim 1 does not hold there.
    let pvm = run("p", KvmFlavour::Pvm, "t2", &[20.0, 21.0, 22.0], &[3.0, 3.5, 4.0]);
    let mut hosts = MultiHost::merge(vec![pvm, vmx]).unwrap();
    hosts.missing = vec![MissingHost::parse("db-3=unreachable: ssh: connect to host 127.0.0.3 port 22").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let files = write_comparison(&hosts, dir.path()).unwrap();
    let md = fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains("## Host groups"), "{md}");
    assert!(md.contains("| A | KVM on VMX | no |"), "{md}");
    assert!(md.contains("| B | kvm_pvm"), "{md}");
    assert!(md.contains("## Where each claim holds"), "{md}");
    let claim1 = md.lines().find(|l| l.starts_with("| 1. a VM starts slower")).unwrap();
    assert!(claim1.contains("holds on 1 of 2 (all of group A); does not hold on 1 of 2 (all of group B)"), "{claim1}");
    assert!(claim1.contains("host-v (A)") && claim1.contains("host-p (B)"), "{claim1}");
    assert!(md.contains("## Missing hosts"), "{md}");
    assert!(md.contains("**db-3**: unreachable: ssh: connect to host 127.0.0.3 port 22"), "{md}");
    let html = fs::read_to_string(&files.report_html).unwrap();
    assert!(html.contains("Missing hosts") && html.contains("db-3"));
    let saved: serde_json::Value = serde_json::from_str(&fs::read_to_string(&files.results_json).unwrap()).unwrap();
    assert_eq!(saved["missing"][0]["host"], "db-3");
}

#[test]
fn one_host_with_a_missing_one_is_still_a_fleet_report() {
    let mut hosts = MultiHost::merge(vec![run("v", KvmFlavour::Vmx, "t1", &[2.0], &[30.0])]).unwrap();
    hosts.missing = vec![MissingHost::parse("web-2=compare failed").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let files = write_comparison(&hosts, dir.path()).unwrap();
    let md = fs::read_to_string(&files.report_md).unwrap();
    assert!(md.contains("**web-2**: compare failed"), "{md}");
}
