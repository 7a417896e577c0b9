//! Administrator connections kept open between calls, per target and credential.
//!
//! Connecting and authenticating (SCRAM on PostgreSQL) costs more than the statements an
//! issue or a revoke runs, so a connection that finished its work cleanly goes back here and
//! the next call at the same target takes it. Only connections whose work succeeded are
//! returned: one that failed is dropped, whatever state it was left in. Connections idle for
//! longer than [`IDLE_LIMIT`] are closed rather than reused, and when a target's administrator
//! credential changes (`rotate-root`, `set-credential`) the connections made with the old one
//! are closed the next time one with the new credential is returned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use sha2::{Digest, Sha256};

use super::{Connection, Tls};

/// How long an unused connection is kept.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// The most administrator connections at work at once per database server: a burst of grants
/// or expiries queues here rather than take the server's connection slots from its
/// applications (PostgreSQL allows 100 by default). Calls at one database run one at a time in
/// PostgreSQL's catalog anyway.
const MAX_AT_WORK: usize = 8;

/// The most idle connections kept per target and credential: with [`MAX_AT_WORK`] at work, a
/// server sees at most twice that many of Warden's connections.
const MAX_IDLE: usize = MAX_AT_WORK;

/// Which connections are interchangeable: same server, database, TLS settings and credential.
/// The password is kept only as a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    host: String,
    port: u16,
    database: Option<String>,
    /// A connection made under other TLS settings is never used again once they changed: a
    /// plaintext one kept busy would otherwise outlive `tls = "verify-full"`.
    tls: Tls,
    user: String,
    password: [u8; 32],
}

impl Key {
    pub(crate) fn new(conn: &Connection, user: &str, password: &str) -> Self {
        Self {
            host: conn.host.clone(),
            port: conn.port,
            database: conn.database.clone(),
            tls: conn.tls.clone(),
            user: user.to_owned(),
            password: Sha256::digest(password.as_bytes()).into(),
        }
    }

    fn same_place(&self, other: &Key) -> bool {
        self.host == other.host && self.port == other.port && self.database == other.database
    }
}

/// Idle connections of type `C`, and the turns connections take at each server.
#[derive(Debug)]
pub(crate) struct Pool<C> {
    idle: Mutex<HashMap<Key, Vec<(C, Instant)>>>,
    at_work: Mutex<HashMap<(String, u16), Arc<Semaphore>>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            at_work: Mutex::new(HashMap::new()),
        }
    }
}

impl<C> Pool<C> {
    /// Waits for a turn to work on the server of `key` (one of [`MAX_AT_WORK`]); hold it
    /// while any connection to that server is used.
    pub(crate) async fn admit(&self, key: &Key) -> Result<OwnedSemaphorePermit, crate::Error> {
        let turns = self
            .at_work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((key.host.clone(), key.port))
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_AT_WORK)))
            .clone();
        turns
            .acquire_owned()
            .await
            .map_err(|e| crate::Error::Internal(format!("waiting for a connection turn: {e}")))
    }

    /// The most recently returned connection for `key` that `usable` accepts, if any.
    pub(crate) fn take(&self, key: &Key, usable: impl Fn(&C) -> bool) -> Option<C> {
        let now = Instant::now();
        let mut idle = self.lock();
        let list = idle.get_mut(key)?;
        while let Some((c, since)) = list.pop() {
            if now.duration_since(since) < IDLE_LIMIT && usable(&c) {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `c`, which just finished its work cleanly, for the next call at `key`.
    pub(crate) fn put(&self, key: Key, c: C) {
        let now = Instant::now();
        let mut idle = self.lock();
        // Connections made with a credential or TLS settings that have since changed are never
        // used again.
        idle.retain(|k, _| k == &key || !k.same_place(&key));
        let list = idle.entry(key).or_default();
        list.retain(|(_, since)| now.duration_since(*since) < IDLE_LIMIT);
        if list.len() < MAX_IDLE {
            list.push((c, now));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<(C, Instant)>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(host: &str) -> Connection {
        Connection {
            host: host.into(),
            port: 5432,
            database: Some("app".into()),
            tls: Tls::Disable,
        }
    }

    #[test]
    fn connections_are_reused_only_for_the_same_target_and_credential() {
        let pool = Pool::default();
        let a = Key::new(&conn("db1"), "admin", "one");
        pool.put(a.clone(), 1);
        assert_eq!(
            pool.take(&Key::new(&conn("db2"), "admin", "one"), |_| true),
            None
        );
        assert_eq!(
            pool.take(&Key::new(&conn("db1"), "admin", "two"), |_| true),
            None
        );
        assert_eq!(pool.take(&a, |_| true), Some(1));
        assert_eq!(
            pool.take(&a, |_| true),
            None,
            "a connection is handed out once"
        );
    }

    #[tokio::test]
    async fn a_server_gets_a_bounded_number_of_connections_at_work() {
        let pool: Pool<u8> = Pool::default();
        let a = Key::new(&conn("db1"), "admin", "one");
        let mut turns = Vec::new();
        for _ in 0..MAX_AT_WORK {
            turns.push(pool.admit(&a).await.unwrap());
        }
        // Another database on the same server waits its turn; another server does not.
        let same_server = Key::new(
            &Connection {
                database: Some("other".into()),
                ..conn("db1")
            },
            "admin",
            "one",
        );
        let wait = Duration::from_millis(50);
        assert!(
            tokio::time::timeout(wait, pool.admit(&same_server))
                .await
                .is_err()
        );
        let elsewhere = Key::new(&conn("db2"), "admin", "one");
        assert!(
            tokio::time::timeout(wait, pool.admit(&elsewhere))
                .await
                .is_ok()
        );
        turns.pop();
        assert!(
            tokio::time::timeout(wait, pool.admit(&same_server))
                .await
                .is_ok()
        );
    }

    #[test]
    fn unusable_connections_are_dropped() {
        let pool = Pool::default();
        let a = Key::new(&conn("db1"), "admin", "one");
        pool.put(a.clone(), 1);
        pool.put(a.clone(), 2);
        assert_eq!(
            pool.take(&a, |c| *c == 1),
            Some(1),
            "2 was closed and skipped"
        );
        assert_eq!(pool.take(&a, |_| true), None);
    }

    #[test]
    fn a_new_credential_closes_the_old_ones() {
        let pool = Pool::default();
        let old = Key::new(&conn("db1"), "admin", "old");
        let other = Key::new(&conn("db2"), "admin", "old");
        pool.put(old.clone(), 1);
        pool.put(other.clone(), 3);
        pool.put(Key::new(&conn("db1"), "admin", "new"), 2);
        assert_eq!(pool.take(&old, |_| true), None);
        assert_eq!(
            pool.take(&other, |_| true),
            Some(3),
            "other targets keep theirs"
        );
    }

    #[test]
    fn new_tls_settings_close_the_connections_made_under_the_old_ones() {
        let pool = Pool::default();
        let plain = Key::new(&conn("db1"), "admin", "one");
        let verified = Key::new(
            &Connection {
                tls: Tls::VerifyFull { ca_file: None },
                ..conn("db1")
            },
            "admin",
            "one",
        );
        pool.put(plain.clone(), 1);
        assert_eq!(pool.take(&verified, |_| true), None);
        pool.put(verified.clone(), 2);
        assert_eq!(pool.take(&plain, |_| true), None);
        assert_eq!(pool.take(&verified, |_| true), Some(2));
    }
}
