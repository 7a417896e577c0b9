//! The deadlines' pass: due leases revoked, grants expired, pending requests timed out and
//! expiry warnings sent, many at once.

use futures_util::StreamExt;
use time::OffsetDateTime;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::notice::Kind;
use warden_domain::{Audience, Lease, Request, State};
use warden_store::Change;

use super::Error;
use crate::state::{App, now};

/// Expiries recorded at once, at most.
const LEASE_CONCURRENCY: usize = 32;

impl App {
    /// Expires grants, times out requests and sends expiry warnings that are due. Returns how
    /// many were handled. It needs only the store, so a grant past its time reads as ended (its
    /// SSH sessions closed, its secret no longer handed over) whatever its target is doing; its
    /// lease is then due, for [`App::revoke_lease`]. Many run at once, so a burst of
    /// expiries (after downtime, say) is not served one commit at a time: the store's group
    /// commit makes the concurrent writes share their syncs.
    pub async fn end_due_requests(&self) -> Result<usize, Error> {
        let now = now();
        let mut handled = 0;
        let ended: Vec<Result<bool, Error>> =
            futures_util::stream::iter(self.store.due(now, 256).await?)
                .map(|r| self.end_due(r, now))
                .buffer_unordered(LEASE_CONCURRENCY)
                .collect()
                .await;
        for r in ended {
            match r {
                Ok(true) => handled += 1,
                Ok(false) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(handled)
    }

    /// The leases due now, the `per_target` oldest of each target, for the worker to revoke
    /// (see [`App::revoke_lease`]).
    pub async fn due_leases(&self, per_target: usize) -> Result<Vec<Lease>, Error> {
        Ok(self.store.due_leases(now(), per_target).await?)
    }

    /// For each target that leases wait for to answer again, one of them, for the worker to
    /// ask it (see [`App::ask_target`]).
    pub async fn waiting_for_targets(&self) -> Result<Vec<Lease>, Error> {
        Ok(self.store.waiting_for_targets(now()).await?)
    }

    /// Revokes `lease`'s credential at its target, which may take up to
    /// [`super::TARGET_TIMEOUT`]; a failure is logged, audited and retried with backoff.
    pub async fn revoke_lease(&self, lease: Lease) {
        if let Err(e) = self.process_lease(lease, now()).await {
            tracing::error!(error = %e, "lease not processed; will retry");
        }
    }

    /// Withdraws the pending extensions of `r`, a grant that just expired: they can no longer
    /// be approved, and are taken out of approvers' queues rather than left until their own
    /// timeout. Looked for among the requester's pending requests at the target (few), so an
    /// expiry with none costs one small read, not a pass over all the requester's grants.
    async fn withdraw_waiting_extensions(&self, r: &Request) -> Result<(), Error> {
        let id = r.id;
        let waiting = self
            .same_access(r, vec![State::Pending])
            .await?
            .iter()
            .any(|x| x.extends == Some(id));
        if waiting {
            let comment = format!("the grant it extends ({id}) expired before it was approved");
            self.end_all(
                Some(&r.requester),
                |x| x.extends == Some(id) && x.state == State::Pending,
                Actor::system(),
                &comment,
            )
            .await?;
        }
        Ok(())
    }

    /// Whether an active extension of grant `r` runs on past it, so the access goes on.
    async fn continued(&self, r: &Request) -> Result<bool, Error> {
        Ok(self
            .same_access(r, vec![State::Active])
            .await?
            .iter()
            .any(|x| x.extends == Some(r.id) && x.expires_at > r.expires_at))
    }

    /// Stores `r`'s warning as taken without telling anyone, so it is not weighed again.
    async fn store_quietly(&self, r: &Request) -> Result<bool, Error> {
        match self.store.update_request(r, Change::default()).await {
            Ok(_) => Ok(true),
            Err(warden_store::Error::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Acts on a request whose deadline has come: times out a pending request, expires an
    /// active grant, or warns its requester that it ends soon. Returns whether it changed. One
    /// request that cannot move is logged and left for the next pass, so it never holds up the
    /// others.
    async fn end_due(&self, mut r: Request, now: OffsetDateTime) -> Result<bool, Error> {
        let ended = match r.state {
            State::Pending => r
                .time_out(now)
                .map(|()| Change {
                    events: vec![
                        Event::new(Code::RequestTimedOut, Actor::system(), now)
                            .for_request(&r)
                            .details(serde_json::json!({
                                "deadline": warden_domain::rfc3339(r.pending_deadline),
                                "rules": r.rules,
                            })),
                    ],
                    notices: self.notices(&r, Kind::TimedOut, Audience::Requester, None),
                    ..Change::default()
                })
                .map_err(Error::from),
            State::Active if r.ran_out(now).is_some() => self.end_grant(&mut r, None, now).await,
            State::Active => {
                if !r.take_warning(now) {
                    return Ok(false);
                }
                // Access an active extension continues does not end soon: nothing to tell,
                // unless sessions through the proxy were opened under this grant, which end
                // with it (the extension's own sessions are opened anew).
                let live = self
                    .sessions
                    .list()
                    .iter()
                    .filter(|s| s.grant == r.id)
                    .count();
                let continued = self.continued(&r).await?;
                if continued && live == 0 {
                    return self.store_quietly(&r).await;
                }
                let said = continued.then(|| {
                    format!(
                        "an extension continues your access, but the {live} SSH proxy session(s) opened under this grant end with it: open new ones to go on"
                    )
                });
                Ok(Change {
                    events: vec![
                        Event::new(Code::ExpiryWarned, Actor::system(), now)
                            .for_request(&r)
                            .details(serde_json::json!({
                                "expires_at": r.expires_at.map(warden_domain::rfc3339),
                                "continued": continued,
                                "proxy_sessions": live,
                            })),
                    ],
                    notices: self.notices(&r, Kind::ExpirySoon, Audience::Requester, said),
                    ..Change::default()
                })
            }
            _ => return Ok(false),
        };
        let change = match ended {
            Ok(change) => change,
            Err(e) => {
                tracing::warn!(request = %r.id, error = %e, "due request not processed; will retry");
                return Ok(false);
            }
        };
        match self.store.update_request(&r, change).await {
            Ok(_) => {
                self.outbox.notify_one();
                if r.state == State::Expired {
                    self.end_sessions(r.id, "your grant has expired");
                    self.withdraw_waiting_extensions(&r).await?;
                }
                Ok(true)
            }
            Err(warden_store::Error::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
