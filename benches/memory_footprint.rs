//! Memory footprint of every backend this host can run: the peak of the per-instance cgroup (all
//! memory the instance's processes charged) and, where the backend measures it, the runtime's or VMM's
//! overhead, through a Criterion measurement whose values are bytes.

mod common;

use boxbench_core::Workload;
use criterion::{SamplingMode, criterion_group, criterion_main};

type Figure = fn(&boxbench_core::MemoryUsage) -> Option<u64>;

fn memory_footprint(c: &mut criterion::Criterion<common::Bytes>) {
    // PSS is sampled at the marker, which a `hello` instance may outlive by less than the sampling
    // takes: it is not a figure every launch has, so it is left to `boxbench run`.
    let figures: [(&str, Figure); 2] = [("peak_bytes", |m| m.peak_bytes), ("overhead_bytes", |m| m.overhead_bytes)];
    for bench in common::runnable_backends(Workload::Hello) {
        let mut group = c.benchmark_group(format!("memory_footprint/{}/hello", bench.name));
        group.sampling_mode(SamplingMode::Flat);
        for (name, figure) in figures.into_iter().filter(|(_, f)| f(&bench.probe.memory).is_some()) {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let record = common::launch(&bench);
                            figure(&record.memory).unwrap_or_else(|| panic!("{} has no {name}", bench.name))
                        })
                        .sum()
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::criterion(common::Bytes);
    targets = memory_footprint
}
criterion_main!(benches);
