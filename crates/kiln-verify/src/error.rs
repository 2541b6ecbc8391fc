//! Errors of a verification: the image's process cannot start, or the image could not be read.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The default process cannot start: every problem found, each naming the missing or
    /// unusable file and, where it can, what would provide it.
    #[error(
        "the image's default process {command} cannot start in the image (checked before writing it; \
         --no-verify skips this check):\n{}",
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    WontStart {
        /// The entrypoint and cmd, as JSON (`["/bin/sh","-c","…"]`).
        command: String,
        problems: Vec<String>,
    },
    #[error("reading {layer}: {why}")]
    Layer { layer: String, why: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    /// A bug of this crate, not of the image.
    #[error("internal error: {0}")]
    Internal(String),
}
