//! `/v1/auth` and `/v1/users`: login, logout, whoami, MFA enrolment, passwords, lockouts.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_domain::UserName;

use super::{
    ApiError, Authed, ErrorBody, JsonBody, NoFields, OptionalJson, PathText, Source, body, field,
    refuse,
};
use crate::state::Shared;
use warden_domain::rfc3339;

/// Longest accepted password, in bytes; argon2 cost grows with it.
const MAX_PASSWORD: usize = warden_domain::password::MAX_BYTES;
/// Longest accepted user name at sign-in, in bytes; no directory name comes near it.
const MAX_USER: usize = 256;
/// Longest accepted TOTP code at sign-in; codes have 6 digits.
const MAX_TOTP: usize = 16;

/// Credentials to exchange for a token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub user: String,
    pub password: String,
    /// Required once the user has enrolled MFA.
    pub totp: Option<String>,
}

/// A token, shown once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub user: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// Who the caller is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub user: String,
    pub groups: Vec<String>,
    pub manager: Option<String>,
    pub admin: bool,
    pub mfa_enrolled: bool,
    /// When the token used for this call stops working (RFC 3339).
    #[schema(format = DateTime)]
    pub token_expires_at: String,
}

/// MFA enrolment.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    /// A current code from the existing factor, when replacing it.
    pub totp: Option<String>,
}

/// The otpauth URI to load into an authenticator app.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollResponse {
    pub otpauth_uri: String,
}

/// A TOTP code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    pub code: String,
}

/// A new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    pub password: String,
    /// The caller's current password, required to change their own: a stolen token alone
    /// must not take the account over. Not used for another user's.
    pub current_password: Option<String>,
    /// A fresh code of the caller's own second factor, when they have one: to change their
    /// own password, or as an administrator another user's.
    pub totp: Option<String>,
}

/// MFA step-up for an administrator's change of another user's credentials.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepUpBody {
    /// A fresh code of the caller's own second factor, when they have one.
    pub totp: Option<String>,
}

/// A password set, and what ended with the old one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PasswordSet {
    pub user: String,
    /// SSH keys registered to the user, removed: they register theirs again.
    pub ssh_keys_removed: usize,
    /// Live SSH sessions of the user, ended.
    pub sessions_ended: usize,
}

/// Exchanges a password (and TOTP code) for an API token.
#[utoipa::path(post, path = "/v1/auth/login", request_body = LoginBody,
    responses((status = 200, body = LoginResponse),
        (status = 400, description = "`field_too_long` (`user`, `password` or `totp`)", body = ErrorBody),
        (status = 401, description = "`bad_credentials` (an unknown user, a wrong password or code, or a user locked after too many wrong ones in a row, never saying which), `totp_required` (the password is right and the user has a second factor: send it again with `totp`)", body = ErrorBody),
        (status = 503, description = "`sign_ins_busy`: too many sign-ins are waiting for a password check, or this one waited 15 s: it was not checked and counts as no failure; send it again after `Retry-After` seconds; `storage_unavailable`: the store cannot be read or written, or holds a record it cannot read (the server's log says which); `storage_full`: the disk of the store's data dir is full; either way nothing was changed, and the call may be made again", body = ErrorBody),
        (status = 429, description = "`too_many_failures`: too many failed sign-ins, or calls with a missing or invalid token, from this address; `too_many_sign_ins`: 20 sign-ins from this address are under way already (this one was not checked and counts as no failure); see `Retry-After`", body = ErrorBody)))]
pub async fn login(
    State(app): State<Shared>,
    Source(source): Source,
    raw: Result<JsonBody<LoginBody>, ApiError>,
) -> Result<Json<LoginResponse>, ApiError> {
    // A sign-in refused for its form is on the record too, and counts against the address.
    let refuse = |name: Option<String>, e: ApiError| {
        let (app, source) = (app.clone(), source.clone());
        async move {
            match app
                .unreadable_login(source, name.as_deref(), &e.code, &e.message)
                .await
            {
                Ok(()) => e,
                Err(auth) => auth.into(),
            }
        }
    };
    let b = match raw {
        Ok(JsonBody(b)) => b,
        Err(e) => return Err(refuse(None, e).await),
    };
    let too_long = if b.user.len() > MAX_USER {
        Some(format!("user is longer than {MAX_USER} bytes"))
    } else if b.password.len() > MAX_PASSWORD {
        Some(format!("password is longer than {MAX_PASSWORD} bytes"))
    } else if b.totp.as_ref().is_some_and(|t| t.len() > MAX_TOTP) {
        Some(format!(
            "totp is longer than {MAX_TOTP} bytes: send the 6-digit code your authenticator shows"
        ))
    } else {
        None
    };
    if let Some(why) = too_long {
        let e = ApiError::bad_request("field_too_long", why);
        return Err(refuse(Some(b.user), e).await);
    }
    let issued = app
        .login(&b.user, &b.password, b.totp.as_deref(), source)
        .await?;
    Ok(Json(LoginResponse {
        token: issued.token,
        user: b.user,
        expires_at: rfc3339(issued.expires_at),
    }))
}

