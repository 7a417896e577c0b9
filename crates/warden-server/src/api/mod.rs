//! The HTTP API under `/v1`: JSON in and out, bearer-token authentication, an OpenAPI document
//! at `/v1/openapi.json`, and errors as `{"error":{"code":"…","message":"…"}}`.

mod audit;
mod breakglass;
mod error;
mod export;
mod json_body;
mod meta;
mod policy;
mod report;
mod requests;
mod session;
mod ssh;
mod targets;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::routing::{get, post, put};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use warden_domain::User;
use warden_domain::audit::{Actor, Code, Event};

pub use error::{ApiError, ErrorBody};
pub(crate) use json_body::{JsonBody, NoFields, OptionalJson};

use crate::auth::ChangeInFlight;
use crate::broker::Caller;
use crate::state::{Shared, now};

/// Largest accepted request body. Real requests are a few hundred bytes; SSH public keys are
/// the largest field.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The API router over `app`.
pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/healthz", get(meta::healthz))
        .route("/readyz", get(meta::readyz))
        .route("/metrics", get(report::metrics))
        .route("/v1/report", get(report::report))
        .route("/v1/openapi.json", get(meta::openapi))
        .route("/v1/ssh/ca", get(meta::ssh_ca))
        .route("/v1/ssh/revoked-keys", get(meta::ssh_revoked_keys))
        .route("/v1/ssh/proxy", get(ssh::proxy))
        .route("/v1/ssh/keys", post(ssh::add_key).get(ssh::list_keys))
        // A fingerprint is written as `keys list` shows it (`SHA256:` and base64, which may
        // hold `/`), with its slashes as they are or percent-encoded.
        .route(KEY_ROUTE, axum::routing::delete(ssh::remove_key))
        .route("/v1/targets/{name}/host-key", put(ssh::pin_host_key))
        .route("/v1/targets/{name}/host-key/scan", post(ssh::scan_host_key))
        .route("/v1/sessions", get(ssh::list))
        .route("/v1/sessions/{id}/kill", post(ssh::kill))
        .route("/v1/sessions/{id}/watch", get(ssh::watch))
        .route("/v1/sessions/{id}/recording", get(ssh::recording))
        .route("/v1/auth/login", post(session::login))
        .route("/v1/auth/logout", post(session::logout))
        .route("/v1/auth/whoami", get(session::whoami))
        .route("/v1/auth/mfa/enroll", post(session::mfa_enroll))
        .route("/v1/auth/mfa/confirm", post(session::mfa_confirm))
        .route("/v1/users/{name}/password", put(session::set_password))
        .route("/v1/users/{name}/revoke-all", post(session::revoke_all))
        .route("/v1/users/{name}/unlock", post(session::unlock))
        .route("/v1/users/{name}/mfa/reset", post(session::reset_mfa))
        .route("/v1/users/locked", get(session::locked))
        .route(
            "/v1/targets/{name}/credential",
            put(targets::set_credential),
        )
        .route("/v1/targets/{name}/rotate-root", post(targets::rotate_root))
        .route("/v1/requests/{id}/credential", post(requests::credential))
        .route("/v1/targets", get(policy::targets))
        .route("/v1/policy", get(policy::status))
        .route("/v1/policy/explain", post(policy::explain))
        .route("/v1/policy/reload", post(policy::reload))
        .route("/v1/requests", post(requests::create).get(requests::list))
        .route("/v1/requests/{id}", get(requests::show))
        .route("/v1/requests/{id}/approve", post(requests::approve))
        .route("/v1/requests/{id}/deny", post(requests::deny))
        .route("/v1/requests/{id}/cancel", post(requests::cancel))
        .route("/v1/requests/{id}/revoke", post(requests::revoke))
        .route("/v1/requests/{id}/extend", post(requests::extend))
        .route("/v1/audit", get(audit::search))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/v1/audit/verifier-key", get(audit::verifier_key))
        .route("/v1/audit/proof/{seq}", get(audit::proof))
        .route("/v1/audit/consistency", get(audit::consistency))
        .route("/v1/audit/export", get(audit::export))
        .route("/v1/audit/archive", post(audit::archive))
        .route(
            "/v1/audit/segments/{name}",
            axum::routing::delete(audit::delete_segment),
        )
        .route("/v1/audit/status", get(export::status))
        .route("/v1/breakglass", post(breakglass::create))
        .route("/v1/postmortems", get(breakglass::list))
        .route("/v1/postmortems/{id}", get(breakglass::show))
        .route("/v1/postmortems/{id}/close", post(breakglass::close))
        .route("/v1/report/drills", get(breakglass::drills))
        .route("/v1/notifications/status", get(breakglass::outbox))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            refuse_unknown_query,
        ))
        .fallback(meta::not_found)
        .layer(axum::middleware::map_response(json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            refuse_oversize,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with({
                    let app = app.clone();
                    move |req: &axum::http::Request<axum::body::Body>| request_span(&app, req)
                })
                .on_response(log_response)
                // The access log's line says a server error once, as a warning: a target that
                // is down is no error of Warden's to page anyone about twice.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        .layer(axum::middleware::from_fn(drop_bad_request_ids))
        // Before anything adds to the headers or takes from them.
        .layer(axum::middleware::from_fn(note_client_head))
        // Outermost, so that a request refused before it is routed is marked too.
        .layer(axum::middleware::map_response(mark))
        .with_state(app)
}

/// The route of a key's removal, whose parameter (a fingerprint) is the rest of the path.
const KEY_ROUTE: &str = "/v1/ssh/keys/{*fingerprint}";
/// The routes whose last parameter is the rest of the path, however many segments it has.
const WILDCARD_ROUTES: &[&str] = &[KEY_ROUTE];

/// The header every answer of this API carries, with [`API_MARK_VALUE`]: the client takes an
/// answer without it for another program's (a portal, a health check, a proxy's own page), whose
/// `200 {"status":"ok"}` must not read as a revocation done or a request approved.
pub const API_MARK: &str = "warden-api";
/// The value of [`API_MARK`]: the API's version, as in its paths.
pub const API_MARK_VALUE: &str = "v1";

/// Marks every response as Warden's ([`API_MARK`]) and as not to be stored by a cache: tokens,
/// credentials and audit records pass through any caching proxy in front, and so do refusals,
/// which are as particular to their caller.
async fn mark(mut res: axum::response::Response) -> axum::response::Response {
    let headers = res.headers_mut();
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    headers.insert(API_MARK, HeaderValue::from_static(API_MARK_VALUE));
    res
}

/// The correlation id header: taken from the caller when well-formed, else generated, and
/// echoed in the response.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Longest correlation id accepted from a caller.
const REQUEST_ID_MAX: usize = 128;

/// Makes a UUIDv7 correlation id for requests that bring none.
#[derive(Debug, Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// What the client's own request head held, noted before the server adds a correlation id
/// to its headers or drops the client's ([`note_client_head`]).
#[derive(Debug, Clone, Copy)]
struct ClientHead {
    /// Bytes of its header lines as [`HEADERS_LIMIT`] counts them.
    header_bytes: usize,
    /// Whether it named both `Content-Length` and `Transfer-Encoding`, which hyper does not
    /// hand on ([`crate::http::framing`]).
    framed_both_ways: bool,
}

/// Bytes of `headers` as [`HEADERS_LIMIT`] counts them: each name and value, and 4 for the
/// colon, space and line end.
fn header_bytes(headers: &axum::http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// Notes what the client's request head held ([`ClientHead`]), for [`refuse_oversize`] to judge
/// the request by: the correlation id the server adds is not the client's to count, and every
/// request takes its own head's note of its framing, refused or not.
async fn note_client_head(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let framed_both_ways = req
        .extensions()
        .get::<crate::http::framing::Heads>()
        .is_some_and(crate::http::framing::Heads::next_framed_both_ways);
    let head = ClientHead {
        header_bytes: header_bytes(req.headers()),
        framed_both_ways,
    };
    req.extensions_mut().insert(head);
    next.run(req).await
}

/// Removes a caller's correlation id that is too long, has characters other than letters,
/// digits and `._:-`, or holds a token's prefix, so log lines and audit records only ever carry
/// plain, bounded ids, never a token pasted into the header; a fresh one replaces it.
async fn drop_bad_request_ids(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let bad = req.headers().get(&REQUEST_ID).is_some_and(|v| {
        let b = v.as_bytes();
        b.is_empty()
            || b.len() > REQUEST_ID_MAX
            || !b
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
            || v.to_str()
                .is_ok_and(|id| id.contains(crate::auth::TOKEN_PREFIX))
    });
    if bad {
        req.headers_mut().remove(&REQUEST_ID);
    }
    next.run(req).await
}

/// The span every log line of one HTTP request is written in: its correlation id, method and
/// path (never the query, which may carry search terms), the path cut to its first
/// [`LOGGED_PATH_MAX`] bytes and with a name no user has withheld ([`users_withheld`]).
fn request_span(app: &Shared, req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    // A request refused for its length is still logged, with the start of its path.
    let path = capped(req.uri().path(), LOGGED_PATH_MAX);
    let path = users_withheld(path, |name| app.user(name).is_some());
    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %logged_path(&path))
}

/// The first `max` bytes of `text`, or fewer where byte `max` falls inside a character: cut
/// at the last character boundary at or before it.
fn capped(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The route prefix whose next segment names a user (`/v1/users/{name}/…`).
const USERS_PREFIX: &str = "/v1/users/";

/// `path` for the access log with the user name of a `/v1/users/{name}/…` path kept as sent
/// only when it names a user in the directory (once percent-decoded, in any letter case, as
/// the audit log's `claimed` does), else written as `(no such user, N characters)`: a name
/// no one has is as likely a password typed in its place, which the audit log withholds and
/// the access log must not keep either. `/v1/users/locked` is a route of its own, kept.
fn users_withheld(
    path: &str,
    in_directory: impl Fn(&warden_domain::UserName) -> bool,
) -> std::borrow::Cow<'_, str> {
    let Some(rest) = path.strip_prefix(USERS_PREFIX) else {
        return path.into();
    };
    let (segment, tail) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    if segment.is_empty() || (segment == "locked" && tail.is_empty()) {
        return path.into();
    }
    let name = percent_decoded(segment);
    let known = name
        .to_ascii_lowercase()
        .parse::<warden_domain::UserName>()
        .is_ok_and(|n| in_directory(&n));
    if known {
        return path.into();
    }
    format!(
        "{USERS_PREFIX}(no such user, {} characters){tail}",
        name.chars().count()
    )
    .into()
}

/// `path` for the access log, a token pasted into it (in place of a request id, say) cut to
/// its prefix: each segment is cut where it holds the token's prefix once percent-decoded
/// (`%77dn_…` is as much a token as `wdn_…`), and logged as `wdn_…` from there.
fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    let prefix = crate::auth::TOKEN_PREFIX;
    if token_at(path).is_none() {
        return path.into();
    }
    path.split('/')
        .map(|segment| match token_at(segment) {
            Some(at) => format!("{}{prefix}…", &segment[..at]),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
        .into()
}

/// Where in `text`, still percent-encoded, the first token prefix begins once it is decoded.
fn token_at(text: &str) -> Option<usize> {
    let prefix = crate::auth::TOKEN_PREFIX.as_bytes();
    let decoded = unescaped(text);
    decoded
        .windows(prefix.len())
        .position(|w| w.iter().map(|(_, b)| b).eq(prefix.iter()))
        .map(|i| decoded[i].0)
}

/// Longest part of a request's path written to the log.
const LOGGED_PATH_MAX: usize = 256;

/// One access-log line per request, inside its span: server errors as warnings, refusals
/// (4xx) at info level, and successful requests only at debug level. Every change a
/// successful request makes is in the audit log already, and at thousands of requests a
/// second formatting and writing their lines would cost the server a twentieth of its CPU.
fn log_response(
    res: &axum::http::Response<axum::body::Body>,
    latency: std::time::Duration,
    _: &tracing::Span,
) {
    let status = res.status().as_u16();
    let ms = latency.as_secs_f64() * 1000.0;
    // A 501 refuses the client's framing ([`bad_framing`]) as a 4xx would: no fault of the
    // server's that a client could otherwise raise warnings with.
    if res.status().is_client_error() || status == 501 {
        tracing::info!(status, ms, "request served");
    } else if res.status().is_server_error() {
        tracing::warn!(status, ms, "request served");
    } else {
        tracing::debug!(status, ms, "request served");
    }
}

/// Gives every error a JSON body. Axum's own rejections (a path or query string that does not
/// parse, a body where the route wants JSON, a method the route lacks) answer in plain text or
/// with no body at all; clients and scripts get `{"error":{"code":…,"message":…}}` from every
/// 4xx and 5xx, with axum's text as the message.
async fn json_errors(res: axum::response::Response) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let status = res.status();
    // Successes first: every response passes here, and most are not errors.
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_TEXT_MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, otherwise) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not take that method (see the Allow header)",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as JSON, with Content-Type: application/json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the request body is too large"),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ("bad_json", "the request body does not fit the endpoint")
        }
        s if s.is_server_error() => ("internal", "internal error; see the server log"),
        _ => ("bad_request", "the request is not valid"),
    };
    let message = if text.is_empty() {
        otherwise.to_owned()
    } else {
        text
    };
    let mut answer = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        answer.headers_mut().insert(header::ALLOW, allow.clone());
    }
    answer
}

