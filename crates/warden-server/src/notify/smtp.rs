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
use warden_store::Reached;

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
    /// that (a mailbox it does not know: `user_domain` guesses every person's address; or one
    /// it will not take for now: full, greylisted), each recipient gets a message of their
    /// own, and only the mailboxes refused are left out: one address must not keep a
    /// break-glass alert from the rest of security. Returns the mailboxes refused for good
    /// (each with the relay's answer); it fails when no one could be sent it, or something may
    /// yet succeed on a retry.
    ///
    /// `reached` holds whom the earlier attempts settled, and gains whom this one does: the
    /// caller keeps it with a failure, so that a retry goes only to the mailboxes refused for
    /// now (or new since) and no one who took the notification is sent it again. Refusals
    /// stand only once someone took it: until then every recipient is tried again.
    pub async fn deliver(
        &self,
        n: &Notice,
        links: &Links,
        reached: &mut Reached,
    ) -> Result<Vec<String>, String> {
        if reached.sent.is_empty() {
            reached.refused.clear();
        }
        let to: Vec<Mailbox> = self
            .recipients(n)
            .into_iter()
            .filter(|m| !reached.settled(m.email.as_ref()))
            .collect();
        if to.is_empty() {
            // Every recipient was settled by earlier attempts, or there is no one to send it
            // to (the configuration changed since it was queued).
            return Ok(refusals(reached));
        }
        if to.len() > 1 {
            match self.send(n, links, to.clone()).await {
                Ok(()) => {
                    reached.sent.extend(to.iter().map(|m| m.email.to_string()));
                    return Ok(refusals(reached));
                }
                Err(e @ Failed::Unreached(_)) => return Err(e.to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, notice = %n.id, "the relay refused a notification; sending it to each recipient alone");
                }
            }
        }
        let mut for_now = Vec::new();
        let mut unreached = None;
        for m in to {
            let address = m.email.to_string();
            if let Some(e) = &unreached {
                // The relay stopped answering: the rest wait for the retry, not a timeout each.
                for_now.push(format!("{address}: {e}"));
                continue;
            }
            match self.send(n, links, vec![m]).await {
                Ok(()) => {
                    reached.sent.insert(address);
                }
                Err(Failed::Permanent(e)) => {
                    tracing::warn!(error = %e, notice = %n.id, %address, "the relay refused a notification's recipient for good; the others are sent it");
                    reached.refused.insert(address, e);
                }
                // The others are still sent it; this mailbox alone is tried again.
                Err(Failed::Transient(e)) => for_now.push(format!("{address}: {e}")),
                Err(Failed::Unreached(e)) => {
                    for_now.push(format!("{address}: {e}"));
                    unreached = Some(e);
                }
            }
        }
        if !for_now.is_empty() {
            let mut error = for_now.join("; ");
            if !reached.sent.is_empty() {
                error.push_str(&format!(
                    "; {} other recipient(s) took it and are not sent it again",
                    reached.sent.len()
                ));
            }
            Err(error)
        } else if reached.sent.is_empty() {
            Err(refusals(reached).join("; "))
        } else {
            Ok(refusals(reached))
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
            Err(_) => Err(Failed::Unreached(format!(
                "{}: no answer within {} s",
                self.shown,
                SEND_LIMIT.as_secs()
            ))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.is_permanent() => {
                Err(Failed::Permanent(format!("{}: {e}", self.shown)))
            }
            Ok(Err(e)) if e.is_transient() => {
                Err(Failed::Transient(format!("{}: {e}", self.shown)))
            }
            Ok(Err(e)) => Err(Failed::Unreached(format!("{}: {e}", self.shown))),
        }
    }
}

/// The mailboxes refused for good, each with the relay's answer.
pub(super) fn refusals(reached: &Reached) -> Vec<String> {
    reached
        .refused
        .iter()
        .map(|(address, e)| format!("{address}: {e}"))
        .collect()
}

/// Why the relay did not take a message.
#[derive(Debug, thiserror::Error)]
enum Failed {
    /// It answered 5xx: not this message, ever.
    #[error("{0}")]
    Permanent(String),
    /// It answered 4xx: not this message, for now.
    #[error("{0}")]
    Transient(String),
    /// It could not be reached, or stopped answering: nothing is known of the message.
    #[error("{0}")]
    Unreached(String),
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

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

