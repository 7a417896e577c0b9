//! The SSH proxy over the API: users' keys, pinned host keys, and live sessions (list,
//! watch, kill) and their recordings.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warden_domain::audit::{Code, Event};
use warden_domain::{RequestId, TargetName};

use super::{
    ApiError, Authed, ErrorBody, JsonBody, NoFields, OptionalJson, PathText, action_refused,
    admitted, audited, body, field, refuse, refuse_4xx, refuse_on_session,
};
use crate::state::{Shared, now};

/// A public key to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyBody {
    /// One OpenSSH public key line (Ed25519 or ECDSA).
    pub public_key: String,
    /// The key's SSH signature (`ssh-keygen -Y sign -n warden-ssh-key`, armored) over
    /// `register this SSH key to Warden user NAME` and a newline, NAME the caller's: it shows
    /// the caller holds the private key.
    pub proof: String,
}

/// A registered key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub fingerprint: String,
    pub public_key: String,
    #[schema(format = DateTime)]
    pub added_at: String,
}

fn view(k: warden_store::SshKey) -> KeyView {
    KeyView {
        fingerprint: k.fingerprint,
        public_key: k.public_key,
        added_at: warden_domain::rfc3339(k.added_at),
    }
}

/// Registers a public key for logging in to the SSH proxy as the caller.
#[utoipa::path(post, path = "/v1/ssh/keys", request_body = KeyBody, security(("token" = [])),
    responses((status = 201, body = KeyView),
        (status = 400, description = "`bad_public_key` (not a key the proxy takes), `bad_key_proof` (the proof does not show the caller holds its private key)", body = ErrorBody),
        (status = 409, description = "`key_registered`: the key is registered already", body = ErrorBody)))]
pub async fn add_key(
    State(app): State<Shared>,
    who: Authed,
    raw: Result<JsonBody<KeyBody>, ApiError>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let b = body(&app, &who, "ssh.key_add", raw).await?;
    match app.add_ssh_key(who.caller(), &b.public_key, &b.proof).await {
        Ok(k) => Ok((StatusCode::CREATED, Json(view(k)))),
        Err(e) => Err(refuse(&app, &who, "ssh.key_add", e.into()).await),
    }
}

/// The caller's registered keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// The caller's registered keys.
#[utoipa::path(get, path = "/v1/ssh/keys", security(("token" = [])), responses((status = 200, body = KeyList)))]
pub async fn list_keys(State(app): State<Shared>, who: Authed) -> Result<Json<KeyList>, ApiError> {
    let keys = app
        .store
        .ssh_keys(&who.user.name)
        .await
        .map_err(crate::broker::Error::from)?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(view).collect(),
    }))
}

/// Removes one of the caller's keys.
#[utoipa::path(delete, path = "/v1/ssh/keys/{fingerprint}", security(("token" = [])),
    params(("fingerprint" = String, Path, description = "The key's fingerprint as `GET /v1/ssh/keys` (`warden keys list`) shows it, `SHA256:` and base64: a `/` in it may be sent as it is or percent-encoded (`%2F`)", example = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s")),
    responses((status = 204), (status = 400, description = "`bad_fingerprint`: not a key's fingerprint", body = ErrorBody),
        (status = 404, description = "`no_such_key`: the caller has no such key", body = ErrorBody)))]
pub async fn remove_key(
    State(app): State<Shared>,
    who: Authed,
    PathText(fingerprint): PathText,
) -> Result<StatusCode, ApiError> {
    match app.remove_ssh_key(who.caller(), &fingerprint).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(refuse(&app, &who, "ssh.key_remove", typed(e)).await),
    }
}

/// Where the SSH proxy listens and its host key; both null before it has started.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyInfo {
    /// `HOST:PORT`.
    pub address: Option<String>,
    /// The proxy's host key as an OpenSSH public key line.
    pub host_key: Option<String>,
}

