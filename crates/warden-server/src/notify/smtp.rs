//! The notification mailer: one plain-text message per notification through an SMTP relay,
//! with the notification id as the Message-ID so mail systems and people can spot a resend.
//!
//! The relay is reached in plain text, with STARTTLS required, or over TLS from the start, as
//! configured; a relay's certificate is verified against the system's roots or only against
//! the sink's `ca_file`, and a login is only ever sent over TLS.

use std::collections::BTreeMap;
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use warden_domain::{Audience, Notice};

use super::config::{SmtpConfig, SmtpTls};
use super::{Links, text};

/// Longest one delivery may take, from connecting to the relay's last answer.
const SEND_LIMIT: Duration = Duration::from_secs(30);

/// Mails notifications through one relay.
#[derive(Debug)]
pub struct SmtpSink {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    shown: String,
    from: Mailbox,
    /// Fixed addresses per audience, as configured.
    to: BTreeMap<Audience, Vec<String>>,
    user_domain: Option<String>,
}

impl SmtpSink {
    /// Fails only if the configuration was not checked.
    pub fn new(c: &SmtpConfig) -> anyhow::Result<Self> {
        let failed = |m: &dyn std::fmt::Display| anyhow::anyhow!("notify sink {:?}: {m}", c.name);
        // Plain until `tls` says otherwise: the builder's name warns of exactly that.
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
            .port(c.port())
            .timeout(Some(SEND_LIMIT));
        if c.tls != SmtpTls::None {
            let mut params = TlsParameters::builder(c.host.clone());
            if let Some(path) = &c.ca_file {
                let pem = crate::ca_file::read(path).map_err(|m| failed(&m))?;
                params = params
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(Certificate::from_pem(&pem).map_err(|e| failed(&e))?);
            }
            let params = params.build_rustls().map_err(|e| failed(&e))?;
            builder = builder.tls(match c.tls {
                SmtpTls::Tls => Tls::Wrapper(params),
                _ => Tls::Required(params),
            });
        }
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Self {
            transport: builder.build(),
            shown: c.shown(),
            from: c
                .from
                .parse()
                .map_err(|e| anyhow::anyhow!("notify sink {:?}: `from`: {e}", c.name))?,
            to: c.to.clone(),
            user_domain: c.user_domain.clone(),
        })
    }

    /// The addresses `n` goes to.
    fn recipients(&self, n: &Notice) -> Vec<Mailbox> {
        let mut out: Vec<Mailbox> = self
            .to
            .get(&n.audience)
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse().ok())
            .collect();
        if let Some(domain) = &self.user_domain {
            out.extend(
                n.recipients
                    .iter()
                    .filter_map(|u| format!("{u}@{domain}").parse().ok()),
            );
        }
        out.sort_by_key(|m| m.email.to_string());
        out.dedup_by_key(|m| m.email.to_string());
        out
    }

    /// Sends one notification, to all its recipients in one message. When the relay refuses
    /// that for good (a mailbox it does not know: `user_domain` guesses every person's
    /// address), each recipient gets a message of their own, and only the mailboxes refused
    /// for good are left out: one unknown address must not keep a break-glass alert from the
    /// rest of security. Returns the mailboxes refused so (each with the relay's answer); it
    /// fails when no one could be sent it, or something may yet succeed on a retry.
    pub async fn deliver(&self, n: &Notice, links: &Links) -> Result<Vec<String>, String> {
        let to = self.recipients(n);
        if to.is_empty() {
            // Nothing to send to (the configuration changed since it was queued).
            return Ok(Vec::new());
        }
        match self.send(n, links, to.clone()).await {
            Err(Failed::Permanent(e)) if to.len() > 1 => {
                tracing::warn!(error = %e, notice = %n.id, "the relay refused a notification for good; sending it to each recipient alone");
            }
            other => return other.map(|()| Vec::new()).map_err(|e| e.to_string()),
        }
        let (mut sent, mut refused) = (0, Vec::new());
        for m in to {
            let address = m.email.to_string();
            match self.send(n, links, vec![m]).await {
                Ok(()) => sent += 1,
                Err(Failed::Permanent(e)) => {
                    tracing::warn!(error = %e, notice = %n.id, %address, "the relay refused a notification's recipient for good; the others were sent it");
                    refused.push(format!("{address}: {e}"));
                }
                Err(e @ Failed::Transient(_)) => return Err(e.to_string()),
            }
        }
        if sent == 0 {
            Err(refused.join("; "))
        } else {
            Ok(refused)
        }
    }

    /// Sends `n` to the mailboxes `to` in one message.
    async fn send(&self, n: &Notice, links: &Links, to: Vec<Mailbox>) -> Result<(), Failed> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(n.subject())
            .message_id(Some(format!("<{}@warden>", n.id)))
            // When the notice was made, not when a retry got it through: mail after an outage
            // sorts by what happened.
            .date(std::time::SystemTime::from(n.time))
            .header(ContentType::TEXT_PLAIN);
        for m in to {
            builder = builder.to(m);
        }
        let message = builder
            .body(text(n, &n.facts(), links))
            .map_err(|e| Failed::Permanent(format!("cannot build the message: {e}")))?;
        // The transport's own timeout bounds its connect alone: a relay that takes the
        // connection and never answers would hold this delivery, and its sink, for ever.
        match tokio::time::timeout(SEND_LIMIT, self.transport.send(message)).await {
            Err(_) => Err(Failed::Transient(format!(
                "{}: no answer within {} s",
                self.shown,
                SEND_LIMIT.as_secs()
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => {
                Err(Failed::Permanent(format!("{}: {e}", self.shown)))
            }
            Ok(Err(e)) => Err(Failed::Transient(format!("{}: {e}", self.shown))),
        }
    }
}

/// Why the relay did not take a message: for good (a 5xx answer), or for now.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    /// Takes one connection and one message on `listener`, answering as a relay that accepts
    /// everything; returns the message's text.
    async fn relay_one_message(listener: TcpListener) -> String {
        let (conn, _) = listener.accept().await.unwrap();
        let (read, mut write) = conn.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 relay ready\r\n").await.unwrap();
        let (mut message, mut in_data) = (String::new(), false);
        while let Some(line) = lines.next_line().await.unwrap() {
            let reply: &[u8] = if in_data {
                if line != "." {
                    message.push_str(&line);
                    message.push('\n');
                    continue;
                }
                in_data = false;
                b"250 kept\r\n"
            } else {
                match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("DATA") => {
                        in_data = true;
                        b"354 go on\r\n"
                    }
                    Some("QUIT") => b"221 bye\r\n",
                    _ => b"250 ok\r\n",
                }
            };
            write.write_all(reply).await.unwrap();
        }
        message
    }

    #[tokio::test]
    async fn an_ipv6_relay_is_reached_at_its_address_without_brackets() {
        let listener = TcpListener::bind("[::1]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = tokio::spawn(relay_one_message(listener));
        let config: SmtpConfig = toml::from_str(&format!(
            "name = \"mail\"\nhost = \"::1\"\nport = {port}\nfrom = \"warden@example.com\"\n\
             to = {{ security = [\"security@example.com\"] }}\n"
        ))
        .unwrap();
        let sink = SmtpSink::new(&config).unwrap();
        let notice: Notice = serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::nil(), "kind": "break_glass", "audience": "security",
            "recipients": [], "time": "2026-01-01T00:00:00Z",
            "request": "01890000-0000-7000-8000-000000000000", "requester": "bob",
            "target": "web", "role": "root", "reason": "db down", "ticket": null, "ttl": "1h",
            "breakglass": true, "drill": false, "expires_at": null,
        }))
        .unwrap();
        let links = Links::of(&notice, "https://warden.example.com");
        assert_eq!(sink.deliver(&notice, &links).await, Ok(Vec::new()));
        let message = relay.await.unwrap();
        assert!(
            message.contains("BREAK-GLASS: bob took web/root"),
            "{message}"
        );
    }
}
