//! Exports the audit log to SIEM sinks, at least once: JSON lines to rotating files
//! ([`file`]), RFC 5424 syslog over TCP or UDP (`syslog.rs`) and batched HTTP POSTs
//! (`webhook.rs`).
//!
//! Each sink runs in its own task with a durable cursor, the sequence number of the last event
//! it delivered, stored in the database under the sink's name, and again outside it with that
//! event's leaf hash ([`mark`]): a backup restores the database's cursor with the log, so only
//! what is kept outside can tell that the log was rolled back under the sink. The task reads
//! the events after
//! its cursor, hands them to the sink and moves the cursor only once the sink acknowledged
//! them. A failed delivery retries the same events with exponential backoff, so nothing is
//! ever skipped; after a crash the events after the stored cursor are sent again. Receivers
//! therefore see every event at least once, possibly twice, and every record carries its
//! sequence number and leaf hash so a receiver can drop duplicates and detect gaps.
//!
//! The log cannot be exported faster than it is written, so tasks poll for new events; the
//! figures of [`Status`] are kept in memory for `GET /v1/audit/status`.

mod config;
mod file;
mod mark;
mod syslog;
mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use warden_domain::audit::{Actor, Code, Event};
use warden_store::Leaf;

pub use config::{
    Fields, Headers, SinkConfig, SinkTable, check_name, read_sinks, shown_url, sinks,
};

use crate::state::{Shared, now};

/// How often a caught-up sink looks for new events, and the log size is refreshed.
const POLL: Duration = Duration::from_millis(200);
/// First pause after a failure; it doubles with each further failure …
const BACKOFF_MIN: Duration = Duration::from_millis(200);
/// … up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long shutdown waits for sinks to deliver the last events.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Leaves read per query while measuring the log.
const HEAD_BATCH: usize = 1000;
/// At most one `audit.export_failed` per sink this often (see [`FailureEvents`]).
const FAILURE_EVENT_EVERY: Duration = Duration::from_secs(300);

/// A destination for audit records.
pub trait Sink: Send + 'static {
    /// Most leaves handed to one [`Sink::deliver`].
    fn batch(&self) -> usize;

    /// Delivers `leaves`, oldest first. Succeeds only once the destination has them as far as
    /// its transport can tell; the error is a message safe to show (no secrets).
    fn deliver(&mut self, leaves: &[Leaf]) -> impl Future<Output = Result<(), String>> + Send;
}

/// A leaf as one JSON record, `{"seq":N,"leaf_hash":"…","event":{…}}`, as the file and
/// webhook sinks send it. `event` holds the leaf's bytes unchanged, so a receiver can recompute
/// the leaf hash from them.
fn json_record(leaf: &Leaf) -> String {
    format!(
        "{{\"seq\":{},\"leaf_hash\":\"{}\",\"event\":{}}}",
        leaf.seq,
        hex::encode(leaf.hash),
        leaf.data
    )
}

/// Live figures of every sink, shared between the export tasks and the API.
#[derive(Debug, Clone, Default)]
pub struct Status {
    inner: Arc<Mutex<Figures>>,
}

#[derive(Debug, Default)]
struct Figures {
    /// The latest sequence number seen in the log.
    head: u64,
    sinks: Vec<SinkFigures>,
}

/// One sink's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFigures {
    pub name: String,
    pub kind: &'static str,
    /// Where it delivers, without credentials.
    pub destination: String,
    /// The last sequence number delivered.
    pub cursor: u64,
    /// Deliveries failed in a row since the last success.
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_success: Option<OffsetDateTime>,
}

/// A consistent copy of the figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The latest sequence number in the log; a sink's lag is this minus its cursor.
    pub log_size: u64,
    pub sinks: Vec<SinkFigures>,
}

