//! .NET's release metadata, read for the `download` provider: `release-metadata/
//! releases-index.json` lists the channels (`8.0`, `9.0`), each channel's `releases.json` its
//! releases, and every release its SDKs with one file per runtime identifier (`rid`), each with
//! an absolute `url` and a sha512 `hash`.
//!
//! The SDK is what build steps run. It carries the release's own .NET and ASP.NET Core runtimes
//! (`dotnet`, `host/`, `shared/`), the same files as that release's `aspnetcore-runtime`
//! tarball, so the launch layer is the SDK minus its build-only parts ([`LAUNCH_PRUNE`]) and no
//! second archive is downloaded.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::cache::load_index;
use crate::download::{Candidate, Checksum};
use crate::{http, Error, Version, VersionReq, DOTNET_OFFICIAL_MIRROR};

/// The SDK's parts that only builds use: the SDK itself, targeting packs, templates and
/// workload manifests.
pub(crate) const LAUNCH_PRUNE: [&str; 5] =
    ["sdk", "packs", "templates", "sdk-manifests", "metadata"];

#[derive(Deserialize)]
struct Index {
    #[serde(rename = "releases-index")]
    channels: Vec<Channel>,
}

#[derive(Deserialize)]
struct Channel {
    #[serde(rename = "channel-version")]
    version: String,
}

#[derive(Deserialize)]
struct ChannelReleases {
    releases: Vec<Release>,
}

#[derive(Deserialize)]
struct Release {
    /// Every SDK feature band of the release (`8.0.404`, `8.0.307`, …).
    #[serde(default)]
    sdks: Vec<Sdk>,
    /// The release's newest SDK (older documents list only this one).
    sdk: Option<Sdk>,
}

#[derive(Deserialize)]
struct Sdk {
    version: String,
    #[serde(default)]
    files: Vec<File>,
}

#[derive(Deserialize)]
struct File {
    name: String,
    #[serde(default)]
    rid: String,
    url: String,
    hash: String,
}

/// The SDKs offered for `rid` (`linux-x64`), read channel by channel, newest channel first,
/// stopping at the first channel with an SDK that satisfies `req` (a channel's document is
/// large; an app on net8.0 needs only one or two of them).
pub(crate) fn candidates(
    mirror: &str,
    rid: &str,
    req: &VersionReq,
    max_age: Duration,
    dir: &Path,
) -> Result<Vec<Candidate>, Error> {
    let index_url = format!("{mirror}/release-metadata/releases-index.json");
    let index = load_index(&index_url, http::Ask::default(), "json", dir, max_age)?;
    let index: Index = serde_json::from_slice(&index).map_err(|e| Error::Index {
        url: index_url.clone(),
        why: format!("not a .NET releases-index.json: {e}"),
    })?;
    let mut channels: Vec<(Version, String)> = index
        .channels
        .into_iter()
        .filter_map(|c| Some((Version::parse(&c.version)?, c.version)))
        .collect();
    channels.sort_by_key(|c| std::cmp::Reverse(c.0));
    let mut found = Vec::new();
    for (_, channel) in channels {
        let url = format!("{mirror}/release-metadata/{channel}/releases.json");
        let doc = load_index(&url, http::Ask::default(), "json", dir, max_age)?;
        let in_channel = sdk_candidates(&doc, rid, mirror, &url)?;
        let satisfied = in_channel.iter().any(|c| req.matches(&c.version));
        found.extend(in_channel);
        if satisfied {
            break;
        }
    }
    Ok(found)
}