/// Longest rejection text carried into a JSON error.
const REJECTION_TEXT_MAX: usize = 4096;

/// Longest request target (path and query) accepted. Real ones are well under a kilobyte;
/// HTTP's own parser allows 64 KiB and answers past that without a JSON body.
pub const URI_LIMIT: usize = 8 * 1024;
/// Most bytes of header lines accepted (names, values and separators). HTTP's own parser stops
/// at 100 header lines, answering without a JSON body; this refuses long ones first, with one.
pub const HEADERS_LIMIT: usize = 16 * 1024;

/// Refuses, with a JSON error and before anything else is done, a request whose target is
/// longer than [`URI_LIMIT`] (414), whose headers are larger than [`HEADERS_LIMIT`] (431), or
/// that is framed in a way not read as every proxy would ([`bad_framing`]); the refusal is
/// audited as the handlers audit bad input ([`refused_before_routing`]). Bodies are bounded
/// by [`JsonBody`], which knows the caller and so audits the refusal: one declared larger than
/// [`BODY_LIMIT`] is refused unread, one without a length where it passes the limit.
async fn refuse_oversize(
    axum::extract::State(app): axum::extract::State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match oversize_or_misframed(&req) {
        Some(err) => {
            let (parts, _) = req.into_parts();
            refused_before_routing(&app, &parts, err)
                .await
                .into_response()
        }
        None => next.run(req).await,
    }
}

/// Why `req` is refused before it is routed, if it is: its target or headers are too large, or
/// its framing is read more than one way ([`bad_framing`]).
fn oversize_or_misframed(req: &axum::extract::Request) -> Option<ApiError> {
    use axum::http::StatusCode;
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > URI_LIMIT {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request's path and query are longer than {} KiB; send search terms that are shorter",
                URI_LIMIT / 1024
            ),
        ));
    }
    // As the client sent them (a request that did not pass [`note_client_head`] has its own).
    let head = req
        .extensions()
        .get::<ClientHead>()
        .copied()
        .unwrap_or_else(|| ClientHead {
            header_bytes: header_bytes(req.headers()),
            framed_both_ways: false,
        });
    if head.header_bytes > HEADERS_LIMIT {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request's headers are larger than {} KiB together; send fewer or shorter ones",
                HEADERS_LIMIT / 1024
            ),
        ));
    }
    if head.framed_both_ways {
        return Some(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_framing",
            "the request names both Content-Length and Transfer-Encoding, which a proxy could read as two different bodies: send one of them",
        ));
    }
    bad_framing(req.version(), req.headers())
}

/// Puts on the record `err`, the refusal of `parts` before it was routed, as the refusals of
/// its operation's handler are: a sign-in's as a failed sign-in ([`refused_sign_in`]), and
/// that of an operation that needs a token, when it carries a live one, as its holder's. The
/// answer is `err` whatever the token (it is not checked as a call's would be: a request
/// whose size or framing is refused is not looked at further), so one that is none is
/// neither recorded nor counted; nor is a request to a path or with a method no operation
/// has, as its 404 or 405 would not be. A refusal that cannot be recorded is answered with the
/// storage error.
async fn refused_before_routing(app: &Shared, parts: &Parts, err: ApiError) -> ApiError {
    let Some(Routed {
        name,
        operation,
        params,
    }) = operation_at(&parts.method, parts.uri.path())
    else {
        return err;
    };
    if name == SIGN_IN {
        return refused_sign_in(app, parts, err).await;
    }
    let Some(token) = bearer(&parts.headers).filter(|_| operation.token) else {
        return err;
    };
    let user = match app.token_holder(token).await {
        Ok(Some(user)) => user,
        Ok(None) => return err,
        Err(e) => return e.into(),
    };
    let source = match source(parts, app).await {
        Ok(source) => source,
        Err(refused) => return refused,
    };
    let mut event = Event::new(refusal_code(&name), Actor::user(user.name, source), now())
        .details(serde_json::json!({ "action": name }));
    event.request_id = request_named(&name, params.iter().map(|(k, v)| (*k, v.as_str())));
    audited(app, event, err).await
}

