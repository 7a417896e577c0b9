//! Access requests and their lifecycle.
//!
//! ```text
//! pending ──approve*──▶ approved ──activate──▶ active ──▶ expired | revoked
//!    │
//!    ├──deny──▶ denied     ├──cancel──▶ cancelled     └──deadline──▶ timed-out
//! ```
//!
//! Every method checks its precondition and either changes the request or returns a
//! [`TransitionError`] leaving it untouched. The caller persists the new state together with the
//! audit events describing it, in one transaction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::approval::{Progress, Requirement};
use crate::decision::{Decision, Recording};
use crate::directory::{Directory, User};
use crate::names::{RoleName, TargetName, UserName};
use crate::text::{Comment, Reason, Ticket};
use crate::ttl::Ttl;

/// How the end comment of a request whose credential could not be issued begins: the target
/// failed, not the policy, and clients say so as a failure rather than a refusal.
pub const UNISSUED: &str = "the credential could not be issued";

/// A request's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(Uuid);

impl RequestId {
    /// Wraps an id the caller generated.
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The id as a number.
    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The UUIDv7 id of millisecond `at` with the given low (random) bytes: the inverse of
    /// [`RequestId::instant`]. With zeros it is the smallest id of that millisecond.
    pub fn v7(at: OffsetDateTime, low: [u8; 10]) -> Self {
        let ms = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        Self(uuid::Builder::from_unix_timestamp_millis(ms, &low).into_uuid())
    }

    /// The millisecond a UUIDv7 id carries; `None` for ids of other versions. A new request's
    /// `created_at` is this instant, so ids sort by creation time and a period's requests are
    /// a range of ids.
    pub fn instant(&self) -> Option<OffsetDateTime> {
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        let nanos = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Text that is not a request id, quoted as [`crate::text::shown`] quotes it: at most
/// [`BAD_ID_SHOWN`] characters, and `…` after the quote when it went on, so that a record
/// that keeps only its length ([`crate::text::unquoted`]) says "or more" of a longer one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0} is not a request id: write the whole id, as `warden request list` shows it (a UUID such as 0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f60; ids are not shortened)"
)]
pub struct BadRequestId(String);

/// Most characters of a bad request id its refusal quotes.
const BAD_ID_SHOWN: usize = 40;

impl FromStr for RequestId {
    type Err = BadRequestId;
    /// Only the hyphenated form Warden writes: one id, one spelling (braces, `urn:uuid:` and
    /// the bare 32 digits are refused).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRequestId(crate::text::shown(s, BAD_ID_SHOWN));
        if s.len() != 36 {
            return Err(bad());
        }
        Uuid::parse_str(s).map(Self).map_err(|_| bad())
    }
}

/// Where a request is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Pending,
    Approved,
    Active,
    Expired,
    Revoked,
    Denied,
    Cancelled,
    TimedOut,
}

impl State {
    /// Every state, for listings and metrics.
    pub const ALL: [State; 8] = [
        State::Pending,
        State::Approved,
        State::Active,
        State::Expired,
        State::Revoked,
        State::Denied,
        State::Cancelled,
        State::TimedOut,
    ];

    /// The state's name as the API and CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Approved => "approved",
            State::Active => "active",
            State::Expired => "expired",
            State::Revoked => "revoked",
            State::Denied => "denied",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed-out",
        }
    }

    /// Whether no further transition is possible.
    pub fn is_final(self) -> bool {
        !matches!(self, State::Pending | State::Approved | State::Active)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {}: use one of {}",
                    crate::text::shown(s, 20),
                    State::ALL.map(State::as_str).join(", ")
                )
            })
    }
}

/// An approver's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Deny,
}

/// One approver's action on a request, with the approver as they were when they acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub reviewer: User,
    pub verdict: Verdict,
    pub comment: Comment,
    #[serde(with = "crate::timestamp")]
    pub at: OffsetDateTime,
    /// Whether an approver was the requester's manager when they approved: a manager's place
    /// is filled only by one who was then and is now ([`Request::approvers`]). `None` on
    /// approvals recorded before this was (weighed as the directory has the requester's manager
    /// now), and on denials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_manager: Option<bool>,
    /// Why the approval was withdrawn while the request was pending ([`Request::void_approvals`]:
    /// its giver offboarded or gone from the directory, their password or second factor reset
    /// by an administrator). It stays on record, void, and counts for nothing; its giver may
    /// approve afresh where they still can, the new approval taking its place, so one person
    /// still counts once. `None` on an approval that stands, and on denials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
}

impl Review {
    /// Whether this is an approval that has not been withdrawn.
    fn approves(&self) -> bool {
        self.verdict == Verdict::Approve && self.withdrawn.is_none()
    }

    /// Whether this is an approval withdrawn while the request was pending.
    fn withdrawn_approval(&self) -> bool {
        self.verdict == Verdict::Approve && self.withdrawn.is_some()
    }
}

/// What a user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub target: TargetName,
    pub role: RoleName,
    pub reason: Reason,
    pub ticket: Option<Ticket>,
    pub ttl: Ttl,
}

/// Marks a break-glass request: granted at once under the break-glass rules, fully recorded,
/// security notified, and followed by a postmortem. A drill goes the same way, flagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    pub drill: bool,
}

/// A request for access and, once granted, the grant itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub requester: UserName,
    pub target: TargetName,
    pub role: RoleName,
    pub reason: Reason,
    pub ticket: Option<Ticket>,
    pub ttl: Ttl,
    pub state: State,
    /// The approval tier policy demanded when the request was made or last reviewed.
    pub requirement: Requirement,
    /// Ids of the policy rules that decided the request.
    pub rules: Vec<String>,
    /// The rules it was asked under, kept the first time a reload or the clock decided it
    /// under others (`rules` then names those): `request.approved` says what they were.
    /// `None` while `rules` are those it was made under, and on requests re-decided before
    /// this was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules_asked: Option<Vec<String>>,
    pub recording: Recording,
    pub reviews: Vec<Review>,
    /// Who counted toward the grant, fixed as the request is approved: the approvers whose
    /// approvals the tier of that moment did not leave void. `request.approved` lists them, the
    /// others' approvals stay marked void, and only they of all who approved may revoke it.
    /// `None` until approved, and on requests approved before it was recorded: their approvals
    /// then give no one that right, as which of them counted is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<Vec<UserName>>,
    /// The request this one extends, if any.
    pub extends: Option<RequestId>,
    /// The requester's SSH public key (OpenSSH format), for certificate-based roles.
    pub public_key: Option<String>,
    /// Public, non-secret parts of the issued credential (e.g. an SSH certificate).
    pub credential: Option<serde_json::Value>,
    #[serde(with = "crate::timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timestamp")]
    pub pending_deadline: OffsetDateTime,
    #[serde(with = "crate::timestamp::option")]
    pub activated_at: Option<OffsetDateTime>,
    #[serde(with = "crate::timestamp::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "crate::timestamp::option")]
    pub ended_at: Option<OffsetDateTime>,
    /// Who ended the request early (revoke, cancel) and why.
    pub ended_by: Option<UserName>,
    pub end_comment: Option<Comment>,
    /// Set on break-glass requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakglass: Option<BreakGlass>,
    /// When the requester is to be told that the grant ends soon; cleared once they are.
    #[serde(
        default,
        with = "crate::timestamp::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub warn_at: Option<OffsetDateTime>,
    /// Whether the requester proved a second factor when making it. A request made without
    /// one, under a policy that demands MFA step-up since, is no longer permitted as made:
    /// neither approvers nor Warden may grant it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stepped_up: bool,
    /// Whether it was approved as it was made, with no wait for approval (an `auto` tier,
    /// break-glass: [`Request::approve_automatically`]), or was made to wait (`false`, whatever
    /// came of it: a tier relaxed to `auto` while it waited included). `None` on requests made
    /// before this was recorded, which [`Request::waited`] judges by their times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_once: Option<bool>,
    /// Optimistic-concurrency counter; the store bumps it on every save.
    pub version: u64,
}

