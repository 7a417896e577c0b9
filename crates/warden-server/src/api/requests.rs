//! `/v1/requests`: create, list, show, approve, deny, cancel, revoke, extend.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use warden_domain::request::Ask;
use warden_domain::{Comment, Reason, Request, RequestId, Ticket, Ttl};
use warden_store::RequestFilter;

use super::views::{RequestList, RequestView};
use super::{
    ApiError, Authed, ErrorBody, JsonBody, NoFields, OptionalJson, PathText, body, field, refuse,
    refuse_about,
};
use crate::broker::{Create, Outcome};
use crate::state::Shared;

/// Longest accepted public key, in bytes (an RSA-16384 key is about 2.8 KiB).
pub(super) const MAX_PUBLIC_KEY: usize = 8192;

/// Requests read per query of a listing, and most queries one listing makes (a caller who may
/// see few requests in a long history is answered from the newest 50,000).
const LIST_PAGE: usize = 500;
const LIST_PAGES: usize = 100;
/// Longest accepted TOTP code field.
pub(super) const MAX_TOTP: usize = 16;

/// A new request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub target: String,
    pub role: String,
    /// Why access is needed.
    pub reason: String,
    /// Ticket or incident id, e.g. INC-1234.
    pub ticket: Option<String>,
    /// How long the grant lasts once active, e.g. 30m, 1h, 1h30m.
    pub ttl: String,
    /// Your SSH public key (OpenSSH format), which an ssh role's certificate certifies. A
    /// role whose grant is a database account takes one too and keeps it, unused: the request
    /// shows it either way.
    pub public_key: Option<String>,
    /// A fresh TOTP code, for roles that require MFA step-up.
    pub totp: Option<String>,
}

/// An approver's or revoker's words.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    #[serde(default)]
    pub comment: String,
    /// A fresh TOTP code, when the role requires MFA step-up.
    pub totp: Option<String>,
}

/// More time on an active grant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendBody {
    pub ttl: String,
    pub reason: Option<String>,
    pub totp: Option<String>,
}

/// Filters for listing requests.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only requests in this state.
    pub state: Option<String>,
    /// Only requests by this user.
    pub requester: Option<String>,
    /// Only requests for this target.
    pub target: Option<String>,
    /// Only pending requests waiting for this caller's review: those whose tier names the
    /// caller (a member of its groups, the requester's manager) and still has a place their
    /// approval would fill. A two-person tier's second approver may be anyone, who approves by
    /// id when asked.
    #[serde(default)]
    pub reviewable: bool,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1)]
    pub limit: Option<usize>,
    /// Only requests older than this one: the id a page ended with, for the next page.
    #[param(format = Uuid)]
    pub before: Option<String>,
}

/// `v`, the field `name`, if it is at most `max` bytes long.
pub(super) fn bounded<'a>(
    name: &str,
    v: Option<&'a str>,
    max: usize,
) -> Result<Option<&'a str>, ApiError> {
    match v {
        Some(s) if s.len() > max => Err(ApiError::bad_request(
            "field_too_long",
            format!("{name} is longer than {max} bytes"),
        )),
        other => Ok(other),
    }
}

pub(super) fn view(app: &Shared, outcome: Outcome) -> RequestView {
    let mut v = RequestView::new(&outcome.request, app);
    v.secret = outcome.secret.map(|s| s.expose().clone());
    v
}

pub(super) fn parse_id(raw: &str) -> Result<RequestId, ApiError> {
    field("bad_id", raw.parse())
}

/// A request's ticket field: blank is none (a form's empty field), as a policy asking for one
/// then says.
pub(super) fn ticket(given: Option<&str>) -> Result<Option<Ticket>, ApiError> {
    given
        .filter(|t| !t.trim().is_empty())
        .map(|t| field("bad_ticket", Ticket::parse(t)))
        .transpose()
}