/// The operation a request is routed to, found before it is routed ([`operation_at`]).
#[derive(Debug)]
struct Routed {
    /// As the document names it.
    name: String,
    /// What the document says of it.
    operation: Operation,
    /// The path's parameters by name, still percent-encoded.
    params: Vec<(&'static str, String)>,
}

/// The operation that a request of `method` to `path` is routed to; `None` for a path or
/// method no operation has. `HEAD` is `GET`'s.
fn operation_at(method: &Method, path: &str) -> Option<Routed> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let wanted = format!("{method} ");
    let segments: Vec<&str> = path.split('/').collect();
    OPERATIONS.iter().find_map(|(name, operation)| {
        let template = name.strip_prefix(&wanted)?;
        let wildcard = WILDCARD_ROUTES
            .iter()
            .any(|route| route.replace("{*", "{") == template);
        let parts: Vec<&'static str> = template.split('/').collect();
        let mut params = Vec::new();
        for (at, part) in parts.iter().enumerate() {
            let Some(param) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) else {
                if segments.get(at) != Some(part) {
                    return None;
                }
                continue;
            };
            let value = if wildcard && at + 1 == parts.len() {
                segments.get(at..).map(|rest| rest.join("/"))
            } else {
                segments.get(at).map(|s| (*s).to_owned())
            };
            params.push((param, value.filter(|v| !v.is_empty())?));
        }
        (wildcard || segments.len() == parts.len()).then(|| Routed {
            name: name.clone(),
            operation: *operation,
            params,
        })
    })
}

/// The refusal of a request framed in a way this server does not read as every proxy would
/// (RFC 9112), besides one that names both a length and a transfer coding, which hyper does
/// not hand on ([`ClientHead`]): a transfer coding other than `chunked` once (a proxy that applies the other
/// would see another body), a body encoding it would not decode, an expectation it cannot
/// meet, or an HTTP/1.1 request without exactly one `Host`.
fn bad_framing(version: axum::http::Version, headers: &axum::http::HeaderMap) -> Option<ApiError> {
    use axum::http::{StatusCode, header};
    let values = |name| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let codings = values(header::TRANSFER_ENCODING);
    if codings.iter().any(|c| c != "chunked") {
        return Some(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "unsupported_transfer_coding",
            "the only transfer coding taken is chunked: send the body as it is, with Content-Length or chunked",
        ));
    }
    if codings.len() > 1 {
        return Some(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_framing",
            "Transfer-Encoding names chunked more than once: name it once",
        ));
    }
    if values(header::CONTENT_ENCODING)
        .iter()
        .any(|c| c != "identity")
    {
        return Some(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_encoding",
            "request bodies are not decoded: send the JSON as it is, without Content-Encoding",
        ));
    }
    if values(header::EXPECT).iter().any(|e| e != "100-continue") {
        return Some(ApiError::new(
            StatusCode::EXPECTATION_FAILED,
            "expectation_failed",
            "the only expectation met is 100-continue",
        ));
    }
    if version == axum::http::Version::HTTP_11 && headers.get_all(header::HOST).iter().count() != 1
    {
        return Some(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_host",
            "an HTTP/1.1 request carries exactly one Host header",
        ));
    }
    None
}

/// The refusal of a body over [`BODY_LIMIT`], declared or streamed.
fn body_too_large() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than {} KiB", BODY_LIMIT / 1024),
    )
}

/// What the OpenAPI document says of one operation that the router needs before its handler.
#[derive(Debug, Clone, Copy)]
struct Operation {
    /// It takes query parameters.
    query: bool,
    /// It needs an API token (its handler takes [`Authed`]).
    token: bool,
}

/// The `/v1` operations, as `METHOD /path/{template}`, with what the OpenAPI document says of
/// them: it is what says which endpoints take query parameters, and which a token.
static OPERATIONS: std::sync::LazyLock<std::collections::BTreeMap<String, Operation>> =
    std::sync::LazyLock::new(|| {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        let doc = ApiDoc::openapi();
        let mut out = std::collections::BTreeMap::new();
        for (path, item) in &doc.paths.paths {
            let operations = [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ];
            for (method, op) in operations {
                let Some(op) = op else { continue };
                let query = op.parameters.iter().flatten().any(
                    |p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)),
                );
                let token = serde_json::to_value(&op.security)
                    .ok()
                    .and_then(|v| v.as_array().cloned())
                    .into_iter()
                    .flatten()
                    .any(|requirement| requirement.get("token").is_some());
                out.insert(format!("{method} {path}"), Operation { query, token });
            }
        }
        out
    });

/// The operation a request was routed to, as the OpenAPI document names it: `HEAD` is `GET`'s,
/// and a wildcard segment (`{*fingerprint}`) is a parameter like any other there.
fn operation_name(method: &Method, route: &str) -> String {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    format!("{method} {}", route.replace("{*", "{"))
}

/// Most query parameter names a refusal names, and the longest name it names whole: what a
/// caller sent by mistake is worth knowing, but a query is no place for a record to copy.
const QUERY_NAMES_MAX: usize = 8;
const QUERY_NAME_MAX: usize = 32;

/// The names of the parameters in `query`, each once, decoded, at most [`QUERY_NAMES_MAX`] of
/// them; never their values, which may be secrets, nor a name longer than [`QUERY_NAME_MAX`]
/// characters or shaped like a token, which may be one too: of those, only the length.
fn query_names(query: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let name = recordable_name(percent_decoded(&name.replace('+', " ")));
        if !names.contains(&name) {
            if names.len() == QUERY_NAMES_MAX {
                names.push("…".to_owned());
                break;
            }
            names.push(name);
        }
    }
    names
}

/// A query parameter's or a body field's `name` as a refusal may show it: a name is a short word
/// of lowercase letters, digits and `_`, as every name the API takes is; anything else (longer,
/// shaped like a token, with capitals or signs) may be a secret pasted into the address
/// (`?TOKEN`, `?Hunter2pass`), and only its length is kept.
fn recordable_name(name: String) -> String {
    let shaped = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !shaped
        || name.chars().count() > QUERY_NAME_MAX
        || name.starts_with(crate::auth::TOKEN_PREFIX)
    {
        format!("(a name of {} characters)", name.chars().count())
    } else {
        name
    }
}

/// `text` with its `%XX` escapes decoded; bytes that do not form UTF-8 become U+FFFD.
fn percent_decoded(text: &str) -> String {
    let out: Vec<u8> = unescaped(text).into_iter().map(|(_, b)| b).collect();
    String::from_utf8_lossy(&out).into_owned()
}

/// The bytes of `text` with its `%XX` escapes decoded, each with where in `text` it begins.
fn unescaped(text: &str) -> Vec<(usize, u8)> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        let escaped = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((high, low)) => {
                out.push((i, u8::try_from(high * 16 + low).unwrap_or_default()));
                i += 3;
            }
            None => {
                out.push((i, bytes[i]));
                i += 1;
            }
        }
    }
    out
}

/// Refuses query parameters on a `/v1` endpoint that takes none, as those that take some refuse
/// the ones they do not know: a filter that is silently ignored would mislead its caller. The
/// caller of an endpoint that needs a token is authenticated first, as its handler would: a
/// missing or invalid token is 401 (and counted against the address) whatever the query, and
/// the refusal of an authenticated caller is audited as the handlers audit bad input, naming
/// the endpoint and the parameters (never their values).
async fn refuse_unknown_query(
    axum::extract::State(app): axum::extract::State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Most requests carry no query: nothing more is looked at for them. Nor at one of only
    // `&`s, which names no parameter, as the endpoints that take some read it.
    if req
        .uri()
        .query()
        .is_none_or(|q| q.split('&').all(str::is_empty))
    {
        return next.run(req).await;
    }
    let Some(route) = req.extensions().get::<axum::extract::MatchedPath>() else {
        return next.run(req).await;
    };
    let route = route.as_str().to_owned();
    if !route.starts_with("/v1/") {
        return next.run(req).await;
    }
    // HEAD is answered as GET.
    let method = if req.method() == axum::http::Method::HEAD {
        &axum::http::Method::GET
    } else {
        req.method()
    };
    let name = operation_name(method, &route);
    // A method the route does not take is the router's to refuse (405, with `Allow`),
    // whatever the query.
    let Some(operation) = OPERATIONS.get(&name).copied() else {
        return next.run(req).await;
    };
    if operation.query {
        return next.run(req).await;
    }
    let names = query_names(req.uri().query().unwrap_or_default());
    let shown: Vec<String> = names
        .iter()
        .map(|n| warden_domain::text::shown(n, QUERY_NAME_MAX + 1))
        .collect();
    let given = if shown.is_empty() {
        String::new()
    } else {
        format!(" (given: {})", shown.join(", "))
    };
    let err = ApiError::bad_request(
        "bad_query",
        format!("{name} takes no query parameters{given}; see /v1/openapi.json"),
    );
    let (mut parts, _) = req.into_parts();
    if !operation.token {
        // A sign-in refused for its form is a failed one, on the record and counted against
        // its address as the handler's own refusals of its form are; other calls without a
        // token have no caller to put on the record.
        if name == SIGN_IN {
            return refused_sign_in(&app, &parts, err).await.into_response();
        }
        return err.into_response();
    }
    let who = match Authed::from_request_parts(&mut parts, &app).await {
        Ok(who) => who,
        Err(refused) => return refused.into_response(),
    };
    let request = axum::extract::RawPathParams::from_request_parts(&mut parts, &app)
        .await
        .ok()
        .and_then(|params| request_named(&name, params.iter()));
    let mut event = Event::new(refusal_code(&name), who.actor(), now())
        .details(serde_json::json!({ "action": name, "query_parameters": names }));
    event.request_id = request;
    audited(&app, event, err).await.into_response()
}

