//! The claim logic on synthetic results: every verdict branch of every claim, and the caveats.

mod common;

use boxbench_core::host::KvmFlavour;
use boxbench_core::{Outcome, Phases};
use boxbench_report::Results;
use boxbench_report::claims::{APPLICATION_KERNEL, Claim, ClaimVerdict, Finding, Verdict, judge, larger_by_interval};
use boxbench_report::schema::{ContainerKind, ImageKind, Series, VmKind};
use common::*;

fn verdict_of(results: &Results, claim: Claim) -> ClaimVerdict {
    judge(results).into_iter().find(|v| v.claim == claim).unwrap()
}

fn with_series(series: Vec<Series>) -> Results {
    let mut r = quiet_results();
    r.series = series;
    r
}

#[test]
fn every_claim_is_judged_in_order() {
    let claims: Vec<Claim> = judge(&full_results()).iter().map(|v| v.claim).collect();
    assert_eq!(claims, Claim::ALL);
}

#[test]
fn start_time_holds_when_every_vm_is_slower() {
    let r = with_series(vec![
        series("container", None, &[5.0, 5.2, 4.9], 2),
        series("microvm", Some(VmKind::OwnGuestFloor), &[50.0, 52.0, 51.0], 100),
        series("qemu-tcg", Some(VmKind::LinuxTcg), &[5000.0, 5100.0, 4900.0], 300),
    ]);
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    assert_eq!(v.verdict, Verdict::Holds);
    assert_eq!(v.workload.as_deref(), Some("hello"));
    assert_eq!(v.rests_on, vec![VmKind::OwnGuestFloor, VmKind::LinuxTcg]);
    assert_eq!(v.evidence.len(), 2);
    let floor = v.evidence.iter().find(|e| e.vm_kind == Some(VmKind::OwnGuestFloor)).unwrap();
    assert_eq!(floor.metric, "time to marker");
    assert!((floor.ratio.unwrap() - 51.0 / 5.0).abs() < 1e-9, "ratio of medians: {:?}", floor.ratio);
    assert!(v.context.iter().all(|e| e.metric == "launch to exit"));
    assert_eq!(v.context.len(), 2);
}

#[test]
fn start_time_is_judged_per_container_kind_when_system_containers_were_measured() {
    // The own-guest floor starts faster than a booted system container but slower than crun.
    let r = with_series(vec![
        series("crun", None, &[10.0, 10.5, 9.8], 2),
        series("nspawn", None, &[1400.0, 1450.0, 1380.0], 24).with_container_kind(Some(ContainerKind::System)),
        series("microvm", Some(VmKind::OwnGuestFloor), &[50.0, 52.0, 51.0], 100),
        series("qemu-q35", Some(VmKind::FullOsTcg), &[49000.0, 50000.0, 48000.0], 360),
    ]);
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    let system = ContainerKind::System.label();
    let floor = VmKind::OwnGuestFloor.label();
    let full_os = VmKind::FullOsTcg.label();
    assert_eq!(
        v.verdict,
        Verdict::HoldsOnlyFor(vec![
            format!("{floor} against container"),
            format!("{full_os} against container"),
            format!("{full_os} against {system}"),
        ])
    );
    let nspawn = v.evidence.iter().find(|e| e.reference.starts_with("nspawn")).unwrap();
    assert_eq!(nspawn.reference_group, system);
    assert_eq!(v.rests_on, vec![VmKind::OwnGuestFloor, VmKind::FullOsTcg]);
}

#[test]
fn start_time_holds_only_for_linux_when_the_floor_beats_the_container() {
    let r = with_series(vec![
        series("container", None, &[5.0, 5.0, 5.0], 2),
        series("microvm", Some(VmKind::OwnGuestFloor), &[3.0, 3.1, 2.9], 100),
        series("qemu-tcg", Some(VmKind::LinuxTcg), &[5000.0], 300),
    ]);
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    assert_eq!(v.verdict, Verdict::HoldsOnlyFor(vec![VmKind::LinuxTcg.label().to_owned()]));
    let floor = v.evidence.iter().find(|e| e.vm_kind == Some(VmKind::OwnGuestFloor)).unwrap();
    assert_eq!(floor.finding, Finding::Contradicts);
}

#[test]
fn start_time_can_hold_against_some_containers_only() {
    let r = with_series(vec![
        series("container", None, &[5.0, 5.0, 5.0], 2),
        series("docker", None, &[400.0, 420.0, 410.0], 2),
        series("microvm", Some(VmKind::OwnGuestFloor), &[30.0, 31.0, 29.0], 100),
    ]);
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    let expected = format!("{}, against container × hello only", VmKind::OwnGuestFloor.label());
    assert_eq!(v.verdict, Verdict::HoldsOnlyFor(vec![expected]));
}

