//! Creating requests: policy's decision, MFA step-up and the issuer's check of the input,
//! then a pending request, or a grant at once for the `auto` tier and break-glass.

use warden_domain::audit::{Actor, Code, Event};
use warden_domain::notice::Kind;
use warden_domain::request::{Ask, TransitionError};
use warden_domain::{Audience, BreakGlass, Reason, Request, RequestId, State, Ttl, User};
use warden_policy::Action;
use warden_store::Change;

use super::{Caller, Create, Error, Outcome, context, decision_details};
use crate::state::{App, new_request_id, now};

/// The most links followed back along a chain of extensions.
const CHAIN_MAX: usize = 256;

/// The most requests one person may have waiting for approval at once.
const PENDING_MAX: usize = 100;

impl App {
    /// Creates a request; an `auto` tier grants it at once.
    pub async fn create(
        &self,
        caller: Caller<'_>,
        input: Create,
        extends: Option<RequestId>,
    ) -> Result<Outcome, Error> {
        let outcome = self.start(caller, input, extends, None).await?;
        // A revocation of the grant by a person waits for the extension (`App::chains`);
        // offboarding does not, and its sweep of extensions misses one stored after it: then
        // the grant reads revoked here, and the extension ends now.
        if let Some(original) = extends
            && let Some(o) = self.store.request(original).await?
            && o.state == State::Revoked
        {
            self.end_extensions(&o, Actor::system()).await?;
            return Err(Error::Forbidden(format!(
                "grant {original} was revoked while it was being extended; the extension {} was ended with it",
                outcome.request.id
            )));
        }
        Ok(outcome)
    }

