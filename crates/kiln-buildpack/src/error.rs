//! Errors of buildpack loading, detection and planning. Parse errors name the file and, where the
//! parser knows it, the line.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed `buildpack.toml`, `kiln.toml`, `order.toml` or `Procfile`.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Manifest {
        path: PathBuf,
        line: Option<usize>,
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
}
