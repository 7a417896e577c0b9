//! What a decision holds from its reading of the policy and the directory until its outcome is
//! stored, and what a policy reload, an offboarding and an administrator's change of a user's
//! credentials wait for: no decision made under the old policy is stored after the new one is
//! live, and none made after an offboarding, or once the credentials change, counts the user's
//! approval (one under way stores its outcome first: the approval was given before).

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The two locks decisions read-hold: one for the policy, one for who may approve.
#[derive(Debug, Default)]
pub struct Gates {
    /// Write-held by a reload while it makes another policy live.
    policy: RwLock<()>,
    /// Write-held by an offboarding while it bars the user's approvals, and by a change of
    /// credentials while it holds them (`App::hold_approvals`). Apart from `policy`
    /// so that an offboarding does not withdraw the grants being issued meanwhile
    /// ([`Gates::again`]), whose approvals were counted before it.
    reviewers: RwLock<()>,
}

/// A decision's hold ([`Gates::deciding`], [`Gates::again`]).
#[derive(Debug)]
pub struct Gate<'a> {
    _policy: RwLockReadGuard<'a, ()>,
    _reviewers: Option<RwLockReadGuard<'a, ()>>,
}

impl Gates {
    /// Held by a decision from its reading of the policy and the directory until its outcome
    /// is stored; waits for a reload or an offboarding under way.
    pub async fn deciding(&self) -> Gate<'_> {
        let policy = self.policy.read().await;
        let reviewers = self.reviewers.read().await;
        Gate {
            _policy: policy,
            _reviewers: Some(reviewers),
        }
    }

    /// The hold again, after a call made without it (a target's, which may take its time, and
    /// which a reload should not wait for, nor every decision behind the reload): `None` while
    /// a reload of another policy is under way or waiting for its turn, so that what was decided
    /// under the old one is not stored after it. Never waits, so it cannot wait on a reload that
    /// waits on a lock its caller holds. An offboarding is not waited for: the approvals were
    /// counted before the call, when they still counted.
    pub fn again(&self) -> Option<Gate<'_>> {
        Some(Gate {
            _policy: self.policy.try_read().ok()?,
            _reviewers: None,
        })
    }

    /// Held while another policy is made live, once the decisions under way are stored.
    pub async fn replacing_policy(&self) -> RwLockWriteGuard<'_, ()> {
        self.policy.write().await
    }

    /// Held while a user's approvals are barred (an offboarding) or held (new credentials),
    /// once the decisions under way are stored.
    pub async fn barring_reviewer(&self) -> RwLockWriteGuard<'_, ()> {
        self.reviewers.write().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_offboarding_waits_for_decisions_but_withdraws_no_grant_being_issued() {
        let gates = Gates::default();
        let deciding = gates.deciding().await;
        // An offboarding waits for the decision under way...
        let barred = tokio::time::timeout(Duration::from_millis(50), gates.barring_reviewer());
        assert!(barred.await.is_err());
        drop(deciding);
        // ... and, while it bars, a grant whose approvals were counted before goes on...
        let barring = gates.barring_reviewer().await;
        assert!(gates.again().is_some());
        // ... but a new decision waits for it.
        let next = tokio::time::timeout(Duration::from_millis(50), gates.deciding());
        assert!(next.await.is_err());
        drop(barring);
        drop(gates.deciding().await);
    }

    #[tokio::test]
    async fn another_policy_withdraws_what_was_decided_under_the_old_one() {
        let gates = Gates::default();
        let deciding = gates.deciding().await;
        // A reload waiting for its turn already bars the decision gate a grant asks for again.
        let reload = gates.replacing_policy();
        tokio::pin!(reload);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut reload)
                .await
                .is_err()
        );
        assert!(gates.again().is_none());
        drop(deciding);
        let live = reload.await;
        assert!(gates.again().is_none());
        drop(live);
        assert!(gates.again().is_some());
    }
}
