//! The outbox dispatcher: delivers queued notifications, each to its sink, and retries the
//! ones that fail with exponential backoff, per notification and sink, so one dead sink delays
//! nothing else. Deliveries run on their own, a few per sink at once: one to a sink that hangs
//! (up to its time limit) holds back only that sink's.
//!
//! It sleeps until the next queued notification is due, or until a change queues a new one
//! (`App::outbox` wakes it); queued rows survive any crash, so after a restart everything not
//! yet marked delivered is sent. A stop waits a little for the deliveries under way, so that
//! one a receiver took is marked delivered rather than sent again after the restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::notice::Kind;
use warden_domain::{Audience, Notice, State};
use warden_store::{Delivery, Reached};

use super::smtp::{SmtpSink, refusals};
use super::webhook::WebhookSink;
use super::{Links, NotifyConfig, readdressed};
use crate::state::{Shared, now};

/// First pause after a failure; it doubles with each further failure …
const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// … up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Longest sleep, as a safety net against clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// How often the queue is looked at while deliveries are under way.
const WAITING_POLL: Duration = Duration::from_secs(1);
/// Notifications read per pass, beside those under way.
const BATCH: usize = 64;
/// Deliveries under way to one sink at most.
const CONCURRENCY: usize = 8;
/// How long a stop waits for the deliveries under way, so that what they sent is recorded
/// and not sent again at the next start.
const DRAIN: Duration = Duration::from_secs(2);

/// A configured destination: what it wants, and how it is reached.
#[derive(Debug)]
struct Sink {
    config: NotifyConfig,
    transport: Transport,
}

/// How a sink is reached.
#[derive(Debug)]
enum Transport {
    Webhook(WebhookSink),
    Smtp(SmtpSink),
}

impl Sink {
    /// Delivers `n` to those of its recipients the earlier attempts did not settle,
    /// `reached`, which gains whom this attempt settles (a mail relay answers per recipient;
    /// a webhook takes a notification whole); returns the recipients a mail relay refused for
    /// good while others were sent it.
    async fn deliver(
        &self,
        n: &Notice,
        base: &str,
        reached: &mut Reached,
    ) -> Result<Vec<String>, String> {
        let links = Links::of(n, base);
        match &self.transport {
            Transport::Webhook(s) => s.deliver(n, &links).await.map(|()| Vec::new()),
            Transport::Smtp(s) => s.deliver(n, &links, reached).await,
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
            let transport = match c {
                NotifyConfig::Webhook(w) => Transport::Webhook(WebhookSink::new(w)?),
                NotifyConfig::Smtp(m) => Transport::Smtp(SmtpSink::new(m)?),
            };
            let sink = Sink {
                config: c.clone(),
                transport,
            };
            Ok((c.name().to_owned(), sink))
        })
        .collect()
}

/// Checks the sinks can be built; call before starting [`run`].
pub fn check(app: &Shared) -> anyhow::Result<()> {
    build(&app.config.notify).map(|_| ())
}

/// Deliveries under way, each (notification, sink) once, and how many each sink may have at
/// once: a sink that hangs holds its own deliveries back, never another sink's.
struct InFlight {
    running: Mutex<Running>,
    per_sink: BTreeMap<String, Arc<Semaphore>>,
}

/// The deliveries under way, and how many have ended: a pass whose read of the queue some
/// delivery ended during reads it again, as that read may show the delivery's row still due
/// from before its outcome was stored, and its key already gone from `keys`.
#[derive(Default)]
struct Running {
    keys: HashSet<(uuid::Uuid, String)>,
    ended: u64,
}

