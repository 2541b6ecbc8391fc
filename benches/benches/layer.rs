//! Criterion micro-benches of the layer export path, on a 1/10-scale synthetic tree (~8 MB):
//! tar writing + diff_id (uncompressed), sha256, and gzip/zstd at the levels worth comparing.
//! Run: `cargo bench -p kiln-bench`.

use std::io::Write;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sha2::{Digest as _, Sha256};

use kiln_oci::compress::ParallelGzWriter;
use kiln_oci::layer::{normalize, tree_entries, write_layer, Compression, LayerOptions};
use kiln_oci::store::BlobStore;

fn layer_export(c: &mut Criterion) {
    let tree = tempfile::tempdir().unwrap();
    let (_, bytes) = kiln_bench::generate_tree(&tree.path().join("t"), 0.1).unwrap();
    let entries = normalize(tree_entries(&tree.path().join("t"), "/workspace").unwrap()).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(store_dir.path()).unwrap();

    let mut group = c.benchmark_group("write_layer");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    for compression in [
        Compression::None,
        Compression::Gzip { level: 1 },
        Compression::Gzip { level: 4 },
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
    ] {
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        group.bench_with_input(
            BenchmarkId::from_parameter(compression.cache_tag()),
            &opts,
            |b, opts| b.iter(|| write_layer(&store, &entries, opts).unwrap()),
        );
    }
    group.finish();
}

fn primitives(c: &mut Criterion) {
    let tree = tempfile::tempdir().unwrap();
    kiln_bench::generate_tree(&tree.path().join("t"), 0.05).unwrap();
    // The tree's files concatenated: representative bytes for the primitives.
    let mut data = Vec::new();
    for entry in walkdir_files(&tree.path().join("t")) {
        data.extend(std::fs::read(entry).unwrap());
    }
    let mut group = c.benchmark_group("primitives");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("sha256", |b| b.iter(|| Sha256::digest(&data)));
    for level in [1, 4, 6] {
        group.bench_function(BenchmarkId::new("parallel_gzip", level), |b| {
            b.iter(|| {
                let mut w = ParallelGzWriter::new(Vec::new(), level).unwrap();
                w.write_all(&data).unwrap();
                w.finish().unwrap()
            })
        });
        group.bench_function(BenchmarkId::new("flate2_gzip_1_thread", level), |b| {
            b.iter(|| {
                let mut w =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
                w.write_all(&data).unwrap();
                w.finish().unwrap()
            })
        });
    }
    group.finish();
}

fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

criterion_group!(benches, layer_export, primitives);
criterion_main!(benches);
