//! Group commit: one thread owns the write connection and commits many callers' changes in one
//! transaction, so the cost of making a commit durable (an fsync) is shared.
//!
//! Each caller's change runs inside its own savepoint: a change that fails is rolled back alone
//! and its caller gets the error, while the rest of the batch commits. A caller hears back only
//! after the whole transaction committed.
//!
//! Checkpoints (copying the write-ahead log back into the database file) run on a thread of
//! their own. Left to SQLite, the commit that crosses the log's size limit would do one itself,
//! and that caller would wait for megabytes to be written and synced: the slowest percent of
//! all requests would be exactly those. The writer only copies the little the checkpointer
//! could not, so that the log can restart.

use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::{Error, Result};

type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
/// A caller's change, run on the write connection, or told why its batch's transaction could
/// not begin; returns whether the change stands to be committed (it did not fail and roll
/// back to its savepoint), and what to do once the commit is known.
type Job = Box<dyn FnOnce(std::result::Result<&Connection, &str>) -> (bool, Completion) + Send>;

/// Most changes committed in one transaction.
const MAX_BATCH: usize = 512;

/// Transactions committed between two nudges to the checkpointer. A transaction adds about
/// twenty pages to the log, so the log stays within some tens of megabytes.
const CHECKPOINT_EVERY: u32 = 256;

/// Handle to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// How the last transaction tried ended, and when.
    last: Last,
    /// When the writer took the batch it works on, while it does.
    busy: Busy,
}

type Last = std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, Ended)>>>;
type Busy = std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>;

/// How a transaction ended.
#[derive(Debug, Clone)]
enum Ended {
    Committed,
    /// Why it failed to begin or commit (a full disk, a file made read-only).
    Failed(String),
}

/// How recent a commit shows the store takes writes: under load every readiness check is
/// answered by the commits of the moment, and an idle store proves it with one of its own.
const COMMITTED_LATELY: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a failed transaction is reported when none has been tried since: a small write of
/// a readiness check's own may pass where the changes callers make do not.
const FAILURE_SHOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a batch may take before the store's writes are said to be stalled (a frozen or
/// hung filesystem, or another process holding the database's write lock): also how long a
/// readiness check waits for a write of its own. A batch takes milliseconds.
pub(crate) const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// What the last transaction says of the store's writes, for readiness.
pub(crate) enum Writes {
    /// One committed within [`COMMITTED_LATELY`].
    Taken,
    /// One failed within [`FAILURE_SHOWN`], or the one under way has taken longer than
    /// [`STALLED_AFTER`], for this reason.
    Failing(String),
    /// Nothing recent either way: a write of its own tells.
    Unknown,
}

impl Writer {
    /// Starts the writer thread that owns `conn` and the thread that checkpoints through
    /// `checkpoints`, a second connection to the same database.
    pub(crate) fn start(conn: Connection, checkpoints: Connection) -> Result<Self> {
        let failed = |e: &dyn std::fmt::Display| {
            Error::Backend(format!("cannot start the storage writer: {e}"))
        };
        // The checkpointer does the work SQLite would otherwise do inside a commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| failed(&e))?;
        let (nudge, nudged) = mpsc::sync_channel::<()>(1);
        let (done, checkpointed) = mpsc::channel::<()>();
        let last = Last::default();
        let ended = last.clone();
        let busy = Busy::default();
        let working = busy.clone();
        let spawned = thread::Builder::new()
            .name("warden-store-checkpoint".into())
            .spawn(move || checkpoint(&checkpoints, &nudged, &done))
            .and_then(|_| {
                let (jobs, rx) = mpsc::channel::<Job>();
                thread::Builder::new()
                    .name("warden-store-writer".into())
                    .spawn(move || run(conn, rx, nudge, checkpointed, &ended, &working))
                    .map(|_| Self { jobs, last, busy })
            });
        spawned.map_err(|e| failed(&e))
    }

    /// What the last transaction tried says of the store's writes.
    pub(crate) fn writes(&self) -> Writes {
        // A batch that does not end says more than how the one before it ended.
        let busy = self.busy.lock().ok().and_then(|b| *b);
        if let Some(since) = busy.filter(|since| since.elapsed() >= STALLED_AFTER) {
            return Writes::Failing(format!(
                "storage writes are stalled: a transaction has been under way for {} s without ending (the data dir's filesystem frozen or hung, or the database locked by another process); writes wait until it ends",
                since.elapsed().as_secs()
            ));
        }
        let last = self.last.lock().ok().and_then(|l| l.clone());
        match last {
            Some((at, Ended::Committed)) if at.elapsed() < COMMITTED_LATELY => Writes::Taken,
            Some((at, Ended::Failed(why))) if at.elapsed() < FAILURE_SHOWN => Writes::Failing(why),
            _ => Writes::Unknown,
        }
    }

