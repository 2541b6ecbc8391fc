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
pub(crate) struct Candidate {
    pub version: Version,
    /// Node's LTS codename (`Iron`), when the release is LTS.
    pub lts: Option<String>,
    /// Archive path relative to the mirror, or an absolute URL (.NET's metadata lists them).
    pub file: String,
    /// The archive's top directory; empty when its entries sit at the root (.NET, Gleam).
    pub top: String,
    /// Known from the index itself (python-build-standalone's `SHA256SUMS`, .NET's sha512s);
    /// else read from the file the release publishes beside the archive.
    pub checksum: Option<Checksum>,
}

/// An archive's expected digest, lowercase hex.
pub(crate) enum Checksum {
    Sha256(String),
    Sha512(String),
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
    let index = |url: &str, ext| load_index(url, http::Ask::default(), ext, &dir, max_age);
    let listed = match runtime {
        Runtime::Python => {
            let url = format!("{mirror}/SHA256SUMS");
            index(&url, "txt").and_then(|i| python_candidates(&i, platform, &url))
        }
        Runtime::Dotnet => crate::dotnet::candidates(mirror, platform, req, max_age, &dir),
        Runtime::Gleam => Ok(crate::gleam::candidates(platform)),
        Runtime::Node | Runtime::Bun | Runtime::Deno => {
            let url = format!("{mirror}/index.json");
            index(&url, "json").and_then(|i| node_candidates(&i, platform, &url))
        }
    };
    let mut candidates = match listed {
        Ok(candidates) => candidates,
        // Offline with no cached index: a runtime already in the cache still serves.
        Err(e @ Error::Http { .. }) => {
            return Ok(installed(runtime, req, &dir, platform)
                .map_or_else(|| Found::No(format!("download {e}")), Found::yes));
        }
        Err(e) => return Err(e),
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

/// Node's and .NET's `linux-x64`, or python-build-standalone's and Gleam's target triple, for
/// this machine.
pub(crate) fn platform(runtime: Runtime) -> Option<&'static str> {
    if std::env::consts::OS != "linux" {
        return None;
    }
    match (runtime, std::env::consts::ARCH) {
        (Runtime::Node, "x86_64") => Some("linux-x64"),
        (Runtime::Node, "aarch64") => Some("linux-arm64"),
        (Runtime::Python, "x86_64") => Some("x86_64-unknown-linux-gnu"),
        (Runtime::Python, "aarch64") => Some("aarch64-unknown-linux-gnu"),
        (Runtime::Dotnet, "x86_64") => Some("linux-x64"),
        (Runtime::Dotnet, "aarch64") => Some("linux-arm64"),
        (Runtime::Gleam, "x86_64") => Some("x86_64-unknown-linux-musl"),
        (Runtime::Gleam, "aarch64") => Some("aarch64-unknown-linux-musl"),
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
                checksum: None,
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
            checksum: Some(Checksum::Sha256(sha.to_ascii_lowercase())),
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
    let url = if chosen.file.contains("://") {
        chosen.file.clone()
    } else {
        format!("{mirror}/{}", chosen.file)
    };
    let expected = match &chosen.checksum {
        Some(Checksum::Sha256(sha)) => Checksum::Sha256(sha.clone()),
        Some(Checksum::Sha512(sha)) => Checksum::Sha512(sha.clone()),
        None if runtime == Runtime::Gleam => Checksum::Sha256(crate::gleam::listed_sha256(&url)?),
        None => Checksum::Sha256(node_checksum(mirror, chosen)?),
    };
    let mut archive_file = cache::temp_file(dir)?;
    let with_sha512 = matches!(expected, Checksum::Sha512(_));
    let digests = http::download(
        &url,
        http::Ask::default(),
        with_sha512,
        archive_file.as_file_mut(),
    )?;
    let (algorithm, expected, actual) = match expected {
        Checksum::Sha256(sha) => ("sha256", sha, digests.sha256.clone()),
        Checksum::Sha512(sha) => (
            "sha512",
            sha,
            digests.sha512.map(hex::encode).unwrap_or_default(),
        ),
    };
    if actual != expected {
        return Err(Error::Checksum {
            url,
            algorithm,
            expected,
            actual,
        });
    }
    let staging = cache::temp_dir(dir)?;
    let unpack_to = staging.path().join(unpack_dir(runtime));
    fs::create_dir_all(&unpack_to)
        .map_err(|e| Error::io(format!("creating {}", unpack_to.display()), e))?;
    archive::extract_tar_gz(archive_file.path(), &chosen.top, &unpack_to, &url)?;
    let executable = executable(runtime);
    if !staging.path().join(executable).is_file() {
        return Err(Error::Archive {
            url,
            entry: Path::new(&chosen.top)
                .join(executable)
                .display()
                .to_string(),
            why: format!("the archive has no {executable}: not a {runtime} distribution"),
        });
    }
    let receipt = Receipt {
        source: url,
        sha256: digests.sha256,
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

/// The directory to put on `PATH`, relative to the runtime root (.NET's `dotnet` sits at the
/// root of its distribution).
fn bin_of(runtime: Runtime) -> &'static Path {
    match runtime {
        Runtime::Dotnet => Path::new("."),
        Runtime::Node | Runtime::Python | Runtime::Bun | Runtime::Deno | Runtime::Gleam => {
            Path::new("bin")
        }
    }
}

/// Where the archive is unpacked, relative to the runtime root: Gleam's holds only its binary.
fn unpack_dir(runtime: Runtime) -> &'static Path {
    match runtime {
        Runtime::Gleam => Path::new("bin"),
        _ => Path::new("."),
    }
}

/// The file that makes an unpacked archive this runtime's distribution.
fn executable(runtime: Runtime) -> &'static str {
    match runtime {
        Runtime::Node => "bin/node",
        Runtime::Bun => "bin/bun",
        Runtime::Deno => "bin/deno",
        Runtime::Python => "bin/python3",
        Runtime::Dotnet => "dotnet",
        Runtime::Gleam => "bin/gleam",
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
        Runtime::Dotnet => crate::dotnet::LAUNCH_PRUNE.map(str::to_owned).to_vec(),
        // The compiler is a build tool: the app's Erlang shipment runs on the image's Erlang.
        Runtime::Gleam => vec!["bin".to_owned()],
        Runtime::Node | Runtime::Bun | Runtime::Deno => crate::host::node_prune(),
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
