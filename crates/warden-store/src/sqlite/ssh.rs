//! SQLite storage for the SSH proxy: users' public keys, pinned host keys, and the keys grants'
//! certificates certified.

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use warden_domain::audit::{Code, Event};
use warden_domain::{Request, RequestId, State, TargetName, UserName};

use super::{SqliteStore, append_events, backend, ceil_ms, decode_event, from_ms, ms, prepare};
use crate::{Error, Result, SshKey, StoredEvent};

/// A grant's row of `certified_keys` (migration 0024): the SSH key its certificate certified,
/// and when the certificate ends.
#[derive(Debug, Clone)]
pub(super) struct CertifiedKey {
    grant: String,
    requester: String,
    fingerprint: String,
    valid_before: i64,
}

impl CertifiedKey {
    /// The row of `r`, when it is an active grant whose certificate certified an SSH key
    /// (its credential names the key's fingerprint).
    pub(super) fn of(r: &Request) -> Option<Self> {
        if r.state != State::Active {
            return None;
        }
        let fingerprint = r.credential.as_ref()?.get("key_fingerprint")?.as_str()?;
        Some(CertifiedKey {
            grant: r.id.to_string(),
            requester: r.requester.to_string(),
            fingerprint: fingerprint.to_owned(),
            valid_before: ceil_ms(r.expires_at?),
        })
    }

    /// Writes the row, in the transaction that stores its grant; once, as a certificate's
    /// key and end never change.
    pub(super) fn write(&self, c: &Connection) -> Result<()> {
        c.prepare_cached(
            "INSERT OR IGNORE INTO certified_keys (grant_id, requester, fingerprint, valid_before)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| {
            s.execute(params![
                self.grant,
                self.requester,
                self.fingerprint,
                self.valid_before
            ])
        })
        .map_err(backend)?;
        Ok(())
    }
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_key(
    (fingerprint, user, public_key, added_at): (String, String, String, i64),
) -> Result<SshKey> {
    Ok(SshKey {
        fingerprint,
        user: user.parse().map_err(backend)?,
        public_key,
        added_at: from_ms(added_at),
    })
}

