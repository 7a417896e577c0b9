//! `/v1/breakglass`, `/v1/postmortems`, `/v1/report/drills` and `/v1/notifications/status`:
//! emergency access, its follow-up, the drill report and the notification outbox.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use warden_domain::Postmortem;

use super::requests::{CreateBody, parse_create, parse_id, view};
use super::views::RequestView;
use super::{ApiError, Authed, ErrorBody, JsonBody, PathText};
use crate::state::{Shared, now};
use warden_domain::audit::{Code, Event};
use warden_domain::rfc3339;

/// Emergency access: the fields of a request, and whether it is a drill.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassBody {
    pub target: String,
    pub role: String,
    /// What the emergency is.
    pub reason: String,
    /// The incident id, when the break-glass rule demands one.
    pub ticket: Option<String>,
    /// How long, at most the rule's maximum.
    pub ttl: String,
    pub public_key: Option<String>,
    /// A fresh TOTP code: always required.
    pub totp: Option<String>,
    /// A drill: the same path, flagged as a drill everywhere.
    #[serde(default)]
    pub drill: bool,
}

/// A postmortem.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostmortemView {
    /// The break-glass grant's id.
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(schema_with = postmortem_state)]
    pub state: String,
    pub requester: String,
    pub target: String,
    pub role: String,
    pub reason: String,
    pub drill: bool,
    #[schema(format = DateTime)]
    pub opened_at: String,
    #[schema(format = DateTime)]
    pub closed_at: Option<String>,
    pub closed_by: Option<String>,
    pub link: Option<String>,
    pub note: Option<String>,
}

fn postmortem_state() -> utoipa::openapi::Object {
    super::views::one_of(
        ["open", "closed"],
        "Whether the postmortem is still to be written.",
    )
}

impl From<&Postmortem> for PostmortemView {
    fn from(p: &Postmortem) -> Self {
        let c = p.closed.as_ref();
        Self {
            id: p.request.to_string(),
            state: if p.is_open() { "open" } else { "closed" }.to_owned(),
            requester: p.requester.to_string(),
            target: p.target.to_string(),
            role: p.role.to_string(),
            reason: p.reason.to_string(),
            drill: p.drill,
            opened_at: rfc3339(p.opened_at),
            closed_at: c.map(|c| rfc3339(c.at)),
            closed_by: c.map(|c| c.by.to_string()),
            link: c.map(|c| c.link.as_str().to_owned()),
            note: c.map(|c| c.note.to_string()),
        }
    }
}

/// Postmortems.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PostmortemList {
    pub postmortems: Vec<PostmortemView>,
}

/// Which postmortems to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PostmortemQuery {
    /// Closed ones too (default: only open ones).
    #[serde(default)]
    pub all: bool,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1)]
    pub limit: Option<usize>,
    /// Only postmortems older than this one (a grant's id): the id a page ended with, for
    /// the next page.
    pub before: Option<String>,
}

/// Closing words.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// Where the write-up is: an http:// or https:// URL.
    pub link: String,
    /// What was learned; required.
    pub note: String,
}

/// One break-glass role's drill status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DrillView {
    pub target: String,
    pub role: String,
    #[schema(format = DateTime)]
    pub last_drill: Option<String>,
    /// The last drill's grant.
    #[schema(format = Uuid)]
    pub request: Option<String>,
    /// Not drilled within 365 days.
    pub overdue: bool,
}

/// The drill report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DrillReport {
    pub roles: Vec<DrillView>,
}

/// The notification outbox.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OutboxView {
    /// Notifications not yet delivered, per sink row.
    pub pending: u64,
    /// Of those, how many failed at least once and wait for a retry.
    pub retrying: u64,
    pub delivered: u64,
    /// Dropped unsent because they no longer applied when they could be sent (an approval
    /// asked of a request since decided, a warning of an end that already came).
    pub skipped: u64,
    /// When the oldest undelivered notification was queued.
    pub oldest_pending: Option<String>,
    /// Configured sinks.
    pub sinks: Vec<NotifySinkView>,
    /// What each sink has yet to deliver, configured or not (one removed from the config keeps
    /// its notifications queued until it is back).
    pub backlog: Vec<SinkBacklogView>,
}

/// A configured notification sink.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NotifySinkView {
    pub name: String,
    /// `webhook` or `smtp`.
    pub kind: String,
    /// Where it delivers: a webhook's scheme, host and port (its path may be its secret), a
    /// mail relay's; never credentials.
    pub destination: String,
}

