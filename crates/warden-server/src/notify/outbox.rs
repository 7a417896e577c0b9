//! The outbox dispatcher: delivers queued notifications, each to its sink, and retries the
//! ones that fail with exponential backoff, per notification and sink, so one dead sink delays
//! nothing else.
//!
//! It sleeps until the next queued notification is due, or until a change queues a new one
//! (`App::outbox` wakes it); queued rows survive any crash, so after a restart everything not
//! yet marked delivered is sent.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use warden_domain::audit::{Actor, Code, Event};
use warden_store::Delivery;

use super::smtp::SmtpSink;
use super::webhook::WebhookSink;
use super::{Links, NotifyConfig};
use crate::state::{Shared, now};

/// First pause after a failure; it doubles with each further failure …
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// … up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest sleep, as a safety net against clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Notifications read per pass, and delivered at once at most.
const BATCH: usize = 64;
const CONCURRENCY: usize = 8;

/// A configured destination.
#[derive(Debug)]
enum Sink {
    Webhook(WebhookSink),
    Smtp(SmtpSink),
}

impl Sink {
    async fn deliver(&self, d: &Delivery, base: &str) -> Result<(), String> {
        let links = Links::of(&d.notice, base);
        match self {
            Sink::Webhook(s) => s.deliver(&d.notice, &links).await,
            Sink::Smtp(s) => s.deliver(&d.notice, &links).await,
        }
    }
}

/// The pause before attempt `attempts + 1`.
fn backoff(attempts: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .min(BACKOFF_MAX)
}

/// The sinks of `configs`, by name.
fn build(configs: &[NotifyConfig]) -> anyhow::Result<BTreeMap<String, Sink>> {
    configs
        .iter()
        .map(|c| {
            let sink = match c {
                NotifyConfig::Webhook(w) => Sink::Webhook(WebhookSink::new(w)?),
                NotifyConfig::Smtp(m) => Sink::Smtp(SmtpSink::new(m)?),
            };
            Ok((c.name().to_owned(), sink))
        })
        .collect()
}

/// Checks the sinks can be built; call before starting [`run`].
pub fn check(app: &Shared) -> anyhow::Result<()> {
    build(&app.config.notify).map(|_| ())
}

/// Delivers until `stop` turns true.
pub async fn run(app: Shared, mut stop: watch::Receiver<bool>) {
    let sinks = match build(&app.config.notify) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "notification sinks cannot start");
            return;
        }
    };
    let base = app.public_url();
    loop {
        let sleep = match pass(&app, &sinks, &base).await {
            Ok(()) => match app.store.next_notice_due().await {
                Ok(Some(next)) => {
                    let wait = next - now();
                    Duration::try_from(wait)
                        .unwrap_or(Duration::ZERO)
                        .min(MAX_SLEEP)
                }
                Ok(None) => MAX_SLEEP,
                Err(e) => {
                    tracing::error!(error = %e, "outbox cannot read its queue");
                    BACKOFF_MIN
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "outbox pass failed");
                BACKOFF_MIN
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = app.outbox.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Delivers what is due now.
async fn pass(
    app: &Shared,
    sinks: &BTreeMap<String, Sink>,
    base: &str,
) -> Result<(), warden_store::Error> {
    let due = app.store.due_notices(now(), BATCH).await?;
    let results: Vec<Result<(), warden_store::Error>> = futures_util::stream::iter(due)
        .map(|d| async move {
            let outcome = match sinks.get(&d.sink) {
                Some(sink) => sink.deliver(&d, base).await,
                None => Err(format!(
                    "notify sink {:?} is no longer configured; it stays queued until it is",
                    d.sink
                )),
            };
            match outcome {
                Ok(()) => {
                    app.store
                        .notice_delivered(d.notice.id, &d.sink, now())
                        .await
                }
                Err(e) => failed(app, &d, &e).await,
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Schedules the next attempt; the first failure of a notification is audited.
async fn failed(app: &Shared, d: &Delivery, error: &str) -> Result<(), warden_store::Error> {
    let attempts = d.attempts.saturating_add(1);
    tracing::warn!(sink = %d.sink, notice = %d.notice.id, attempts, error, "notification not delivered; will retry");
    let events = if attempts == 1 {
        let mut e = Event::new(Code::NotificationFailed, Actor::system(), now())
            .failed(
                "notification_failed",
                format!("sink {} cannot deliver: {error}", d.sink),
            )
            .details(serde_json::json!({
                "sink": d.sink,
                "notification": d.notice.id,
                "kind": d.notice.kind.as_str(),
                "audience": d.notice.audience,
            }));
        e.request_id = Some(d.notice.request);
        e.target = Some(d.notice.target.clone());
        e.role = Some(d.notice.role.clone());
        vec![e]
    } else {
        Vec::new()
    };
    let retry_at = now() + backoff(attempts);
    app.store
        .notice_failed(d.notice.id, &d.sink, attempts, retry_at, error, events)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_ceiling() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
