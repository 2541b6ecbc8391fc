//! Image references as Docker parses them, enough for naming outputs: `hello` →
//! `docker.io/library/hello:latest`; `ghcr.io/acme/app:v1`; `localhost:5000/app@sha256:…`.
//!
//! Grammar (from Docker's `distribution/reference`): `[domain/]path[:tag][@digest]`. The first
//! component is a domain when it contains `.` or `:` or is `localhost`; otherwise the domain is
//! `docker.io`, and a one-component Docker Hub path gets `library/`. Path components are
//! `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, Result};

const DOCKER_HUB: &str = "docker.io";
/// Docker's limit on the length of `domain/path`.
const NAME_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `localhost:5000`, …
    pub registry: String,
    /// `library/hello`, `acme/app`, …
    pub repository: String,
    /// `None` only when a digest is given without a tag.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalizes a reference; invalid ones (uppercase repository, bad tag characters,
    /// empty components, bad digest) are a clear error.
    pub fn parse(s: &str) -> Result<Reference> {
        let fail = |why: &str| Error::InvalidReference {
            reference: s.to_owned(),
            why: why.to_owned(),
        };
        let (name_and_tag, digest) = match s.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(Digest::parse(digest).map_err(|e| fail(&e.to_string()))?),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_and_tag[..last_slash + i],
                Some(&name_and_tag[last_slash + i + 1..]),
            ),
            None => (name_and_tag, None),
        };
        if name.is_empty() {
            return Err(fail("empty name"));
        }
        if name.len() > NAME_MAX {
            return Err(fail(&format!("name is longer than {NAME_MAX} characters")));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest)
            }
            _ => (DOCKER_HUB, name),
        };
        if registry != DOCKER_HUB && !valid_domain(registry) {
            return Err(fail(&format!("invalid registry {registry:?}")));
        }
        // Docker Hub is also spelled index.docker.io; both name the same repositories.
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        for component in path.split('/') {
            if !valid_path_component(component) {
                let why = if component.bytes().any(|b| b.is_ascii_uppercase()) {
                    "repository name must be lowercase".to_owned()
                } else {
                    format!(
                        "invalid repository component {component:?}: use [a-z0-9] separated by \
                         '.', '_', '__' or '-'"
                    )
                };
                return Err(fail(&why));
            }
        }
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(fail(&format!(
                    "invalid tag {tag:?}: use [A-Za-z0-9_][A-Za-z0-9_.-], at most 128 characters"
                )));
            }
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// `docker.io/library/hello:latest` (with `@digest` when present).
    pub fn full_name(&self) -> String {
        self.with_suffix(format!("{}/{}", self.registry, self.repository))
    }

    /// What Docker shows and writes into `RepoTags`: `hello:latest`, `ghcr.io/acme/app:v1`.
    pub fn familiar_name(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_owned(),
                _ => self.repository.clone(),
            }
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        self.with_suffix(name)
    }

    fn with_suffix(&self, mut name: String) -> String {
        if let Some(tag) = &self.tag {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            name.push('@');
            name.push_str(digest.as_str());
        }
        name
    }
}

impl fmt::Display for Reference {
    /// The full name ([`Reference::full_name`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name())
    }
}

/// `host[.host…][:port]`, host labels `[A-Za-z0-9]` with inner `-`: what a reference's
/// registry may be.
pub fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    port_ok && host.split('.').all(label_ok)
}

/// `[a-z0-9]+` runs separated by `.`, `_`, `__` or one or more `-`.
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run, necessarily followed by an alphanumeric (the last byte is one).
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| word(b) || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (
            r.registry,
            r.repository,
            r.tag,
            r.digest.map(|d| d.to_string()),
        )
    }

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_names_are_normalized() {
        let hello = Reference::parse("hello").unwrap();
        assert_eq!(hello.full_name(), "docker.io/library/hello:latest");
        assert_eq!(hello.familiar_name(), "hello:latest");
        assert_eq!(hello.to_string(), hello.full_name());

        let r = Reference::parse("acme/app:1.0").unwrap();
        assert_eq!(r.full_name(), "docker.io/acme/app:1.0");
        assert_eq!(r.familiar_name(), "acme/app:1.0");

        let r = Reference::parse("docker.io/library/hello:v2").unwrap();
        assert_eq!(r.familiar_name(), "hello:v2");
        assert_eq!(Reference::parse("index.docker.io/hello").unwrap(), hello);
        // `library/` is only stripped for single-component names under it.
        let r = Reference::parse("library/a/b").unwrap();
        assert_eq!(r.familiar_name(), "library/a/b:latest");
    }

    #[test]
    fn registries_ports_and_digests() {
        assert_eq!(
            parts("ghcr.io/acme/app:v1"),
            ("ghcr.io".into(), "acme/app".into(), Some("v1".into()), None)
        );
        assert_eq!(
            parts("localhost:5000/app"),
            (
                "localhost:5000".into(),
                "app".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            parts("localhost/app:x"),
            ("localhost".into(), "app".into(), Some("x".into()), None)
        );
        assert_eq!(
            parts(&format!("localhost:5000/app@{DIGEST}")),
            (
                "localhost:5000".into(),
                "app".into(),
                None,
                Some(DIGEST.into())
            )
        );
        let r = Reference::parse(&format!("ghcr.io/acme/app:v1@{DIGEST}")).unwrap();
        assert_eq!(r.full_name(), format!("ghcr.io/acme/app:v1@{DIGEST}"));
        assert_eq!(r.familiar_name(), format!("ghcr.io/acme/app:v1@{DIGEST}"));
        let r = Reference::parse("kiln-test/interop:1").unwrap();
        assert_eq!(r.full_name(), "docker.io/kiln-test/interop:1");
        assert_eq!(r.familiar_name(), "kiln-test/interop:1");
        assert_eq!(parts("acme/a.b__c-d--e/f_g").1, "acme/a.b__c-d--e/f_g");
    }

    #[test]
    fn invalid_references_are_rejected_with_reasons() {
        let cases = [
            ("Hello", "lowercase"),
            ("acme/App", "lowercase"),
            ("", "empty name"),
            ("app:", "invalid tag"),
            ("app:-x", "invalid tag"),
            ("app:a/b", "invalid registry"),
            ("a//b", "invalid repository"),
            ("a/", "invalid repository"),
            ("_a", "invalid repository"),
            ("a..b", "invalid repository"),
            ("a___b", "invalid repository"),
            ("app@sha256:abc", "invalid digest"),
            ("my host:5000/app", "invalid registry"),
            ("ghcr.io:x/app", "invalid registry"),
        ];
        for (input, why) in cases {
            let err = Reference::parse(input).unwrap_err().to_string();
            assert!(err.contains(why), "{input:?}: {err}");
            assert!(err.contains(&format!("{input:?}")), "{input:?}: {err}");
        }
        let long_tag = format!("app:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        assert!(Reference::parse(&format!("app:{}", "t".repeat(128))).is_ok());
        assert!(Reference::parse(&"a".repeat(256)).is_err());
    }
}