/// Where the SSH proxy listens and its host key, for `warden ssh`.
#[utoipa::path(get, path = "/v1/ssh/proxy", responses((status = 200, body = ProxyInfo)))]
pub async fn proxy(State(app): State<Shared>) -> Json<ProxyInfo> {
    let proxy = app.ssh_proxy.get();
    Json(ProxyInfo {
        address: proxy.map(|p| p.addr.to_string()),
        host_key: proxy.map(|p| p.host_key.clone()),
    })
}

/// A host key: what an upstream host presents, or what was pinned for a target.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostKey {
    /// The target it was pinned for; absent from a scan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// An OpenSSH public key line; absent once pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
}

/// What an upstream host presents, for confirmation before pinning. Administrators. A
/// target of another kind than ssh, or with no `connection.host`, is a 400; a target the
/// policy does not define a 404; a host that cannot be reached or shows no key a 502.
#[utoipa::path(post, path = "/v1/targets/{name}/host-key/scan", request_body = Option<NoFields>, security(("token" = [])),
    responses((status = 200, body = HostKey), (status = 400, description = "`bad_target`, `not_an_ssh_target`, `no_connection` (no `connection.host`)", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators only", body = ErrorBody),
        (status = 404, description = "`unknown_target`", body = ErrorBody),
        (status = 502, description = "`issuer_failed`: the host cannot be reached or shows no key", body = ErrorBody)))]
pub async fn scan_host_key(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<Json<HostKey>, ApiError> {
    let asked = raw.and_then(|JsonBody(NoFields {})| field("bad_target", name.parse()));
    let target: TargetName = admitted(&app, &who, "target.scan_host_key", asked).await?;
    let (key, fingerprint) = match app.scan_host_key(who.caller(), &target).await {
        Ok(scanned) => scanned,
        Err(e) => return Err(refuse_4xx(&app, &who, "target.scan_host_key", e.into()).await),
    };
    Ok(Json(HostKey {
        target: None,
        public_key: Some(key),
        fingerprint,
    }))
}

/// A host key to pin, with the fingerprint the administrator confirmed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    pub public_key: String,
    pub fingerprint: String,
}

/// Pins a target's host key. Administrators. A target of another kind than ssh is a 400; a
/// target the policy does not define a 404; one whose policy pins its key
/// (`connection.host_key`) a 409, since that is the key the proxy checks.
#[utoipa::path(put, path = "/v1/targets/{name}/host-key", request_body = PinBody, security(("token" = [])),
    responses((status = 200, body = HostKey), (status = 400, description = "`bad_target`, `not_an_ssh_target`, `bad_public_key`, `fingerprint_mismatch` (the key's fingerprint is not the one confirmed)", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators only", body = ErrorBody),
        (status = 404, description = "`unknown_target`", body = ErrorBody),
        (status = 409, description = "`host_key_in_policy`: the policy pins the key (`connection.host_key`)", body = ErrorBody)))]
pub async fn pin_host_key(
    State(app): State<Shared>,
    who: Authed,
    PathText(name): PathText,
    raw: Result<JsonBody<PinBody>, ApiError>,
) -> Result<Json<HostKey>, ApiError> {
    let b = body(&app, &who, "target.pin_host_key", raw).await?;
    let target: TargetName = match field("bad_target", name.parse()) {
        Ok(t) => t,
        Err(e) => return Err(refuse(&app, &who, "target.pin_host_key", e).await),
    };
    match app
        .pin_host_key(who.caller(), &target, &b.public_key, &b.fingerprint)
        .await
    {
        Ok(fingerprint) => Ok(Json(HostKey {
            target: Some(target.to_string()),
            public_key: None,
            fingerprint,
        })),
        Err(e) => Err(refuse(&app, &who, "target.pin_host_key", typed(e)).await),
    }
}

/// The refusal of a key's fingerprint typed by the caller that is none, or not the key's, as
/// [`ApiError::invalid`] refuses what does not parse: the caller reads what they typed, the
/// audit log only its length, since a token pasted in place of a fingerprint would otherwise
/// stay in the signed log for good.
fn typed(e: crate::broker::Error) -> ApiError {
    ApiError {
        quotes_input: matches!(e, crate::broker::Error::Input { .. }),
        ..e.into()
    }
}