#[test]
fn the_finding_follows_the_ratio_interval_at_its_edges() {
    assert_eq!(larger_by_interval([1.0001, 3.0]), Finding::Supports);
    assert_eq!(larger_by_interval([1.0, 3.0]), Finding::Comparable);
    assert_eq!(larger_by_interval([0.5, 1.0]), Finding::Comparable);
    assert_eq!(larger_by_interval([0.5, 0.9999]), Finding::Contradicts);
    assert_eq!(larger_by_interval([0.9, 1.1]), Finding::Comparable);
}

#[test]
fn a_small_but_steady_difference_is_a_finding_and_its_interval_is_shown() {
    // 4% slower in every launch, with no overlap: the interval excludes 1, so no margin hides it.
    let r = with_series(vec![
        series("container", None, &[5.0, 5.0, 5.0, 5.0], 2),
        series("microvm", Some(VmKind::OwnGuestFloor), &[5.2, 5.3, 5.1, 5.2], 100),
    ]);
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    assert_eq!(v.evidence[0].finding, Finding::Supports);
    let [lo, hi] = v.evidence[0].ratio_ci.unwrap();
    assert!(lo > 1.0 && hi < 1.1, "[{lo}, {hi}]");
    assert!(boxbench_report::claims::ratio_text(&v.evidence[0]).contains("(95% CI "), "{:?}", v.evidence[0]);
}

#[test]
fn start_time_does_not_hold_when_medians_are_comparable() {
    let r = with_series(vec![
        series("container", None, &[5.0, 5.3, 4.8, 5.2, 4.9], 2),
        series("microvm", Some(VmKind::OwnGuestFloor), &[5.1, 4.9, 5.25, 5.0, 4.85], 100),
    ]);
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    assert_eq!(v.verdict, Verdict::DoesNotHold);
    assert_eq!(v.evidence[0].finding, Finding::Comparable);
}

#[test]
fn start_time_is_inconclusive_without_a_vm() {
    let r = with_series(vec![series("container", None, &[5.0], 2)]);
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    assert!(matches!(v.verdict, Verdict::Inconclusive(ref why) if why.contains("VM")), "{:?}", v.verdict);
    assert!(v.evidence.is_empty());
}

#[test]
fn start_time_falls_back_to_exit_when_no_marker_was_seen() {
    let strip_marker = |mut s: Series| {
        for r in &mut s.records {
            r.phases = Phases { workload_ms: None, ..r.phases.clone() };
        }
        Series::new(s.backend, s.workload, s.vm_kind, s.records)
    };
    let r = with_series(vec![
        strip_marker(series("container", None, &[5.0, 5.0], 2)),
        strip_marker(series("microvm", Some(VmKind::OwnGuestFloor), &[50.0, 50.0], 100)),
    ]);
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    assert_eq!(v.verdict, Verdict::Holds);
    assert_eq!(v.evidence[0].metric, "launch to exit");
}

#[test]
fn host_caveats_name_kvm_pvm_tcg_nesting_and_load() {
    let mut host = host(KvmFlavour::Pvm, 2, 3.5);
    host.nested = true;
    let mut r = results_on(host);
    r.series = vec![
        series("container", None, &[5.0, 5.0, 5.0, 5.0, 5.0], 2),
        series("microvm", Some(VmKind::OwnGuestFloor), &[50.0, 50.0, 50.0, 50.0, 50.0], 100),
        series("qemu-tcg", Some(VmKind::LinuxTcg), &[5000.0, 5000.0, 5000.0, 5000.0, 5000.0], 300),
    ];
    let v = verdict_of(&r, Claim::VmSlowerToStart);
    let all = v.caveats.join("\n");
    assert!(all.contains("kvm_pvm"), "{all}");
    assert!(all.contains("TCG"), "{all}");
    assert!(all.contains("nested"), "{all}");
    assert!(all.contains("load average 3.50 on 2 CPUs"), "{all}");
    assert!(!all.contains("only"), "five launches are enough: {all}");
}

#[test]
fn a_quiet_hardware_host_has_no_host_caveats() {
    let r = with_series(vec![
        series("container", None, &[5.0, 5.0, 5.0, 5.0, 5.0], 2),
        series("microvm", Some(VmKind::OwnGuestFloor), &[50.0, 50.0, 50.0, 50.0, 50.0], 100),
    ]);
    assert!(verdict_of(&r, Claim::VmSlowerToStart).caveats.is_empty());
}

