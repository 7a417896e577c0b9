//! Notifications: what Warden tells people about a request, and whom.
//!
//! A notice is built in the same step as the state change that causes it and stored with it,
//! so it can be delivered later, retried, and never lost. It carries a stable id that every
//! delivery repeats, so receivers can drop the duplicates at-least-once delivery may bring. It
//! never carries secrets: no credential, no token, only what the request's audit events show.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::names::{RoleName, TargetName, UserName};
use crate::request::{Request, RequestId, Verdict};
use crate::text::{Reason, Ticket};
use crate::ttl::Ttl;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A request waits for the recipients' approval.
    ApprovalNeeded,
    /// The request was approved and the grant is active.
    Approved,
    /// The request was denied.
    Denied,
    /// Nobody decided in time.
    TimedOut,
    /// The grant ends soon.
    ExpirySoon,
    /// Someone used break-glass access.
    BreakGlass,
    /// A credential could not be revoked at its target.
    RevokeFailed,
    /// An approved or break-glass request ended without its credential: the issuer failed.
    IssueFailed,
    /// Someone else ended the request: withdrew it before it was granted, or revoked the
    /// grant.
    Revoked,
}

impl Kind {
    /// The kind as payloads spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApprovalNeeded => "approval_needed",
            Kind::Approved => "approved",
            Kind::Denied => "denied",
            Kind::TimedOut => "timed_out",
            Kind::ExpirySoon => "expiry_soon",
            Kind::BreakGlass => "breakglass",
            Kind::RevokeFailed => "revoke_failed",
            Kind::IssueFailed => "issue_failed",
            Kind::Revoked => "revoked",
        }
    }
}

/// Who a notice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The people whose approval would count toward the request.
    Approvers,
    /// Whoever asked.
    Requester,
    /// The security team.
    Security,
}

impl Audience {
    /// Every audience.
    pub const ALL: [Audience; 3] = [Audience::Approvers, Audience::Requester, Audience::Security];

    /// The audience as configuration and payloads spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Approvers => "approvers",
            Audience::Requester => "requester",
            Audience::Security => "security",
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification, before any sink renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Stable across retries and restarts: receivers de-duplicate on it.
    pub id: Uuid,
    pub kind: Kind,
    pub audience: Audience,
    /// The people meant, when the audience is people rather than a team.
    pub recipients: Vec<UserName>,
    #[serde(with = "crate::timestamp")]
    pub time: OffsetDateTime,
    pub request: RequestId,
    pub requester: UserName,
    pub target: TargetName,
    pub role: RoleName,
    pub reason: Reason,
    pub ticket: Option<Ticket>,
    pub ttl: Ttl,
    /// Whether the request is break-glass access, and whether a drill.
    pub breakglass: bool,
    pub drill: bool,
    #[serde(with = "crate::timestamp::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// A reviewer's comment or a failure's reason, when there is one.
    pub detail: Option<String>,
    /// Who decided or ended it, when people did: the approvers whose approval counted toward
    /// an approved request, whoever withdrew or revoked a revoked one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<UserName>,
}