pub(super) fn parse_create(b: CreateBody) -> Result<Create, ApiError> {
    let ask = Ask {
        target: field("bad_target", b.target.parse())?,
        role: field("bad_role", b.role.parse())?,
        reason: field("bad_reason", Reason::parse(&b.reason))?,
        ticket: ticket(b.ticket.as_deref())?,
        ttl: field("bad_ttl", b.ttl.parse::<Ttl>())?,
    };
    Ok(Create {
        ask,
        public_key: bounded("public_key", b.public_key.as_deref(), MAX_PUBLIC_KEY)?
            .map(str::to_owned),
        totp: bounded("totp", b.totp.as_deref(), MAX_TOTP)?.map(str::to_owned),
    })
}

/// Requests access. An `auto` tier answers with the active grant.
#[utoipa::path(post, path = "/v1/requests", operation_id = "create_request", request_body = CreateBody, security(("token" = [])),
    responses((status = 201, body = RequestView),
        (status = 400, description = "`bad_target`, `bad_role`, `bad_reason`, `bad_ticket`, `bad_ttl` (a field that does not parse), `field_too_long` (`public_key` or `totp`), `bad_credential_input` (a public key the role cannot take)", body = ErrorBody),
        (status = 403, description = "`not_permitted` (no rule permits it, or one forbids it), `ttl_above_max`, `ticket_required`, `ticket_mismatch`, `mfa_required` (send `totp`; a caller with no second factor is told to enrol one first, with `warden mfa enroll`), `mfa_failed` (a wrong code), `locked` (too many wrong codes in a row), `no_approvers` (no one could approve it)", body = ErrorBody),
        (status = 404, description = "`unknown_target`, `unknown_role`", body = ErrorBody),
        (status = 409, description = "`too_many_pending` (the requester has too many requests waiting for approval), `changed_concurrently` (the request changed while it was granted: read it again)", body = ErrorBody),
        (status = 502, description = "`issuer_failed`: granted, but the credential could not be issued at the target: the request ended (`request_id` names it)", body = ErrorBody)))]
pub async fn create(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<JsonBody<CreateBody>, ApiError>,
) -> Result<(StatusCode, Json<RequestView>), ApiError> {
    let b = body(&app, &who, "request.create", raw).await?;
    let input = match parse_create(b) {
        Ok(i) => i,
        Err(e) => return Err(refuse(&app, &who, "request.create", e).await),
    };
    let outcome = app.create(who.caller(), input, None).await?;
    Ok((StatusCode::CREATED, Json(view(&app, outcome))))
}

/// Lists requests the caller may see, newest first.
#[utoipa::path(get, path = "/v1/requests", operation_id = "list_requests", params(ListQuery), security(("token" = [])), responses((status = 200, body = RequestList),
    (status = 400, description = "`bad_state`, `bad_user`, `bad_target`, `bad_id` (`before`), `bad_limit`", body = ErrorBody)))]
