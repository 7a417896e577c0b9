//! JSON shapes of the API. Times are RFC 3339 strings in UTC.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use warden_domain::lease::Removal;
use warden_domain::request::Verdict;
use warden_domain::{Decision, Lease, Recording, Request, State, rfc3339};

use crate::state::App;

/// A request and, once active, its grant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(schema_with = request_state)]
    pub state: String,
    pub requester: String,
    pub target: String,
    pub role: String,
    pub reason: String,
    pub ticket: Option<String>,
    pub ttl: String,
    /// The approval tier, e.g. `peer(sre) & manager`, or `breakglass`.
    pub tier: String,
    /// Ids of the policy rules that decided this request; for a pending one, those that decide
    /// its tier now.
    pub rules: Vec<String>,
    #[schema(schema_with = recording)]
    pub recording: String,
    /// Whether this is break-glass access, and whether a drill.
    pub breakglass: bool,
    pub drill: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Until when the request waits for approval before it times out: set on one that waits
    /// or waited for approval, null on one granted at once (an `auto` tier, break-glass), which
    /// never had a deadline to meet.
    #[schema(format = DateTime)]
    pub pending_deadline: Option<String>,
    #[schema(format = DateTime)]
    pub activated_at: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    pub ended_by: Option<String>,
    pub end_comment: Option<String>,
    #[schema(format = Uuid)]
    pub extends: Option<String>,
    pub reviews: Vec<ReviewView>,
    /// Approvals still needed, while pending: each open place of its tier, also when no one
    /// may approve it any more (`unapprovable` then says why).
    pub still_needed: Vec<String>,
    /// Why no one may approve this pending request any more (policy no longer permits it as
    /// made, or its requester left): it can only be denied or cancelled, or time out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unapprovable: Option<String>,
    /// The SSH public key sent with the request (an OpenSSH public key line), kept with it
    /// whatever the role: for an SSH role, the key its certificate certifies; for a role whose
    /// grant is a database account, none is certified and the key has no use (the client sends
    /// one before it knows which kind of role it asks for).
    pub public_key: Option<String>,
    /// Public facts about the issued credential (e.g. the SSH certificate).
    #[schema(value_type = Option<Object>)]
    pub credential: Option<serde_json::Value>,
    /// Secret parts of the credential: present only in the response that issued it.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<serde_json::Value>,
    /// In the response to a break-glass: whether a notice to security was queued (false when
    /// no `[[notify]]` sink reaches the security group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_notified: Option<bool>,
    /// In the answers about one request (show, revoke), for an ended grant that had a database
    /// account: whether the account is still at the target. The grant ends on record at once;
    /// its account goes only once the target confirms it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationView>,
}

/// The removal of an ended grant's database account at its target.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevocationView {
    #[schema(schema_with = removal_state)]
    pub state: String,
    /// The account at the target.
    pub account: String,
    /// Attempts that failed so far.
    pub attempts: u32,
    /// Why the last attempt failed, while the account is still there.
    pub last_error: Option<String>,
    /// When the next attempt is due, while the account is still there; one that is past is
    /// under way or waits for its turn.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// When the target confirmed the account gone.
    #[schema(format = DateTime)]
    pub removed_at: Option<String>,
}

impl RevocationView {
    /// How `lease`'s account's removal stands, if its grant has ended.
    fn of(lease: &Lease) -> Option<Self> {
        let removal = lease.removal()?;
        let gone = removal == Removal::Done;
        Some(Self {
            state: removal.as_str().to_owned(),
            account: lease.account.clone(),
            attempts: lease.attempts,
            last_error: lease.last_error.clone().filter(|_| !gone),
            next_attempt_at: lease.due_at.filter(|_| !gone).map(rfc3339),
            removed_at: lease.revoked_at.map(rfc3339),
        })
    }
}

/// One approver's action.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReviewView {
    pub reviewer: String,
    #[schema(schema_with = verdict)]
    pub verdict: String,
    pub comment: String,
    #[schema(format = DateTime)]
    pub at: String,
    /// Set on an approval that counts for nothing: of a pending request, under its tier now (the
    /// tier changed, or its giver's groups did, since it was given); of one approved since,
    /// under the tier that approved it, whatever changed after.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub void: bool,
    /// Why the approval was withdrawn while the request was pending, on one that was: its giver
    /// `offboarded`, `no longer in the directory`, or an administrator reset their password
    /// (`their password was reset`) or second factor (`their second factor was reset`). Such an
    /// approval is void and stays on record; its giver, where they still may, approves afresh,
    /// the new approval taking its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
}

