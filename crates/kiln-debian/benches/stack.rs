//! Stack assembly numbers (not a test): cold (an empty cache per stack: download indexes and
//! packages, verify, unpack) and warm (everything cached) resolve + assemble of the static and glibc stacks of debian-13 and
//! debian-12, their compressed sizes as Kiln writes them (gzip, the default), and peak RSS.
//! Compare with distroless `static-debian12` ≈ 2 MB and `base-debian12` ≈ 8 MB compressed.
//!
//! Uses the mirror of this host's apt sources. `cargo bench -p kiln-debian --bench stack`

use std::path::Path;
use std::time::Instant;

use kiln_debian::fetch::{self, Cache, Source};
use kiln_debian::mirror::{self, Given};
use kiln_debian::release::Keyring;
use kiln_debian::stack::{self, Distro, Flavour, Request};
use kiln_oci::layer::{write_layer, LayerOptions};
use kiln_oci::store::BlobStore;

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let mirror = mirror::find(&Given::default(), Path::new("/")).expect("a mirror");
    let source = Source {
        mirror,
        keyring: Keyring::embedded().expect("keys"),
        arch: fetch::host_arch().expect("known architecture").to_owned(),
        max_index_age: fetch::DEFAULT_MAX_INDEX_AGE,
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = BlobStore::open(dir.path().join("out")).expect("store");
    println!("| stack | run | resolve + assemble | layers (compressed) | total |");
    println!("| --- | --- | --- | --- | --- |");
    for distro in [Distro::Debian13, Distro::Debian12] {
        for flavour in [Flavour::Static, Flavour::Glibc] {
            let request = Request {
                distro,
                flavour,
                packages: Vec::new(),
            };
            // Cold: an empty cache of its own (indexes and packages downloaded); warm: again.
            let cache = Cache::open(dir.path().join(format!(
                "{}-{}",
                distro.name(),
                flavour.name()
            )))
            .expect("cache");
            for run in ["cold", "warm"] {
                let start = Instant::now();
                let lock = stack::resolve_fresh(&source, &cache, &request, &mut Vec::new())
                    .expect("resolve");
                let layers = stack::assemble(&source, &cache, &lock).expect("assemble");
                let took = start.elapsed();
                let sizes: Vec<u64> = layers
                    .iter()
                    .map(|l| {
                        write_layer(&out, &l.entries, &LayerOptions::default())
                            .expect("layer")
                            .descriptor
                            .size
                    })
                    .collect();
                let shown: Vec<String> = layers
                    .iter()
                    .zip(&sizes)
                    .map(|(l, s)| format!("{} {:.2} MB", l.name, *s as f64 / 1e6))
                    .collect();
                println!(
                    "| {}-{} | {run} | {:.2} s | {} | {:.2} MB |",
                    distro.name(),
                    flavour.name(),
                    took.as_secs_f64(),
                    shown.join(", "),
                    sizes.iter().sum::<u64>() as f64 / 1e6
                );
            }
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?");
    println!("\npeak RSS: {}", peak.trim_start_matches("VmHWM:").trim());
}