impl Status {
    fn lock(&self) -> MutexGuard<'_, Figures> {
        // Figures stay usable even if a holder panicked: they are only counters.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The figures now.
    pub fn snapshot(&self) -> Snapshot {
        let f = self.lock();
        let cursors = f.sinks.iter().map(|s| s.cursor);
        Snapshot {
            log_size: cursors.fold(f.head, u64::max),
            sinks: f.sinks.clone(),
        }
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut SinkFigures)) {
        if let Some(s) = self.lock().sinks.iter_mut().find(|s| s.name == name) {
            change(s);
        }
    }

    fn saw(&self, seq: u64) {
        let mut f = self.lock();
        f.head = f.head.max(seq);
    }

    /// Records a failure.
    fn failed(&self, name: &str, error: &str) {
        self.update(name, |s| {
            s.failures += 1;
            s.last_error = Some(error.to_owned());
        });
    }

    fn delivered(&self, name: &str, cursor: u64) {
        self.update(name, |s| {
            s.cursor = cursor;
            s.failures = 0;
            s.last_success = Some(now());
        });
    }
}

/// The running export: one task per sink, plus one measuring the log.
#[derive(Debug)]
pub struct Exporter {
    tasks: Vec<JoinHandle<()>>,
    measure: Option<JoinHandle<()>>,
    draining: watch::Sender<bool>,
}

