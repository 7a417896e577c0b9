//! Credential issuers: each creates and revokes one kind of short-lived credential at a real
//! target.
//!
//! The interface follows the shape of Vault's database plugin interface: a small trait whose
//! methods take a request struct and return a response struct, so fields can be added without
//! breaking implementations, and whose revoke is idempotent. Each issuer lives in its own
//! folder and is registered once in [`Registry::with_builtin`].

pub mod registry;
pub mod ssh_cert;

use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;
use warden_domain::{RequestId, RoleName, TargetName, UserName};

pub use registry::{Registry, check_settings};

/// Issuer-specific settings of a role, from the targets file.
pub type Settings = serde_json::Map<String, serde_json::Value>;

/// A value that must never be logged: its `Debug` prints nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a secret value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself; call only where it is handed to its owner.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything an issuer needs to create a credential for one grant.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    /// The grant's id; issuers embed it in what they create so it can be traced back.
    pub grant: RequestId,
    pub user: &'a UserName,
    pub target: &'a TargetName,
    pub role: &'a RoleName,
    pub settings: &'a Settings,
    pub valid_after: OffsetDateTime,
    pub valid_before: OffsetDateTime,
    /// The requester's public key (OpenSSH format), for issuers that sign keys.
    pub public_key: Option<&'a str>,
}

/// What an issuer created.
#[derive(Debug, Clone)]
pub struct IssueResponse {
    /// Non-secret facts about the credential, kept with the grant and shown on every read
    /// (e.g. an SSH certificate, a database user name).
    pub public: serde_json::Value,
    /// Secret parts, handed to the requester once and never stored in clear.
    pub secret: Option<Secret<serde_json::Value>>,
}

/// Which credential to remove.
#[derive(Debug, Clone)]
pub struct RevokeRequest<'a> {
    pub grant: RequestId,
    pub target: &'a TargetName,
    pub role: &'a RoleName,
    pub settings: &'a Settings,
    /// What [`IssueResponse::public`] returned.
    pub public: &'a serde_json::Value,
}

/// The outcome of a revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeResponse {
    /// The credential was removed now.
    Revoked,
    /// Nothing was left to remove (already revoked, or the credential dies on its own).
    AlreadyGone,
}

/// Why an issuer could not do what was asked. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("role settings are invalid: {0}")]
    Settings(String),
    #[error("the request is missing what this issuer needs: {0}")]
    Input(String),
    #[error("the target could not be reached or refused the change: {0}")]
    Target(String),
    #[error("internal issuer error: {0}")]
    Internal(String),
}

/// One kind of credential.
#[async_trait]
pub trait Issuer: Send + Sync + fmt::Debug {
    /// The `kind` name targets use to select this issuer, e.g. `ssh`.
    fn kind(&self) -> &'static str;

    /// Checks a request's inputs before it is stored, so a request that could never be
    /// issued is refused up front rather than after approval.
    fn check_request(&self, settings: &Settings, public_key: Option<&str>) -> Result<(), Error>;

    /// Creates a credential valid from `valid_after` until `valid_before`.
    async fn issue(&self, req: IssueRequest<'_>) -> Result<IssueResponse, Error>;

    /// Removes a credential. Calling it again for the same grant is harmless.
    async fn revoke(&self, req: RevokeRequest<'_>) -> Result<RevokeResponse, Error>;
}