pub async fn list(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<RequestList>, ApiError> {
    let asked = super::query(raw).and_then(|q| {
        let states = match q.state.as_deref() {
            Some(s) => vec![field("bad_state", s.parse())?],
            None => Vec::new(),
        };
        // Only pending requests await a review: any other state would list nothing.
        if q.reviewable && states.iter().any(|s| *s != warden_domain::State::Pending) {
            return Err(ApiError::bad_request(
                "bad_state",
                "reviewable requests are pending ones: leave the state out, or ask for pending ones only",
            ));
        }
        let requester = q
            .requester
            .as_deref()
            .map(|r| field("bad_user", r.parse()))
            .transpose()?;
        let target = q
            .target
            .as_deref()
            .map(|t| field("bad_target", t.parse()))
            .transpose()?;
        let limit = super::limit(q.limit, 100, super::REQUESTS_AT_ONCE)?;
        let before = q.before.as_deref().map(parse_id).transpose()?;
        Ok((q, states, requester, target, limit, before))
    });
    let (q, states, requester, target, limit, before) =
        super::admitted(&app, &who, "request.list", asked).await?;
    let shown = |r: &Request| {
        if q.reviewable {
            app.awaits(&who.user, r)
        } else {
            app.concerns(&who.user, r)
        }
    };
    // What the caller may see is decided here, not in the query: read pages, newest first,
    // until the limit is filled or the history ends, so that others' newer requests never
    // hide older ones of the caller's. Reviewable requests are pending, so only those are read.
    let mut filter = RequestFilter {
        requester,
        target,
        states: if q.reviewable {
            vec![warden_domain::State::Pending]
        } else {
            states
        },
        before,
        limit: LIST_PAGE,
    };
    let mut requests = Vec::new();
    for _ in 0..LIST_PAGES {
        let page = app
            .store
            .requests(filter.clone())
            .await
            .map_err(crate::broker::Error::from)?;
        let full = page.len() == LIST_PAGE;
        filter.before = page.last().map(|r| r.id);
        // A grant whose time is up is shown expired before the worker records it, and is not
        // listed among the active ones.
        let now = crate::state::now();
        let in_state = |r: &Request| {
            filter.states.is_empty() || filter.states.contains(&super::views::shown_state(r, now))
        };
        requests.extend(
            page.iter()
                .filter(|r| shown(r) && in_state(r))
                .take(limit - requests.len())
                .map(|r| RequestView::new(r, &app)),
        );
        if requests.len() == limit || !full {
            break;
        }
    }
    Ok(Json(RequestList { requests }))
}

/// Shows one request and, for an ended grant that had a database account, whether the account
/// is still at the target (`revocation`).
#[utoipa::path(get, path = "/v1/requests/{id}", operation_id = "show_request", security(("token" = [])), responses((status = 200, body = RequestView),
    (status = 400, description = "`bad_id`", body = ErrorBody), (status = 404, description = "`not_found`: no such request, or not the caller's to see", body = ErrorBody)))]
pub async fn show(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
) -> Result<Json<RequestView>, ApiError> {
    let id = super::admitted(&app, &who, "request.show", parse_id(&id)).await?;
    let r = app.show(who.caller(), id).await?;
    Ok(Json(view_with_revocation(&app, &r).await?))
}

/// `r` as `app` shows it, with its database account's removal once the grant has ended: the
/// answer about one request whose account may outlive its end.
async fn view_with_revocation(app: &Shared, r: &Request) -> Result<RequestView, ApiError> {
    let lease = app
        .store
        .lease(r.id)
        .await
        .map_err(crate::broker::Error::from)?;
    Ok(RequestView::new(r, app).with_revocation(lease.as_ref()))
}

/// The id and body of `action` on a request, or the refusal of either, audited: about the
/// request once its id parses, so that its history shows the refusal.
async fn request_input<T, const EMPTY_IS_DEFAULT: bool>(
    app: &Shared,
    who: &Authed,
    action: &str,
    id: &str,
    raw: Result<JsonBody<T, EMPTY_IS_DEFAULT>, ApiError>,
) -> Result<(RequestId, T), ApiError> {
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(e) => return Err(refuse(app, who, action, e).await),
    };
    match raw {
        Ok(JsonBody(b)) => Ok((id, b)),
        Err(e) => Err(refuse_about(app, who, action, Some(id), e).await),
    }
}

async fn review(
    app: Shared,
    who: Authed,
    id: String,
    approve: bool,
    raw: Result<OptionalJson<ReviewBody>, ApiError>,
) -> Result<Json<RequestView>, ApiError> {
    let action = if approve {
        "request.approve"
    } else {
        "request.deny"
    };
    let (id, b) = request_input(&app, &who, action, &id, raw).await?;
    let parsed = field("bad_comment", Comment::parse(&b.comment)).and_then(|comment| {
        let totp = bounded("totp", b.totp.as_deref(), MAX_TOTP)?.map(str::to_owned);
        Ok((comment, totp))
    });
    let (comment, totp) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(refuse_about(&app, &who, action, Some(id), e).await),
    };
    let outcome = app.review(who.caller(), id, approve, comment, totp).await?;
    Ok(Json(view(&app, outcome)))
}