impl RequestView {
    /// `r` as `app` shows it: a pending request with the approval policy demands now, and a
    /// grant whose time is up as expired ([`as_of`]).
    pub fn new(r: &Request, app: &App) -> Self {
        let r = &*as_of(r, crate::state::now());
        let crate::broker::Standing {
            requirement,
            rules,
            unapprovable,
        } = app.standing(r);
        let standing = app.review_standing(r, &requirement);
        Self {
            id: r.id.to_string(),
            state: r.state.to_string(),
            requester: r.requester.to_string(),
            target: r.target.to_string(),
            role: r.role.to_string(),
            reason: r.reason.to_string(),
            ticket: r.ticket.as_ref().map(ToString::to_string),
            ttl: r.ttl.to_string(),
            tier: r.approval_under(&requirement),
            rules,
            recording: r.recording.to_string(),
            breakglass: r.breakglass.is_some(),
            drill: r.breakglass.is_some_and(|b| b.drill),
            created_at: rfc3339(r.created_at),
            pending_deadline: r.waited().then(|| rfc3339(r.pending_deadline)),
            activated_at: r.activated_at.map(rfc3339),
            expires_at: r.expires_at.map(rfc3339),
            ended_at: r.ended_at.map(rfc3339),
            ended_by: r.ended_by.as_ref().map(ToString::to_string),
            end_comment: r.end_comment.as_ref().map(ToString::to_string),
            extends: r.extends.map(|e| e.to_string()),
            reviews: r
                .reviews
                .iter()
                .map(|v| ReviewView {
                    reviewer: v.reviewer.name.to_string(),
                    verdict: verdict_name(v.verdict).to_owned(),
                    comment: v.comment.to_string(),
                    at: rfc3339(v.at),
                    void: v.verdict == Verdict::Approve
                        && (v.withdrawn.is_some() || standing.void.contains(&v.reviewer.name)),
                    withdrawn: v
                        .withdrawn
                        .clone()
                        .filter(|_| v.verdict == Verdict::Approve),
                })
                .collect(),
            // The open places whether or not anyone may fill them now: `unapprovable` says why
            // no one may, and an empty list would read as nothing needed.
            still_needed: standing.missing,
            unapprovable,
            public_key: r.public_key.clone(),
            credential: r.credential.clone(),
            secret: None,
            security_notified: None,
            revocation: None,
        }
    }

    /// The view with the removal of the account of `lease`, the request's.
    pub fn with_revocation(mut self, lease: Option<&Lease>) -> Self {
        self.revocation = lease.and_then(RevocationView::of);
        self
    }
}

/// `r` as it stands at `now`: a grant whose time is up has ended, at its expiry, whether or not
/// the worker has recorded it yet (after a restart it has many to record, and on a full disk it
/// cannot), so it is shown expired as the worker will record it.
pub(crate) fn as_of(r: &Request, now: OffsetDateTime) -> Cow<'_, Request> {
    if r.ran_out(now).is_none() {
        return Cow::Borrowed(r);
    }
    let mut ended = r.clone();
    match ended.expire(now) {
        Ok(()) => Cow::Owned(ended),
        Err(_) => Cow::Borrowed(r),
    }
}

/// The state `r` is shown in at `now` ([`as_of`]), for lists filtered by state.
pub(crate) fn shown_state(r: &Request, now: OffsetDateTime) -> State {
    match r.ran_out(now) {
        Some(_) => State::Expired,
        None => r.state,
    }
}

/// How the API spells a verdict.
fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    }
}

/// The schema of a string that is one of `values`, which the code that writes it spells: a
/// client generated from the document gets an enumeration that cannot drift from the server.
pub(crate) fn one_of<S: Into<String>>(
    values: impl IntoIterator<Item = S>,
    description: &str,
) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.into_iter().map(Into::into)))
        .description(Some(description))
        .build()
}

fn request_state() -> Object {
    one_of(State::ALL.map(State::as_str), "The request's state.")
}

fn removal_state() -> Object {
    one_of(
        Removal::ALL.map(Removal::as_str),
        "pending: the account is still at the target, being removed, and no attempt failed yet; failing: it is still there, attempts to remove it failed and go on; done: the target confirmed it gone.",
    )
}

