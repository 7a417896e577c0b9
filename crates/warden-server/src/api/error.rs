//! API errors: an HTTP status, a stable code and a message safe to show. Internal details go
//! to the log, never into the response.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use warden_domain::request::TransitionError;

use crate::auth::AuthError;
use crate::broker;

/// The body of every error response: `{"error":{"code":"…","message":"…"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code such as `ttl_above_max`.
    pub code: String,
    /// A sentence saying what was wrong and how to fix it.
    pub message: String,
    /// Each problem of a policy that was rejected (`invalid_policy`), as `warden policy check
    /// --json` lists them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<PolicyProblem>>,
    /// The request the call made or approved when its credential could not be issued
    /// (`issuer_failed`): it ended before it was active, and `GET /v1/requests/{id}` shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One problem in one file of a policy directory.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyProblem {
    /// File name relative to the policy directory, e.g. `access.cedar`.
    pub file: String,
    /// 1-based line, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column in characters, when the problem has a position.
    pub column: Option<usize>,
    pub message: String,
}

impl From<&warden_policy::Diagnostic> for PolicyProblem {
    fn from(d: &warden_policy::Diagnostic) -> Self {
        Self {
            file: d.file.clone(),
            line: d.line,
            column: d.column,
            message: d.message.clone(),
        }
    }
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Seconds to send as `Retry-After`, for refusals that pass with time.
    pub retry_after: Option<u64>,
    /// The problems of a rejected policy (boxed: rare, and every error is passed by value).
    pub diagnostics: Option<Box<Vec<PolicyProblem>>>,
    /// The request that ended unissued.
    pub request_id: Option<warden_domain::RequestId>,
    /// Whether the audit log records the message with the values it quotes left out
    /// ([`ApiError::invalid`]).
    pub quotes_input: bool,
    /// A value the caller typed that the audit log records only by its length wherever the
    /// message holds it (a user name a target did not take may be a password typed there).
    pub withheld: Option<Box<str>>,
}

impl ApiError {
    /// An error with the given parts.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after: None,
            diagnostics: None,
            request_id: None,
            quotes_input: false,
            withheld: None,
        }
    }

    /// 400 for input that does not parse or validate.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 for a value that does not parse or validate, quoted in `message`: the caller reads
    /// it, the audit log only its length ([`ApiError::recorded`]).
    pub fn invalid(code: &str, message: impl Into<String>) -> Self {
        Self {
            quotes_input: true,
            ..Self::bad_request(code, message)
        }
    }

    /// 403 for callers who lack the right.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "not_permitted", message)
    }

    pub(super) fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

