//! A suite's package index (`main/binary-ARCH/Packages.xz`): checked against the signed Release
//! before it is decompressed, then parsed into [`Package`]s keeping only what resolution,
//! downloading and locking need.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use crate::control;
use crate::error::{Error, Result};
use crate::relation::{parse_dep, parse_relations, Dep, Relation};
use crate::release::FileSum;
use crate::version::Version;

/// Decompressed indexes larger than this are refused (trixie's main/amd64 is ~57 MB).
const MAX_INDEX_BYTES: u64 = 512 << 20;

/// One binary package of an index.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    pub depends: Vec<Relation>,
    pub pre_depends: Vec<Relation>,
    /// `Provides` entries; Policy allows only `=` constraints there.
    pub provides: Vec<Dep>,
    /// Path of the `.deb` under the mirror root (`pool/main/d/dash/dash_0.5.12-12_amd64.deb`).
    pub filename: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// The suite whose index listed it (`trixie`, `trixie-security`).
    pub suite: String,
}

impl Package {
    /// `name=version` as apt writes it, for messages.
    pub fn id(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// Checks `bytes` against the Release entry `sum` (size, then sha256), then decompresses the xz
/// stream. Nothing is decompressed unless the bytes are exactly the signed ones.
/// `size_hint` is the decompressed size the Release lists (`…/Packages`), so the text is
/// allocated once instead of doubling its way up.
pub fn unpack_verified(
    bytes: &[u8],
    sum: &FileSum,
    size_hint: Option<u64>,
    what: &str,
) -> Result<String> {
    verify(bytes, sum, what)?;
    let capacity = size_hint.unwrap_or(0).min(MAX_INDEX_BYTES) as usize;
    let mut text = String::with_capacity(capacity);
    lzma_rust2::XzReader::new(bytes, false)
        .take(MAX_INDEX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::Parse {
            what: what.to_owned(),
            why: format!("not a valid xz-compressed UTF-8 index: {e}"),
        })?;
    if text.len() as u64 > MAX_INDEX_BYTES {
        return Err(Error::Parse {
            what: what.to_owned(),
            why: format!("decompresses to more than {MAX_INDEX_BYTES} bytes"),
        });
    }
    Ok(text)
}

/// Size first (cheap, and a wrong size is the common sign of a truncated download), then sha256.
pub fn verify(bytes: &[u8], sum: &FileSum, what: &str) -> Result<()> {
    if bytes.len() as u64 != sum.size {
        return Err(Error::Checksum {
            what: what.to_owned(),
            why: format!(
                "{} bytes, but the signed Release lists {} bytes",
                bytes.len(),
                sum.size
            ),
        });
    }
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != sum.sha256 {
        return Err(Error::Checksum {
            what: what.to_owned(),
            why: format!(
                "sha256 {actual}, but the signed Release lists {}",
                sum.sha256
            ),
        });
    }
    Ok(())
}

/// The fields [`parse_packages`] reads, stanza by stanza (continuation lines kept): what the
/// cache keeps of a verified index, so later builds parse a quarter of the text and
/// decompress nothing.
pub fn extract(text: &str) -> String {
    const KEPT: [&str; 9] = [
        "Package:",
        "Version:",
        "Architecture:",
        "Depends:",
        "Pre-Depends:",
        "Provides:",
        "Filename:",
        "Size:",
        "SHA256:",
    ];
    let mut out = String::with_capacity(text.len() / 4);
    let mut keeping = false;
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            keeping = false;
            out.push('\n');
        } else if line.starts_with([' ', '\t']) {
            if keeping {
                out.push_str(line);
            }
        } else {
            keeping = KEPT.iter().any(|k| {
                line.as_bytes()
                    .get(..k.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(k.as_bytes()))
            });
            if keeping {
                out.push_str(line);
            }
        }
    }
    out
}

/// Parses a Packages file of `suite`; `what` names it in errors.
pub fn parse_packages(text: &str, suite: &str, what: &str) -> Result<Vec<Package>> {
    let mut packages = Vec::new();
    control::for_each(text, what, |stanza| {
        packages.push(package(&stanza, suite, what)?);
        Ok(())
    })?;
    Ok(packages)
}

