//! The request broker: drives requests through policy, approval and issuance.
//!
//! Each operation loads what it needs, asks the domain to make the transition, issues or
//! revokes credentials through the issuer for the target's kind, and stores the new state with
//! its audit events in one transaction. Every refusal is audited before it is returned.
//! Concurrent changes to one request are detected by its version and retried.

use std::sync::Arc;

use std::str::FromStr;

use futures_util::StreamExt;
use time::OffsetDateTime;
use uuid::Uuid;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::notice::Kind;
use warden_domain::request::{Approved, Ask, TransitionError};
use warden_domain::{
    Audience, BreakGlass, Comment, Decision, Lease, LeaseState, Postmortem, Reason, Refusal,
    Request, RequestId, RoleName, State, TargetName, Ticket, Ttl, User,
};

use warden_issuers::{
    AdminCredential, IssueRequest, ListRequest, RevokeRequest, RevokeResponse, Secret,
};
use warden_policy::{Action, Context, Policy};
use warden_store::Change;

use crate::auth::AuthError;
use crate::metrics;
use crate::state::{App, new_request_id, now};

/// Revocations run at once against targets, at most.
const LEASE_CONCURRENCY: usize = 32;

/// How many times an operation is retried when another writer changed the request first.
const CONFLICT_RETRIES: usize = 5;

