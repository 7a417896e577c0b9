//! The `[[notify]]` tables of the configuration file: where notifications go.
//!
//! Like audit export sinks, notification sinks are configured only here, never through the
//! API. Every sink is checked when the file is read.
//!
//! ```toml
//! [[notify]]
//! name = "chat"                       # unique; queued notifications are kept per sink name
//! kind = "webhook"
//! url = "http://127.0.0.1:9000/hooks/warden"
//! format = "slack"                    # or "json" (default): the whole notification
//! audiences = ["approvers", "security"]   # default: all three
//! header = { "Authorization" = "Bearer …" }
//!
//! [[notify]]
//! name = "mail"
//! kind = "smtp"
//! host = "127.0.0.1"
//! port = 25
//! from = "Warden <warden@example.com>"
//! user_domain = "example.com"         # also mail each named recipient at NAME@example.com
//! [notify.to]
//! security = ["security@example.com"]
//! approvers = ["oncall@example.com"]
//! ```
//!
//! SMTP is spoken in plain text without authentication: point it at a relay on the same host
//! or network (a local MTA that forwards with STARTTLS). Notifications carry no secrets, but
//! request details travel unencrypted to the relay.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer};
use warden_domain::Audience;

use crate::export::{Headers, Named, check_all, check_name, shown_url, webhook_url};

/// One notification destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NotifyConfig {
    Webhook(WebhookConfig),
    Smtp(SmtpConfig),
}

/// Notifications POSTed as JSON, one per request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    /// Plain `http://`, like the audit webhook.
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// Which audiences' notifications this sink receives.
    #[serde(default = "all_audiences")]
    pub audiences: BTreeSet<Audience>,
    /// Extra request headers, typically a credential; never shown.
    #[serde(default)]
    pub header: Headers,
}

/// The shape of a webhook's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The notification as Warden models it, with its id, kind, request and links.
    #[default]
    Json,
    /// A Slack incoming-webhook message (`text` and `blocks`), id in the text.
    Slack,
}

/// Notifications mailed through an SMTP relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub name: String,
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// The sender, e.g. `Warden <warden@example.com>`.
    pub from: String,
    /// Fixed addresses per audience.
    #[serde(default)]
    pub to: BTreeMap<Audience, Vec<String>>,
    /// When set, each person a notification names (approvers, the requester, members of the
    /// security group) is also mailed at `NAME@user_domain`.
    pub user_domain: Option<String>,
}

fn all_audiences() -> BTreeSet<Audience> {
    Audience::ALL.into_iter().collect()
}
fn default_smtp_port() -> u16 {
    25
}

impl NotifyConfig {
    /// The sink's unique name.
    pub fn name(&self) -> &str {
        match self {
            NotifyConfig::Webhook(c) => &c.name,
            NotifyConfig::Smtp(c) => &c.name,
        }
    }

