//! The request broker: drives requests through policy, approval and issuance.
//!
//! Each operation loads what it needs, asks the domain to make the transition, issues or
//! revokes credentials through the issuer for the target's kind, and stores the new state with
//! its audit events in one transaction. Every refusal is audited before it is returned.
//! Concurrent changes to one request are detected by its version and retried.

use std::sync::Arc;

use time::OffsetDateTime;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::request::{Ask, TransitionError};
use warden_domain::{
    Decision, Refusal, Request, RequestId, Requirement, RoleName, State, TargetName, Ticket, Ttl,
    User,
};
use warden_issuers::Secret;
use warden_policy::{Action, Context, LookupError, Policy};
use warden_store::Change;

use crate::auth::AuthError;
use crate::metrics;
use crate::state::{App, now};

mod create;
mod due;
mod end;
mod grant;
mod leases;
mod locks;
mod review;

pub(crate) use leases::makes_accounts;
pub use locks::Locks;
pub use review::{grant_met_requests_later, redecide_pending};

/// How many times an operation is retried when another writer changed the request first.
const CONFLICT_RETRIES: usize = 5;

/// Longest a target may take to issue or revoke a credential. One that hangs (a stopped
/// database) would otherwise hold up its caller, and a revocation pass every other target's
/// revocations with it; past this the attempt fails and is retried like any failure.
const TARGET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `call` to a target, or a failure once it has taken [`TARGET_TIMEOUT`].
pub(crate) async fn within_timeout<T>(
    call: impl std::future::Future<Output = Result<T, warden_issuers::Error>>,
) -> Result<T, warden_issuers::Error> {
    tokio::time::timeout(TARGET_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(warden_issuers::Error::Target(format!(
                "no answer within {} s",
                TARGET_TIMEOUT.as_secs()
            )))
        })
}