/// Why a transition was refused. The request is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error(
        "request {id} is {state}; only {allowed} requests can be {action}{}",
        end_instead(.id, *.state, .action)
    )]
    WrongState {
        id: RequestId,
        state: State,
        action: &'static str,
        allowed: &'static str,
    },
    #[error("you cannot approve or deny your own request")]
    OwnRequest,
    #[error("you have already reviewed this request")]
    AlreadyReviewed,
    #[error(
        "your approval of this request is on record but no longer counts: its tier changed, or your groups or who you manage did, since you gave it, and approving again would not count either; {}",
        still_needed(.0)
    )]
    ApprovalVoid(Vec<String>),
    #[error("your approval would not count: {}", still_needed(.0))]
    NotEligible(Vec<String>),
    #[error("you may not deny this request: only a reviewer its tier names may (a two-person tier's second approver may approve, not deny), and it needs {}", .0.join(", "))]
    MayNotDeny(Vec<String>),
    #[error("{}", not_requester(.0))]
    NotRequester(&'static str),
    /// Approvals came too late: a pending request times out at its deadline, whenever that is
    /// recorded (the worker may not have seen it yet, after a restart say).
    #[error(
        "request {id} waited for approval until its deadline ({}) and timed out: ask again with `warden request create`",
        crate::rfc3339(*.deadline)
    )]
    Overdue {
        id: RequestId,
        deadline: OffsetDateTime,
    },
}

/// How to end a request in `state` that cannot be `action`: a grant under way is not cancelled
/// but revoked, as `not_requester` tells the others too.
fn end_instead(id: &RequestId, state: State, action: &str) -> String {
    match (state, action) {
        (State::Active, "cancelled") => format!("; end it with `warden request revoke {id}`"),
        _ => String::new(),
    }
}

/// Why someone other than the requester may not `action` a request; one who may end it
/// otherwise (a reviewer it names, an administrator) does so by revoking it.
fn not_requester(action: &str) -> String {
    match action {
        "cancel" => "only the requester can cancel this request: to end someone else's request, revoke it (`warden request revoke ID`), as its reviewers and administrators may".to_owned(),
        other => format!("only the requester can {other} this request"),
    }
}

/// What a refused approval is told is still needed: nothing, when the approvals given already
/// meet a tier relaxed since (a reload, a time-of-day rule no longer matching), which Warden's
/// own pass then grants.
fn still_needed(missing: &[String]) -> String {
    if missing.is_empty() {
        "the approvals given already meet what the policy asks now, and Warden grants it within a minute (or a reviewer the tier names completes it now)".to_owned()
    } else {
        format!("still needed is {}", missing.join(", "))
    }
}

impl TransitionError {
    /// A stable machine-readable code for API errors and audit events.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongState { .. } => "wrong_state",
            Self::OwnRequest => "own_request",
            Self::AlreadyReviewed => "already_reviewed",
            Self::NotEligible(_) | Self::MayNotDeny(_) | Self::ApprovalVoid(_) => "not_eligible",
            Self::NotRequester(_) => "not_requester",
            Self::Overdue { .. } => "timed_out",
        }
    }
}

/// What an approval achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approved {
    /// The requirement is met; the request is now [`State::Approved`].
    Complete,
    /// More approvals are needed.
    Partial(Progress),
}

fn after(t: OffsetDateTime, ttl: Ttl) -> OffsetDateTime {
    t + time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))
}

/// The tier break-glass access is shown and counted under: it skips approval, so it is no more
/// `auto` than any other tier.
pub const BREAKGLASS_TIER: &str = "breakglass";

/// The tier of an approval as [`Request::approval`] writes it; one this version cannot read is
/// counted as `unknown`.
pub fn tier_of_approval(approval: &str) -> &'static str {
    match approval {
        BREAKGLASS_TIER => BREAKGLASS_TIER,
        other => other.parse::<Requirement>().map_or("unknown", |r| r.tier()),
    }
}

impl Request {
    /// How this request is approved, as stored: its requirement written out, or
    /// [`BREAKGLASS_TIER`].
    pub fn approval(&self) -> String {
        self.approval_under(&self.requirement)
    }

    /// How this request is approved were its requirement `requirement` (what policy demands
    /// of it now, say): that written out, or [`BREAKGLASS_TIER`].
    pub fn approval_under(&self, requirement: &Requirement) -> String {
        match self.breakglass {
            Some(_) => BREAKGLASS_TIER.to_owned(),
            None => requirement.to_string(),
        }
    }