/// Revokes the token used for this call.
#[utoipa::path(post, path = "/v1/auth/logout", request_body = Option<NoFields>, security(("token" = [])), responses((status = 204)))]
pub async fn logout(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let NoFields {} = body(&app, &who, "auth.logout", raw).await?;
    app.logout(&who.token, &who.user, who.source.clone())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/v1/auth/whoami", security(("token" = [])), responses((status = 200, body = WhoAmI)))]
pub async fn whoami(State(app): State<Shared>, who: Authed) -> Result<Json<WhoAmI>, ApiError> {
    Ok(Json(WhoAmI {
        user: who.user.name.to_string(),
        groups: who.user.groups.iter().map(ToString::to_string).collect(),
        manager: who.user.manager.as_ref().map(ToString::to_string),
        admin: app.is_admin(&who.user),
        mfa_enrolled: app.mfa_enrolled(&who.user.name).await?,
        token_expires_at: rfc3339(who.token_expires_at),
    }))
}

/// Starts TOTP enrolment; confirm it with a first code.
#[utoipa::path(post, path = "/v1/auth/mfa/enroll", request_body = Option<EnrollBody>, security(("token" = [])),
    responses((status = 200, body = EnrollResponse), (status = 400, description = "`field_too_long` (`totp`)", body = ErrorBody),
        (status = 403, description = "Replacing a factor: `mfa_required` (send `totp`), `mfa_failed` (a wrong code), `locked` (too many wrong codes in a row)", body = ErrorBody)))]
pub async fn mfa_enroll(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<OptionalJson<EnrollBody>, ApiError>,
) -> Result<Json<EnrollResponse>, ApiError> {
    let b = body(&app, &who, "mfa.enroll", raw).await?;
    let totp = match super::requests::bounded("totp", b.totp.as_deref(), super::requests::MAX_TOTP)
    {
        Ok(totp) => totp,
        Err(e) => return Err(refuse(&app, &who, "mfa.enroll", e).await),
    };
    // A wrong code counts towards the lockout; its refusal is on the record like any other.
    match app.mfa_enroll(&who.user, totp, who.source.clone()).await {
        Ok(uri) => Ok(Json(EnrollResponse { otpauth_uri: uri })),
        Err(e) => Err(refuse(&app, &who, "mfa.enroll", e.into()).await),
    }
}

/// Confirms TOTP enrolment.
#[utoipa::path(post, path = "/v1/auth/mfa/confirm", request_body = CodeBody, security(("token" = [])),
    responses((status = 204), (status = 400, description = "`field_too_long` (`code`)", body = ErrorBody),
        (status = 403, description = "`mfa_failed` (a wrong code), `locked` (too many wrong codes in a row)", body = ErrorBody),
        (status = 409, description = "`no_enrolment` (no enrolment to confirm: enrol first), `changed_concurrently` (the enrolment changed meanwhile: enrol again)", body = ErrorBody)))]
pub async fn mfa_confirm(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<JsonBody<CodeBody>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let b = body(&app, &who, "mfa.confirm", raw).await?;
    if let Err(e) = super::requests::bounded("code", Some(&b.code), super::requests::MAX_TOTP) {
        return Err(refuse(&app, &who, "mfa.confirm", e).await);
    }
    match app
        .mfa_confirm(&who.user, &b.code, who.source.clone())
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(refuse(&app, &who, "mfa.confirm", e.into()).await),
    }
}

