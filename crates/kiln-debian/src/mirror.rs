//! Which Debian mirror to use: the one the caller gives (`KILN_DEBIAN_MIRROR`, `kiln.toml`
//! `[stack] mirror`), else the host's apt sources (deb822 `/etc/apt/sources.list.d/*.sources`,
//! then one-line `/etc/apt/sources.list` and `sources.list.d/*.list`), else an error telling
//! the user how to set one. No mirror host is built in.
//!
//! The security archive is separate on Debian (`…/debian-security`, suite `SUITE-security`);
//! it is used when the caller gives one or, without a caller-given mirror, when the host's
//! sources name one (an entry whose suite ends in `-security`).
//!
//! Stable point-release fixes (tzdata, ca-certificates, …) come from `SUITE-updates` on the
//! main archive. It is read when the caller says so (Kiln does by default for a mirror it is
//! given) or, from the host's sources, when an archive entry lists a suite ending in `-updates`,
//! as apt would.

use std::fs;
use std::path::{Path, PathBuf};

use crate::control;
use crate::error::{Error, Result};

/// Mirror roots (no trailing `/`): `dists/` and `pool/` live under them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub archive: String,
    pub security: Option<String>,
    /// Whether the archive's `SUITE-updates` suites are read too.
    pub updates: bool,
    /// Where they came from, for reports (`KILN_DEBIAN_MIRROR`, `/etc/apt/sources.list.d/debian.sources`).
    pub origin: String,
}

/// What the caller knows: a mirror from its own configuration, with where it came from.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub archive: Option<String>,
    pub security: Option<String>,
    /// Read `SUITE-updates` from `archive` (only with a given archive).
    pub updates: bool,
    pub origin: String,
}

/// The mirror to use. `apt_root` is `/` on a real host (a directory holding `etc/apt/` in tests).
pub fn find(given: &Given, apt_root: &Path) -> Result<Mirror> {
    if let Some(archive) = &given.archive {
        return Ok(Mirror {
            archive: clean_uri(archive, &given.origin, 0)?,
            security: given
                .security
                .as_deref()
                .map(|s| clean_uri(s, &given.origin, 0))
                .transpose()?,
            updates: given.updates,
            origin: given.origin.clone(),
        });
    }
    let entries = apt_sources(apt_root)?;
    let archive = entries.iter().find(|e| !e.security);
    let security = entries.iter().find(|e| e.security);
    match archive {
        Some(a) => Ok(Mirror {
            archive: a.uri.clone(),
            security: security.map(|s| s.uri.clone()),
            // apt reads `-updates` from the archive only where an entry of it lists one.
            updates: entries.iter().any(|e| e.updates && e.uri == a.uri),
            origin: a.file.display().to_string(),
        }),
        None => Err(Error::NoMirror {
            why: format!(
                "none given, and the apt sources under {} name no http(s) `deb` entry",
                apt_root.join("etc/apt").display()
            ),
        }),
    }
}

/// One `deb` source: its URI and whether its suites are security suites or list an updates
/// suite.
#[derive(Debug, Clone)]
struct SourceEntry {
    uri: String,
    security: bool,
    updates: bool,
    file: PathBuf,
}

/// All enabled http(s) `deb` entries, deb822 files first (sorted by name), then one-line files.
fn apt_sources(root: &Path) -> Result<Vec<SourceEntry>> {
    let dir = root.join("etc/apt/sources.list.d");
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(read) => read.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut entries = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "sources"))
    {
        entries.extend(deb822_sources(file)?);
    }
    let list = root.join("etc/apt/sources.list");
    for file in std::iter::once(&list).chain(
        files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "list")),
    ) {
        if file.is_file() {
            entries.extend(one_line_sources(file)?);
        }
    }
    Ok(entries)
}

fn read(file: &Path) -> Result<String> {
    fs::read_to_string(file).map_err(|e| Error::io(format!("reading {}", file.display()), e))
}

fn deb822_sources(file: &Path) -> Result<Vec<SourceEntry>> {
    let text = read(file)?;
    let what = file.display().to_string();
    let mut entries = Vec::new();
    for stanza in control::parse(&text, &what)? {
        let words = |name: &str| -> Vec<&str> {
            stanza
                .get(name)
                .unwrap_or_default()
                .split_whitespace()
                .collect()
        };
        if !words("Types").contains(&"deb")
            || stanza
                .get("Enabled")
                .is_some_and(|v| v.eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let suites = words("Suites");
        let security = suites.iter().any(|s| s.ends_with("-security"));
        let updates = suites.iter().any(|s| s.ends_with("-updates"));
        for uri in words("URIs") {
            if let Some(uri) = http_uri(uri) {
                entries.push(SourceEntry {
                    uri: clean_uri(uri, &what, stanza.line)?,
                    security,
                    updates,
                    file: file.to_owned(),
                });
            }
        }
    }
    Ok(entries)
}

/// `deb [options] URI SUITE COMPONENT…` lines.
fn one_line_sources(file: &Path) -> Result<Vec<SourceEntry>> {
    let text = read(file)?;
    let what = file.display().to_string();
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let rest = rest.trim_start();
        // `[arch=amd64 signed-by=…]` options come before the URI.
        let rest = match rest.strip_prefix('[') {
            Some(options) => {
                options
                    .split_once(']')
                    .map(|(_, r)| r)
                    .ok_or_else(|| Error::Sources {
                        file: what.clone(),
                        line: index + 1,
                        why: "unclosed '[' in the options".to_owned(),
                    })?
            }
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            return Err(Error::Sources {
                file: what.clone(),
                line: index + 1,
                why: "expected `deb URI SUITE COMPONENT…`".to_owned(),
            });
        };
        if let Some(uri) = http_uri(uri) {
            entries.push(SourceEntry {
                uri: clean_uri(uri, &what, index + 1)?,
                security: suite.ends_with("-security"),
                updates: suite.ends_with("-updates"),
                file: file.to_owned(),
            });
        }
    }
    Ok(entries)
}

