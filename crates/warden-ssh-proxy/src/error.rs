//! The proxy's errors.

/// Why the proxy could not start or a session could not go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SSH host key {path}: {detail}")]
    HostKey { path: String, detail: String },
    #[error("ssh: {0}")]
    Ssh(#[from] russh::Error),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("{0}")]
    Backend(#[from] crate::BackendError),
}
