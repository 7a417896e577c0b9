//! The live sessions: who is connected where, and the handles to watch and end them.
//!
//! Also keeps the counters a metrics endpoint reads: sessions active, recorded, recording
//! failures, and connections refused or closed to keep within the proxy's limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use warden_domain::{RequestId, RoleName, TargetName, UserName};

/// How much live output a slow watcher may lag behind before it misses some.
const WATCH_BUFFER: usize = 256;

/// A live session as listed.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub user: UserName,
    pub target: TargetName,
    pub role: RoleName,
    pub grant: RequestId,
    /// The Unix account on the target.
    pub login: String,
    /// `shell`, `exec` or `sftp`.
    pub kind: String,
    #[serde(with = "warden_domain::timestamp")]
    pub started_at: OffsetDateTime,
    #[serde(with = "warden_domain::timestamp")]
    pub grant_expires_at: OffsetDateTime,
    pub recorded: bool,
}

struct Live {
    info: SessionInfo,
    end: watch::Sender<Option<String>>,
    output: broadcast::Sender<Bytes>,
}

/// Every live session of this proxy.
#[derive(Default)]
pub struct SessionRegistry {
    live: Mutex<HashMap<String, Live>>,
    recorded_total: AtomicU64,
    recording_failures: AtomicU64,
    refusals: crate::limits::Refusals,
}

impl std::fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("active", &self.active())
            .finish()
    }
}

/// A session's side of its registration: told when to end, and where to copy output.
#[derive(Debug)]
pub(crate) struct Registration {
    pub end: watch::Receiver<Option<String>>,
    pub output: broadcast::Sender<Bytes>,
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn register(&self, info: SessionInfo) -> Registration {
        let (end_tx, end_rx) = watch::channel(None);
        let (output, _) = broadcast::channel(WATCH_BUFFER);
        if info.recorded {
            self.recorded_total.fetch_add(1, Ordering::Relaxed);
        }
        self.lock().insert(
            info.id.clone(),
            Live {
                info,
                end: end_tx,
                output: output.clone(),
            },
        );
        Registration {
            end: end_rx,
            output,
        }
    }

    pub(crate) fn unregister(&self, id: &str) {
        self.lock().remove(id);
    }

    pub(crate) fn recording_failed(&self) {
        self.recording_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The live sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<_> = self.lock().values().map(|l| l.info.clone()).collect();
        v.sort_by_key(|s| s.started_at);
        v
    }

    /// One live session.
    pub fn get(&self, id: &str) -> Option<SessionInfo> {
        self.lock().get(id).map(|l| l.info.clone())
    }

    /// Ends session `id`, telling its user `reason`; false if it is not live, or already
    /// being ended (two kills at once end it once, with the first one's reason).
    pub fn kill(&self, id: &str, reason: &str) -> bool {
        self.lock().get(id).is_some_and(|l| {
            l.end.send_if_modified(|end| {
                let first = end.is_none();
                if first {
                    *end = Some(reason.to_owned());
                }
                first
            })
        })
    }

    /// Ends every session opened under `grant`; returns how many.
    pub fn end_grant(&self, grant: RequestId, reason: &str) -> usize {
        let live = self.lock();
        let mut n = 0;
        for l in live.values().filter(|l| l.info.grant == grant) {
            l.end.send_replace(Some(reason.to_owned()));
            n += 1;
        }
        n
    }

    /// Ends every live session, telling its user `reason`; returns how many.
    pub fn end_all(&self, reason: &str) -> usize {
        let live = self.lock();
        for l in live.values() {
            l.end.send_replace(Some(reason.to_owned()));
        }
        live.len()
    }

    /// The live terminal output of session `id` from now on.
    pub fn watch(&self, id: &str) -> Option<broadcast::Receiver<Bytes>> {
        self.lock().get(id).map(|l| l.output.subscribe())
    }

    /// How many sessions are live.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    /// How many sessions were recorded since start.
    pub fn recorded_total(&self) -> u64 {
        self.recorded_total.load(Ordering::Relaxed)
    }

    /// How many sessions were refused or ended because their recording could not be written.
    pub fn recording_failures(&self) -> u64 {
        self.recording_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn refusals(&self) -> &crate::limits::Refusals {
        &self.refusals
    }

    /// How many connections (and session channels) were refused or closed since start to keep
    /// within the proxy's limits, by reason: `waiting_per_address`, `waiting_total`,
    /// `signed_in_per_user`, `signed_in_per_address`, `signed_in_total`,
    /// `sessions_per_connection`, `idle` (closed) and `accept_failed` (left unaccepted, such as
    /// when the process is out of file descriptors).
    pub fn connections_refused(&self) -> Vec<(&'static str, u64)> {
        self.refusals.totals()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, grant: u128, recorded: bool) -> SessionInfo {
        SessionInfo {
            id: id.into(),
            user: "alice".parse().unwrap(),
            target: "web".parse().unwrap(),
            role: "view".parse().unwrap(),
            grant: RequestId::from_uuid(uuid::Uuid::from_u128(grant)),
            login: "root".into(),
            kind: "shell".into(),
            started_at: OffsetDateTime::UNIX_EPOCH,
            grant_expires_at: OffsetDateTime::UNIX_EPOCH,
            recorded,
        }
    }

    #[test]
    fn ending_a_grant_ends_only_its_sessions() {
        let r = SessionRegistry::default();
        let a = r.register(info("a", 1, true));
        let b = r.register(info("b", 1, false));
        let c = r.register(info("c", 2, true));
        assert_eq!((r.active(), r.recorded_total()), (3, 2));
        assert_eq!(
            r.end_grant(RequestId::from_uuid(uuid::Uuid::from_u128(1)), "revoked"),
            2
        );
        assert_eq!(a.end.borrow().as_deref(), Some("revoked"));
        assert_eq!(b.end.borrow().as_deref(), Some("revoked"));
        assert!(c.end.borrow().is_none());
        assert!(r.kill("c", "terminated by admin"));
        assert!(!r.kill("c", "terminated by sam"), "ended once");
        assert_eq!(c.end.borrow().as_deref(), Some("terminated by admin"));
        r.unregister("a");
        assert!(!r.kill("a", "x"), "an ended session cannot be killed");
        assert!(r.watch("a").is_none());
        assert_eq!(r.list().len(), 2);
        r.recording_failed();
        assert_eq!(r.recording_failures(), 1);
    }
}