/// Why the broker refused or failed. Refusals leave all state unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Input { code: &'static str, message: String },
    /// Something named by the caller that does not exist (a key, a session).
    #[error("{message}")]
    Missing { code: &'static str, message: String },
    /// What the caller asks clashes with what is already there.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A target or role the policy does not define (`unknown_target`, `unknown_role`).
    #[error("{message}")]
    Unknown { code: &'static str, message: String },
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Transition(#[from] TransitionError),
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "request {0} not found, or not yours to see (a request is seen by those it concerns: its requester, the reviewers its tier names, administrators and audit readers, and while pending by whoever could approve it)"
    )]
    NotFound(RequestId),
    #[error("{0}")]
    Mfa(String),
    /// A TOTP code given for step-up was wrong.
    #[error("{0}")]
    MfaFailed(String),
    /// The user's password and code checks are locked after too many wrong ones in a row.
    #[error("{0}")]
    Locked(String),
    /// An issuer, the sealer or a target failed; the message says which and what.
    #[error("{0}")]
    Issuer(String),
    /// Request `request` was granted but its credential could not be issued, so it ended
    /// (revoked) before it was ever active: the caller who made or approved it learns its id.
    #[error("request {request}: {why}")]
    NotIssued { request: RequestId, why: String },
    #[error("{0}")]
    Postmortem(#[from] warden_domain::postmortem::PostmortemError),
    #[error("storage failure: {0}")]
    Store(#[from] warden_store::Error),
}

impl Error {
    /// A target an administrator named that the policy does not define: they add targets in
    /// the policy directory, not through `warden targets`, which lists what they may request.
    pub fn not_in_policy(target: &TargetName) -> Self {
        Self::unknown_target(format!(
            "unknown target {target}: targets.toml in the policy directory defines them"
        ))
    }

    pub fn unknown_target(message: String) -> Self {
        Error::Unknown {
            code: "unknown_target",
            message,
        }
    }

    pub fn unknown_role(message: String) -> Self {
        Error::Unknown {
            code: "unknown_role",
            message,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Input { code, .. }
            | Error::Missing { code, .. }
            | Error::Conflict { code, .. }
            | Error::Unknown { code, .. } => code,
            Error::Refused(r) => r.code(),
            Error::Transition(t) => t.code(),
            Error::Forbidden(_) => "not_permitted",
            Error::NotFound(_) => "not_found",
            Error::Mfa(_) => "mfa_required",
            Error::MfaFailed(_) => "mfa_failed",
            Error::Locked(_) => "locked",
            Error::Issuer(_) | Error::NotIssued { .. } => "issuer_failed",
            Error::Postmortem(p) => p.code(),
            Error::Store(warden_store::Error::Conflict) => "changed_concurrently",
            Error::Store(warden_store::Error::Full(_)) => "storage_full",
            Error::Store(_) => "storage_unavailable",
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(s) => Error::Store(s),
            AuthError::WrongCode(m) => Error::MfaFailed(m),
            locked @ AuthError::Locked(_) => Error::Locked(format!(
                "{locked}: wait until then, or ask an administrator (another one, if you are one) to lift the lock (`warden user unlock NAME`)"
            )),
            other => Error::Mfa(other.to_string()),
        }
    }
}

/// What a requester asks for.
#[derive(Debug, Clone)]
pub struct Create {
    pub ask: Ask,
    pub public_key: Option<String>,
    /// A TOTP code, for roles that demand MFA step-up.
    pub totp: Option<String>,
}

/// A request together with the secret parts of its credential, present only in the response
/// to the call that issued it.
#[derive(Debug)]
pub struct Outcome {
    pub request: Request,
    pub secret: Option<Secret<serde_json::Value>>,
    /// Whether the change queued a notification that reaches someone (for a break-glass
    /// grant: someone in security but the one who broke the glass).
    pub notified: bool,
}

/// What stands for a request now ([`App::standing`]): the approval it needs and the rules that
/// demand it, and why no one may approve it any more, where that is so.
#[derive(Debug)]
pub struct Standing {
    pub requirement: Requirement,
    pub rules: Vec<String>,
    pub unapprovable: Option<String>,
}

/// Who is calling, for audit events.
#[derive(Debug, Clone)]
pub struct Caller<'a> {
    pub user: &'a User,
    pub source: Option<String>,
}

impl Caller<'_> {
    pub(crate) fn actor(&self) -> Actor {
        Actor::user(self.user.name.clone(), self.source.clone())
    }
}

fn context(now: OffsetDateTime, ttl: Ttl, ticket: Option<&Ticket>) -> Context {
    Context {
        now,
        ttl,
        ticket: ticket.cloned(),
    }
}

/// What the audit log says of a decision: the rules that made it and, for a permit, its terms;
/// a break-glass permit's tier is `breakglass`, as its request's is everywhere else.
fn decision_details(d: &Decision, breakglass: bool) -> serde_json::Value {
    // A refusal by policy has no terms: the rules that refused are all there is to say.
    if !d.allowed {
        return serde_json::json!({ "rules": d.rules });
    }
    serde_json::json!({
        "rules": d.rules,
        "tier": if breakglass { "breakglass".to_owned() } else { d.requirement.to_string() },
        "max_ttl": d.max_ttl.to_string(),
        "mfa": d.mfa,
        "recording": d.recording.to_string(),
    })
}

/// The most requests of one requester at one target [`App::same_access`] reads.
const SAME_ACCESS_MAX: usize = 1000;

impl App {
    /// The requests in `states` of `r`'s requester at `r`'s target, newest first: where the
    /// extensions of a grant, and the grants an extension continues, are found.
    async fn same_access(&self, r: &Request, states: Vec<State>) -> Result<Vec<Request>, Error> {
        Ok(self
            .store
            .requests(warden_store::RequestFilter {
                requester: Some(r.requester.clone()),
                target: Some(r.target.clone()),
                states,
                before: None,
                limit: SAME_ACCESS_MAX,
            })
            .await?)
    }