/// Delivers until `stop` turns true, then waits up to [`DRAIN`] for the deliveries under way
/// and records their outcomes; those still under way then are left queued for the next start.
pub async fn run(app: Shared, mut stop: watch::Receiver<bool>) {
    let sinks = match build(&app.config.notify) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "notification sinks cannot start");
            return;
        }
    };
    let in_flight = Arc::new(InFlight {
        running: Mutex::new(Running::default()),
        per_sink: sinks
            .keys()
            .map(|name| (name.clone(), Arc::new(Semaphore::new(CONCURRENCY))))
            .collect(),
    });
    let base: Arc<str> = app.public_url().into();
    // What waits for a sink configured now is tried at once: a sink put back in the config
    // delivers without waiting out the backoff its absence built, and its error is replaced.
    let configured: Vec<String> = sinks.keys().cloned().collect();
    if let Err(e) = app.store.notices_due_by(&configured, now()).await {
        tracing::warn!(error = %e, "queued notifications wait out their backoff");
    }
    let mut deliveries = JoinSet::new();
    loop {
        // Those ended are let go of: the set holds the deliveries under way.
        while deliveries.try_join_next().is_some() {}
        let sleep = match pass(&app, &sinks, &in_flight, &base, &mut deliveries).await {
            // Some due ones wait for a delivery under way, whose end wakes the dispatcher;
            // others' retries may come due meanwhile, and the queue cannot say when apart from
            // those under way.
            Ok(true) => WAITING_POLL,
            Ok(false) => match app.store.next_notice_due().await {
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
            _ = stop.changed() => break,
        }
    }
    drain(deliveries).await;
}

/// Waits up to [`DRAIN`] for `deliveries` to end; the rest are stopped, their notifications
/// still queued.
async fn drain(mut deliveries: JoinSet<()>) {
    let all_ended = async { while deliveries.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, all_ended).await.is_err() {
        tracing::warn!(
            under_way = deliveries.len(),
            "notification deliveries still under way at the stop are sent again at the next start"
        );
        deliveries.shutdown().await;
    }
}

/// Starts the deliveries that are due now, each on its own in `deliveries`, without waiting
/// for any; returns whether a due one was left waiting (under way already, or its sink busy).
async fn pass(
    app: &Shared,
    sinks: &Arc<BTreeMap<String, Sink>>,
    in_flight: &Arc<InFlight>,
    base: &Arc<str>,
    deliveries: &mut JoinSet<()>,
) -> Result<bool, warden_store::Error> {
    // Read until no delivery ended during the read; then choose under the same lock the
    // delivery's end takes, so that none ends unseen between the check and the choice.
    let mut left_waiting = false;
    let chosen = loop {
        let (ended, under_way) = {
            let r = lock(&in_flight.running);
            let under_way: Vec<String> = r.keys.iter().map(|(_, sink)| sink.clone()).collect();
            (r.ended, under_way)
        };
        // A sink with no place free takes nothing now: its rows are not read, so however many
        // wait for it they fill no other sink's share of the read (and each sink's share is
        // taken in turns, so one whose deliveries keep failing fast fills none either). Read
        // after `ended`: a place freed since is seen, or the read is made again.
        let busy: Vec<String> = in_flight
            .per_sink
            .iter()
            .filter(|(_, limit)| limit.available_permits() == 0)
            .map(|(name, _)| name.clone())
            .collect();
        // Those under way of the other sinks are due too: read past them.
        let running = under_way.iter().filter(|s| !busy.contains(s)).count();
        let due = app.store.due_notices(now(), BATCH + running, &busy).await?;
        let mut r = lock(&in_flight.running);
        if r.ended != ended {
            continue;
        }
        // Those of a busy sink wait for a delivery under way, whose end wakes the dispatcher.
        left_waiting |= !busy.is_empty();
        let mut chosen = Vec::new();
        for d in due {
            let key = (d.notice.id, d.sink.clone());
            if r.keys.contains(&key) {
                left_waiting = true;
                continue;
            }
            let permit = match in_flight.per_sink.get(&d.sink) {
                Some(limit) => match limit.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        left_waiting = true;
                        continue;
                    }
                },
                None => None,
            };
            r.keys.insert(key.clone());
            chosen.push((d, key, permit));
        }
        break chosen;
    };
    for (d, key, permit) in chosen {
        let under_way = UnderWay {
            app: app.clone(),
            in_flight: in_flight.clone(),
            key,
            permit,
        };
        let (app, sinks, base) = (app.clone(), sinks.clone(), base.clone());
        deliveries.spawn(async move {
            let _under_way = under_way;
            // Whom the earlier attempts reached: they are not sent it again, and a failure
            // keeps whom this attempt reached too.
            let mut reached = d.reached.clone();
            let outcome = match sinks.get(&d.sink) {
                // A prompt retried after an outage that no longer holds (the request was
                // decided, the grant ended) would send its reader after nothing: it is dropped.
                Some(_) if stale(&app, &d).await => Ok(Sent::Skipped),
                Some(sink) => match addressed_now(&app, &d, sink).await {
                    Ok(Some(notice)) => sink
                        .deliver(&notice, &base, &mut reached)
                        .await
                        .map(Sent::Delivered),
                    Ok(None) => Ok(Sent::Skipped),
                    Err(e) => Err(e),
                },
                None => Err(format!(
                    "notify sink {:?} is no longer configured; it stays queued until it is",
                    d.sink
                )),
            };
            // One dropped at a retry after earlier attempts reached some of its recipients
            // was delivered to those.
            let outcome = match outcome {
                Ok(Sent::Skipped) if !reached.sent.is_empty() => {
                    Ok(Sent::Delivered(refusals(&reached)))
                }
                other => other,
            };
            let stored = match outcome {
                Ok(sent) => {
                    // Mailboxes refused for good while others were sent it are on the record
                    // by name, so that someone can reach them another way; a retry would be
                    // refused again.
                    let events = match &sent {
                        Sent::Delivered(refused) if !refused.is_empty() => vec![failure_event(
                            &d,
                            "recipients_refused",
                            format!(
                                "sink {} delivered it, but not to: {}",
                                d.sink,
                                refused.join("; ")
                            ),
                            Some(refused),
                        )],
                        _ => Vec::new(),
                    };
                    app.store
                        .notice_delivered(
                            d.notice.id,
                            &d.sink,
                            now(),
                            sent == Sent::Skipped,
                            events,
                        )
                        .await
                }
                Err(e) => failed(&app, &d, &e, &reached).await,
            };
            if let Err(e) = stored {
                tracing::error!(error = %e, notice = %d.notice.id, "outbox cannot record a delivery; it is tried again");
            }
        });
    }
    Ok(left_waiting)
}