/// The request a refusal of the operation `name` is about, when its path names one (by `id`
/// among its `params`): a request's or a postmortem's, whose history then shows the refusal.
fn request_named<'a>(
    name: &str,
    mut params: impl Iterator<Item = (&'a str, &'a str)>,
) -> Option<warden_domain::RequestId> {
    let (_, route) = name.split_once(' ')?;
    if !(route.starts_with("/v1/requests/{id}") || route.starts_with("/v1/postmortems/{id}")) {
        return None;
    }
    params.find(|(key, _)| *key == "id")?.1.parse().ok()
}

/// The sign-in operation, as the document names it.
const SIGN_IN: &str = "POST /v1/auth/login";

/// Puts on the record `err`, the refusal of a sign-in (`parts`) for its form before its body
/// was read, as a failed sign-in: counted against its address as a wrong password is. The
/// answer is `err`, or the address's refusal when it has spent its failures (or its
/// `X-Forwarded-For` does not parse), or a storage error when the record cannot be kept.
async fn refused_sign_in(app: &Shared, parts: &Parts, err: ApiError) -> ApiError {
    let source = match source(parts, app).await {
        Ok(source) => source,
        Err(refused) => return refused,
    };
    match app
        .unreadable_login(source, None, &err.code, &err.recorded())
        .await
    {
        Ok(()) => err,
        Err(refused) => refused.into(),
    }
}

/// The code a refusal of `operation` is audited under: break-glass and the close of its
/// postmortem have codes of their own, which alerts watch, whatever was wrong with the call.
fn refusal_code(operation: &str) -> Code {
    match operation {
        "POST /v1/breakglass" => Code::BreakGlassRefused,
        "POST /v1/postmortems/{id}/close" => Code::PostmortemCloseRefused,
        _ => Code::ActionRefused,
    }
}

/// A path parameter, percent-decoded. Bytes that do not form UTF-8 become U+FFFD, so that the
/// handler's own check refuses the parameter with its own code and message (a request id that
/// is not one is `bad_id` however it is malformed) and audits it as it audits other bad input,
/// rather than answering axum's plain `Invalid URL`.
#[derive(Debug)]
pub(crate) struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(text)) => Ok(Self(text)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
            {
                let raw = raw_param(parts).unwrap_or_default();
                Ok(Self(percent_decoded(raw)))
            }
            Err(other) => Err(ApiError::internal(format!(
                "a path parameter that does not parse: {}",
                other.body_text()
            ))),
        }
    }
}

/// The part of the request's path, still percent-encoded, that its route's (first) parameter
/// stands for: one segment, or for a wildcard (`{*name}`) the rest of the path.
fn raw_param(parts: &Parts) -> Option<&str> {
    let route = parts.extensions.get::<axum::extract::MatchedPath>()?;
    let at = route
        .as_str()
        .split('/')
        .position(|segment| segment.starts_with('{'))?;
    let path = parts.uri.path();
    let start = path
        .match_indices('/')
        .nth(at.checked_sub(1)?)
        .map(|(i, _)| i + 1)?;
    let rest = path.get(start..)?;
    if route.as_str().split('/').nth(at)?.starts_with("{*") {
        Some(rest)
    } else {
        rest.split('/').next()
    }
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Warden API", description = "Just-in-time privileged access: request, approve, issue, revoke, audit. Every error is `{\"error\":{\"code\":…,\"message\":…}}`; besides those each operation lists, a path no operation has is 404 `no_route`, and a method a path does not take 405 `method_not_allowed` with `Allow`. Each error response names the codes it may carry: the operation's own, then those of the layers in front of every operation of its kind (a query it does not take, `bad_query`; a body, `bad_json`, `bad_body`, `unsupported_media_type`, `body_too_large`, `request_timeout`; a token, `unauthenticated` and `too_many_failures`; a token or a sign-in behind a trusted proxy, `bad_forwarded_for`; the store, `storage_unavailable` and `storage_full`)."),
    paths(
        meta::healthz, meta::readyz, meta::openapi, meta::ssh_ca, meta::ssh_revoked_keys,
        audit::search, audit::checkpoint, audit::verifier_key, audit::proof, audit::consistency, audit::export, audit::archive, audit::delete_segment,
        export::status, report::metrics, report::report,
        session::login, session::logout, session::whoami, session::mfa_enroll, session::mfa_confirm, session::set_password,
        policy::targets, policy::status, policy::explain, policy::reload,
        requests::create, requests::list, requests::show, requests::approve, requests::deny,
        requests::cancel, requests::revoke, requests::extend, requests::credential,
        session::revoke_all, session::locked, session::unlock, session::reset_mfa, targets::set_credential, targets::rotate_root,
        breakglass::create, breakglass::list, breakglass::show, breakglass::close,
        breakglass::drills, breakglass::outbox,
        ssh::proxy, ssh::add_key, ssh::list_keys, ssh::remove_key, ssh::scan_host_key, ssh::pin_host_key,
        ssh::list, ssh::kill, ssh::watch, ssh::recording,
    ),
    tags(
        (name = "meta", description = "Liveness, readiness, this document, and the SSH user CA and revocation list hosts fetch"),
        (name = "session", description = "Signing in, tokens, MFA enrolment, and users' passwords and lockouts"),
        (name = "policy", description = "What may be requested, decisions explained, and reloads"),
        (name = "requests", description = "The request lifecycle: create, review, cancel, revoke, extend, and credentials"),
        (name = "targets", description = "Targets' administrator credentials"),
        (name = "breakglass", description = "Emergency access and its postmortems"),
        (name = "ssh", description = "The SSH proxy: keys, host keys, live sessions and recordings"),
        (name = "audit", description = "The signed, tamper-evident audit log: search, proofs, export, archive, export status"),
        (name = "report", description = "Metrics, the zero-standing-privilege report, and break-glass drills"),
        (name = "notifications", description = "The notification outbox"),
    ),
    modifiers(&BearerAuth, &PathParameters, &ErrorResponses, &FieldLimits)
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The operations of a path of the document, whatever their method.
fn operations_mut(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// Declares each parameter of an operation's path (`{id}`) that its handler does not: those it
/// reads with [`PathText`], which the document's generator does not see as a path parameter.
struct PathParameters;

impl utoipa::Modify for PathParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{RefOr, Required};
        for (path, item) in &mut openapi.paths.paths {
            let names: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            if names.is_empty() {
                continue;
            }
            for op in operations_mut(item) {
                let parameters = op.parameters.get_or_insert_with(Vec::new);
                for (at, name) in names.iter().enumerate() {
                    let declared = parameters.iter().any(|p| match p {
                        RefOr::T(p) => {
                            p.name == *name && matches!(p.parameter_in, ParameterIn::Path)
                        }
                        RefOr::Ref(_) => false,
                    });
                    if !declared {
                        let parameter = ParameterBuilder::new()
                            .name(*name)
                            .parameter_in(ParameterIn::Path)
                            .required(Required::True)
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                            .build();
                        parameters.insert(at.min(parameters.len()), RefOr::T(parameter));
                    }
                }
            }
        }
    }
}

/// How the OpenAPI document describes a 503 of an operation that reaches the store.
const STORAGE_UNAVAILABLE: &str = "`storage_unavailable`: the store cannot be read or written, or holds a record it cannot read (the server's log says which); `storage_full`: the disk of the store's data dir is full (the server goes on by itself once there is room); either way nothing was changed, and the call may be made again";

/// What an operation is, as far as the errors every operation of its kind can answer go.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Under `/v1`, where a query the operation does not take is refused.
    v1: bool,
    /// It needs an API token.
    token: bool,
    /// It takes a request body.
    body: bool,
    /// It reads the caller's address (from `X-Forwarded-For` behind a trusted proxy): to
    /// check a token, or to count a sign-in against it.
    source: bool,
}

/// The operations that read the caller's address without an API token: a sign-in, whose
/// failures count against it.
const ADDRESS_READERS: &[&str] = &["/v1/auth/login"];

