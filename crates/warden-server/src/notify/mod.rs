//! Notifications: approvers of a request waiting for them, requesters of the decision and of
//! expiry soon, security of break-glass use and of failed revocations.
//!
//! A notice is queued in the durable outbox in the same transaction as the state change that
//! causes it, one row per sink that wants it ([`App::notices`]); the [`outbox`] dispatcher then
//! delivers each row, retrying with exponential backoff while a sink is down, and marks it
//! delivered. Delivery is at least once: a crash between sending and marking sends again, and
//! every payload carries the notice's stable id so receivers can drop the duplicate.
//!
//! Links in a notice carry nothing but the request id: approving still takes the approver's
//! own login and, where policy demands it, a fresh second factor.

mod config;
pub mod outbox;
mod smtp;
mod webhook;

use uuid::Uuid;
use warden_domain::notice::Kind;
use warden_domain::{Audience, Notice, Request, UserName};
use warden_store::Outgoing;

pub use config::{NotifyConfig, sinks};

use crate::state::{App, now};

/// Where a person acts on a notice. Never a token: only the request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    /// The request in the API (and the portal), e.g. `https://warden.example.com/v1/requests/ID`.
    pub request: String,
    /// CLI commands to act on it.
    pub commands: Vec<String>,
}

impl Links {
    /// The links of `n` for a Warden reached at `base`.
    pub fn of(n: &Notice, base: &str) -> Self {
        let id = n.request;
        let commands = match n.kind {
            Kind::ApprovalNeeded => vec![
                format!("warden request approve {id}"),
                format!("warden request deny {id} --comment REASON"),
            ],
            Kind::BreakGlass => vec![
                format!("warden request show {id}"),
                format!("warden postmortem show {id}"),
            ],
            Kind::ExpirySoon => vec![format!("warden request extend {id} --ttl TTL")],
            _ => vec![format!("warden request show {id}")],
        };
        Self {
            request: format!("{}/v1/requests/{id}", base.trim_end_matches('/')),
            commands,
        }
    }
}

/// `n` as `sink` is to be sent it now: only to the recipients `still` keeps (those who may
/// still be told of it, [`App::still_told`]); `None` when, so addressed, `sink` would not take
/// it (its only addressees were people no longer meant). A sink's own addresses for the
/// audience are no one's, and stay.
fn readdressed(
    n: &Notice,
    still: impl Fn(&UserName) -> bool,
    sink: &NotifyConfig,
) -> Option<Notice> {
    let mut n = n.clone();
    n.recipients.retain(|u| still(u));
    sink.wants(n.audience, n.recipients.len()).then_some(n)
}