/// Live sessions: everyone's for administrators and session viewers, the caller's otherwise.
#[utoipa::path(get, path = "/v1/sessions", operation_id = "list_sessions", security(("token" = [])), responses((status = 200, body = SessionList)))]
pub async fn list(State(app): State<Shared>, who: Authed) -> Json<SessionList> {
    let sessions = app
        .sessions(&who.user)
        .into_iter()
        .map(|s| SessionView {
            id: s.id,
            user: s.user.to_string(),
            target: s.target.to_string(),
            role: s.role.to_string(),
            grant: s.grant.to_string(),
            login: s.login,
            kind: s.kind,
            started_at: warden_domain::rfc3339(s.started_at),
            grant_expires_at: warden_domain::rfc3339(s.grant_expires_at),
            recorded: s.recorded,
        })
        .collect();
    Json(SessionList { sessions })
}

/// The live SSH sessions the caller may see: their own, or everyone's for session viewers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// A live SSH session through the proxy.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    #[schema(format = Uuid)]
    pub id: String,
    pub user: String,
    pub target: String,
    pub role: String,
    /// The grant it runs under (its request id).
    #[schema(format = Uuid)]
    pub grant: String,
    /// The Unix account on the target.
    pub login: String,
    /// `shell`, `exec` or `sftp`.
    pub kind: String,
    #[schema(format = DateTime)]
    pub started_at: String,
    /// When the grant ends, and the session with it.
    #[schema(format = DateTime)]
    pub grant_expires_at: String,
    pub recorded: bool,
}

/// A session id as the proxy writes it, a UUID in lower case: an id copied in upper case (as
/// some tools show UUIDs) names the same session; anything else is refused before it is looked
/// up or made a file name.
fn session_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::try_parse(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            ApiError::invalid(
                "bad_id",
                format!(
                    "{} is not a session id (a UUID): `warden sessions` lists the live ones, `warden audit search` the ended ones",
                    warden_domain::text::shown(id, 40)
                ),
            )
        })
}

/// Ends a live session at once; the user is told who ended it.
#[utoipa::path(post, path = "/v1/sessions/{id}/kill", request_body = Option<NoFields>, security(("token" = [])),
    responses((status = 204), (status = 400, description = "`bad_id`: not a session id", body = ErrorBody),
        (status = 403, description = "`not_permitted`: another user's session, by one who does not oversee sessions", body = ErrorBody),
        (status = 404, description = "`no_such_session`: no such live session", body = ErrorBody),
        (status = 409, description = "`already_ending`: another kill or the grant's end is ending it", body = ErrorBody)))]
pub async fn kill(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
    raw: Result<OptionalJson<NoFields>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let NoFields {} = body(&app, &who, "session.kill", raw).await?;
    let id = match session_id(&id) {
        Ok(id) => id,
        Err(e) => return Err(refuse(&app, &who, "session.kill", e).await),
    };
    match app.kill_session(who.caller(), &id).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(refuse_on_session(&app, &who, "session.kill", Some(&id), e.into()).await),
    }
}

/// Streams a live session's terminal output from now on, until it ends.
#[utoipa::path(get, path = "/v1/sessions/{id}/watch", security(("token" = [])),
    responses((status = 200, content_type = "application/octet-stream"), (status = 400, description = "`bad_id`: not a session id", body = ErrorBody),
        (status = 403, description = "`not_permitted`: another user's session, by one who does not oversee sessions", body = ErrorBody),
        (status = 404, description = "`no_such_session`: no such live session, or it ended", body = ErrorBody)))]
