//! The `download` provider: official distribution layouts on a mirror, verified and cached.
//!
//! Cache layout under `<cache>/runtimes/<runtime>/`:
//! - `index-<mirror key>.json|.txt`: the mirror's index (`index.json` / `SHA256SUMS`); its mtime
//!   is when it was fetched (see the crate docs for the reuse rule);
//! - `<version>-<platform>/`: an extracted runtime, appearing only by rename once verified;
//! - `<version>-<platform>.json`: where it came from and its archive's sha256.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::{self, load_index, write_atomic};
use crate::{
    archive, http, newest_few, Error, Found, ProvidedRuntime, Runtime, Version, VersionReq,
};

/// A release the index offers for this platform.
struct Candidate {
    version: Version,
    /// Node's LTS codename (`Iron`), when the release is LTS.
    lts: Option<String>,
    /// Archive path relative to the mirror.
    file: String,
    /// The archive's top directory.
    top: String,
    /// Known from the index itself (python-build-standalone's `SHA256SUMS`).
    sha256: Option<String>,
}

/// Written next to a finished runtime directory.
#[derive(Serialize, Deserialize)]
struct Receipt {
    source: String,
    sha256: String,
}

pub fn provide(
    runtime: Runtime,
    req: &VersionReq,
    mirror: &str,
    max_age: Duration,
    cache_dir: &Path,
) -> Result<Found, Error> {
    let mirror = mirror.trim_end_matches('/');
    if matches!(runtime, Runtime::Bun | Runtime::Deno) {
        return Ok(Found::No(format!(
            "download: {runtime} publishes no checksummed release index Kiln reads; it comes \
             from the npm registry (provider npm-registry)"
        )));
    }
    let Some(platform) = platform(runtime) else {
        return Ok(Found::No(format!(
            "download {mirror}: no {runtime} builds are known for {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )));
    };
    let dir = cache_dir.join("runtimes").join(runtime.id());
    let (index_url, ext) = match runtime {
        Runtime::Python => (format!("{mirror}/SHA256SUMS"), "txt"),
        _ => (format!("{mirror}/index.json"), "json"),
    };
    let index = match load_index(&index_url, http::Ask::default(), ext, &dir, max_age) {
        Ok(bytes) => bytes,
        // Offline with no cached index: a runtime already in the cache still serves.
        Err(e) => {
            return Ok(installed(runtime, req, &dir, platform)
                .map_or_else(|| Found::No(format!("download {e}")), Found::yes));
        }
    };
    let mut candidates = match runtime {
        Runtime::Python => python_candidates(&index, platform, &index_url)?,
        _ => node_candidates(&index, platform, &index_url)?,
    };
    candidates.sort_by_key(|c| std::cmp::Reverse(c.version));
    let Some(chosen) = candidates
        .iter()
        .find(|c| req.matches_release(&c.version, c.lts.as_deref()))
    else {
        let versions: Vec<Version> = candidates.iter().map(|c| c.version).collect();
        return Ok(Found::No(format!(
            "download {mirror}: newest {}; none match {req}",
            newest_few(&versions)
        )));
    };
    let name = format!("{}-{platform}", chosen.version);
    let root = dir.join(&name);
    if !root.is_dir() {
        fetch(runtime, mirror, chosen, &dir, &name)?;
    }
    Ok(Found::yes(provided(runtime, chosen.version, &dir, &name)))
}

/// Node's `linux-x64`, or python-build-standalone's target triple, for this machine.
pub(crate) fn platform(runtime: Runtime) -> Option<&'static str> {
    if std::env::consts::OS != "linux" {
        return None;
    }
    match (runtime, std::env::consts::ARCH) {
        (Runtime::Node, "x86_64") => Some("linux-x64"),
        (Runtime::Node, "aarch64") => Some("linux-arm64"),
        (Runtime::Python, "x86_64") => Some("x86_64-unknown-linux-gnu"),
        (Runtime::Python, "aarch64") => Some("aarch64-unknown-linux-gnu"),
        // The npm registry's package names (`@oven/bun-linux-x64`, `@deno/linux-x64-glibc`).
        (Runtime::Bun | Runtime::Deno, "x86_64") => Some("linux-x64"),
        (Runtime::Bun, "aarch64") => Some("linux-aarch64"),
        (Runtime::Deno, "aarch64") => Some("linux-arm64"),
        _ => None,
    }
}

#[derive(Deserialize)]
struct NodeRelease {
    version: String,
    /// `false`, or the LTS codename.
    #[serde(default)]
    lts: serde_json::Value,
    #[serde(default)]
    files: Vec<String>,
}

fn node_candidates(index: &[u8], platform: &str, url: &str) -> Result<Vec<Candidate>, Error> {
    let releases: Vec<NodeRelease> = serde_json::from_slice(index).map_err(|e| Error::Index {
        url: url.to_owned(),
        why: format!("not a Node.js dist index: {e}"),
    })?;
    Ok(releases
        .into_iter()
        .filter(|r| r.files.iter().any(|f| f == platform))
        .filter_map(|r| {
            let version = Version::parse(&r.version)?;
            let top = format!("node-v{version}-{platform}");
            Some(Candidate {
                version,
                lts: r.lts.as_str().map(str::to_owned),
                file: format!("v{version}/{top}.tar.gz"),
                top,
                sha256: None,
            })
        })
        .collect())
}

/// `cpython-3.11.7+20240107-x86_64-unknown-linux-gnu-install_only.tar.gz` lines of a
/// python-build-standalone `SHA256SUMS`; of several builds of one version, the latest build.
fn python_candidates(index: &[u8], triple: &str, url: &str) -> Result<Vec<Candidate>, Error> {
    let text = std::str::from_utf8(index).map_err(|_| Error::Index {
        url: url.to_owned(),
        why: "not a text SHA256SUMS file".to_owned(),
    })?;
    let suffix = format!("-{triple}-install_only.tar.gz");
    let mut best: Vec<(String, Candidate)> = Vec::new();
    for line in text.lines() {
        let Some((sha, file)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let file = file.trim().trim_start_matches('*');
        let Some(rest) = file
            .strip_prefix("cpython-")
            .and_then(|r| r.strip_suffix(&suffix))
        else {
            continue;
        };
        let Some((version, build)) = rest.split_once('+') else {
            continue;
        };
        let Some(version) = Version::parse(version) else {
            continue; // pre-releases
        };
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Index {
                url: url.to_owned(),
                why: format!("malformed line {line:?}"),
            });
        }
        let candidate = Candidate {
            version,
            lts: None,
            file: file.to_owned(),
            top: "python".to_owned(),
            sha256: Some(sha.to_ascii_lowercase()),
        };
        match best.iter_mut().find(|(_, c)| c.version == version) {
            Some((b, c)) if build > b.as_str() => {
                *b = build.to_owned();
                *c = candidate;
            }
            Some(_) => {}
            None => best.push((build.to_owned(), candidate)),
        }
    }
    Ok(best.into_iter().map(|(_, c)| c).collect())
}

/// Downloads, verifies and extracts `chosen` to `dir/name`, atomically.
fn fetch(
    runtime: Runtime,
    mirror: &str,
    chosen: &Candidate,
    dir: &Path,
    name: &str,
) -> Result<(), Error> {
    let url = format!("{mirror}/{}", chosen.file);
    let expected = match &chosen.sha256 {
        Some(sha) => sha.clone(),
        None => node_checksum(mirror, chosen)?,
    };
    let mut archive_file = cache::temp_file(dir)?;
    let actual = http::download(
        &url,
        http::Ask::default(),
        false,
        archive_file.as_file_mut(),
    )?
    .sha256;
    if actual != expected {
        return Err(Error::Checksum {
            url,
            expected,
            actual,
        });
    }
    let staging = cache::temp_dir(dir)?;
    archive::extract_tar_gz(archive_file.path(), &chosen.top, staging.path(), &url)?;
    let bin = staging.path().join(bin_of(runtime));
    if !bin.is_dir() {
        return Err(Error::Archive {
            url,
            entry: format!("{}/{}", chosen.top, bin_of(runtime).display()),
            why: "the archive has no bin directory: not a runtime distribution".to_owned(),
        });
    }
    let receipt = Receipt {
        source: url,
        sha256: actual,
    };
    let receipt_json = serde_json::to_vec_pretty(&receipt)
        .map_err(|e| Error::io("encoding a receipt", e.into()))?;
    write_atomic(dir, &dir.join(format!("{name}.json")), &receipt_json)?;
    cache::place(staging, &dir.join(name))
}

/// The sha256 of `chosen`'s archive from the release's `SHASUMS256.txt`.
fn node_checksum(mirror: &str, chosen: &Candidate) -> Result<String, Error> {
    let url = format!("{mirror}/v{}/SHASUMS256.txt", chosen.version);
    let sums = http::get_bytes(&url, http::Ask::default())?;
    let archive_name = chosen.file.rsplit('/').next().unwrap_or(&chosen.file);
    String::from_utf8_lossy(&sums)
        .lines()
        .find_map(|line| {
            let (sha, file) = line.split_once(char::is_whitespace)?;
            (file.trim().trim_start_matches('*') == archive_name).then(|| sha.to_ascii_lowercase())
        })
        .ok_or_else(|| Error::Index {
            url,
            why: format!("no checksum listed for {archive_name}"),
        })
}

fn bin_of(runtime: Runtime) -> &'static Path {
    match runtime {
        Runtime::Node | Runtime::Python | Runtime::Bun | Runtime::Deno => Path::new("bin"),
    }
}

