//! Image references as Docker parses them, enough for naming outputs: `hello` →
//! `docker.io/library/hello:latest`; `ghcr.io/acme/app:v1`; `localhost:5000/app@sha256:…`.

use crate::digest::Digest;
use crate::error::Result;

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
        let _ = s;
        todo!()
    }

    /// `docker.io/library/hello:latest` (with `@digest` when present).
    pub fn full_name(&self) -> String {
        todo!()
    }

    /// What Docker shows and writes into `RepoTags`: `hello:latest`, `ghcr.io/acme/app:v1`.
    pub fn familiar_name(&self) -> String {
        todo!()
    }
}
