//! The `[[notify]]` tables of the configuration file: where notifications go.
//!
//! Like audit export sinks, notification sinks are configured only here, never through the
//! API. Every sink is checked when the file is read.
//!
//! ```toml
//! [[notify]]
//! name = "chat"                       # unique; queued notifications are kept per sink name
//! kind = "webhook"
//! url = "https://hooks.slack.com/services/…"
//! format = "slack"                    # or "json" (default): the whole notification
//! audiences = ["approvers", "security"]   # default: all three
//! header = { "Authorization" = "Bearer …" }
//!
//! [[notify]]
//! name = "mail"
//! kind = "smtp"
//! host = "127.0.0.1"                 # a host name or IP address (IPv6 as "::1", no brackets)
//! port = 25
//! from = "Warden <warden@example.com>"
//! user_domain = "example.com"         # also mail each named recipient at NAME@example.com
//! # tls = "starttls"                  # or "tls"; then optionally username, password, ca_file
//! [notify.to]
//! security = ["security@example.com"]
//! approvers = ["oncall@example.com"]
//! ```
//!
//! SMTP to a remote relay takes `tls = "starttls"` (port 587) or `tls = "tls"` (port 465), and
//! `username` and `password` if the relay wants a login; `ca_file` trusts a private CA. The
//! default, plain text without a login, is for a relay on the same host or a trusted network.
//! A `password`, like a webhook `header` value, is best given as `{ file = "…" }` or
//! `{ env = "…" }` (see [`crate::config_secret`]) so the configuration file holds no secret; it
//! never appears in logs, the status or error messages.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use warden_domain::Audience;

use crate::config_secret::ConfigSecret;
use crate::export::{Fields, Headers, SinkTable, check_name, read_sinks, shown_url};

/// One notification destination: a `[[notify]]` table, its `kind` saying which.
#[derive(Debug, Clone)]
pub enum NotifyConfig {
    Webhook(WebhookConfig),
    Smtp(SmtpConfig),
}

/// Notifications POSTed as JSON, one per request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub name: String,
    /// `https://` (or `http://` to a receiver on a trusted network), like the audit webhook.
    pub url: String,
    #[serde(default)]
    pub format: Format,
    /// Which audiences' notifications this sink receives.
    #[serde(default = "all_audiences")]
    pub audiences: BTreeSet<Audience>,
    /// Extra request headers, typically a credential; never shown.
    #[serde(default)]
    pub header: Headers,
    /// PEM file of the only CA certificates trusted for an `https://` receiver.
    pub ca_file: Option<PathBuf>,
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
    /// A host name or IP address as the relay is reached, an IPv6 one without brackets
    /// (`::1`); the port goes in `port`.
    pub host: String,
    /// Default: 25 without TLS, 587 with `starttls`, 465 with `tls`.
    pub port: Option<u16>,
    /// How the connection to the relay is protected.
    #[serde(default)]
    pub tls: SmtpTls,
    /// PEM file of the only CA certificates trusted for the relay; default the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Logs in (AUTH PLAIN or LOGIN) as this user, with `password`. Only over TLS: a password
    /// never crosses the network in clear.
    pub username: Option<String>,
    pub password: Option<ConfigSecret>,
    /// The sender, e.g. `Warden <warden@example.com>`.
    pub from: String,
    /// Fixed addresses per audience.
    #[serde(default)]
    pub to: BTreeMap<Audience, Vec<String>>,
    /// When set, each person a notification names (approvers, the requester, members of the
    /// security group) is also mailed at `NAME@user_domain`.
    pub user_domain: Option<String>,
}

/// How an SMTP sink protects its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text, for a relay on the same host or a trusted network.
    #[default]
    None,
    /// Plain, then upgraded with STARTTLS before anything else is sent; a relay that does not
    /// offer it is a failed delivery, never a fallback to plain text.
    Starttls,
    /// TLS from the first byte ("SMTPS").
    Tls,
}

impl SmtpConfig {
    /// The configured port, or the usual one for the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        })
    }

    /// `smtp://` or `smtps://` HOST:PORT (an IPv6 host in brackets), for messages and the
    /// status.
    pub fn shown(&self) -> String {
        let scheme = if self.tls == SmtpTls::Tls {
            "smtps"
        } else {
            "smtp"
        };
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("{scheme}://[{v6}]:{}", self.port()),
            _ => format!("{scheme}://{}:{}", self.host, self.port()),
        }
    }
}