pub async fn watch(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
) -> Result<Response, ApiError> {
    let caller = who.caller();
    let id = match session_id(&id) {
        Ok(id) => id,
        Err(e) => return Err(refuse(&app, &who, "session.watch", e).await),
    };
    let info = match app.oversee(&caller, &id) {
        Ok(info) => info,
        Err(e) => {
            return Err(refuse_on_session(&app, &who, "session.watch", Some(&id), e.into()).await);
        }
    };
    let rx = app.sessions.watch(&id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_session",
            "the session ended",
        )
    })?;
    let whose = Whose {
        target: Some(info.target),
        grant: Some(info.grant),
    };
    let event = whose.event(&who, Code::SessionWatched, &id);
    app.store
        .append(vec![event])
        .await
        .map_err(crate::broker::Error::from)?;
    // The terminal is shown only while the watcher still may see it: a token revoked, run out
    // or signed out with its user (offboarding, a new password), or a watcher no longer allowed
    // to oversee sessions, ends the stream within a check's interval.
    let watcher = Watcher {
        app: app.clone(),
        token: who.token.clone(),
        user: who.user.name.clone(),
        source: who.source.clone(),
        session: id.clone(),
    };
    let every = tokio::time::interval(WATCH_RECHECK);
    let stream = futures_util::stream::unfold((rx, every), move |(mut rx, mut every)| {
        let watcher = watcher.clone();
        async move {
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Ok(bytes) => return Some((Ok::<_, std::io::Error>(bytes), (rx, every))),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = every.tick() => {
                        if !watcher.may_go_on().await {
                            tracing::info!(session = %watcher.session, user = %watcher.user, "a session watch ended: its watcher may no longer see the session");
                            return None;
                        }
                    }
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// How often a watch checks that its watcher may still see the session.
const WATCH_RECHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Who watches a session, as the stream checks them again and again.
#[derive(Clone)]
struct Watcher {
    app: Shared,
    token: String,
    user: warden_domain::UserName,
    source: Option<String>,
    session: String,
}

impl Watcher {
    /// Whether the watch's token is still live, still its user's, and that user still may
    /// oversee the session. A store that cannot tell ends the watch: fail closed.
    async fn may_go_on(&self) -> bool {
        let Ok(Some(user)) = self.app.token_holder(&self.token).await else {
            return false;
        };
        let caller = crate::broker::Caller {
            user: &user,
            source: self.source.clone(),
        };
        user.name == self.user && self.app.oversee(&caller, &self.session).is_ok()
    }
}

/// A session's asciicast v2 recording (also while it runs). Administrators, session viewers
/// and audit readers; every read is audited. The `warden-recording` header says how it
/// compares with the SHA-256 its `session.ended` event holds: `intact`, `altered`, `live`
/// (still running) or `unchecked` (no digest to compare with); `warden-recording-sha256` is
/// the served one's. A recording whose `session.ended` event holds its digest, but whose file
/// is gone, is a 410: the log shows it was recorded, and its loss is audited as an altered
/// one's read is.
#[utoipa::path(get, path = "/v1/sessions/{id}/recording", security(("token" = [])),
    responses((status = 200, content_type = "application/x-asciicast", headers(
            ("warden-recording" = String, description = "How the recording compares with the SHA-256 its session.ended event holds: intact, altered, live (still running) or unchecked (no digest to compare with)"),
            ("warden-recording-sha256" = String, description = "The SHA-256 (hex) of the recording served"))),
        (status = 400, description = "`bad_id`: not a session id", body = ErrorBody),
        (status = 403, description = "`not_permitted`: administrators, session viewers and audit readers only", body = ErrorBody),
        (status = 404, description = "`no_recording`: no such session was recorded, or a session still running has no recording file", body = ErrorBody),
        (status = 410, description = "`recording_missing`: the session's end in the audit log holds its recording's digest, but the file is gone from the recording store; restore it from a backup", body = ErrorBody),
        (status = 500, description = "`internal`: the recording could not be read; the server's log says why", body = ErrorBody)))]
pub async fn recording(
    State(app): State<Shared>,
    who: Authed,
    PathText(id): PathText,
) -> Result<Response, ApiError> {
    let id = session_id(&id);
    // Audit readers replay too: read-only, like the rest of what they see.
    if !app.may_oversee_sessions(&who.user) && !app.may_read_audit(&who.user) {
        let e = ApiError::forbidden(
            "only administrators, session viewers and audit readers may replay sessions",
        );
        let session = id.as_deref().ok();
        return Err(refuse_on_session(&app, &who, "session.replay", session, e).await);
    }
    let id = match id {
        Ok(id) => id,
        Err(e) => return Err(refuse(&app, &who, "session.replay", e).await),
    };
    // The end is looked up before the file is read: a session that ends meanwhile leaves a
    // read of it unfinished, which its end's digest would wrongly call altered.
    let end = app.store.session_end(&id).await;
    let end = end.map_err(crate::broker::Error::from)?.map(|e| e.event);
    let running = app.sessions.get(&id);
    let live = end.is_none() && running.is_some();
    let whose = Whose::find(&app, &id, end.as_ref(), running.as_ref()).await?;
    let recordings = app.recordings.clone();
    let rid = id.clone();
    // Read and hashed off the runtime's threads: a recording has no size limit.
    let read = tokio::task::spawn_blocking(move || {
        recordings.read(&rid).map(|data| {
            let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
            (data, sha256)
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let (data, sha256) = match read {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(match end.as_ref().and_then(recorded_digest) {
                Some((want, bytes)) => missing(&app, &who, &whose, &id, want, bytes).await?,
                None => {
                    let e = not_recorded(&id, end.is_none() && (live || whose.grant.is_some()));
                    let mut event = action_refused(&who, "session.replay");
                    event.session_id = Some(id.clone());
                    whose.mark(&mut event);
                    audited(&app, event, e).await
                }
            });
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot read the recording of session {id}: {e}"),
            ));
        }
    };
    let check = match &end {
        Some(end) => RecordingCheck::against(&end.details, &sha256, data.len()),
        None if live => RecordingCheck::Live,
        None => RecordingCheck::Unchecked,
    };
    if check == RecordingCheck::Altered {
        tracing::warn!(session = %id, "a recording read does not match the digest its session.ended event holds");
    }
    let details = serde_json::json!({"recording": {
        "sha256": sha256, "bytes": data.len(), "check": check.name(),
    }});
    let event = whose.event(&who, Code::RecordingRead, &id).details(details);
    app.store
        .append(vec![event])
        .await
        .map_err(crate::broker::Error::from)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-asciicast".to_owned()),
            (RECORDING_CHECK, check.name().to_owned()),
            (RECORDING_SHA256, sha256),
        ],
        data,
    )
        .into_response())
}

