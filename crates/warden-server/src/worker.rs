//! The background worker that expires grants, times out pending requests and revokes the
//! credentials of leases that are due.
//!
//! It sleeps until the earliest deadline in the store rather than polling on a fixed interval,
//! so a grant ends at its expiry, not up to a polling period later; the leases whose
//! revocation is under way (at a target that hangs, say) are left out, each waking it as it
//! ends. Anything that may create an earlier deadline wakes it. Expired grants left over from a crash or downtime are due at once
//! on start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tokio::task::{self, JoinSet};
use warden_domain::{Lease, TargetName};

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
/// Credentials revoked at once at one target, at most: a target that hangs holds this many of
/// [`REVOKING_AT_ONCE`] while its calls wait out their timeouts, and the rest go to the others.
const REVOKING_PER_TARGET: usize = 4;
/// How long after its last answer a target that leases wait for is asked again.
const ASK_EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop` turns true. Each pass ends the requests that are due, then starts
/// revoking due leases not already being revoked, each on a task of its own: a target that
/// hangs holds up its own revocations (each call bounded in time), never a grant's end on
/// record nor another target's revocation. A task that ends wakes the worker for what is due
/// next. Targets that leases wait for (their last attempt could not reach them) are asked
/// whether they answer again, so that their accounts go as soon as they do.
pub async fn run(app: Shared, mut stop: watch::Receiver<bool>) {
    let mut revoking = Revoking::default();
    let mut asking = Asking::default();
    loop {
        app.wake.passing();
        revoking.reap();
        asking.reap();
        let pass_began = now();
        let ended = app.end_due_requests().await;
        // Every lease due by then is read (and those due a moment later may be): it is then
        // under way, or waits for a revocation at its target (or any) to end, which wakes the
        // worker.
        let leases_read = now();
        let leases_read = match app.due_leases(REVOKING_PER_TARGET).await {
            Ok(due) => {
                revoking.start(&app, due);
                Some(leases_read)
            }
            Err(e) => {
                tracing::error!(error = %e, "worker cannot read due leases");
                None
            }
        };
        let waiting = match app.waiting_for_targets().await {
            Ok(waiting) => asking.start(&app, waiting, &revoking),
            Err(e) => {
                tracing::error!(error = %e, "worker cannot read the leases waiting for targets");
                true
            }
        };
        let sleep = pause_after(&app, ended, pass_began, leases_read).await;
        let sleep = if waiting { sleep.min(ASK_EVERY) } else { sleep };
        app.wake.sleeping_until(now() + sleep);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = app.wake.notify.notified() => {}
            _ = stop.changed() => break,
        }
    }
    // Revocations under way are recorded before the server's last checkpoint; questions to
    // targets are dropped.
    revoking.finish().await;
}

/// How long the worker may sleep after a pass that began at `pass_began`, ended `ended`
/// requests and read the leases due by `leases_read`: until the next deadline of what is not
/// under way, at once when more were due than one pass ends or something came due during the
/// pass, or after a pause when something failed. Leases read as due are left out: their
/// revocations are under way (or wait for one to end), each waking the worker as it ends, and
/// their past deadlines would hide every later one, another grant's expiry say.
async fn pause_after(
    app: &Shared,
    ended: Result<usize, crate::broker::Error>,
    pass_began: OffsetDateTime,
    leases_read: Option<OffsetDateTime>,
) -> Duration {
    let handled = match ended {
        Ok(handled) => handled,
        Err(e) => {
            tracing::error!(error = %e, "worker pass failed");
            return RETRY;
        }
    };
    // Due leases that could not be read: look again after a pause.
    let Some(leases_read) = leases_read else {
        return RETRY;
    };
    match app.store.next_due_after(leases_read).await {
        Ok(Some(next)) => sleep_until(next, now(), pass_began, handled),
        Ok(None) => MAX_SLEEP,
        Err(e) => {
            tracing::error!(error = %e, "worker cannot read deadlines");
            RETRY
        }
    }
}

/// How long to sleep at `now` for deadline `next`, after a pass that began at `pass_began` and
/// ended `handled` requests.
fn sleep_until(
    next: OffsetDateTime,
    now: OffsetDateTime,
    pass_began: OffsetDateTime,
    handled: usize,
) -> Duration {
    let wait = next - now;
    if !wait.is_negative() {
        return Duration::try_from(wait).unwrap_or(MAX_SLEEP).min(MAX_SLEEP);
    }
    if next > pass_began {
        // Came due during the pass, after the pass had read what was due.
        Duration::ZERO
    } else if handled > 0 {
        // More were due than one pass ends.
        Duration::ZERO
    } else {
        // Due before the pass, and still due after it: it failed, and is looked at again after
        // a pause.
        RETRY
    }
}

/// The revocations under way, each on a task of its own.
#[derive(Default)]
struct Revoking {
    tasks: JoinSet<()>,
    /// The lease each task revokes, as it was read.
    what: HashMap<task::Id, Lease>,
}

impl Revoking {
    /// Forgets the revocations that ended.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.what.remove(&task_id(done));
        }
    }

    /// How many revocations are under way at `target`.
    fn at(&self, target: &TargetName) -> usize {
        self.what.values().filter(|l| l.target == *target).count()
    }

    /// Whether a revocation is under way where `lease`'s account is made.
    fn beside(&self, lease: &Lease) -> bool {
        self.what.values().any(|l| l.made_beside(lease))
    }

    /// Starts revoking the `due` leases (oldest first) not under way yet, while there is room:
    /// each time for the target with the fewest under way, none past its share. A slot that a
    /// hanging target gives up goes to a target that has none under way before it goes back.
    fn start(&mut self, app: &Shared, due: Vec<Lease>) {
        let mut waiting: Vec<Lease> = due
            .into_iter()
            .filter(|l| {
                !self
                    .what
                    .values()
                    .any(|under_way| under_way.grant == l.grant)
            })
            .collect();
        while self.tasks.len() < REVOKING_AT_ONCE {
            let Some(i) = next_to_start(&waiting, |t| self.at(t)) else {
                break;
            };
            self.spawn(app, waiting.remove(i));
        }
    }

    fn spawn(&mut self, app: &Shared, lease: Lease) {
        let (app, what) = (app.clone(), lease.clone());
        let task = self.tasks.spawn(async move {
            app.revoke_lease(lease).await;
            app.wake.now();
        });
        self.what.insert(task.id(), what);
    }

    /// Waits for the revocations under way.
    async fn finish(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Which of the `waiting` leases (oldest first) to revoke next: the oldest of those whose target
/// has the fewest revocations under way (`at`), and none whose target has its share.
fn next_to_start(waiting: &[Lease], at: impl Fn(&TargetName) -> usize) -> Option<usize> {
    waiting
        .iter()
        .enumerate()
        .map(|(i, l)| (at(&l.target), i))
        .filter(|(under_way, _)| *under_way < REVOKING_PER_TARGET)
        .min()
        .map(|(_, i)| i)
}

/// Questions under way to targets that leases wait for: whether they answer again where those
/// leases' accounts are made.
#[derive(Default)]
struct Asking {
    tasks: JoinSet<()>,
    /// The lease each task asks about.
    what: HashMap<task::Id, Lease>,
    /// When each question last ended, answered or not, by the lease it asked about.
    last: Vec<(Lease, Instant)>,
}

impl Asking {
    /// Notes the questions that ended, and when.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            if let Some(asked) = self.what.remove(&task_id(done)) {
                self.last.retain(|(l, _)| !l.made_beside(&asked));
                self.last.push((asked, Instant::now()));
            }
        }
    }

    /// Asks where each lease of `waiting` is made, unless [`Asking::may_ask`] says not now.
    /// Returns whether any lease waits for a target.
    fn start(&mut self, app: &Shared, waiting: Vec<Lease>, revoking: &Revoking) -> bool {
        self.last
            .retain(|(asked, _)| waiting.iter().any(|l| l.made_beside(asked)));
        let any = !waiting.is_empty();
        for lease in waiting {
            if self.may_ask(&lease, revoking) {
                let (app, what) = (app.clone(), lease.clone());
                let task = self.tasks.spawn(async move {
                    if let Err(e) = app.ask_target(&lease).await {
                        tracing::warn!(target = %lease.target, error = %e, "could not ask a target whether it answers again");
                    }
                });
                self.what.insert(task.id(), what);
            }
        }
        any
    }

    /// Whether the target may be asked now where `lease`'s account is made: no question is
    /// under way there, nor a revocation (which tells as much), and the last question there
    /// ended [`ASK_EVERY`] ago.
    fn may_ask(&self, lease: &Lease, revoking: &Revoking) -> bool {
        !self.what.values().any(|l| l.made_beside(lease))
            && !revoking.beside(lease)
            && self
                .last
                .iter()
                .find(|(l, _)| l.made_beside(lease))
                .is_none_or(|(_, at)| at.elapsed() >= ASK_EVERY)
    }
}

/// The id of a task that ended, however it ended.
fn task_id(done: Result<(task::Id, ()), task::JoinError>) -> task::Id {
    done.map_or_else(|e| e.id(), |(id, ())| id)
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

    /// A lease of `target`'s, due for revocation.
    fn due_at(target: &str) -> Lease {
        let at = now();
        let mut l = Lease::intent(
            warden_domain::RequestId::from_uuid(uuid::Uuid::now_v7()),
            "alice".parse().unwrap(),
            target.parse().unwrap(),
            "read".parse().unwrap(),
            "w_alice_1".into(),
            at,
            at,
        );
        l.start_revoking(at);
        l
    }

    #[test]
    fn a_busy_target_lets_the_others_go_first_and_keeps_to_its_share() {
        let waiting = [due_at("hung"), due_at("hung"), due_at("up"), due_at("up")];
        let under_way = |hung: usize, up: usize| {
            move |t: &TargetName| if t.as_str() == "hung" { hung } else { up }
        };
        assert_eq!(
            next_to_start(&waiting, under_way(0, 0)),
            Some(0),
            "the oldest"
        );
        assert_eq!(next_to_start(&waiting, under_way(1, 0)), Some(2));
        assert_eq!(next_to_start(&waiting, under_way(2, 2)), Some(0));
        assert_eq!(
            next_to_start(&waiting, under_way(REVOKING_PER_TARGET, 3)),
            Some(2)
        );
        assert_eq!(
            next_to_start(
                &waiting,
                under_way(REVOKING_PER_TARGET, REVOKING_PER_TARGET)
            ),
            None
        );
    }

    #[test]
    fn sleeps_until_the_next_deadline_and_after_a_pause_only_for_what_failed() {
        let began = now();
        let ms = time::Duration::milliseconds;
        let at = began + ms(40);
        assert_eq!(
            sleep_until(at + ms(500), at, began, 0),
            Duration::from_millis(500)
        );
        assert_eq!(
            sleep_until(at + time::Duration::hours(1), at, began, 0),
            MAX_SLEEP
        );
        // Came due while the pass ran, after it read what was due: at once.
        assert_eq!(sleep_until(began + ms(10), at, began, 0), Duration::ZERO);
        // Due before the pass and still there: more than a pass ends, or it failed.
        assert_eq!(sleep_until(began - ms(10), at, began, 3), Duration::ZERO);
        assert_eq!(sleep_until(began - ms(10), at, began, 0), RETRY);
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