    /// `webhook` or `smtp`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyConfig::Webhook(_) => "webhook",
            NotifyConfig::Smtp(_) => "smtp",
        }
    }

    /// Where it delivers, safe to show.
    pub fn destination(&self) -> String {
        match self {
            NotifyConfig::Webhook(c) => reqwest::Url::parse(&c.url)
                .map(|u| shown_url(&u))
                .unwrap_or_default(),
            NotifyConfig::Smtp(c) => format!("smtp://{}:{}", c.host, c.port),
        }
    }

    /// Whether a notification for `audience` naming `recipients` goes to this sink.
    pub fn wants(&self, audience: Audience, recipients: usize) -> bool {
        match self {
            NotifyConfig::Webhook(c) => c.audiences.contains(&audience),
            NotifyConfig::Smtp(c) => {
                c.to.get(&audience).is_some_and(|to| !to.is_empty())
                    || (c.user_domain.is_some() && recipients > 0)
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        check_name(self.name())?;
        match self {
            NotifyConfig::Webhook(c) => {
                webhook_url(&c.url)?;
                if c.audiences.is_empty() {
                    return Err(
                        "`audiences` is empty: list approvers, requester or security".into(),
                    );
                }
                for (name, value) in &c.header.0 {
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(format!("`header` {name:?} is not a valid HTTP header name"));
                    }
                    if reqwest::header::HeaderValue::from_str(value).is_err() {
                        return Err(format!(
                            "`header` {name:?} has a value that is not valid in HTTP"
                        ));
                    }
                }
            }
            NotifyConfig::Smtp(c) => {
                if c.host.is_empty() || c.host.contains(char::is_whitespace) {
                    return Err(format!(
                        "`host` {:?} must be a host name or address",
                        c.host
                    ));
                }
                if c.port == 0 {
                    return Err("`port` must be between 1 and 65535".into());
                }
                c.from
                    .parse::<lettre::message::Mailbox>()
                    .map_err(|e| format!("`from` {:?} is not an e-mail address: {e}", c.from))?;
                for (audience, addresses) in &c.to {
                    for a in addresses {
                        a.parse::<lettre::message::Mailbox>().map_err(|e| {
                            format!(
                                "`to.{audience}` has {a:?}, which is not an e-mail address: {e}"
                            )
                        })?;
                    }
                }
                if let Some(d) = &c.user_domain {
                    format!("x@{d}").parse::<lettre::Address>().map_err(|_| {
                        format!("`user_domain` {d:?} is not a mail domain, e.g. \"example.com\"")
                    })?;
                }
                if c.to.values().all(Vec::is_empty) && c.user_domain.is_none() {
                    return Err(
                        "no recipients: give `to` addresses per audience or a `user_domain`".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

impl Named for NotifyConfig {
    fn name(&self) -> &str {
        NotifyConfig::name(self)
    }
    fn check(&self) -> Result<(), String> {
        NotifyConfig::check(self)
    }
}

/// Deserializes the `notify` list and checks it: each sink on its own, names unique.
pub fn sinks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NotifyConfig>, D::Error> {
    let sinks = Vec::<NotifyConfig>::deserialize(d)?;
    check_all(&sinks, "notify sink").map_err(serde::de::Error::custom)?;
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default, deserialize_with = "sinks")]
        notify: Vec<NotifyConfig>,
    }

    fn parse(text: &str) -> Result<Vec<NotifyConfig>, String> {
        toml::from_str::<Doc>(text)
            .map(|d| d.notify)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_both_kinds_with_defaults() {
        let sinks = parse(
            r#"
            [[notify]]
            name = "chat"
            kind = "webhook"
            url = "http://127.0.0.1:9/hook?token=t"
            format = "slack"
            [[notify]]
            name = "mail"
            kind = "smtp"
            host = "127.0.0.1"
            from = "Warden <warden@example.com>"
            to = { security = ["sec@example.com"] }
            "#,
        )
        .unwrap();
        let NotifyConfig::Webhook(w) = &sinks[0] else {
            panic!()
        };
        assert_eq!(w.format, Format::Slack);
        assert_eq!(w.audiences.len(), 3);
        assert_eq!(sinks[0].destination(), "http://127.0.0.1:9/hook");
        let NotifyConfig::Smtp(m) = &sinks[1] else {
            panic!()
        };
        assert_eq!(m.port, 25);
        assert!(sinks[1].wants(Audience::Security, 0));
        assert!(!sinks[1].wants(Audience::Approvers, 2));
    }

    #[test]
    fn refuses_bad_sinks_with_clear_messages() {
        let cases = [
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"https://h/\"",
                "no TLS",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"http://h/\"\nformat = \"teams\"",
                "teams",
            ),
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"http://h/\"\naudiences = [\"everyone\"]",
                "everyone",
            ),
            (
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"not an address\"\nto = { security = [\"s@x.org\"] }",
                "`from`",
            ),
            (
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"w@x.org\"\nto = { security = [\"nope\"] }",
                "`to.security`",
            ),
            (
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"w@x.org\"",
                "no recipients",
            ),
            (
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"w@x.org\"\nuser_domain = \"x.org\"\ntls = true",
                "unknown field `tls`",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(&format!("[[notify]]\n{body}\n")).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
