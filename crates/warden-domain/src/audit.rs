//! Audit events: one typed envelope for everything Warden does.
//!
//! Codes are stable: once published, a number keeps its meaning forever and is never reused,
//! so a SIEM rule written against `W2006` keeps working across releases.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::names::{RoleName, TargetName, UserName};
use crate::request::RequestId;

macro_rules! codes {
    ($($variant:ident = $num:literal, $name:literal;)*) => {
        /// A stable event code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($variant,)* }

        impl Code {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The numeric part, e.g. `2000` for `W2000`.
            pub fn number(self) -> u16 {
                match self { $(Code::$variant => $num,)* }
            }

            /// The dotted name, e.g. `request.created`.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// Looks a code up by its `W` number or its dotted name.
            pub fn parse(s: &str) -> Option<Code> {
                Code::ALL.iter().copied().find(|c| c.name() == s || c.to_string() == s)
            }
        }
    };
}

codes! {
    LoginSucceeded = 1000, "auth.login";
    LoginFailed = 1001, "auth.login_failed";
    Logout = 1002, "auth.logout";
    MfaEnrollStarted = 1003, "auth.mfa_enroll_started";
    MfaEnrolled = 1004, "auth.mfa_enrolled";
    TokenRejected = 1005, "auth.token_rejected";
    PasswordSet = 1006, "auth.password_set";
    RequestCreated = 2000, "request.created";
    RequestRefused = 2001, "request.refused";
    RequestReviewed = 2002, "request.reviewed";
    ReviewRefused = 2003, "request.review_refused";
    RequestApproved = 2004, "request.approved";
    RequestDenied = 2005, "request.denied";
    RequestCancelled = 2006, "request.cancelled";
    RequestTimedOut = 2007, "request.timed_out";
    GrantActivated = 2008, "grant.activated";
    GrantExpired = 2009, "grant.expired";
    GrantRevoked = 2010, "grant.revoked";
    ActionRefused = 2011, "request.action_refused";
    RequirementChanged = 2012, "request.requirement_changed";
    RequestRevoked = 2013, "request.revoked";
    ApprovalsVoided = 2014, "request.approvals_voided";
    BreakGlassActivated = 2100, "breakglass.activated";
    PostmortemOpened = 2101, "postmortem.opened";
    PostmortemClosed = 2102, "postmortem.closed";
    BreakGlassRefused = 2103, "breakglass.refused";
    PostmortemCloseRefused = 2104, "postmortem.close_refused";
    NotificationFailed = 6000, "notification.failed";
    ExpiryWarned = 6001, "notification.expiry_warned";
    CredentialIssued = 4000, "credential.issued";
    CredentialIssueFailed = 4001, "credential.issue_failed";
    CredentialRevoked = 4002, "credential.revoked";
    CredentialRevokeFailed = 4003, "credential.revoke_failed";
    OrphanRemoved = 4004, "credential.orphan_removed";
    CredentialPickedUp = 4005, "credential.picked_up";
    TargetCredentialSet = 4006, "target.credential_set";
    TargetRootRotated = 4007, "target.root_rotated";
    UserOffboarded = 1007, "auth.user_offboarded";
    UserLocked = 1008, "auth.user_locked";
    SourceThrottled = 1009, "auth.source_throttled";
    ForwardedForRefused = 1010, "auth.forwarded_for_refused";
    UserUnlocked = 1011, "auth.user_unlocked";
    TokensRevoked = 1012, "auth.tokens_revoked";
    MfaReset = 1013, "auth.mfa_reset";
    MasterKeyRotated = 9002, "server.master_key_rotated";
    PolicyLoaded = 3000, "policy.loaded";
    PolicyReloadRejected = 3001, "policy.reload_rejected";
    SegmentArchived = 3100, "audit.segment_archived";
    SegmentDeleted = 3101, "audit.segment_deleted";
    ExportFailed = 5000, "audit.export_failed";
    SessionStarted = 7000, "session.started";
    SessionEnded = 7001, "session.ended";
    SessionRefused = 7002, "session.refused";
    SessionExec = 7003, "session.exec";
    CommandBlocked = 7004, "session.command_blocked";
    FileTransfer = 7005, "session.file_transfer";
    SessionKilled = 7006, "session.killed";
    RecordingFailed = 7007, "session.recording_failed";
    SessionWatched = 7008, "session.watched";
    RecordingRead = 7009, "session.recording_read";
    SshKeyAdded = 7010, "ssh.key_added";
    SshKeyRemoved = 7011, "ssh.key_removed";
    HostKeyPinned = 7012, "target.host_key_pinned";
    ServerStarted = 9000, "server.started";
    ServerStopped = 9001, "server.stopped";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "W{}", self.number())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Code::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown event code {s}")))
    }
}

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Actor {
    /// The authenticated user, or `None` for Warden itself (timers, workers) and for
    /// unauthenticated callers.
    pub user: Option<UserName>,
    /// The name an unauthenticated caller claimed, e.g. on a failed login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    /// The caller's network address, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Actor {
    /// Warden itself.
    pub fn system() -> Self {
        Self::default()
    }

    /// An authenticated user.
    pub fn user(name: UserName, source: Option<String>) -> Self {
        Self {
            user: Some(name),
            claimed: None,
            source,
        }
    }
}

/// How it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "result")]
pub enum Outcome {
    Allowed,
    Denied { code: String, reason: String },
    Failed { code: String, reason: String },
}

/// One audit event, before the log assigns its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub code: Code,
    /// The code's dotted name, repeated so a reader of raw JSON need not look it up.
    pub action: String,
    #[serde(with = "crate::timestamp")]
    pub time: OffsetDateTime,
    pub actor: Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub outcome: Outcome,
    /// Event-specific facts. Never secrets.
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub details: serde_json::Value,
}

impl Event {
    /// An allowed event by `actor` at `time`; add context with the builder methods.
    pub fn new(code: Code, actor: Actor, time: OffsetDateTime) -> Self {
        Self {
            code,
            action: code.name().to_owned(),
            time,
            actor,
            target: None,
            role: None,
            request_id: None,
            session_id: None,
            outcome: Outcome::Allowed,
            details: serde_json::Value::Null,
        }
    }

    /// Attaches the request's id, target and role.
    pub fn for_request(mut self, r: &crate::request::Request) -> Self {
        self.request_id = Some(r.id);
        self.target = Some(r.target.clone());
        self.role = Some(r.role.clone());
        self
    }

    /// Marks the event as a refusal.
    pub fn denied(mut self, code: &str, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Denied {
            code: code.to_owned(),
            reason: reason.into(),
        };
        self
    }

    /// Marks the event as a failure.
    pub fn failed(mut self, code: &str, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Failed {
            code: code.to_owned(),
            reason: reason.into(),
        };
        self
    }

    /// Sets the details object.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut nums = HashSet::new();
        let mut names = HashSet::new();
        for c in Code::ALL {
            assert!(nums.insert(c.number()), "{c} reused");
            assert!(names.insert(c.name()), "{} reused", c.name());
            assert_eq!(Code::parse(&c.to_string()), Some(*c));
            assert_eq!(Code::parse(c.name()), Some(*c));
        }
    }
}