/// The notice as plain text: subject, `facts` (the notice's own, or some of them shortened to
/// fit a receiver's limit), links and id.
fn text(n: &Notice, facts: &[(&str, String)], links: &Links) -> String {
    let mut out = format!("{}\n\n", n.subject());
    for (k, v) in facts {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out.push_str(&format!("\n{}\n", links.request));
    for c in &links.commands {
        out.push_str(&format!("  {c}\n"));
    }
    if n.kind == Kind::ApprovalNeeded {
        out.push_str("Approving needs your own login (and MFA where the role demands it).\n");
    }
    out.push_str(&format!(
        "\nnotification id: {}\nmade at: {}\n",
        n.id,
        warden_domain::rfc3339(n.time)
    ));
    out
}

impl App {
    /// The address notifications link to.
    pub fn public_url(&self) -> String {
        self.config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.config.listen))
    }

    /// A notice about `r` for `audience`, queued for every sink that wants it (none when no
    /// sink does). Recipients are computed here: the reviewers the request's tier names (its
    /// groups' members, the requester's manager; a two-person tier's "anyone else" would be
    /// everyone), the requester, or the members of the security group but the requester; never
    /// a user offboarded.
    pub fn notices(
        &self,
        r: &Request,
        kind: Kind,
        audience: Audience,
        detail: Option<String>,
    ) -> Vec<Outgoing> {
        // Those offboarded are told nothing more: a leaver hears of no request's reason or
        // ticket, and of no emergency.
        let reviewers = self.reviewers();
        let recipients: Vec<UserName> = match audience {
            Audience::Requester => vec![r.requester.clone()],
            Audience::Approvers => match self.user(&r.requester) {
                Some(requester) => reviewers
                    .users()
                    .filter(|u| r.requirement.names_reviewer(requester, u))
                    .map(|u| u.name.clone())
                    .collect(),
                None => Vec::new(),
            },
            // Not whoever made the request: a member of security who breaks the glass is not
            // security told of it.
            Audience::Security => reviewers
                .users()
                .filter(|u| u.in_group(&self.config.security_group) && u.name != r.requester)
                .map(|u| u.name.clone())
                .collect(),
        };
        self.notices_to(r, kind, audience, recipients, detail)
    }

    /// Whether `u`, a recipient of notice `n`, may still be told of it, as the rules stand
    /// now rather than when it was queued: someone in the directory and not offboarded, and
    /// for an approval prompt a reviewer the tier of `request` (the request `n` is about, as
    /// stored now) names at this moment ([`App::requirement_now`], as the API lets a reviewer
    /// see it), for security's notices a member of the security group, for a requester's
    /// notice its requester. Whoever moved out of the group, or a tier changed by a reload or
    /// a restart no longer names, hears no request's reason or ticket any more.
    pub(crate) fn still_told(&self, n: &Notice, request: Option<&Request>, u: &UserName) -> bool {
        let Some(user) = self.user(u).filter(|_| !self.offboarded(u)) else {
            return false;
        };
        match n.audience {
            Audience::Requester => *u == n.requester,
            Audience::Security => user.in_group(&self.config.security_group) && *u != n.requester,
            Audience::Approvers => request
                .filter(|r| r.id == n.request)
                .and_then(|r| {
                    let requester = self.user(&r.requester)?;
                    Some(self.requirement_now(r).names_reviewer(requester, user))
                })
                .unwrap_or(false),
        }
    }

    /// Whether `notices` reach someone: people named as recipients, or a sink's own addresses
    /// for the audience (an SMTP sink's `to`). A webhook sent a notice naming no one reaches no
    /// one Warden knows of: the security group with no one in it but the one who broke the
    /// glass is told nothing, whatever sinks take the notice.
    pub fn reach_someone(&self, notices: &[Outgoing]) -> bool {
        notices.iter().any(|o| {
            !o.notice.recipients.is_empty()
                || self
                    .config
                    .notify
                    .iter()
                    .any(|s| s.name() == o.sink && s.has_own_addresses(o.notice.audience))
        })
    }

    /// A notice about `r` for some of `audience`, `recipients`, queued for every sink that
    /// wants it.
    pub fn notices_to(
        &self,
        r: &Request,
        kind: Kind,
        audience: Audience,
        recipients: Vec<UserName>,
        detail: Option<String>,
    ) -> Vec<Outgoing> {
        let mut notice = Notice::about(Uuid::now_v7(), r, kind, audience, recipients, now());
        // What the deciders said, where the change has no detail of its own: an approver's
        // comment, or why someone else withdrew or revoked it.
        notice.detail = detail.or_else(|| Notice::said(r, kind));
        self.config
            .notify
            .iter()
            .filter(|s| s.wants(audience, notice.recipients.len()))
            .map(|s| Outgoing {
                sink: s.name().to_owned(),
                notice: notice.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_domain::request::Ask;
    use warden_domain::{Decision, Reason, RequestId};

    #[test]
    fn a_notice_is_told_to_no_one_offboarded_or_gone_since_and_skipped_when_no_one_is_left() {
        #[derive(serde::Deserialize)]
        struct Doc {
            #[serde(deserialize_with = "sinks")]
            notify: Vec<NotifyConfig>,
        }
        let Doc { notify } = toml::from_str(
            r#"
            [[notify]]
            name = "people"
            kind = "smtp"
            host = "relay"
            from = "warden@example.com"
            user_domain = "example.com"
            [[notify]]
            name = "oncall"
            kind = "smtp"
            host = "relay"
            from = "warden@example.com"
            user_domain = "example.com"
            to = { approvers = ["oncall@example.com"] }
            [[notify]]
            name = "chat"
            kind = "webhook"
            url = "http://127.0.0.1:9/"
            "#,
        )
        .unwrap();
        let [people, oncall, chat] = [&notify[0], &notify[1], &notify[2]];
        let user = |name: &str| warden_domain::User {
            name: name.parse().unwrap(),
            groups: ["sre".parse().unwrap()].into(),
            manager: None,
        };
        // carol was offboarded, dave removed from the directory: only bob is left.
        let directory = warden_domain::Directory::new([user("bob"), user("carol")]).unwrap();
        let reachable = directory.without([&"carol".parse().unwrap()]);
        let notice = |to: &[&str]| -> Notice {
            serde_json::from_value(serde_json::json!({
                "id": Uuid::nil(), "kind": "approval_needed", "audience": "approvers",
                "recipients": to, "time": "2026-01-01T00:00:00Z",
                "request": "01890000-0000-7000-8000-000000000000", "requester": "alice",
                "target": "web", "role": "deploy", "reason": "fix", "ticket": null, "ttl": "1h",
                "breakglass": false, "drill": false, "expires_at": null,
            }))
            .unwrap()
        };
        let told = |n: &Notice, sink: &NotifyConfig| {
            readdressed(n, |u| reachable.get(u).is_some(), sink).map(|n| {
                n.recipients
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            })
        };
        let some = notice(&["bob", "carol", "dave"]);
        for sink in [people, oncall, chat] {
            assert_eq!(told(&some, sink), Some(vec!["bob".to_owned()]));
        }
        // No one left: a sink that reaches people only sends nothing; a team's address, or a
        // channel, is no one's, and is still told.
        let gone = notice(&["carol", "dave"]);
        assert_eq!(told(&gone, people), None);
        assert_eq!(told(&gone, oncall), Some(vec![]));
        assert_eq!(told(&gone, chat), Some(vec![]));
    }

    #[test]
    fn links_carry_only_the_request_id() {
        let mut d = Decision::deny(vec![]);
        d.allowed = true;
        d.requirement = "peer(sre)".parse().unwrap();
        let r = Request::new(
            RequestId::from_uuid(Uuid::nil()),
            "alice".parse().unwrap(),
            Ask {
                target: "web".parse().unwrap(),
                role: "deploy".parse().unwrap(),
                reason: Reason::parse("release").unwrap(),
                ticket: None,
                ttl: "1h".parse().unwrap(),
            },
            &d,
            None,
            None,
            time::OffsetDateTime::UNIX_EPOCH,
        );
        let n = Notice::about(
            Uuid::nil(),
            &r,
            Kind::ApprovalNeeded,
            Audience::Approvers,
            vec!["bob".parse().unwrap()],
            time::OffsetDateTime::UNIX_EPOCH,
        );
        let l = Links::of(&n, "https://warden.example.com/");
        let id = Uuid::nil().to_string();
        assert_eq!(
            l.request,
            format!("https://warden.example.com/v1/requests/{id}")
        );
        assert_eq!(l.commands[0], format!("warden request approve {id}"));
        let t = text(&n, &n.facts(), &l);
        assert!(t.starts_with("[Warden] alice asks for web/deploy"), "{t}");
        assert!(t.contains(&format!("notification id: {id}")), "{t}");
    }
}