/// The codes every operation of `shape` can answer with `status`, besides those its handler
/// lists: they come from the layers in front of every handler (framing, size limits, the
/// token's check, the body's and the query's parsing), so the document names them here, once.
fn common_codes(status: u16, shape: Shape) -> Vec<&'static str> {
    let mut codes = Vec::new();
    match status {
        400 => {
            if shape.v1 {
                codes.push("`bad_query` (a query parameter the operation does not take, or one that does not parse)");
            }
            if shape.body {
                codes.push("`bad_json` (the body is not a JSON object of the operation's fields: a field it does not take, or of the wrong type), `bad_body` (the body could not be read whole)");
            }
            if shape.source {
                codes.push("`bad_forwarded_for` (a trusted proxy's `X-Forwarded-For` that does not parse)");
            }
            codes.push("`bad_framing`, `bad_host` (a request HTTP could read more than one way)");
        }
        401 if shape.token => codes.push(
            "`unauthenticated`: no token, or one that is unknown, expired or revoked",
        ),
        408 => codes.push("`request_timeout`: the body did not arrive in time after the headers"),
        413 => codes.push("`body_too_large`: the body is larger than 64 KiB"),
        414 => codes.push("`uri_too_long`: the path and query are longer than 8 KiB"),
        415 => {
            if shape.body {
                codes.push("`unsupported_media_type` (a body not sent as JSON in UTF-8)");
            }
            codes.push("`unsupported_content_encoding` (a body with a `Content-Encoding`)");
        }
        417 => codes.push("`expectation_failed`: an `Expect` other than 100-continue"),
        429 if shape.token => codes.push(
            "`too_many_failures`: too many calls with a missing or invalid token, or failed sign-ins, from this address; see `Retry-After`",
        ),
        431 => codes.push("`headers_too_large`: the headers are larger than 16 KiB together"),
        500 => codes.push("`internal`: a fault of the server's own; its log says what"),
        501 => codes.push("`unsupported_transfer_coding`: a transfer coding other than chunked"),
        503 if shape.token => codes.push(STORAGE_UNAVAILABLE),
        _ => {}
    }
    codes
}

/// Declares on every operation the errors every route of its shape can answer, which each
/// handler's own list leaves out: 401 (with `WWW-Authenticate`) and 429 (with `Retry-After`)
/// where a token is needed (missing, expired or revoked; too many bad ones from one address),
/// 400 (a query a `/v1` route does not take, framing read more than one way), 415, 417 and 501
/// (a body encoding, an expectation or a transfer coding it does not take), 404 for a path
/// parameter, 413 for a body, 414 and 431 for an oversize path or headers, 500, and 503
/// where a token is needed (checking it reads the store, and so does nearly every handler
/// behind it; handlers that reach the store without one list it themselves). Each error
/// response's description names the codes it may carry: the handler's own (a 503 it lists
/// without one is the store's, [`STORAGE_UNAVAILABLE`]), then those of [`common_codes`].
struct ErrorResponses;

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        // The header a refusal of this status (with this description of its codes) carries,
        // which a client needs to act on it.
        let header_of = |status: &str, codes: &str| {
            let (name, why) = match status {
                "401" => (
                    "WWW-Authenticate",
                    "`Bearer`: the call needs `Authorization: Bearer <token>`",
                ),
                "429" => ("Retry-After", "Seconds until this address may try again"),
                "503" if codes.contains("sign_ins_busy") => (
                    "Retry-After",
                    "With `sign_ins_busy`: seconds until a sign-in is likely to be checked",
                ),
                _ => return None,
            };
            let header = HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(why))
                .build();
            Some((name, header))
        };
        // Described below, as the responses handlers list without a description are.
        let error = || {
            RefOr::T(
                ResponseBuilder::new()
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in &mut openapi.paths.paths {
            for op in operations_mut(item) {
                let in_path = op.parameters.iter().flatten().any(
                    |p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path)),
                );
                let token = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let shape = Shape {
                    v1: path.starts_with("/v1/"),
                    token,
                    body: op.request_body.is_some(),
                    source: token || ADDRESS_READERS.contains(&path.as_str()),
                };
                // Framing refused before any route ([`bad_framing`]): 400, 415, 417, 501.
                let mut statuses = vec![400, 414, 415, 417, 431, 500, 501];
                if shape.token {
                    statuses.extend([401, 429, 503]);
                }
                if in_path {
                    statuses.push(404);
                }
                if shape.body {
                    // 408: the body did not arrive in time after the headers.
                    statuses.extend([408, 413, 415]);
                }
                let responses = &mut op.responses.responses;
                for code in statuses {
                    responses.entry(code.to_string()).or_insert_with(error);
                }
                for (code, response) in responses.iter_mut() {
                    let RefOr::T(r) = response else { continue };
                    let status = code
                        .parse::<u16>()
                        .ok()
                        .and_then(|c| axum::http::StatusCode::from_u16(c).ok());
                    if let Some(status) =
                        status.filter(|s| s.is_client_error() || s.is_server_error())
                    {
                        let own = match (status.as_u16(), r.description.is_empty()) {
                            // A handler's 503 without a word of why is the store's; an
                            // operation that needs a token has it among its common codes.
                            (503, true) if !shape.token => STORAGE_UNAVAILABLE.to_owned(),
                            _ => std::mem::take(&mut r.description),
                        };
                        let codes: Vec<String> = std::iter::once(own)
                            .chain(
                                common_codes(status.as_u16(), shape)
                                    .into_iter()
                                    .map(str::to_owned),
                            )
                            .filter(|d| !d.is_empty())
                            .collect();
                        r.description = codes.join("; ");
                    }
                    if r.description.is_empty() {
                        r.description = status
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("Response")
                            .to_owned();
                    }
                    if let Some((name, header)) = header_of(code, &r.description) {
                        r.headers.entry(name.to_owned()).or_insert(RefOr::T(header));
                    }
                }
            }
        }
    }
}

/// Declares on request bodies the limits the server holds their fields to, from the same
/// constants, so a client generated from the document refuses what the server would. A limit
/// the server counts in bytes is said so in the field's description: JSON Schema's
/// `maxLength` counts characters, so it bounds such a field from above only.
struct FieldLimits;

/// The limits of one field: least and most characters, most bytes, and a pattern.
#[derive(Debug, Default)]
struct Limits {
    min: Option<usize>,
    max: Option<usize>,
    max_bytes: Option<usize>,
    pattern: Option<&'static str>,
}

impl utoipa::Modify for FieldLimits {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::Schema;
        use warden_domain::{Comment, Reason, Ticket};
        /// 1-64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit.
        const NAME: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
        /// Printable ASCII, no spaces.
        const GRAPHIC: &str = "^[!-~]+$";
        let chars = |max| Limits {
            max: Some(max),
            ..Limits::default()
        };
        let bytes = |min, max| Limits {
            min,
            max_bytes: Some(max),
            ..Limits::default()
        };
        let limits = |body: &str, field: &str| -> Option<Limits> {
            Some(match (body, field) {
                (_, "reason") => chars(Reason::MAX),
                (_, "comment" | "note") => chars(Comment::MAX),
                (_, "ticket") => chars(Ticket::MAX),
                (_, "link") => bytes(None, warden_domain::Link::MAX),
                (_, "totp" | "code") => bytes(None, requests::MAX_TOTP),
                (_, "public_key") => bytes(None, requests::MAX_PUBLIC_KEY),
                // A new password; signing in takes whatever password the user has, within the
                // same bound.
                ("PasswordBody", "password") => bytes(
                    Some(warden_domain::password::MIN_CHARS),
                    warden_domain::password::MAX_BYTES,
                ),
                ("LoginBody", "password") | ("PasswordBody", "current_password") => {
                    bytes(None, warden_domain::password::MAX_BYTES)
                }
                // A target's administrator account, as the vault takes it.
                ("CredentialBody", "username") => Limits {
                    pattern: Some(GRAPHIC),
                    ..bytes(Some(1), crate::vault::MAX_USERNAME)
                },
                ("CredentialBody", "password") => bytes(Some(1), crate::vault::MAX_PASSWORD),
                (_, "target" | "role" | "user") => Limits {
                    pattern: Some(NAME),
                    ..Limits::default()
                },
                _ => return None,
            })
        };
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (name, schema) in &mut components.schemas {
            let RefOr::T(Schema::Object(body)) = schema else {
                continue;
            };
            if !name.ends_with("Body") || name == "ErrorBody" {
                continue;
            }
            for (field, property) in &mut body.properties {
                let (RefOr::T(Schema::Object(p)), Some(limits)) = (property, limits(name, field))
                else {
                    continue;
                };
                p.min_length = limits.min.or(p.min_length);
                p.max_length = limits.max.or(limits.max_bytes).or(p.max_length);
                if let Some(pattern) = limits.pattern {
                    p.pattern = Some(pattern.to_owned());
                }
                if let Some(max) = limits.max_bytes {
                    let said = format!("At most {max} bytes (of UTF-8), as the server counts it.");
                    p.description = Some(match p.description.take() {
                        Some(d) => format!("{d} {said}"),
                        None => said,
                    });
                }
            }
        }
    }
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from `POST /v1/auth/login`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The `metrics_token` of the server's config, when it sets one",
                    ))
                    .build(),
            ),
        );
    }
}

/// The caller's network address, when the server was started with connect info: the peer's,
/// or the client's behind one of the `trusted_proxies` ([`crate::forwarded`]). A trusted
/// proxy's `X-Forwarded-For` that does not parse is refused and audited.
async fn source(parts: &Parts, app: &Shared) -> Result<Option<String>, ApiError> {
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return Ok(None);
    };
    let forwarded = parts.headers.get_all(crate::forwarded::HEADER).iter();
    match app.config.trusted_proxies.client(peer.ip(), forwarded) {
        Ok(client) => Ok(Some(client.to_string())),
        Err(why) => {
            let err = ApiError::bad_request(
                "bad_forwarded_for",
                format!("{why}: the proxy in front of Warden must append the client's address"),
            );
            let actor = Actor {
                source: Some(peer.ip().to_string()),
                ..Actor::default()
            };
            Err(audited(
                app,
                Event::new(Code::ForwardedForRefused, actor, now()),
                err,
            )
            .await)
        }
    }
}