    /// Runs `change` in the next batch and returns its result once the batch is durable.
    pub(crate) async fn write<R, F>(&self, change: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(
            move |conn: std::result::Result<&Connection, &str>| -> (bool, Completion) {
                let outcome = match conn {
                    Ok(conn) => savepoint(conn, change),
                    Err(why) => Err(Error::backend(format!("cannot begin a transaction: {why}"))),
                };
                let stands = outcome.is_ok();
                let complete: Completion = Box::new(move |commit_error: Option<&str>| {
                    let result = match commit_error {
                        Some(e) => Err(Error::backend(format!("commit failed: {e}"))),
                        None => outcome,
                    };
                    // The caller may have gone away; the change is committed regardless.
                    let _ = tx.send(result);
                });
                (stands, complete)
            },
        );
        self.jobs
            .send(job)
            .map_err(|_| Error::Backend("the storage writer has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Backend("the storage writer stopped mid-write".into()))?
    }
}

/// Runs a parameterless statement, parsed once per connection.
fn run_cached(conn: &Connection, sql: &str) -> Result<()> {
    execute_cached(conn, sql).map_err(|e| Error::Backend(e.to_string()))
}

fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
}

fn savepoint<R>(conn: &Connection, change: impl FnOnce(&Connection) -> Result<R>) -> Result<R> {
    run_cached(conn, "SAVEPOINT change")?;
    let outcome = change(conn);
    if outcome.is_err() {
        run_cached(conn, "ROLLBACK TO change")?;
    }
    run_cached(conn, "RELEASE change")?;
    outcome
}

/// Checkpoints the log each time the writer nudges, and tells the writer when it is done.
/// Passive: it never blocks the writer or a reader, and copies what no reader still needs.
fn checkpoint(conn: &Connection, nudged: &mpsc::Receiver<()>, done: &mpsc::Sender<()>) {
    while nudged.recv().is_ok() {
        match passive_checkpoint(conn) {
            Ok(()) => {
                if done.send(()).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "checkpoint failed; the write-ahead log keeps growing until one succeeds");
            }
        }
    }
}

fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

fn run(
    conn: Connection,
    rx: mpsc::Receiver<Job>,
    nudge: mpsc::SyncSender<()>,
    checkpointed: mpsc::Receiver<()>,
    last: &Last,
    busy: &Busy,
) {
    let record = |ended: Ended| {
        if let Ok(mut l) = last.lock() {
            *l = Some((std::time::Instant::now(), ended));
        }
    };
    let work = |since: Option<std::time::Instant>| {
        if let Ok(mut b) = busy.lock() {
            *b = since;
        }
    };
    let mut since_checkpoint = 0;
    loop {
        let Ok(first) = rx.recv() else { break };
        work(Some(std::time::Instant::now()));
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = execute_cached(&conn, "BEGIN IMMEDIATE") {
            let msg = e.to_string();
            record(Ended::Failed(format!("cannot begin a transaction: {msg}")));
            tracing::error!(error = %msg, "cannot begin a storage transaction");
            work(None);
            // Run nothing; tell every caller why.
            for job in batch {
                job(Err(&msg)).1(None);
            }
            continue;
        }
        let mut wrote = false;
        let completions: Vec<Completion> = batch
            .into_iter()
            .map(|job| {
                let (stands, complete) = job(Ok(&conn));
                wrote |= stands;
                complete
            })
            .collect();
        let commit = execute_cached(&conn, "COMMIT").map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = execute_cached(&conn, "ROLLBACK");
        }
        let err = commit.err();
        match &err {
            Some(e) => record(Ended::Failed(format!("commit failed: {e}"))),
            // A batch whose every change failed commits nothing, and shows nothing of the disk.
            None if wrote => record(Ended::Committed),
            None => {}
        }
        // Ended before any caller hears so: one that asks at once finds no batch under way.
        work(None);
        for c in completions {
            c(err.as_deref());
        }
        since_checkpoint += 1;
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            // Full means a nudge is already waiting.
            let _ = nudge.try_send(());
        }
        if checkpointed.try_recv().is_ok() {
            // The log restarts from its beginning only if it was all copied when a write
            // begins, and under load the writer has always added to it since the checkpointer
            // began. Copying that little rest here, between two batches, lets it restart.
            if let Err(e) = passive_checkpoint(&conn) {
                tracing::warn!(error = %e, "checkpoint failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_that_does_not_end_shows_writes_stalled_until_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        let w = Writer::start(conn, Connection::open(&path).unwrap()).unwrap();
        let sql = |c: &Connection, sql: &str| {
            c.execute_batch(sql)
                .map_err(|e| Error::Backend(e.to_string()))
        };
        w.write(move |c| sql(c, "CREATE TABLE t (x)"))
            .await
            .unwrap();
        assert!(matches!(w.writes(), Writes::Taken));
        // A change that hangs, as one on a frozen filesystem does.
        let (release, held) = mpsc::channel::<()>();
        let stuck = tokio::spawn({
            let w = w.clone();
            async move {
                w.write(move |c| {
                    let _ = held.recv();
                    sql(c, "INSERT INTO t VALUES (1)")
                })
                .await
            }
        });
        tokio::time::sleep(STALLED_AFTER / 2).await;
        assert!(matches!(w.writes(), Writes::Taken), "not stalled yet");
        tokio::time::sleep(STALLED_AFTER).await;
        match w.writes() {
            Writes::Failing(why) => assert!(
                why.starts_with("storage writes are stalled: a transaction has been under way for"),
                "{why}"
            ),
            _ => panic!("a batch under way for longer than {STALLED_AFTER:?} is not stalled"),
        }
        release.send(()).unwrap();
        stuck.await.unwrap().unwrap();
        assert!(matches!(w.writes(), Writes::Taken));
    }
}
