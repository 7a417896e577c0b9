//! Reviewing and cancelling pending requests: approvals counted against the tier policy
//! requires at the time of each review, denials, and withdrawals by the requester.

use std::collections::HashMap;

use time::OffsetDateTime;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::notice::Kind;
use warden_domain::request::{Approved, TransitionError};
use warden_domain::{Audience, Comment, Decision, Request, RequestId, State, User, UserName};
use warden_store::Change;

use super::{CONFLICT_RETRIES, Caller, Error, Outcome};
use crate::state::{App, Deciding, now};

/// Pending requests read at a time when they are decided again.
const PAGE: usize = 1000;

/// Runs [`redecide_pending`] in the background: after a reload, or a user back from offboarding.
/// It logs in the span of the call that asked for it, so its lines carry that call's request id.
pub fn grant_met_requests_later(app: &crate::state::Shared) {
    use tracing::Instrument as _;
    let app = app.clone();
    tokio::spawn(async move { redecide_pending(&app).await }.instrument(tracing::Span::current()));
}

/// Decides the pending requests again under the policy of this moment
/// ([`App::grant_met_requests`]), saying in the log what came of it.
pub async fn redecide_pending(app: &crate::state::Shared) {
    match app.grant_met_requests().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            granted = n,
            "pending requests whose approvals now suffice were granted"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "granting pending requests whose approvals now suffice failed")
        }
    }
}

impl App {
    /// Withdraws the approvals `held`'s user gave to requests still pending, once an
    /// administrator gave them a new password or reset their second factor
    /// (`request.approvals_voided`, saying why), as an offboarding does: what the old
    /// credentials approved (a thief's token's, or, for a password an administrator set,
    /// whoever knew it) counts no more, and they approve afresh.
    ///
    /// `held` was taken before the change was stored ([`App::hold_approvals`]), so that from
    /// then on no decision counts an approval of theirs, however many requests there are to
    /// withdraw them from, and none of theirs is stored; the approvals withdrawn are those
    /// given until then ([`App::void_given_until`]). It is given back once no call of theirs
    /// made with the old credentials is under way either ([`App::drain_calls_of`]): an
    /// approval under way as they changed is refused while it holds. Should withdrawing fail,
    /// or their calls outlast the wait, it stays in place ([`App::release_lingering`] gives it
    /// back later). Returns how many requests lost approvals.
    pub(crate) async fn withdraw_approvals(
        &self,
        held: crate::state::ApprovalsHeld<'_>,
    ) -> Result<usize, warden_store::Error> {
        let store_error = |e: Error| match e {
            Error::Store(e) => e,
            other => warden_store::Error::backend(other.to_string()),
        };
        let user = held.user().clone();
        let until = HashMap::from([(user.clone(), held.at())]);
        let changed = self
            .void_given_until(&until, held.why())
            .await
            .map_err(store_error)?;
        let drained = self
            .drain_calls_of(
                &user,
                "a change of credentials",
                "that the user's approvals, held until then, count again",
            )
            .await;
        if drained {
            held.release();
        }
        Ok(changed)
    }

    /// Gives back the holds on approvals their changes of credentials left in place
    /// ([`crate::state::Lingering`]) whose users have no call under way any more, once the
    /// approvals given until the change are withdrawn. Run with each pass that decides the
    /// pending requests again ([`Self::grant_met_requests`]). Returns how many it gave back.
    pub(crate) async fn release_lingering(&self) -> Result<usize, Error> {
        let mut released = 0;
        for hold in self.lingering() {
            if self.tokens.changes_in_flight(&hold.user) > 0 {
                continue;
            }
            let until = HashMap::from([(hold.user.clone(), hold.at)]);
            self.void_given_until(&until, &hold.why).await?;
            self.release_lingering_hold(&hold);
            released += 1;
        }
        Ok(released)
    }

    /// Whether `holder` last set `user`'s password ([`warden_store::UserSecrets::password_set_by`]):
    /// they know it, and an approval of `holder`'s request, or the close of their break-glass
    /// grant's postmortem, signed in with it could be `holder`'s own. Refused, one person would
    /// otherwise act as two.
    pub(crate) async fn password_set_by(
        &self,
        user: &UserName,
        holder: &UserName,
    ) -> Result<bool, Error> {
        let secrets = self.store.secrets(user).await?;
        Ok(secrets.password_set_by.as_ref() == Some(holder))
    }