impl SqliteStore {
    pub(super) async fn insert_ssh_key(&self, key: &SshKey, events: Vec<Event>) -> Result<()> {
        let events = prepare(&events)?;
        let key = key.clone();
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "INSERT INTO ssh_keys (fingerprint, user, public_key, added_at)
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (fingerprint) DO NOTHING",
                        params![
                            key.fingerprint,
                            key.user.to_string(),
                            key.public_key,
                            ms(key.added_at)
                        ],
                    )
                    .map_err(backend)?;
                if n == 0 {
                    return Err(Error::Conflict);
                }
                append_events(c, &events)
            })
            .await
    }

    pub(super) async fn delete_ssh_key(
        &self,
        user: &UserName,
        fingerprint: &str,
        events: Vec<Event>,
    ) -> Result<bool> {
        let events = prepare(&events)?;
        let (user, fingerprint) = (user.to_string(), fingerprint.to_owned());
        self.writer
            .write(move |c| {
                let n = c
                    .execute(
                        "DELETE FROM ssh_keys WHERE user = ?1 AND fingerprint = ?2",
                        params![user, fingerprint],
                    )
                    .map_err(backend)?;
                if n > 0 {
                    append_events(c, &events)?;
                }
                Ok(n > 0)
            })
            .await
    }

    pub(super) async fn select_ssh_keys(&self, user: &UserName) -> Result<Vec<SshKey>> {
        let user = user.to_string();
        let rows = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT fingerprint, user, public_key, added_at FROM ssh_keys
                     WHERE user = ?1 ORDER BY added_at",
                )?
                .query_map([user], key_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        rows.into_iter().map(to_key).collect()
    }

    pub(super) async fn select_ssh_key(&self, fingerprint: &str) -> Result<Option<SshKey>> {
        let fingerprint = fingerprint.to_owned();
        let row = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT fingerprint, user, public_key, added_at FROM ssh_keys WHERE fingerprint = ?1",
                )?
                .query_row([fingerprint], key_row)
                .optional()
            })
            .await?;
        row.map(to_key).transpose()
    }

    pub(super) async fn select_key_certified_last(
        &self,
        requester: &UserName,
        fingerprint: &str,
    ) -> Result<Option<(RequestId, OffsetDateTime)>> {
        let (requester, fingerprint) = (requester.to_string(), fingerprint.to_owned());
        let row = self
            .read(move |c| {
                c.prepare_cached(
                    "SELECT grant_id, valid_before FROM certified_keys
                     WHERE requester = ?1 AND fingerprint = ?2
                     ORDER BY valid_before DESC LIMIT 1",
                )?
                .query_row([requester, fingerprint], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
            })
            .await?;
        row.map(|(grant, ends)| {
            let grant = grant.parse().map_err(backend)?;
            Ok((grant, from_ms(ends)))
        })
        .transpose()
    }

    pub(super) async fn upsert_host_key(
        &self,
        target: &TargetName,
        key: String,
        events: Vec<Event>,
    ) -> Result<()> {
        self.upsert(
            "INSERT INTO ssh_host_keys (target, public_key) VALUES (?1, ?2)
             ON CONFLICT (target) DO UPDATE SET public_key = excluded.public_key",
            target.to_string(),
            key,
            events,
        )
        .await
    }

    pub(super) async fn insert_live_session(
        &self,
        started: &Event,
        events: Vec<Event>,
    ) -> Result<()> {
        let id = started
            .session_id
            .clone()
            .ok_or_else(|| Error::Backend("a session's start names no session".into()))?;
        let body = serde_json::to_string(started).map_err(backend)?;
        let events = prepare(&events)?;
        self.writer
            .write(move |c| {
                c.prepare_cached("INSERT INTO live_sessions (id, started) VALUES (?1, ?2)")
                    .and_then(|mut s| s.execute(params![id, body]))
                    .map_err(backend)?;
                append_events(c, &events)
            })
            .await
    }

    pub(super) async fn delete_live_session(&self, id: &str, events: Vec<Event>) -> Result<()> {
        let id = id.to_owned();
        let events = prepare(&events)?;
        self.writer
            .write(move |c| {
                c.prepare_cached("DELETE FROM live_sessions WHERE id = ?1")
                    .and_then(|mut s| s.execute([id]))
                    .map_err(backend)?;
                append_events(c, &events)
            })
            .await
    }

    pub(super) async fn select_live_sessions(&self) -> Result<Vec<Event>> {
        let rows: Vec<String> = self
            .read(|c| {
                c.prepare("SELECT started FROM live_sessions ORDER BY rowid")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .await?;
        rows.iter()
            .map(|b| serde_json::from_str(b).map_err(backend))
            .collect()
    }

    pub(super) async fn select_session_end(&self, id: &str) -> Result<Option<StoredEvent>> {
        let id = id.to_owned();
        self.read(move |c| {
            // Read through the index of codes: sessions end far more rarely than anything else
            // is logged, so this looks at each `session.ended` body alone.
            c.query_row(
                "SELECT seq, body, leaf_hash FROM audit
                 WHERE code = ?1 AND json_extract(body, '$.session_id') = ?2
                 ORDER BY seq DESC LIMIT 1",
                params![Code::SessionEnded.number(), id],
                |r| decode_event(r.get(0)?, r.get(1)?, r.get(2)?),
            )
            .optional()
        })
        .await
    }

    pub(super) async fn select_host_key(&self, target: &TargetName) -> Result<Option<String>> {
        let target = target.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT public_key FROM ssh_host_keys WHERE target = ?1",
                [target],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::super::tests::{allowed, request_decided};
    use super::*;
    use crate::{Change, Store};

    /// Grant `n` of alice, certifying the key `fingerprint` from `at` for its ten minutes.
    fn certifying(n: u128, fingerprint: &str, at: OffsetDateTime) -> Request {
        let mut r = request_decided(n, &allowed(), at);
        r.approve_automatically().unwrap();
        r.activate(
            Some(serde_json::json!({ "key_fingerprint": fingerprint })),
            at,
        )
        .unwrap();
        r
    }

    #[tokio::test]
    async fn the_grant_whose_certificate_of_a_key_ended_last_is_found_however_many_came_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let s = SqliteStore::open(&path).unwrap();
        let alice: UserName = "alice".parse().unwrap();
        let t0 = datetime!(2026-01-01 10:00 UTC);
        // Stored active at once (an auto grant), and stored pending then activated.
        let first = certifying(1, "SHA256:k", t0);
        s.insert_request(&first, Change::default()).await.unwrap();
        let mut second = request_decided(2, &allowed(), t0 + time::Duration::minutes(5));
        s.insert_request(&second, Change::default()).await.unwrap();
        second.approve_automatically().unwrap();
        second
            .activate(
                Some(serde_json::json!({ "key_fingerprint": "SHA256:k" })),
                t0 + time::Duration::minutes(5),
            )
            .unwrap();
        s.update_request(&second, Change::default()).await.unwrap();
        // Ended since: its certificate's end stays what it was.
        second.version += 1;
        second.expire(t0 + time::Duration::hours(1)).unwrap();
        s.update_request(&second, Change::default()).await.unwrap();
        // Many newer requests, none certifying that key: the listing's first pages hold no
        // grant of it.
        for n in 10..160 {
            let r = certifying(n, "SHA256:other", t0 + time::Duration::minutes(30));
            s.insert_request(&r, Change::default()).await.unwrap();
        }
        let found = s.key_certified_last(&alice, "SHA256:k").await.unwrap();
        assert_eq!(
            found,
            Some((second.id, t0 + time::Duration::minutes(15))),
            "the one that ended last"
        );
        assert_eq!(
            s.key_certified_last(&"bob".parse().unwrap(), "SHA256:k")
                .await
                .unwrap(),
            None,
            "another user's key is none of theirs"
        );
        assert_eq!(
            s.key_certified_last(&alice, "SHA256:never").await.unwrap(),
            None
        );
        // A data dir from before the table: the grants certified then are found too.
        drop(s);
        let before = super::super::MIGRATIONS
            .iter()
            .position(|m| m.contains("CREATE TABLE IF NOT EXISTS certified_keys"))
            .unwrap();
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(&format!(
                "DROP TABLE certified_keys; PRAGMA user_version = {before};"
            ))
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.key_certified_last(&alice, "SHA256:k").await.unwrap(),
            Some((second.id, t0 + time::Duration::minutes(15)))
        );
    }
}
