//! SQLite storage for the SSH proxy: users' public keys and pinned host keys.

use rusqlite::{OptionalExtension, params};
use warden_domain::audit::{Code, Event};
use warden_domain::{TargetName, UserName};

use super::{SqliteStore, append_events, backend, decode_event, from_ms, ms, prepare};
use crate::{Error, Result, SshKey, StoredEvent};

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