    /// Appends a refusal event and hands the error back, so refusals cannot go unaudited.
    pub(crate) async fn refused(&self, event: Event, err: Error) -> Error {
        // Refused as timed out before the worker recorded it so: it does so now.
        if let Error::Transition(TransitionError::Overdue { .. }) = err {
            self.wake.now();
        }
        // Input that does not parse or validate is recorded by its length alone, as the API's
        // is (`ApiError::invalid`), and so is a ticket policy refused (`Refusal::recorded`).
        let reason = match &err {
            Error::Input { message, .. } => warden_domain::text::unquoted(message),
            Error::Refused(r) => r.recorded(),
            other => other.to_string(),
        };
        let event = event.denied(err.code(), reason);
        match self.store.append(vec![event]).await {
            Ok(()) => err,
            // Fail closed: the caller learns the refusal could not be recorded.
            Err(e) => Error::Store(e),
        }
    }

    fn decide(
        &self,
        policy: &Policy,
        action: Action,
        user: &User,
        target: &TargetName,
        role: &RoleName,
        ctx: &Context,
    ) -> Result<Decision, Error> {
        // Without the policy's lists of names: a caller learns of the targets and roles they
        // may request from `warden targets`, not of every other one from a typo.
        policy
            .decide(action, user, target, role, ctx)
            .map_err(|e| {
                match e {
                    LookupError::UnknownTarget { target, .. } => Error::unknown_target(format!(
                        "unknown target {target}: `warden targets` lists the ones you may request"
                    )),
                    LookupError::UnknownRole { target, role, .. } => Error::unknown_role(format!(
                        "target `{target}` has no role `{role}`: `warden targets` lists what you may request"
                    )),
                }
            })
    }

    /// Stores `r`: inserts it when `stored` is false, else saves it over its stored version.
    async fn save(&self, r: &mut Request, stored: &mut bool, change: Change) -> Result<(), Error> {
        if *stored {
            r.version = self.store.update_request(r, change).await?;
        } else {
            self.insert(r, change).await?;
            *stored = true;
        }
        Ok(())
    }

    /// Stores a new request and counts it.
    async fn insert(&self, r: &Request, change: Change) -> Result<(), Error> {
        self.store.insert_request(r, change).await?;
        self.metrics.add(&metrics::REQUESTS_CREATED, &[r.tier()], 1);
        Ok(())
    }

    /// Loads request `id` for `caller`, who means to `action` it. One that is missing and one
    /// the caller may not see are refused alike, as not found (audited as
    /// `request.action_refused` naming the action), so no call reveals whether an id exists or
    /// what state it is in.
    async fn load(
        &self,
        caller: &Caller<'_>,
        id: RequestId,
        action: &str,
    ) -> Result<Request, Error> {
        let details = serde_json::json!({ "action": action });
        self.load_as(caller, id, Code::ActionRefused, details).await
    }

    /// [`App::load`] with the refusal's `code` and `details` given: a review's have their own.
    async fn load_as(
        &self,
        caller: &Caller<'_>,
        id: RequestId,
        code: Code,
        details: serde_json::Value,
    ) -> Result<Request, Error> {
        let found = self.store.request(id).await?;
        match found.filter(|r| self.may_view(caller.user, r)) {
            Some(r) => Ok(r),
            None => {
                let mut e = Event::new(code, caller.actor(), now()).details(details);
                e.request_id = Some(id);
                Err(self.refused(e, Error::NotFound(id)).await)
            }
        }
    }

    /// Whether `user` may see request `r`: whom it concerns ([`App::concerns`]) and, while it
    /// is pending, anyone whose approval could count, to read what they are asked to approve
    /// (a two-person tier's second approver may be anyone: they see it by id, never listed).
    pub fn may_view(&self, user: &User, r: &Request) -> bool {
        self.involves(user, r)
            || self.user(&r.requester).is_some_and(|req| {
                let tier = self.requirement_now(r);
                tier.names_reviewer(req, user)
                    || (r.state == State::Pending && tier.may_review(req, user))
            })
    }

    /// Whether request `r` concerns `user`, who then finds it in lists: its requester,
    /// administrators and audit readers, whoever reviewed it, security for break-glass, and the
    /// reviewers its tier names (its groups' members, the requester's manager).
    pub fn concerns(&self, user: &User, r: &Request) -> bool {
        self.involves(user, r)
            || self
                .user(&r.requester)
                .is_some_and(|req| self.requirement_now(r).names_reviewer(req, user))
    }