fn package(stanza: &control::Stanza<'_>, suite: &str, what: &str) -> Result<Package> {
    let field = |name: &str| stanza.require(name, what);
    let at = || format!("{what}:{}", stanza.line);
    let bad = |why: String| Error::Parse { what: at(), why };
    let relations = |name: &str| {
        stanza
            .get(name)
            .map_or(Ok(Vec::new()), parse_relations)
            .map_err(|e| bad(format!("{name}: {e}")))
    };
    let provides = stanza
        .get("Provides")
        .map_or(Ok(Vec::new()), |p| {
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(parse_dep)
                .collect()
        })
        .map_err(|e| bad(format!("Provides: {e}")))?;
    let sha256 = field("SHA256")?.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("SHA256 {sha256:?} is not 64 hex digits")));
    }
    Ok(Package {
        name: field("Package")?.to_owned(),
        version: Version::parse(field("Version")?).map_err(bad)?,
        architecture: field("Architecture")?.to_owned(),
        depends: relations("Depends")?,
        pre_depends: relations("Pre-Depends")?,
        provides,
        filename: field("Filename")?.to_owned(),
        size: field("Size")?
            .parse()
            .map_err(|_| bad("Size is not a number".to_owned()))?,
        sha256,
        suite: suite.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_needed_fields() {
        let text = "Package: libssl3t64\nVersion: 3.5.9-1~deb13u1\nArchitecture: amd64\nProvides: libssl3 (= 3.5.9-1~deb13u1)\nDepends: libc6 (>= 2.38), zlib1g (>= 1:1.1.4)\nFilename: pool/main/o/openssl/libssl3t64_3.5.9-1~deb13u1_amd64.deb\nSize: 2345\nSHA256: 00AA000000000000000000000000000000000000000000000000000000000000\nDescription: x\n more\n";
        let packages = parse_packages(text, "trixie", "Packages").unwrap();
        let p = &packages[0];
        assert_eq!(p.id(), "libssl3t64=3.5.9-1~deb13u1");
        assert_eq!(p.provides[0].to_string(), "libssl3 (= 3.5.9-1~deb13u1)");
        assert_eq!(p.depends.len(), 2);
        assert_eq!(p.size, 2345);
        assert!(p.sha256.starts_with("00aa"));
        let broken = text.replace("Size: 2345", "Size: many");
        let err = parse_packages(&broken, "trixie", "Packages").unwrap_err();
        assert_eq!(err.to_string(), "Packages:1: Size is not a number");
    }

    #[test]
    fn the_extract_parses_to_the_same_packages() {
        let text = "Package: a\nMaintainer: Étienne Mollier\nSource: b\nVersion: 1.0\nArchitecture: all\nDepends: c (>= 1),\n d\nDescription: x\n long text\nFilename: pool/a.deb\nSize: 3\nSHA256: 00aa000000000000000000000000000000000000000000000000000000000000\n\nPackage: c\nVersion: 2\nArchitecture: amd64\nFilename: pool/c.deb\nSize: 4\nSHA256: 11aa000000000000000000000000000000000000000000000000000000000000\n";
        let slim = extract(text);
        assert!(
            !slim.contains("Description")
                && !slim.contains("long text")
                && !slim.contains("Source")
        );
        let ids = |t: &str| -> Vec<(String, usize)> {
            parse_packages(t, "s", "P")
                .unwrap()
                .iter()
                .map(|p| (p.id(), p.depends.len()))
                .collect()
        };
        assert_eq!(ids(&slim), ids(text));
        assert_eq!(ids(&slim), [("a=1.0".to_owned(), 2), ("c=2".to_owned(), 0)]);
    }

    #[test]
    fn refuses_bytes_that_do_not_match_the_release() {
        let bytes = b"not really xz";
        let good = FileSum {
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        };
        verify(bytes, &good, "Packages.xz").unwrap();
        let short = FileSum {
            size: 3,
            ..good.clone()
        };
        assert!(verify(bytes, &short, "Packages.xz")
            .unwrap_err()
            .to_string()
            .contains("13 bytes, but the signed Release lists 3 bytes"));
        let other = FileSum {
            sha256: "0".repeat(64),
            ..good
        };
        assert!(unpack_verified(bytes, &other, None, "Packages.xz")
            .unwrap_err()
            .to_string()
            .starts_with("Packages.xz: refused: sha256"));
    }
}