#[test]
fn failed_and_few_launches_are_caveats() {
    let mut vm = series("microvm", Some(VmKind::OwnGuestFloor), &[50.0, 51.0], 100);
    vm.records[1].outcome = Outcome::DeadlineExceeded { seconds: 30.0 };
    let vm = Series::new(vm.backend, vm.workload, vm.vm_kind, vm.records);
    let r = with_series(vec![series("container", None, &[5.0, 5.0, 5.0, 5.0, 5.0], 2), vm]);
    let caveats = verdict_of(&r, Claim::VmSlowerToStart).caveats.join("\n");
    assert!(caveats.contains("microvm (own guest) × hello: 1 of 2 launches did not exit cleanly"), "{caveats}");
    assert!(caveats.contains("killed at its 30 s deadline"), "{caveats}");
    assert!(caveats.contains("microvm (own guest) × hello: only 2 launches"), "{caveats}");
}

#[test]
fn memory_holds_does_not_hold_and_holds_only_for() {
    let holds = with_series(vec![
        series("container", None, &[5.0], 2),
        series("microvm", Some(VmKind::OwnGuestFloor), &[50.0], 100),
    ]);
    let v = verdict_of(&holds, Claim::ContainerUsesLessMemory);
    assert_eq!(v.verdict, Verdict::Holds);
    assert_eq!(v.evidence[0].metric, "cgroup peak per instance");
    assert_eq!(v.evidence[0].ratio, Some(50.0));

    let lighter_vm = with_series(vec![
        series("container", None, &[5.0], 20),
        series("microvm", Some(VmKind::OwnGuestFloor), &[50.0], 4),
    ]);
    assert_eq!(verdict_of(&lighter_vm, Claim::ContainerUsesLessMemory).verdict, Verdict::DoesNotHold);

    let mixed = with_series(vec![
        series("container", None, &[5.0], 20),
        series("microvm", Some(VmKind::OwnGuestFloor), &[50.0], 4),
        series("qemu-tcg", Some(VmKind::LinuxTcg), &[5000.0], 400),
    ]);
    let v = verdict_of(&mixed, Claim::ContainerUsesLessMemory);
    assert_eq!(v.verdict, Verdict::HoldsOnlyFor(vec![VmKind::LinuxTcg.label().to_owned()]));
    assert!(v.caveats.iter().any(|c| c.contains("translation cache")), "{:?}", v.caveats);
}

#[test]
fn memory_context_includes_density_and_is_inconclusive_without_peaks() {
    let mut r = full_results();
    let v = verdict_of(&r, Claim::ContainerUsesLessMemory);
    assert!(v.context.iter().any(|e| e.metric == "host MemAvailable drop per instance" && e.ratio == Some(70.0)));
    for s in &mut r.series {
        for rec in &mut s.records {
            rec.memory.peak_bytes = None;
        }
        *s = Series::new(s.backend.clone(), s.workload.clone(), s.vm_kind, s.records.clone());
    }
    assert!(matches!(verdict_of(&r, Claim::ContainerUsesLessMemory).verdict, Verdict::Inconclusive(_)));
}

#[test]
fn image_sizes_every_branch() {
    let mut r = quiet_results();
    r.images = vec![
        image("rootfs", ImageKind::ContainerImage, 2 * MIB),
        image("kernel+initrd", ImageKind::MicroVmKernelInitrd, 1_500_000_000),
        image("disk", ImageKind::FullOsVmDisk, 2_000_000_000),
    ];
    assert_eq!(verdict_of(&r, Claim::ImageSizes).verdict, Verdict::Holds);

    r.images[1].bytes = 9 * MIB;
    let v = verdict_of(&r, Claim::ImageSizes);
    assert_eq!(v.verdict, Verdict::HoldsOnlyFor(vec![ImageKind::FullOsVmDisk.label().to_owned()]));
    assert_eq!(v.context.len(), 2, "compressed sizes are context");

    // Two disks of the same kind, one above 1 GB and one below: the verdict names the one.
    r.images.push(image("qcow2", ImageKind::FullOsVmDisk, 350 * MIB));
    let v = verdict_of(&r, Claim::ImageSizes);
    assert_eq!(v.verdict, Verdict::HoldsOnlyFor(vec!["disk (full-OS VM disk)".to_owned()]));
    r.images.pop();

    r.images[2].bytes = 400 * MIB;
    let v = verdict_of(&r, Claim::ImageSizes);
    assert_eq!(v.verdict, Verdict::DoesNotHold);
    assert!(v.caveats[0].contains("400 MiB"), "{:?}", v.caveats);

    r.images.retain(|i| i.kind != ImageKind::ContainerImage);
    let v = verdict_of(&r, Claim::ImageSizes);
    assert_eq!(v.verdict, Verdict::Inconclusive("no container image was measured".into()));
}