/// Why `host` cannot name a relay, and how to write it instead: it is looked up, or read as
/// an IP address, exactly as written, so a port, a scheme or IPv6 brackets in it would make
/// every delivery fail on a lookup, for ever.
fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() || is_host_name(host) {
        return Ok(());
    }
    let mut message =
        format!("`host` {host:?} cannot be used: host must be a host name or IP address");
    let (scheme, rest) = host.split_once("://").unwrap_or(("", host));
    let authority = rest.split('/').next().unwrap_or_default();
    let (address, port) = split_port(authority);
    if address.starts_with('[') || address.parse::<Ipv6Addr>().is_ok() {
        message.push_str(" (an IPv6 address without brackets, e.g. host = \"::1\")");
    }
    if let Some(port) = port {
        message.push_str(&format!("; give the port as port = {port}"));
    }
    if !scheme.is_empty() {
        message.push_str("; without a scheme: `tls` says how the connection is protected");
    }
    Err(message)
}

/// `authority` without a final `:PORT`, and the port (`[::1]:25` and `relay:25` have one,
/// `::1` has none).
fn split_port(authority: &str) -> (&str, Option<u16>) {
    let split = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:"),
        None if authority.matches(':').count() == 1 => authority.split_once(':'),
        None => None,
    };
    match split.and_then(|(address, port)| Some((address, port.parse().ok()?))) {
        Some((address, port)) => (address, Some(port)),
        None => (authority, None),
    }
}