/// An authenticated caller, from `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: User,
    pub token: String,
    /// When the token stops working.
    pub token_expires_at: time::OffsetDateTime,
    pub source: Option<String>,
    /// Held for the call's life when it may write, so offboarding can wait for it.
    _in_flight: Option<Arc<ChangeInFlight>>,
}

impl Authed {
    /// The caller as the broker sees them.
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            user: &self.user,
            source: self.source.clone(),
        }
    }

    fn actor(&self) -> Actor {
        Actor::user(self.user.name.clone(), self.source.clone())
    }
}

impl FromRequestParts<Shared> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        let source = source(parts, app).await?;
        let Some(token) = bearer(&parts.headers) else {
            return Err(app.no_token(source).await.into());
        };
        // Reads cannot outlive offboarding's effects; anything else may write.
        let change = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let found = app.authenticate(token, source.clone(), change).await?;
        Ok(Self {
            user: found.user,
            token: token.to_owned(),
            token_expires_at: found.token.expires_at,
            source,
            _in_flight: found.in_flight.map(Arc::new),
        })
    }
}

/// The token of `Authorization: Bearer TOKEN` (the scheme's name in any case, as HTTP has it).
/// Two `Authorization` headers are none: which one a proxy on the way would have read is
/// anyone's guess.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let (Some(only), None) = (all.next(), all.next()) else {
        return None;
    };
    let (scheme, token) = only.to_str().ok()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The caller's address without requiring authentication.
#[derive(Debug, Clone)]
pub struct Source(pub Option<String>);

impl FromRequestParts<Shared> for Source {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Self, ApiError> {
        source(parts, app).await.map(Source)
    }
}

/// Refuses callers outside the administrators and the `audit_readers` group, saying that
/// only those may do `what`.
fn require_audit_reader(app: &Shared, who: &Authed, what: &str) -> Result<(), ApiError> {
    if app.may_read_audit(&who.user) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "only administrators and the audit_readers group ({}) can {what}",
            app.config.audit_readers
        )))
    }
}

/// Unwraps a JSON body, auditing a malformed one as a refusal of `action`.
async fn body<T, const EMPTY_IS_DEFAULT: bool>(
    app: &Shared,
    who: &Authed,
    action: &str,
    body: Result<JsonBody<T, EMPTY_IS_DEFAULT>, ApiError>,
) -> Result<T, ApiError> {
    admitted(app, who, action, body.map(|JsonBody(v)| v)).await
}

/// Passes what a handler read from its request and checked of its caller, or audits the
/// refusal as one of `action`: reads change nothing, but a caller probing with bad input or
/// without the right is worth knowing about, as for writes.
async fn admitted<T>(
    app: &Shared,
    who: &Authed,
    action: &str,
    checked: Result<T, ApiError>,
) -> Result<T, ApiError> {
    match checked {
        Ok(v) => Ok(v),
        Err(err) => Err(refuse(app, who, action, err).await),
    }
}

/// A query string parsed into `T`, or a 400 `bad_query` saying what did not parse.
fn query<T>(
    raw: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    raw.map(|axum::extract::Query(q)| q).map_err(|r| {
        let text = r.body_text();
        let cause = json_body::cause(&text);
        ApiError::bad_request(
            "bad_query",
            format!(
                "the query parameters do not fit this endpoint: {}",
                named_unknown(
                    cause,
                    "parameter",
                    "this endpoint takes no query parameters"
                )
                .unwrap_or_else(|| json_body::without_values(cause))
            ),
        )
    })
}

/// A parser's "unknown field" complaint (`cause`) with the unknown name, called a `noun`,
/// shown as [`recordable_name`] shows it (a name shaped like those the API takes, else only its
/// length: the refusal is audited, the log kept for good, and a password sent as a key,
/// `{"Sup3rS3cret": 1}`, is no name), then the names expected, or `none` where there are none
/// to expect. The path in front (its name again) is left out; none for any other complaint.
/// Neither the list of expected names nor the parser's "there are no fields" holds the text
/// that ends the name: the name ends at its last one. "There are no fields" is looked for
/// first: a name that holds it is cut short there, whereas one that holds "`, expected" would
/// otherwise show its end as the list of expected names.
fn named_unknown(cause: &str, noun: &str, none: &str) -> Option<String> {
    const UNKNOWN: &str = "unknown field `";
    let rest = &cause[cause.find(UNKNOWN)? + UNKNOWN.len()..];
    let (end, after) = match rest.rfind("`, there are no fields") {
        Some(end) => (end, format!(": {none}")),
        None => {
            let end = rest.rfind("`, expected")?;
            (end, rest[end + 1..].to_owned())
        }
    };
    let name = &rest[..end];
    let name = match recordable_name(name.to_owned()) {
        shown if shown == name => format!("`{name}`"),
        shown => shown,
    };
    Some(format!("unknown {noun} {name}{after}"))
}

/// Most requests a listing returns at once (`GET /v1/requests`).
pub const REQUESTS_AT_ONCE: usize = 1000;
/// Most postmortems a listing returns at once (`GET /v1/postmortems`).
pub const POSTMORTEMS_AT_ONCE: usize = 1000;
/// Most events an audit search returns at once (`GET /v1/audit`).
pub const EVENTS_AT_ONCE: usize = 10_000;

/// The `limit` query parameter: `default` when absent, at most `max`, and never zero (which
/// would ask for nothing).
fn limit(given: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match given {
        Some(0) => Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be 1 or more (at most {max} are returned)"),
        )),
        Some(n) => Ok(n.min(max)),
        None => Ok(default),
    }
}

/// Parses `text`, the parameter `name`, as an RFC 3339 time; a 400 naming both and the format.
fn rfc3339(name: &str, text: &str) -> Result<time::OffsetDateTime, ApiError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(|e| {
        ApiError::invalid(
            "bad_time",
            format!(
                "{name} {} is not an RFC 3339 time such as 2026-01-01T00:00:00Z ({e})",
                warden_domain::text::shown(text, 40)
            ),
        )
    })
}

/// Parses a field with its domain type, turning the parse error into a 400 that names the field
/// ([`ApiError::invalid`]: the audit log keeps the value only by its length).
fn field<T, E: std::fmt::Display>(code: &str, parsed: Result<T, E>) -> Result<T, ApiError> {
    parsed.map_err(|e| ApiError::invalid(code, e.to_string()))
}

/// Audits a refusal of bad input and returns it; the request changed nothing.
async fn refuse(app: &Shared, who: &Authed, action: &str, err: ApiError) -> ApiError {
    refuse_about(app, who, action, None, err).await
}

/// [`refuse`] for the caller's error (4xx), a refusal to audit; a failure of the server's
/// own or a target's (5xx) is none.
async fn refuse_4xx(app: &Shared, who: &Authed, action: &str, e: ApiError) -> ApiError {
    if e.status.is_client_error() {
        refuse(app, who, action, e).await
    } else {
        e
    }
}

/// [`refuse_4xx`], of an action on `target`: the event names it, so that a search by target
/// finds the refusal.
async fn refuse_at_target(
    app: &Shared,
    who: &Authed,
    action: &str,
    target: &warden_domain::TargetName,
    err: ApiError,
) -> ApiError {
    if !err.status.is_client_error() {
        return err;
    }
    let mut event = action_refused(who, action);
    event.target = Some(target.clone());
    audited(app, event, err).await
}

/// [`refuse`], of an action on `request`: the event names it, so that the request's history
/// shows the refusal.
async fn refuse_about(
    app: &Shared,
    who: &Authed,
    action: &str,
    request: Option<warden_domain::RequestId>,
    err: ApiError,
) -> ApiError {
    let mut event = action_refused(who, action);
    event.request_id = request;
    audited(app, event, err).await
}

/// [`refuse`], of an action on session `id` (when it is one's): the event names it, so that
/// the session's history shows who was refused what.
async fn refuse_on_session(
    app: &Shared,
    who: &Authed,
    action: &str,
    id: Option<&str>,
    err: ApiError,
) -> ApiError {
    let mut event = action_refused(who, action);
    event.session_id = id.map(str::to_owned);
    audited(app, event, err).await
}

/// The `request.action_refused` event of `who`'s refused `action`, to be marked with why.
fn action_refused(who: &Authed, action: &str) -> Event {
    Event::new(Code::ActionRefused, who.actor(), now())
        .details(serde_json::json!({ "action": action }))
}

