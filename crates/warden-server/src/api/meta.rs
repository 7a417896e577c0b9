//! Health, readiness, the OpenAPI document, the SSH CA key, and audit search.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::{ApiDoc, ApiError, ErrorBody};
use crate::state::Shared;

/// Liveness: the process is serving.
#[utoipa::path(get, path = "/healthz", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long readiness waits for the store to answer a read.
const STORE_ANSWERS_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the store answers reads and takes writes, its disk has room for them, and the
/// audit log's checkpoints are being signed. A server that cannot write grants nothing and
/// audits nothing: a load balancer should send callers elsewhere, and its operator hear of it.
/// Writes are shown by the last transaction (one committed in the last seconds, or one that
/// failed in the last half minute), else by a one-row write of the check's own
/// ([`warden_store::Store::check_writes`]): an idle server whose disk went read-only or full
/// is not ready before its first caller is refused. Nothing here waits on the store for long:
/// writes that hang (a frozen filesystem) make the server unready within seconds, as do reads.
#[utoipa::path(get, path = "/readyz", responses((status = 200, content_type = "text/plain", body = String),
    (status = 503, description = "`not_ready`: the store does not answer or cannot write (writes fail, or are stalled), its disk has under 64 MiB free, or audit checkpoints fail; the message says which", body = ErrorBody)))]
pub async fn readyz(State(app): State<Shared>) -> Result<&'static str, ApiError> {
    let unready = |why: String| {
        tracing::warn!(why = %why, "not ready");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready: {why}"),
        )
    };
    match tokio::time::timeout(STORE_ANSWERS_WITHIN, app.store.next_due()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unready(format!("the store does not answer: {e}"))),
        Err(_) => {
            return Err(unready(format!(
                "the store does not answer: a one-row read did not end within {} s",
                STORE_ANSWERS_WITHIN.as_secs()
            )));
        }
    }
    if let Err(why) = app.store.check_writes().await {
        return Err(unready(format!("the store cannot write: {why}")));
    }
    match crate::disk_space::free_bytes(&app.config.data_dir) {
        Ok(free) => {
            if let Some(why) = crate::disk_space::shortage(free) {
                return Err(unready(why));
            }
        }
        Err(e) => {
            let dir = app.config.data_dir.display();
            return Err(unready(format!("cannot read the free space of {dir}: {e}")));
        }
    }
    let checkpoint = app.checkpoint_failure.lock().ok().and_then(|f| f.clone());
    if let Some(why) = checkpoint {
        return Err(unready(format!("audit checkpoints fail: {why}")));
    }
    Ok("ready\n")
}

/// This document: every `/v1` operation, its parameters, bodies and answers.
#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    // Built once: the document is the same for the server's life, and building it costs more
    // than any other unauthenticated call.
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(|| {
        serde_json::to_string(&ApiDoc::openapi()).unwrap_or_else(|_| "{}".to_owned())
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.as_str(),
    )
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

/// An OpenSSH key revocation list (KRL) of the SSH grants revoked before their certificates
/// expired, by the certificates' key id (the grant's id): serve it to sshd's `RevokedKeys` so
/// an early revoke takes effect at the host, not only at expiry. It names grants, not keys,
/// so it cuts off no other grant that certified the same key.
#[utoipa::path(get, path = "/v1/ssh/revoked-keys", responses((status = 200, content_type = "application/octet-stream"), (status = 503, body = ErrorBody)))]
pub async fn ssh_revoked_keys(State(app): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    let now = crate::state::now();
    // Listed until their certificates expire at hosts whose clocks are behind Warden's too, as
    // far behind as certificates are made valid early for.
    let skew = time::Duration::seconds(warden_issuers::ssh_cert::SKEW_SECS);
    let revoked = app
        .store
        .revoked_unexpired(now - skew)
        .await
        .map_err(crate::broker::Error::from)?;
    let mut grants: Vec<String> = revoked
        .iter()
        .filter(|r| {
            r.credential
                .as_ref()
                .is_some_and(|c| c["kind"] == "ssh-certificate")
        })
        .map(|r| r.id.to_string())
        .collect();
    grants.sort_unstable();
    let version = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let krl = app
        .ca
        .revocation_list(&grants, version)
        .map_err(|e| ApiError::internal(format!("building the revocation list: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], krl))
}
