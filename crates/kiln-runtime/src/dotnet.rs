//! The `download` provider for .NET: Microsoft's release metadata on a mirror.
//!
//! `releases-index.json` lists the channels (`8.0`, `9.0`) with their `releases.json`; each
//! release there lists its SDKs (`sdks[]`, else `sdk`) with per-RID files carrying a `url` and a
//! sha512 `hash`. The newest SDK satisfying the requirement is downloaded, **verified by sha512
//! before it is extracted**, and kept under `<cache>/runtimes/dotnet/<sdk>-<rid>/`. Build steps
//! run the whole SDK; the launch layer is the same tree minus the SDK's own parts (`sdk/`,
//! `packs/`, `templates/`, `sdk-manifests/`), which leaves exactly what the release's
//! `aspnetcore-runtime` tarball holds (`dotnet`, `host/`, `shared/Microsoft.NETCore.App`,
//! `shared/Microsoft.AspNetCore.App`, same versions), so one verified download serves both.
//!
//! Absolute URLs in the metadata that start with [`DOTNET_OFFICIAL_MIRROR`]'s site are rebased
//! onto the configured mirror, so a mirror that copies the tree as is works offline; relative
//! URLs are resolved against the mirror.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha512};

use crate::cache::{self, load_index, write_atomic};
use crate::{
    archive, http, newest_few, Error, Found, ProvidedRuntime, Runtime, Version, VersionReq,
    DOTNET_OFFICIAL_MIRROR,
};

#[derive(Deserialize)]
struct ReleasesIndex {
    #[serde(rename = "releases-index")]
    channels: Vec<Channel>,
}

#[derive(Deserialize)]
struct Channel {
    #[serde(rename = "channel-version")]
    version: String,
    #[serde(rename = "releases.json")]
    releases_json: String,
}

#[derive(Deserialize)]
struct ChannelReleases {
    releases: Vec<Release>,
}

#[derive(Deserialize)]
struct Release {
    #[serde(default)]
    sdk: Option<Sdk>,
    #[serde(default)]
    sdks: Vec<Sdk>,
}

#[derive(Deserialize, Clone)]
struct Sdk {
    version: String,
    #[serde(default)]
    files: Vec<File>,
}

#[derive(Deserialize, Clone)]
struct File {
    #[serde(default)]
    rid: String,
    name: String,
    url: String,
    hash: String,
}

/// Written next to a finished SDK directory.
#[derive(serde::Serialize, Deserialize)]
struct Receipt {
    source: String,
    sha512: String,
}

/// Parts of the SDK that only builds use: left out of the launch layer.
const SDK_ONLY: [&str; 5] = ["sdk", "packs", "templates", "sdk-manifests", "metadata"];