    /// Breaks the glass: decided by the break-glass rules alone, always after MFA step-up (a
    /// user without a second factor is refused), granted at once and recorded in full where
    /// Warden records sessions (at a database the decision, and so the grant and its
    /// `breakglass.activated`, say `metadata`); the grant notifies security and opens a
    /// postmortem. A drill takes the same path, flagged.
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
        // What was asked for, kept for a refusal after the request is made of it.
        let (asked_target, asked_role) = (ask.target.clone(), ask.role.clone());
        let refusal = |extra: serde_json::Value| {
            let mut e = Event::new(refused_code, actor.clone(), now);
            e.target = Some(asked_target.clone());
            e.role = Some(asked_role.clone());
            e.details = extra;
            e
        };
        let deciding = self.deciding().await;
        let policy = &deciding.policy;
        let decision = match self.decide(
            policy,
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
            return Err(self
                .refused(
                    refusal(decision_details(&decision, breakglass.is_some())),
                    e,
                )
                .await);
        }
        // Refuse what no second factor can fix (TTL, ticket, the credential's inputs such as
        // the public key) before spending the caller's code:
        // a one-time code used up by a request refused for its ticket would make them wait
        // for the next one.
        if let Err(refusal_reason) = decision.check(ask.ttl, ask.ticket.as_ref(), true) {
            let said = refusal_reason.in_flow(breakglass.is_some(), extends.is_some());
            return Err(self
                .refused(
                    refusal(decision_details(&decision, breakglass.is_some())),
                    said.into(),
                )
                .await);
        }
        if let Err(refusal_reason) = self.approvable(&decision, caller.user) {
            return Err(self
                .refused(
                    refusal(decision_details(&decision, breakglass.is_some())),
                    refusal_reason.into(),
                )
                .await);
        }
        if !decision.requirement.is_auto()
            && let Err(e) = self.room_to_wait(caller.user).await
        {
            return Err(self
                .refused(
                    refusal(decision_details(&decision, breakglass.is_some())),
                    e,
                )
                .await);
        }
        let Some((kind, settings)) = policy.targets().get(&ask.target).and_then(|t| {
            t.roles
                .get(&ask.role)
                .map(|r| (t.kind.clone(), r.settings.clone()))
        }) else {
            return Err(Error::unknown_role(format!(
                "target {} has no role {} any more",
                ask.target, ask.role
            )));
        };
        let checked = match self.issuers.get(&kind) {
            Some(i) => i
                .check_request(
                    &settings,
                    public_key.as_deref(),
                    warden_issuers::Holder::Requester(decision.recording),
                )
                .map_err(|e| Error::Input {
                    code: "bad_credential_input",
                    message: e.to_string(),
                }),
            None => Err(Error::Issuer(format!("no issuer for target kind {kind:?}"))),
        };
        if let Err(e) = checked {
            return Err(self
                .refused(
                    refusal(decision_details(&decision, breakglass.is_some())),
                    e,
                )
                .await);
        }
        let mfa = if decision.mfa && decision.allowed {
            match self
                .step_up(&caller.user.name, totp.as_deref(), caller.source.as_deref())
                .await
            {
                Ok(ok) => ok,
                Err(e) => {
                    return Err(self
                        .refused(
                            refusal(decision_details(&decision, breakglass.is_some())),
                            e.into(),
                        )
                        .await);
                }
            }
        } else {
            false
        };
        if let Err(refusal_reason) = decision.check(ask.ttl, ask.ticket.as_ref(), mfa) {
            let said = refusal_reason.in_flow(breakglass.is_some(), extends.is_some());
            return Err(self
                .refused(
                    refusal(decision_details(&decision, breakglass.is_some())),
                    said.into(),
                )
                .await);
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
        r.stepped_up = mfa;
        let mut details = decision_details(&decision, breakglass.is_some());
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
            let by = super::grant::Granter {
                actor: caller.actor(),
                is_requester: caller.user.name == r.requester,
            };
            return self.grant(deciding, r, events, false, by, now).await;
        }
        let notices = self.notices(&r, Kind::ApprovalNeeded, Audience::Approvers, None);
        let notified = self.reach_someone(&notices);
        let inserted = self
            .insert(
                &r,
                Change {
                    events,
                    notices,
                    waiting_bound: Some(PENDING_MAX),
                    ..Change::default()
                },
            )
            .await;
        if let Err(Error::Store(warden_store::Error::Bound)) = inserted {
            // Others of the requester's, made meanwhile, took the last places.
            return Err(self
                .refused(
                    refusal(decision_details(&decision, breakglass.is_some())),
                    too_many_pending(),
                )
                .await);
        }
        inserted?;
        self.wake.by(r.due_at());
        self.outbox.notify_one();
        Ok(Outcome {
            request: r,
            secret: None,
            notified,
        })
    }

    /// Refuses a request that would wait for approval when `user` has [`PENDING_MAX`] waiting
    /// already: one person's requests neither flood the reviewers' queues and the outbox, nor
    /// grow past what the reads of a requester's requests at a target see
    /// ([`App::same_access`]). A request granted at once never waits, so it is never counted.
    /// Checked before a second factor's code is spent on it; the store checks the bound again
    /// as it inserts ([`warden_store::Change::waiting_bound`]), for requests arriving together.
    async fn room_to_wait(&self, user: &User) -> Result<(), Error> {
        let waiting = self
            .store
            .requests(warden_store::RequestFilter {
                requester: Some(user.name.clone()),
                target: None,
                states: vec![State::Pending],
                before: None,
                limit: PENDING_MAX,
            })
            .await?;
        if waiting.len() < PENDING_MAX {
            return Ok(());
        }
        Err(too_many_pending())
    }

    /// The first grant of the chain `r` belongs to: `r` itself, or the grant its extensions
    /// lead back to. A chain longer than [`CHAIN_MAX`] (none is made in practice) ends there.
    async fn chain_root(&self, r: &Request) -> Result<RequestId, Error> {
        let mut root = r.id;
        let mut up = r.extends;
        for _ in 0..CHAIN_MAX {
            let Some(id) = up else { break };
            root = id;
            up = self.store.request(id).await?.and_then(|o| o.extends);
        }
        Ok(root)
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
        let r = self.load(&caller, id, "extend").await?;
        // Checked and made while no other extension of the chain is being made and no
        // revocation of it runs: see `App::chains`.
        let _chain = self
            .chains
            .lock((r.requester.clone(), r.target.clone()))
            .await;
        let now = now();
        let r = self.load(&caller, id, "extend").await?;
        let refusal = Event::new(Code::ActionRefused, caller.actor(), now)
            .for_request(&r)
            .details(serde_json::json!({"action": "extend"}));
        if r.requester != caller.user.name {
            return Err(self
                .refused(refusal, TransitionError::NotRequester("extend").into())
                .await);
        }
        // A grant that ended is told as one whose time ran out below is, whether the worker
        // has recorded its end yet or not.
        if matches!(r.state, State::Expired | State::Revoked) && r.activated_at.is_some() {
            let e = Error::Conflict {
                code: "grant_ended",
                message: format!(
                    "grant {id} is {}: there is no access left to extend; ask for new access with `warden request create`",
                    r.state
                ),
            };
            return Err(self.refused(refusal, e).await);
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
        // Ended by its time, whether or not the worker has recorded its expiry yet: there is no
        // access left to extend.
        if let Some(ended) = r.ran_out(now) {
            self.wake.now();
            let e = Error::Conflict {
                code: "grant_ended",
                message: format!(
                    "grant {id} expired at {}: there is no access left to extend; ask for new access with `warden request create`",
                    warden_domain::rfc3339(ended)
                ),
            };
            return Err(self.refused(refusal, e).await);
        }
        // An extension runs from the moment it is granted, so one no longer than the time the
        // grant has left would add nothing.
        if let Some(ends) = r.expires_at
            && now + ttl.as_duration() <= ends
        {
            let ms = (ends - now).whole_milliseconds();
            let left = Ttl::from_secs(u64::try_from((ms + 999) / 1000).unwrap_or(1))
                .map_or_else(|_| "a second".to_owned(), |t| t.to_string());
            let e = Error::Input {
                code: "ttl_adds_nothing",
                message: format!(
                    "grant {id} already runs until {} ({left} from now), and an extension runs from when it is granted: ask for more than {left}",
                    warden_domain::rfc3339(ends)
                ),
            };
            return Err(self.refused(refusal, e).await);
        }
        // One extension at a time: a second would be approved, and granted, beside the first.
        let open = self
            .same_access(&r, vec![State::Pending, State::Approved])
            .await?;
        // Of the same access, that is: an extension of any grant of its chain (the grant it
        // extends, or an extension of it) continues the same access.
        let root = self.chain_root(&r).await?;
        let mut waiting = None;
        for o in &open {
            let Some(extended) = o.extends else { continue };
            let same = extended == id
                || match self.store.request(extended).await? {
                    Some(e) => self.chain_root(&e).await? == root,
                    None => false,
                };
            if same {
                waiting = Some(o);
                break;
            }
        }
        if let Some(other) = waiting {
            let e = Error::Conflict {
                code: "extension_pending",
                message: format!(
                    "extension {} of grant {} is already waiting ({}): cancel it (`warden request cancel {}`) or wait for it",
                    other.id,
                    other.extends.map(|x| x.to_string()).unwrap_or_default(),
                    other.state.as_str(),
                    other.id
                ),
            };
            return Err(self.refused(refusal, e).await);
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
}

/// The refusal of a request past the bound on one person's waiting requests.
fn too_many_pending() -> Error {
    Error::Conflict {
        code: "too_many_pending",
        message: format!(
            "you have {PENDING_MAX} requests waiting for approval, the most one person may: cancel those you no longer need (`warden request list --state pending`, then `warden request cancel ID`) before asking again"
        ),
    }
}