/// The SHA-256 and length of the recording a `session.ended` event says its session left, if
/// it says so: a session of a metadata-only role, an sftp session, or one whose recording
/// failed has none.
fn recorded_digest(ended: &Event) -> Option<(&str, Option<u64>)> {
    let recorded = &ended.details["recording"];
    Some((recorded["sha256"].as_str()?, recorded["bytes"].as_u64()))
}

/// The refusal of a replay of session `id` that has no recording file and whose end holds
/// no digest of one: it was not recorded, or (`unended`) it is still running, or was cut
/// short and is ended at the next start, and its file may be yet to come.
fn not_recorded(id: &str, unended: bool) -> ApiError {
    let message = if unended {
        format!(
            "no recording of session {id} yet: the session has not ended, and its recording file is not there (sessions of metadata-only roles and sftp sessions have none); its session.ended event will say whether it was recorded"
        )
    } else {
        format!(
            "no recording of session {id}: no such session was recorded (sessions of metadata-only roles and sftp sessions have none; `warden audit search --code session.started` lists the sessions, with their recording tier)"
        )
    };
    ApiError::new(StatusCode::NOT_FOUND, "no_recording", message)
}

/// The answer to a replay of session `id`, whose `session.ended` event holds the digest of
/// its recording (`sha256`, `bytes`), when the recording's file is gone: not "never recorded",
/// which the signed log belies, but a recording lost or removed, audited as the read of an
/// altered one is (`session.recording_read`, its check `missing`) and logged as a warning. The
/// error is that of the audit write, should it fail.
async fn missing(
    app: &Shared,
    who: &Authed,
    whose: &Whose,
    id: &str,
    sha256: &str,
    bytes: Option<u64>,
) -> Result<ApiError, ApiError> {
    tracing::warn!(session = %id, "the recording its session.ended event holds the digest of is gone from the recording store");
    let e = ApiError::new(
        StatusCode::GONE,
        "recording_missing",
        format!(
            "the recording of session {id} is missing: its session.ended event in the audit log shows it was recorded ({}SHA-256 {sha256}), but its file is gone from the recording store, and the read is audited. Restore recordings/{id}.cast in the server's data directory from a backup (it must match that SHA-256), and check the log itself with `warden audit verify`",
            bytes.map(|n| format!("{n} bytes, ")).unwrap_or_default()
        ),
    );
    let details = serde_json::json!({"recording": {
        "check": RecordingCheck::Missing.name(),
        "recorded": {"sha256": sha256, "bytes": bytes},
    }});
    let event = whose
        .event(who, Code::RecordingRead, id)
        .details(details)
        .failed(&e.code, e.message.clone());
    app.store
        .append(vec![event])
        .await
        .map_err(crate::broker::Error::from)?;
    Ok(e)
}

