//! The `download` provider for Gleam: one static (musl) `gleam` binary per release, published as
//! `v<version>/gleam-v<version>-<triple>.tar.gz` with a `.sha256` file beside it (GitHub
//! releases, or a mirror laid out the same). GitHub has no checksummed index across releases, so
//! the versions offered are [`GLEAM_RELEASES`], a pin in data like python-build-standalone's
//! (bump it to offer newer Gleams). The tarball is **verified by its sha256 before it is
//! extracted** into `<cache>/runtimes/gleam/<version>-<triple>/bin/gleam`.
//!
//! Gleam compiles to Erlang: Erlang/OTP itself comes from the build root's Debian packages
//! (the gleam buildpack's `[[packages]]`), and the app runs on the run image's Erlang, so the
//! launch layer needs nothing of this runtime (`prune` drops the compiler).

use std::path::{Path, PathBuf};

use crate::cache::{self, write_atomic};
use crate::{
    archive, http, newest_few, Error, Found, ProvidedRuntime, Runtime, Version, VersionReq,
};

/// The Gleam releases offered, newest first.
pub const GLEAM_RELEASES: &[&str] = &["1.12.0", "1.11.1", "1.10.0", "1.9.1", "1.8.1", "1.7.0"];

#[derive(serde::Serialize, serde::Deserialize)]
struct Receipt {
    source: String,
    sha256: String,
}

pub fn provide(req: &VersionReq, mirror: &str, cache_dir: &Path) -> Result<Found, Error> {
    let mirror = mirror.trim_end_matches('/');
    let Some(triple) = triple() else {
        return Ok(Found::No(format!(
            "download {mirror}: no Gleam builds are known for {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )));
    };
    let mut versions: Vec<Version> = GLEAM_RELEASES
        .iter()
        .filter_map(|v| Version::parse(v))
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(*v));
    let Some(version) = versions.iter().copied().find(|v| req.matches(v)) else {
        return Ok(Found::No(format!(
            "download {mirror}: the pinned Gleam releases are {}; none match {req}",
            newest_few(&versions)
        )));
    };
    let dir = cache_dir.join("runtimes").join(Runtime::Gleam.id());
    let name = format!("{version}-{triple}");
    if !dir.join(&name).is_dir() {
        let url = format!("{mirror}/v{version}/gleam-v{version}-{triple}.tar.gz");
        if let Err(e) = fetch(&url, &dir, &name) {
            return match e {
                Error::Http { .. } => Ok(Found::No(format!("download {e}"))),
                e => Err(e),
            };
        }
    }
    Ok(Found::yes(provided(version, &dir, &name)))
}

fn triple() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("x86_64-unknown-linux-musl"),
        ("linux", "aarch64") => Some("aarch64-unknown-linux-musl"),
        _ => None,
    }
}

fn fetch(url: &str, dir: &Path, name: &str) -> Result<(), Error> {
    let sums_url = format!("{url}.sha256");
    let sums = http::get_bytes(&sums_url, http::Ask::default())?;
    // `<hex>  <file name>` or just `<hex>`.
    let expected = String::from_utf8_lossy(&sums)
        .split_whitespace()
        .next()
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| Error::Index {
            url: sums_url.clone(),
            why: "not a sha256 checksum file".to_owned(),
        })?;
    let mut archive_file = cache::temp_file(dir)?;
    let actual =
        http::download(url, http::Ask::default(), false, archive_file.as_file_mut())?.sha256;
    if actual != expected {
        return Err(Error::Checksum {
            url: url.to_owned(),
            algorithm: "sha256",
            expected,
            actual,
        });
    }
    let staging = cache::temp_dir(dir)?;
    let bin = staging.path().join("bin");
    std::fs::create_dir(&bin).map_err(|e| Error::io(format!("creating {}", bin.display()), e))?;
    // The tarball holds the bare `gleam` binary, no top directory.
    archive::extract_tar_gz(archive_file.path(), "", &bin, url)?;
    if !bin.join("gleam").is_file() {
        return Err(Error::Archive {
            url: url.to_owned(),
            entry: "gleam".to_owned(),
            why: "the archive has no gleam binary".to_owned(),
        });
    }
    let receipt = Receipt {
        source: url.to_owned(),
        sha256: actual,
    };
    let receipt_json = serde_json::to_vec_pretty(&receipt)
        .map_err(|e| Error::io("encoding a receipt", e.into()))?;
    write_atomic(dir, &dir.join(format!("{name}.json")), &receipt_json)?;
    cache::place(staging, &dir.join(name))
}

fn provided(version: Version, dir: &Path, name: &str) -> ProvidedRuntime {
    let root: PathBuf = dir.join(name);
    let receipt: Option<Receipt> = std::fs::read(dir.join(format!("{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    ProvidedRuntime {
        runtime: Runtime::Gleam,
        version,
        provider: "download",
        include: vec![PathBuf::from(".")],
        // The compiler is a build tool: the shipment runs on Erlang alone.
        prune: vec!["bin/gleam".to_owned()],
        bin: PathBuf::from("bin"),
        sha256: receipt.as_ref().map(|r| r.sha256.clone()),
        integrity: None,
        bundled: Vec::new(),
        source: receipt.map_or_else(|| root.display().to_string(), |r| r.source),
        root,
    }
}
