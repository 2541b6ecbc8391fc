//! Errors of a build. Each says what failed and where, so the CLI can print it as is.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("source {}: {why}", path.display())]
    Source { path: PathBuf, why: String },
    #[error(transparent)]
    Buildpack(#[from] kiln_buildpack::Error),
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    #[error(transparent)]
    Runtime(#[from] kiln_runtime::Error),
    #[error(transparent)]
    Registry(#[from] kiln_registry::Error),
    /// The image's default process cannot start in it (or the image could not be read to tell).
    #[error(transparent)]
    Verify(#[from] kiln_verify::Error),
    /// `--platform` asks for an image this build cannot honestly make.
    #[error("--platform {requested}: {why}")]
    Platform { requested: String, why: String },
    #[error(transparent)]
    Debian(#[from] kiln_debian::Error),
    #[error("no buildpack detected for {}\n{looked_for}", path.display())]
    NothingDetected { path: PathBuf, looked_for: String },
    #[error(
        "step {buildpack}/{step} failed: `{command}` {status}\n--- last {} lines of output ---\n{}",
        tail.len(),
        tail.join("\n")
    )]
    StepFailed {
        buildpack: String,
        step: String,
        command: String,
        /// "exited with code 2", "was killed by signal 9", "could not start: …".
        status: String,
        tail: Vec<String>,
    },
    /// `--isolation sandbox` on a machine where sandboxes cannot start.
    #[error("--isolation sandbox: {0} (--isolation host runs build steps on the host)")]
    SandboxUnavailable(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Adds context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context().into(),
            source,
        })
    }
}
