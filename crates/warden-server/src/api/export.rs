//! `GET /v1/audit/status`: how far each export sink has delivered the audit log.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, Authed, ErrorBody};
use crate::state::Shared;
use warden_domain::rfc3339;

/// The export's state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditStatus {
    /// The latest sequence number in the audit log.
    pub log_size: u64,
    pub sinks: Vec<SinkStatus>,
}

/// One sink's figures.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SinkStatus {
    pub name: String,
    /// file, syslog or webhook.
    pub kind: String,
    /// Where it delivers: a path, `tcp://host:port`, or a URL without credentials or query.
    pub destination: String,
    /// The last sequence number delivered.
    pub cursor: u64,
    /// Events not yet delivered: `log_size - cursor`.
    pub lag: u64,
    /// Deliveries failed in a row since the last success.
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_success: Option<String>,
}

/// The audit export's progress per sink. Administrators and audit readers.
#[utoipa::path(get, path = "/v1/audit/status", operation_id = "audit_status", tag = "audit", security(("token" = [])),
    responses((status = 200, body = AuditStatus), (status = 403, description = "`not_permitted`: administrators and audit readers only", body = ErrorBody)))]
pub async fn status(State(app): State<Shared>, who: Authed) -> Result<Json<AuditStatus>, ApiError> {
    let allowed = super::require_audit_reader(&app, &who, "see the audit export status");
    super::admitted(&app, &who, "audit.status", allowed).await?;
    let snap = app.export.snapshot();
    let log_size = crate::export::log_head(&app, snap.log_size)
        .await
        .map_err(crate::broker::Error::from)?;
    let sinks = snap
        .sinks
        .into_iter()
        .map(|s| SinkStatus {
            lag: log_size.saturating_sub(s.cursor),
            name: s.name,
            kind: s.kind.to_owned(),
            destination: s.destination,
            cursor: s.cursor,
            failures: s.failures,
            last_error: s.last_error,
            last_success: s.last_success.map(rfc3339),
        })
        .collect();
    Ok(Json(AuditStatus { log_size, sinks }))
}