/// What one notification sink has yet to deliver.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SinkBacklogView {
    pub sink: String,
    /// Whether the config still names it.
    pub configured: bool,
    pub pending: u64,
    /// Of those, how many failed at least once and wait for a retry.
    pub retrying: u64,
    /// The error of the newest notification that failed and waits for a retry.
    pub last_error: Option<String>,
}

/// Breaks the glass: grants at once after MFA step-up under the break-glass rules, records in
/// full where Warden records sessions (SSH targets; a database grant says `metadata`), notifies
/// security and opens a postmortem.
#[utoipa::path(post, path = "/v1/breakglass", operation_id = "breakglass", request_body = BreakGlassBody, security(("token" = [])),
    responses((status = 201, body = RequestView),
        (status = 400, description = "`bad_target`, `bad_role`, `bad_reason`, `bad_ticket`, `bad_ttl` (a field that does not parse), `field_too_long` (`public_key` or `totp`), `bad_credential_input` (a public key the role cannot take)", body = ErrorBody),
        (status = 403, description = "`not_permitted` (no break-glass rule permits it), `ttl_above_max`, `ticket_required`, `ticket_mismatch`, `mfa_required` (send `totp`; a caller with no second factor is told to enrol one first, with `warden mfa enroll`), `mfa_failed` (a wrong code), `locked` (too many wrong codes in a row)", body = ErrorBody),
        (status = 404, description = "`unknown_target`, `unknown_role`", body = ErrorBody),
        (status = 409, description = "`changed_concurrently`: the request changed while it was granted: read it again", body = ErrorBody),
        (status = 502, description = "`issuer_failed`: the credential could not be issued at the target", body = ErrorBody)))]
pub async fn create(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<JsonBody<BreakGlassBody>, ApiError>,
) -> Result<(StatusCode, Json<RequestView>), ApiError> {
    // Every refused attempt is a `breakglass.refused`, bad input too (a body that is no JSON,
    // or not this one): an alert on that code must see each one, with the target and role it
    // was for where they are names.
    let refused = |target, role| {
        let mut event = Event::new(Code::BreakGlassRefused, who.actor(), now())
            .details(serde_json::json!({ "action": "breakglass.create" }));
        (event.target, event.role) = (target, role);
        event
    };
    let b = match raw {
        Ok(JsonBody(b)) => b,
        Err(e) => return Err(super::audited(&app, refused(None, None), e).await),
    };
    let drill = b.drill;
    let (target, role) = (b.target.parse().ok(), b.role.parse().ok());
    let parsed = parse_create(CreateBody {
        target: b.target,
        role: b.role,
        reason: b.reason,
        ticket: b.ticket,
        ttl: b.ttl,
        public_key: b.public_key,
        totp: b.totp,
    });
    let input = match parsed {
        Ok(i) => i,
        Err(e) => return Err(super::audited(&app, refused(target, role), e).await),
    };
    let outcome = app.breakglass(who.caller(), input, drill).await?;
    // No notice queued means no sink reaches security: the caller must tell them.
    let notified = outcome.notified;
    let mut v = view(&app, outcome);
    v.security_notified = Some(notified);
    Ok((StatusCode::CREATED, Json(v)))
}

/// Lists postmortems, newest first: all for security and administrators, your own otherwise.
#[utoipa::path(get, path = "/v1/postmortems", operation_id = "list_postmortems", params(PostmortemQuery), security(("token" = [])),
    responses((status = 200, body = PostmortemList), (status = 400, description = "`bad_id` (`before`), `bad_limit`", body = ErrorBody)))]
pub async fn list(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<Query<PostmortemQuery>, QueryRejection>,
) -> Result<Json<PostmortemList>, ApiError> {
    let asked = super::query(raw).and_then(|q| {
        let before = q.before.as_deref().map(parse_id).transpose()?;
        Ok((
            super::limit(q.limit, 100, super::POSTMORTEMS_AT_ONCE)?,
            before,
            q.all,
        ))
    });
    let (limit, before, all) = super::admitted(&app, &who, "postmortem.list", asked).await?;
    let found = app.postmortems(&who.caller(), !all, before, limit).await?;
    Ok(Json(PostmortemList {
        postmortems: found.iter().map(PostmortemView::from).collect(),
    }))
}

/// Shows one postmortem.
#[utoipa::path(get, path = "/v1/postmortems/{id}", operation_id = "show_postmortem", security(("token" = [])),
    responses((status = 200, body = PostmortemView), (status = 400, description = "`bad_id`", body = ErrorBody), (status = 404, description = "`no_postmortem`: no postmortem of that grant, or not the caller's to see", body = ErrorBody)))]