fn verdict() -> Object {
    one_of(
        [Verdict::Approve, Verdict::Deny].map(verdict_name),
        "The approver's verdict.",
    )
}

fn recording() -> Object {
    one_of(
        Recording::ALL.map(|r| r.to_string()),
        "How the grant's SSH sessions are recorded: their start and end only, in full for a random share of them, or in full.",
    )
}

/// A list of requests.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RequestList {
    pub requests: Vec<RequestView>,
}

/// What policy decides, with the rules that decided it. A denial sets nothing but `allowed`
/// and `rules` (the forbid rules that matched, or none): its tier, maximum TTL, MFA, recording
/// and pending timeout are null, since no request is granted for them to apply to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    pub allowed: bool,
    pub rules: Vec<String>,
    /// The approval tier, e.g. `peer(sre) & manager`, `auto`, or `breakglass` for break-glass
    /// access; null when denied.
    #[schema(required = true)]
    pub tier: Option<String>,
    /// The longest TTL a request may ask for; null when denied.
    #[schema(required = true)]
    pub max_ttl: Option<String>,
    pub ticket_patterns: Vec<String>,
    /// Whether a request needs MFA step-up; null when denied.
    #[schema(required = true)]
    pub mfa: Option<bool>,
    #[schema(schema_with = recording_if_allowed, required = true)]
    pub recording: Option<String>,
    /// How long a request waits for its approvals; null where nothing waits (an automatic or
    /// break-glass grant) and when denied.
    #[schema(required = true)]
    pub pending_timeout: Option<String>,
}

impl DecisionView {
    /// `d`, decided under the rules of `action`: break-glass access is granted without
    /// approval, and named so, as `request show` names such a grant.
    pub fn of(d: &Decision, action: warden_policy::Action) -> Self {
        let mut view = Self::from(d);
        if d.allowed && action == warden_policy::Action::Breakglass {
            view.tier = Some(warden_domain::request::BREAKGLASS_TIER.to_owned());
            view.pending_timeout = None;
        }
        view
    }
}

fn recording_if_allowed() -> Object {
    let mut schema = recording();
    schema.schema_type = [Type::String, Type::Null].into_iter().collect();
    schema.enum_values = schema.enum_values.map(|mut values| {
        values.push(serde_json::Value::Null);
        values
    });
    schema.description = Some(
        "How the grant's SSH sessions are recorded: their start and end only, in full for a random share of them, or in full; null when denied.".to_owned(),
    );
    schema
}

