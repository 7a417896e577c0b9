//! Ending grants early: revocation by a person, offboarding, and users gone from the
//! directory. An account at a target goes with its grant through the lease worker.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use time::OffsetDateTime;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::notice::Kind;
use warden_domain::request::Verdict;
use warden_domain::{Audience, Comment, Request, RequestId, State, UserName};
use warden_store::{Change, Reset};

use super::{CONFLICT_RETRIES, Caller, Error};
use crate::state::{App, now};

/// Most times open requests are looked for when all of a user's must end (offboarding, users
/// gone from the directory): each look ends up to [`END_ALL_PAGE`] of them, and one that could
/// not be ended (a change won every retry) is tried again by the next.
const END_ALL_LOOKS: usize = 5;

/// Open requests ended per look.
const END_ALL_PAGE: usize = 10_000;

/// Longest a change of a user's standing (an offboarding, new credentials from an
/// administrator) waits for the user's calls under way (a grant's issue at a slow target takes
/// a while) before it goes on: [`App::drain_calls_of`].
const CALLS_DRAIN: Duration = Duration::from_secs(30);

/// How often an offboarding waiting for its turn looks again whether its caller still stands:
/// one whose caller is being offboarded meanwhile is refused at once, rather than hold up, as
/// a call of theirs under way, the offboarding that waits for it.
const TURN_LOOK: Duration = Duration::from_millis(5);