    /// What [`relay`] took: the envelope's recipients of each message, in order.
    type Taken = Arc<Mutex<Vec<Vec<String>>>>;

    /// A relay on `listener`, taking any number of connections, that answers each `RCPT TO`
    /// with `answer(address)` and keeps the recipients it took of each message it accepts.
    fn relay(
        listener: TcpListener,
        answer: impl Fn(&str) -> &'static str + Send + Sync + 'static,
    ) -> Taken {
        let taken = Taken::default();
        let (answer, kept) = (Arc::new(answer), taken.clone());
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let (answer, kept) = (answer.clone(), kept.clone());
                tokio::spawn(async move {
                    let (read, mut write) = conn.into_split();
                    let mut lines = BufReader::new(read).lines();
                    write.write_all(b"220 relay ready\r\n").await.unwrap();
                    let (mut to, mut in_data) = (Vec::new(), false);
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply = if in_data {
                            if line != "." {
                                continue;
                            }
                            in_data = false;
                            kept.lock().unwrap().push(std::mem::take(&mut to));
                            "250 kept".to_owned()
                        } else if line.to_ascii_uppercase().starts_with("RCPT TO:") {
                            let address = line[8..].trim().trim_matches(['<', '>']).to_owned();
                            let reply = answer(&address);
                            if reply.starts_with('2') {
                                to.push(address);
                            }
                            reply.to_owned()
                        } else {
                            match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                                Some("DATA") => {
                                    in_data = true;
                                    "354 go on".to_owned()
                                }
                                Some("QUIT") => "221 bye".to_owned(),
                                _ => "250 ok".to_owned(),
                            }
                        };
                        if write
                            .write_all(format!("{reply}\r\n").as_bytes())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        taken
    }

    /// A sink mailing through the relay on loopback `port`, each person at `example.com`.
    fn guessing_sink(port: u16) -> SmtpSink {
        let config: SmtpConfig = toml::from_str(&format!(
            "name = \"mail\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             from = \"warden@example.com\"\nuser_domain = \"example.com\"\n"
        ))
        .unwrap();
        SmtpSink::new(&config).unwrap()
    }

    /// A break-glass notice for security, told to `recipients`.
    fn breakglass(recipients: &[&str]) -> Notice {
        serde_json::from_value(serde_json::json!({
            "id": uuid::Uuid::nil(), "kind": "break_glass", "audience": "security",
            "recipients": recipients, "time": "2026-01-01T00:00:00Z",
            "request": "01890000-0000-7000-8000-000000000000", "requester": "bob",
            "target": "web", "role": "root", "reason": "db down", "ticket": null, "ttl": "1h",
            "breakglass": true, "drill": false, "expires_at": null,
        }))
        .unwrap()
    }

    /// One mailbox refused for good and one refused for now: the others get it once, at the
    /// first attempt; each retry goes to the one refused for now alone, until it takes it.
    #[tokio::test]
    async fn a_retry_goes_only_to_the_mailboxes_refused_for_now() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let busy = Arc::new(AtomicBool::new(true));
        let still_busy = busy.clone();
        let taken = relay(listener, move |address| match address {
            "erin@example.com" => "550 5.1.1 no such user",
            "sam@example.com" if still_busy.load(Ordering::SeqCst) => "451 4.2.1 try later",
            _ => "250 ok",
        });
        let sink = guessing_sink(port);
        let notice = breakglass(&["dana", "erin", "sam", "tom"]);
        let links = Links::of(&notice, "https://warden.example.com");
        let mut reached = Reached::default();
        let taken_by = |address: &str| {
            let taken = taken.lock().unwrap();
            taken
                .iter()
                .filter(|to| to.iter().any(|a| a == address))
                .count()
        };

        let first = sink.deliver(&notice, &links, &mut reached).await;
        assert!(
            first.as_ref().is_err_and(|e| e.contains("sam@example.com")),
            "{first:?}"
        );
        assert_eq!(
            reached.sent,
            ["dana@example.com".to_owned(), "tom@example.com".to_owned()].into()
        );
        assert_eq!(
            reached.refused.keys().collect::<Vec<_>>(),
            ["erin@example.com"]
        );
        for _ in 0..3 {
            let again = sink.deliver(&notice, &links, &mut reached).await;
            assert!(again.is_err(), "{again:?}");
        }
        busy.store(false, Ordering::SeqCst);
        let last = sink.deliver(&notice, &links, &mut reached).await.unwrap();
        assert_eq!(last.len(), 1);
        assert!(last[0].starts_with("erin@example.com: "), "{last:?}");
        for address in ["dana@example.com", "tom@example.com", "sam@example.com"] {
            assert_eq!(
                taken_by(address),
                1,
                "{address}: {:?}",
                taken.lock().unwrap()
            );
        }
        assert_eq!(taken_by("erin@example.com"), 0);
        // Each retry was one message to the one mailbox refused for now.
        assert_eq!(taken.lock().unwrap().last().unwrap(), &["sam@example.com"]);
    }

