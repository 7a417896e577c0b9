//! Health, readiness, the OpenAPI document, the SSH CA key, and audit search.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, OpenApi, ToSchema};
use warden_domain::audit::Code;
use warden_store::AuditFilter;

use super::{ApiDoc, ApiError, Authed, ErrorBody, field};
use crate::state::Shared;

/// Liveness: the process is serving.
#[utoipa::path(get, path = "/healthz", responses((status = 200)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers and a policy is loaded.
#[utoipa::path(get, path = "/readyz", responses((status = 200), (status = 503)))]
pub async fn readyz(State(app): State<Shared>) -> (StatusCode, &'static str) {
    match app.store.next_due().await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such endpoint; see /v1/openapi.json",
    )
}

/// The SSH user CA public key, for sshd's `TrustedUserCAKeys`.
#[utoipa::path(get, path = "/v1/ssh/ca", responses((status = 200, content_type = "text/plain")))]
pub async fn ssh_ca(State(app): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", app.ca.public_key()),
    )
}

/// Audit search filters.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    pub user: Option<String>,
    pub target: Option<String>,
    pub request: Option<String>,
    /// An event code (`W2000`) or name (`request.created`).
    pub code: Option<String>,
    /// RFC 3339.
    pub from: Option<String>,
    /// RFC 3339.
    pub to: Option<String>,
    pub after_seq: Option<u64>,
    pub limit: Option<usize>,
}

/// One stored event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub seq: u64,
    /// Hex RFC 6962 leaf hash.
    pub leaf_hash: String,
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

/// Matching events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub events: Vec<AuditRecord>,
}

fn time_arg(v: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    v.map(|t| field("bad_time", OffsetDateTime::parse(t, &Rfc3339)))
        .transpose()
}

/// Searches the audit log, oldest first. Administrators see everything; others see their own
/// events.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery), security(("token" = [])),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody)))]
pub async fn audit(
    State(app): State<Shared>,
    who: Authed,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let mut user = q
        .user
        .as_deref()
        .map(|u| field("bad_user", u.parse()))
        .transpose()?;
    if !app.is_admin(&who.user) {
        if user.as_ref().is_some_and(|u| u != &who.user.name) {
            return Err(ApiError::forbidden(
                "only administrators can search other users' events",
            ));
        }
        user = Some(who.user.name.clone());
    }
    let code = q
        .code
        .as_deref()
        .map(|c| {
            Code::parse(c).ok_or_else(|| {
                ApiError::bad_request("bad_code", format!("unknown event code {c:?}"))
            })
        })
        .transpose()?;
    let filter = AuditFilter {
        user,
        target: q
            .target
            .as_deref()
            .map(|t| field("bad_target", t.parse()))
            .transpose()?,
        request: q
            .request
            .as_deref()
            .map(|r| field("bad_id", r.parse()))
            .transpose()?,
        code,
        from: time_arg(q.from.as_deref())?,
        to: time_arg(q.to.as_deref())?,
        after_seq: q.after_seq,
        limit: q.limit.unwrap_or(1000).clamp(1, 10_000),
    };
    let events = app
        .store
        .audit(filter)
        .await
        .map_err(crate::broker::Error::from)?;
    let events = events
        .into_iter()
        .map(|e| AuditRecord {
            seq: e.seq,
            leaf_hash: hex(&e.leaf_hash),
            event: serde_json::to_value(&e.event).unwrap_or_default(),
        })
        .collect();
    Ok(Json(AuditList { events }))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