pub fn provide(
    req: &VersionReq,
    mirror: &str,
    max_age: Duration,
    cache_dir: &Path,
) -> Result<Found, Error> {
    let mirror = mirror.trim_end_matches('/');
    let Some(rid) = rid() else {
        return Ok(Found::No(format!(
            "download {mirror}: no .NET SDK builds are known for {}-{}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )));
    };
    let dir = cache_dir.join("runtimes").join(Runtime::Dotnet.id());
    let index_url = format!("{mirror}/releases-index.json");
    let index = match load_index(&index_url, http::Ask::default(), "json", &dir, max_age) {
        Ok(bytes) => bytes,
        Err(e) => return Ok(Found::No(format!("download {e}"))),
    };
    let index: ReleasesIndex = serde_json::from_slice(&index).map_err(|e| Error::Index {
        url: index_url.clone(),
        why: format!("not a .NET releases-index.json: {e}"),
    })?;
    let mut channels: Vec<(Version, Channel)> = index
        .channels
        .into_iter()
        .filter_map(|c| Some((Version::parse(&c.version)?, c)))
        .collect();
    channels.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    let mut seen = Vec::new();
    // Newest channel first: the first channel with a satisfying SDK has the newest one.
    for (_, channel) in &channels {
        let url = rebase(mirror, &channel.releases_json);
        let releases = load_index(&url, http::Ask::default(), "json", &dir, max_age)?;
        let releases: ChannelReleases =
            serde_json::from_slice(&releases).map_err(|e| Error::Index {
                url: url.clone(),
                why: format!("not a .NET releases.json: {e}"),
            })?;
        let mut sdks: Vec<(Version, Sdk)> = releases
            .releases
            .into_iter()
            .flat_map(|r| r.sdks.into_iter().chain(r.sdk))
            .filter_map(|s| Some((Version::parse(&s.version)?, s)))
            .collect();
        sdks.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
        sdks.dedup_by_key(|(v, _)| *v);
        seen.extend(sdks.iter().map(|(v, _)| *v));
        let Some((version, sdk)) = sdks.into_iter().find(|(v, _)| req.matches(v)) else {
            continue;
        };
        let suffix = format!("-{rid}.tar.gz");
        let file = sdk
            .files
            .iter()
            .find(|f| f.rid == rid && f.name.ends_with(&suffix))
            .ok_or_else(|| Error::Index {
                url: url.clone(),
                why: format!("SDK {version} lists no {rid} .tar.gz file"),
            })?;
        let name = format!("{version}-{rid}");
        if !dir.join(&name).is_dir() {
            fetch(&rebase(mirror, &file.url), &file.hash, &dir, &name)?;
        }
        return Ok(Found::yes(provided(version, &dir, &name)));
    }
    seen.sort_by_key(|v| std::cmp::Reverse(*v));
    Ok(Found::No(format!(
        "download {mirror}: newest SDKs {}; none match {req}",
        newest_few(&seen)
    )))
}

/// The .NET runtime identifier of this machine.
fn rid() -> Option<&'static str> {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => Some("linux-x64"),
        ("linux", "aarch64") => Some("linux-arm64"),
        _ => None,
    }
}

/// `url` as fetched from `mirror`: the official site's URLs moved onto the mirror, relative ones
/// joined to it, others (a mirror's own absolute URLs) as they are.
fn rebase(mirror: &str, url: &str) -> String {
    // The metadata's file URLs live beside `release-metadata/` (`…/dotnet/Sdk/8.0.404/…`).
    let official_site = DOTNET_OFFICIAL_MIRROR.trim_end_matches("/release-metadata");
    let mirror_site = mirror.trim_end_matches("/release-metadata");
    if let Some(rest) = url.strip_prefix(DOTNET_OFFICIAL_MIRROR) {
        format!("{mirror}{rest}")
    } else if let Some(rest) = url.strip_prefix(official_site) {
        format!("{mirror_site}{rest}")
    } else if url.contains("://") {
        url.to_owned()
    } else {
        format!("{mirror}/{}", url.trim_start_matches('/'))
    }
}

/// Downloads `url`, checks it against the metadata's sha512 `expected`, extracts it to
/// `dir/name` atomically.
fn fetch(url: &str, expected: &str, dir: &Path, name: &str) -> Result<(), Error> {
    let expected = expected.trim().to_ascii_lowercase();
    let mut archive_file = cache::temp_file(dir)?;
    let digests = http::download(url, http::Ask::default(), true, archive_file.as_file_mut())?;
    let actual = digests.sha512.map(hex::encode).unwrap_or_default();
    if expected.len() != Sha512::output_size() * 2 || actual != expected {
        return Err(Error::Checksum {
            url: url.to_owned(),
            algorithm: "sha512",
            expected,
            actual,
        });
    }
    let staging = cache::temp_dir(dir)?;
    // The SDK tarball has no top directory: its entries start with `./`.
    archive::extract_tar_gz(archive_file.path(), "", staging.path(), url)?;
    if !staging.path().join("dotnet").is_file() {
        return Err(Error::Archive {
            url: url.to_owned(),
            entry: "dotnet".to_owned(),
            why: "the archive has no dotnet host executable: not a .NET SDK".to_owned(),
        });
    }
    let receipt = Receipt {
        source: url.to_owned(),
        sha512: actual,
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
        runtime: Runtime::Dotnet,
        version,
        provider: "download",
        include: vec![PathBuf::from(".")],
        prune: SDK_ONLY.iter().map(|p| (*p).to_owned()).collect(),
        // `dotnet` sits at the root of the tree, beside `shared/`.
        bin: PathBuf::from("."),
        sha256: None,
        // The metadata's sha512, as an SRI string like the npm registry's.
        integrity: receipt.as_ref().and_then(|r| {
            let bytes = hex::decode(&r.sha512).ok()?;
            Some(format!(
                "sha512-{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ))
        }),
        bundled: Vec::new(),
        source: receipt.map_or_else(|| root.display().to_string(), |r| r.source),
        root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_urls_move_onto_the_mirror() {
        let m = "http://127.0.0.1:1/dotnet/release-metadata";
        assert_eq!(
            rebase(m, &format!("{DOTNET_OFFICIAL_MIRROR}/8.0/releases.json")),
            format!("{m}/8.0/releases.json")
        );
        assert_eq!(
            rebase(
                m,
                "https://builds.dotnet.microsoft.com/dotnet/Sdk/8.0.404/dotnet-sdk-8.0.404-linux-x64.tar.gz"
            ),
            "http://127.0.0.1:1/dotnet/Sdk/8.0.404/dotnet-sdk-8.0.404-linux-x64.tar.gz"
        );
        assert_eq!(
            rebase(m, "8.0/releases.json"),
            format!("{m}/8.0/releases.json")
        );
        assert_eq!(
            rebase(m, "https://other.example/x"),
            "https://other.example/x"
        );
    }
}