impl Exporter {
    /// Starts a task for every configured sink.
    pub fn start(app: &Shared, rolled_back: &HashMap<String, u64>) -> anyhow::Result<Self> {
        let (draining, drain_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for config in &app.config.sinks {
            let task = Task {
                app: app.clone(),
                name: config.name().to_owned(),
                kind: config.kind(),
                draining: drain_rx.clone(),
                start_at: rolled_back.get(config.name()).copied(),
                failures: FailureEvents::default(),
            };
            app.export.lock().sinks.push(SinkFigures {
                name: task.name.clone(),
                kind: task.kind,
                destination: config.destination(),
                cursor: 0,
                failures: 0,
                last_error: None,
                last_success: None,
            });
            tasks.push(match config {
                SinkConfig::File(c) => tokio::spawn(task.run(file::FileSink::new(c))),
                SinkConfig::Syslog(c) => tokio::spawn(task.run(syslog::SyslogSink::new(c))),
                SinkConfig::Webhook(c) => tokio::spawn(task.run(webhook::WebhookSink::new(c)?)),
            });
        }
        let measure = (!tasks.is_empty()).then(|| tokio::spawn(measure(app.clone())));
        Ok(Self {
            tasks,
            measure,
            draining,
        })
    }

    /// Lets every sink deliver what the log holds now, for at most five seconds, then stops
    /// them. What is left is sent on the next start.
    pub async fn flush(self) {
        if let Some(m) = &self.measure {
            m.abort();
        }
        let _ = self.draining.send(true);
        let deadline = tokio::time::Instant::now() + FLUSH_LIMIT;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Keeps the log size in the status current, so lag shows even while sinks are stuck.
async fn measure(app: Shared) {
    let mut head = 0;
    loop {
        match log_head(&app, head).await {
            Ok(h) => head = h,
            Err(e) => tracing::warn!(error = %e, "cannot measure the audit log for export"),
        }
        app.export.saw(head);
        tokio::time::sleep(POLL).await;
    }
}

/// The latest sequence number in the audit log, read on from `known` (when nothing is known
/// yet, from the latest checkpoint: everything it covers exists) rather than from the start.
pub async fn log_head(app: &Shared, known: u64) -> Result<u64, warden_store::Error> {
    let mut head = match known {
        0 => app.store.latest_checkpoint().await?.map_or(0, |c| c.size),
        known => known,
    };
    loop {
        let leaves = app.store.audit_leaves(head, HEAD_BATCH).await?;
        if let Some(last) = leaves.last() {
            head = last.seq;
        }
        if leaves.len() < HEAD_BATCH {
            return Ok(head);
        }
    }
}

/// When a sink's failures are written to the audit log: the first at once, then at most one
/// event every [`FAILURE_EVENT_EVERY`], naming how many failures there were since the last one.
/// Each event is itself exported, through the very sink that fails: one event per failure, or per
/// streak of failures, would let a sink that fails every other batch (a flapping receiver)
/// append events without end, each new one failing again. A success does not re-arm it; only
/// time does.
#[derive(Debug, Default)]
struct FailureEvents {
    /// When the last event was appended.
    said_at: Option<Instant>,
    /// Failures since then, not named in an event yet.
    unsaid: u64,
    /// The last of them.
    last_error: String,
}

impl FailureEvents {
    /// Counts a failure at `now`; returns how many failures to name in an event now, if one is
    /// due.
    fn failed(&mut self, error: &str, now: Instant) -> Option<u64> {
        self.unsaid += 1;
        error.clone_into(&mut self.last_error);
        self.due(now)
    }

    /// How many failures to name in an event at `now`, if one is due: some were not named yet,
    /// and the last event is [`FAILURE_EVENT_EVERY`] old, or there was none.
    fn due(&mut self, now: Instant) -> Option<u64> {
        let recent = self
            .said_at
            .is_some_and(|at| now.saturating_duration_since(at) < FAILURE_EVENT_EVERY);
        if self.unsaid == 0 || recent {
            return None;
        }
        self.said_at = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// One sink's export loop.
struct Task {
    app: Shared,
    name: String,
    kind: &'static str,
    /// Turns true at shutdown: deliver what is there, then stop.
    draining: watch::Receiver<bool>,
    /// Where to export from, when the log ends before the stored cursor (see [`rolled_back`]).
    start_at: Option<u64>,
    /// Which failures are still to be audited.
    failures: FailureEvents,
}

/// Where each sink must export from when the log was rolled back under it: the log ends before
/// the cursor stored in the database (the log was cut short in place), or before an event the
/// sink is known to have outside the database ([`mark::delivered`]), or holds another event at
/// that sequence number (a restored backup, its cursor restored with it). A log never shrinks
/// nor changes, so any of these is said at once, in the server's log and the audit log, and
/// everything from the log's end on is exported, beside what the sink holds of the history that
/// was replaced. A sink known nowhere outside the database (new, or first started by a version
/// that kept no mark) has nothing to compare. Run at start, before the server writes its first
/// event.
pub async fn rolled_back(app: &Shared) -> anyhow::Result<HashMap<String, u64>> {
    let last = app.store.last_seq().await?;
    let mut from = HashMap::new();
    let mut events = Vec::new();
    for config in &app.config.sinks {
        let name = config.name();
        let stored = app.store.sink_cursor(name).await?;
        let mut details = serde_json::json!({ "sink": name, "log_ends_at": last });
        let why = if stored > last {
            details["cursor"] = stored.into();
            format!(
                "the audit log ends at event {last}, but sink {name} has exported up to {stored}"
            )
        } else {
            let mut why = None;
            for (m, source) in mark::delivered(&app.config.data_dir, config) {
                if m.seq > last {
                    details["cursor"] = m.seq.into();
                    why = Some(format!(
                        "the audit log ends at event {last}, but sink {name} has exported up to {} (as {} says)",
                        m.seq,
                        source.display()
                    ));
                    break;
                }
                let held = app
                    .store
                    .leaf_hashes(m.seq.saturating_sub(1), m.seq)
                    .await?;
                // Archived with its whole block, the event's hash is gone: nothing to compare.
                if let Some(h) = held.first().filter(|h| **h != m.hash) {
                    details["cursor"] = m.seq.into();
                    details["exported_leaf_hash"] = hex::encode(m.hash).into();
                    details["log_leaf_hash"] = hex::encode(h).into();
                    why = Some(format!(
                        "sink {name} has exported event {} with leaf hash {} (as {} says), but the audit log's event {} has leaf hash {}",
                        m.seq,
                        hex::encode(m.hash),
                        source.display(),
                        m.seq,
                        hex::encode(h)
                    ));
                    break;
                }
            }
            match why {
                Some(why) => why,
                None => continue,
            }
        };
        let why = format!(
            "{why}: the log was rolled back (a restored backup, or tampering); exporting from {} on",
            last + 1
        );
        tracing::error!(sink = %name, "{why}");
        events.push(
            Event::new(Code::ExportFailed, Actor::system(), now())
                .failed("log_rolled_back", why)
                .details(details),
        );
        from.insert(name.to_owned(), last);
    }
    if !events.is_empty() {
        app.store.append(events).await?;
    }
    Ok(from)
}

impl Task {
    async fn run<S: Sink>(mut self, mut sink: S) {
        let status = self.app.export.clone();
        let mut backoff = BACKOFF_MIN;
        let mut cursor = loop {
            match self.app.store.sink_cursor(&self.name).await {
                Ok(c) => break c,
                Err(e) => {
                    if !self
                        .fail(&format!("cannot read the cursor: {e}"), None, &mut backoff)
                        .await
                    {
                        return;
                    }
                }
            }
        };
        if let Some(start) = self.start_at {
            cursor = cursor.min(start);
        }
        // A sink added after an archive starts at the live log: what was archived before it
        // is in the archive's segments, not owed to it (nor counted in its lag).
        if let Ok(first) = self.app.store.first_seq().await {
            cursor = cursor.max(first.saturating_sub(1));
        }
        status.update(&self.name, |s| s.cursor = cursor);
        loop {
            // Failures left unsaid while the sink recovered (a flapping one) are said once
            // their time comes, whatever the sink does then.
            if let Some(count) = self.failures.due(Instant::now()) {
                self.audit_failures(count, None).await;
            }
            let leaves = match self.app.store.audit_leaves(cursor, sink.batch()).await {
                Ok(l) => l,
                Err(e) => {
                    if !self
                        .fail(
                            &format!("cannot read the audit log: {e}"),
                            None,
                            &mut backoff,
                        )
                        .await
                    {
                        return;
                    }
                    continue;
                }
            };
            let Some((last, last_hash)) = leaves.last().map(|l| (l.seq, l.hash)) else {
                if *self.draining.borrow() {
                    return;
                }
                // Woken early by shutdown: look once more, then stop when nothing is left.
                self.pause(POLL).await;
                continue;
            };
            status.saw(last);
            // The same events until they are delivered: skipping would leave a gap.
            while let Err(e) = sink.deliver(&leaves).await {
                if !self.fail(&e, Some(cursor + 1), &mut backoff).await {
                    return;
                }
            }
            while let Err(e) = self.app.store.set_sink_cursor(&self.name, last).await {
                // Delivered but not recorded: they would be sent again, which is allowed.
                if !self
                    .fail(&format!("cannot store the cursor: {e}"), None, &mut backoff)
                    .await
                {
                    return;
                }
            }
            let mark = mark::Mark {
                seq: last,
                hash: last_hash,
            };
            if let Err(e) = mark::write(&self.app.config.data_dir, &self.name, mark).await {
                // The database has the cursor, so nothing is sent twice or skipped; only a
                // rollback from here on would go unseen until the next delivery writes it.
                tracing::warn!(sink = %self.name, error = %e, "cannot keep the export cursor beside the database");
            }
            cursor = last;
            status.delivered(&self.name, cursor);
            backoff = BACKOFF_MIN;
        }
    }

    /// Records a failure, audits it when an event is due (the first, then at most one every
    /// five minutes: see [`FailureEvents`], so that neither a dead sink nor a flapping one can
    /// flood the log it exports), and waits out the backoff. Returns false when the task
    /// should stop instead: during shutdown a failing sink gives up at once, and the events it
    /// missed are sent on the next start.
    async fn fail(&mut self, error: &str, pending: Option<u64>, backoff: &mut Duration) -> bool {
        self.app.export.failed(&self.name, error);
        if *self.draining.borrow() {
            tracing::warn!(sink = %self.name, error, "audit export failed at shutdown; resuming at the next start");
            return false;
        }
        tracing::warn!(sink = %self.name, error, "audit export failed; retrying");
        if let Some(count) = self.failures.failed(error, Instant::now()) {
            self.audit_failures(count, pending).await;
        }
        let wait = *backoff;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        self.pause(wait).await
    }

    /// Appends the `audit.export_failed` event naming the last `count` failures, the last of
    /// which was [`FailureEvents::last_error`]; `pending`: the first event not delivered, when
    /// the sink is failing now.
    async fn audit_failures(&self, count: u64, pending: Option<u64>) {
        let error = &self.failures.last_error;
        let reason = match (count, pending) {
            (1, _) => format!("sink {} cannot deliver: {error}", self.name),
            (n, Some(_)) => format!(
                "sink {} cannot deliver: {error} ({n} failures since this sink's last such event; at most one is written every {} minutes)",
                self.name,
                FAILURE_EVENT_EVERY.as_secs() / 60
            ),
            (n, None) => format!(
                "sink {} failed {n} times since this sink's last such event (at most one is written every {} minutes), the last with: {error}; it has delivered since",
                self.name,
                FAILURE_EVENT_EVERY.as_secs() / 60
            ),
        };
        let event = Event::new(Code::ExportFailed, Actor::system(), now())
            .failed("export_failed", reason)
            .details(serde_json::json!({
                "sink": self.name,
                "kind": self.kind,
                "pending_from_seq": pending,
                "failures": count,
            }));
        if let Err(e) = self.app.store.append(vec![event]).await {
            tracing::error!(sink = %self.name, error = %e, "cannot audit an export failure");
        }
    }

    /// Sleeps for `d`; returns false if shutdown began meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.draining.changed() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_embed_the_leaf_bytes_unchanged() {
        let leaf = Leaf {
            seq: 7,
            data: r#"{"seq":7,"code":"W1000"}"#.to_owned(),
            hash: [0xab; 32],
        };
        let r = json_record(&leaf);
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["leaf_hash"], "ab".repeat(32));
        assert!(r.ends_with(&format!("\"event\":{}}}", leaf.data)));
    }

    /// A sink that fails every other batch gets one event, then one per five minutes naming
    /// every failure since: a success in between does not re-arm it.
    #[test]
    fn failures_are_audited_at_most_once_every_five_minutes() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut f = FailureEvents::default();
        assert_eq!(f.due(at(0)), None, "nothing failed yet");
        assert_eq!(f.failed("502", at(0)), Some(1));
        // Fails, recovers, fails again, every second for almost five minutes: nothing said.
        for s in 1..300 {
            assert_eq!(f.failed("502", at(s)), None, "at {s} s");
            assert_eq!(f.due(at(s)), None, "at {s} s");
        }
        assert_eq!(f.last_error, "502");
        // Then the 299 failures since the first event are named once, whatever comes next.
        assert_eq!(f.due(at(300)), Some(299));
        assert_eq!(f.due(at(301)), None);
        assert_eq!(f.failed("refused", at(301)), None);
        assert_eq!(f.failed("refused", at(599)), None);
        assert_eq!(f.failed("refused", at(600)), Some(3));
        assert_eq!(f.last_error, "refused");
        // A sink that then works says nothing more.
        assert_eq!(f.due(at(10_000)), None);
        // And one that fails again long after is said at once.
        assert_eq!(f.failed("down", at(20_000)), Some(1));
    }

    #[test]
    fn lag_is_measured_against_the_newest_event_seen() {
        let s = Status::default();
        s.lock().sinks.push(SinkFigures {
            name: "a".into(),
            kind: "file",
            destination: String::new(),
            cursor: 0,
            failures: 0,
            last_error: None,
            last_success: None,
        });
        s.saw(10);
        s.failed("a", "down");
        s.failed("a", "still down");
        let snap = s.snapshot();
        assert_eq!((snap.log_size, snap.sinks[0].failures), (10, 2));
        s.delivered("a", 12);
        let snap = s.snapshot();
        assert_eq!(
            (snap.log_size, snap.sinks[0].cursor, snap.sinks[0].failures),
            (12, 12, 0)
        );
    }
}
