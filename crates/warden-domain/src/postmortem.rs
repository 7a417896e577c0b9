//! Postmortems: every break-glass use opens one, and it stays open until someone closes it with
//! a link to the write-up and a note. Drills open one too, marked as a drill, so the procedure
//! is exercised end to end.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::lease::Lease;
use crate::names::{RoleName, TargetName, UserName};
use crate::request::{Request, RequestId};
use crate::text::{Comment, Reason, TextError};

/// Where the write-up lives: an `http://` or `https://` URL without spaces or control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Link(String);

impl Link {
    /// Longest accepted link, in bytes.
    pub const MAX: usize = 2048;

    /// Checks `s`.
    pub fn parse(s: &str) -> Result<Self, PostmortemError> {
        let s = s.trim();
        if s.len() > Self::MAX {
            return Err(PostmortemError::LongLink(s.len()));
        }
        // Schemes are case-insensitive (RFC 3986).
        let rest = ["https://", "http://"].iter().find_map(|scheme| {
            s.get(..scheme.len())
                .filter(|head| head.eq_ignore_ascii_case(scheme))
                .map(|_| &s[scheme.len()..])
        });
        let Some(rest) = rest else {
            return Err(PostmortemError::BadLink);
        };
        // The audit log keeps the link for good: a user name or password in it would be too.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(PostmortemError::LinkCredentials);
        }
        // A host, not just a port: `https://#` or `http://:80` leads nowhere.
        if authority.split(':').next().is_none_or(str::is_empty) {
            return Err(PostmortemError::BadLink);
        }
        // A URL is ASCII (anything else percent-encoded), so nothing in it hides.
        if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(PostmortemError::LinkCharacter(c));
        }
        Ok(Self(s.to_owned()))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Link {
    type Error = PostmortemError;
    fn try_from(s: String) -> Result<Self, PostmortemError> {
        Self::parse(&s)
    }
}

impl From<Link> for String {
    fn from(l: Link) -> String {
        l.0
    }
}

/// Why a postmortem could not be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostmortemError {
    // The link is not quoted back: it is kept in the audit log with the refusal.
    #[error(
        "the link is not an http:// or https:// URL with a host; pass the write-up's address with --link (`link` in the API)"
    )]
    BadLink,
    #[error(
        "the link carries a user name or password (before an @), which the audit log would keep for good: link to the write-up without them"
    )]
    LinkCredentials,
    #[error(
        "the link holds U+{:04X}, which a URL does not: percent-encode it (a space is %20)",
        u32::from(*.0)
    )]
    LinkCharacter(char),
    #[error("the link is {0} bytes long; the limit is 2048: link to a shorter address")]
    LongLink(usize),
    #[error(
        "a note is required when closing a postmortem: say what was learned with --note (`note` in the API)"
    )]
    NoNote,
    #[error("{0}")]
    Note(#[from] TextError),
    #[error("the postmortem of {0} is already closed")]
    AlreadyClosed(RequestId),
    #[error(
        "the break-glass grant {request} is still active, until {}: close its postmortem once the grant has ended, so the review covers all it was used for (end it now with `warden request revoke {request}`)",
        crate::rfc3339(*.until)
    )]
    GrantActive {
        request: RequestId,
        until: OffsetDateTime,
    },
    #[error(
        "the account {account} of break-glass grant {request} is still at {target}, where Warden keeps trying to remove it: close its postmortem once it is gone (`warden request show {request}` says when), so the review covers all it could be used for"
    )]
    AccountAtTarget {
        request: RequestId,
        account: String,
        target: TargetName,
    },
}

impl PostmortemError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadLink | Self::LinkCredentials | Self::LinkCharacter(_) | Self::LongLink(_) => {
                "bad_link"
            }
            Self::NoNote | Self::Note(_) => "bad_note",
            Self::AlreadyClosed(_) => "already_closed",
            Self::GrantActive { .. } => "grant_active",
            Self::AccountAtTarget { .. } => "account_at_target",
        }
    }
}

/// How a postmortem was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    pub by: UserName,
    #[serde(with = "crate::timestamp")]
    pub at: OffsetDateTime,
    pub link: Link,
    pub note: Comment,
}

/// The follow-up item of one break-glass grant; its id is the grant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postmortem {
    pub request: RequestId,
    pub requester: UserName,
    pub target: TargetName,
    pub role: RoleName,
    pub reason: Reason,
    pub drill: bool,
    #[serde(with = "crate::timestamp")]
    pub opened_at: OffsetDateTime,
    pub closed: Option<Closure>,
}

impl Postmortem {
    /// Opens the postmortem of break-glass grant `r`.
    pub fn open(r: &Request, drill: bool, now: OffsetDateTime) -> Self {
        Self {
            request: r.id,
            requester: r.requester.clone(),
            target: r.target.clone(),
            role: r.role.clone(),
            reason: r.reason.clone(),
            drill,
            opened_at: now,
            closed: None,
        }
    }