    /// The tier this request is counted under: its requirement's ([`Requirement::tier`]), or
    /// [`BREAKGLASS_TIER`].
    pub fn tier(&self) -> &'static str {
        match self.breakglass {
            Some(_) => BREAKGLASS_TIER,
            None => self.requirement.tier(),
        }
    }

    /// A new pending request that `decision` allows. The caller has already run
    /// [`Decision::check`]. An `auto` requirement leaves it pending too: the caller approves it
    /// at once with [`Request::approve_automatically`], so the audit trail shows both steps.
    pub fn new(
        id: RequestId,
        requester: UserName,
        ask: Ask,
        decision: &Decision,
        public_key: Option<String>,
        extends: Option<RequestId>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            requester,
            target: ask.target,
            role: ask.role,
            reason: ask.reason,
            ticket: ask.ticket,
            ttl: ask.ttl,
            state: State::Pending,
            requirement: decision.requirement.clone(),
            rules: decision.rules.clone(),
            rules_asked: None,
            recording: decision.recording,
            reviews: Vec::new(),
            counted: None,
            extends,
            public_key,
            credential: None,
            created_at: now,
            pending_deadline: after(now, decision.pending_timeout),
            activated_at: None,
            expires_at: None,
            ended_at: None,
            ended_by: None,
            end_comment: None,
            breakglass: None,
            warn_at: None,
            stepped_up: false,
            at_once: Some(false),
            version: 0,
        }
    }

    fn expect(
        &self,
        ok: &[State],
        action: &'static str,
        allowed: &'static str,
    ) -> Result<(), TransitionError> {
        if ok.contains(&self.state) {
            Ok(())
        } else if self.state == State::TimedOut && ok.contains(&State::Pending) {
            // Told as one past its deadline is before the worker records it: one answer,
            // whenever it comes.
            Err(TransitionError::Overdue {
                id: self.id,
                deadline: self.pending_deadline,
            })
        } else {
            Err(TransitionError::WrongState {
                id: self.id,
                state: self.state,
                action,
                allowed,
            })
        }
    }

    /// The approvals that count now: each giver as `directory` has them now *and* as they
    /// were when they approved, with only the groups of both. An approval stops counting when
    /// its giver leaves the directory or the group they approved as, and never counts for a
    /// group they joined later. Likewise for the manager's place, which the requester's
    /// manager fills only if they were so when they approved, as [`Request::weighed`] has the
    /// requester: the requirement is weighed against both.
    pub fn approvers(&self, directory: &Directory) -> Vec<User> {
        self.reviews
            .iter()
            .filter(|r| r.approves())
            .filter_map(|r| {
                let now = directory.get(&r.reviewer.name)?;
                Some(User {
                    name: now.name.clone(),
                    groups: r
                        .reviewer
                        .groups
                        .intersection(&now.groups)
                        .cloned()
                        .collect(),
                    manager: now.manager.clone(),
                })
            })
            .collect()
    }

    /// `requester` as this request's approvals are weighed: their manager of now fills the
    /// manager's place only if they were the requester's manager when they approved
    /// ([`Review::as_manager`]). One who approved before they became so is, for this request, no
    /// manager: their approval counts as their groups' alone, and the place stays open, as no
    /// one else could fill it (nor they, who approved already). An approval recorded before
    /// that was known is weighed as the directory has the manager now.
    pub fn weighed(&self, requester: &User) -> User {
        let mut weighed = requester.clone();
        let came_later = |manager: &UserName| {
            self.reviews
                .iter()
                .any(|r| r.approves() && r.reviewer.name == *manager && r.as_manager == Some(false))
        };
        if requester.manager.as_ref().is_some_and(came_later) {
            weighed.manager = None;
        }
        weighed
    }

    /// Moves an `auto`-tier request straight to approved.
    pub fn approve_automatically(&mut self) -> Result<(), TransitionError> {
        self.expect(&[State::Pending], "auto-approved", "pending")?;
        if !self.requirement.is_auto() {
            return Err(TransitionError::NotEligible(vec![
                self.requirement.to_string(),
            ]));
        }
        self.state = State::Approved;
        self.counted = Some(Vec::new());
        self.at_once = Some(true);
        Ok(())
    }

    /// Whether this request waits or waited for approval, and so had a pending deadline to
    /// meet: any but one approved as it was made ([`Request::at_once`]), however it ended
    /// after (a credential whose issue failed, or was cut short by a crash and ended at the
    /// next start, never waited for approval). One made before that was recorded is judged by
    /// what it kept: pending, a tier that needs approvals, a review, or a decision after it was
    /// made (its tier relaxed to `auto` while it waited).
    pub fn waited(&self) -> bool {
        if let Some(at_once) = self.at_once {
            return !at_once;
        }
        self.state == State::Pending
            || !self.requirement.is_auto()
            || !self.reviews.is_empty()
            || self
                .activated_at
                .or(self.ended_at)
                .is_some_and(|decided| decided > self.created_at)
    }

    /// Records `approver`'s approval under `requirement` (the tier policy demands now), the
    /// approvals given before counted as `directory` has their givers now.
    pub fn approve(
        &mut self,
        approver: &User,
        requester: &User,
        requirement: Requirement,
        directory: &Directory,
        comment: Comment,
        now: OffsetDateTime,
    ) -> Result<Approved, TransitionError> {
        self.expect(&[State::Pending], "approved", "pending")?;
        self.expect_in_time(now)?;
        let as_manager = requester.manager.as_ref() == Some(&approver.name);
        let requester = &self.weighed(requester);
        let standing = self.review_standing(requester, &requirement, directory);
        // One whose approval was withdrawn approves afresh; one whose approval stands void
        // would add nothing.
        if standing.void.contains(&approver.name) && !self.withdrew(&approver.name) {
            return Err(TransitionError::ApprovalVoid(standing.missing));
        }
        self.check_reviewer(approver)?;
        let approvers = self.approvers(directory);
        // A tier relaxed since the approvals were given may be met by them already: a reviewer
        // it names then completes it at once, as Warden's pass would.
        let met_already = requirement.progress(requester, &approvers).satisfied
            && requirement.names_reviewer(requester, approver);
        if !met_already && !requirement.would_count(requester, &approvers, approver) {
            return Err(TransitionError::NotEligible(
                requirement.progress(requester, &approvers).missing,
            ));
        }
        // The new approval takes the place of one withdrawn: one person, one approval.
        self.reviews
            .retain(|r| !(r.withdrawn_approval() && r.reviewer.name == approver.name));
        self.reviews.push(Review {
            reviewer: approver.clone(),
            verdict: Verdict::Approve,
            comment,
            at: now,
            as_manager: Some(as_manager),
            withdrawn: None,
        });
        let mut approvers = approvers;
        approvers.push(approver.clone());
        let progress = requirement.progress(requester, &approvers);
        if progress.satisfied {
            self.grant_counted(requester, &requirement, &approvers, &progress);
        }
        self.requirement = requirement;
        if progress.satisfied {
            self.state = State::Approved;
            Ok(Approved::Complete)
        } else {
            Ok(Approved::Partial(progress))
        }
    }

    /// Withdraws from a pending request the approvals `gone` picks by giver and time (those of
    /// users removed from the directory, or offboarded since, or whose password or second
    /// factor an administrator reset), so that put back later they count no more than their
    /// old password signs them in: they approve again, afresh. Each stays on record, marked
    /// void with `why` ([`Review::withdrawn`]). Returns whose were withdrawn.
    pub fn void_approvals(
        &mut self,
        gone: impl Fn(&UserName, OffsetDateTime) -> bool,
        why: &str,
    ) -> Vec<UserName> {
        if self.state != State::Pending {
            return Vec::new();
        }
        let mut voided = Vec::new();
        for r in &mut self.reviews {
            if r.approves() && gone(&r.reviewer.name, r.at) {
                r.withdrawn = Some(why.to_owned());
                voided.push(r.reviewer.name.clone());
            }
        }
        voided
    }

    /// Whether `user`'s approval of this request was withdrawn ([`Request::void_approvals`]).
    fn withdrew(&self, user: &UserName) -> bool {
        self.reviews
            .iter()
            .any(|r| r.withdrawn_approval() && r.reviewer.name == *user)
    }

    /// Gives a pending request the rules that decide it now, keeping those it was asked under
    /// ([`Request::rules_asked`]) the first time they change. Returns the rules it had.
    pub fn redecide_rules(&mut self, rules: Vec<String>) -> Vec<String> {
        let previous = std::mem::replace(&mut self.rules, rules);
        if self.rules_asked.is_none() && previous != self.rules {
            self.rules_asked = Some(previous.clone());
        }
        previous
    }

    /// The rules this request was asked under: those it was made under, where a reload or the
    /// clock changed them since ([`Request::rules_asked`]), else those of now.
    pub fn asked_under(&self) -> &[String] {
        self.rules_asked.as_deref().unwrap_or(&self.rules)
    }

    /// Approves a pending request whose approvals already meet `requirement`, the approval
    /// policy demands now (relaxed since they were given, or `auto`): no one could add to them.
    pub fn approve_as_met(
        &mut self,
        requester: &User,
        requirement: Requirement,
        directory: &Directory,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        self.expect(&[State::Pending], "approved", "pending")?;
        self.expect_in_time(now)?;
        let requester = &self.weighed(requester);
        let approvers = self.approvers(directory);
        let progress = requirement.progress(requester, &approvers);
        if !progress.satisfied {
            return Err(TransitionError::NotEligible(progress.missing));
        }
        self.grant_counted(requester, &requirement, &approvers, &progress);
        self.requirement = requirement;
        self.state = State::Approved;
        Ok(())
    }

    /// Fixes who counts toward the grant as `requirement` is met ([`Request::counted`]): those
    /// of `approvers` (as the directory has them now) whose approval `progress` does not leave
    /// void. A later change of policy or directory changes nothing of it.
    fn grant_counted(
        &mut self,
        requester: &User,
        requirement: &Requirement,
        approvers: &[User],
        progress: &Progress,
    ) {
        let void = void_among(requester, requirement, approvers, progress);
        self.counted = Some(
            approvers
                .iter()
                .map(|a| a.name.clone())
                .filter(|a| !void.contains(a))
                .collect(),
        );
    }

    /// Refuses to approve, deny or cancel a pending request at or past its deadline: it has
    /// timed out, whether or not the worker has recorded it yet.
    fn expect_in_time(&self, now: OffsetDateTime) -> Result<(), TransitionError> {
        if now < self.pending_deadline {
            Ok(())
        } else {
            Err(TransitionError::Overdue {
                id: self.id,
                deadline: self.pending_deadline,
            })
        }
    }

    fn check_reviewer(&self, reviewer: &User) -> Result<(), TransitionError> {
        if reviewer.name == self.requester {
            return Err(TransitionError::OwnRequest);
        }
        // An approval withdrawn is no review: its giver approves (or denies) afresh.
        if self
            .reviews
            .iter()
            .any(|r| r.reviewer.name == reviewer.name && !r.withdrawn_approval())
        {
            return Err(TransitionError::AlreadyReviewed);
        }
        Ok(())
    }

    /// Whether `requirement` waits for `candidate` on this request: it is pending, the tier
    /// names them (a member of its groups, the requester's manager) and their approval would
    /// fill a place still open. Those are whom a request is listed for as reviewable, and whom a
    /// changed tier is told of.
    pub fn awaits(
        &self,
        requester: &User,
        requirement: &Requirement,
        directory: &Directory,
        candidate: &User,
    ) -> bool {
        let requester = &self.weighed(requester);
        self.state == State::Pending
            && requirement.names_reviewer(requester, candidate)
            && requirement.would_count(requester, &self.approvers(directory), candidate)
    }

    /// Whether `candidate` may deny this pending request under `requirement`: a reviewer it
    /// names who has not reviewed it yet. A request no one may approve any more awaits them.
    pub fn may_deny(&self, requester: &User, requirement: &Requirement, candidate: &User) -> bool {
        self.state == State::Pending
            && self.check_reviewer(candidate).is_ok()
            && requirement.names_reviewer(requester, candidate)
    }

    /// Ends the request on a deny from a reviewer its tier names.
    pub fn deny(
        &mut self,
        reviewer: &User,
        requester: &User,
        requirement: &Requirement,
        directory: &Directory,
        comment: Comment,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        self.expect(&[State::Pending], "denied", "pending")?;
        self.expect_in_time(now)?;
        self.check_reviewer(reviewer)?;
        // Anyone may be a two-person tier's second approver; were anyone also able to deny,
        // anyone could block every such request.
        if !requirement.names_reviewer(requester, reviewer) {
            return Err(TransitionError::MayNotDeny(
                self.review_standing(requester, requirement, directory)
                    .missing,
            ));
        }
        self.reviews.push(Review {
            reviewer: reviewer.clone(),
            verdict: Verdict::Deny,
            comment: comment.clone(),
            at: now,
            as_manager: None,
            withdrawn: None,
        });
        self.finish(
            State::Denied,
            Some(reviewer.name.clone()),
            Some(comment),
            now,
        );
        Ok(())
    }

    /// Withdraws a request that has not been granted yet; only the requester may.
    pub fn cancel(&mut self, by: &UserName, now: OffsetDateTime) -> Result<(), TransitionError> {
        if by != &self.requester {
            return Err(TransitionError::NotRequester("cancel"));
        }
        self.expect(
            &[State::Pending, State::Approved],
            "cancelled",
            "pending (or approved and not yet active)",
        )?;
        if self.state == State::Pending {
            self.expect_in_time(now)?;
        }
        self.finish(State::Cancelled, Some(by.clone()), None, now);
        Ok(())
    }

    /// Starts the grant: the TTL clock runs from `now`. `credential` holds the public parts
    /// of what was issued.
    pub fn activate(
        &mut self,
        credential: Option<serde_json::Value>,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, TransitionError> {
        self.expect(&[State::Approved], "activated", "approved")?;
        let expires = after(now, self.ttl);
        self.state = State::Active;
        self.activated_at = Some(now);
        self.expires_at = Some(expires);
        self.credential = credential;
        Ok(expires)
    }

    /// Ends an active grant whose time is up. Refused before `expires_at`.
    pub fn expire(&mut self, now: OffsetDateTime) -> Result<(), TransitionError> {
        self.expect(&[State::Active], "expired", "active")?;
        match self.expires_at {
            // It ended at its expiry, however late the worker saw it (after a restart).
            Some(e) if e <= now => {
                self.finish(State::Expired, None, None, e);
                Ok(())
            }
            _ => Err(TransitionError::WrongState {
                id: self.id,
                state: self.state,
                action: "expired before their expiry time",
                allowed: "no",
            }),
        }
    }

    /// Whether `candidate` may end this request early (administrators aside): its requester,
    /// a reviewer `requirement` (the tier of now) names, or, once it is granted, someone whose
    /// approval counted toward it ([`Request::counted`]; one void then gives no such right). A
    /// pending request is withdrawn by no mere approver: a two-person tier's second approver
    /// may be anyone, who could otherwise block every such request by approving and
    /// withdrawing it.
    pub fn may_end(&self, requester: &User, requirement: &Requirement, candidate: &User) -> bool {
        candidate.name == self.requester
            || requirement.names_reviewer(requester, candidate)
            || self
                .counted
                .as_ref()
                .is_some_and(|counted| counted.contains(&candidate.name))
    }

    /// Ends a grant early, or withdraws a request before it is granted (offboarding). `by` is
    /// the person who did it, or `None` for Warden itself.
    pub fn revoke(
        &mut self,
        by: Option<&UserName>,
        comment: Comment,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        self.expect(
            &[State::Active, State::Approved, State::Pending],
            "revoked",
            "active, approved or pending",
        )?;
        self.finish(State::Revoked, by.cloned(), Some(comment), now);
        Ok(())
    }

    /// Ends an approved request whose credential could not be issued; nothing was granted. `why`
    /// starts with [`UNISSUED`], by which clients tell this end from a refusal.
    pub fn end_unissued(
        &mut self,
        why: String,
        now: OffsetDateTime,
    ) -> Result<(), TransitionError> {
        self.expect(&[State::Approved], "closed unissued", "approved")?;
        let comment = Comment::parse(&why.chars().take(Comment::MAX).collect::<String>()).ok();
        self.finish(State::Revoked, None, comment, now);
        Ok(())
    }

    /// Ends a request that waited for approval past its deadline.
    pub fn time_out(&mut self, now: OffsetDateTime) -> Result<(), TransitionError> {
        self.expect(&[State::Pending], "timed out", "pending")?;
        if now < self.pending_deadline {
            return Err(TransitionError::WrongState {
                id: self.id,
                state: self.state,
                action: "timed out before their deadline",
                allowed: "no",
            });
        }
        // It timed out at its deadline, however late the worker saw it (after a restart).
        self.finish(State::TimedOut, None, None, self.pending_deadline);
        Ok(())
    }

    fn finish(
        &mut self,
        state: State,
        by: Option<UserName>,
        comment: Option<Comment>,
        now: OffsetDateTime,
    ) {
        self.state = state;
        self.ended_at = Some(now);
        self.ended_by = by;
        self.end_comment = comment;
        self.warn_at = None;
    }

    /// When an active grant's time ran out, if it has by `now`: it ended then, whether or not
    /// the worker has recorded its expiry yet, so nothing may extend, revoke or hand out what
    /// it granted.
    pub fn ran_out(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.expires_at
            .filter(|e| self.state == State::Active && *e <= now)
    }

    /// Until when an active grant's access lasts, if it still does at `now`.
    pub fn active_until(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.expires_at
            .filter(|e| self.state == State::Active && *e > now)
    }

    /// The request's next deadline, when the worker must look at it: a pending request's
    /// review deadline, an active grant's warning or expiry, whichever comes first.
    pub fn due_at(&self) -> Option<OffsetDateTime> {
        match self.state {
            State::Pending => Some(self.pending_deadline),
            State::Active => self.warn_at.into_iter().chain(self.expires_at).min(),
            _ => None,
        }
    }

    /// Schedules the "ends soon" warning `lead` before an active grant's expiry, for grants
    /// longer than `lead` (a shorter one is ending soon from the start).
    pub fn warn_before(&mut self, lead: Ttl) {
        self.warn_at = match self.expires_at {
            Some(e) if self.state == State::Active && self.ttl > lead => {
                Some(e - time::Duration::seconds(i64::try_from(lead.as_secs()).unwrap_or(0)))
            }
            _ => None,
        };
    }

    /// Whether the "ends soon" warning is due at `now`; if so it is taken, so it is given once.
    pub fn take_warning(&mut self, now: OffsetDateTime) -> bool {
        match self.warn_at {
            Some(w) if self.state == State::Active && w <= now => {
                self.warn_at = None;
                true
            }
            _ => false,
        }
    }

    /// How the approvals given stand under `requirement` (the tier policy demands now), their
    /// givers' groups as `directory` has them. Once the request is approved, as they stood
    /// then: nothing is missing, and the approvals that did not count toward the grant
    /// ([`Request::counted`]) are void whatever the policy or the directory say since.
    pub fn review_standing(
        &self,
        requester: &User,
        requirement: &Requirement,
        directory: &Directory,
    ) -> ReviewStanding {
        let withdrawn = self
            .reviews
            .iter()
            .filter(|r| r.withdrawn_approval())
            .map(|r| r.reviewer.name.clone());
        if self.state != State::Pending {
            let mut void: Vec<UserName> = self.counted.as_ref().map_or_else(Vec::new, |counted| {
                self.reviews
                    .iter()
                    .filter(|r| r.approves() && !counted.contains(&r.reviewer.name))
                    .map(|r| r.reviewer.name.clone())
                    .collect()
            });
            void.extend(withdrawn);
            return ReviewStanding {
                missing: Vec::new(),
                void,
            };
        }
        let requester = &self.weighed(requester);
        let approvers = self.approvers(directory);
        let progress = requirement.progress(requester, &approvers);
        let mut void = void_among(requester, requirement, &approvers, &progress);
        void.extend(withdrawn);
        ReviewStanding {
            void,
            missing: progress.missing,
        }
    }
}