    /// Whether `user` has a part in request `r` whatever its tier: its requester,
    /// administrators and audit readers, whoever reviewed it, and for break-glass the security
    /// group, who are told of each and may end it.
    fn involves(&self, user: &User, r: &Request) -> bool {
        user.name == r.requester
            || self.may_read_audit(user)
            || (r.breakglass.is_some() && user.in_group(&self.config.security_group))
            || r.reviews.iter().any(|v| v.reviewer.name == user.name)
    }

    /// Whether pending request `r` waits for `user`'s review now: their approval, under a policy
    /// that still permits it as made ([`Request::awaits`]), or, under one that no longer does,
    /// their deny ([`Request::may_deny`]), lest it be left to wait out its time unseen.
    pub fn awaits(&self, user: &User, r: &Request) -> bool {
        match (self.user(&r.requester), self.as_made_now(r)) {
            (Some(req), Some(Ok(d))) => r.awaits(req, &d.requirement, &self.reviewers(), user),
            // No one may approve it any more: it awaits a deny, or waits out its time.
            (Some(req), Some(Err(_))) => r.may_deny(req, &r.requirement, user),
            _ => false,
        }
    }

    /// The approval `r` needs: for a pending request policy still permits as made, what it
    /// demands at this moment (a reload or a restart with other groups may have changed it
    /// since it was made, and approvals are counted against it); for any other, the one it was
    /// last decided under.
    pub fn requirement_now(&self, r: &Request) -> Requirement {
        self.standing(r).requirement
    }

    /// [`App::requirement_now`] of pending request `r` with the rules that demand it, and why no
    /// one may approve it any more where that is so (its requester left the directory, policy
    /// no longer permits it as made, or no one left in the directory could give the approval:
    /// it can then only be denied or cancelled, or wait out its time). One decision for all.
    pub fn standing(&self, r: &Request) -> Standing {
        let stored = |unapprovable| Standing {
            requirement: r.requirement.clone(),
            rules: r.rules.clone(),
            unapprovable,
        };
        match self.as_made_now(r) {
            Some(Ok(d)) => Standing {
                requirement: d.requirement,
                rules: d.rules,
                unapprovable: None,
            },
            Some(Err(why)) => stored(Some(why)),
            None => stored(None),
        }
    }

    /// What policy decides now of pending request `r` (`None` for any other): the decision,
    /// where it still permits the request as made (its TTL, its ticket, and MFA step-up only if
    /// the requester made one), else why not.
    fn as_made_now(&self, r: &Request) -> Option<Result<Decision, String>> {
        if r.state != State::Pending || r.breakglass.is_some() {
            return None;
        }
        let Some(requester) = self.user(&r.requester) else {
            return Some(Err(format!(
                "requester {} is no longer in the directory",
                r.requester
            )));
        };
        Some(self.permitted_as_made(&self.policy.load(), requester, r, now()))
    }

    /// What `policy` decides, at `now`, of pending request `r` by `requester`, where it still
    /// permits the request as made (its target and role, its TTL and ticket, and MFA step-up
    /// only if the requester made one: an approver's code proves nothing of who asked) and
    /// someone left in the directory could give the approval it needs (offboarding, a new
    /// directory at restart); else why not, in words about that request.
    fn permitted_as_made(
        &self,
        policy: &Policy,
        requester: &User,
        r: &Request,
        now: OffsetDateTime,
    ) -> Result<Decision, String> {
        let d = self
            .decide_as_made(policy, requester, r, now)
            .and_then(|d| match d.check(r.ttl, r.ticket.as_ref(), r.stepped_up) {
                Ok(()) => Ok(d),
                Err(refusal) => Err(refusal.of_request_made()),
            })
            .map_err(|why| format!("policy no longer permits this request as made ({why})"))?;
        self.approvable(&d, requester)
            .map_err(|refusal| refusal.to_string())?;
        Ok(d)
    }