/// Whether `host` is a DNS name: dot-separated labels of letters, digits, `-` and `_`, a
/// final dot allowed.
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn all_audiences() -> BTreeSet<Audience> {
    Audience::ALL.into_iter().collect()
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
            NotifyConfig::Smtp(c) => c.shown(),
        }
    }

    /// Whether a notification for `audience` naming `recipients` goes to this sink.
    pub fn wants(&self, audience: Audience, recipients: usize) -> bool {
        match self {
            NotifyConfig::Webhook(c) => c.audiences.contains(&audience),
            NotifyConfig::Smtp(c) => {
                self.has_own_addresses(audience) || (c.user_domain.is_some() && recipients > 0)
            }
        }
    }

    /// Whether it sends `audience`'s notices to addresses of its own, whoever they name.
    pub fn has_own_addresses(&self, audience: Audience) -> bool {
        match self {
            NotifyConfig::Webhook(_) => false,
            NotifyConfig::Smtp(c) => c.to.get(&audience).is_some_and(|to| !to.is_empty()),
        }
    }

    fn check(&self) -> Result<(), String> {
        check_name(self.name())?;
        match self {
            NotifyConfig::Webhook(c) => {
                crate::webhook::check(&c.url, &c.header, c.ca_file.as_deref())?;
                if c.audiences.is_empty() {
                    return Err(
                        "`audiences` is empty: list approvers, requester or security".into(),
                    );
                }
            }
            NotifyConfig::Smtp(c) => {
                check_host(&c.host)?;
                if c.port == Some(0) {
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
                match (&c.username, &c.password) {
                    (Some(_), None) | (None, Some(_)) => {
                        return Err("`username` and `password` go together".into());
                    }
                    (Some(_), Some(_)) if c.tls == SmtpTls::None => {
                        return Err("`username` needs `tls = \"starttls\"` or `tls = \"tls\"`: \
                                    a password is never sent in clear"
                            .into());
                    }
                    _ => {}
                }
                if let Some(path) = &c.ca_file {
                    if c.tls == SmtpTls::None {
                        return Err(
                            "`ca_file` needs `tls = \"starttls\"` or `tls = \"tls\"`".into()
                        );
                    }
                    crate::ca_file::read(path)?;
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

impl SinkTable for NotifyConfig {
    const CALLED: &'static str = "notify sink";
    const KINDS: &'static str = r#""webhook" or "smtp""#;

    fn read(kind: &str, fields: Fields) -> Option<Result<Self, String>> {
        Some(match kind {
            "webhook" => fields.read().map(NotifyConfig::Webhook),
            "smtp" => fields.read().map(NotifyConfig::Smtp),
            _ => return None,
        })
    }

    fn name(&self) -> &str {
        NotifyConfig::name(self)
    }

    fn check(&self) -> Result<(), String> {
        NotifyConfig::check(self)
    }
}

/// Deserializes the `notify` list; see [`read_sinks`]. Names are unique, as queued
/// notifications are kept per sink name.
pub fn sinks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NotifyConfig>, D::Error> {
    read_sinks(d)
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
        assert_eq!(sinks[0].destination(), "http://127.0.0.1:9/…");
        let NotifyConfig::Smtp(m) = &sinks[1] else {
            panic!()
        };
        assert_eq!(m.port(), 25);
        assert!(sinks[1].wants(Audience::Security, 0));
        assert!(!sinks[1].wants(Audience::Approvers, 2));
    }

    #[test]
    fn an_smtp_host_is_a_name_or_address_and_says_how_to_give_a_port() {
        for good in [
            "smtp.example.com",
            "smtp.example.com.",
            "relay",
            "mail_relay.internal",
            "127.0.0.1",
            "::1",
            "fd00::25",
        ] {
            assert_eq!(check_host(good), Ok(()), "{good}");
        }
        let refused = |host: &str| check_host(host).unwrap_err();
        let e = refused("127.0.0.1:21111");
        assert!(
            e.contains("host must be a host name or IP address; give the port as port = 21111"),
            "{e}"
        );
        let e = refused("smtp://relay.example.com:587");
        assert!(
            e.contains("port = 587") && e.contains("without a scheme"),
            "{e}"
        );
        assert!(refused("smtps://relay.example.com").contains("without a scheme"));
        let e = refused("[::1]:2525");
        assert!(
            e.contains("without brackets") && e.contains("port = 2525"),
            "{e}"
        );
        assert!(refused("[::1]").contains("without brackets"));
        for bad in [
            "",
            " relay",
            "relay example",
            "-relay",
            "relay..example",
            "rélais",
        ] {
            assert!(refused(bad).contains("host name or IP address"), "{bad:?}");
        }
    }

    #[test]
    fn an_ipv6_relay_is_shown_in_brackets() {
        let sinks = parse(
            "[[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"::1\"\nport = 2525\n\
             from = \"w@x.org\"\nuser_domain = \"x.org\"\n",
        )
        .unwrap();
        assert_eq!(sinks[0].destination(), "smtp://[::1]:2525");
    }

    /// The error reading `text`, and the line it is placed at.
    fn placed(text: &str) -> (String, usize) {
        let e = toml::from_str::<Doc>(text).unwrap_err();
        let at = e.span().expect("an error placed in the file").start;
        (e.message().to_owned(), text[..at].matches('\n').count() + 1)
    }

    #[test]
    fn an_error_names_its_sink_and_field_and_is_placed_at_that_sink() {
        let first =
            "[[notify]]\nname = \"chat\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\n\n";
        let mail = "[[notify]]\nname = \"mail\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
                    from = \"w@x.org\"\nuser_domain = \"x.org\"\ntls = \"tls\"\nusername = \"u\"\n";
        let cases = [
            (
                format!("{first}{mail}password = \"\"\n"),
                "notify sink 2 (\"mail\"): `password`: the secret is empty",
            ),
            (
                format!("{first}{mail}password = \"p\"\nsender = \"x\"\n"),
                "notify sink 2 (\"mail\"): unknown field `sender`",
            ),
            (
                format!("{first}{mail}"),
                "notify sink 2 (\"mail\"): `username` and `password` go together",
            ),
            (
                format!("{first}{}", first.replace(":9/", ":10/")),
                "notify sink 2 (\"chat\"): the name is used by another sink",
            ),
            (
                format!("{first}[[notify]]\nname = \"hook\"\nurl = \"http://h/\"\n"),
                "notify sink 2 (\"hook\"): missing field `kind`",
            ),
            (
                format!("{first}[[notify]]\nkind = \"teams\"\n"),
                "notify sink 2: `kind` \"teams\" is not \"webhook\" or \"smtp\"",
            ),
            (
                format!(
                    "{first}[[notify]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://h/\"\n\
                     header = {{ Authorization = \"\" }}\n"
                ),
                "notify sink 2 (\"hook\"): `header`: `Authorization`: the secret is empty",
            ),
        ];
        for (text, expected) in cases {
            let (message, line) = placed(&text);
            assert!(message.starts_with(expected), "{message}\n{text}");
            assert_eq!(line, 6, "{message}\n{text}");
        }
        // The first sink is placed at its own line too.
        let (message, line) = placed(&format!("# where notices go\n\n{mail}password = \"\"\n"));
        assert!(
            message.starts_with("notify sink 1 (\"mail\"): `password`"),
            "{message}"
        );
        assert_eq!(line, 3);
    }

    #[test]
    fn refuses_bad_sinks_with_clear_messages() {
        let cases = [
            (
                "kind = \"webhook\"\nname = \"a\"\nurl = \"file:///tmp/x\"",
                "use https://",
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
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"w@x.org\"\nuser_domain = \"x.org\"\ntls = \"ssl\"",
                "unknown variant `ssl`",
            ),
            (
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"w@x.org\"\nuser_domain = \"x.org\"\nusername = \"u\"\npassword = \"hunter2\"",
                "a password is never sent in clear",
            ),
            (
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"w@x.org\"\nuser_domain = \"x.org\"\ntls = \"tls\"\nusername = \"u\"",
                "`username` and `password` go together",
            ),
            (
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"w@x.org\"\nuser_domain = \"x.org\"\nca_file = \"/etc/hostname\"",
                "`ca_file` needs `tls",
            ),
            (
                "kind = \"smtp\"\nname = \"a\"\nhost = \"h\"\nfrom = \"w@x.org\"\nuser_domain = \"x.org\"\ntls = \"starttls\"\nca_file = \"/nonexistent.pem\"",
                "cannot read `ca_file` /nonexistent.pem",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(&format!("[[notify]]\n{body}\n")).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
