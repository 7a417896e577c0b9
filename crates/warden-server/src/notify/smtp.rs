//! The notification mailer: one plain-text message per notification through an SMTP relay,
//! with the notification id as the Message-ID so mail systems and people can spot a resend.
//!
//! Plain SMTP without authentication or TLS: use a relay on the same host or network.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use warden_domain::Notice;

use super::config::SmtpConfig;
use super::{Links, text};

const SEND_LIMIT: Duration = Duration::from_secs(30);

/// Mails notifications through one relay.
#[derive(Debug)]
pub struct SmtpSink {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    shown: String,
    from: Mailbox,
    config: SmtpConfig,
}

impl SmtpSink {
    /// Fails only if the configuration was not checked.
    pub fn new(c: &SmtpConfig) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
            .port(c.port)
            .timeout(Some(SEND_LIMIT))
            .build();
        Ok(Self {
            transport,
            shown: format!("smtp://{}:{}", c.host, c.port),
            from: c
                .from
                .parse()
                .map_err(|e| anyhow::anyhow!("notify sink {:?}: `from`: {e}", c.name))?,
            config: c.clone(),
        })
    }

    /// The addresses `n` goes to.
    fn recipients(&self, n: &Notice) -> Vec<Mailbox> {
        let mut out: Vec<Mailbox> = self
            .config
            .to
            .get(&n.audience)
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse().ok())
            .collect();
        if let Some(domain) = &self.config.user_domain {
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

    /// Sends one notification.
    pub async fn deliver(&self, n: &Notice, links: &Links) -> Result<(), String> {
        let to = self.recipients(n);
        if to.is_empty() {
            // Nothing to send to (the configuration changed since it was queued).
            return Ok(());
        }
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(n.subject())
            .message_id(Some(format!("<{}@warden>", n.id)))
            .header(ContentType::TEXT_PLAIN);
        for m in to {
            builder = builder.to(m);
        }
        let message = builder
            .body(text(n, links))
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", self.shown))
    }
}