    /// What `policy` decides, at `now`, of request `r` by `requester` as it was made (its
    /// target, role, TTL and ticket); else, in words about that request, which of its target
    /// and role the policy no longer defines.
    fn decide_as_made(
        &self,
        policy: &Policy,
        requester: &User,
        r: &Request,
        now: OffsetDateTime,
    ) -> Result<Decision, String> {
        let ctx = context(now, r.ttl, r.ticket.as_ref());
        policy
            .decide(Action::Request, requester, &r.target, &r.role, &ctx)
            .map_err(|e| match e {
                LookupError::UnknownTarget { target, .. } => {
                    format!("policy no longer defines target `{target}`")
                }
                LookupError::UnknownRole { target, role, .. } => {
                    format!("target `{target}` no longer has role `{role}`")
                }
            })
    }

    /// How the approvals of pending request `r` stand under `requirement`, counting them as
    /// the directory has their givers now; of one approved since, as they stood then
    /// ([`Request::review_standing`]).
    pub fn review_standing(
        &self,
        r: &Request,
        requirement: &Requirement,
    ) -> warden_domain::request::ReviewStanding {
        self.user(&r.requester)
            .map(|req| r.review_standing(req, requirement, &self.reviewers()))
            .unwrap_or_default()
    }

    /// Reads one request, if the caller may see it.
    pub async fn show(&self, caller: Caller<'_>, id: RequestId) -> Result<Request, Error> {
        self.load(&caller, id, "show").await
    }

    /// The decision policy would make for `user` now, whether the given request details would
    /// pass it (MFA aside), and the time as the rules read it ([`Policy::now_seen_by_rules`]).
    pub async fn explain(
        &self,
        action: Action,
        user: &User,
        target: &TargetName,
        role: &RoleName,
        ttl: Ttl,
        ticket: Option<&Ticket>,
    ) -> Result<(Decision, Vec<Refusal>, Option<String>), Error> {
        let policy = self.policy.load_full();
        let at = now();
        let d = self.decide(
            &policy,
            action,
            user,
            target,
            role,
            &context(at, ttl, ticket),
        )?;
        let breakglass = action == warden_policy::Action::Breakglass;
        let mut refusals: Vec<Refusal> = d
            .refusals(ttl, ticket, true)
            .into_iter()
            .map(|r| r.in_flow(breakglass, false))
            .collect();
        if d.allowed
            && let Err(none) = self.approvable(&d, user)
        {
            refusals.push(none);
        }
        // A code is asked for at the request itself; one that could never come is said now.
        if d.allowed && d.mfa && !self.mfa_enrolled(&user.name).await? {
            refusals.push(Refusal::NoSecondFactor);
        }
        Ok((d, refusals, policy.now_seen_by_rules(target, at)))
    }

    /// Whether someone in the directory could give the approval `decision` requires of a
    /// request by `requester` ([`Decision::approvable`]); an automatic grant needs no one.
    pub fn approvable(&self, decision: &Decision, requester: &User) -> Result<(), Refusal> {
        if decision.requirement.is_auto() {
            return Ok(());
        }
        // Offboarded users can give no approval (their earlier ones do not count either).
        decision.approvable(requester, self.reviewers().users())
    }

    /// Every target and role with what policy says about `user` asking for it now, through
    /// `action`. Evaluated with the shortest TTL and no ticket; the decision's settings say what
    /// a real request must bring.
    pub fn options(
        &self,
        action: Action,
        user: &User,
    ) -> (Arc<Policy>, Vec<(TargetName, RoleName, Decision)>) {
        let policy = self.policy.load_full();
        let mut out = Vec::new();
        for (_, t) in policy.targets().iter() {
            for role in t.roles.keys() {
                if let Ok(d) = self.decide(
                    &policy,
                    action,
                    user,
                    &t.name,
                    role,
                    &context(now(), Ttl::MIN, None),
                ) {
                    out.push((t.name.clone(), role.clone(), d));
                }
            }
        }
        (policy, out)
    }
}
