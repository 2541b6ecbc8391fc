//! Errors of buildpack loading, detection and planning. Parse errors name the file and, where the
//! parser knows it, the line.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed `buildpack.toml`, `kiln.toml`, `order.toml`, `Procfile`, or an app manifest
    /// an analyzer reads (`package.json`, `pyproject.toml`, `Cargo.toml`, `composer.json`, …):
    /// `path:line:column: message`, with what the parser knows of the location.
    #[error(
        "{}{}{}: {message}",
        path.display(),
        line.map(|l| format!(":{l}")).unwrap_or_default(),
        column.filter(|_| line.is_some()).map(|c| format!(":{c}")).unwrap_or_default()
    )]
    Manifest {
        path: PathBuf,
        /// 1-based.
        line: Option<usize>,
        /// 1-based, in characters; only with a line.
        column: Option<usize>,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Template(String),
    /// The plan has no process: the image would have no entrypoint.
    #[error("{0}")]
    NoDefaultProcess(crate::plan::NoDefaultProcess),
}