impl From<&Decision> for DecisionView {
    fn from(d: &Decision) -> Self {
        // A denial's settings are placeholders (`Decision::deny`): none is shown.
        let allowed = |v: String| d.allowed.then_some(v);
        Self {
            allowed: d.allowed,
            rules: d.rules.clone(),
            tier: allowed(d.requirement.to_string()),
            max_ttl: allowed(d.max_ttl.to_string()),
            ticket_patterns: d
                .ticket_patterns
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            mfa: d.allowed.then_some(d.mfa),
            recording: allowed(d.recording.to_string()),
            pending_timeout: (d.allowed && !d.requirement.is_auto())
                .then(|| d.pending_timeout.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use utoipa::OpenApi;
    use warden_domain::RequestId;

    use super::*;

    /// Alice's lease at `app-db`, its grant ended at 10:00 and its account not removed yet.
    fn ended() -> Lease {
        let at = datetime!(2026-01-01 10:00 UTC);
        let mut l = Lease::intent(
            RequestId::from_uuid(uuid::Uuid::nil()),
            "alice".parse().unwrap(),
            "app-db".parse().unwrap(),
            "read".parse().unwrap(),
            "w_alice_000000000000".into(),
            at,
            at,
        );
        l.activate(at);
        l.start_revoking(at);
        l
    }

    #[test]
    fn an_ended_grants_account_shows_whether_it_is_still_at_the_target() {
        let mut l = ended();
        assert_eq!(
            serde_json::to_value(RevocationView::of(&l)).unwrap(),
            serde_json::json!({
                "state": "pending", "account": "w_alice_000000000000", "attempts": 0,
                "last_error": null, "next_attempt_at": "2026-01-01T10:00:00.000Z", "removed_at": null,
            })
        );
        l.revoke_unreached(
            "the target could not be reached or refused the login: no answer within 5 s".into(),
            datetime!(2026-01-01 10:00:05 UTC),
        );
        assert_eq!(
            serde_json::to_value(RevocationView::of(&l)).unwrap(),
            serde_json::json!({
                "state": "failing", "account": "w_alice_000000000000", "attempts": 1,
                "last_error": "the target could not be reached or refused the login: no answer within 5 s",
                "next_attempt_at": "2026-01-01T10:00:07.000Z", "removed_at": null,
            })
        );
        l.revoked(datetime!(2026-01-01 10:00:08 UTC));
        assert_eq!(
            serde_json::to_value(RevocationView::of(&l)).unwrap(),
            serde_json::json!({
                "state": "done", "account": "w_alice_000000000000", "attempts": 1,
                "last_error": null, "next_attempt_at": null, "removed_at": "2026-01-01T10:00:08.000Z",
            })
        );
        let mut active = ended();
        active.activate(datetime!(2026-01-01 11:00 UTC));
        assert!(RevocationView::of(&active).is_none());
    }

    /// Alice's grant of `web/view` for an hour, granted at 10:00.
    fn granted() -> Request {
        let at = datetime!(2026-01-01 10:00 UTC);
        let mut d = Decision::deny(vec![]);
        d.allowed = true;
        d.requirement = "auto".parse().unwrap();
        d.max_ttl = "8h".parse().unwrap();
        let mut r = Request::new(
            RequestId::from_uuid(uuid::Uuid::nil()),
            "alice".parse().unwrap(),
            warden_domain::request::Ask {
                target: "web".parse().unwrap(),
                role: "view".parse().unwrap(),
                reason: warden_domain::Reason::parse("debug").unwrap(),
                ticket: None,
                ttl: "1h".parse().unwrap(),
            },
            &d,
            None,
            None,
            at,
        );
        r.approve_automatically().unwrap();
        r.activate(None, at).unwrap();
        r
    }

    #[test]
    fn a_grant_past_its_expiry_is_shown_expired_before_the_worker_records_it() {
        let r = granted();
        let before = datetime!(2026-01-01 10:59:59.999 UTC);
        assert_eq!(as_of(&r, before).state, State::Active);
        assert_eq!(shown_state(&r, before), State::Active);
        let after = datetime!(2026-01-01 11:00:05 UTC);
        let shown = as_of(&r, after);
        assert_eq!(shown.state, State::Expired);
        assert_eq!(shown.ended_at, Some(datetime!(2026-01-01 11:00 UTC)));
        assert_eq!(shown.ended_by, None);
        assert_eq!(shown_state(&r, after), State::Expired);
        // What is stored is left as it is, for the worker to record.
        assert_eq!(r.state, State::Active);
        // One ended otherwise is shown as it ended.
        let mut revoked = granted();
        revoked
            .revoke(
                Some(&"alice".parse().unwrap()),
                warden_domain::Comment::parse("done").unwrap(),
                datetime!(2026-01-01 10:30 UTC),
            )
            .unwrap();
        assert_eq!(as_of(&revoked, after).state, State::Revoked);
        assert_eq!(shown_state(&revoked, after), State::Revoked);
    }

    #[test]
    fn the_document_says_why_an_approval_was_withdrawn() {
        let doc = serde_json::to_value(crate::api::ApiDoc::openapi()).unwrap();
        let review = &doc["components"]["schemas"]["ReviewView"];
        let withdrawn = &review["properties"]["withdrawn"];
        assert_eq!(
            withdrawn["type"],
            serde_json::json!(["string", "null"]),
            "{review}"
        );
        let said = withdrawn["description"].as_str().unwrap();
        assert!(said.contains("their password was reset"), "{said}");
        assert!(
            !review["required"]
                .as_array()
                .unwrap()
                .contains(&"withdrawn".into()),
            "{review}"
        );
    }

    #[test]
    fn the_document_names_every_removal_state() {
        let doc = serde_json::to_value(crate::api::ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["RevocationView"]["properties"]["state"]["enum"],
            serde_json::json!(["pending", "failing", "done"])
        );
        assert_eq!(
            schemas["RequestView"]["properties"]["revocation"]["oneOf"][0]["$ref"],
            "#/components/schemas/RevocationView"
        );
    }
}