/// The directory user `name` that administrator `who` is about to act on: refused for
/// anyone else (`what` says what only administrators may do), or for a name not in the
/// directory.
fn directory_user(
    app: &Shared,
    who: &Authed,
    name: &str,
    what: &str,
) -> Result<UserName, ApiError> {
    if !app.is_admin(&who.user) {
        return Err(ApiError::forbidden(format!(
            "only administrators can {what}"
        )));
    }
    let name: UserName = field("bad_user", name.parse())?;
    if app.user(&name).is_none() {
        return Err(not_in_directory(&name));
    }
    Ok(name)
}

/// 404 for a name the directory lacks, quoted to the caller and kept by its length in the
/// audit log: a name no one has is as likely a password typed into the wrong place.
pub(crate) fn not_in_directory(name: &UserName) -> ApiError {
    ApiError {
        quotes_input: true,
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_user",
            format!(
                "user {:?} is not in the directory; add them to the config file first",
                name.as_str()
            ),
        )
    }
}

/// Checks the step-up of administrator `who` about to change `name`'s credentials
/// ([`App::step_up_over`](crate::state::App::step_up_over)); a refusal is on the record as
/// `action`'s.
async fn stepped_up(
    app: &Shared,
    who: &Authed,
    name: &UserName,
    totp: Option<&str>,
    action: &str,
) -> Result<(), ApiError> {
    let checked = match super::requests::bounded("totp", totp, super::requests::MAX_TOTP) {
        Ok(totp) => app
            .step_up_over(&who.user, name, totp, who.source.as_deref())
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => Ok(()),
        Err(e) => Err(refuse(app, who, action, e).await),
    }
}

/// Sets a user's password, and ends their sessions, SSH keys and live SSH sessions included.
/// Any user their own, with their current password (`current_password`) and, when they have a
/// second factor, a fresh code (`totp`); administrators anyone's, with MFA step-up for another
/// user's when they have a second factor.
#[utoipa::path(put, path = "/v1/users/{name}/password", request_body = PasswordBody, security(("token" = [])),
    responses((status = 200, body = PasswordSet), (status = 400, description = "`bad_user` (not a user name), `weak_password`, `field_too_long` (`current_password` or `totp`)", body = ErrorBody),
        (status = 403, description = "`not_permitted` (another user's, by a non-administrator), `current_password_required` (one's own, without `current_password`), `current_password_wrong` (a wrong one: counted towards the lockout as a wrong step-up code is), `mfa_required` (send `totp`), `mfa_failed` (a wrong code), `locked` (too many wrong codes or current passwords in a row)", body = ErrorBody),
        (status = 404, description = "`unknown_user`: the user is not in the directory", body = ErrorBody),
        (status = 409, description = "`changed_concurrently`: the user's credentials changed meanwhile; try again", body = ErrorBody)))]
pub async fn set_password(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
    raw: Result<JsonBody<PasswordBody>, ApiError>,
) -> Result<Json<PasswordSet>, ApiError> {
    let b = body(&app, &who, "user.set_password", raw).await?;
    let own = name.parse::<UserName>().is_ok_and(|n| n == who.user.name);
    let checked = (|| {
        let name = if own {
            who.user.name.clone()
        } else if !app.is_admin(&who.user) {
            return Err(ApiError::forbidden(
                "only administrators can set another user's password: change your own with `warden user set-password` (no name)",
            ));
        } else {
            directory_user(&app, &who, &name, "set passwords")?
        };
        if let Err(e) = warden_domain::password::check(&b.password) {
            return Err(ApiError::bad_request("weak_password", e.to_string()));
        }
        if own {
            let current = super::requests::bounded(
                "current_password",
                b.current_password.as_deref(),
                MAX_PASSWORD,
            )?;
            if current.is_none_or(str::is_empty) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "current_password_required",
                    "changing your own password takes your current password as `current_password` (the CLI asks for it, or reads it from the first line of stdin with `--password-stdin`), so that a token alone cannot take your account",
                ));
            }
        }
        Ok(name)
    })();
    let name = match checked {
        Ok(n) => n,
        Err(e) => return Err(refuse(&app, &who, "user.set_password", e).await),
    };
    if own {
        own_step_up(&app, &who, &b).await?;
    } else {
        stepped_up(&app, &who, &name, b.totp.as_deref(), "user.set_password").await?;
    }
    let signed = app
        .set_password(&who.user, &name, &b.password, who.source.clone())
        .await?;
    // A user back from offboarding counts again: requests their approvals now complete are
    // granted at once, not at the next minute's pass.
    crate::broker::grant_met_requests_later(&app);
    Ok(Json(PasswordSet {
        user: name.to_string(),
        ssh_keys_removed: signed.ssh_keys,
        sessions_ended: signed.sessions,
    }))
}