/// Why the broker refused or failed. Refusals leave all state unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Input { code: &'static str, message: String },
    #[error("{0}")]
    Unknown(String),
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Transition(#[from] TransitionError),
    #[error("{0}")]
    Forbidden(String),
    #[error("request {0} not found")]
    NotFound(RequestId),
    #[error("{0}")]
    Mfa(String),
    #[error("the credential could not be issued or revoked: {0}")]
    Issuer(String),
    #[error("{0}")]
    Postmortem(#[from] warden_domain::postmortem::PostmortemError),
    #[error("storage failure: {0}")]
    Store(#[from] warden_store::Error),
}

impl Error {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Input { code, .. } => code,
            Error::Unknown(_) => "unknown_target",
            Error::Refused(r) => r.code(),
            Error::Transition(t) => t.code(),
            Error::Forbidden(_) => "not_permitted",
            Error::NotFound(_) => "not_found",
            Error::Mfa(_) => "mfa_required",
            Error::Issuer(_) => "issuer_failed",
            Error::Postmortem(p) => p.code(),
            Error::Store(_) => "storage_unavailable",
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Store(s) => Error::Store(s),
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

/// Most times open requests are looked for when all of a user's must end (offboarding, users
/// gone from the directory): each look ends what it finds, and only a request that was
/// already on its way can appear after the first.
const END_ALL_LOOKS: usize = 5;

fn context(now: OffsetDateTime, ttl: Ttl, ticket: Option<&Ticket>) -> Context {
    Context {
        now,
        ttl,
        ticket: ticket.cloned(),
    }
}

fn decision_details(d: &Decision) -> serde_json::Value {
    serde_json::json!({
        "rules": d.rules,
        "tier": d.requirement.to_string(),
        "max_ttl": d.max_ttl.to_string(),
        "mfa": d.mfa,
        "recording": d.recording.to_string(),
    })
}

impl App {
    /// Appends a refusal event and hands the error back, so refusals cannot go unaudited.
    pub(crate) async fn refused(&self, event: Event, err: Error) -> Error {
        let event = event.denied(err.code(), err.to_string());
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
        policy
            .decide(action, user, target, role, ctx)
            .map_err(|e| Error::Unknown(e.to_string()))
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
        self.metrics
            .add(&metrics::REQUESTS_CREATED, &[r.requirement.tier()], 1);
        Ok(())
    }

    /// Counts a grant's issue (or its failure) once stored. The approval, if one was needed,
    /// was stored with it.
    fn issued(&self, r: &Request, kind: &str, ok: bool, approved: OffsetDateTime) {
        let tier = r.requirement.tier();
        let since = |t: OffsetDateTime| (t - r.created_at).as_seconds_f64().max(0.0);
        if !r.requirement.is_auto() {
            self.metrics
                .observe(&metrics::APPROVAL_LATENCY, &[tier], since(approved));
        }
        if ok {
            self.metrics.add(&metrics::ISSUED, &[kind], 1);
            // The clock now, not the approval's instant: issuing takes time too.
            self.metrics
                .observe(&metrics::TIME_TO_GRANT, &[tier], since(now()));
        } else {
            self.metrics.add(&metrics::ISSUE_FAILURES, &[kind], 1);
        }
    }

    /// Issues the credential for an approved request and activates the grant, storing every
    /// step with `events`. For issuers that create accounts the lease's intent, naming the
    /// account, is stored *before* the target is touched, so a crash at any instant leaves a
    /// lease to clean up and never an unknown account. The secret goes back to `caller` if they
    /// are the requester, and is otherwise sealed for the requester's one pickup.
    async fn grant(
        &self,
        policy: &Policy,
        mut r: Request,
        mut events: Vec<Event>,
        mut stored: bool,
        caller: &Caller<'_>,
        now: OffsetDateTime,
    ) -> Result<Outcome, Error> {
        let actor = caller.actor();
        let target = policy.targets().get(&r.target).ok_or_else(|| {
            Error::Unknown(format!("target {} is no longer in the policy", r.target))
        })?;
        let role = target.roles.get(&r.role).ok_or_else(|| {
            Error::Unknown(format!(
                "role {} is no longer defined for {}",
                r.role, r.target
            ))
        })?;
        let issuer = self
            .issuers
            .get(&target.kind)
            .ok_or_else(|| Error::Issuer(format!("no issuer for target kind {:?}", target.kind)))?;
        let valid_before = now + r.ttl.as_duration();
        let mut lease = None;
        let mut admin = None;
        let password = issuer.account_name(r.id, &r.requester).map(|account| {
            lease = Some(Lease::intent(
                r.id,
                r.requester.clone(),
                r.target.clone(),
                r.role.clone(),
                account,
                valid_before,
                now,
            ));
            Secret::new(crate::auth::random_password())
        });
        if lease.is_some() {
            admin = self.admin_credential(&r.target).await?;
            let change = Change {
                lease: lease.clone(),
                events: std::mem::take(&mut events),
                ..Change::default()
            };
            self.save(&mut r, &mut stored, change).await?;
        }
        let issued = issuer
            .issue(IssueRequest {
                grant: r.id,
                user: &r.requester,
                target: &r.target,
                role: &r.role,
                connection: &target.connection,
                settings: &role.settings,
                valid_after: now,
                valid_before,
                public_key: r.public_key.as_deref(),
                account: lease.as_ref().map(|l| l.account.as_str()),
                password: password.as_ref(),
                admin: admin.as_ref(),
            })
            .await;
        let issued = match issued {
            Ok(i) => i,
            Err(e) => {
                events.push(
                    Event::new(Code::CredentialIssueFailed, Actor::system(), now)
                        .for_request(&r)
                        .failed("issuer_failed", e.to_string()),
                );
                let why = format!("the credential could not be issued: {e}");
                r.end_unissued(why.clone(), now)?;
                if let Some(l) = lease.as_mut() {
                    // Anything half-made at the target is removed by the lease worker.
                    l.start_revoking(now);
                }
                // Security hears of every failed emergency; a requester who is not the caller
                // (their request was just approved) would otherwise never learn it failed.
                let told = [
                    (Audience::Security, r.breakglass.is_some()),
                    (Audience::Requester, caller.user.name != r.requester),
                ];
                let notices: Vec<_> = told
                    .into_iter()
                    .filter(|(_, tell)| *tell)
                    .flat_map(|(audience, _)| {
                        self.notices(&r, Kind::IssueFailed, audience, Some(why.clone()))
                    })
                    .collect();
                let notify = !notices.is_empty();
                self.save(
                    &mut r,
                    &mut stored,
                    Change {
                        lease,
                        events,
                        notices,
                        ..Change::default()
                    },
                )
                .await?;
                self.issued(&r, &target.kind, false, now);
                self.wake.now();
                if notify {
                    self.outbox.notify_one();
                }
                return Err(Error::Issuer(e.to_string()));
            }
        };
        let mut public_facts = issued.public.clone();
        if let Some(obj) = public_facts.as_object_mut() {
            // The certificate itself is public but long; the audit log keeps its identifiers.
            obj.remove("certificate");
        }
        r.activate(Some(issued.public), now)?;
        r.warn_before(self.config.expiry_warning);
        if let Some(l) = lease.as_mut() {
            l.activate(valid_before);
        }
        events.push(
            Event::new(Code::CredentialIssued, actor.clone(), now)
                .for_request(&r)
                .details(public_facts),
        );
        events.push(
            Event::new(Code::GrantActivated, actor.clone(), now)
                .for_request(&r)
                .details(serde_json::json!({ "expires_at": valid_before.unix_timestamp(), "kind": target.kind })),
        );
        let mut postmortem = None;
        let mut notices = Vec::new();
        if let Some(bg) = r.breakglass {
            events.push(
                Event::new(Code::BreakGlassActivated, actor.clone(), now)
                    .for_request(&r)
                    .details(serde_json::json!({
                        "drill": bg.drill,
                        "reason": r.reason.as_str(),
                        "ticket": r.ticket.as_ref().map(|t| t.as_str()),
                        "ttl": r.ttl.to_string(),
                        "recording": r.recording.to_string(),
                        "expires_at": valid_before.unix_timestamp(),
                    })),
            );
            events.push(
                Event::new(Code::PostmortemOpened, Actor::system(), now)
                    .for_request(&r)
                    .details(serde_json::json!({ "drill": bg.drill })),
            );
            postmortem = Some(Postmortem::open(&r, bg.drill, now));
            notices = self.notices(&r, Kind::BreakGlass, Audience::Security, None);
        } else if caller.user.name != r.requester {
            notices = self.notices(&r, Kind::Approved, Audience::Requester, None);
        }
        let (secret, pickup) = match issued.secret {
            Some(secret) if caller.user.name != r.requester => {
                let sealed = serde_json::to_vec(secret.expose())
                    .map_err(|e| Error::Issuer(e.to_string()))
                    .and_then(|b| {
                        self.sealer
                            .seal(&b)
                            .map_err(|e| Error::Issuer(e.to_string()))
                    })?;
                (None, Some(sealed))
            }
            other => (other, None),
        };
        let deadline = r
            .due_at()
            .into_iter()
            .chain(lease.as_ref().and_then(|l| l.due_at))
            .min();
        let notify = !notices.is_empty();
        self.save(
            &mut r,
            &mut stored,
            Change {
                lease,
                pickup,
                postmortem,
                events,
                notices,
            },
        )
        .await?;
        self.issued(&r, &target.kind, true, now);
        self.wake.by(deadline);
        if notify {
            self.outbox.notify_one();
        }
        Ok(Outcome { request: r, secret })
    }

    /// A target's admin credential from the vault.
    pub async fn admin_credential(
        &self,
        target: &TargetName,
    ) -> Result<Option<AdminCredential>, Error> {
        let Some(sealed) = self.store.target_credential(target).await? else {
            return Ok(None);
        };
        let plain = self.sealer.open(&sealed).map_err(|e| {
            Error::Issuer(format!(
                "the stored credential for {target} does not open: {e}"
            ))
        })?;
        let (current, next) = crate::vault::parse_credential(&plain)?;
        if next.is_some() {
            tracing::warn!(%target, "a root rotation was interrupted; run `warden target rotate-root` again");
        }
        Ok(Some(current))
    }

    /// Hands the requester the secret of their credential, once.
    pub async fn pickup(
        &self,
        caller: Caller<'_>,
        id: RequestId,
    ) -> Result<serde_json::Value, Error> {
        let r = self.load(&caller, id, Code::ActionRefused).await?;
        if r.requester != caller.user.name {
            let ev = Event::new(Code::ActionRefused, caller.actor(), now())
                .for_request(&r)
                .details(serde_json::json!({"action": "pickup"}));
            return Err(self
                .refused(
                    ev,
                    TransitionError::NotRequester("pick up the credential of").into(),
                )
                .await);
        }
        let ev = Event::new(Code::CredentialPickedUp, caller.actor(), now()).for_request(&r);
        let Some(sealed) = self.store.take_pickup(id, vec![ev]).await? else {
            return Err(Error::Input {
                code: "already_picked_up",
                message: format!(
                    "the credential of {id} was already handed over (it is shown once) or needs none"
                ),
            });
        };
        let plain = self
            .sealer
            .open(&sealed)
            .map_err(|e| Error::Issuer(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| Error::Issuer(e.to_string()))
    }

    /// Offboarding: revokes `user`'s API tokens, then ends every pending, approved and active
    /// request of theirs. Returns how many requests were ended.
    ///
    /// Tokens first, so that the user can start nothing while their requests are being ended;
    /// a request already on its way when the tokens went is caught by the next look, which is
    /// repeated until one finds nothing open.
    pub async fn offboard(
        &self,
        caller: Caller<'_>,
        user: &warden_domain::UserName,
    ) -> Result<usize, Error> {
        if !self.is_admin(caller.user) {
            return Err(Error::Forbidden(
                "only administrators can offboard users".into(),
            ));
        }
        let at = now();
        // Before the store's revocation, so that no lookup racing it caches a token live.
        self.tokens.forget_user(user, at);
        let ev = Event::new(Code::UserOffboarded, caller.actor(), at)
            .details(serde_json::json!({ "user": user }));
        let tokens = self.store.revoke_user_tokens(user, vec![ev]).await?;
        let ended = self
            .end_all(Some(user), |_| true, caller.actor(), "offboarded")
            .await?;
        tracing::info!(%user, ended, tokens, "user offboarded");
        Ok(ended)
    }

    /// Creates a request; an `auto` tier grants it at once.
    pub async fn create(
        &self,
        caller: Caller<'_>,
        input: Create,
        extends: Option<RequestId>,
    ) -> Result<Outcome, Error> {
        self.start(caller, input, extends, None).await
    }

    /// Breaks the glass: decided by the break-glass rules alone, always after MFA step-up (a
    /// user without a second factor is refused), granted at once and recorded in full; the
    /// grant notifies security and opens a postmortem. A drill takes the same path, flagged.
    pub async fn breakglass(
        &self,
        caller: Caller<'_>,
        input: Create,
        drill: bool,
    ) -> Result<Outcome, Error> {
        self.start(caller, input, None, Some(BreakGlass { drill }))
            .await
    }

    /// Creates a request, or a break-glass grant with `breakglass`.
    async fn start(
        &self,
        caller: Caller<'_>,
        input: Create,
        extends: Option<RequestId>,
        breakglass: Option<BreakGlass>,
    ) -> Result<Outcome, Error> {
        let (id, now) = new_request_id();
        let actor = caller.actor();
        let (action, refused_code) = match breakglass {
            Some(_) => (Action::Breakglass, Code::BreakGlassRefused),
            None => (Action::Request, Code::RequestRefused),
        };
        let Create {
            ask,
            public_key,
            totp,
        } = input;
        let refusal = |extra: serde_json::Value| {
            let mut e = Event::new(refused_code, actor.clone(), now);
            e.target = Some(ask.target.clone());
            e.role = Some(ask.role.clone());
            e.details = extra;
            e
        };
        let policy = self.policy.load_full();
        let decision = match self.decide(
            &policy,
            action,
            caller.user,
            &ask.target,
            &ask.role,
            &context(now, ask.ttl, ask.ticket.as_ref()),
        ) {
            Ok(d) => d,
            Err(e) => return Err(self.refused(refusal(serde_json::Value::Null), e).await),
        };
        if breakglass.is_some()
            && decision.allowed
            && totp.is_none()
            && !self.mfa_enrolled(&caller.user.name).await?
        {
            let e = Error::Mfa(
                "break-glass requires MFA step-up, and you have no second factor: enrol one with `warden mfa enroll` now, before an emergency".into(),
            );
            return Err(self.refused(refusal(decision_details(&decision)), e).await);
        }
        // Refuse what no second factor can fix (TTL, ticket) before spending the caller's code:
        // a one-time code used up by a request refused for its ticket would make them wait
        // for the next one.
        if let Err(refusal_reason) = decision.check(ask.ttl, ask.ticket.as_ref(), true) {
            return Err(self
                .refused(refusal(decision_details(&decision)), refusal_reason.into())
                .await);
        }
        let mfa = if decision.mfa && decision.allowed {
            match self.step_up(&caller.user.name, totp.as_deref()).await {
                Ok(ok) => ok,
                Err(e) => {
                    return Err(self
                        .refused(refusal(decision_details(&decision)), e.into())
                        .await);
                }
            }
        } else {
            false
        };
        if let Err(refusal_reason) = decision.check(ask.ttl, ask.ticket.as_ref(), mfa) {
            return Err(self
                .refused(refusal(decision_details(&decision)), refusal_reason.into())
                .await);
        }
        let Some((kind, settings)) = policy.targets().get(&ask.target).and_then(|t| {
            t.roles
                .get(&ask.role)
                .map(|r| (t.kind.clone(), r.settings.clone()))
        }) else {
            return Err(Error::Unknown(format!(
                "unknown target {} or role {}",
                ask.target, ask.role
            )));
        };
        let checked = match self.issuers.get(&kind) {
            Some(i) => i
                .check_request(&settings, public_key.as_deref())
                .map_err(|e| Error::Input {
                    code: "bad_credential_input",
                    message: e.to_string(),
                }),
            None => Err(Error::Issuer(format!("no issuer for target kind {kind:?}"))),
        };
        if let Err(e) = checked {
            return Err(self.refused(refusal(decision_details(&decision)), e).await);
        }

        let mut r = Request::new(
            id,
            caller.user.name.clone(),
            ask,
            &decision,
            public_key,
            extends,
            now,
        );
        r.breakglass = breakglass;
        let mut details = decision_details(&decision);
        if let Some(obj) = details.as_object_mut() {
            obj.insert("reason".into(), r.reason.as_str().into());
            obj.insert(
                "ticket".into(),
                r.ticket.as_ref().map(|t| t.as_str()).into(),
            );
            obj.insert("ttl".into(), r.ttl.to_string().into());
            obj.insert("extends".into(), extends.map(|e| e.to_string()).into());
            if let Some(bg) = breakglass {
                obj.insert(
                    "breakglass".into(),
                    serde_json::json!({ "drill": bg.drill }),
                );
            }
        }
        let mut events = vec![
            Event::new(Code::RequestCreated, actor.clone(), now)
                .for_request(&r)
                .details(details),
        ];
        if r.requirement.is_auto() {
            r.approve_automatically()?;
            events.push(
                Event::new(Code::RequestApproved, Actor::system(), now)
                    .for_request(&r)
                    .details(serde_json::json!({
                        "tier": if breakglass.is_some() { "breakglass" } else { "auto" },
                        "rules": r.rules,
                    })),
            );
            return self.grant(&policy, r, events, false, &caller, now).await;
        }
        let notices = self.notices(&r, Kind::ApprovalNeeded, Audience::Approvers, None);
        self.insert(
            &r,
            Change {
                events,
                notices,
                ..Change::default()
            },
        )
        .await?;
        self.wake.by(r.due_at());
        self.outbox.notify_one();
        Ok(Outcome {
            request: r,
            secret: None,
        })
    }

    async fn load(&self, caller: &Caller<'_>, id: RequestId, code: Code) -> Result<Request, Error> {
        match self.store.request(id).await? {
            Some(r) => Ok(r),
            None => {
                let mut e = Event::new(code, caller.actor(), now());
                e.request_id = Some(id);
                Err(self.refused(e, Error::NotFound(id)).await)
            }
        }
    }

    /// Whether `user` may see request `r`: the requester, administrators and audit readers,
    /// and anyone who may review it.
    pub fn may_view(&self, user: &User, r: &Request) -> bool {
        user.name == r.requester
            || self.may_read_audit(user)
            || self
                .user(&r.requester)
                .is_some_and(|req| r.requirement.may_review(req, user))
    }

    /// Reads one request, if the caller may see it.
    pub async fn show(&self, caller: Caller<'_>, id: RequestId) -> Result<Request, Error> {
        let r = self.load(&caller, id, Code::ActionRefused).await?;
        if self.may_view(caller.user, &r) {
            Ok(r)
        } else {
            // Indistinguishable from a missing request, so ids cannot be probed.
            Err(Error::NotFound(id))
        }
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
        for _ in 0..CONFLICT_RETRIES {
            let now = now();
            let actor = caller.actor();
            let mut r = self.load(&caller, id, Code::ReviewRefused).await?;
            let refusal = Event::new(Code::ReviewRefused, actor.clone(), now)
                .for_request(&r)
                .details(
                    serde_json::json!({ "verdict": if approve { "approve" } else { "deny" } }),
                );
            let Some(requester) = self.user(&r.requester).cloned() else {
                let e = Error::Forbidden(format!(
                    "requester {} is no longer in the directory; the request cannot be approved",
                    r.requester
                ));
                return Err(self.refused(refusal, e).await);
            };
            let policy = self.policy.load_full();
            let decision = match self.decide(
                &policy,
                Action::Request,
                &requester,
                &r.target,
                &r.role,
                &context(now, r.ttl, r.ticket.as_ref()),
            ) {
                Ok(d) => d,
                Err(e) => return Err(self.refused(refusal, e).await),
            };
            if approve && !decision.allowed {
                let e = Error::Forbidden(format!(
                    "policy no longer permits this request ({}); it can only be denied or cancelled",
                    Refusal::NotPermitted(decision.rules.clone())
                ));
                return Err(self.refused(refusal, e).await);
            }
            if approve && decision.mfa && stepped_up.is_none() {
                match self.step_up(&caller.user.name, totp.as_deref()).await {
                    Ok(true) => stepped_up = Some(()),
                    Ok(false) => {
                        let e = Error::Mfa("approving this role requires MFA step-up: pass a fresh TOTP code with --totp".into());
                        return Err(self.refused(refusal, e).await);
                    }
                    Err(e) => return Err(self.refused(refusal, e.into()).await),
                }
            }
            let mut events = Vec::new();
            let mut notices = Vec::new();
            if approve {
                let outcome = r.approve(
                    caller.user,
                    &requester,
                    decision.requirement.clone(),
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
                    events.push(Event::new(Code::RequestApproved, actor.clone(), now).for_request(&r).details(serde_json::json!({
                        "tier": r.requirement.to_string(),
                        "approvers": r.reviews.iter().map(|v| v.reviewer.name.to_string()).collect::<Vec<_>>(),
                    })));
                    match self.grant(&policy, r, events, true, &caller, now).await {
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
                if let Err(e) = r.deny(caller.user, &requester, &requirement, comment.clone(), now)
                {
                    return Err(self.refused(refusal, e.into()).await);
                }
                events.push(
                    Event::new(Code::RequestDenied, actor.clone(), now)
                        .for_request(&r)
                        .details(serde_json::json!({ "comment": comment.as_str() })),
                );
                let why = (!comment.as_str().is_empty())
                    .then(|| format!("{}: {}", caller.user.name, comment.as_str()));
                notices = self.notices(&r, Kind::Denied, Audience::Requester, why);
            }
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
            let now = now();
            let mut r = self.load(&caller, id, Code::ActionRefused).await?;
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

    /// Ends a grant (`by` is `None` for expiry). Credentials that die on their own (SSH
    /// certificates) need nothing more; an account at a target gets its lease moved to
    /// revoking in the same transaction, and the lease worker removes it at once.
    async fn end_grant(
        &self,
        r: &mut Request,
        by: Option<(Actor, Comment)>,
        now: OffsetDateTime,
    ) -> Result<Change, Error> {
        let actor = by
            .as_ref()
            .map(|(a, _)| a.clone())
            .unwrap_or_else(Actor::system);
        let mut lease = self.store.lease(r.id).await?;
        if let Some(l) = lease.as_mut() {
            l.start_revoking(now);
        }
        let mut events = Vec::new();
        match by {
            Some((_, comment)) => {
                r.revoke(actor.user.as_ref(), comment.clone(), now)?;
                events.push(
                    Event::new(Code::GrantRevoked, actor, now)
                        .for_request(r)
                        .details(serde_json::json!({ "comment": comment.as_str() })),
                );
            }
            None => {
                r.expire(now)?;
                events.push(
                    Event::new(Code::GrantExpired, actor, now)
                        .for_request(r)
                        .details(serde_json::json!({
                            "lag_ms": r.expires_at.map(|e| (now - e).whole_milliseconds()),
                        })),
                );
            }
        }
        Ok(Change {
            lease,
            events,
            ..Change::default()
        })
    }

    /// Ends a grant early. Allowed to the requester, administrators, and anyone who may
    /// review the request.
    pub async fn revoke(
        &self,
        caller: Caller<'_>,
        id: RequestId,
        comment: Comment,
    ) -> Result<Request, Error> {
        for _ in 0..CONFLICT_RETRIES {
            let now = now();
            let mut r = self.load(&caller, id, Code::ActionRefused).await?;
            let refusal = Event::new(Code::ActionRefused, caller.actor(), now)
                .for_request(&r)
                .details(serde_json::json!({"action": "revoke"}));
            if !self.may_view(caller.user, &r) {
                return Err(self.refused(refusal, Error::NotFound(id)).await);
            }
            let change = match self
                .end_grant(&mut r, Some((caller.actor(), comment.clone())), now)
                .await
            {
                Ok(change) => change,
                Err(e) => return Err(self.refused(refusal, e).await),
            };
            if self.store_revoked(&mut r, change).await? {
                return Ok(r);
            }
        }
        Err(Error::Store(warden_store::Error::Conflict))
    }

    /// Stores a revocation made by [`end_grant`](Self::end_grant) and ends what the grant
    /// held. False when another change came first (the caller reloads and tries again).
    async fn store_revoked(&self, r: &mut Request, change: Change) -> Result<bool, Error> {
        match self.store.update_request(r, change).await {
            Ok(v) => {
                r.version = v;
                // The lease is now due: the worker removes the credential at once.
                self.wake.now();
                self.end_sessions(r.id, "your grant was revoked");
                Ok(true)
            }
            Err(warden_store::Error::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends the open requests of users no longer in the directory (removed from the config
    /// while the server was down), as offboarding would have: a grant must not outlive its
    /// holder's place in the directory. Run at start; returns how many were ended.
    pub async fn end_departed(&self) -> Result<usize, Error> {
        self.end_all(
            None,
            |r| self.user(&r.requester).is_none(),
            Actor::system(),
            "the requester is no longer in the directory",
        )
        .await
    }

    /// Revokes, as `actor` with `comment`, every open request of `requester` (or of anyone)
    /// that `which` picks, looking again until a look finds none (at most [`END_ALL_LOOKS`]
    /// times). Returns how many were ended.
    async fn end_all(
        &self,
        requester: Option<&warden_domain::UserName>,
        which: impl Fn(&Request) -> bool,
        actor: Actor,
        comment: &str,
    ) -> Result<usize, Error> {
        let comment = Comment::parse(comment).map_err(|e| Error::Input {
            code: "bad_comment",
            message: e.to_string(),
        })?;
        let by = (actor, comment);
        let mut ended = 0;
        for _ in 0..END_ALL_LOOKS {
            let open: Vec<Request> = self
                .store
                .requests(warden_store::RequestFilter {
                    requester: requester.cloned(),
                    target: None,
                    states: vec![State::Pending, State::Approved, State::Active],
                    limit: 10_000,
                })
                .await?
                .into_iter()
                .filter(|r| which(r))
                .collect();
            if open.is_empty() {
                break;
            }
            for mut r in open {
                for _ in 0..CONFLICT_RETRIES {
                    let change = match self.end_grant(&mut r, Some(by.clone()), now()).await {
                        Ok(change) => change,
                        Err(Error::Transition(_)) => break, // ended meanwhile
                        Err(e) => return Err(e),
                    };
                    if self.store_revoked(&mut r, change).await? {
                        ended += 1;
                        break;
                    }
                    match self.store.request(r.id).await? {
                        Some(fresh) if !fresh.state.is_final() => r = fresh,
                        _ => break,
                    }
                }
            }
        }
        Ok(ended)
    }

    /// Asks for more time on an active grant: a new request, linked to the original, that goes
    /// through policy and approval again.
    pub async fn extend(
        &self,
        caller: Caller<'_>,
        id: RequestId,
        ttl: Ttl,
        reason: Option<Reason>,
        totp: Option<String>,
    ) -> Result<Outcome, Error> {
        let now = now();
        let r = self.load(&caller, id, Code::ActionRefused).await?;
        let refusal = Event::new(Code::ActionRefused, caller.actor(), now)
            .for_request(&r)
            .details(serde_json::json!({"action": "extend"}));
        if r.requester != caller.user.name {
            return Err(self
                .refused(refusal, TransitionError::NotRequester("extend").into())
                .await);
        }
        if r.state != State::Active {
            let e = TransitionError::WrongState {
                id,
                state: r.state,
                action: "extended",
                allowed: "active",
            };
            return Err(self.refused(refusal, e.into()).await);
        }
        let reason = match reason {
            Some(reason) => reason,
            None => Reason::parse(
                &format!("extension of {}: {}", r.id, r.reason)
                    .chars()
                    .take(Reason::MAX)
                    .collect::<String>(),
            )
            .map_err(|e| Error::Input {
                code: "bad_reason",
                message: e.to_string(),
            })?,
        };
        let ask = Ask {
            target: r.target.clone(),
            role: r.role.clone(),
            reason,
            ticket: r.ticket.clone(),
            ttl,
        };
        self.create(
            caller,
            Create {
                ask,
                public_key: r.public_key.clone(),
                totp,
            },
            Some(r.id),
        )
        .await
    }

    /// Revokes credentials whose leases are due, then expires grants and times out requests.
    /// Returns how many were handled; failures are logged, audited and retried with backoff.
    ///
    /// Credentials go first: an active grant's lease is due at its expiry, so the account is
    /// removed without waiting for the request's own change. Both run many at once, so a burst
    /// of expiries (after downtime, say) is neither served one target round trip nor one commit
    /// at a time; the store's group commit makes the concurrent writes share their syncs.
    pub async fn process_due(&self) -> Result<usize, Error> {
        let now = now();
        let leases = self.store.due_leases(now, 1024).await?;
        let mut handled = leases.len();
        let results: Vec<Result<(), Error>> = futures_util::stream::iter(leases)
            .map(|lease| self.process_lease(lease, now))
            .buffer_unordered(LEASE_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            if let Err(e) = r {
                tracing::error!(error = %e, "lease not processed; will retry");
            }
        }
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
                        Event::new(Code::RequestTimedOut, Actor::system(), now).for_request(&r),
                    ],
                    notices: self.notices(&r, Kind::TimedOut, Audience::Requester, None),
                    ..Change::default()
                })
                .map_err(Error::from),
            State::Active if r.expires_at.is_some_and(|e| e <= now) => {
                self.end_grant(&mut r, None, now).await
            }
            State::Active => {
                if !r.take_warning(now) {
                    return Ok(false);
                }
                Ok(Change {
                    events: vec![
                        Event::new(Code::ExpiryWarned, Actor::system(), now)
                            .for_request(&r)
                            .details(serde_json::json!({
                                "expires_at": r.expires_at.map(|e| e.unix_timestamp()),
                            })),
                    ],
                    notices: self.notices(&r, Kind::ExpirySoon, Audience::Requester, None),
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
                }
                Ok(true)
            }
            Err(warden_store::Error::Conflict) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

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
    async fn process_lease(&self, mut lease: Lease, now: OffsetDateTime) -> Result<(), Error> {
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
        let policy = self.policy.load_full();
        let target = policy.targets().get(&lease.target);
        let settings = target
            .and_then(|t| t.roles.get(&lease.role))
            .map(|ro| ro.settings.clone())
            .unwrap_or_default();
        let connection = target.map(|t| t.connection.clone()).unwrap_or_default();
        let outcome = match target.and_then(|t| self.issuers.get(&t.kind)) {
            None => Err(format!(
                "target {} is no longer in the policy; remove account {} by hand",
                lease.target, lease.account
            )),
            Some(issuer) => {
                let admin = self.admin_credential(&lease.target).await?;
                issuer
                    .revoke(RevokeRequest {
                        grant: lease.grant,
                        target: &lease.target,
                        role: &lease.role,
                        connection: &connection,
                        settings: &settings,
                        public: &serde_json::Value::Null,
                        account: Some(&lease.account),
                        admin: admin.as_ref(),
                    })
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        let kind = target.map_or("unknown", |t| t.kind.as_str()).to_owned();
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
                lease.revoked();
                vec![base(Code::CredentialRevoked).details(serde_json::json!({
                    "account": lease.account,
                    "outcome": if result == RevokeResponse::Revoked { "revoked" } else { "already_gone" },
                    "lag_ms": (done - lease.expires_at).whole_milliseconds().max(0),
                }))]
            }
            Err(e) => {
                tracing::error!(grant = %lease.grant, account = %lease.account, error = %e, "revocation failed; will retry");
                let newly_failed = lease.revoke_failed(e.clone(), now);
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
                if newly_failed {
                    vec![base(Code::CredentialRevokeFailed).failed("revoke_failed", e).details(serde_json::json!({ "account": lease.account, "attempts": lease.attempts }))]
                } else {
                    Vec::new()
                }
            }
        };
        let notify = !notices.is_empty();
        self.store.update_lease(&lease, events, notices).await?;
        if notify {
            self.outbox.notify_one();
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

    /// The accounts at `target` that a live lease names.
    async fn leased_accounts(
        &self,
        target: &TargetName,
    ) -> Result<std::collections::HashSet<String>, Error> {
        Ok(self
            .store
            .live_leases(target)
            .await?
            .into_iter()
            .map(|l| l.account)
            .collect())
    }

    /// Removes accounts Warden made at its targets that no live lease accounts for (restored
    /// backups, hand-made copies of Warden's names, crashes of another deployment). Accounts
    /// without Warden's name prefix and marker are never listed, so never touched. Returns how
    /// many orphans were removed.
    pub async fn reconcile(&self) -> Result<usize, Error> {
        let policy = self.policy.load_full();
        let probe = RequestId::from_uuid(Uuid::nil());
        let probe_user: warden_domain::UserName = "reconciler"
            .parse()
            .map_err(|e: warden_domain::names::NameError| Error::Issuer(e.to_string()))?;
        let mut removed = 0;
        for (_, target) in policy.targets().iter() {
            let Some(issuer) = self.issuers.get(&target.kind) else {
                continue;
            };
            if issuer.account_name(probe, &probe_user).is_none() {
                continue;
            }
            let Some(admin) = self.admin_credential(&target.name).await? else {
                continue;
            };
            // Leases first, accounts second: an account created after this read has a lease
            // (its intent) that the read may have missed, so never remove what is newer.
            let live = self.leased_accounts(&target.name).await?;
            let accounts = match issuer
                .list_accounts(ListRequest {
                    target: &target.name,
                    connection: &target.connection,
                    admin: Some(&admin),
                })
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
            let fresh = self.leased_accounts(&target.name).await?;
            for account in accounts
                .into_iter()
                .filter(|a| !live.contains(&a.name) && !fresh.contains(&a.name))
            {
                let now = now();
                let outcome = issuer
                    .revoke(RevokeRequest {
                        grant: account.grant.unwrap_or(probe),
                        target: &target.name,
                        role: &RoleName::from_str("reconcile")
                            .map_err(|e| Error::Issuer(e.to_string()))?,
                        connection: &target.connection,
                        settings: &Default::default(),
                        public: &serde_json::Value::Null,
                        account: Some(&account.name),
                        admin: Some(&admin),
                    })
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

    /// The decision policy would make for `user` now, and whether the given request details
    /// would pass it (MFA aside).
    pub fn explain(
        &self,
        action: Action,
        user: &User,
        target: &TargetName,
        role: &RoleName,
        ttl: Ttl,
        ticket: Option<&Ticket>,
    ) -> Result<(Decision, Option<Refusal>), Error> {
        let policy = self.policy.load_full();
        let d = self.decide(
            &policy,
            action,
            user,
            target,
            role,
            &context(now(), ttl, ticket),
        )?;
        let check = d.check(ttl, ticket, true).err();
        Ok((d, check))
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
