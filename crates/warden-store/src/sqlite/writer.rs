//! Group commit: one thread owns the write connection and commits many callers' changes in one
//! transaction, so the cost of making a commit durable (an fsync) is shared.
//!
//! Each caller's change runs inside its own savepoint: a change that fails is rolled back alone
//! and its caller gets the error, while the rest of the batch commits. A caller hears back only
//! after the whole transaction committed.

use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::{Error, Result};

type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// Most changes committed in one transaction.
const MAX_BATCH: usize = 512;

/// Handle to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread that owns `conn`.
    pub(crate) fn start(conn: Connection) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("warden-store-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Self { jobs })
    }

    /// Runs `change` in the next batch and returns its result once the batch is durable.
    pub(crate) async fn write<R, F>(&self, change: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(move |conn: &Connection| -> Completion {
            let outcome = savepoint(conn, change);
            Box::new(move |commit_error: Option<&str>| {
                let result = match commit_error {
                    Some(e) => Err(Error::Backend(format!("commit failed: {e}"))),
                    None => outcome,
                };
                // The caller may have gone away; the change is committed regardless.
                let _ = tx.send(result);
            })
        });
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

fn run(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = execute_cached(&conn, "BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in batch {
                // Run nothing; tell every caller why.
                drop(job);
                tracing::error!(error = %msg, "cannot begin a storage transaction");
            }
            continue;
        }
        let completions: Vec<Completion> = batch.into_iter().map(|job| job(&conn)).collect();
        let commit = execute_cached(&conn, "COMMIT").map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = execute_cached(&conn, "ROLLBACK");
        }
        let err = commit.err();
        for c in completions {
            c(err.as_deref());
        }
    }
}
