//! Errors of the Debian client. Every variant names what it concerns: the URL, the suite, the
//! package (and the dependency chain that led to it), the file.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    #[error("{url}: {why}")]
    Http { url: String, why: String },
    /// No mirror was given and the host's apt sources name none.
    #[error("no Debian mirror: {why}. Set KILN_DEBIAN_MIRROR (e.g. to your Debian mirror's `.../debian` URL) or `[stack] mirror` in kiln.toml")]
    NoMirror { why: String },
    #[error("{file}:{line}: {why}")]
    Sources {
        file: String,
        line: usize,
        why: String,
    },
    /// InRelease whose signature does not verify, is expired, or is not what was asked for.
    #[error("{url}: refused: {why}")]
    Release { url: String, why: String },
    /// An index or package whose bytes do not match what the signed metadata says.
    #[error("{what}: refused: {why}")]
    Checksum { what: String, why: String },
    #[error("{what}: {why}")]
    Parse { what: String, why: String },
    #[error("{0}")]
    Resolve(String),
    #[error("{deb}: {why}")]
    Deb { deb: String, why: String },
    #[error("{path}: {why}")]
    Lock { path: String, why: String },
    #[error("OpenPGP keyring {what}: {why}")]
    Keyring { what: String, why: String },
    #[error("{0}")]
    Stack(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