    /// A mailbox the relay will not take for now (full, greylisted) holds the alert from no
    /// one else: the others get it at the first attempt, that mailbox alone on the retry.
    #[tokio::test]
    async fn a_mailbox_refused_for_now_keeps_it_from_no_one_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let full = Arc::new(AtomicBool::new(true));
        let still_full = full.clone();
        let taken = relay(listener, move |address| match address {
            "adam@example.com" if still_full.load(Ordering::SeqCst) => "452 4.2.2 mailbox full",
            _ => "250 ok",
        });
        let sink = guessing_sink(port);
        let notice = breakglass(&["adam", "dana", "tom"]);
        let links = Links::of(&notice, "https://warden.example.com");
        let mut reached = Reached::default();

        let first = sink.deliver(&notice, &links, &mut reached).await;
        assert!(
            first
                .as_ref()
                .is_err_and(|e| e.contains("adam@example.com")),
            "{first:?}"
        );
        assert_eq!(
            *taken.lock().unwrap(),
            [
                vec!["dana@example.com".to_owned()],
                vec!["tom@example.com".to_owned()]
            ]
        );
        full.store(false, Ordering::SeqCst);
        assert_eq!(
            sink.deliver(&notice, &links, &mut reached).await,
            Ok(Vec::new())
        );
        assert_eq!(taken.lock().unwrap().last().unwrap(), &["adam@example.com"]);
        assert_eq!(taken.lock().unwrap().len(), 3);
    }

    /// While no one has taken it, a refusal for good is no reason to stop trying that mailbox:
    /// a notice refused everywhere is held, retried to all, as before.
    #[tokio::test]
    async fn refusals_stand_only_once_someone_took_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let known = Arc::new(AtomicBool::new(false));
        let now_known = known.clone();
        let taken = relay(listener, move |address| match address {
            "erin@example.com" if !now_known.load(Ordering::SeqCst) => "550 5.1.1 no such user",
            _ => "451 4.2.1 try later",
        });
        let sink = guessing_sink(port);
        let notice = breakglass(&["erin"]);
        let links = Links::of(&notice, "https://warden.example.com");
        let mut reached = Reached::default();
        let first = sink.deliver(&notice, &links, &mut reached).await;
        assert!(
            first.as_ref().is_err_and(|e| e.contains("550")),
            "{first:?}"
        );
        // Tried again, and refused for now this time: still no one has it.
        known.store(true, Ordering::SeqCst);
        let again = sink.deliver(&notice, &links, &mut reached).await;
        assert!(
            again.as_ref().is_err_and(|e| e.contains("451")),
            "{again:?}"
        );
        assert!(reached.is_empty(), "{reached:?}");
        assert!(taken.lock().unwrap().is_empty());
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
        let mut reached = Reached::default();
        assert_eq!(
            sink.deliver(&notice, &links, &mut reached).await,
            Ok(Vec::new())
        );
        let message = relay.await.unwrap();
        assert!(
            message.contains("BREAK-GLASS: bob took web/root"),
            "{message}"
        );
    }
}