    /// Whether it still waits to be closed.
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// Closes it with the write-up's `link` and a non-empty `note`, once its `grant` has
    /// ended and the account made for it (its `lease`, if any) is gone from the target: a
    /// review closed while the access can still be used would not cover all of it.
    pub fn close(
        &mut self,
        by: &UserName,
        link: Link,
        note: Comment,
        grant: &Request,
        lease: Option<&Lease>,
        now: OffsetDateTime,
    ) -> Result<(), PostmortemError> {
        if self.closed.is_some() {
            return Err(PostmortemError::AlreadyClosed(self.request));
        }
        if note.as_str().is_empty() {
            return Err(PostmortemError::NoNote);
        }
        if let Some(until) = grant.active_until(now) {
            return Err(PostmortemError::GrantActive {
                request: self.request,
                until,
            });
        }
        if let Some(lease) = lease.filter(|l| l.is_live()) {
            return Err(PostmortemError::AccountAtTarget {
                request: self.request,
                account: lease.account.clone(),
                target: lease.target.clone(),
            });
        }
        self.closed = Some(Closure {
            by: by.clone(),
            at: now,
            link,
            note,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_web_addresses() {
        assert!(Link::parse("https://wiki.example.com/pm/42").is_ok());
        assert!(Link::parse("http://10.0.0.1/x").is_ok());
        assert!(Link::parse("http://[::1]:8080/pm").is_ok());
        assert!(Link::parse("HTTPS://wiki.example.com/pm/42").is_ok());
        let long = format!("https://x/{}", "a".repeat(Link::MAX));
        assert_eq!(
            Link::parse(&long),
            Err(PostmortemError::LongLink(long.len()))
        );
        for bad in [
            "",
            "wiki/pm",
            "https://",
            "https:///x",
            "https://a b",
            "ftp://x",
            "javascript:alert(1)",
            "https://#",
            "http://:80",
            "https://?q=1",
            "https://?",
        ] {
            assert!(Link::parse(bad).is_err(), "{bad}");
        }
        for with_secret in [
            "https://user:pw@wiki/pm",
            "https://token@wiki",
            "http://u:p@h?x=1",
        ] {
            let e = Link::parse(with_secret).unwrap_err();
            assert_eq!(e, PostmortemError::LinkCredentials);
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        assert!(Link::parse("https://wiki/pm/@team").is_ok());
        assert_eq!(
            Link::parse("https://wiki/a\u{202e}b"),
            Err(PostmortemError::LinkCharacter('\u{202e}'))
        );
    }

    /// An active break-glass grant of 1 hour, begun at the epoch.
    fn grant() -> Request {
        let mut d = crate::decision::Decision::deny(vec![]);
        d.allowed = true;
        d.requirement = "auto".parse().unwrap();
        d.max_ttl = "1h".parse().unwrap();
        d.pending_timeout = "1h".parse().unwrap();
        let mut r = Request::new(
            RequestId::from_uuid(uuid::Uuid::nil()),
            "bob".parse().unwrap(),
            crate::request::Ask {
                target: "web".parse().unwrap(),
                role: "root".parse().unwrap(),
                reason: Reason::parse("outage").unwrap(),
                ticket: None,
                ttl: "1h".parse().unwrap(),
            },
            &d,
            None,
            None,
            OffsetDateTime::UNIX_EPOCH,
        );
        r.approve_automatically().unwrap();
        r.activate(None, OffsetDateTime::UNIX_EPOCH).unwrap();
        r
    }

    #[test]
    fn closes_once_with_a_note_after_the_grant_ended() {
        let mut pm = Postmortem {
            request: RequestId::from_uuid(uuid::Uuid::nil()),
            requester: "bob".parse().unwrap(),
            target: "web".parse().unwrap(),
            role: "root".parse().unwrap(),
            reason: Reason::parse("outage").unwrap(),
            drill: false,
            opened_at: OffsetDateTime::UNIX_EPOCH,
            closed: None,
        };
        let sam: UserName = "sam".parse().unwrap();
        let link = Link::parse("https://wiki/pm/1").unwrap();
        let grant = grant();
        let note = || Comment::parse("rotated keys").unwrap();
        // While the grant lasts, and at its last instant, the review would miss some of it.
        let until = OffsetDateTime::UNIX_EPOCH + time::Duration::HOUR;
        for at in [OffsetDateTime::UNIX_EPOCH, until - time::Duration::SECOND] {
            let e = pm
                .close(&sam, link.clone(), note(), &grant, None, at)
                .unwrap_err();
            assert_eq!(
                e,
                PostmortemError::GrantActive {
                    request: pm.request,
                    until
                }
            );
            assert!(e.to_string().contains("warden request revoke"), "{e}");
        }
        assert_eq!(
            pm.close(
                &sam,
                link.clone(),
                Comment::parse("").unwrap(),
                &grant,
                None,
                until
            ),
            Err(PostmortemError::NoNote)
        );
        // Ended, but its account is still at the target: the access could still be used.
        let mut lease = Lease::intent(
            grant.id,
            grant.requester.clone(),
            grant.target.clone(),
            grant.role.clone(),
            "w_bob_1".into(),
            until,
            OffsetDateTime::UNIX_EPOCH,
        );
        lease.activate(until);
        lease.start_revoking(until);
        let e = pm
            .close(&sam, link.clone(), note(), &grant, Some(&lease), until)
            .unwrap_err();
        assert_eq!(e.code(), "account_at_target");
        assert!(
            e.to_string().contains("w_bob_1 of break-glass grant"),
            "{e}"
        );
        lease.revoked(until);
        assert!(pm.is_open());
        pm.close(&sam, link.clone(), note(), &grant, Some(&lease), until)
            .unwrap();
        assert!(!pm.is_open());
        assert!(matches!(
            pm.close(
                &sam,
                link,
                Comment::parse("again").unwrap(),
                &grant,
                None,
                until
            ),
            Err(PostmortemError::AlreadyClosed(_))
        ));
    }
}
