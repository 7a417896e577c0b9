//! The background worker that expires grants, times out pending requests and revokes the
//! credentials of leases that are due.
//!
//! It sleeps until the earliest deadline in the store rather than polling on a fixed interval,
//! so a grant ends at its expiry, not up to a polling period later. Anything that may create an
//! earlier deadline wakes it. Expired grants left over from a crash or downtime are due at once
//! on start.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::state::{Shared, now};

/// Wakes the worker when a stored change may have brought its next deadline forward.
///
/// The worker notes when it wakes next; a change whose deadline is later leaves it asleep, so
/// a stream of hour-long grants does not cost a worker pass (and its reads) each. During a pass
/// the worker may already have read the deadlines, so then every change wakes it again.
#[derive(Debug)]
pub struct Wake {
    notify: Notify,
    /// When the worker wakes anyway, in Unix milliseconds; `i64::MAX` during a pass.
    next_ms: AtomicI64,
}

impl Default for Wake {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            next_ms: AtomicI64::new(i64::MAX),
        }
    }
}

impl Wake {
    /// Wakes the worker now.
    pub fn now(&self) {
        self.notify.notify_one();
    }

    /// Wakes the worker unless it wakes anyway by `deadline` (a change without one: never).
    pub fn by(&self, deadline: Option<OffsetDateTime>) {
        if deadline.is_some_and(|d| unix_ms(d) < self.next_ms.load(Ordering::SeqCst)) {
            self.notify.notify_one();
        }
    }

    /// Marks the start of a pass: from now on every change wakes the worker again.
    fn passing(&self) {
        self.next_ms.store(i64::MAX, Ordering::SeqCst);
    }

    /// Notes that the worker sleeps until `at` unless woken.
    fn sleeping_until(&self, at: OffsetDateTime) {
        self.next_ms.store(unix_ms(at), Ordering::SeqCst);
    }
}

/// Milliseconds since the Unix epoch, rounded down.
fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

/// Longest sleep, as a safety net against clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// Pause after a failed pass before trying again.
const RETRY: Duration = Duration::from_secs(1);

/// Credentials revoked at once, at most.
const REVOKING_AT_ONCE: usize = 32;

/// Runs until `stop` turns true. Each pass ends the requests that are due, then starts
/// revoking each due lease not already being revoked on a task of its own: a target that
/// hangs holds up its own revocations (each call bounded in time), never a grant's end on
/// record nor another target's revocation. A task that ends wakes the worker for what is due
/// next.
pub async fn run(app: Shared, mut stop: watch::Receiver<bool>) {
    let mut revoking = tokio::task::JoinSet::new();
    let mut in_flight = std::collections::HashSet::new();
    loop {
        app.wake.passing();
        while let Some(done) = revoking.try_join_next() {
            if let Ok(grant) = done {
                in_flight.remove(&grant);
            }
        }
        let ended = app.end_due_requests().await;
        let room = REVOKING_AT_ONCE.saturating_sub(in_flight.len());
        // Those in flight are among the due ones, so as many more are read.
        match app.due_leases(in_flight.len() + room).await {
            Ok(due) => {
                let new: Vec<_> = due
                    .into_iter()
                    .filter(|l| !in_flight.contains(&l.grant))
                    .take(room)
                    .collect();
                for lease in new {
                    let grant = lease.grant;
                    in_flight.insert(grant);
                    let app = app.clone();
                    revoking.spawn(async move {
                        app.revoke_lease(lease).await;
                        app.wake.now();
                        grant
                    });
                }
            }
            Err(e) => tracing::error!(error = %e, "worker cannot read due leases"),
        }
        let sleep = match ended {
            Ok(handled) => match app.store.next_due().await {
                Ok(Some(next)) => {
                    let wait = next - now();
                    if wait.is_negative() {
                        // Still due after a pass: more than one batch was due (go on at once),
                        // or a revocation is under way or failed (look again after a pause).
                        if handled > 0 { Duration::ZERO } else { RETRY }
                    } else {
                        Duration::try_from(wait).unwrap_or(MAX_SLEEP).min(MAX_SLEEP)
                    }
                }
                Ok(None) => MAX_SLEEP,
                Err(e) => {
                    tracing::error!(error = %e, "worker cannot read deadlines");
                    RETRY
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "worker pass failed");
                RETRY
            }
        };
        app.wake.sleeping_until(now() + sleep);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = app.wake.notify.notified() => {}
            _ = stop.changed() => break,
        }
    }
    // Revocations under way are recorded before the server's last checkpoint.
    while revoking.join_next().await.is_some() {}
}

/// How often accounts at targets are compared with live leases.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// Removes orphaned accounts on start and then every minute, until `stop`.
pub async fn reconcile(app: Shared, mut stop: watch::Receiver<bool>) {
    loop {
        match app.reconcile().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(removed = n, "reconciliation removed orphaned accounts"),
            Err(e) => tracing::error!(error = %e, "reconciliation failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often pending requests are decided again.
const REDECIDE_EVERY: Duration = Duration::from_secs(60);

/// Decides the pending requests again at start and then every minute, until `stop`: a restart
/// with other users or groups, or a rule on the time of day, may have changed what they need
/// ([`crate::broker::redecide_pending`]).
pub async fn redecide(app: Shared, mut stop: watch::Receiver<bool>) {
    loop {
        crate::broker::redecide_pending(&app).await;
        tokio::select! {
            _ = tokio::time::sleep(REDECIDE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Seals events past the configured retention into archive segments, daily, until `stop`.
pub async fn retention(app: Shared, mut stop: watch::Receiver<bool>) {
    let Some(days) = app.config.audit_retention_days else {
        return;
    };
    loop {
        let before = now() - time::Duration::days(i64::from(days));
        match app
            .archive(before, warden_domain::audit::Actor::system())
            .await
        {
            Ok(Some(a)) => {
                tracing::info!(from = a.from, to = a.to, file = %a.file, "audit events archived")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "audit retention failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    /// Whether a wake-up is waiting for the worker (and takes it).
    fn woken(wake: &Wake) -> bool {
        wake.notify.notified().now_or_never().is_some()
    }

    #[test]
    fn wakes_only_for_an_earlier_deadline_while_asleep_and_always_during_a_pass() {
        let wake = Wake::default();
        let t = now();
        let minute = time::Duration::minutes(1);
        // Before the first pass has planned anything, every change wakes it.
        wake.by(Some(t + minute * 60));
        assert!(woken(&wake));

        wake.sleeping_until(t + minute);
        wake.by(Some(t + minute * 60));
        assert!(!woken(&wake), "a later deadline must not wake the worker");
        wake.by(None);
        assert!(
            !woken(&wake),
            "a change without a deadline must not wake it"
        );
        wake.by(Some(t + time::Duration::seconds(30)));
        assert!(woken(&wake), "an earlier deadline must wake it");

        wake.passing();
        wake.by(Some(t + minute * 60));
        assert!(
            woken(&wake),
            "during a pass every change must wake it again"
        );

        wake.sleeping_until(t + minute);
        wake.now();
        assert!(woken(&wake));
    }
}
