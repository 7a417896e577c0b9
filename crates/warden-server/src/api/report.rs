//! `GET /metrics` (Prometheus text format) and `GET /v1/report` (the zero-standing-privilege
//! scorecard of a period).

use std::borrow::Cow;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use time::Duration;
use utoipa::IntoParams;
use warden_domain::report::{Input, Scorecard};

use super::{ApiError, Authed, ErrorBody, Source, query, refuse, rfc3339};
use crate::state::{Shared, now};

/// The default report period: the 30 days before `to`.
const DEFAULT_PERIOD: Duration = Duration::days(30);
/// Most requests one report reads; a longer period must be split.
const MAX_REQUESTS: usize = 200_000;

/// Every series in the Prometheus text exposition format 0.0.4. Open unless the config sets
/// `metrics_token`, then it needs `Authorization: Bearer <metrics_token>`. Shows counts by
/// state, tier, issuer kind and sink: never user names or request ids.
#[utoipa::path(get, path = "/metrics", security((), ("metrics_token" = [])), responses(
    (status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8"),
    (status = 401, description = "`unauthenticated`: the config sets a metrics_token, and the call did not send it", body = ErrorBody)))]
pub async fn metrics(
    State(app): State<Shared>,
    Source(source): Source,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(token) = &app.config.metrics_token {
        let presented = super::bearer(&headers);
        if !presented.is_some_and(|p| token.matches(p)) {
            let err = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "GET /metrics needs `Authorization: Bearer <token>` with the metrics_token of the server's config",
            );
            app.token_refused(
                source,
                &err.code,
                &err.message,
                serde_json::json!({ "endpoint": "/metrics" }),
            )
            .await?;
            return Err(err);
        }
    }
    let text = app
        .metrics
        .render(&app)
        .await
        .map_err(crate::broker::Error::from)?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text))
}

/// The report's period.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// RFC 3339; default 30 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339, exclusive; default now.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// The zero-standing-privilege scorecard of the requests created in `[from, to)`.
/// Administrators and the security group only.
#[utoipa::path(get, path = "/v1/report", params(ReportQuery), security(("token" = [])),
    responses((status = 200, body = Object, description = "The scorecard of the period (`from`, `to`): requests by state, grants, the share of access that was just in time and that had a ticket, privilege-seconds, approval times, break-glass uses, drills and open postmortems, revocation times and failures (`warden report --json` prints it)"), (status = 400, description = "`bad_time` (`from` or `to` is not an RFC 3339 time), `bad_period` (`from` is not before `to`), `period_too_large`", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators and audit readers only", body = ErrorBody)))]
pub async fn report(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Json<Scorecard>, ApiError> {
    if !app.may_report(&who.user) {
        let err = ApiError::forbidden(format!(
            "only administrators and members of {} can read the report",
            app.config.security_group
        ));
        return Err(refuse(&app, &who, "report", err).await);
    }
    let parse = |name: &str, v: Option<&str>| v.map(|t| rfc3339(name, t)).transpose();
    let period = query(raw).and_then(|q| {
        let to = parse("to", q.to.as_deref())?.unwrap_or_else(now);
        let from = match parse("from", q.from.as_deref())? {
            Some(from) => from,
            None => to.checked_sub(DEFAULT_PERIOD).filter(|f| f.year() >= 0).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_period",
                    "to is too early for the default period of 30 days before it: give from as well, or a later to",
                )
            })?,
        };
        if from >= to {
            return Err(ApiError::bad_request(
                "bad_period",
                "from must be before to (both RFC 3339, e.g. 2026-01-01T00:00:00Z)",
            ));
        }
        Ok((from, to))
    });
    let (from, to) = match period {
        Ok(p) => p,
        Err(e) => return Err(refuse(&app, &who, "report", e).await),
    };
    let mut period = app
        .store
        .period(from, to, MAX_REQUESTS + 1)
        .await
        .map_err(crate::broker::Error::from)?;
    if period.requests.len() > MAX_REQUESTS {
        let err = ApiError::bad_request(
            "period_too_large",
            format!(
                "the period holds more than {MAX_REQUESTS} requests; ask for a shorter one with from and to"
            ),
        );
        return Err(refuse(&app, &who, "report", err).await);
    }
    // Counted by their state now, as the views show them: a grant whose expiry has passed has
    // expired, whether or not the worker has recorded it yet.
    let now = now();
    for r in &mut period.requests {
        if let Cow::Owned(ended) = super::views::as_of(r, now) {
            *r = ended;
        }
    }
    Ok(Json(Scorecard::compute(Input {
        from,
        to,
        requests: &period.requests,
        postmortems: &period.postmortems,
        leases: &period.leases,
    })))
}
