//! `export-layer DIR STORE [COMPRESSION]`: packs DIR as one layer into the blob store at STORE
//! exactly as `kiln build` does (walk → tar → diff_id → compress → digest → blob) and prints
//! `digest size diff_id seconds`. Used by `benches/compare`.

use std::time::Instant;

use kiln_oci::layer::{normalize, tree_entries, write_layer, Compression, LayerOptions};
use kiln_oci::store::BlobStore;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(store)) = (args.first(), args.get(1)) else {
        eprintln!("usage: export-layer DIR STORE [gzip[:LEVEL]|zstd[:LEVEL]|none]");
        return std::process::ExitCode::from(2);
    };
    let compression = match args.get(2).map(|s| Compression::parse(s)).transpose() {
        Ok(c) => c.unwrap_or(Compression::DEFAULT),
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let result = BlobStore::open(store).and_then(|store| {
        let entries = normalize(tree_entries(std::path::Path::new(dir), "/workspace")?)?;
        let opts = LayerOptions {
            compression,
            ..LayerOptions::default()
        };
        write_layer(&store, &entries, &opts)
    });
    match result {
        Ok(record) => {
            println!(
                "{} {} {} {:.3}",
                record.descriptor.digest,
                record.descriptor.size,
                record.diff_id,
                started.elapsed().as_secs_f64()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