    /// Grants the pending requests whose approvals already meet the approval policy demands
    /// now: a reload or a restart relaxed it (or made it `auto`), so no one could approve them
    /// further and they would only wait out their timeout. Of the others, those whose tier
    /// changed are announced to their new reviewers. Run after
    /// each reload, at start and every minute (a rule on the time of day changes a tier with no
    /// reload); returns how many were granted.
    pub async fn grant_met_requests(&self) -> Result<usize, Error> {
        // Approvals a change of credentials left held count again first, what the old
        // credentials approved withdrawn.
        if let Err(e) = self.release_lingering().await {
            tracing::warn!(error = %e, "giving back held approvals failed: they stay held until the next pass");
        }
        let mut granted = 0;
        // Page by page, so that no pending request is left out however many there are.
        let mut before = None;
        loop {
            let page = self
                .store
                .requests(warden_store::RequestFilter {
                    states: vec![State::Pending],
                    before,
                    limit: PAGE,
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            let full = page.len() == PAGE;
            for r in page {
                // The policy live now, not at the pass's start: a reload meanwhile decides the
                // rest.
                if self.grant_if_met(self.deciding().await, r).await? {
                    granted += 1;
                }
            }
            if !full {
                break;
            }
        }
        Ok(granted)
    }

    /// [`Self::grant_met_requests`] for one pending request: true if it was granted.
    async fn grant_if_met(&self, decided: Deciding<'_>, mut r: Request) -> Result<bool, Error> {
        let policy = &decided.policy;
        let Some(requester) = self.user(&r.requester).cloned() else {
            return Ok(false);
        };
        if r.breakglass.is_some() || self.offboarded(&requester.name) {
            return Ok(false);
        }
        let now = now();
        if let Some(original) = r.extends
            && self.ended_original(original, now).await?.is_some()
        {
            return Ok(false);
        }
        let Ok(decision) = self.decide_as_made(policy, &requester, &r, now) else {
            return Ok(false);
        };
        if decision
            .check(r.ttl, r.ticket.as_ref(), r.stepped_up)
            .is_err()
        {
            return Ok(false);
        }
        // The tier the reload or restart changed is on the record before Warden grants it under
        // that tier, as before a person's approval counts against it ([`Self::review`]).
        let retiered = self.retier(&requester, &mut r, &decision, now);
        let rules_before = r.asked_under().to_vec();
        let met = r.approve_as_met(
            &requester,
            decision.requirement.clone(),
            &self.reviewers(),
            now,
        );
        if let Err(TransitionError::Overdue { .. }) = met {
            // Timed out, not yet recorded so: the worker's pass does it now.
            self.wake.now();
            return Ok(false);
        }
        if met.is_err() {
            let id = r.id;
            match self.announce_requirement(r, retiered).await {
                Ok(()) | Err(Error::Store(warden_store::Error::Conflict)) => {}
                Err(e) => {
                    tracing::warn!(request = %id, error = %e, "telling a request's new approvers failed")
                }
            }
            return Ok(false);
        }
        let mut events: Vec<Event> = retiered.into_iter().map(Retiered::untold).collect();
        events.push(
            Event::new(Code::RequestApproved, Actor::system(), now)
                .for_request(&r)
                .details(serde_json::json!({
                    "tier": r.requirement.to_string(),
                    "rules": r.rules,
                    "rules_before": rules_before,
                    "approvers": r.counted,
                    "why": "the approvals given meet the approval policy demands now",
                })),
        );
        let id = r.id;
        let by = super::grant::Granter {
            actor: Actor::system(),
            is_requester: false,
        };
        match self.grant(decided, r, events, true, by, now).await {
            Ok(_) => return Ok(true),
            // Changed meanwhile (approved, cancelled): its own path decides it.
            Err(Error::Store(warden_store::Error::Conflict)) => {}
            Err(e) => {
                tracing::warn!(request = %id, error = %e, "granting a request whose approvals now suffice failed")
            }
        }
        Ok(false)
    }

    /// The state of grant `original` at `now` when it is no longer active: an extension
    /// continues an active grant, and one that ended (revoked, or past its time, whether or not
    /// the worker has recorded its expiry yet) has no access left to extend; a fresh request is
    /// decided as such.
    async fn ended_original(
        &self,
        original: RequestId,
        now: OffsetDateTime,
    ) -> Result<Option<State>, Error> {
        Ok(self
            .store
            .request(original)
            .await?
            .and_then(|o| match o.state {
                State::Active if o.ran_out(now).is_some() => Some(State::Expired),
                State::Active => None,
                ended => Some(ended),
            }))
    }

    /// Stores pending request `r` with the tier [`Self::retier`] gave it, where a reload or a
    /// restart changed it (`retiered`), and tells the reviewers it names now who were not named
    /// before.
    async fn announce_requirement(
        &self,
        r: Request,
        retiered: Option<Retiered>,
    ) -> Result<(), Error> {
        let Some(retiered) = retiered else {
            return Ok(());
        };
        let notices = self.retier_notices(&r, &retiered, None);
        let told = !notices.is_empty();
        self.store
            .update_request(
                &r,
                Change {
                    events: vec![retiered.event],
                    notices,
                    ..Default::default()
                },
            )
            .await?;
        if told {
            self.outbox.notify_one();
        }
        Ok(())
    }

    /// Gives pending request `r` the tier `decision` demands now, where a reload or a restart
    /// changed it (with the rules that decide it, and the recording they ask: what approvers
    /// are shown, and what the grant will carry), and says so on the record. `None` when
    /// nothing changed. The reviewers it names now, whose approval would count, and who were
    /// not named before are returned to be told: they see it in `request list --reviewable`
    /// from now on, but were never told of it.
    fn retier(
        &self,
        requester: &User,
        r: &mut Request,
        decision: &Decision,
        now: OffsetDateTime,
    ) -> Option<Retiered> {
        let requirement = decision.requirement.clone();
        let recording = r.recording.max(decision.recording);
        if r.requirement == requirement && r.rules == decision.rules && r.recording == recording {
            return None;
        }
        // No one could give it: said on the record, as a request made now would be refused.
        let no_approvers = self
            .approvable(decision, requester)
            .err()
            .map(|e| e.to_string());
        let newcomers: Vec<UserName> = self
            .directory
            .users()
            .filter(|u| {
                r.awaits(requester, &requirement, &self.reviewers(), u)
                    && !r.requirement.names_reviewer(requester, u)
            })
            .map(|u| u.name.clone())
            .collect();
        let previous = std::mem::replace(&mut r.requirement, requirement);
        let previous_rules = r.redecide_rules(decision.rules.clone());
        r.recording = recording;
        let event = Event::new(Code::RequirementChanged, Actor::system(), now)
            .for_request(r)
            .details(serde_json::json!({
                "previous": previous.to_string(),
                "tier": r.requirement.to_string(),
                "previous_rules": previous_rules,
                "rules": r.rules,
                "recording": r.recording.to_string(),
                "told": newcomers,
                "no_approvers": no_approvers,
            }));
        Some(Retiered {
            event,
            previous: previous.to_string(),
            newcomers,
        })
    }

    /// The notices telling a retiered request's new reviewers of it, but `already` (one who
    /// approves it as it is retiered).
    fn retier_notices(
        &self,
        r: &Request,
        retiered: &Retiered,
        already: Option<&UserName>,
    ) -> Vec<warden_store::Outgoing> {
        let told: Vec<UserName> = retiered
            .newcomers
            .iter()
            .filter(|u| Some(*u) != already)
            .cloned()
            .collect();
        if told.is_empty() {
            return Vec::new();
        }
        self.notices_to(
            r,
            Kind::ApprovalNeeded,
            Audience::Approvers,
            told,
            Some(format!(
                "the approval policy changed while it waited: it needs {} now, where it needed {}",
                r.requirement, retiered.previous
            )),
        )
    }

    /// Approves (`approve = true`) or denies a pending request.
    pub async fn review(
        &self,
        caller: Caller<'_>,
        id: RequestId,
        approve: bool,
        comment: Comment,
        totp: Option<String>,
    ) -> Result<Outcome, Error> {
        let mut stepped_up = None;
        let _reviewing = self.reviewing.lock(id).await;
        for _ in 0..CONFLICT_RETRIES {
            let now = now();
            let actor = caller.actor();
            let verdict = if approve { "approve" } else { "deny" };
            let mut r = self
                .load_as(
                    &caller,
                    id,
                    Code::ReviewRefused,
                    serde_json::json!({ "verdict": verdict }),
                )
                .await?;
            let refusal = Event::new(Code::ReviewRefused, actor.clone(), now)
                .for_request(&r)
                .details(serde_json::json!({ "verdict": verdict }));
            let Some(requester) = self.user(&r.requester).cloned() else {
                let e = Error::Forbidden(format!(
                    "requester {} is no longer in the directory; the request cannot be approved",
                    r.requester
                ));
                return Err(self.refused(refusal, e).await);
            };
            // Offboarding ends what is theirs; one cut short (a crash) is finished at start.
            if approve && self.offboarded(&requester.name) {
                let e = Error::Forbidden(format!(
                    "requester {} was offboarded: nothing of theirs can be approved (deny it, or end it with `warden revoke --user {} --all`)",
                    requester.name, requester.name
                ));
                return Err(self.refused(refusal, e).await);
            }
            if approve
                && r.state == State::Pending
                && let Some(original) = r.extends
                && let Some(state) = self.ended_original(original, now).await?
            {
                // The state of things, not the approver's rights, stands in the way.
                let e = Error::Conflict {
                    code: "grant_ended",
                    message: format!(
                        "request {id} extends grant {original}, which is {state}: it can only be denied or cancelled (ask for new access with `warden request create`)"
                    ),
                };
                return Err(self.refused(refusal, e).await);
            }
            let deciding = self.deciding().await;
            // Offboarded since this call passed authentication: an offboarding bars its user's
            // reviews under this gate ([`App::bar_reviewer`]), so a review is stored before it
            // or is refused here.
            if self.offboarded(&caller.user.name) {
                let e = Error::Forbidden(format!(
                    "{} was offboarded while this review was under way: it does not count",
                    caller.user.name
                ));
                return Err(self.refused(refusal, e).await);
            }
            // Likewise while an administrator changes the approver's credentials
            // ([`App::hold_approvals`]): an approval under way as that began may be of the old
            // ones, and what they approved is being withdrawn.
            if approve && self.resetting(&caller.user.name) {
                let e = Error::Forbidden(format!(
                    "an administrator is resetting {}'s password or second factor: an approval made as that goes on does not count, and what the old credentials approved is withdrawn; sign in again (`warden login`) and approve afresh in a moment",
                    caller.user.name
                ));
                return Err(self.refused(refusal, e).await);
            }
            // An administrator who set the approver's password knows it: an approval of their
            // own request signed in with it could be their own.
            if approve
                && r.state == State::Pending
                && self
                    .password_set_by(&caller.user.name, &r.requester)
                    .await?
            {
                let e = Error::Forbidden(format!(
                    "your password was last set by {}, who made this request, so your approval cannot count on it: another administrator can set you a new password",
                    r.requester
                ));
                return Err(self.refused(refusal, e).await);
            }
            let policy = &deciding.policy;
            // The policy may have changed since the request was made: a pending request it no
            // longer permits as made, or that no one left could approve, can only be denied,
            // under the tier it was made with (whose reviewers list it), or cancelled.
            let decision = if r.state == State::Pending {
                match self.permitted_as_made(policy, &requester, &r, now) {
                    Ok(d) => d,
                    Err(why) if approve => {
                        let e = Error::Forbidden(format!(
                            "{why}; unless that changes before its deadline ({}: a time window that opens, a reload), it can only be denied or cancelled, and its requester may make a new one",
                            warden_domain::rfc3339(r.pending_deadline)
                        ));
                        // The rules that refused it (a forbid's id), as data, as
                        // `request.refused` names them.
                        let rules = self
                            .decide_as_made(policy, &requester, &r, now)
                            .map(|d| d.rules)
                            .unwrap_or_default();
                        let refusal = refusal.details(serde_json::json!({
                            "verdict": verdict,
                            "rules": rules,
                        }));
                        return Err(self.refused(refusal, e).await);
                    }
                    Err(_) => Decision::deny(Vec::new()),
                }
            } else {
                // Refused for its state below, whatever policy says now.
                Decision::deny(Vec::new())
            };
            // A request past pending is refused for its state below, and an approval that
            // would not count (not eligible, reviewed already) here, with no code spent.
            if approve && decision.mfa && stepped_up.is_none() && r.state == State::Pending {
                let trial = r.clone().approve(
                    caller.user,
                    &requester,
                    decision.requirement.clone(),
                    &self.reviewers(),
                    comment.clone(),
                    now,
                );
                if let Err(e) = trial {
                    return Err(self.refused(refusal, e.into()).await);
                }
                match self
                    .step_up(&caller.user.name, totp.as_deref(), caller.source.as_deref())
                    .await
                {
                    Ok(true) => stepped_up = Some(()),
                    Ok(false) => {
                        let e = Error::Mfa("approving this role requires MFA step-up: pass a fresh TOTP code as `totp` (`--totp CODE` from the CLI)".into());
                        return Err(self.refused(refusal, e).await);
                    }
                    Err(e) => return Err(self.refused(refusal, e.into()).await),
                }
            }
            let mut events = Vec::new();
            let mut notices = Vec::new();
            if approve {
                // Recorded at least as policy says now, so a grant never escapes a recording
                // added after it was asked for; and granted under the rules that decide it now:
                // a tier a reload changed is on the record before the approval counted against it.
                let retiered = if r.state == State::Pending && decision.allowed {
                    self.retier(&requester, &mut r, &decision, now)
                } else {
                    None
                };
                let outcome = r.approve(
                    caller.user,
                    &requester,
                    decision.requirement.clone(),
                    &self.reviewers(),
                    comment.clone(),
                    now,
                );
                let outcome = match outcome {
                    Ok(o) => o,
                    Err(e) => return Err(self.refused(refusal, e.into()).await),
                };
                let missing = match &outcome {
                    Approved::Complete => Vec::new(),
                    Approved::Partial(p) => p.missing.clone(),
                };
                if let Some(retiered) = retiered {
                    if outcome == Approved::Complete {
                        events.push(retiered.untold());
                    } else {
                        notices = self.retier_notices(&r, &retiered, Some(&caller.user.name));
                        events.push(retiered.event);
                    }
                }
                events.push(
                    Event::new(Code::RequestReviewed, actor.clone(), now)
                        .for_request(&r)
                        .details(serde_json::json!({
                            "verdict": "approve",
                            "comment": comment.as_str(),
                            "tier": r.requirement.to_string(),
                            "still_needed": missing,
                        })),
                );
                if outcome == Approved::Complete {
                    events.push(
                        Event::new(Code::RequestApproved, actor.clone(), now)
                            .for_request(&r)
                            .details(serde_json::json!({
                                "tier": r.requirement.to_string(),
                                "rules": r.rules,
                                "rules_before": r.asked_under(),
                                "approvers": r.counted,
                            })),
                    );
                    let by = super::grant::Granter {
                        actor: actor.clone(),
                        is_requester: caller.user.name == r.requester,
                    };
                    match self.grant(deciding, r, events, true, by, now).await {
                        Err(Error::Store(warden_store::Error::Conflict)) => continue,
                        other => return other,
                    }
                }
            } else {
                let requirement = if decision.allowed {
                    decision.requirement.clone()
                } else {
                    r.requirement.clone()
                };
                if let Err(e) = r.deny(
                    caller.user,
                    &requester,
                    &requirement,
                    &self.reviewers(),
                    comment.clone(),
                    now,
                ) {
                    return Err(self.refused(refusal, e.into()).await);
                }
                events.push(
                    Event::new(Code::RequestDenied, actor.clone(), now)
                        .for_request(&r)
                        .details(serde_json::json!({
                            "comment": comment.as_str(),
                            "tier": requirement.to_string(),
                            "rules": if decision.allowed { &decision.rules } else { &r.rules },
                        })),
                );
                let why = (!comment.as_str().is_empty())
                    .then(|| format!("{}: {}", caller.user.name, comment.as_str()));
                notices = self.notices(&r, Kind::Denied, Audience::Requester, why);
            }
            let notified = !notices.is_empty();
            let change = Change {
                events,
                notices,
                ..Change::default()
            };
            match self.store.update_request(&r, change).await {
                Ok(v) => {
                    r.version = v;
                    self.wake.now();
                    self.outbox.notify_one();
                    return Ok(Outcome {
                        request: r,
                        secret: None,
                        notified,
                    });
                }
                Err(warden_store::Error::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Store(warden_store::Error::Conflict))
    }

    /// Withdraws the caller's own request before it is granted.
    pub async fn cancel(&self, caller: Caller<'_>, id: RequestId) -> Result<Request, Error> {
        for _ in 0..CONFLICT_RETRIES {
            // An issue under way finishes first: the request is then active (or ended), not
            // cancelled under a credential just made at its target.
            let _issuing = self.issuing.lock(id).await;
            let now = now();
            let mut r = self.load(&caller, id, "cancel").await?;
            if let Err(e) = r.cancel(&caller.user.name, now) {
                let ev = Event::new(Code::ActionRefused, caller.actor(), now)
                    .for_request(&r)
                    .details(serde_json::json!({"action": "cancel"}));
                return Err(self.refused(ev, e.into()).await);
            }
            let ev = Event::new(Code::RequestCancelled, caller.actor(), now).for_request(&r);
            match self.store.update_request(&r, vec![ev].into()).await {
                Ok(v) => {
                    r.version = v;
                    return Ok(r);
                }
                Err(warden_store::Error::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Store(warden_store::Error::Conflict))
    }
}

/// A pending request's change of tier ([`App::retier`]): its event, the tier before, and the
/// reviewers named now who were not before.
struct Retiered {
    event: Event,
    previous: String,
    newcomers: Vec<UserName>,
}

impl Retiered {
    /// The event of a change of tier that the request is granted under at once: no reviewer
    /// is told of it, as there is nothing left to review.
    fn untold(mut self) -> Event {
        if let Some(details) = self.event.details.as_object_mut() {
            details.insert("told".into(), serde_json::json!([]));
        }
        self.event
    }
}
