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
//! on) but still retried. A lease whose attempt could not reach its target is retried as soon as
//! the target answers again, whatever is left of its backoff: an account must not outlive an
//! outage by up to [`MAX_BACKOFF`].

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
    #[serde(with = "crate::timestamp")]
    pub expires_at: OffsetDateTime,
    /// When the worker must next act; `None` once revoked.
    #[serde(with = "crate::timestamp::option")]
    pub due_at: Option<OffsetDateTime>,
    pub attempts: u32,
    /// The last revocation error, without secrets.
    pub last_error: Option<String>,
    #[serde(with = "crate::timestamp")]
    pub created_at: OffsetDateTime,
    /// When the target confirmed the credential gone: what the report times revocation by,
    /// kept here because the audit events that also say it may be archived.
    #[serde(
        default,
        with = "crate::timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
    /// Where the account is made; `None` in a lease stored before this was kept, whose account
    /// is removed where the policy's target says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_at: Option<MadeAt>,
    /// Whether the last revocation attempt could not reach the target (it did not answer, or
    /// refused the administrator's login), so nothing ran there: the lease is retried as soon as
    /// the target answers again ([`Lease::target_answers`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreached: bool,
}

/// How the removal of an ended grant's account stands, as people are shown it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The account is still at the target and no attempt to remove it has failed yet: it is
    /// being removed, or is about to be.
    Pending,
    /// The account is still at the target: attempts to remove it failed, and go on.
    Failing,
    /// The target confirmed the account gone.
    Done,
}

impl Removal {
    pub const ALL: [Removal; 3] = [Removal::Pending, Removal::Failing, Removal::Done];

