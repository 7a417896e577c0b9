//! Postmortems of break-glass grants and the drill report.
//!
//! A postmortem is opened with its grant (see `broker/grant.rs`) and stays open until a member of
//! the security group or an administrator closes it, once the grant has ended, with a link to
//! the write-up and a note;
//! closing is audited. The drill report lists every role the break-glass rules cover with its
//! last drill, flagging roles not drilled within a year.

use time::OffsetDateTime;
use warden_domain::audit::{Code, Event};
use warden_domain::{Comment, Link, Postmortem, RequestId, RoleName, TargetName, User};
use warden_store::OutboxStatus;

use crate::broker::{Caller, Error};
use crate::state::{App, now};

/// How often each break-glass role must be drilled.
pub const DRILL_EVERY_DAYS: i64 = 365;

/// One break-glass role in the drill report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillStatus {
    pub target: TargetName,
    pub role: RoleName,
    pub last: Option<(OffsetDateTime, RequestId)>,
    /// No drill within [`DRILL_EVERY_DAYS`].
    pub overdue: bool,
}

impl App {
    /// Whether `user` works postmortems: the security group and administrators.
    pub fn is_security(&self, user: &User) -> bool {
        user.in_group(&self.config.security_group) || self.is_admin(user)
    }

    /// Postmortems the caller may see, newest first: all for security and administrators,
    /// their own for everyone else.
    pub async fn postmortems(
        &self,
        caller: &Caller<'_>,
        open_only: bool,
        before: Option<RequestId>,
        limit: usize,
    ) -> Result<Vec<Postmortem>, Error> {
        let own = (!self.is_security(caller.user)).then_some(&caller.user.name);
        Ok(self
            .store
            .postmortems(open_only, own, before, limit)
            .await?)
    }

    /// One postmortem, if the caller may see it; a refusal is audited, as one to show a
    /// request is.
    pub async fn show_postmortem(
        &self,
        caller: &Caller<'_>,
        id: RequestId,
    ) -> Result<Postmortem, Error> {
        match self.store.postmortem(id).await? {
            Some(p) if self.is_security(caller.user) || p.requester == caller.user.name => Ok(p),
            // Indistinguishable from a missing one, so ids cannot be probed.
            _ => {
                let mut refusal = Event::new(Code::ActionRefused, caller.actor(), now())
                    .details(serde_json::json!({ "action": "postmortem.show" }));
                refusal.request_id = Some(id);
                Err(self.refused(refusal, no_postmortem(id)).await)
            }
        }
    }

    /// Closes a postmortem with the write-up's link and a note. Security and administrators
    /// only, and not the one who broke the glass (someone else reviews what they did; a
    /// drill's may be closed by whoever ran it), nor one whose password they last set, and so
    /// know; every refusal is audited.
    pub async fn close_postmortem(
        &self,
        caller: Caller<'_>,
        id: RequestId,
        link: &str,
        note: &str,
    ) -> Result<Postmortem, Error> {
        let now = now();
        let mut refusal = Event::new(Code::PostmortemCloseRefused, caller.actor(), now);
        refusal.request_id = Some(id);
        if !self.is_security(caller.user) {
            let e = Error::Forbidden(format!(
                "only members of {} and administrators close postmortems",
                self.config.security_group
            ));
            return Err(self.refused(refusal, e).await);
        }
        let Some(mut pm) = self.store.postmortem(id).await? else {
            return Err(self.refused(refusal, no_postmortem(id)).await);
        };
        refusal.target = Some(pm.target.clone());
        refusal.role = Some(pm.role.clone());
        if pm.requester == caller.user.name && !pm.drill {
            let e = Error::Forbidden(format!(
                "you broke the glass of {id}: its postmortem is closed by another member of {} or an administrator, who reviews what was done",
                self.config.security_group
            ));
            return Err(self.refused(refusal, e).await);
        }
        // Who set the closer's password knows it: a close signed in with it could be theirs.
        if !pm.drill
            && self
                .password_set_by(&caller.user.name, &pm.requester)
                .await?
        {
            let e = Error::Forbidden(format!(
                "your password was last set by {}, who broke the glass of {id}, so your close of its postmortem cannot count on it: another administrator can set you a new password",
                pm.requester
            ));
            return Err(self.refused(refusal, e).await);
        }
        // The grant as stored: one whose expiry the worker has yet to record has ended all
        // the same.
        let Some(grant) = self.store.request(id).await? else {
            return Err(self.refused(refusal, no_postmortem(id)).await);
        };
        let lease = self.store.lease(id).await?;
        let closed = Link::parse(link).and_then(|link| {
            let note = Comment::parse(note).map_err(|e| e.named("note"))?;
            pm.close(&caller.user.name, link, note, &grant, lease.as_ref(), now)
        });
        if let Err(e) = closed {
            return Err(self.refused(refusal, e.into()).await);
        }
        let Some(closure) = pm.closed.as_ref() else {
            return Err(Error::NotFound(id));
        };
        let mut ev =
            Event::new(Code::PostmortemClosed, caller.actor(), now).details(serde_json::json!({
                "drill": pm.drill,
                "link": closure.link.as_str(),
                "note": closure.note.as_str(),
                "open_for_s": (now - pm.opened_at).whole_seconds(),
            }));
        ev.request_id = Some(pm.request);
        ev.target = Some(pm.target.clone());
        ev.role = Some(pm.role.clone());
        match self.store.close_postmortem(&pm, vec![ev]).await {
            Ok(()) => Ok(pm),
            Err(warden_store::Error::Conflict) => {
                let e = warden_domain::postmortem::PostmortemError::AlreadyClosed(id);
                Err(self.refused(refusal, e.into()).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every role the break-glass rules cover, with its last drill.
    pub async fn drill_report(&self) -> Result<Vec<DrillStatus>, Error> {
        let drills = self.store.last_drills().await?;
        let cutoff = now() - time::Duration::days(DRILL_EVERY_DAYS);
        Ok(self
            .policy
            .load()
            .breakglass_roles()
            .into_iter()
            .map(|(target, role)| {
                let last = drills
                    .iter()
                    .find(|d| d.target == target && d.role == role)
                    .map(|d| (d.at, d.request));
                DrillStatus {
                    overdue: last.is_none_or(|(at, _)| at < cutoff),
                    target,
                    role,
                    last,
                }
            })
            .collect())
    }

    /// The notification outbox's figures, for status and metrics.
    pub async fn outbox_status(&self) -> Result<OutboxStatus, Error> {
        Ok(self.store.outbox_status().await?)
    }
}

/// There is no postmortem `id` the caller may see: the same answer whether the request is
/// missing, is no break-glass grant, or is someone else's.
fn no_postmortem(id: RequestId) -> Error {
    Error::Missing {
        code: "no_postmortem",
        message: format!(
            "no postmortem {id}: only break-glass grants open one (`warden postmortem list` lists those you may see)"
        ),
    }
}