/// Whether `d`, a retry or a first try held back (by a sink busy with slow deliveries, or a
/// stop), asks for something that no longer applies: an approval of a request no longer
/// pending, or a warning of an end that already came. A first try made right after the change
/// that made it is always sent, whatever came since.
async fn stale(app: &Shared, d: &Delivery) -> bool {
    let wanted = match d.notice.kind {
        Kind::ApprovalNeeded => State::Pending,
        Kind::ExpirySoon => State::Active,
        _ => return false,
    };
    if !late(d, time::OffsetDateTime::now_utc()) {
        return false;
    }
    match app.store.request(d.notice.request).await {
        Ok(Some(r)) if r.state != wanted => {
            tracing::info!(sink = %d.sink, notice = %d.notice.id, request = %r.id, state = r.state.as_str(), "a late notification no longer applies; not sent");
            true
        }
        _ => false,
    }
}

/// `d`'s notice as its `sink` is to be sent it now, told only to those it was for who may
/// still be told of it ([`App::still_told`]: not offboarded or gone from the directory, and
/// still a reviewer of the request as it stands, in the security group, or its requester);
/// `None` when no one it was for is left. An error when the request a prompt is about cannot
/// be read: the delivery is tried again later rather than sent to whoever it named.
async fn addressed_now(app: &Shared, d: &Delivery, sink: &Sink) -> Result<Option<Notice>, String> {
    let n = &d.notice;
    let request = if n.audience == Audience::Approvers && !n.recipients.is_empty() {
        app.store.request(n.request).await.map_err(|e| {
            format!(
                "cannot read request {} to check who may still be told of it: {e}",
                n.request
            )
        })?
    } else {
        None
    };
    let notice = readdressed(n, |u| app.still_told(n, request.as_ref(), u), &sink.config);
    match &notice {
        None => {
            tracing::info!(sink = %d.sink, notice = %n.id, "no one a notification was for may still be told; not sent");
        }
        Some(m) if m.recipients.len() < n.recipients.len() => {
            let left_out = n.recipients.len() - m.recipients.len();
            tracing::info!(sink = %d.sink, notice = %n.id, left_out, "a notification is not told to those it was for who may no longer be told");
        }
        Some(_) => {}
    }
    Ok(notice)
}