#[test]
fn kernel_sharing_every_branch() {
    let holds = with_series(vec![
        uname_series("container", None, HOST_KERNEL),
        uname_series("qemu-tcg", Some(VmKind::LinuxTcg), "6.1.0-tiny"),
    ]);
    let v = verdict_of(&holds, Claim::KernelSharing);
    assert_eq!(v.verdict, Verdict::Holds);
    assert_eq!(v.rests_on, vec![VmKind::LinuxTcg]);
    assert!(v.evidence.iter().all(|e| e.finding == Finding::Supports));

    let vm_on_host_kernel = with_series(vec![
        uname_series("container", None, HOST_KERNEL),
        uname_series("qemu-tcg", Some(VmKind::LinuxTcg), "6.1.0-tiny"),
        uname_series("odd-vm", Some(VmKind::LinuxHardware), HOST_KERNEL),
    ]);
    assert_eq!(
        verdict_of(&vm_on_host_kernel, Claim::KernelSharing).verdict,
        Verdict::HoldsOnlyFor(vec![VmKind::LinuxTcg.label().to_owned()])
    );

    let sandboxed_container = with_series(vec![
        uname_series("gvisor", None, "4.4.0"),
        uname_series("qemu-tcg", Some(VmKind::LinuxTcg), "6.1.0-tiny"),
    ]);
    assert_eq!(verdict_of(&sandboxed_container, Claim::KernelSharing).verdict, Verdict::DoesNotHold);

    let no_vm = with_series(vec![uname_series("container", None, HOST_KERNEL)]);
    assert!(
        matches!(verdict_of(&no_vm, Claim::KernelSharing).verdict, Verdict::Inconclusive(ref w) if w.contains("VM"))
    );
}

#[test]
fn full_results_verdicts_follow_the_data() {
    let verdicts = judge(&full_results());
    // The own VMM's floor (median 3.1 ms) is slower than boxbench's container (2.2 ms) but faster than
    // crun (6.2 ms): for the floor the claim holds against one container only.
    let start = &verdicts[0];
    match &start.verdict {
        Verdict::HoldsOnlyFor(which) => {
            assert!(
                which
                    .iter()
                    .any(|w| w.starts_with(VmKind::OwnGuestFloor.label()) && w.contains("container × hello only"))
            );
            assert!(which.contains(&VmKind::LinuxTcg.label().to_owned()));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        verdicts[2].verdict,
        Verdict::HoldsOnlyFor(vec!["debian minbase raw ext4 (full-OS VM disk)".to_owned()])
    );
    assert_eq!(verdicts[3].verdict, Verdict::Holds);
}

/// gVisor's runsc declared as an application kernel: its `uname` (gVisor's own release) is context with
/// a caveat, not a container contradicting claim 4; in claims 1 and 2 it is placed between the
/// containers and the VMs by context rows, and decides nothing.
#[test]
fn an_application_kernel_is_a_third_kind_shown_between_containers_and_vms() {
    let mut results = with_series(vec![
        uname_series("container", None, HOST_KERNEL),
        uname_series("runsc", None, "4.4.0"),
        uname_series("qemu-tcg", Some(VmKind::LinuxTcg), "6.1.0-tiny"),
        series("container", None, &[2.0, 2.1, 2.2], 1),
        series("runsc", None, &[150.0, 160.0, 170.0], 20),
        series("qemu-tcg", Some(VmKind::LinuxTcg), &[900.0, 950.0, 1000.0], 60),
    ]);
    results.application_kernels = vec!["runsc".to_owned()];

    let kernel = verdict_of(&results, Claim::KernelSharing);
    assert_eq!(kernel.verdict, Verdict::Holds);
    assert!(kernel.evidence.iter().all(|e| !e.subject.starts_with("runsc")));
    let row = kernel.context.iter().find(|e| e.subject == "runsc × uname").expect("runsc's row in context");
    assert_eq!(row.group, APPLICATION_KERNEL);
    assert_eq!(row.finding, Finding::Contradicts, "it does not use the host's kernel");
    assert!(kernel.caveats.iter().any(|c| c.contains("runsc × uname printed `4.4.0`")), "{:?}", kernel.caveats);

    for claim in [Claim::VmSlowerToStart, Claim::ContainerUsesLessMemory] {
        let v = verdict_of(&results, claim);
        assert_eq!(v.verdict, Verdict::Holds, "{claim:?}");
        assert!(v.evidence.iter().all(|e| !e.subject.starts_with("runsc") && !e.reference.starts_with("runsc")));
        let above_container =
            v.context.iter().find(|e| e.subject == "runsc × hello" && e.reference == "container × hello");
        let below_vm = v.context.iter().find(|e| e.subject.starts_with("qemu-tcg") && e.reference == "runsc × hello");
        assert_eq!(above_container.map(|e| e.finding), Some(Finding::Supports), "{claim:?}: {:?}", v.context);
        assert_eq!(below_vm.map(|e| e.finding), Some(Finding::Supports), "{claim:?}: {:?}", v.context);
    }

    // Undeclared, the same console is a container that contradicts the claim.
    results.application_kernels.clear();
    assert_eq!(verdict_of(&results, Claim::KernelSharing).verdict, Verdict::DoesNotHold);
}