/// `http://…` and `https://…` (also behind apt's `mirror+`-less plain form); other transports
/// (`cdrom:`, `file:`, `tor+`) are not for Kiln.
fn http_uri(uri: &str) -> Option<&str> {
    (uri.starts_with("http://") || uri.starts_with("https://")).then_some(uri)
}

fn clean_uri(uri: &str, origin: &str, line: usize) -> Result<String> {
    let uri = uri.trim().trim_end_matches('/');
    let host = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .unwrap_or_default();
    if host.is_empty() || host.starts_with('/') || uri.contains(char::is_whitespace) {
        return Err(Error::Sources {
            file: origin.to_owned(),
            line,
            why: format!("{uri:?} is not an http:// or https:// mirror URL"),
        });
    }
    Ok(uri.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apt_root(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn reads_deb822_sources_with_a_security_entry() {
        let root = apt_root(&[(
            "etc/apt/sources.list.d/debian.sources",
            "Types: deb deb-src\n# a comment inside the stanza\nURIs: http://mirror.test/debian/\nSuites: trixie trixie-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.test/debian-security\nSuites: trixie-security\nComponents: main\n",
        )]);
        let mirror = find(&Given::default(), root.path()).unwrap();
        assert_eq!(mirror.archive, "http://mirror.test/debian");
        assert_eq!(
            mirror.security.as_deref(),
            Some("http://mirror.test/debian-security")
        );
        assert!(mirror.origin.ends_with("debian.sources"));
        assert!(mirror.updates, "the archive entry lists trixie-updates");
    }

    #[test]
    fn reads_one_line_sources_skipping_disabled_and_non_http() {
        let root = apt_root(&[
            (
                "etc/apt/sources.list.d/off.sources",
                "Types: deb\nURIs: http://off.test/debian\nSuites: trixie\nEnabled: no\n",
            ),
            (
                "etc/apt/sources.list",
                "# comment\ndeb cdrom:[Debian]/ trixie main\ndeb-src http://src.test/debian trixie main\ndeb [arch=amd64 signed-by=/k.gpg] https://one.test/debian trixie main\ndeb http://one.test/debian-security trixie-security main\n",
            ),
        ]);
        let mirror = find(&Given::default(), root.path()).unwrap();
        assert_eq!(mirror.archive, "https://one.test/debian");
        assert_eq!(
            mirror.security.as_deref(),
            Some("http://one.test/debian-security")
        );
        assert!(!mirror.updates, "no entry lists an -updates suite");
    }

    #[test]
    fn updates_are_read_where_an_entry_of_the_archive_lists_them() {
        let root = apt_root(&[(
            "etc/apt/sources.list",
            "deb http://one.test/debian trixie main\ndeb http://one.test/debian trixie-updates main\n",
        )]);
        assert!(find(&Given::default(), root.path()).unwrap().updates);
        // An -updates suite of another archive is not this archive's.
        let other = apt_root(&[(
            "etc/apt/sources.list",
            "deb http://one.test/debian trixie main\ndeb http://two.test/debian trixie-updates main\n",
        )]);
        assert!(!find(&Given::default(), other.path()).unwrap().updates);
        let deb822 = apt_root(&[(
            "etc/apt/sources.list.d/debian.sources",
            "Types: deb\nURIs: http://one.test/debian\nSuites: bookworm\nComponents: main\n",
        )]);
        assert!(!find(&Given::default(), deb822.path()).unwrap().updates);
        // A given mirror: as the caller says.
        let given = Given {
            archive: Some("http://given.test/debian".to_owned()),
            security: None,
            updates: true,
            origin: "KILN_DEBIAN_MIRROR".to_owned(),
        };
        assert!(find(&given, deb822.path()).unwrap().updates);
    }

    #[test]
    fn a_given_mirror_wins_and_no_mirror_says_how_to_set_one() {
        let root = apt_root(&[(
            "etc/apt/sources.list",
            "deb http://host.test/debian trixie main\n",
        )]);
        let given = Given {
            archive: Some("http://given.test/debian/".to_owned()),
            security: None,
            updates: false,
            origin: "KILN_DEBIAN_MIRROR".to_owned(),
        };
        let mirror = find(&given, root.path()).unwrap();
        assert_eq!(mirror.archive, "http://given.test/debian");
        assert_eq!(mirror.security, None);
        let empty = apt_root(&[]);
        let err = find(&Given::default(), empty.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("Set KILN_DEBIAN_MIRROR"), "{err}");
        let bad = Given {
            archive: Some("ftp://x".to_owned()),
            ..given
        };
        assert!(find(&bad, root.path()).is_err());
    }
}
