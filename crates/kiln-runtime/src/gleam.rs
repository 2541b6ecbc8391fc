//! Gleam's release downloads, for the `download` provider: `v<version>/gleam-v<version>-
//! <triple>.tar.gz` (one `gleam` binary, statically linked against musl) with a `.sha256` file
//! beside it. GitHub releases have no checksummed index across versions, so the versions
//! offered are pinned here (as [`crate::PYTHON_OFFICIAL_MIRROR`] pins one release); a mirror
//! serves the same paths. Bump the pin to offer newer versions.

use crate::download::Candidate;
use crate::{http, Error, Version};

/// The stable releases offered, newest first.
pub(crate) const GLEAM_VERSIONS: [&str; 8] = [
    "1.11.1", "1.10.0", "1.9.1", "1.8.1", "1.7.0", "1.6.3", "1.5.1", "1.4.1",
];

/// The pinned releases for `triple` (`x86_64-unknown-linux-musl`).
pub(crate) fn candidates(triple: &str) -> Vec<Candidate> {
    GLEAM_VERSIONS
        .iter()
        .filter_map(|v| Version::parse(v))
        .map(|version| Candidate {
            version,
            lts: None,
            file: format!("v{version}/gleam-v{version}-{triple}.tar.gz"),
            top: String::new(),
            checksum: None,
        })
        .collect()
}

/// The sha256 in the `.sha256` file beside `archive_url` (`sha256sum` output, or the bare hex).
pub(crate) fn listed_sha256(archive_url: &str) -> Result<String, Error> {
    let url = format!("{archive_url}.sha256");
    let text = http::get_bytes(&url, http::Ask::default())?;
    let text = String::from_utf8_lossy(&text);
    let sha = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Index {
            url,
            why: format!("not a sha256 file: {:?}", text.trim()),
        });
    }
    Ok(sha)
}
