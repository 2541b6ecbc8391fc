//! Errors of the OCI layer. Every variant names the file or image it concerns.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    #[error("blob {expected} is corrupt: its content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("{archive}: entry {entry:?} escapes the archive root ({why})")]
    UnsafePath {
        archive: PathBuf,
        entry: String,
        why: &'static str,
    },
    #[error("invalid image reference {reference:?}: {why}")]
    InvalidReference { reference: String, why: String },
    #[error("image {image}: {why}")]
    InvalidImage { image: String, why: String },
    #[error("layer entry {path:?}: {why}")]
    InvalidEntry { path: String, why: String },
}

impl Error {
    /// Wraps an I/O error with what was being done ("reading /x/index.json").
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `std::io::Result`s: `file.read(..).ctx(|| format!("reading {p}"))`.
pub trait IoContext<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