/// Appends `event`, marked denied with `err`, and hands `err` back; a refusal that cannot be
/// audited becomes a storage error, so none goes unrecorded.
async fn audited(app: &Shared, event: Event, err: ApiError) -> ApiError {
    let event = event.denied(&err.code, err.recorded());
    match app.store.append(vec![event]).await {
        Ok(()) => err,
        Err(e) => crate::broker::Error::from(e).into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_unknown_name_is_shown_when_it_is_shaped_like_a_name() {
        let said = |name: &str| {
            named_unknown(
                &format!("unknown field `{name}`, expected one of `user`, `after_seq`"),
                "parameter",
                "none",
            )
            .unwrap()
        };
        assert!(said("after").starts_with("unknown parameter `after`"));
        assert!(said("usr").starts_with("unknown parameter `usr`"));
        assert!(said("verdict").starts_with("unknown parameter `verdict`"));
        assert!(said("Hunter2").starts_with("unknown parameter (a name of 7 characters)"));
        assert!(said("a-b").starts_with("unknown parameter (a name of 3 characters)"));
        let long = "n".repeat(QUERY_NAME_MAX + 1);
        assert!(said(&long).starts_with("unknown parameter (a name of"));
    }

    #[test]
    fn a_token_pasted_into_a_path_is_not_logged() {
        let token = "wdn_Sfr6u6nq2p1b0MHoF7K1SInvNFeOabc";
        assert_eq!(
            logged_path(&format!("/v1/requests/{token}/approve")),
            "/v1/requests/wdn_…/approve"
        );
        assert_eq!(logged_path(&format!("/v1/x{token}")), "/v1/xwdn_…");
        // Percent-encoded, it is a token all the same, whatever part is escaped.
        let rest = &token[4..];
        for escaped in [
            format!("%77dn_{rest}"),
            format!("%77%64%6E%5f{rest}"),
            format!("wdn%5F{rest}"),
        ] {
            assert_eq!(
                logged_path(&format!("/v1/requests/{escaped}/approve")),
                "/v1/requests/wdn_…/approve",
                "{escaped}"
            );
        }
        // What comes before it in its segment stays as it was sent.
        assert_eq!(
            logged_path(&format!("/v1/requests/a%2Fb%20%77dn_{rest}")),
            "/v1/requests/a%2Fb%20wdn_…"
        );
        // Escapes that make no token are logged as they are.
        assert_eq!(
            logged_path("/v1/targets/db%2Fprimary/wd%6E"),
            "/v1/targets/db%2Fprimary/wd%6E"
        );
        assert_eq!(
            logged_path("/v1/requests/0190c8a2"),
            "/v1/requests/0190c8a2"
        );
    }

    #[test]
    fn a_logged_path_is_cut_at_the_cap_whatever_character_stands_there() {
        // Byte 256 inside a two-byte character: cut before it, not left whole.
        let path = format!("/v1/{}é{}", "a".repeat(251), "b".repeat(60_000));
        let cut = capped(&path, LOGGED_PATH_MAX);
        assert_eq!(cut.len(), 255);
        assert_eq!(cut, format!("/v1/{}", "a".repeat(251)));
        // On a boundary, exactly the cap; shorter paths whole.
        let ascii = format!("/v1/{}", "a".repeat(1000));
        assert_eq!(capped(&ascii, LOGGED_PATH_MAX).len(), LOGGED_PATH_MAX);
        assert_eq!(capped("/v1/é", LOGGED_PATH_MAX), "/v1/é");
        // A character of four bytes across the cap, and one ending just at it.
        let four = format!("{}😀{}", "a".repeat(254), "b".repeat(10));
        assert_eq!(capped(&four, LOGGED_PATH_MAX), "a".repeat(254));
        let ends = format!("{}é{}", "a".repeat(254), "b".repeat(10));
        assert_eq!(
            capped(&ends, LOGGED_PATH_MAX),
            format!("{}é", "a".repeat(254))
        );
    }

    #[test]
    fn a_user_path_names_only_a_user_of_the_directory() {
        let directory = |n: &warden_domain::UserName| ["alice", "bob"].contains(&n.as_str());
        let logged = |path: &str| users_withheld(path, directory).into_owned();
        assert_eq!(
            logged("/v1/users/hunter2-secret-pass/password"),
            "/v1/users/(no such user, 19 characters)/password"
        );
        assert_eq!(
            logged("/v1/users/correct-horse-battery/unlock"),
            "/v1/users/(no such user, 21 characters)/unlock"
        );
        assert_eq!(
            logged("/v1/users/tr0ub4dor-and-3/revoke-all"),
            "/v1/users/(no such user, 15 characters)/revoke-all"
        );
        // Percent-encoded, or not shaped like a name at all, it is withheld the same.
        assert_eq!(
            logged("/v1/users/s%65cret/mfa/reset"),
            "/v1/users/(no such user, 6 characters)/mfa/reset"
        );
        assert_eq!(
            logged("/v1/users/Pass%20word%21"),
            "/v1/users/(no such user, 10 characters)"
        );
        // The directory's users as sent, in any letter case; other paths as they are.
        assert_eq!(logged("/v1/users/bob/unlock"), "/v1/users/bob/unlock");
        assert_eq!(
            logged("/v1/users/Alice/password"),
            "/v1/users/Alice/password"
        );
        assert_eq!(logged("/v1/users/locked"), "/v1/users/locked");
        assert_eq!(
            logged("/v1/users/locked/unlock"),
            "/v1/users/(no such user, 6 characters)/unlock"
        );
        assert_eq!(logged("/v1/targets/hunter2"), "/v1/targets/hunter2");
        assert_eq!(logged("/v1/users/"), "/v1/users/");
    }

    #[test]
    fn a_refused_query_is_named_by_its_parameters_never_their_values() {
        assert_eq!(
            query_names("comment=hunter2&totp=123456&comment=x&%61b_c=2&&flag"),
            ["comment", "totp", "ab_c", "flag"]
        );
        // Not shaped like a name the API takes: a password pasted as a name, perhaps.
        assert_eq!(
            query_names("Hunter2pass&a+b"),
            ["(a name of 11 characters)", "(a name of 3 characters)"]
        );
        let long = query_names(&format!("{}=1", "n".repeat(100)));
        assert_eq!(long, ["(a name of 100 characters)"]);
        // A token pasted as the whole query is a name, and is not kept.
        let token = "wdn_Sfr6u6nq2p1b0MHoF7K1SInvNFeOabc";
        assert_eq!(query_names(token), ["(a name of 35 characters)"]);
        assert_eq!(query_names("wdn_x"), ["(a name of 5 characters)"]);
        let many: Vec<String> = (0..20).map(|i| format!("p{i}=v")).collect();
        let names = query_names(&many.join("&"));
        assert_eq!(names.len(), QUERY_NAMES_MAX + 1);
        assert_eq!(names.last().unwrap(), "…");
        assert!(names.iter().all(|n| !n.contains('v')), "{names:?}");
    }

    #[test]
    fn an_unknown_query_parameter_is_named_unless_it_may_be_a_secret() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Filter {
            state: Option<String>,
            limit: Option<usize>,
        }
        let refusal = |q: &str| {
            let uri: axum::http::Uri = format!("/x?{q}").parse().unwrap();
            query(axum::extract::Query::<Filter>::try_from_uri(&uri))
                .unwrap_err()
                .message
        };
        assert_eq!(
            refusal("stat=active&limit=2"),
            "the query parameters do not fit this endpoint: unknown parameter `stat`, \
             expected `state` or `limit`"
        );
        let token = refusal("wdn_Sfr6u6nq2p1b0MHoF7K1SInvNFeOabc=1");
        assert!(token.contains("(a name of 35 characters)"), "{token}");
        let quoted = refusal("a%60%2C%20expected%20b=1");
        assert!(
            quoted.contains("unknown parameter (a name of 14 characters), expected"),
            "{quoted}"
        );
        assert!(!refusal("limit=hunter2").contains("hunter2"));
    }

    #[test]
    fn escapes_are_decoded_and_what_is_not_utf8_is_replaced() {
        assert_eq!(percent_decoded("SHA256:ab%2Fcd"), "SHA256:ab/cd");
        assert_eq!(percent_decoded("%FF%C3%A9"), "\u{FFFD}é");
        assert_eq!(percent_decoded("100%"), "100%");
        assert_eq!(percent_decoded("%zz%4"), "%zz%4");
    }

    #[test]
    fn routes_are_named_as_the_document_names_them() {
        assert_eq!(
            operation_name(&Method::HEAD, "/v1/requests"),
            "GET /v1/requests"
        );
        let remove = operation_name(&Method::DELETE, "/v1/ssh/keys/{*fingerprint}");
        assert_eq!(remove, "DELETE /v1/ssh/keys/{fingerprint}");
        let op = OPERATIONS[&remove];
        assert!(op.token && !op.query);
        let list = OPERATIONS["GET /v1/requests"];
        assert!(list.token && list.query);
        let ca = OPERATIONS["GET /v1/ssh/ca"];
        assert!(!ca.token && !ca.query);
    }

    #[test]
    fn a_request_refused_before_routing_is_named_by_the_operation_it_is_for() {
        let at = |method: Method, path: &str| {
            operation_at(&method, path).map(|r| (r.name, r.operation.token, r.params))
        };
        let id = "0190c8a2-0000-7000-8000-000000000000";
        let (name, token, params) =
            at(Method::POST, &format!("/v1/requests/{id}/approve")).unwrap();
        assert_eq!(name, "POST /v1/requests/{id}/approve");
        assert!(token);
        assert_eq!(params, [("id", id.to_owned())]);
        assert!(
            request_named(&name, params.iter().map(|(k, v)| (*k, v.as_str()))).is_some(),
            "{params:?}"
        );
        // A fingerprint is the rest of the path, slashes and all.
        let (name, _, params) = at(Method::DELETE, "/v1/ssh/keys/SHA256:ab/cd").unwrap();
        assert_eq!(name, "DELETE /v1/ssh/keys/{fingerprint}");
        assert_eq!(params, [("fingerprint", "SHA256:ab/cd".to_owned())]);
        assert_eq!(
            at(Method::HEAD, "/v1/requests").unwrap().0,
            "GET /v1/requests"
        );
        let (name, token, _) = at(Method::POST, "/v1/auth/login").unwrap();
        assert_eq!((name.as_str(), token), (SIGN_IN, false));
        // What no operation has: a path, a method, an empty parameter, a trailing slash.
        for (method, path) in [
            (Method::GET, "/v1/requests/x/y"),
            (Method::GET, "/v1/auth/whoami/"),
            (Method::POST, "/v1/requests//approve"),
            (Method::DELETE, "/v1/ssh/keys/"),
            (Method::PATCH, "/v1/requests"),
            (Method::GET, "/nowhere"),
        ] {
            assert!(at(method.clone(), path).is_none(), "{method} {path}");
        }
        // Routes whose last parameter is the rest of the path are the document's.
        for route in WILDCARD_ROUTES {
            let doc = format!("DELETE {}", route.replace("{*", "{"));
            assert!(OPERATIONS.contains_key(&doc), "{doc}");
        }
    }

    #[test]
    fn a_sign_in_is_documented_with_what_it_answers() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let said = |path: &str, method: &str, status: &str| {
            doc["paths"][path][method]["responses"][status]["description"]
                .as_str()
                .map(str::to_owned)
        };
        // An address read behind a trusted proxy may be refused wherever it is read.
        let login = said("/v1/auth/login", "post", "400").unwrap();
        assert!(login.contains("`bad_forwarded_for`"), "{login}");
        let whoami = said("/v1/auth/whoami", "get", "400").unwrap();
        assert!(whoami.contains("`bad_forwarded_for`"), "{whoami}");
        let ca = said("/v1/ssh/ca", "get", "400").unwrap();
        assert!(!ca.contains("`bad_forwarded_for`"), "{ca}");
        // A locked user's sign-in is answered as a wrong password is.
        assert_eq!(said("/v1/auth/login", "post", "403"), None);
        // A step-up without a factor is `mfa_required`, saying to enrol one.
        for (path, method) in [
            ("/v1/requests", "post"),
            ("/v1/requests/{id}/extend", "post"),
            ("/v1/breakglass", "post"),
        ] {
            let refused = said(path, method, "403").unwrap();
            assert!(
                refused.contains("`mfa_required`")
                    && refused.contains("warden mfa enroll")
                    && !refused.contains("no_second_factor"),
                "{path}: {refused}"
            );
        }
    }

    /// Every operation as the document has it, with its path.
    fn operations(
        doc: &utoipa::openapi::OpenApi,
    ) -> Vec<(String, &utoipa::openapi::path::Operation)> {
        let mut out = Vec::new();
        for (path, item) in &doc.paths.paths {
            for op in [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
            {
                out.push((path.clone(), op));
            }
        }
        out
    }

    #[test]
    fn the_document_declares_every_path_parameter_and_storage_failures() {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::path::ParameterIn;
        let doc = ApiDoc::openapi();
        for (path, op) in operations(&doc) {
            let declared: Vec<&str> = op
                .parameters
                .iter()
                .flatten()
                .filter_map(|p| match p {
                    RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path) => {
                        Some(p.name.as_str())
                    }
                    _ => None,
                })
                .collect();
            let in_path: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, in_path, "{path}");
            if !in_path.is_empty() {
                assert!(op.responses.responses.contains_key("404"), "{path}");
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                let RefOr::T(unavailable) = &op.responses.responses["503"] else {
                    panic!("{path}: 503 is a reference");
                };
                assert!(
                    unavailable.description.contains("storage_unavailable"),
                    "{path}"
                );
            }
        }
        for path in ["/v1/auth/login", "/v1/ssh/revoked-keys"] {
            let op = operations(&doc)
                .into_iter()
                .find(|(p, _)| p == path)
                .unwrap()
                .1;
            assert!(op.responses.responses.contains_key("503"), "{path}");
        }
    }

    #[test]
    fn every_error_response_names_its_codes_and_bodies_their_limits() {
        use utoipa::openapi::RefOr;
        let doc = ApiDoc::openapi();
        for (path, op) in operations(&doc) {
            for (status, response) in &op.responses.responses {
                let RefOr::T(r) = response else { continue };
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        r.description.contains('`'),
                        "{path} {status} names no code: {}",
                        r.description
                    );
                }
                if r.description.contains("storage_unavailable") {
                    assert!(r.description.contains("storage_full"), "{path} {status}");
                }
            }
        }
        let json = serde_json::to_value(&doc).unwrap();
        let text = json.to_string();
        for code in [
            "wrong_state",
            "timed_out",
            "grant_ended",
            "extension_pending",
            "changed_concurrently",
            "mfa_required",
            "bad_query",
            "bad_json",
            "unsupported_media_type",
            "body_too_large",
            "too_many_failures",
            "not_found",
            "storage_full",
        ] {
            assert!(text.contains(&format!("`{code}`")), "{code}");
        }
        let create = &json["paths"]["/v1/requests"]["post"]["responses"];
        for (status, code) in [
            ("409", "too_many_pending"),
            ("409", "changed_concurrently"),
            ("400", "bad_json"),
            ("400", "bad_query"),
            ("403", "mfa_required"),
            ("503", "storage_full"),
        ] {
            let said = create[status]["description"].as_str().unwrap();
            assert!(said.contains(&format!("`{code}`")), "{status}: {said}");
        }
        let schemas = &json["components"]["schemas"];
        let password = &schemas["PasswordBody"]["properties"]["password"];
        assert_eq!(password["maxLength"], 1024, "{password}");
        let current = &schemas["PasswordBody"]["properties"]["current_password"];
        assert_eq!(current["maxLength"], 1024, "{current}");
        assert!(
            password["description"]
                .as_str()
                .unwrap()
                .contains("1024 bytes")
        );
        let credential = &schemas["CredentialBody"]["properties"];
        assert_eq!(credential["username"]["minLength"], 1);
        assert_eq!(credential["username"]["maxLength"], 128);
        assert_eq!(credential["username"]["pattern"], "^[!-~]+$");
        assert_eq!(credential["password"]["minLength"], 1);
        assert_eq!(credential["password"]["maxLength"], 1024);
        for (body, field, bytes) in [
            ("CreateBody", "totp", "16 bytes"),
            ("CodeBody", "code", "16 bytes"),
            ("CreateBody", "public_key", "8192 bytes"),
        ] {
            let said = schemas[body]["properties"][field]["description"]
                .as_str()
                .unwrap();
            assert!(said.contains(bytes), "{body}.{field}: {said}");
        }
        // Sequence numbers and tree sizes are parsed as unsigned 64-bit integers.
        for (path, name) in [
            ("/v1/audit", "after_seq"),
            ("/v1/audit/proof/{seq}", "seq"),
            ("/v1/audit/proof/{seq}", "size"),
            ("/v1/audit/consistency", "from"),
            ("/v1/audit/consistency", "to"),
        ] {
            let parameter = json["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap();
            assert_eq!(parameter["schema"]["format"], "uint64", "{path} {name}");
        }
    }

    #[test]
    fn a_denied_decision_documents_and_shows_no_settings() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let view = &doc["components"]["schemas"]["DecisionView"];
        for field in ["tier", "max_ttl", "mfa", "recording", "pending_timeout"] {
            let types = &view["properties"][field]["type"];
            assert!(
                types.as_array().unwrap().contains(&"null".into()),
                "{field}: {view}"
            );
            assert!(
                view["required"].as_array().unwrap().contains(&field.into()),
                "{field}"
            );
        }
        assert!(
            view["properties"]["recording"]["enum"]
                .as_array()
                .unwrap()
                .contains(&serde_json::Value::Null)
        );
        let denied = warden_domain::Decision::deny(vec!["no-prod".into()]);
        let shown = serde_json::to_value(views::DecisionView::of(
            &denied,
            warden_policy::Action::Breakglass,
        ))
        .unwrap();
        assert_eq!(
            shown,
            serde_json::json!({
                "allowed": false, "rules": ["no-prod"], "tier": null, "max_ttl": null,
                "ticket_patterns": [], "mfa": null, "recording": null, "pending_timeout": null,
            })
        );
    }
}
