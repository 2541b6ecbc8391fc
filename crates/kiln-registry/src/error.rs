//! Errors of registry operations. Each names the registry and, where there is one, the repository
//! and HTTP status. Credentials never appear in them (URLs Kiln builds carry none).

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registry {registry}: cannot connect ({url}): {why}")]
    Unreachable {
        registry: String,
        url: String,
        why: String,
    },
    #[error("registry {registry}, repository {repository}: {what}: HTTP {status}{detail}")]
    Status {
        registry: String,
        repository: String,
        what: String,
        status: u16,
        /// The registry's own error codes and messages, when it sent any.
        detail: String,
    },
    #[error(
        "registry {registry}, repository {repository}: {what}: authentication failed \
         (HTTP {status}): {why}"
    )]
    Auth {
        registry: String,
        repository: String,
        what: String,
        status: u16,
        why: String,
    },
    /// A transfer that stalled or broke off after the registry was reached.
    #[error("registry {registry}, repository {repository}: {what}: {why}")]
    Transfer {
        registry: String,
        repository: String,
        what: String,
        why: String,
    },
    #[error("invalid registry {host:?}: {why} (expected HOST[:PORT])")]
    InvalidRegistryHost { host: String, why: &'static str },
    #[error("registry {registry}, repository {repository}: {why}")]
    Protocol {
        registry: String,
        repository: String,
        why: String,
    },
    #[error("credentials for registry {registry}: {why}")]
    Credentials { registry: String, why: String },
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
}

impl Error {
    /// The HTTP status of a registry answer, if this error is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::Auth { status, .. } => Some(*status),
            _ => None,
        }
    }
}