/// `message` with each place it names `value` as a word of its own (not a part of a longer
/// name or word) replaced by the value's length.
fn withhold(message: &str, value: &str) -> String {
    let in_name = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || "_-.".contains(c));
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(value) {
        let (before, after) = (&rest[..at], &rest[at + value.len()..]);
        out.push_str(before);
        let alone = !in_name(before.chars().next_back()) && !in_name(after.chars().next());
        if alone {
            out.push_str(&format!(
                "(a value of {} characters)",
                value.chars().count()
            ));
        } else {
            out.push_str(value);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

impl ApiError {
    /// The message as the audit log records it: without the values it quotes when they are
    /// input that did not parse or validate ([`warden_domain::text::unquoted`]).
    pub fn recorded(&self) -> String {
        let message = match self.withheld.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => withhold(&self.message, v),
            None => self.message.clone(),
        };
        if self.quotes_input {
            warden_domain::text::unquoted(&message)
        } else {
            message
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                diagnostics: self.diagnostics.map(|d| *d),
                request_id: self.request_id.map(|id| id.to_string()),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        // Says how to authenticate, as HTTP has every 401 do.
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"warden\""),
            );
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<broker::Error> for ApiError {
    fn from(e: broker::Error) -> Self {
        use broker::Error as E;
        let status = match &e {
            E::Input { .. } => StatusCode::BAD_REQUEST,
            E::Missing { .. } => StatusCode::NOT_FOUND,
            E::Conflict { .. } => StatusCode::CONFLICT,
            E::Unknown { .. } | E::NotFound(_) => StatusCode::NOT_FOUND,
            E::Refused(_) | E::Forbidden(_) | E::Mfa(_) | E::MfaFailed(_) | E::Locked(_) => {
                StatusCode::FORBIDDEN
            }
            E::Transition(
                TransitionError::WrongState { .. }
                | TransitionError::AlreadyReviewed
                | TransitionError::Overdue { .. },
            ) => StatusCode::CONFLICT,
            E::Transition(_) => StatusCode::FORBIDDEN,
            E::Issuer(_) | E::NotIssued { .. } => StatusCode::BAD_GATEWAY,
            E::Postmortem(
                warden_domain::postmortem::PostmortemError::AlreadyClosed(_)
                | warden_domain::postmortem::PostmortemError::GrantActive { .. }
                | warden_domain::postmortem::PostmortemError::AccountAtTarget { .. },
            ) => StatusCode::CONFLICT,
            E::Postmortem(_) => StatusCode::BAD_REQUEST,
            E::Store(warden_store::Error::Conflict) => StatusCode::CONFLICT,
            E::Store(warden_store::Error::Full(s)) => {
                tracing::error!(error = %s, "storage is full");
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    "the store cannot take writes: the disk of its data dir is full (free space there; the server goes on by itself); nothing was changed",
                );
            }
            E::Store(s) => {
                tracing::error!(error = %s, "storage failure");
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage is unavailable, or holds a record it cannot read (the server's log says which); nothing was changed",
                );
            }
        };
        let request_id = match &e {
            E::NotIssued { request, .. } => Some(*request),
            _ => None,
        };
        Self {
            request_id,
            ..Self::new(status, e.code(), e.to_string())
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string())
            }
            AuthError::TotpRequired => {
                Self::new(StatusCode::UNAUTHORIZED, "totp_required", e.to_string())
            }
            AuthError::NoToken | AuthError::BadToken => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string())
            }
            // Named as the broker's refusal for a missing step-up is: one code whatever asked.
            AuthError::Mfa(m) => Self::new(StatusCode::FORBIDDEN, "mfa_required", m),
            AuthError::WrongCode(m) => Self::new(StatusCode::FORBIDDEN, "mfa_failed", m),
            AuthError::NoEnrolment => {
                Self::new(StatusCode::CONFLICT, "no_enrolment", e.to_string())
            }
            AuthError::Locked(_) => Self::new(StatusCode::FORBIDDEN, "locked", e.to_string()),
            AuthError::Throttled(until) => {
                let wait = (until - crate::state::now()).whole_seconds().max(0) + 1;
                Self {
                    retry_after: u64::try_from(wait).ok(),
                    ..Self::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_failures",
                        e.to_string(),
                    )
                }
            }
            AuthError::SignInsFromAddress(secs) => Self {
                retry_after: Some(secs),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_sign_ins",
                    e.to_string(),
                )
            },
            AuthError::SignInsBusy(secs) => Self {
                retry_after: Some(secs),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sign_ins_busy",
                    e.to_string(),
                )
            },
            AuthError::Store(s) => Self::from(broker::Error::Store(s)),
            AuthError::Internal(d) => Self::internal(d),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_withheld_value_is_replaced_only_where_it_stands_alone() {
        assert_eq!(
            super::withhold("only administrators can offboard users", "s"),
            "only administrators can offboard users"
        );
        assert_eq!(
            super::withhold(
                "you cannot offboard yourself: ask another administrator",
                "admin"
            ),
            "you cannot offboard yourself: ask another administrator"
        );
        assert_eq!(
            super::withhold(
                "no user `hunter2` in the directory (hunter2 is no one)",
                "hunter2"
            ),
            "no user `(a value of 7 characters)` in the directory ((a value of 7 characters) is no one)"
        );
    }
}
