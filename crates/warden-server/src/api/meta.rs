//! Health, readiness, the OpenAPI document, the SSH CA key, and audit search.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::{ApiDoc, ApiError};
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