/// Approves a pending request. Refused for the requester, for someone who already reviewed
/// it, and for anyone whose approval would not count toward the tier.
#[utoipa::path(post, path = "/v1/requests/{id}/approve", request_body = Option<ReviewBody>, security(("token" = [])),
    responses((status = 200, body = RequestView), (status = 400, description = "`bad_id`, `bad_comment`, `field_too_long` (`totp`)", body = ErrorBody), (status = 403, description = "`own_request`, `not_eligible` (the caller may not review it, or their approval would count for nothing), `not_permitted`, `mfa_required` (send `totp`), `mfa_failed` (a wrong code), `locked` (too many wrong codes in a row)", body = ErrorBody), (status = 404, description = "`not_found`: no such request, or not the caller's to see", body = ErrorBody),
        (status = 409, description = "`wrong_state` (not pending), `already_reviewed`, `timed_out` (past its pending deadline), `changed_concurrently` (changed meanwhile: read it again), `grant_ended` (the grant an extension extends has ended)", body = ErrorBody),
        (status = 502, description = "`issuer_failed`: approved, but the credential could not be issued at the target: the request ended", body = ErrorBody)))]
pub async fn approve(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
    raw: Result<OptionalJson<ReviewBody>, ApiError>,
) -> Result<Json<RequestView>, ApiError> {
    review(app, who, id, true, raw).await
}

/// Denies a pending request; a deny from an eligible approver ends it.
#[utoipa::path(post, path = "/v1/requests/{id}/deny", request_body = Option<ReviewBody>, security(("token" = [])),
    responses((status = 200, body = RequestView), (status = 400, description = "`bad_id`, `bad_comment`, `field_too_long` (`totp`)", body = ErrorBody), (status = 403, description = "`own_request`, `not_eligible` (the caller may not review it, or their approval would count for nothing), `not_permitted`, `mfa_required` (send `totp`), `mfa_failed` (a wrong code), `locked` (too many wrong codes in a row)", body = ErrorBody), (status = 404, description = "`not_found`: no such request, or not the caller's to see", body = ErrorBody),
        (status = 409, description = "`wrong_state` (not pending), `already_reviewed`, `timed_out` (past its pending deadline), `changed_concurrently` (changed meanwhile: read it again)", body = ErrorBody)))]
pub async fn deny(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
    raw: Result<OptionalJson<ReviewBody>, ApiError>,
) -> Result<Json<RequestView>, ApiError> {
    review(app, who, id, false, raw).await
}

/// Withdraws your own request before it is granted.
#[utoipa::path(post, path = "/v1/requests/{id}/cancel", request_body = Option<NoFields>, security(("token" = [])),
    responses((status = 200, body = RequestView), (status = 400, description = "`bad_id`", body = ErrorBody),
        (status = 403, description = "`not_requester`: only its requester cancels a request", body = ErrorBody), (status = 404, description = "`not_found`: no such request, or not the caller's to see", body = ErrorBody),
        (status = 409, description = "`wrong_state` (not pending), `timed_out` (past its pending deadline), `changed_concurrently` (changed meanwhile: read it again)", body = ErrorBody)))]
pub async fn cancel(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<Json<RequestView>, ApiError> {
    let (id, NoFields {}) = request_input(&app, &who, "request.cancel", &id, raw).await?;
    let r = app.cancel(who.caller(), id).await?;
    Ok(Json(RequestView::new(&r, &app)))
}

/// Ends a grant early and revokes its credential. The grant ends at once; a database account
/// is removed right after, and `revocation` says how that stands as the answer is made.
#[utoipa::path(post, path = "/v1/requests/{id}/revoke", request_body = Option<ReviewBody>, security(("token" = [])),
    responses((status = 200, body = RequestView), (status = 400, description = "`bad_id`, `bad_comment`, `field_too_long` (`totp`)", body = ErrorBody),
        (status = 403, description = "`not_permitted` (neither its requester nor an administrator), `mfa_required` (send `totp`), `mfa_failed` (a wrong code), `locked` (too many wrong codes in a row)", body = ErrorBody), (status = 404, description = "`not_found`: no such request, or not the caller's to see", body = ErrorBody),
        (status = 409, description = "`wrong_state` (not active), `changed_concurrently` (changed meanwhile: read it again)", body = ErrorBody)))]
