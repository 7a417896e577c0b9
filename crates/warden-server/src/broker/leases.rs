//! The accounts Warden makes at targets: leases revoked with backoff (and at once when their
//! target answers again after an outage), intents left by a crash recovered, and orphaned
//! accounts reconciled away.

use std::collections::HashSet;
use std::str::FromStr;

use time::OffsetDateTime;
use uuid::Uuid;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::lease::MadeAt;
use warden_domain::notice::Kind;
use warden_domain::{Audience, Lease, LeaseState, RequestId, RoleName, State, UserName};
use warden_issuers::{ListRequest, RevokeRequest, RevokeResponse};

use super::Error;
use crate::metrics;
use crate::state::{App, now};

impl App {
    /// Moves every lease still at its intent to revoking. Called once at start-up: no issue is
    /// in flight in a fresh process, so an intent is a leftover of a crash.
    pub async fn recover_intents(&self) -> Result<usize, Error> {
        let now = now();
        let horizon = now + warden_domain::lease::INTENT_GRACE + time::Duration::seconds(1);
        let mut n = 0;
        for mut l in self.store.due_leases(horizon, 100_000).await? {
            if l.state == LeaseState::Intent {
                l.start_revoking(now);
                self.store.update_lease(&l, Vec::new(), Vec::new()).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Acts on one due lease: revokes its credential, or retries later with backoff.
    pub(super) async fn process_lease(
        &self,
        mut lease: Lease,
        now: OffsetDateTime,
    ) -> Result<(), Error> {
        // A lease being removed while its request is still approved means the issue never
        // completed (a crash, or a failure after the intent): close the request too.
        let request = self.store.request(lease.grant).await?;
        // The account should be gone from the grant's end, or its expiry if that came first.
        let due = request
            .as_ref()
            .and_then(|r| r.ended_at)
            .map_or(lease.expires_at, |end| end.min(lease.expires_at));
        if let Some(mut r) = request
            && r.state == State::Approved
        {
            r.end_unissued(
                "the credential's issue was interrupted; request access again".into(),
                now,
            )?;
            let ev = Event::new(Code::CredentialIssueFailed, Actor::system(), now)
                .for_request(&r)
                .failed("interrupted", "issue did not complete");
            match self.store.update_request(&r, vec![ev].into()).await {
                Ok(_) | Err(warden_store::Error::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if lease.state == LeaseState::Revoked {
            return Ok(());
        }
        lease.start_revoking(now);
        let made_at = self.made_at(&lease);
        let outcome = match made_at
            .as_ref()
            .and_then(|m| Some((m, self.issuers.get(&m.kind)?)))
        {
            None => Err(Failed::Unasked(format!(
                "target {} is no longer in the policy; remove account {} by hand",
                lease.target, lease.account
            ))),
            Some((made_at, issuer)) => match self.admin_credential(&lease.target).await {
                Ok(admin) => super::within_timeout(issuer.revoke(RevokeRequest {
                    grant: lease.grant,
                    target: &lease.target,
                    role: &lease.role,
                    connection: &made_at.connection,
                    settings: &made_at.settings,
                    public: &serde_json::Value::Null,
                    account: Some(&lease.account),
                    admin: admin.as_ref(),
                }))
                .await
                .map_err(Failed::from),
                Err(e @ Error::Store(_)) => return Err(e),
                // No password to log in with yet (an interrupted rotation the target cannot
                // finish now): nothing ran there, so the lease backs off and is audited as at a
                // target out of reach, rather than retried at once, again and again.
                Err(e) => Err(Failed::Unreached(e.to_string())),
            },
        };
        let answered = matches!(outcome, Ok(_) | Err(Failed::AtTarget(_)));
        let kind = made_at.map_or_else(|| "unknown".to_owned(), |m| m.kind);
        let (grant, target, role) = (lease.grant, lease.target.clone(), lease.role.clone());
        // Events carry the time the target answered, so lags include the revocation itself.
        let done = now.max(crate::state::now());
        let base = |code| {
            let mut e = Event::new(code, Actor::system(), done);
            e.request_id = Some(grant);
            e.target = Some(target.clone());
            e.role = Some(role.clone());
            e
        };
        let removed = outcome.is_ok();
        let mut notices = Vec::new();
        let events = match outcome {
            Ok(result) => {
                lease.revoked(done);
                vec![base(Code::CredentialRevoked).details(serde_json::json!({
                    "account": lease.account,
                    "outcome": if result == RevokeResponse::Revoked { "revoked" } else { "already_gone" },
                    "lag_ms": (done - due).whole_milliseconds().max(0),
                }))]
            }
            Err(failed) => {
                // The backoff counts from when the attempt ended: one that took as long as its
                // backoff (a lock timeout, a target that did not answer) is not retried at once.
                let (e, unreached) = match failed {
                    Failed::Unreached(e) => (e, true),
                    Failed::AtTarget(e) | Failed::Unasked(e) => (e, false),
                };
                let newly_failed = lease.attempt_failed(e.clone(), unreached, now..done);
                tracing::error!(grant = %lease.grant, account = %lease.account, error = %e, "revocation failed; will retry");
                // Security hears at the first failure (the account outlives its grant from
                // now on) and again when Warden stops retrying.
                if lease.attempts == 1 || newly_failed {
                    let detail = if newly_failed {
                        format!(
                            "account {}: still there after {} attempts, now marked failed (retries go on, further apart); check the target: {e}",
                            lease.account, lease.attempts
                        )
                    } else {
                        format!("account {}: retrying with backoff: {e}", lease.account)
                    };
                    if let Some(r) = self.store.request(lease.grant).await? {
                        notices =
                            self.notices(&r, Kind::RevokeFailed, Audience::Security, Some(detail));
                    }
                }
                // Every attempt that failed is on record, not only the one that gave up: the
                // account outlived its grant for as long as they went on.
                vec![
                    base(Code::CredentialRevokeFailed)
                        .failed("revoke_failed", e)
                        .details(serde_json::json!({
                            "account": lease.account,
                            "attempts": lease.attempts,
                            "marked_failed": newly_failed,
                        })),
                ]
            }
        };
        let notify = !notices.is_empty();
        self.store.update_lease(&lease, events, notices).await?;
        if notify {
            self.outbox.notify_one();
        }
        if answered {
            self.target_answered(&lease).await?;
        }
        if removed {
            self.metrics.add(&metrics::REVOKED, &[&kind], 1);
            let lag = (done - due).as_seconds_f64().max(0.0);
            self.metrics
                .observe(&metrics::REVOCATION_LAG, &[&kind], lag);
        } else {
            self.metrics.add(&metrics::REVOKE_FAILURES, &[&kind], 1);
        }
        Ok(())
    }

    /// Where `lease`'s account was made; a lease from before that was kept goes by the policy,
    /// and has none once its target left it.
    fn made_at(&self, lease: &Lease) -> Option<MadeAt> {
        lease.made_at.clone().or_else(|| {
            let policy = self.policy.load_full();
            Some(made_at(policy.targets().get(&lease.target)?, &lease.role))
        })
    }

    /// Asks the target `lease` waits for whether it answers again: its administrator lists
    /// Warden's accounts where the account was made, which changes nothing there and is not
    /// audited. If it answers, the leases made there that wait for that are due at once; if
    /// not, they keep their backoff.
    pub async fn ask_target(&self, lease: &Lease) -> Result<(), Error> {
        let Some(made_at) = self.made_at(lease) else {
            return Ok(());
        };
        let Some(issuer) = self.issuers.get(&made_at.kind) else {
            return Ok(());
        };
        let admin = self.admin_credential(&lease.target).await?;
        let asked = super::within_timeout(issuer.list_accounts(ListRequest {
            target: &lease.target,
            connection: &made_at.connection,
            admin: admin.as_ref(),
        }))
        .await;
        match asked {
            Ok(_) => self.target_answered(lease).await,
            Err(e) => {
                tracing::debug!(target = %lease.target, error = %e, "target still not answering");
                Ok(())
            }
        }
    }

    /// The target answered where `answered`'s account is made: the leases made there that wait
    /// for that are due now, and the worker is woken for them.
    async fn target_answered(&self, answered: &Lease) -> Result<(), Error> {
        if self.store.target_answers(answered, now()).await? > 0 {
            self.wake.now();
        }
        Ok(())
    }

    /// The accounts a live lease names, at any target: an account of another target on the
    /// same database server is not an orphan.
    async fn leased_accounts(&self) -> Result<HashSet<String>, Error> {
        Ok(self.store.live_accounts().await?.into_iter().collect())
    }

    /// Removes accounts Warden made at its targets that no live lease accounts for (restored
    /// backups, hand-made copies of Warden's names, crashes of another deployment). Accounts
    /// without Warden's name prefix and marker are never listed, so never touched. Returns how
    /// many orphans were removed.
    pub async fn reconcile(&self) -> Result<usize, Error> {
        let policy = self.policy.load_full();
        // What an account without a grant in its marker is revoked under.
        let probe = RequestId::from_uuid(Uuid::nil());
        let mut removed = 0;
        for (_, target) in policy.targets().iter() {
            let Some(issuer) = self.issuers.get(&target.kind) else {
                continue;
            };
            if !makes_accounts(issuer.as_ref()) {
                continue;
            }
            // One target whose password cannot be settled now does not stop the others'
            // reconciliation.
            let admin = match self.admin_credential(&target.name).await {
                Ok(Some(admin)) => admin,
                Ok(None) => continue,
                Err(e @ Error::Store(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(target = %target.name, error = %e, "reconciliation could not log in");
                    continue;
                }
            };
            // Leases first, accounts second: an account created after this read has a lease
            // (its intent) that the read may have missed, so never remove what is newer.
            let live = self.leased_accounts().await?;
            let accounts = match super::within_timeout(issuer.list_accounts(ListRequest {
                target: &target.name,
                connection: &target.connection,
                admin: Some(&admin),
            }))
            .await
            {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(target = %target.name, error = %e, "reconciliation could not list accounts");
                    continue;
                }
            };
            // And again after the listing: an account made since the first read has a lease
            // only this read sees (one whose lease ended since is the lease worker's to remove,
            // and the first read kept it).
            let fresh = self.leased_accounts().await?;
            for account in accounts
                .into_iter()
                .filter(|a| !live.contains(&a.name) && !fresh.contains(&a.name))
            {
                let now = now();
                let outcome = super::within_timeout(
                    issuer.revoke(RevokeRequest {
                        grant: account.grant.unwrap_or(probe),
                        target: &target.name,
                        role: &RoleName::from_str("reconcile")
                            .map_err(|e| Error::Issuer(e.to_string()))?,
                        connection: &target.connection,
                        settings: &Default::default(),
                        public: &serde_json::Value::Null,
                        account: Some(&account.name),
                        admin: Some(&admin),
                    }),
                )
                .await;
                let mut ev = Event::new(Code::OrphanRemoved, Actor::system(), now).details(
                    serde_json::json!({
                        "account": account.name,
                        "grant": account.grant.map(|g| g.to_string()),
                    }),
                );
                ev.target = Some(target.name.clone());
                ev.request_id = account.grant;
                match outcome {
                    Ok(_) => removed += 1,
                    Err(e) => ev = ev.failed("revoke_failed", e.to_string()),
                }
                self.store.append(vec![ev]).await?;
            }
        }
        Ok(removed)
    }
}

/// Why a revocation attempt failed, as far as its target goes.
enum Failed {
    /// The target did not answer, or refused the administrator's login: nothing ran there.
    Unreached(String),
    /// The target answered, and the removal failed there.
    AtTarget(String),
    /// The target was not asked: Warden cannot tell where the account is, or how to remove it
    /// there.
    Unasked(String),
}

impl From<warden_issuers::Error> for Failed {
    fn from(e: warden_issuers::Error) -> Self {
        use warden_issuers::Error as E;
        match e {
            E::Unreached(_) | E::Login(_) => Self::Unreached(e.to_string()),
            E::Target(_) | E::Undone(_) | E::Privilege(_) => Self::AtTarget(e.to_string()),
            _ => Self::Unasked(e.to_string()),
        }
    }
}

/// Whether `issuer` makes accounts at its targets (databases), logging in as an administrator
/// to do it, rather than credentials that need no account (SSH certificates).
pub(crate) fn makes_accounts(issuer: &dyn warden_issuers::Issuer) -> bool {
    "probe".parse::<UserName>().is_ok_and(|user| {
        issuer
            .account_name(RequestId::from_uuid(Uuid::nil()), &user)
            .is_some()
    })
}

/// Where `target`'s issuer makes the account of a grant of `role`, as the policy says now.
pub(super) fn made_at(target: &warden_policy::Target, role: &RoleName) -> MadeAt {
    MadeAt {
        kind: target.kind.clone(),
        connection: target.connection.clone(),
        settings: target
            .roles
            .get(role)
            .map(|ro| ro.settings.clone())
            .unwrap_or_default(),
    }
}
