//! A damaged base blob in the cache heals: when the base's archive or registry can supply it
//! again, the next build drops the bad copy, imports the blob afresh and produces the same image.

mod support;

use std::path::Path;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use support::registry::Registry;
use support::*;

fn build_json(src: &Path, run_image: &str, cache: &Path, out: &Path, extra: &[&str]) -> Value {
    let stdout = kiln_ok(
        &[
            &[
                "build",
                "--json",
                src.to_str().unwrap(),
                "--run-image",
                run_image,
                "--output",
                out.to_str().unwrap(),
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            extra,
        ]
        .concat(),
    );
    serde_json::from_str(&stdout).expect("--json prints one JSON object")
}

/// `cache/blobs/sha256/<hex>` of `digest` (`sha256:<hex>`).
fn cached_blob(cache: &Path, digest: &str) -> std::path::PathBuf {
    cache
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Flips one bit in the middle of the file, keeping its size.
fn flip_a_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn sha256_of(path: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
    )
}

/// Builds `procfile-static` on `run_image`, damages the cached blobs `damage` picks from the
/// first report, and builds again (plainly, then with `--no-cache` after damaging them again):
/// both rebuilds give the first build's manifest digest and leave the blobs intact.
fn rebuilds_heal(run_image: &str, tmp: &Path, damage: impl Fn(&Value) -> Vec<String>) {
    let src = fixture("procfile-static");
    let cache = tmp.join("cache");
    let first = build_json(&src, run_image, &cache, &tmp.join("first.tar"), &[]);
    let digest = first["manifest_digest"].as_str().unwrap();
    let blobs = damage(&first);
    assert!(!blobs.is_empty());
    for (i, extra) in [&[][..], &["--no-cache"][..]].iter().enumerate() {
        for blob in &blobs {
            flip_a_bit(&cached_blob(&cache, blob));
            assert_ne!(&sha256_of(&cached_blob(&cache, blob)), blob);
        }
        let out = tmp.join(format!("again-{i}.tar"));
        let again = build_json(&src, run_image, &cache, &out, extra);
        assert_eq!(again["manifest_digest"], digest, "rebuild {extra:?}");
        for blob in &blobs {
            assert_eq!(&sha256_of(&cached_blob(&cache, blob)), blob, "{extra:?}");
        }
    }
}

fn base_layer(report: &Value) -> String {
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers[0]["name"], "base");
    layers[0]["digest"].as_str().unwrap().to_owned()
}

#[test]
fn corrupted_base_layer_from_an_oci_archive_is_imported_again() {
    if !require_tools(&["busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("busybox.tar");
    busybox_base_image(&base);
    let run_image = format!("oci-archive:{}", base.display());
    rebuilds_heal(&run_image, tmp.path(), |report| vec![base_layer(report)]);
}

#[test]
fn corrupted_base_layer_and_manifest_from_a_registry_are_pulled_again() {
    if !require_tools(&["docker-registry", "skopeo", "busybox"]) {
        return;
    }
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("busybox.tar");
    busybox_base_image(&base);
    registry.skopeo_push(&base, "base/busybox:1", None);
    let run_image = format!("docker://{}/base/busybox:1", registry.host());
    let inspect: Value =
        serde_json::from_str(&kiln_ok(&["inspect", &run_image, "--json"])).unwrap();
    let manifest = inspect["manifest_digest"].as_str().unwrap().to_owned();
    rebuilds_heal(&run_image, tmp.path(), |report| {
        vec![base_layer(report), manifest.clone()]
    });
}
