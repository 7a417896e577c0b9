//! Exit codes, decided in one place.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: server error, failed checks or tests |
//! | 2 | usage error or invalid input |
//! | 3 | refused by policy or not permitted (or throttled: too many failed sign-ins from this address) |
//! | 4 | not found |
//! | 5 | not logged in, or the token is invalid or expired |
//! | 6 | conflict: the request is not in a state that allows this |
//! | 7 | the server cannot be reached |

use std::fmt;

/// An error that ends the command with a specific exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    /// The server's stable error code, when it sent one.
    pub api_code: Option<String>,
    pub message: String,
    /// The problems of a policy the server rejected, as it listed them: kept for `--json`.
    pub diagnostics: Option<serde_json::Value>,
    /// The request the call made or approved when the server says it ended unissued.
    pub request_id: Option<String>,
}

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const REFUSED: u8 = 3;
pub const NOT_FOUND: u8 = 4;
pub const UNAUTHENTICATED: u8 = 5;
pub const CONFLICT: u8 = 6;
pub const UNREACHABLE: u8 = 7;

/// The error code `--json` output gives a failure the server did not name (it was found by
/// the client, or the server could not be reached): the exit code's meaning.
pub fn name_of(code: u8) -> &'static str {
    match code {
        USAGE => "usage",
        REFUSED => "refused",
        NOT_FOUND => "not_found",
        UNAUTHENTICATED => "unauthenticated",
        CONFLICT => "conflict",
        UNREACHABLE => "unreachable",
        _ => "failure",
    }
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            api_code: None,
            message: message.into(),
            diagnostics: None,
            request_id: None,
        }
    }

    /// Maps an HTTP status from the API to an exit code.
    pub fn from_status(status: u16, api_code: Option<String>, message: String) -> Self {
        let code = match status {
            // A reload whose policy fails its checks ends as `policy check` does on it.
            422 if api_code.as_deref() == Some("invalid_policy") => FAILURE,
            400 | 413 | 422 => USAGE,
            401 => UNAUTHENTICATED,
            403 | 429 => REFUSED,
            404 => NOT_FOUND,
            409 => CONFLICT,
            _ => FAILURE,
        };
        Self {
            code,
            api_code,
            message,
            diagnostics: None,
            request_id: None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Exit code for any error: a [`Failure`]'s own, invalid input for a server start refused for
/// its options or its config file (one that cannot be read, does not parse, or says something
/// invalid), or 1, as for what the start found on this machine (an address in use, a data dir
/// it cannot write).
pub fn code_of(e: &anyhow::Error) -> u8 {
    if let Some(f) = e.downcast_ref::<Failure>() {
        return f.code;
    }
    if e.chain().any(|c| {
        c.is::<warden_server::serve::BadInvocation>()
            || c.downcast_ref::<warden_server::config::ConfigError>()
                .is_some_and(warden_server::config::ConfigError::is_invalid_input)
    }) {
        return USAGE;
    }
    FAILURE
}