/// The newest runtime already in the cache that satisfies `req` (used when the mirror and its
/// cached index are both unavailable).
fn installed(
    runtime: Runtime,
    req: &VersionReq,
    dir: &Path,
    platform: &str,
) -> Option<ProvidedRuntime> {
    let read = fs::read_dir(dir).ok()?;
    let suffix = format!("-{platform}");
    let best = read
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let version = Version::parse(name.strip_suffix(&suffix)?)?;
            (e.path().is_dir() && req.matches(&version)).then_some((version, name))
        })
        .max();
    best.map(|(version, name)| provided(runtime, version, dir, &name))
}

fn provided(runtime: Runtime, version: Version, dir: &Path, name: &str) -> ProvidedRuntime {
    let root: PathBuf = dir.join(name);
    let receipt: Option<Receipt> = fs::read(dir.join(format!("{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let prune = match runtime {
        Runtime::Python => crate::host::python_prune(&version, None),
        _ => crate::host::node_prune(),
    };
    ProvidedRuntime {
        runtime,
        version,
        provider: "download",
        include: vec![PathBuf::from(".")],
        prune,
        bin: bin_of(runtime).to_path_buf(),
        sha256: receipt.as_ref().map(|r| r.sha256.clone()),
        integrity: None,
        bundled: Vec::new(),
        source: receipt.map_or_else(|| root.display().to_string(), |r| r.source),
        root,
    }
}
