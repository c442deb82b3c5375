//! Boot time of every backend this host can run, per phase: each phase's milliseconds since launch
//! start, as the launch record observed it, over whole launches (`iter_custom`: the heavy setup — the
//! launcher, the images — happens once, outside the measured loop).

mod common;

use boxbench_core::{Phases, Workload};
use criterion::{SamplingMode, criterion_group, criterion_main};

fn boot_time(c: &mut criterion::Criterion) {
    for workload in [Workload::Hello] {
        for bench in common::runnable_backends(workload.clone()) {
            let mut group = c.benchmark_group(format!("boot_time/{}/{}", bench.name, workload.name()));
            group.sampling_mode(SamplingMode::Flat);
            // A phase the backend cannot observe (absent in its probe) is not benched: never invented.
            for phase in Phases::NAMES.into_iter().filter(|p| bench.probe.phases.get(p).is_some()) {
                group.bench_function(phase, |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| {
                                // A launch that misses a phase its probe showed is a failed sample:
                                // a 0 ms stand-in would drag the phase's figure down.
                                let record = common::launch(&bench);
                                record.phases.elapsed(phase).unwrap_or_else(|| {
                                    panic!(
                                        "{} launch did not observe {phase} (its probe did): {}",
                                        bench.name,
                                        record.console_tail(5)
                                    )
                                })
                            })
                            .sum()
                    })
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = common::criterion(criterion::measurement::WallTime);
    targets = boot_time
}
criterion_main!(benches);