impl Notice {
    /// A notice of `kind` about `r` for `audience` (`recipients` when people are meant).
    pub fn about(
        id: Uuid,
        r: &Request,
        kind: Kind,
        audience: Audience,
        recipients: Vec<UserName>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            kind,
            audience,
            recipients,
            time: now,
            request: r.id,
            requester: r.requester.clone(),
            target: r.target.clone(),
            role: r.role.clone(),
            reason: r.reason.clone(),
            ticket: r.ticket.clone(),
            ttl: r.ttl,
            breakglass: r.breakglass.is_some(),
            drill: r.breakglass.is_some_and(|b| b.drill),
            expires_at: r.expires_at,
            detail: None,
            by: Self::deciders(r, kind),
        }
    }

    /// Who made `r` what a notice of `kind` tells: for an approval, the approvers whose
    /// approval counted (those that stand, where it records none); for a revocation, whoever
    /// ended it. No one for other kinds.
    fn deciders(r: &Request, kind: Kind) -> Vec<UserName> {
        match kind {
            Kind::Approved => r.counted.clone().unwrap_or_else(|| {
                r.reviews
                    .iter()
                    .filter(|v| v.verdict == Verdict::Approve && v.withdrawn.is_none())
                    .map(|v| v.reviewer.name.clone())
                    .collect()
            }),
            Kind::Revoked => r.ended_by.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// What those who decided `r` said, for a notice of `kind` that has no detail of its own:
    /// each approver's comment (`bob: looks right; sam: ok`), or the comment of whoever
    /// withdrew or revoked it; `None` when they said nothing.
    pub fn said(r: &Request, kind: Kind) -> Option<String> {
        let said = match kind {
            Kind::Approved => {
                let by = Self::deciders(r, kind);
                r.reviews
                    .iter()
                    .filter(|v| {
                        v.verdict == Verdict::Approve
                            && v.withdrawn.is_none()
                            && by.contains(&v.reviewer.name)
                            && !v.comment.as_str().is_empty()
                    })
                    .map(|v| format!("{}: {}", v.reviewer.name, v.comment.as_str()))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
            Kind::Revoked => r
                .end_comment
                .as_ref()
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            _ => String::new(),
        };
        (!said.is_empty()).then_some(said)
    }

    /// Those of [`Notice::by`], for a sentence: `bob`, `bob and sam`, `bob, carol and sam`.
    fn by_names(&self) -> String {
        let names: Vec<&str> = self.by.iter().map(UserName::as_str).collect();
        match names.split_last() {
            None => String::new(),
            Some((last, [])) => (*last).to_owned(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        }
    }

    /// ` by NAMES`, or nothing when no one is named.
    fn by_whom(&self) -> String {
        if self.by.is_empty() {
            String::new()
        } else {
            format!(" by {}", self.by_names())
        }
    }

    /// One line saying what happened, e.g. for an e-mail subject.
    pub fn subject(&self) -> String {
        let what = format!("{}/{}", self.target, self.role);
        let drill = if self.drill { " (DRILL)" } else { "" };
        match self.kind {
            Kind::ApprovalNeeded => {
                format!(
                    "[Warden] {} asks for {what}: your approval is needed",
                    self.requester
                )
            }
            Kind::Approved => format!(
                "[Warden] your request for {what} was approved{}",
                self.by_whom()
            ),
            Kind::Denied => format!("[Warden] your request for {what} was denied"),
            Kind::TimedOut => {
                format!("[Warden] your request for {what} timed out waiting for approval")
            }
            Kind::ExpirySoon => format!("[Warden] your access to {what} ends soon"),
            Kind::BreakGlass => {
                format!(
                    "[Warden] BREAK-GLASS{drill}: {} took {what}",
                    self.requester
                )
            }
            Kind::RevokeFailed => format!("[Warden] revocation failed for {what}"),
            Kind::IssueFailed if self.breakglass => format!(
                "[Warden] BREAK-GLASS{drill} FAILED: {} could not get {what}",
                self.requester
            ),
            Kind::IssueFailed => format!("[Warden] the credential for {what} could not be issued"),
            // A grant has its end once it was active: before, nothing was granted yet.
            Kind::Revoked if self.expires_at.is_some() => {
                format!(
                    "[Warden] your access to {what} was revoked{}",
                    self.by_whom()
                )
            }
            Kind::Revoked => format!(
                "[Warden] your request for {what} was withdrawn{}",
                self.by_whom()
            ),
        }
    }

    /// The facts of the request, one per line.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("request", self.request.to_string()),
            ("requester", self.requester.to_string()),
            ("target", self.target.to_string()),
            ("role", self.role.to_string()),
            ("reason", self.reason.to_string()),
            ("ttl", self.ttl.to_string()),
        ];
        if let Some(t) = &self.ticket {
            out.push(("ticket", t.to_string()));
        }
        if let Some(e) = self.expires_at {
            out.push(("expires", crate::rfc3339(e)));
        }
        if self.breakglass {
            out.push((
                "break-glass",
                if self.drill { "drill" } else { "yes" }.into(),
            ));
        }
        if !self.by.is_empty() {
            out.push(("by", self.by_names()));
        }
        if let Some(d) = &self.detail {
            out.push(("detail", d.clone()));
        }
        out
    }
}