pub async fn show(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
) -> Result<Json<PostmortemView>, ApiError> {
    let id = super::admitted(&app, &who, "postmortem.show", parse_id(&id)).await?;
    let p = app.show_postmortem(&who.caller(), id).await?;
    Ok(Json((&p).into()))
}

/// Closes a postmortem with the write-up's link and a note, once its grant has ended (409
/// `grant_active` before) and an account made for it is gone from its target (409
/// `account_at_target` before). Security and administrators.
#[utoipa::path(post, path = "/v1/postmortems/{id}/close", request_body = CloseBody, security(("token" = [])),
    responses((status = 200, body = PostmortemView), (status = 400, description = "`bad_id`, `bad_note` (the note is missing or does not fit), `bad_link`", body = ErrorBody),
        (status = 403, description = "`not_permitted`: only security and administrators close postmortems, and not of their own break-glass", body = ErrorBody), (status = 404, description = "`no_postmortem`: no postmortem of that grant, or not the caller's to see", body = ErrorBody),
        (status = 409, description = "`already_closed`, `grant_active` (the grant has not ended), `account_at_target` (its database account is not gone yet), `changed_concurrently` (closed meanwhile)", body = ErrorBody)))]
pub async fn close(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
    raw: Result<JsonBody<CloseBody>, ApiError>,
) -> Result<Json<PostmortemView>, ApiError> {
    // Every refused close is a `postmortem.close_refused`, bad input too, naming the
    // postmortem where the path does.
    let refused = |request| {
        let mut event = Event::new(Code::PostmortemCloseRefused, who.actor(), now())
            .details(serde_json::json!({ "action": "postmortem.close" }));
        event.request_id = request;
        event
    };
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return Err(super::audited(&app, refused(None), e).await),
    };
    let b = match raw {
        Ok(JsonBody(b)) => b,
        Err(e) => return Err(super::audited(&app, refused(Some(id)), e).await),
    };
    let p = app
        .close_postmortem(who.caller(), id, &b.link, &b.note)
        .await?;
    Ok(Json((&p).into()))
}

/// Every break-glass role with its last drill, flagging those not drilled within a year.
/// Security and administrators.
#[utoipa::path(get, path = "/v1/report/drills", tag = "report", security(("token" = [])),
    responses((status = 200, body = DrillReport), (status = 403, description = "`not_permitted`: security and administrators only", body = ErrorBody)))]
pub async fn drills(State(app): State<Shared>, who: Authed) -> Result<Json<DrillReport>, ApiError> {
    if !app.is_security(&who.user) {
        let e = ApiError::forbidden("only security and administrators can see the drill report");
        return Err(super::refuse(&app, &who, "report.drills", e).await);
    }
    let roles = app
        .drill_report()
        .await?
        .into_iter()
        .map(|d| DrillView {
            target: d.target.to_string(),
            role: d.role.to_string(),
            last_drill: d.last.map(|(at, _)| rfc3339(at)),
            request: d.last.map(|(_, id)| id.to_string()),
            overdue: d.overdue,
        })
        .collect();
    Ok(Json(DrillReport { roles }))
}

/// The notification outbox's figures. Administrators only.
#[utoipa::path(get, path = "/v1/notifications/status", tag = "notifications", security(("token" = [])),
    responses((status = 200, body = OutboxView), (status = 403, description = "`not_permitted`: administrators only", body = ErrorBody)))]
pub async fn outbox(State(app): State<Shared>, who: Authed) -> Result<Json<OutboxView>, ApiError> {
    if !app.is_admin(&who.user) {
        let e = ApiError::forbidden("only administrators can see the notification outbox");
        return Err(super::refuse(&app, &who, "notify.status", e).await);
    }
    let s = app.outbox_status().await?;
    Ok(Json(OutboxView {
        pending: s.pending,
        retrying: s.retrying,
        delivered: s.delivered,
        skipped: s.skipped,
        oldest_pending: s.oldest_pending.map(rfc3339),
        sinks: app
            .config
            .notify
            .iter()
            .map(|c| NotifySinkView {
                name: c.name().to_owned(),
                kind: c.kind().to_owned(),
                destination: c.destination(),
            })
            .collect(),
        backlog: s
            .by_sink
            .into_iter()
            .map(|b| SinkBacklogView {
                configured: app.config.notify.iter().any(|c| c.name() == b.sink),
                sink: b.sink,
                pending: b.pending,
                retrying: b.retrying,
                last_error: b.last_error,
            })
            .collect(),
    }))
}
