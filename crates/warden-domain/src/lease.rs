//! Leases: the durable record of a credential Warden created at a target, from the intent to
//! create it until it is confirmed gone.
//!
//! ```text
//! intent ──created──▶ active ──grant ends──▶ revoking ──removed──▶ revoked
//!    ├──(crash, or issue failed at the target)─▶ revoking ◀──retry── failed
//!    └──(issue failed before the target was touched)────────────────▶ revoked
//! ```
//!
//! The intent, naming the account, is stored *before* anything is created at the target, so a
//! crash at any instant leaves a lease to clean up, never an unknown account. Revocation is
//! retried with exponential backoff; a lease that keeps failing is marked failed (and alerted
//! on) but still retried.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::names::{RoleName, TargetName, UserName};
use crate::request::RequestId;

/// How long an intent may stay unconfirmed before it is treated as a crash leftover.
pub const INTENT_GRACE: Duration = Duration::seconds(60);
/// Failed revocation attempts before a lease is marked failed.
pub const MAX_ATTEMPTS: u32 = 8;
/// Longest pause between revocation attempts.
pub const MAX_BACKOFF: Duration = Duration::seconds(60);

/// Where a lease is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Intent,
    Active,
    Revoking,
    Revoked,
    Failed,
}

impl LeaseState {
    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intent => "intent",
            Self::Active => "active",
            Self::Revoking => "revoking",
            Self::Revoked => "revoked",
            Self::Failed => "failed",
        }
    }
}

/// Where an account is made: the target's issuer, its connection and the role's settings, as
/// they were when the grant was issued. The account is removed there whatever the policy says
/// of the target since: renamed, moved to another host, or gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadeAt {
    /// The issuer kind, e.g. `postgres`.
    pub kind: String,
    /// The target's `[connection]` table (no secrets: those stay in the vault).
    pub connection: serde_json::Map<String, serde_json::Value>,
    /// The role's issuer settings (its revocation statements among them).
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// A credential Warden created (or is about to create) at a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The grant (request) the credential belongs to.
    pub grant: RequestId,
    pub user: UserName,
    pub target: TargetName,
    pub role: RoleName,
    /// The account name at the target.
    pub account: String,
    pub state: LeaseState,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When the worker must next act; `None` once revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub due_at: Option<OffsetDateTime>,
    pub attempts: u32,
    /// The last revocation error, without secrets.
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the target confirmed the credential gone: what the report times revocation by,
    /// kept here because the audit events that also say it may be archived.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
    /// Where the account is made; `None` in a lease stored before this was kept, whose account
    /// is removed where the policy's target says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_at: Option<MadeAt>,
}

impl Lease {
    /// The intent to create `account` for `grant`, recorded before the target is touched.
    pub fn intent(
        grant: RequestId,
        user: UserName,
        target: TargetName,
        role: RoleName,
        account: String,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            grant,
            user,
            target,
            role,
            account,
            state: LeaseState::Intent,
            expires_at,
            due_at: Some(now + INTENT_GRACE),
            attempts: 0,
            last_error: None,
            created_at: now,
            revoked_at: None,
            made_at: None,
        }
    }

    /// The account now exists; it lives until `expires_at`.
    pub fn activate(&mut self, expires_at: OffsetDateTime) {
        self.state = LeaseState::Active;
        self.expires_at = expires_at;
        self.due_at = Some(expires_at);
    }

    /// The credential must go now (expiry, early revoke, offboarding, failed issue, crash).
    pub fn start_revoking(&mut self, now: OffsetDateTime) {
        if self.state != LeaseState::Revoked {
            self.state = LeaseState::Revoking;
            self.due_at = Some(now);
        }
    }

    /// Issuing failed before anything reached the target: there is no account to remove, and
    /// none was ever revoked (`revoked_at` stays empty).
    pub fn never_made(&mut self) {
        self.state = LeaseState::Revoked;
        self.due_at = None;
    }

    /// The target confirmed the credential is gone, `at` that moment.
    pub fn revoked(&mut self, at: OffsetDateTime) {
        self.state = LeaseState::Revoked;
        self.revoked_at.get_or_insert(at);
        self.due_at = None;
        self.last_error = None;
    }

    /// A revocation attempt failed: retry later with exponential backoff. Returns true when
    /// this failure made the lease [`LeaseState::Failed`].
    pub fn revoke_failed(&mut self, error: String, now: OffsetDateTime) -> bool {
        self.attempts += 1;
        self.last_error = Some(error);
        let backoff = Duration::seconds(1 << self.attempts.min(6)).min(MAX_BACKOFF);
        self.due_at = Some(now + backoff);
        let newly_failed = self.attempts >= MAX_ATTEMPTS && self.state != LeaseState::Failed;
        if self.attempts >= MAX_ATTEMPTS {
            self.state = LeaseState::Failed;
        }
        newly_failed
    }

    /// Whether the account may still exist at the target.
    pub fn is_live(&self) -> bool {
        self.state != LeaseState::Revoked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// An intent for alice's one-hour grant, made at `now`.
    fn intent(now: OffsetDateTime) -> Lease {
        Lease::intent(
            RequestId::from_uuid(uuid::Uuid::nil()),
            "alice".parse().unwrap(),
            "db".parse().unwrap(),
            "ro".parse().unwrap(),
            "w_alice_1".into(),
            now + Duration::hours(1),
            now,
        )
    }

    #[test]
    fn lifecycle_and_backoff() {
        let now = datetime!(2026-01-01 10:00 UTC);
        let mut l = intent(now);
        assert_eq!(l.due_at, Some(now + INTENT_GRACE));
        l.activate(now + Duration::hours(1));
        assert_eq!(l.due_at, Some(now + Duration::hours(1)));
        l.start_revoking(now);
        assert_eq!((l.state, l.due_at), (LeaseState::Revoking, Some(now)));
        let mut became_failed = 0;
        for i in 1..=MAX_ATTEMPTS {
            if l.revoke_failed(format!("down {i}"), now) {
                became_failed += 1;
            }
        }
        assert_eq!(became_failed, 1);
        assert_eq!(l.state, LeaseState::Failed);
        assert_eq!(l.due_at, Some(now + MAX_BACKOFF));
        assert!(l.is_live());
        l.revoked(now + Duration::seconds(1));
        assert!(!l.is_live());
        assert_eq!(l.revoked_at, Some(now + Duration::seconds(1)));
        l.start_revoking(now);
        assert_eq!(l.state, LeaseState::Revoked);
    }

    #[test]
    fn an_intent_never_made_is_closed_without_a_revocation() {
        let now = datetime!(2026-01-01 10:00 UTC);
        let mut l = intent(now);
        l.never_made();
        assert!(!l.is_live());
        assert_eq!((l.due_at, l.revoked_at, l.attempts), (None, None, 0));
    }
}