    /// The name as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Failing => "failing",
            Self::Done => "done",
        }
    }
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
            unreached: false,
        }
    }

    /// The account now exists; it lives until `expires_at`.
    pub fn activate(&mut self, expires_at: OffsetDateTime) {
        self.state = LeaseState::Active;
        self.expires_at = expires_at;
        self.due_at = Some(expires_at);
    }

    /// The credential must go now (expiry, early revoke, offboarding, failed issue, crash). A
    /// lease marked failed stays so: it was marked once, and is retried as it is.
    pub fn start_revoking(&mut self, now: OffsetDateTime) {
        if self.state != LeaseState::Revoked {
            if self.state != LeaseState::Failed {
                self.state = LeaseState::Revoking;
            }
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
        self.unreached = false;
    }

    /// A revocation attempt that ended at `now` failed at the target (it answered, and refused
    /// or could not finish the removal) or before Warden knew where to remove the account:
    /// retry later with exponential backoff. Returns true when this failure made the lease
    /// [`LeaseState::Failed`]. See [`Lease::attempt_failed`].
    pub fn revoke_failed(&mut self, error: String, now: OffsetDateTime) -> bool {
        self.attempt_failed(error, false, now..now)
    }

    /// A revocation attempt that ended at `now` could not reach the target: retry with
    /// exponential backoff, or as soon as the target answers again. Returns true when this
    /// failure made the lease [`LeaseState::Failed`]. See [`Lease::attempt_failed`].
    pub fn revoke_unreached(&mut self, error: String, now: OffsetDateTime) -> bool {
        self.attempt_failed(error, true, now..now)
    }

    /// The revocation attempt that ran over `attempt` (from its start to its end) failed,
    /// `unreached` if it could not reach the target: it is retried with exponential backoff
    /// counted from the attempt's end. Counted from its start, an attempt that took as long as
    /// its backoff (one that waited out a lock timeout, or a target that did not answer) would
    /// be retried at once, and reach [`MAX_ATTEMPTS`] in as little time as its attempts take.
    /// Returns true when this failure made the lease [`LeaseState::Failed`].
    pub fn attempt_failed(
        &mut self,
        error: String,
        unreached: bool,
        attempt: std::ops::Range<OffsetDateTime>,
    ) -> bool {
        self.attempts += 1;
        self.last_error = Some(error);
        self.unreached = unreached;
        let backoff = Duration::seconds(1 << self.attempts.min(6)).min(MAX_BACKOFF);
        // A clock set back during the attempt does not bring the retry forward.
        let ended = attempt.end.max(attempt.start);
        self.due_at = Some(ended + backoff);
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

    /// Whether the lease waits at `now` for its target to answer: its last attempt could not
    /// reach it, and its backoff has not ended.
    pub fn waits_for_target(&self, now: OffsetDateTime) -> bool {
        matches!(self.state, LeaseState::Revoking | LeaseState::Failed)
            && self.unreached
            && self.due_at.is_some_and(|due| due > now)
    }

    /// Whether `other`'s account is made where this one's is: at the same target, through the
    /// same connection (leases kept before their connection was go by their target alone). A
    /// target that answers through one connection says nothing of another, an old host's say.
    pub fn made_beside(&self, other: &Lease) -> bool {
        fn connection(l: &Lease) -> Option<&serde_json::Map<String, serde_json::Value>> {
            l.made_at.as_ref().map(|m| &m.connection)
        }
        self.target == other.target && connection(self) == connection(other)
    }

    /// The target answered at `now` where `answered`'s account is made: this lease, if made
    /// beside it and waiting for that, is due at once. Returns whether it was waiting.
    pub fn target_answers(&mut self, answered: &Lease, now: OffsetDateTime) -> bool {
        let waiting = self.made_beside(answered) && self.waits_for_target(now);
        if waiting {
            self.due_at = Some(now);
        }
        waiting
    }

    /// How the removal of the account stands once its grant has ended; `None` while the
    /// account is meant to exist (being made, or in use), and for one never made.
    pub fn removal(&self) -> Option<Removal> {
        match self.state {
            LeaseState::Intent | LeaseState::Active => None,
            LeaseState::Revoking if self.attempts == 0 => Some(Removal::Pending),
            LeaseState::Revoking | LeaseState::Failed => Some(Removal::Failing),
            LeaseState::Revoked => self.revoked_at.map(|_| Removal::Done),
        }
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

    /// A revoking lease at `now`, as the worker takes it up.
    fn revoking(now: OffsetDateTime) -> Lease {
        let mut l = intent(now);
        l.activate(now + Duration::hours(1));
        l.start_revoking(now);
        l
    }

    /// Each retry comes a backoff after the failed attempt ended, however long it took: an
    /// attempt that waited out a 5 s lock timeout is not retried at once.
    #[test]
    fn the_backoff_counts_from_the_end_of_the_failed_attempt() {
        let start = datetime!(2026-01-01 10:00 UTC);
        let mut l = revoking(start);
        let took = Duration::seconds(5);
        let ended = start + took;
        l.attempt_failed("lock timeout".into(), false, start..ended);
        assert_eq!(l.due_at, Some(ended + Duration::seconds(2)));
        // Retried when due, and failing again after as long: 4 s after that attempt ended.
        let retried = ended + Duration::seconds(2);
        l.start_revoking(retried);
        l.attempt_failed("no answer within 5 s".into(), true, retried..retried + took);
        assert_eq!(l.due_at, Some(retried + took + Duration::seconds(4)));
        assert!(l.waits_for_target(retried + took + Duration::seconds(1)));
        // Eight attempts of 5 s each take over four minutes before the lease is marked failed,
        // not the 2 + 4 + ... s of the backoffs alone.
        let mut l = revoking(start);
        let mut at = start;
        for _ in 0..MAX_ATTEMPTS {
            l.start_revoking(at);
            l.attempt_failed("lock timeout".into(), false, at..at + took);
            at = l.due_at.unwrap();
        }
        assert_eq!(l.state, LeaseState::Failed);
        let backoffs: i64 = (1..=MAX_ATTEMPTS).map(|n| (1i64 << n.min(6)).min(60)).sum();
        assert_eq!(
            at,
            start + Duration::seconds(backoffs) + took * i32::try_from(MAX_ATTEMPTS).unwrap()
        );
        // A clock set back during an attempt does not bring its retry forward.
        let mut l = revoking(start);
        l.attempt_failed(
            "lock timeout".into(),
            false,
            start..start - Duration::seconds(3),
        );
        assert_eq!(l.due_at, Some(start + Duration::seconds(2)));
    }

    #[test]
    fn a_lease_is_marked_failed_once_however_often_it_is_retried() {
        let now = datetime!(2026-01-01 10:00 UTC);
        let mut l = revoking(now);
        let mut marked = 0;
        // As the worker retries: taken up again, then failed again.
        for _ in 0..MAX_ATTEMPTS + 4 {
            l.start_revoking(now);
            if l.revoke_failed("lock timeout".into(), now) {
                marked += 1;
            }
        }
        assert_eq!(marked, 1);
        assert_eq!(l.state, LeaseState::Failed);
    }

    #[test]
    fn only_a_lease_that_could_not_reach_its_target_is_due_when_it_answers() {
        let now = datetime!(2026-01-01 10:00 UTC);
        let later = now + Duration::seconds(1);
        let mut down = revoking(now);
        for _ in 0..6 {
            down.revoke_unreached("no answer within 5 s".into(), now);
        }
        assert_eq!(down.due_at, Some(now + MAX_BACKOFF));
        assert!(down.waits_for_target(later));
        let answered = revoking(now);
        // Another host of the target, where an account was made before it moved, answers for
        // none made here.
        let mut elsewhere = answered.clone();
        elsewhere.made_at = Some(MadeAt {
            kind: "postgres".into(),
            connection: serde_json::json!({"host": "10.0.0.6"})
                .as_object()
                .unwrap()
                .clone(),
            settings: serde_json::Map::new(),
        });
        assert!(!down.made_beside(&elsewhere));
        assert!(!down.target_answers(&elsewhere, later));
        assert!(down.target_answers(&answered, later));
        assert_eq!(down.due_at, Some(later));
        // Due now, it waits no more.
        assert!(!down.waits_for_target(later));
        assert!(!down.target_answers(&answered, later));

        // The target answered and refused: its backoff stands.
        let mut refused = revoking(now);
        refused.revoke_unreached("no answer within 5 s".into(), now);
        refused.revoke_failed("lock timeout".into(), now);
        assert!(!refused.target_answers(&answered, later));
        assert_eq!(refused.due_at, Some(now + Duration::seconds(4)));

        // Marked failed, it still waits for its target; removed, it waits for nothing.
        for _ in 0..MAX_ATTEMPTS {
            down.revoke_unreached("no answer within 5 s".into(), now);
        }
        assert_eq!(down.state, LeaseState::Failed);
        assert!(down.waits_for_target(later));
        down.revoked(later);
        assert!(!down.unreached);
        assert!(!down.target_answers(&answered, later));
        assert_eq!(down.due_at, None);
    }

    #[test]
    fn the_removal_is_shown_only_once_the_grant_ended_and_an_account_was_made() {
        let now = datetime!(2026-01-01 10:00 UTC);
        let mut l = intent(now);
        assert_eq!(l.removal(), None);
        l.activate(now + Duration::hours(1));
        assert_eq!(l.removal(), None);
        l.start_revoking(now);
        assert_eq!(l.removal(), Some(Removal::Pending));
        l.revoke_unreached("no answer within 5 s".into(), now);
        assert_eq!(l.removal(), Some(Removal::Failing));
        for _ in 0..MAX_ATTEMPTS {
            l.revoke_failed("lock timeout".into(), now);
        }
        assert_eq!(l.removal(), Some(Removal::Failing));
        l.revoked(now);
        assert_eq!(l.removal(), Some(Removal::Done));

        let mut never = intent(now);
        never.never_made();
        assert_eq!(never.removal(), None);
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
