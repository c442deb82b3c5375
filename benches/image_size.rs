//! Image sizes through the same byte measurement as memory, so they sit in Criterion's report beside
//! the boot times and footprints: each artefact uncompressed and compressed (as a registry or a disk
//! would hold it). A size does not vary between samples; Criterion reports it with zero spread.

mod common;

use std::path::PathBuf;

use boxbench_images::ImageBuilder;
use criterion::{SamplingMode, criterion_group, criterion_main};

fn image_size(c: &mut criterion::Criterion<common::Bytes>) {
    let builder = ImageBuilder::default_dirs();
    let sizes = match boxbench::images::build_default(false).and_then(|_| builder.sizes()) {
        Ok(sizes) => sizes,
        Err(e) => {
            eprintln!("skipping image_size: {e}");
            return;
        }
    };
    let mut artefacts: Vec<(String, PathBuf, u64, u64)> =
        sizes.into_iter().map(|s| (s.name, s.path, s.uncompressed_bytes, s.compressed_bytes)).collect();
    for (name, path) in
        [("boxbench-guest.elf", boxbench_guest::elf_path()), ("boxbench-guest.bzImage", boxbench_guest::bzimage_path())]
    {
        match std::fs::metadata(path) {
            Ok(meta) => artefacts.push((name.to_owned(), path.to_owned(), meta.len(), meta.len())),
            Err(e) => eprintln!("skipping {name}: {}: {e}", path.display()),
        }
    }
    for (name, path, uncompressed, compressed) in artefacts {
        let mut group = c.benchmark_group(format!("image_size/{name}"));
        group.sampling_mode(SamplingMode::Flat);
        for (kind, bytes) in [("uncompressed", uncompressed), ("compressed", compressed)] {
            // Criterion sizes its loops by wall time during warm-up: each iteration checks that the
            // artefact is still there (a stat), so the loop takes real time and its byte total stays
            // far from overflowing.
            group.bench_function(kind, |b| {
                b.iter_custom(|iters| {
                    (0..iters).map(|_| if std::fs::metadata(&path).is_ok() { bytes } else { 0 }).sum::<u64>()
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::criterion(common::Bytes).measurement_time(std::time::Duration::from_secs(1));
    targets = image_size
}
criterion_main!(benches);