/// Checks the current password and code that `who` gives to change their own password
/// ([`App::own_step_up`](crate::state::App::own_step_up)); a refusal is on the record as
/// `user.set_password`'s, a wrong current password as `current_password_wrong`.
async fn own_step_up(app: &Shared, who: &Authed, b: &PasswordBody) -> Result<(), ApiError> {
    let checked =
        match super::requests::bounded("totp", b.totp.as_deref(), super::requests::MAX_TOTP) {
            Ok(totp) => app
                .own_step_up(
                    &who.user.name,
                    b.current_password.as_deref().unwrap_or_default(),
                    totp,
                    who.source.as_deref(),
                )
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
    let e = match checked {
        Ok(true) => return Ok(()),
        Ok(false) => ApiError::new(
            StatusCode::FORBIDDEN,
            "current_password_wrong",
            format!(
                "your current password is wrong: give the one you sign in with (five wrong ones, or wrong codes, in a row lock your step-ups and sign-ins for {} minutes)",
                warden_domain::lockout::LOCKOUT.whole_minutes()
            ),
        ),
        Err(e) => e,
    };
    Err(refuse(app, who, "user.set_password", e).await)
}

/// How many requests offboarding ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Offboarded {
    pub user: String,
    pub requests_ended: usize,
}

/// Offboarding: revokes a user's tokens, disables their password and ends every open request
/// and grant of theirs; 404 for a name neither in the directory nor on an open request.
/// Administrators.
#[utoipa::path(post, path = "/v1/users/{name}/revoke-all", request_body = Option<NoFields>, security(("token" = [])),
    responses((status = 200, body = Offboarded), (status = 400, description = "`bad_user` (not a user name)", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators only, not their own, not by a caller offboarded meanwhile, and never the last administrator who can sign in", body = ErrorBody),
        (status = 404, description = "`unknown_user`: the user is neither in the directory nor on an open request", body = ErrorBody)))]
pub async fn revoke_all(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<Json<Offboarded>, ApiError> {
    let NoFields {} = body(&app, &who, "user.revoke_all", raw).await?;
    let user: UserName = match field("bad_user", name.parse()) {
        Ok(u) => u,
        Err(e) => return Err(refuse(&app, &who, "user.revoke_all", e).await),
    };
    let n = match app.offboard(who.caller(), &user).await {
        Ok(n) => n,
        Err(e) => {
            // A name no one has may be a password typed in its place.
            let e = ApiError {
                withheld: Some(user.as_str().into()),
                ..e.into()
            };
            return Err(refuse(&app, &who, "user.revoke_all", e).await);
        }
    };
    Ok(Json(Offboarded {
        user: user.to_string(),
        requests_ended: n,
    }))
}

/// A user whose password and code checks are locked.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LockedUser {
    pub user: String,
    /// Where the wrong answers that began the lock were given: `sign_in` (it refuses sign-ins
    /// only) or `step_up` (it refuses step-ups and sign-ins). A user may have one of each.
    pub kind: String,
    /// What the lock refuses, as said to people.
    pub refuses: String,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub until: String,
}

/// The users locked after wrong passwords or TOTP codes in a row.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LockedUsers {
    pub locked: Vec<LockedUser>,
}

/// Lists the locks in force now, whom they refuse what, and until when. Administrators and
/// audit readers.
#[utoipa::path(get, path = "/v1/users/locked", security(("token" = [])),
    responses((status = 200, body = LockedUsers), (status = 403, description = "`not_permitted`: administrators and audit readers only", body = ErrorBody)))]
pub async fn locked(State(app): State<Shared>, who: Authed) -> Result<Json<LockedUsers>, ApiError> {
    let allowed = super::require_audit_reader(&app, &who, "list locked users");
    super::admitted(&app, &who, "user.locked", allowed).await?;
    let locked = app
        .locks_in_force()
        .into_iter()
        .map(|(user, kind, until)| LockedUser {
            user: user.to_string(),
            kind: kind.as_str().to_owned(),
            refuses: kind.refuses().to_owned(),
            until: rfc3339(until),
        })
        .collect();
    Ok(Json(LockedUsers { locked }))
}