impl App {
    /// Ends a grant (`by` is `None` for expiry). Credentials that die on their own (SSH
    /// certificates) need nothing more; an account at a target gets its lease moved to
    /// revoking in the same transaction, and the lease worker removes it at once.
    pub(super) async fn end_grant(
        &self,
        r: &mut Request,
        by: Option<(Actor, Comment)>,
        now: OffsetDateTime,
    ) -> Result<Change, Error> {
        // A grant past its expiry ended by its time, whether or not the worker has recorded
        // that yet: it is recorded as expired now, not as revoked after it ended.
        let by = by.filter(|_| r.ran_out(now).is_none());
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
                // A request ended before it was ever granted is no grant revoked: counts of
                // revoked grants read the log.
                let (code, was) = match r.state {
                    State::Active => (Code::GrantRevoked, None),
                    other => (Code::RequestRevoked, Some(other.as_str())),
                };
                r.revoke(actor.user.as_ref(), comment.clone(), now)?;
                let mut details = serde_json::json!({ "comment": comment.as_str() });
                if let Some(was) = was {
                    details["was"] = was.into();
                }
                events.push(Event::new(code, actor, now).for_request(r).details(details));
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

    /// Ends a grant early. Allowed to the requester, administrators, the reviewers its
    /// requirement names (a group's members, the manager) and those whose approval counted
    /// toward it, and for
    /// break-glass grants the security group; not to readers of the audit log as such, nor to
    /// a two-person tier's "anyone else".
    pub async fn revoke(
        &self,
        caller: Caller<'_>,
        id: RequestId,
        comment: Comment,
    ) -> Result<Request, Error> {
        for _ in 0..CONFLICT_RETRIES {
            let r = self.load(&caller, id, "revoke").await?;
            // An extension being made, and then this request's issue if one is under way,
            // finish first: the revocation then ends what they made.
            let _chain = self
                .chains
                .lock((r.requester.clone(), r.target.clone()))
                .await;
            let _issuing = self.issuing.lock(id).await;
            let now = now();
            let mut r = self.load(&caller, id, "revoke").await?;
            let refusal = Event::new(Code::ActionRefused, caller.actor(), now)
                .for_request(&r)
                .details(serde_json::json!({"action": "revoke"}));
            // Security is told of every break-glass grant, and may end any.
            let may_end = self.is_admin(caller.user)
                || (r.breakglass.is_some() && caller.user.in_group(&self.config.security_group))
                || self.user(&r.requester).is_some_and(|requester| {
                    r.may_end(requester, &self.requirement_now(&r), caller.user)
                });
            if !may_end {
                let e = Error::Forbidden(format!(
                    "only its requester, administrators, the reviewers its tier names, those whose approval counted toward it once granted, and security for break-glass can revoke request {id}"
                ));
                return Err(self.refused(refusal, e).await);
            }
            let mut change = match self
                .end_grant(&mut r, Some((caller.actor(), comment.clone())), now)
                .await
            {
                Ok(change) => change,
                Err(e) => return Err(self.refused(refusal, e).await),
            };
            // Its requester hears that someone else withdrew the request or revoked the grant,
            // by whom and why, queued with the revocation; not of one they ended themselves,
            // nor of a grant whose time ran out first (recorded expired).
            if r.state == State::Revoked && caller.user.name != r.requester {
                change.notices = self.notices(&r, Kind::Revoked, Audience::Requester, None);
            }
            let told = !change.notices.is_empty();
            if self.store_revoked(&mut r, change).await? {
                if told {
                    self.outbox.notify_one();
                }
                // A grant whose time ran out first was recorded expired, not revoked: its
                // extensions carry on the access it would have had.
                if r.state == State::Revoked {
                    self.end_extensions(&r, caller.actor()).await?;
                }
                return Ok(r);
            }
        }
        Err(Error::Store(warden_store::Error::Conflict))
    }

    /// Ends the open extensions of the grant `r` just revoked, and theirs: each continues the
    /// access the revocation ended, so none may be approved or run on. Each is told of the grant
    /// it extends itself: `r`, or an extension of it ended with it. Returns how many.
    pub(super) async fn end_extensions(&self, r: &Request, actor: Actor) -> Result<usize, Error> {
        let open = self
            .store
            .requests(warden_store::RequestFilter {
                requester: Some(r.requester.clone()),
                target: Some(r.target.clone()),
                states: vec![State::Pending, State::Approved, State::Active],
                before: None,
                limit: END_ALL_PAGE,
            })
            .await?;
        let mut chain = with_extensions(&open, HashSet::from([r.id]));
        chain.remove(&r.id);
        if chain.is_empty() {
            return Ok(0);
        }
        let extended: BTreeSet<RequestId> = open
            .iter()
            .filter(|x| chain.contains(&x.id))
            .filter_map(|x| x.extends)
            .collect();
        let mut ended = 0;
        for grant in extended {
            let comment = if grant == r.id {
                format!("the grant it extends ({grant}) was revoked")
            } else {
                format!(
                    "the grant it extends ({grant}) continued grant {}, which was revoked, and ended with it",
                    r.id
                )
            };
            ended += self
                .end_all(
                    Some(&r.requester),
                    |x| chain.contains(&x.id) && x.extends == Some(grant),
                    actor.clone(),
                    &comment,
                )
                .await?;
        }
        Ok(ended)
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

    /// Offboarding: revokes `user`'s API tokens, disables their password, removes their SSH
    /// keys and ends their live SSH sessions, waits for their changes already under way, then
    /// ends every pending, approved and active request of theirs. Returns how many requests
    /// were ended. A name neither in the directory nor on any open request is refused as
    /// unknown (most likely a typo), with nothing done.
    ///
    /// Tokens first, so that the user can start nothing new; then the wait, so that a request
    /// that passed authentication just before is stored before the requests are looked up,
    /// and ended with them rather than outliving the offboarding.
    ///
    /// Offboardings take turns, server-wide. With the turn, the caller is checked again (one
    /// offboarded or signed out meanwhile is refused, as their token now would be), and an
    /// administrator's offboarding is refused when no other administrator could sign in after
    /// it: two administrators offboarding each other at once leave one standing.
    pub async fn offboard(&self, caller: Caller<'_>, user: &UserName) -> Result<usize, Error> {
        let began = now();
        if !self.is_admin(caller.user) {
            return Err(Error::Forbidden(
                "only administrators can offboard users".into(),
            ));
        }
        // Four eyes, and never an instance no administrator can sign in to.
        if caller.user.name == *user {
            return Err(Error::Forbidden(
                "you cannot offboard yourself: ask another administrator (so that one always remains)".into(),
            ));
        }
        if self.user(user).is_none() {
            let open = self
                .store
                .requests(warden_store::RequestFilter {
                    requester: Some(user.clone()),
                    target: None,
                    states: vec![State::Pending, State::Approved, State::Active],
                    before: None,
                    limit: 1,
                })
                .await?;
            if open.is_empty() {
                return Err(Error::Missing {
                    code: "unknown_user",
                    message: format!(
                        "user {:?} is not in the directory and has no open request: nothing to offboard; check the name",
                        user.as_str()
                    ),
                });
            }
        }
        let _turn = self.offboarding_turn(&caller, began).await?;
        self.keeps_an_administrator(user).await?;
        // From here on no approval of theirs counts, and then no change of theirs starts and
        // no sign-in of theirs earns a token.
        self.bar_reviewer(user).await;
        let ev = Event::new(Code::UserOffboarded, caller.actor(), now())
            .details(serde_json::json!({ "user": user }));
        let signed = self
            .reset_user(
                user,
                Reset::Offboarded,
                &caller.actor(),
                "offboarded",
                vec![ev],
            )
            .await?;
        // From here on, what they approved waits for someone else.
        self.refresh_reviewers().await?;
        self.drain_calls_of(user, "offboarding", "the user's requests")
            .await;
        let ended = self
            .end_all(Some(user), |_| true, caller.actor(), "offboarded")
            .await?;
        // Barred, their approvals count no more; withdrawn, they never will again, not even
        // once an administrator gives them a new password: a stolen token's approvals must
        // not come back with the account.
        self.void_approvals(|giver, _| giver == user, "offboarded")
            .await?;
        tracing::info!(%user, ended, tokens = signed.tokens, ssh_keys = signed.ssh_keys, "user offboarded");
        Ok(ended)
    }

    /// The server's one offboarding turn ([`App::offboarding`]), for `caller`, whose call
    /// began at `began`: refused, waiting or once held, as soon as the caller no longer stands
    /// ([`App::caller_stands`]). Looking while it waits lets an offboarding of the caller that
    /// holds the turn go on at once, rather than wait out [`CALLS_DRAIN`] for this call.
    async fn offboarding_turn(
        &self,
        caller: &Caller<'_>,
        began: OffsetDateTime,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, Error> {
        let turn = self.offboarding.lock();
        tokio::pin!(turn);
        loop {
            tokio::select! {
                held = &mut turn => {
                    self.caller_stands(caller, began)?;
                    return Ok(held);
                }
                () = tokio::time::sleep(TURN_LOOK) => self.caller_stands(caller, began)?,
            }
        }
    }

    /// Refuses `caller`, whose call began at `began`, when they have been offboarded, or
    /// signed out by new credentials, since: their token would now be refused.
    fn caller_stands(&self, caller: &Caller<'_>, began: OffsetDateTime) -> Result<(), Error> {
        let me = &caller.user.name;
        if self.offboarded(me) {
            return Err(Error::Forbidden(
                "you were offboarded by another administrator while this offboarding waited for theirs to finish: nothing was done, and your token no longer works".into(),
            ));
        }
        if self.tokens.signed_out_since(me, began) {
            return Err(Error::Forbidden(
                "your sign-in was ended (a new password or a reset of your second factor) while this offboarding waited for another to finish: nothing was done; sign in again with `warden login` and retry".into(),
            ));
        }
        Ok(())
    }

    /// Refuses the offboarding of `user`, an administrator, when no other administrator would
    /// be left who can sign in (one not offboarded, with a password): an instance no one can
    /// administer waits for a restart to get its bootstrap admin back. Run with the
    /// offboarding turn held, so that no other offboarding changes the answer meanwhile.
    async fn keeps_an_administrator(&self, user: &UserName) -> Result<(), Error> {
        if !self.user(user).is_some_and(|u| self.is_admin(u)) {
            return Ok(());
        }
        let others = self
            .directory
            .users()
            .filter(|u| self.is_admin(u) && u.name != *user && !self.offboarded(&u.name));
        for admin in others {
            if self.has_password(&admin.name).await? {
                return Ok(());
            }
        }
        Err(Error::Forbidden(format!(
            "offboarding {user} would leave no administrator who can sign in: give another administrator a password first (`warden user set-password NAME`), so that one always remains"
        )))
    }

    /// Ends the open requests of users no longer in the directory (removed from the config
    /// while the server was down), and revokes their tokens and removes their SSH keys, as
    /// offboarding would have: a grant must not outlive its holder's place in the directory.
    /// Their password and second factor are forgotten too, so that put back later they sign in
    /// afresh, as a new user: with the password the config gives them. Also finishes
    /// offboardings a stop cut short between storing the offboarding and ending the user's
    /// requests. Run at start; returns how many requests were ended.
    pub async fn end_departed(&self) -> Result<usize, Error> {
        for user in self.store.users_with_credentials().await? {
            if self.user(&user).is_none() {
                // Said where the operator looks: a user dropped by a config change (a renamed
                // `bootstrap_admin` too) loses their sign-in for good.
                tracing::warn!(%user, "a user who could sign in is no longer in the directory: their tokens, password and second factor are forgotten");
                let (actor, why) = (Actor::system(), "no longer in the directory");
                let ev = Event::new(Code::TokensRevoked, actor.clone(), now())
                    .details(serde_json::json!({ "user": user, "why": why }));
                self.reset_user(&user, Reset::Departed, &actor, why, vec![ev])
                    .await?;
            }
        }
        self.void_departed_approvals().await?;
        let departed = self
            .end_all(
                None,
                |r| self.user(&r.requester).is_none(),
                Actor::system(),
                "the requester is no longer in the directory",
            )
            .await?;
        let offboarded = self
            .end_all(
                None,
                |r| self.offboarded(&r.requester),
                Actor::system(),
                "the requester was offboarded",
            )
            .await?;
        Ok(departed + offboarded)
    }

    /// Withdraws the approvals that users no longer in the directory gave to requests still
    /// pending, and those users gave before they were offboarded: put back later, or given a
    /// new password, they approve afresh. Run at start, before anything else changes requests:
    /// it also finishes an offboarding a stop cut short before its approvals were withdrawn,
    /// and withdraws what a version that left them in place kept, when the user was let back in
    /// since (their offboarding is on the record); and an administrator's new password or
    /// reset of a second factor a stop cut short before the user's approvals were withdrawn
    /// ([`App::credential_resets`]). Returns how many requests lost approvals.
    async fn void_departed_approvals(&self) -> Result<usize, Error> {
        let gone = self
            .void_approvals(
                |giver, _| self.user(giver).is_none(),
                "no longer in the directory",
            )
            .await?;
        let barred = self.store.offboarded_users().await?;
        let offboardings = self.offboardings().await?;
        let offboarded = self
            .void_approvals(
                |giver, at| {
                    barred.contains(giver)
                        || offboardings.get(giver).is_some_and(|last| at <= *last)
                },
                "offboarded",
            )
            .await?;
        // A new password or second factor from an administrator that a stop cut short before
        // the user's approvals were withdrawn.
        let resets = self.credential_resets().await?;
        let mut reset = 0;
        for (latest, why) in [
            (&resets.password, "their password was reset"),
            (&resets.second_factor, "their second factor was reset"),
        ] {
            reset += self.void_given_until(latest, why).await?;
        }
        Ok(gone + offboarded + reset)
    }

    /// Withdraws, saying `why`, every approval of a request still pending given by a user
    /// `latest` names at or before the time it gives them: when an administrator last gave them
    /// new credentials. The one rule for what the old credentials approved, as the change is
    /// made ([`App::withdraw_approvals`]), after a stop cut it short (at start), and once a
    /// hold on the user's approvals that outlived its change is given back
    /// ([`App::release_lingering`]). Returns how many requests lost approvals.
    pub(crate) async fn void_given_until(
        &self,
        latest: &HashMap<UserName, OffsetDateTime>,
        why: &str,
    ) -> Result<usize, Error> {
        if latest.is_empty() {
            return Ok(0);
        }
        let before = |giver: &UserName, at| latest.get(giver).is_some_and(|last| at <= *last);
        self.void_approvals(before, why).await
    }

    /// When each user was last offboarded, from the audit log (`auth.user_offboarded`): read
    /// only when a pending request holds an approval, which is then weighed against it.
    async fn offboardings(&self) -> Result<HashMap<UserName, OffsetDateTime>, Error> {
        let approved = self
            .pending()
            .await?
            .iter()
            .any(|r| r.reviews.iter().any(|v| v.verdict == Verdict::Approve));
        let mut last = HashMap::new();
        if !approved {
            return Ok(last);
        }
        let mut after_seq = None;
        loop {
            let page = self
                .store
                .audit(warden_store::AuditFilter {
                    codes: vec![Code::UserOffboarded],
                    after_seq,
                    limit: END_ALL_PAGE,
                    ..warden_store::AuditFilter::default()
                })
                .await?;
            let Some(newest) = page.last() else {
                return Ok(last);
            };
            after_seq = Some(newest.seq);
            for e in &page {
                if let Some(user) = e.event.details["user"]
                    .as_str()
                    .and_then(|u| u.parse::<UserName>().ok())
                {
                    // Oldest first: the last one read is the latest.
                    last.insert(user, e.event.time);
                }
            }
        }
    }

    /// The requests still pending, up to [`END_ALL_PAGE`] of them.
    async fn pending(&self) -> Result<Vec<Request>, Error> {
        Ok(self
            .store
            .requests(warden_store::RequestFilter {
                requester: None,
                target: None,
                states: vec![State::Pending],
                before: None,
                limit: END_ALL_PAGE,
            })
            .await?)
    }

    /// Waits, at most [`CALLS_DRAIN`], until no call of `user`'s that may write is under way
    /// ([`crate::auth::ChangeInFlight`]), for `what` (an offboarding, say) to go on once what
    /// those calls did is stored; past that it goes on, and the log says to look at `check`.
    /// Returns whether none is under way.
    pub(super) async fn drain_calls_of(&self, user: &UserName, what: &str, check: &str) -> bool {
        let deadline = tokio::time::Instant::now() + CALLS_DRAIN;
        while self.tokens.changes_in_flight(user) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(%user, in_flight = self.tokens.changes_in_flight(user),
                    "{what} went on without waiting longer for the user's calls under way; check {check} once they end");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Withdraws the approvals of the givers `gave` names from every request still pending
    /// (`request.approvals_voided`, saying `why`), so that they never count again: an
    /// offboarding's must not come back with the user's new password, nor a departed user's
    /// with their name, nor a password's or second factor's a new one replaced
    /// ([`App::withdraw_approvals`]). Returns how many requests lost approvals.
    pub(super) async fn void_approvals(
        &self,
        gave: impl Fn(&UserName, OffsetDateTime) -> bool,
        why: &str,
    ) -> Result<usize, Error> {
        let mut changed = 0;
        for mut r in self.pending().await? {
            for _ in 0..CONFLICT_RETRIES {
                let voided = r.void_approvals(&gave, why);
                if voided.is_empty() {
                    break;
                }
                let ev = Event::new(Code::ApprovalsVoided, Actor::system(), now())
                    .for_request(&r)
                    .details(serde_json::json!({ "approvers": voided, "why": why }));
                match self.store.update_request(&r, vec![ev].into()).await {
                    Ok(_) => {
                        changed += 1;
                        break;
                    }
                    // Changed meanwhile (another review, its end): look again.
                    Err(warden_store::Error::Conflict) => match self.store.request(r.id).await? {
                        Some(fresh) if fresh.state == State::Pending => r = fresh,
                        _ => break,
                    },
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(changed)
    }

    /// Finishes what a stop cut short between two commits of one ending: the extensions of a
    /// revoked grant (a revocation is stored before its chain is ended), and extensions still
    /// waiting for approval of a grant that has expired (withdrawn after the expiry is stored).
    /// Run at start; returns how many requests were ended.
    pub async fn end_stranded_extensions(&self) -> Result<usize, Error> {
        let open = self
            .store
            .requests(warden_store::RequestFilter {
                requester: None,
                target: None,
                states: vec![State::Pending, State::Approved, State::Active],
                before: None,
                limit: END_ALL_PAGE,
            })
            .await?;
        let open_ids: HashSet<RequestId> = open.iter().map(|r| r.id).collect();
        let mut revoked = HashSet::new();
        let mut unextendable = HashSet::new();
        for r in &open {
            // An original still open is neither revoked nor expired.
            let Some(original) = r.extends.filter(|o| !open_ids.contains(o)) else {
                continue;
            };
            match self.store.request(original).await?.map(|o| o.state) {
                Some(State::Revoked) => {
                    revoked.insert(r.id);
                }
                Some(State::Expired) if r.state == State::Pending => {
                    unextendable.insert(r.id);
                }
                _ => {}
            }
        }
        // The rest of a revoked grant's chain: extensions of its extensions.
        let revoked = with_extensions(&open, revoked);
        let mut ended = 0;
        if !revoked.is_empty() {
            ended += self
                .end_all(
                    None,
                    |x| revoked.contains(&x.id),
                    Actor::system(),
                    "the grant it extends was revoked",
                )
                .await?;
        }
        if !unextendable.is_empty() {
            ended += self
                .end_all(
                    None,
                    |x| unextendable.contains(&x.id) && x.state == State::Pending,
                    Actor::system(),
                    "the grant it extends expired before it was approved",
                )
                .await?;
        }
        Ok(ended)
    }

    /// Revokes, as `actor` with `comment`, every open request of `requester` (or of anyone)
    /// that `which` picks, looking again until a look finds none (at most [`END_ALL_LOOKS`]
    /// times). Returns how many were ended.
    pub(super) async fn end_all(
        &self,
        requester: Option<&UserName>,
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
                    before: None,
                    limit: END_ALL_PAGE,
                })
                .await?
                .into_iter()
                .filter(|r| which(r))
                .collect();
            if open.is_empty() {
                break;
            }
            for mut r in open {
                // An issue under way finishes first: then what it made is ended too.
                let _issuing = self.issuing.lock(r.id).await;
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
}

/// `ids` with every request in `open` that extends one of them, however many links down.
fn with_extensions(open: &[Request], mut ids: HashSet<RequestId>) -> HashSet<RequestId> {
    while let Some(next) = open
        .iter()
        .find(|x| !ids.contains(&x.id) && x.extends.is_some_and(|e| ids.contains(&e)))
    {
        ids.insert(next.id);
    }
    ids
}