/// What an access to a session (a watch, a replay) names beside the session, as its kill
/// does: its target and its grant, so that a search by either finds who watched or replayed
/// it. Either is unknown only when the log no longer holds the session's start or end
/// (archived), or there is no such session.
#[derive(Debug, Default)]
struct Whose {
    target: Option<TargetName>,
    grant: Option<RequestId>,
}

impl Whose {
    /// Session `id`'s target and grant: from its end (`ended`), from the live session
    /// (`running`), or from the start the store keeps of a session not yet ended.
    async fn find(
        app: &Shared,
        id: &str,
        ended: Option<&Event>,
        running: Option<&warden_ssh_proxy::SessionInfo>,
    ) -> Result<Self, ApiError> {
        if let Some(end) = ended {
            return Ok(Self {
                target: end.target.clone(),
                grant: end.request_id,
            });
        }
        if let Some(info) = running {
            return Ok(Self {
                target: Some(info.target.clone()),
                grant: Some(info.grant),
            });
        }
        let unended = app
            .store
            .live_sessions()
            .await
            .map_err(crate::broker::Error::from)?;
        Ok(unended
            .into_iter()
            .find(|started| started.session_id.as_deref() == Some(id))
            .map(|started| Self {
                target: started.target,
                grant: started.request_id,
            })
            .unwrap_or_default())
    }

    /// Names the session's target and grant in `event`.
    fn mark(&self, event: &mut Event) {
        event.target.clone_from(&self.target);
        event.request_id = self.grant;
    }

    /// The event `code` of `who`'s access to session `id`.
    fn event(&self, who: &Authed, code: Code, id: &str) -> Event {
        let mut event = Event::new(code, who.actor(), now());
        event.session_id = Some(id.to_owned());
        self.mark(&mut event);
        event
    }
}

/// The response header saying how a served recording compares with its session's end.
const RECORDING_CHECK: header::HeaderName = header::HeaderName::from_static("warden-recording");
/// The response header with the SHA-256 (hex) of the recording served.
const RECORDING_SHA256: header::HeaderName =
    header::HeaderName::from_static("warden-recording-sha256");

/// How a recording as read compares with the digest its `session.ended` event holds, in the
/// signed log: the file sits beside the database, and a change to it must not pass unseen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordingCheck {
    /// Exactly what the session recorded.
    Intact,
    /// Not what the session recorded: changed, cut or added to since it ended.
    Altered,
    /// The session is still running: its end, and so its digest, is yet to come.
    Live,
    /// Nothing to compare with: its end is no longer in the log (archived), or its recording
    /// failed and has no digest.
    Unchecked,
    /// Its end holds its digest, but its file is gone: nothing is served, and the read is
    /// audited with this check.
    Missing,
}

impl RecordingCheck {
    fn against(ended: &serde_json::Value, sha256: &str, bytes: usize) -> Self {
        let recorded = &ended["recording"];
        match (recorded["sha256"].as_str(), recorded["bytes"].as_u64()) {
            (Some(want), Some(len)) if want == sha256 && len == bytes as u64 => Self::Intact,
            (Some(_), _) => Self::Altered,
            _ => Self::Unchecked,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Intact => "intact",
            Self::Altered => "altered",
            Self::Live => "live",
            Self::Unchecked => "unchecked",
            Self::Missing => "missing",
        }
    }
}
