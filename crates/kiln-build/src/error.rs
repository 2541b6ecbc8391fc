//! Errors of a build. Each says what failed and where, so the CLI can print it as is.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `#[non_exhaustive]`: new error classes may appear; match on [`Error::kind`] for a stable name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
        /// The command's exit code; `None` when it was killed by a signal or never started.
        exit_code: Option<i32>,
        /// Boxed, so `Error` stays small enough to return by value everywhere.
        tail: Box<[String]>,
    },
    /// `--isolation sandbox` on a machine where sandboxes cannot start.
    #[error("--isolation sandbox: {0} (--isolation host runs build steps on the host)")]
    SandboxUnavailable(String),
    /// A build option the caller gave is unusable (a `--label` key, an `--env-file` line):
    /// the message names the option, file and line.
    #[error("{0}")]
    Options(String),
    /// The caller's [`crate::events::Cancel`] stopped the build.
    #[error("build cancelled")]
    Cancelled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A stable name for the class of this error, part of `--json` output
    /// (`docs/json-output.md`): renaming one is a breaking change.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Source { .. } => "source",
            Error::Buildpack(_) => "buildpack",
            Error::Oci(_) => "image",
            Error::Runtime(_) => "runtime",
            Error::Registry(_) => "registry",
            Error::Verify(_) => "verify",
            Error::Platform { .. } => "platform",
            Error::Debian(_) => "debian",
            Error::NothingDetected { .. } => "nothing_detected",
            Error::StepFailed { .. } => "step_failed",
            Error::SandboxUnavailable(_) => "sandbox_unavailable",
            Error::Options(_) => "options",
            Error::Cancelled => "cancelled",
            Error::Io { .. } => "io",
        }
    }
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