/// What a reset of a second factor removed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MfaReset {
    pub user: String,
    /// Whether the user had a second factor (confirmed, or being enrolled).
    pub had_factor: bool,
    /// The end of the lock lifted with it (RFC 3339), or null when the user was not locked.
    pub was_locked_until: Option<String>,
    /// SSH keys registered to the user, removed: they register theirs again.
    pub ssh_keys_removed: usize,
    /// Live SSH sessions of the user, ended.
    pub sessions_ended: usize,
}

/// Removes a user's second factor and ends their sessions, SSH keys and live SSH sessions
/// included, for one who lost it or whose account had one bound by someone else; they sign in
/// with their password and enrol again. Administrators, for users other than themselves, with
/// MFA step-up when they have a second factor.
#[utoipa::path(post, path = "/v1/users/{name}/mfa/reset", request_body = Option<StepUpBody>, security(("token" = [])),
    responses((status = 200, body = MfaReset), (status = 400, description = "`bad_user` (not a user name), `field_too_long` (`totp`)", body = ErrorBody),
        (status = 403, description = "`not_permitted` (administrators only, and not their own), `mfa_required` (send `totp`), `mfa_failed` (a wrong code), `locked` (too many wrong codes in a row)", body = ErrorBody),
        (status = 404, description = "`unknown_user`: the user is not in the directory", body = ErrorBody),
        (status = 409, description = "`changed_concurrently`: the user's credentials changed meanwhile; try again", body = ErrorBody)))]
pub async fn reset_mfa(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
    raw: Result<OptionalJson<StepUpBody>, ApiError>,
) -> Result<Json<MfaReset>, ApiError> {
    let b = body(&app, &who, "user.mfa_reset", raw).await?;
    let checked = directory_user(&app, &who, &name, "reset second factors").and_then(|name| {
        // A stolen administrator's token must not strip that administrator's own factor.
        if name == who.user.name {
            return Err(ApiError::forbidden(
                "you cannot reset your own second factor: ask another administrator (or replace it with `warden mfa enroll --totp CODE`)",
            ));
        }
        Ok(name)
    });
    let name = match checked {
        Ok(n) => n,
        Err(e) => return Err(refuse(&app, &who, "user.mfa_reset", e).await),
    };
    stepped_up(&app, &who, &name, b.totp.as_deref(), "user.mfa_reset").await?;
    let (had_factor, locked_until, signed) =
        app.reset_mfa(&who.user, &name, who.source.clone()).await?;
    Ok(Json(MfaReset {
        user: name.to_string(),
        had_factor,
        was_locked_until: locked_until.map(rfc3339),
        ssh_keys_removed: signed.ssh_keys,
        sessions_ended: signed.sessions,
    }))
}

/// What an unlock lifted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Unlocked {
    pub user: String,
    /// The end of the lockout lifted (RFC 3339), or null when the user was not locked.
    pub was_locked_until: Option<String>,
}

/// Lifts a user's lockout and keeps their password. Administrators, never their own.
#[utoipa::path(post, path = "/v1/users/{name}/unlock", request_body = Option<NoFields>, security(("token" = [])),
    responses((status = 200, body = Unlocked), (status = 400, description = "`bad_user` (not a user name)", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators only, and not themselves", body = ErrorBody),
        (status = 404, description = "`unknown_user`: the user is not in the directory", body = ErrorBody)))]
pub async fn unlock(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<Json<Unlocked>, ApiError> {
    let NoFields {} = body(&app, &who, "user.unlock", raw).await?;
    let name = match directory_user(&app, &who, &name, "unlock users") {
        // The lock stops a token from trying codes freely: its holder may not lift it.
        Ok(n) if n == who.user.name => Err(ApiError::forbidden(
            "you cannot lift your own lock: another administrator does, once they know it was you who mistyped",
        )),
        other => other,
    };
    let name = match name {
        Ok(n) => n,
        Err(e) => return Err(refuse(&app, &who, "user.unlock", e).await),
    };
    let until = app.unlock(&who.user, &name, who.source.clone()).await?;
    Ok(Json(Unlocked {
        user: name.to_string(),
        was_locked_until: until.map(rfc3339),
    }))
}