pub async fn revoke(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
    raw: Result<OptionalJson<ReviewBody>, ApiError>,
) -> Result<Json<RequestView>, ApiError> {
    let (id, b) = request_input(&app, &who, "request.revoke", &id, raw).await?;
    let comment = match field("bad_comment", Comment::parse(&b.comment)) {
        Ok(c) => c,
        Err(e) => return Err(refuse_about(&app, &who, "request.revoke", Some(id), e).await),
    };
    let r = app.revoke(who.caller(), id, comment).await?;
    Ok(Json(view_with_revocation(&app, &r).await?))
}

/// Asks for more time: a new request linked to this one, decided and approved afresh.
#[utoipa::path(post, path = "/v1/requests/{id}/extend", request_body = ExtendBody, security(("token" = [])),
    responses((status = 201, body = RequestView),
        (status = 400, description = "`bad_id`, `bad_ttl`, `bad_reason`, `field_too_long` (`totp`), `ttl_adds_nothing` (the grant runs longer already)", body = ErrorBody),
        (status = 403, description = "`not_requester` (only its requester extends a grant), `not_permitted` (no rule permits it, or one forbids it), `ttl_above_max`, `ticket_required`, `ticket_mismatch`, `mfa_required` (send `totp`; a caller with no second factor is told to enrol one first, with `warden mfa enroll`), `mfa_failed` (a wrong code), `locked` (too many wrong codes in a row), `no_approvers` (no one could approve it)", body = ErrorBody), (status = 404, description = "`not_found`: no such request, or not the caller's to see", body = ErrorBody),
        (status = 409, description = "`wrong_state` (not active), `grant_ended`, `extension_pending` (one is waiting for approval already), `too_many_pending`, `changed_concurrently` (changed meanwhile: read it again)", body = ErrorBody),
        (status = 502, description = "`issuer_failed`: the extension's credential could not be issued at the target", body = ErrorBody)))]
pub async fn extend(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
    raw: Result<JsonBody<ExtendBody>, ApiError>,
) -> Result<(StatusCode, Json<RequestView>), ApiError> {
    let (id, b) = request_input(&app, &who, "request.extend", &id, raw).await?;
    let parsed = field("bad_ttl", b.ttl.parse::<Ttl>()).and_then(|ttl| {
        let reason = b
            .reason
            .as_deref()
            .map(|r| field("bad_reason", Reason::parse(r)))
            .transpose()?;
        let totp = bounded("totp", b.totp.as_deref(), MAX_TOTP)?.map(str::to_owned);
        Ok((ttl, reason, totp))
    });
    let (ttl, reason, totp) = match parsed {
        Ok(p) => p,
        Err(e) => return Err(refuse_about(&app, &who, "request.extend", Some(id), e).await),
    };
    let outcome = app.extend(who.caller(), id, ttl, reason, totp).await?;
    Ok((StatusCode::CREATED, Json(view(&app, outcome))))
}

/// Hands the requester their credential's secret (password, connection URL), once.
#[utoipa::path(post, path = "/v1/requests/{id}/credential", request_body = Option<NoFields>, security(("token" = [])),
    responses((status = 200, body = Object, description = "The grant's secret, once: its fields are the issuer's (a database account's `password` and `url`)"), (status = 400, description = "`bad_id`", body = ErrorBody),
        (status = 403, description = "`not_requester`: only its requester picks up a grant's secret", body = ErrorBody), (status = 404, description = "`not_found`: no such request, or not the caller's to see", body = ErrorBody),
        (status = 409, description = "Nothing to pick up: `not_granted` (not active), `already_picked_up`, `no_secret` (a grant without one), `grant_ended`", body = ErrorBody)))]
pub async fn credential(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, NoFields {}) = request_input(&app, &who, "request.credential", &id, raw).await?;
    Ok(Json(app.pickup(who.caller(), id).await?))
}