/// The `dotnet-sdk-<rid>.tar.gz` files of one channel's `releases.json`.
fn sdk_candidates(doc: &[u8], rid: &str, mirror: &str, url: &str) -> Result<Vec<Candidate>, Error> {
    let bad = |why: String| Error::Index {
        url: url.to_owned(),
        why,
    };
    let channel: ChannelReleases = serde_json::from_slice(doc)
        .map_err(|e| bad(format!("not a .NET channel releases.json: {e}")))?;
    let mut out: Vec<Candidate> = Vec::new();
    let sdks = channel.releases.into_iter().flat_map(|r| {
        if r.sdks.is_empty() {
            r.sdk.into_iter().collect()
        } else {
            r.sdks
        }
    });
    for sdk in sdks {
        // Previews and release candidates (`9.0.100-rc.2…`) are not offered.
        let Some(version) = Version::parse(&sdk.version) else {
            continue;
        };
        let Some(file) = sdk
            .files
            .iter()
            .find(|f| f.rid == rid && f.name.ends_with(".tar.gz"))
        else {
            continue;
        };
        let hash = file.hash.to_ascii_lowercase();
        if hash.len() != 128 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "SDK {version} {}: {:?} is not a sha512",
                file.name, file.hash
            )));
        }
        if out.iter().any(|c| c.version == version) {
            continue; // listed by two releases
        }
        out.push(Candidate {
            version,
            lts: None,
            file: archive_url(mirror, &file.url),
            top: String::new(),
            checksum: Some(Checksum::Sha512(hash)),
        });
    }
    Ok(out)
}

/// A file URL of the metadata, fetched from `mirror`: one under the official site is re-based
/// onto the mirror (which holds the same paths), a relative one is resolved against it, any other
/// is used as listed (its sha512 comes from the metadata either way).
fn archive_url(mirror: &str, url: &str) -> String {
    match url.strip_prefix(DOTNET_OFFICIAL_MIRROR) {
        Some(rest) if rest.starts_with('/') => format!("{mirror}{rest}"),
        _ if !url.contains("://") => format!("{mirror}/{}", url.trim_start_matches('/')),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_rebased_onto_the_mirror() {
        let mirror = "http://mirror.test/dotnet";
        assert_eq!(
            archive_url(
                mirror,
                &format!("{DOTNET_OFFICIAL_MIRROR}/Sdk/8.0.404/x.tar.gz")
            ),
            "http://mirror.test/dotnet/Sdk/8.0.404/x.tar.gz"
        );
        assert_eq!(
            archive_url(mirror, "Sdk/8.0.404/x.tar.gz"),
            "http://mirror.test/dotnet/Sdk/8.0.404/x.tar.gz"
        );
        assert_eq!(
            archive_url(mirror, "https://elsewhere.test/x.tar.gz"),
            "https://elsewhere.test/x.tar.gz"
        );
    }

    #[test]
    fn sdks_of_every_band_for_the_rid_previews_skipped() {
        let hash = "ab".repeat(64);
        let file = |rid: &str, v: &str| {
            format!(
                r#"{{"name":"dotnet-sdk-{rid}.tar.gz","rid":"{rid}","url":"Sdk/{v}/dotnet-sdk-{v}-{rid}.tar.gz","hash":"{hash}"}}"#
            )
        };
        let doc = format!(
            r#"{{"releases":[
              {{"sdk":{{"version":"8.0.404","files":[]}},"sdks":[
                {{"version":"8.0.404","files":[{},{}]}},
                {{"version":"8.0.307","files":[{}]}}]}},
              {{"sdk":{{"version":"8.0.100-rc.2.23502.2","files":[{}]}}}},
              {{"sdk":{{"version":"8.0.100","files":[{}]}}}}]}}"#,
            file("linux-arm64", "8.0.404"),
            file("linux-x64", "8.0.404"),
            file("linux-x64", "8.0.307"),
            file("linux-x64", "8.0.100-rc.2.23502.2"),
            file("linux-musl-x64", "8.0.100"),
        );
        let got = sdk_candidates(doc.as_bytes(), "linux-x64", "http://m", "u").unwrap();
        let versions: Vec<String> = got.iter().map(|c| c.version.to_string()).collect();
        assert_eq!(versions, ["8.0.404", "8.0.307"]);
        assert_eq!(
            got[0].file,
            "http://m/Sdk/8.0.404/dotnet-sdk-8.0.404-linux-x64.tar.gz"
        );
        let bad = doc.replace(&hash, "1234");
        let Err(err) = sdk_candidates(bad.as_bytes(), "linux-x64", "http://m", "u") else {
            panic!("a 4-digit hash was accepted as a sha512");
        };
        assert!(err.to_string().contains("is not a sha512"), "{err}");
    }
}