/// Those of `approvers` whose approvals count for nothing under `requirement`, as `progress`
/// found them: they fill no place, and the tier names them for none. A place each of the others
/// would fill is no void: the tier is met or waits for someone else, and such an approver still
/// counts if it comes to that.
fn void_among(
    requester: &User,
    requirement: &Requirement,
    approvers: &[User],
    progress: &Progress,
) -> Vec<UserName> {
    approvers
        .iter()
        .filter(|a| {
            !progress.counted.contains(&a.name) && !requirement.names_reviewer(requester, a)
        })
        .map(|a| a.name.clone())
        .collect()
}

/// How a request's approvals stand: a pending one's under the tier of the moment, a granted
/// one's as they stood when it was approved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewStanding {
    /// Who may still act, as text for people: e.g. `an approver from sre`.
    pub missing: Vec<String>,
    /// Who approved to no effect: a tier changed, or a group left, since they approved (and,
    /// once granted, before it was); their approval stays on record, and approving again would
    /// not count either. Also those whose approval was withdrawn ([`Review::withdrawn`]), who
    /// may approve afresh.
    pub void: Vec<UserName>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Decision;
    use time::macros::datetime;

    #[test]
    fn a_v7_id_carries_its_millisecond_and_others_none() {
        let at = datetime!(2026-03-01 12:34:56.789 UTC);
        assert_eq!(RequestId::v7(at, [7; 10]).instant(), Some(at));
        assert_eq!(RequestId::from_uuid(Uuid::from_u128(1)).instant(), None);
    }

    #[test]
    fn ids_have_one_spelling() {
        let id = "0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f60";
        assert_eq!(id.parse::<RequestId>().unwrap().to_string(), id);
        for other in [
            "0190c8a27c1e7def8b1a2f6c3d4e5f60",
            "{0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f60}",
            "urn:uuid:0190c8a2-7c1e-7def-8b1a-2f6c3d4e5f60",
            "not-a-uuid",
        ] {
            assert!(other.parse::<RequestId>().is_err(), "{other}");
        }
    }

    #[test]
    fn a_bad_id_longer_than_its_quote_is_said_to_be_so() {
        let refusal = |id: &str| id.parse::<RequestId>().unwrap_err().to_string();
        let said = refusal(&"a".repeat(47));
        assert!(
            said.starts_with(&format!("\"{}\"… is not", "a".repeat(40))),
            "{said}"
        );
        assert!(
            crate::text::unquoted(&said)
                .starts_with("(a value of 40 or more characters, not kept) is not a request id"),
            "{said}"
        );
        // One no longer than the quote is counted exactly.
        let short = refusal("not-a-uuid");
        assert!(short.starts_with("\"not-a-uuid\" is not"), "{short}");
        assert!(
            crate::text::unquoted(&short).starts_with("(a value of 10 characters, not kept)"),
            "{short}"
        );
        let forty = refusal(&"b".repeat(40));
        assert!(
            crate::text::unquoted(&forty).starts_with("(a value of 40 characters, not kept)"),
            "{forty}"
        );
    }

    fn user(name: &str, groups: &[&str], manager: Option<&str>) -> User {
        User {
            name: name.parse().unwrap(),
            groups: groups.iter().map(|g| g.parse().unwrap()).collect(),
            manager: manager.map(|m| m.parse().unwrap()),
        }
    }

    fn request(tier: &str) -> Request {
        let mut d = Decision::deny(vec![]);
        d.allowed = true;
        d.requirement = tier.parse().unwrap();
        d.max_ttl = "8h".parse().unwrap();
        d.pending_timeout = "1h".parse().unwrap();
        Request::new(
            RequestId::from_uuid(Uuid::nil()),
            "alice".parse().unwrap(),
            Ask {
                target: "web".parse().unwrap(),
                role: "admin".parse().unwrap(),
                reason: Reason::parse("debug").unwrap(),
                ticket: None,
                ttl: "1h".parse().unwrap(),
            },
            &d,
            None,
            None,
            datetime!(2026-01-01 10:00 UTC),
        )
    }

    #[test]
    fn ttl_starts_at_activation() {
        let alice = user("alice", &[], Some("mgr"));
        let mgr = user("mgr", &[], None);
        let mut r = request("manager");
        let t1 = datetime!(2026-01-01 10:30 UTC);
        let req = r.requirement.clone();
        assert_eq!(
            r.approve(
                &mgr,
                &alice,
                req,
                &Directory::default(),
                Comment::parse("").unwrap(),
                t1
            ),
            Ok(Approved::Complete)
        );
        assert_eq!(r.activate(None, t1), Ok(datetime!(2026-01-01 11:30 UTC)));
        assert!(r.expire(datetime!(2026-01-01 11:29 UTC)).is_err());
        assert_eq!(r.state, State::Active);
        // Seen late (the server was down at its expiry): it still ended at its expiry.
        r.expire(datetime!(2026-01-01 12:10 UTC)).unwrap();
        assert_eq!(r.state, State::Expired);
        assert_eq!(r.ended_at, Some(datetime!(2026-01-01 11:30 UTC)));
    }

    #[test]
    fn a_request_seen_late_timed_out_at_its_deadline() {
        let mut r = request("peer(sre)");
        r.time_out(datetime!(2026-01-01 13:00 UTC)).unwrap();
        assert_eq!(r.state, State::TimedOut);
        assert_eq!(r.ended_at, Some(r.pending_deadline));
    }

    #[test]
    fn no_approval_counts_from_the_deadline_on_however_late_the_timeout_is_recorded() {
        let alice = user("alice", &[], None);
        let bob = user("bob", &["sre"], None);
        let mut r = request("peer(sre)");
        let req = r.requirement.clone();
        let overdue = Err(TransitionError::Overdue {
            id: r.id,
            deadline: r.pending_deadline,
        });
        let c = || Comment::parse("").unwrap();
        let dir = Directory::new([alice.clone(), bob.clone()]).unwrap();
        let at_deadline = r.pending_deadline;
        assert_eq!(
            r.approve(&bob, &alice, req.clone(), &dir, c(), at_deadline),
            overdue.clone().map(|()| Approved::Complete)
        );
        assert_eq!(r.state, State::Pending);
        assert!(r.reviews.is_empty());
        // Approvals given in time that a new tier finds enough do not count late either.
        let just_before = at_deadline - time::Duration::milliseconds(1);
        let mut two = request("peer(sre, 2)");
        two.approve(
            &bob,
            &alice,
            two.requirement.clone(),
            &dir,
            c(),
            just_before,
        )
        .unwrap();
        assert_eq!(
            two.clone()
                .approve_as_met(&alice, req.clone(), &dir, at_deadline),
            overdue.map(|_| ())
        );
        two.approve_as_met(&alice, req, &dir, just_before).unwrap();
        assert_eq!(two.state, State::Approved);
    }

    /// One approved as it was made never waited, however late it ended: a credential issue cut
    /// short by a crash is ended at the next start, hours on.
    #[test]
    fn only_a_request_made_to_wait_waited_whenever_it_ended() {
        let alice = user("alice", &["dev"], None);
        let dir = Directory::new([alice.clone()]).unwrap();
        let mut at_once = request("auto");
        assert!(at_once.waited(), "pending, it waits");
        at_once.approve_automatically().unwrap();
        assert!(!at_once.waited());
        let restart = at_once.created_at + time::Duration::hours(3);
        at_once
            .end_unissued(format!("{UNISSUED}: interrupted"), restart)
            .unwrap();
        assert_eq!(at_once.ended_at, Some(restart));
        assert!(!at_once.waited());
        // Stored and read back, it says so still.
        let read: Request =
            serde_json::from_str(&serde_json::to_string(&at_once).unwrap()).unwrap();
        assert!(!read.waited());
        // One made to wait, whose tier became `auto` meanwhile, waited, ended as it may.
        let mut relaxed = request("peer(sre)");
        let later = relaxed.created_at + time::Duration::minutes(5);
        relaxed
            .approve_as_met(&alice, "auto".parse().unwrap(), &dir, later)
            .unwrap();
        assert!(relaxed.requirement.is_auto() && relaxed.reviews.is_empty());
        assert!(relaxed.waited());
        relaxed
            .end_unissued(format!("{UNISSUED}: target down"), later)
            .unwrap();
        assert!(relaxed.waited());
        // One stored before this was recorded is judged by its times: decided as made, it
        // did not wait.
        let mut legacy = serde_json::to_value(&at_once).unwrap();
        legacy.as_object_mut().unwrap().remove("at_once");
        let mut legacy: Request = serde_json::from_value(legacy).unwrap();
        assert_eq!(legacy.at_once, None);
        legacy.ended_at = Some(legacy.created_at);
        assert!(!legacy.waited());
    }

    #[test]
    fn a_pending_request_past_its_deadline_is_neither_denied_nor_cancelled() {
        let alice = user("alice", &[], None);
        let bob = user("bob", &["sre"], None);
        let dir = Directory::new([alice.clone(), bob.clone()]).unwrap();
        let mut r = request("peer(sre)");
        let (req, deadline) = (r.requirement.clone(), r.pending_deadline);
        let c = || Comment::parse("").unwrap();
        let overdue = Err(TransitionError::Overdue { id: r.id, deadline });
        assert_eq!(r.deny(&bob, &alice, &req, &dir, c(), deadline), overdue);
        assert_eq!(r.cancel(&alice.name, deadline), overdue);
        assert_eq!(r.state, State::Pending);
        r.cancel(&alice.name, deadline - time::Duration::milliseconds(1))
            .unwrap();
        assert_eq!(r.state, State::Cancelled);
    }

    #[test]
    fn approvals_that_meet_a_relaxed_tier_are_completed_by_a_reviewer_it_names() {
        let alice = user("alice", &[], None);
        let (bob, carl) = (user("bob", &["sre"], None), user("carl", &["sre"], None));
        let eve = user("eve", &["dev"], None);
        let dir = Directory::new([alice.clone(), bob.clone(), carl.clone(), eve.clone()]).unwrap();
        let mut r = request("peer(sre, 2)");
        let c = || Comment::parse("").unwrap();
        let now = r.created_at + time::Duration::minutes(1);
        let two = r.requirement.clone();
        assert!(matches!(
            r.approve(&bob, &alice, two, &dir, c(), now),
            Ok(Approved::Partial(_))
        ));
        // Relaxed to one: bob's approval meets it. Someone it does not name is told so.
        let one: Requirement = "peer(sre)".parse().unwrap();
        let refused = r.clone().approve(&eve, &alice, one.clone(), &dir, c(), now);
        assert_eq!(refused, Err(TransitionError::NotEligible(Vec::new())));
        let told = refused.unwrap_err().to_string();
        assert!(
            told.contains("already meet what the policy asks now"),
            "{told}"
        );
        assert_eq!(
            r.approve(&carl, &alice, one, &dir, c(), now),
            Ok(Approved::Complete)
        );
        assert_eq!(r.state, State::Approved);
    }

    #[test]
    fn refusals_leave_request_unchanged() {
        let alice = user("alice", &["sre"], None);
        let bob = user("bob", &["sre"], None);
        let eve = user("eve", &["dev"], None);
        let mut r = request("peer(sre)");
        let before = r.clone();
        let req = r.requirement.clone();
        let c = || Comment::parse("").unwrap();
        let now = datetime!(2026-01-01 10:01 UTC);
        assert_eq!(
            r.approve(&alice, &alice, req.clone(), &Directory::default(), c(), now),
            Err(TransitionError::OwnRequest)
        );
        assert!(matches!(
            r.approve(&eve, &alice, req.clone(), &Directory::default(), c(), now),
            Err(TransitionError::NotEligible(_))
        ));
        assert!(matches!(
            r.deny(&eve, &alice, &req, &Directory::default(), c(), now),
            Err(TransitionError::MayNotDeny(_))
        ));
        assert_eq!(r, before);
        r.cancel(&"alice".parse().unwrap(), now).unwrap();
        assert!(matches!(
            r.approve(&bob, &alice, req, &Directory::default(), c(), now),
            Err(TransitionError::WrongState {
                state: State::Cancelled,
                ..
            })
        ));
    }

    #[test]
    fn expiry_warning_is_given_once_and_only_for_long_grants() {
        let alice = user("alice", &[], Some("mgr"));
        let mgr = user("mgr", &[], None);
        let mut r = request("manager");
        let t = datetime!(2026-01-01 10:00 UTC);
        let req = r.requirement.clone();
        r.approve(
            &mgr,
            &alice,
            req,
            &Directory::default(),
            Comment::parse("").unwrap(),
            t,
        )
        .unwrap();
        r.activate(None, t).unwrap();
        r.warn_before("2h".parse().unwrap());
        assert_eq!(r.warn_at, None, "a 1h grant is shorter than the lead");
        r.warn_before("10m".parse().unwrap());
        assert_eq!(r.warn_at, Some(datetime!(2026-01-01 10:50 UTC)));
        assert!(!r.take_warning(datetime!(2026-01-01 10:49 UTC)));
        assert!(r.take_warning(datetime!(2026-01-01 10:50 UTC)));
        assert!(!r.take_warning(datetime!(2026-01-01 10:51 UTC)));
    }

    /// The approvals of a giver removed from the directory are withdrawn from a pending
    /// request, so that put back they count for nothing; others' stand, and a request decided
    /// already keeps its record. A withdrawn approval stays on record, void and saying why.
    #[test]
    fn approvals_of_givers_gone_from_the_directory_are_withdrawn_while_pending() {
        let alice = user("alice", &["dev"], None);
        let sam = user("sam", &["security"], None);
        let carol = user("carol", &["security"], None);
        let t = datetime!(2026-01-01 10:01 UTC);
        let c = || Comment::parse("").unwrap();
        let all = Directory::new([alice.clone(), sam.clone(), carol.clone()]).unwrap();
        let mut r = request("two-person(security)");
        let req = r.requirement.clone();
        r.approve(&carol, &alice, req.clone(), &all, c(), t)
            .unwrap();
        let mut decided = r.clone();
        let carol_gone = |u: &UserName| u.as_str() == "carol";
        assert_eq!(
            r.void_approvals(|u, _| carol_gone(u), "offboarded"),
            vec![carol.name.clone()]
        );
        assert_eq!(r.reviews.len(), 1);
        assert_eq!(r.reviews[0].withdrawn.as_deref(), Some("offboarded"));
        assert!(r.approvers(&all).is_empty());
        assert_eq!(
            r.review_standing(&alice, &req, &all).void,
            vec![carol.name.clone()]
        );
        assert!(
            r.void_approvals(|u, _| carol_gone(u), "offboarded")
                .is_empty()
        );
        // Put back, carol's approval of before does not complete it with sam's, and stays void.
        let mut with_sam = r.clone();
        assert!(matches!(
            with_sam.approve(&sam, &alice, req.clone(), &all, c(), t),
            Ok(Approved::Partial(_))
        ));
        assert_eq!(
            with_sam.review_standing(&alice, &req, &all).void,
            vec![carol.name.clone()]
        );
        decided.approve(&sam, &alice, req, &all, c(), t).unwrap();
        assert_eq!(decided.state, State::Approved);
        assert!(
            decided
                .void_approvals(|u, _| carol_gone(u), "offboarded")
                .is_empty()
        );
        assert_eq!(decided.reviews.len(), 2);
        assert!(decided.reviews.iter().all(|v| v.withdrawn.is_none()));
    }

    /// One whose approval was withdrawn (a password reset) approves afresh: the new approval
    /// takes the old one's place and counts, once; they may deny instead; and a withdrawn
    /// approval stays void on a request ended since, whether or not who counted is known.
    #[test]
    fn a_withdrawn_approval_is_replaced_by_a_fresh_one_that_counts_once() {
        let alice = user("alice", &["dev"], Some("mgr"));
        let mgr = user("mgr", &["managers"], None);
        let bob = user("bob", &["sre"], None);
        let dir = Directory::new([alice.clone(), mgr.clone(), bob.clone()]).unwrap();
        let c = || Comment::parse("").unwrap();
        let t = datetime!(2026-01-01 10:01 UTC);
        let later = datetime!(2026-01-01 10:05 UTC);
        let mut r = request("peer(sre) & manager");
        let tier = r.requirement.clone();
        r.approve(&bob, &alice, tier.clone(), &dir, c(), t).unwrap();
        let bobs = |u: &UserName, _| u.as_str() == "bob";
        assert_eq!(
            r.void_approvals(bobs, "their password was reset"),
            vec![bob.name.clone()]
        );
        // Withdrawn, bob's approval is void and waits for him again.
        let standing = r.review_standing(&alice, &tier, &dir);
        assert_eq!(standing.void, vec![bob.name.clone()]);
        assert_eq!(standing.missing.len(), 2, "{standing:?}");
        assert!(r.awaits(&alice, &tier, &dir, &bob));
        assert!(r.may_deny(&alice, &tier, &bob));

        // He approves afresh: counted, once, in place of the withdrawn one.
        let mut fresh = r.clone();
        assert!(matches!(
            fresh.approve(&bob, &alice, tier.clone(), &dir, c(), later),
            Ok(Approved::Partial(_))
        ));
        assert_eq!(fresh.reviews.len(), 1);
        assert_eq!(fresh.reviews[0].withdrawn, None);
        assert_eq!(fresh.reviews[0].at, later);
        assert!(fresh.review_standing(&alice, &tier, &dir).void.is_empty());
        assert_eq!(
            fresh
                .clone()
                .approve(&bob, &alice, tier.clone(), &dir, c(), later),
            Err(TransitionError::AlreadyReviewed)
        );
        assert_eq!(
            fresh.approve(&mgr, &alice, tier.clone(), &dir, c(), later),
            Ok(Approved::Complete)
        );
        assert_eq!(
            fresh.counted,
            Some(vec![bob.name.clone(), mgr.name.clone()])
        );

        // The manager's approval, withdrawn, neither fills the place nor keeps him from it.
        let mut m = request("peer(sre) & manager");
        m.approve(&mgr, &alice, tier.clone(), &dir, c(), t).unwrap();
        m.void_approvals(|u, _| u.as_str() == "mgr", "their second factor was reset");
        m.approve(&bob, &alice, tier.clone(), &dir, c(), t).unwrap();
        assert_eq!(
            m.approve(&mgr, &alice, tier.clone(), &dir, c(), later),
            Ok(Approved::Complete)
        );

        // Denied instead, or approved by others before he came back, his withdrawn approval
        // stays void on the record.
        let mut denied = r.clone();
        denied
            .deny(
                &bob,
                &alice,
                &tier,
                &dir,
                Comment::parse("no").unwrap(),
                later,
            )
            .unwrap();
        assert_eq!(denied.reviews.len(), 2);
        assert_eq!(
            denied.review_standing(&alice, &tier, &dir).void,
            vec![bob.name.clone()]
        );
        let carl = user("carl", &["sre"], None);
        let dir = Directory::new([alice.clone(), mgr.clone(), bob.clone(), carl.clone()]).unwrap();
        let mut others = r.clone();
        others
            .approve(&carl, &alice, tier.clone(), &dir, c(), later)
            .unwrap();
        others
            .approve(&mgr, &alice, tier.clone(), &dir, c(), later)
            .unwrap();
        assert_eq!(others.state, State::Approved);
        assert_eq!(
            others.counted,
            Some(vec![carl.name.clone(), mgr.name.clone()])
        );
        assert_eq!(
            others.review_standing(&alice, &tier, &dir).void,
            vec![bob.name.clone()]
        );
        others.counted = None;
        assert_eq!(
            others.review_standing(&alice, &tier, &dir).void,
            vec![bob.name.clone()]
        );
        // Stored and read back, it keeps why.
        let read: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(
            read.reviews[0].withdrawn.as_deref(),
            Some("their password was reset")
        );
    }

    /// The rules a request was asked under are kept the first time others decide it, however
    /// often they change after.
    #[test]
    fn the_rules_asked_under_are_kept_through_changes() {
        let mut r = request("peer(sre)");
        r.rules = vec!["ops-peer".to_owned()];
        assert_eq!(r.asked_under(), ["ops-peer"]);
        assert_eq!(r.redecide_rules(vec!["ops-peer".to_owned()]), ["ops-peer"]);
        assert_eq!(r.rules_asked, None);
        assert_eq!(
            r.redecide_rules(vec!["ops-peer-v2".to_owned()]),
            ["ops-peer"]
        );
        assert_eq!(
            r.redecide_rules(vec!["ops-peer-v3".to_owned()]),
            ["ops-peer-v2"]
        );
        assert_eq!(r.rules, ["ops-peer-v3"]);
        assert_eq!(r.asked_under(), ["ops-peer"]);
        let read: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(read, r);
    }

    /// An approval counts as its giver is now and was when they gave it: one who left the
    /// directory, or the group they approved as, no longer fills a place.
    #[test]
    fn approvals_count_as_their_givers_are_now() {
        let alice = user("alice", &["dev"], None);
        let sam = user("sam", &["security"], None);
        let carol = user("carol", &["dev"], None);
        let t = datetime!(2026-01-01 10:01 UTC);
        let c = || Comment::parse("").unwrap();
        let then = Directory::new([alice.clone(), sam.clone(), carol.clone()]).unwrap();
        let mut r = request("two-person(security)");
        let req = r.requirement.clone();
        assert!(matches!(
            r.approve(&sam, &alice, req.clone(), &then, c(), t),
            Ok(Approved::Partial(_))
        ));

        // sam moved to ops: carol's approval no longer completes the request.
        let moved =
            Directory::new([alice.clone(), user("sam", &["ops"], None), carol.clone()]).unwrap();
        assert_eq!(
            r.review_standing(&alice, &req, &moved).missing,
            vec!["an approver from security".to_owned()]
        );
        let mut after_move = r.clone();
        assert!(matches!(
            after_move.approve(&carol, &alice, req.clone(), &moved, c(), t),
            Err(TransitionError::NotEligible(_))
        ));

        // sam left the directory: the same.
        let gone = Directory::new([alice.clone(), carol.clone()]).unwrap();
        assert_eq!(r.review_standing(&alice, &req, &gone).missing.len(), 2);

        // A group joined after approving does not count either.
        let mut r = request("peer(sre)");
        let req = r.requirement.clone();
        let joined = Directory::new([alice.clone(), user("carol", &["dev", "sre"], None)]).unwrap();
        r.reviews.push(Review {
            reviewer: carol.clone(),
            verdict: Verdict::Approve,
            comment: c(),
            at: t,
            as_manager: Some(false),
            withdrawn: None,
        });
        assert_eq!(r.review_standing(&alice, &req, &joined).missing.len(), 1);

        // Unchanged, sam's approval stands.
        let mut r = request("two-person(security)");
        let req = r.requirement.clone();
        r.approve(&sam, &alice, req.clone(), &then, c(), t).unwrap();
        assert_eq!(
            r.approve(&carol, &alice, req, &then, c(), t),
            Ok(Approved::Complete)
        );
    }

    /// Which approvals counted is fixed as the request is approved: one void then stays void
    /// once granted, and lets its giver end the grant no more than it let them approve it,
    /// whatever changes later.
    #[test]
    fn approvals_void_at_the_grant_stay_void_and_give_no_right_to_end_it() {
        let alice = user("alice", &["dev"], None);
        let bob = user("bob", &["sre"], None);
        let carol = user("carol", &["sre", "dba"], None);
        let dave = user("dave", &["dba"], None);
        let dir =
            Directory::new([alice.clone(), bob.clone(), carol.clone(), dave.clone()]).unwrap();
        let c = || Comment::parse("").unwrap();
        let t = datetime!(2026-01-01 10:01 UTC);
        let mut r = request("peer(dba|sre, 2)");
        let either = r.requirement.clone();
        r.approve(&bob, &alice, either, &dir, c(), t).unwrap();
        // A reload asks for DBAs only: bob's approval is void while pending, and stays so.
        let dbas: Requirement = "peer(dba, 2)".parse().unwrap();
        assert_eq!(
            r.review_standing(&alice, &dbas, &dir).void,
            vec![bob.name.clone()]
        );
        r.approve(&dave, &alice, dbas.clone(), &dir, c(), t)
            .unwrap();
        assert_eq!(
            r.approve(&carol, &alice, dbas.clone(), &dir, c(), t),
            Ok(Approved::Complete)
        );
        assert_eq!(r.counted, Some(vec![dave.name.clone(), carol.name.clone()]));
        r.activate(None, t).unwrap();
        let granted = r.review_standing(&alice, &r.requirement, &dir);
        assert_eq!(granted.void, vec![bob.name.clone()]);
        assert!(granted.missing.is_empty());
        assert!(!r.may_end(&alice, &r.requirement, &bob));
        assert!(r.may_end(&alice, &r.requirement, &dave));
        // Which counted is not known of a request approved before it was recorded: none of
        // its approvals is shown void, nor lets anyone the tier does not name end it.
        let mut before = r.clone();
        before.counted = None;
        assert!(before.review_standing(&alice, &dbas, &dir).void.is_empty());
        assert!(!before.may_end(&alice, &dbas, &user("erin", &["ops"], None)));

        // A manager moved while it waited: the old one's approval counted for nothing.
        let old = user("mgr", &["managers"], None);
        let new = user("nina", &["managers"], None);
        let then = user("alice", &["dev"], Some("mgr"));
        let now = user("alice", &["dev"], Some("nina"));
        let dir = Directory::new([now.clone(), old.clone(), new.clone(), bob.clone()]).unwrap();
        let mut r = request("peer(sre) & manager");
        let tier = r.requirement.clone();
        r.approve(&old, &then, tier.clone(), &dir, c(), t).unwrap();
        r.approve(&new, &now, tier.clone(), &dir, c(), t).unwrap();
        assert_eq!(
            r.approve(&bob, &now, tier.clone(), &dir, c(), t),
            Ok(Approved::Complete)
        );
        assert_eq!(r.counted, Some(vec![new.name.clone(), bob.name.clone()]));
        assert_eq!(
            r.review_standing(&now, &tier, &dir).void,
            vec![old.name.clone()]
        );
        assert!(!r.may_end(&now, &tier, &old));
    }

    /// The manager's place is filled by one who was the requester's manager when they approved
    /// and is now: bob, who approved as an SRE before he became alice's manager, fills an SRE's
    /// place only, and dave's approval as the other SRE would count for nothing. An approval
    /// stored before this was recorded is weighed as the directory has the manager now.
    #[test]
    fn a_managers_place_is_filled_only_by_an_approval_given_as_the_manager() {
        let then = user("alice", &["dev"], Some("mallory"));
        let now = user("alice", &["dev"], Some("bob"));
        let mallory = user("mallory", &["managers"], None);
        let bob = user("bob", &["sre"], None);
        let dave = user("dave", &["sre"], None);
        let c = || Comment::parse("").unwrap();
        let t = datetime!(2026-01-01 10:01 UTC);
        let before =
            Directory::new([then.clone(), mallory.clone(), bob.clone(), dave.clone()]).unwrap();
        let after = Directory::new([now.clone(), mallory, bob.clone(), dave.clone()]).unwrap();
        let mut r = request("peer(sre) & manager");
        let tier = r.requirement.clone();
        assert!(matches!(
            r.approve(&bob, &then, tier.clone(), &before, c(), t),
            Ok(Approved::Partial(_))
        ));
        assert_eq!(r.reviews[0].as_manager, Some(false));
        let manager = vec!["the requester's manager".to_owned()];

        // bob is alice's manager now: his approval still fills the SRE's place, not the
        // manager's, which no one else could fill.
        let standing = r.review_standing(&now, &tier, &after);
        assert_eq!((standing.missing, standing.void), (manager.clone(), vec![]));
        assert!(!r.awaits(&now, &tier, &after, &dave));
        assert_eq!(
            r.clone().approve(&dave, &now, tier.clone(), &after, c(), t),
            Err(TransitionError::NotEligible(manager.clone()))
        );
        assert_eq!(
            r.clone().approve(&bob, &now, tier.clone(), &after, c(), t),
            Err(TransitionError::AlreadyReviewed)
        );
        assert_eq!(
            r.clone().approve_as_met(&now, tier.clone(), &after, t),
            Err(TransitionError::NotEligible(manager))
        );
        // He may still end it as her manager, as any reviewer the tier names may.
        assert!(r.may_end(&now, &tier, &bob));

        // Stored before whether he was her manager was recorded, his approval is weighed as
        // the directory has it now.
        let mut legacy = serde_json::to_value(&r).unwrap();
        let review = legacy["reviews"][0].as_object_mut().unwrap();
        assert_eq!(review.remove("as_manager"), Some(serde_json::json!(false)));
        let mut legacy: Request = serde_json::from_value(legacy).unwrap();
        assert_eq!(legacy.reviews[0].as_manager, None);
        assert_eq!(
            legacy.approve(&dave, &now, tier.clone(), &after, c(), t),
            Ok(Approved::Complete)
        );
        assert_eq!(
            legacy.counted,
            Some(vec![bob.name.clone(), dave.name.clone()])
        );

        // Her manager when he approved, and still, he fills the manager's place.
        let mut r = request("peer(sre) & manager");
        assert!(matches!(
            r.approve(&bob, &now, tier.clone(), &after, c(), t),
            Ok(Approved::Partial(_))
        ));
        assert_eq!(r.reviews[0].as_manager, Some(true));
        let read: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(read, r);
        assert_eq!(
            r.approve(&dave, &now, tier, &after, c(), t),
            Ok(Approved::Complete)
        );
        assert_eq!(r.counted, Some(vec![bob.name.clone(), dave.name.clone()]));
    }

    #[test]
    fn deny_ends_and_timeout_waits_for_deadline() {
        let alice = user("alice", &[], None);
        let bob = user("bob", &["sre"], None);
        let mut r = request("peer(sre)");
        let req = r.requirement.clone();
        r.deny(
            &bob,
            &alice,
            &req,
            &Directory::default(),
            Comment::parse("no").unwrap(),
            datetime!(2026-01-01 10:05 UTC),
        )
        .unwrap();
        assert_eq!(r.state, State::Denied);

        let mut r = request("peer(sre)");
        assert!(r.time_out(datetime!(2026-01-01 10:59 UTC)).is_err());
        r.time_out(datetime!(2026-01-01 11:00 UTC)).unwrap();
        assert_eq!(r.state, State::TimedOut);
    }
}
