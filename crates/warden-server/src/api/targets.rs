//! `/v1/targets/{name}`: admin credentials in the vault, and root rotation.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use warden_domain::TargetName;

use super::{
    ApiError, Authed, ErrorBody, JsonBody, NoFields, OptionalJson, PathText, admitted, body, field,
    refuse, refuse_at_target,
};
use crate::state::Shared;

/// The administrator account Warden uses at a target.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialBody {
    pub username: String,
    pub password: String,
    /// Log in to the target with it first, and store it only if that works (default true).
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

/// Stores a target's admin credential, sealed under the master key, once it logs in to the
/// target with what Warden needs (unless `verify` is false). Administrators.
#[utoipa::path(put, path = "/v1/targets/{name}/credential", request_body = CredentialBody, security(("token" = [])),
    responses((status = 204),
        (status = 400, description = "`bad_target`, `bad_credential` (outside the limits of `username` or `password`), `no_admin_credential` (a target of a kind reached without one), `credential_not_working` (the target refused its login, a setting is wrong, or it lacks a privilege Warden needs: nothing was stored)", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators only", body = ErrorBody),
        (status = 404, description = "`unknown_target`", body = ErrorBody),
        (status = 502, description = "`issuer_failed`: the target could not be reached (or failed) to try the credential; nothing was stored", body = ErrorBody)))]
pub async fn set_credential(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
    raw: Result<JsonBody<CredentialBody>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let b = body(&app, &who, "target.set_credential", raw).await?;
    let target: TargetName = match field("bad_target", name.parse()) {
        Ok(t) => t,
        Err(e) => return Err(refuse(&app, &who, "target.set_credential", e).await),
    };
    match app
        .set_target_credential(who.caller(), &target, &b.username, &b.password, b.verify)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => {
            let e = ApiError {
                withheld: Some(b.username.as_str().into()),
                ..e.into()
            };
            Err(refuse_at_target(&app, &who, "target.set_credential", &target, e).await)
        }
    }
}

/// Changes the target's admin password to a random one only Warden knows. Administrators.
#[utoipa::path(post, path = "/v1/targets/{name}/rotate-root", request_body = Option<NoFields>, security(("token" = [])),
    responses((status = 204),
        (status = 400, description = "`bad_target`, `no_admin_credential` (a target of a kind reached without one), `no_credential` (none stored yet: `PUT /v1/targets/{name}/credential`), `credential_not_working` (the target refused the stored login, or a setting is wrong; the old password stays)", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators only", body = ErrorBody),
        (status = 404, description = "`unknown_target`", body = ErrorBody),
        (status = 502, description = "`issuer_failed`: the target could not be reached, or did not take the new password; the old one stays", body = ErrorBody)))]
pub async fn rotate_root(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let asked = raw.and_then(|JsonBody(NoFields {})| field("bad_target", name.parse()));
    let target: TargetName = admitted(&app, &who, "target.rotate_root", asked).await?;
    match app.rotate_root(who.caller(), &target).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => {
            let e = e.into();
            Err(refuse_at_target(&app, &who, "target.rotate_root", &target, e).await)
        }
    }
}
