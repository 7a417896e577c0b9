//! Issuing: an approved request's credential made at its target, the grant activated, and
//! the secret handed to the requester (at once, or sealed for one pickup).

use time::OffsetDateTime;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::notice::Kind;
use warden_domain::request::TransitionError;
use warden_domain::{Audience, Lease, Postmortem, Request, RequestId, State};
use warden_issuers::{Holder, IssueRequest, Secret};
use warden_store::Change;

use super::{Caller, Error, Outcome};
use crate::metrics;
use crate::state::{App, Deciding, now};

/// Who grants a request: the actor on record, and whether they are its requester, who then
/// gets the secret at once (anyone else's grant seals it for the requester's one pickup).
pub(super) struct Granter {
    pub actor: Actor,
    pub is_requester: bool,
}

impl App {
    /// Issues the credential for an approved request and activates the grant, storing every
    /// step with `events`. For issuers that create accounts the lease's intent, naming the
    /// account, is stored *before* the target is touched, so a crash at any instant leaves a
    /// lease to clean up and never an unknown account. The secret goes to `by` (see
    /// [`Granter`]). `decided` holds the policy it was decided under ([`App::deciding`]): let
    /// go while a target makes an account, and taken again, if the policy is still the same, to
    /// store the grant; a grant whose policy was replaced meanwhile is withdrawn.
    pub(super) async fn grant(
        &self,
        decided: Deciding<'_>,
        mut r: Request,
        mut events: Vec<Event>,
        mut stored: bool,
        by: Granter,
        now: OffsetDateTime,
    ) -> Result<Outcome, Error> {
        let Granter {
            actor,
            is_requester: to_requester,
        } = by;
        let Deciding { policy, gate } = decided;
        let policy = policy.as_ref();
        // Whatever ends this request meanwhile waits, and then finds what the issue made.
        let _issuing = self.issuing.lock(r.id).await;
        let target = policy.targets().get(&r.target).ok_or_else(|| {
            Error::unknown_target(format!("target {} is no longer in the policy", r.target))
        })?;
        let role = target.roles.get(&r.role).ok_or_else(|| {
            Error::unknown_role(format!(
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
            let mut intent = Lease::intent(
                r.id,
                r.requester.clone(),
                r.target.clone(),
                r.role.clone(),
                account,
                valid_before,
                now,
            );
            intent.made_at = Some(super::leases::made_at(target, &r.role));
            lease = Some(intent);
            Secret::new(crate::auth::random_password())
        });
        let mut gate = Some(gate);
        if lease.is_some() {
            admin = self.admin_credential(&r.target).await?;
            let change = Change {
                lease: lease.clone(),
                events: std::mem::take(&mut events),
                ..Change::default()
            };
            self.save(&mut r, &mut stored, change).await?;
            gate = None;
        }
        // Judged again as when the request was made (`check_request`): a key stored before a
        // stricter check, or a role changed since, ends the request unissued, not granted.
        let judged = issuer
            .check_request(
                &role.settings,
                r.public_key.as_deref(),
                Holder::Requester(r.recording),
            )
            .map_err(|e| match e {
                warden_issuers::Error::Input(why) => warden_issuers::Error::Input(format!(
                    "what the request was made with is refused now: {why}; make a new request"
                )),
                other => other,
            });
        let issue = super::within_timeout(issuer.issue(IssueRequest {
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
            holder: Holder::Requester(r.recording),
        }));
        let issued = match judged {
            Ok(()) => issue.await,
            Err(e) => {
                drop(issue);
                Err(e)
            }
        };
        let held = gate.or_else(|| self.still_deciding(policy));
        let issued = match issued {
            Ok(_) if held.is_none() => Err(warden_issuers::Error::Abandoned(
                "another policy was loaded while the account was being made, so what was decided under the old one is withdrawn: ask again".into(),
            )),
            other => other,
        };
        let issued = match issued {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, request = %r.id, target = %r.target, role = %r.role, "a credential could not be issued");
                let untouched = e.left_target_untouched();
                let mut failed = Event::new(Code::CredentialIssueFailed, Actor::system(), now)
                    .for_request(&r)
                    .failed("issuer_failed", e.to_string());
                if let Some(l) = lease.as_mut() {
                    // Anything half-made at the target is removed by the lease worker; where
                    // nothing reached the target there is nothing to remove, and retrying a
                    // revoke (without a credential, say) would only fail on and on.
                    if untouched {
                        l.never_made();
                    } else {
                        l.start_revoking(now);
                    }
                    failed = failed.details(serde_json::json!({
                        "account": l.account,
                        "cleanup": if untouched { "none needed" } else { "revoking" },
                    }));
                }
                events.push(failed);
                let mut why = format!("{}: {e}", warden_domain::request::UNISSUED);
                if matches!(
                    e,
                    warden_issuers::Error::Unreached(_) | warden_issuers::Error::Login(_)
                ) {
                    why.push_str(&format!(
                        " (an administrator checks the target's connection in targets.toml and its stored credential: `warden target set-credential {}`)",
                        r.target
                    ));
                }
                r.end_unissued(why.clone(), now)?;
                // Security hears of every failed emergency; a requester who is not the caller
                // (their request was just approved) would otherwise never learn it failed.
                let told = [
                    (Audience::Security, r.breakglass.is_some()),
                    (Audience::Requester, !to_requester),
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
                return Err(Error::NotIssued { request: r.id, why });
            }
        };
        // An issue that outlasted the grant's time made an account that is due to go already:
        // its secret is handed to no one (a pickup would refuse it too), and the grant, stored
        // active, is ended at once by the worker, its account revoked as at its expiry.
        let ran_out = crate::state::now() >= valid_before;
        let mut public_facts = issued.public.clone();
        if let Some(obj) = public_facts.as_object_mut() {
            // The certificate itself is public but long; the audit log keeps its identifiers.
            obj.remove("certificate");
            // The actor is who granted it (an approver, say): the event names who holds it.
            obj.insert("holder".into(), r.requester.as_str().into());
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
                .details(serde_json::json!({
                    "expires_at": warden_domain::rfc3339(valid_before),
                    "kind": target.kind,
                    "holder": r.requester.as_str(),
                })),
        );
        let mut postmortem = None;
        let mut notices = Vec::new();
        let mut told = false;
        if let Some(bg) = r.breakglass {
            notices = self.notices(&r, Kind::BreakGlass, Audience::Security, None);
            told = self.reach_someone(&notices);
            // Whether anyone in security is told, on the record: no sink reaches them, or
            // no one in the group but the requester, is for whoever reviews it to know.
            events.push(
                Event::new(Code::BreakGlassActivated, actor.clone(), now)
                    .for_request(&r)
                    .details(serde_json::json!({
                        "drill": bg.drill,
                        "reason": r.reason.as_str(),
                        "ticket": r.ticket.as_ref().map(|t| t.as_str()),
                        "ttl": r.ttl.to_string(),
                        "recording": r.recording.to_string(),
                        "expires_at": warden_domain::rfc3339(valid_before),
                        "security_notified": told,
                    })),
            );
            events.push(
                Event::new(Code::PostmortemOpened, Actor::system(), now)
                    .for_request(&r)
                    .details(serde_json::json!({ "drill": bg.drill })),
            );
            postmortem = Some(Postmortem::open(&r, bg.drill, now));
        } else if !to_requester {
            notices = self.notices(&r, Kind::Approved, Audience::Requester, None);
            told = self.reach_someone(&notices);
        }
        let (secret, pickup) = match issued.secret {
            _ if ran_out => (None, None),
            Some(secret) if !to_requester => {
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
        let queued = !notices.is_empty();
        self.save(
            &mut r,
            &mut stored,
            Change {
                lease,
                pickup,
                postmortem,
                events,
                notices,
                waiting_bound: None,
            },
        )
        .await?;
        self.issued(&r, &target.kind, true, now);
        self.wake.by(deadline);
        if queued {
            self.outbox.notify_one();
        }
        if ran_out && to_requester {
            self.wake.now();
            let ev = Event::new(Code::ActionRefused, actor, crate::state::now())
                .for_request(&r)
                .details(serde_json::json!({"action": "pickup"}));
            let e = not_handed_over(
                r.id,
                &format!("expired at {}", warden_domain::rfc3339(valid_before)),
                "; making its account at the target took longer than its time to live: ask again with a longer --ttl",
            );
            return Err(self.refused(ev, e).await);
        }
        Ok(Outcome {
            request: r,
            secret,
            notified: told,
        })
    }

    /// Counts a grant's issue (or its failure) once stored. The approval, if one was needed,
    /// was stored with it.
    fn issued(&self, r: &Request, kind: &str, ok: bool, approved: OffsetDateTime) {
        let tier = r.tier();
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

    /// Hands the requester the secret of their credential, once.
    pub async fn pickup(
        &self,
        caller: Caller<'_>,
        id: RequestId,
    ) -> Result<serde_json::Value, Error> {
        let r = self.load(&caller, id, "pickup").await?;
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
        // Ended by its time, whether or not the worker has recorded its expiry yet (a start
        // after downtime has a backlog): the account is gone or going, and a password for it
        // is a secret handed out for nothing.
        let now = now();
        let ran_out = r.ran_out(now);
        if r.activated_at.is_some() && (r.state != State::Active || ran_out.is_some()) {
            let ev = Event::new(Code::ActionRefused, caller.actor(), now)
                .for_request(&r)
                .details(serde_json::json!({"action": "pickup"}));
            let state = match ran_out {
                Some(at) => {
                    self.wake.now();
                    format!("expired at {}", warden_domain::rfc3339(at))
                }
                None => r.state.as_str().to_owned(),
            };
            return Err(self.refused(ev, not_handed_over(id, &state, "")).await);
        }
        let ev = Event::new(Code::CredentialPickedUp, caller.actor(), now).for_request(&r);
        let Some(sealed) = self.store.take_pickup(id, vec![ev]).await? else {
            // A second pickup may be someone else's use of the token: on the record.
            let ev = Event::new(Code::ActionRefused, caller.actor(), now)
                .for_request(&r)
                .details(serde_json::json!({"action": "pickup"}));
            // Only credentials Warden made an account for (a lease) have a secret to hand over.
            let e = if r.activated_at.is_none() {
                let why = match r.state {
                    State::Pending => format!(
                        "request {id} is pending: it has no credential until it is approved; `warden request show {id}` tells when it is active"
                    ),
                    State::Approved => format!(
                        "request {id} is approved and its credential is being issued: try again in a moment"
                    ),
                    state => format!(
                        "request {id} is {} and was never granted: it has no credential",
                        state.as_str()
                    ),
                };
                Error::Conflict {
                    code: "not_granted",
                    message: why,
                }
            } else if self.store.lease(id).await?.is_some() {
                Error::Conflict {
                    code: "already_picked_up",
                    message: format!(
                        "the credential of {id} was already handed over: it is shown once"
                    ),
                }
            } else {
                Error::Conflict {
                    code: "no_secret",
                    message: format!(
                        "grant {id} has no secret to hand over: its credential is in the grant itself (`warden request show {id}`)"
                    ),
                }
            };
            return Err(self.refused(ev, e).await);
        };
        let plain = self
            .sealer
            .open(&sealed)
            .map_err(|e| Error::Issuer(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| Error::Issuer(e.to_string()))
    }
}

/// The refusal to hand over the secret of grant `id`, which is `state` ("expired at ...", say),
/// and `why` after it: one wording for a pickup and for an issue that outlasted its grant.
fn not_handed_over(id: RequestId, state: &str, why: &str) -> Error {
    Error::Conflict {
        code: "grant_ended",
        message: format!(
            "grant {id} is {state}: its credential no longer works, and is not handed over{why}"
        ),
    }
}