/// What became of a notice a sink was due to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// Sent, but for the recipients listed, whom the relay refused for good.
    Delivered(Vec<String>),
    /// Dropped unsent: it no longer applied ([`stale`]), or no one it was for may still be
    /// told ([`addressed_now`]).
    Skipped,
}

/// How late a first try may come after its notice and still be sent whatever came since.
const HELD_BACK: time::Duration = time::Duration::seconds(5);

/// Whether `d` is a retry, or a first try made later than [`HELD_BACK`] after its notice.
fn late(d: &Delivery, now: time::OffsetDateTime) -> bool {
    d.attempts > 0 || now - d.notice.time > HELD_BACK
}

/// A delivery under way: when it ends, however (a panic too), its sink's place is freed, it
/// is no longer under way, and the dispatcher looks at the queue again.
struct UnderWay {
    app: Shared,
    in_flight: Arc<InFlight>,
    key: (uuid::Uuid, String),
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        // Freed before the dispatcher is woken, so that it finds the place free.
        drop(self.permit.take());
        {
            let mut r = lock(&self.in_flight.running);
            r.keys.remove(&self.key);
            r.ended += 1;
        }
        self.app.outbox.notify_one();
    }
}

/// The set of deliveries under way; a panic elsewhere while holding it leaves it usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `notification.failed` event of delivery `d` (`code`, `why`), naming the `refused`
/// recipients when some were.
fn failure_event(d: &Delivery, code: &str, why: String, refused: Option<&[String]>) -> Event {
    let mut details = serde_json::json!({
        "sink": d.sink,
        "notification": d.notice.id,
        "kind": d.notice.kind.as_str(),
        "audience": d.notice.audience,
    });
    if let Some(refused) = refused {
        details["refused"] = serde_json::json!(refused);
    }
    let mut e = Event::new(Code::NotificationFailed, Actor::system(), now())
        .failed(code, why)
        .details(details);
    e.request_id = Some(d.notice.request);
    e.target = Some(d.notice.target.clone());
    e.role = Some(d.notice.role.clone());
    e
}

/// Schedules the next attempt, to those the attempts so far have not `reached`; the first
/// failure of a notification is audited.
async fn failed(
    app: &Shared,
    d: &Delivery,
    error: &str,
    reached: &Reached,
) -> Result<(), warden_store::Error> {
    let attempts = d.attempts.saturating_add(1);
    tracing::warn!(sink = %d.sink, notice = %d.notice.id, attempts, error, "notification not delivered; will retry");
    let events = if attempts == 1 {
        vec![failure_event(
            d,
            "notification_failed",
            format!("sink {} cannot deliver: {error}", d.sink),
            None,
        )]
    } else {
        Vec::new()
    };
    let retry_at = now() + backoff(attempts);
    app.store
        .notice_failed(
            d.notice.id,
            &d.sink,
            attempts,
            retry_at,
            error,
            reached,
            events,
        )
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

    #[test]
    fn a_first_try_held_back_is_late_like_a_retry() {
        let json = serde_json::json!({
            "id": uuid::Uuid::nil(), "kind": "approval_needed", "audience": "approvers",
            "recipients": [], "time": "2026-01-01T00:00:00Z",
            "request": "01890000-0000-7000-8000-000000000000", "requester": "alice",
            "target": "web", "role": "deploy", "reason": "fix", "ticket": null, "ttl": "1h",
            "breakglass": false, "drill": false, "expires_at": null,
        });
        let notice: warden_domain::notice::Notice = serde_json::from_value(json).unwrap();
        let at = notice.time;
        let mut d = Delivery {
            sink: "hook".into(),
            notice,
            attempts: 0,
            reached: Reached::default(),
        };
        assert!(!late(&d, at + time::Duration::seconds(1)));
        assert!(late(&d, at + time::Duration::seconds(6)));
        d.attempts = 1;
        assert!(late(&d, at + time::Duration::seconds(1)));
    }
}
