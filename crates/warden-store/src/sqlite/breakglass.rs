//! The notification outbox and break-glass postmortems in SQLite.
//!
//! Outbox rows and postmortems are written by the change that causes them (see
//! [`super::write_extras`]); this file delivers, retries and reads them.

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;
use warden_domain::audit::Event;
use warden_domain::{Postmortem, RequestId};

use super::{SqliteStore, append_events, backend, ceil_ms, from_ms, json, limit, ms, prepare};
use crate::{Delivery, Drill, Error, OutboxStatus, Outgoing, Reached, Result, SinkBacklog};

/// An outbox row as its columns: notice id, sink, created, body. The body is the notice as
/// JSON, and, once an attempt failed after reaching some of its recipients, whom ([`Reached`])
/// under `reached` beside the notice's fields.
pub(super) type NoticeRow = (String, String, i64, String);

/// A postmortem as its columns: request id, target, role, drill, opened, closed, body.
pub(super) type PostmortemRow = (String, String, String, bool, i64, Option<i64>, String);

pub(super) fn notice_rows(notices: &[Outgoing]) -> Result<Vec<NoticeRow>> {
    notices
        .iter()
        .map(|o| {
            Ok((
                o.notice.id.to_string(),
                o.sink.clone(),
                ms(o.notice.time),
                serde_json::to_string(&o.notice).map_err(backend)?,
            ))
        })
        .collect()
}

pub(super) fn postmortem_row(pm: &Postmortem) -> Result<PostmortemRow> {
    Ok((
        pm.request.to_string(),
        pm.target.to_string(),
        pm.role.to_string(),
        pm.drill,
        ms(pm.opened_at),
        pm.closed.as_ref().map(|c| ms(c.at)),
        serde_json::to_string(pm).map_err(backend)?,
    ))
}

/// Queues notices; a notice already queued for a sink stays as it is, so a retried change
/// never queues it twice.
pub(super) fn write_notices(c: &Connection, rows: &[NoticeRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stmt = c
        .prepare_cached(
            "INSERT INTO outbox (notice_id, sink, created_at, due_at, body) VALUES (?1, ?2, ?3, ?3, ?4)
             ON CONFLICT (notice_id, sink) DO NOTHING",
        )
        .map_err(backend)?;
    for (id, sink, created, body) in rows {
        stmt.execute(params![id, sink, created, body])
            .map_err(backend)?;
    }
    Ok(())
}

pub(super) fn write_postmortem(c: &Connection, row: &PostmortemRow) -> Result<()> {
    let (id, target, role, drill, opened, closed, body) = row;
    c.prepare_cached(
        "INSERT INTO postmortems (request_id, target, role, drill, opened_at, closed_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (request_id) DO UPDATE SET closed_at = excluded.closed_at, body = excluded.body",
    )
    .and_then(|mut s| s.execute(params![id, target, role, drill, opened, closed, body]))
    .map_err(backend)?;
    Ok(())
}

impl SqliteStore {
    /// The rows due by `now` of the sinks not `busy`, at most `n`, in turns: every sink's
    /// first (oldest due), then every sink's second, and so on; each turn in due order.
    pub(super) async fn due_notices_at(
        &self,
        now: OffsetDateTime,
        n: usize,
        busy: &[String],
    ) -> Result<Vec<Delivery>> {
        let now = ms(now);
        let busy = serde_json::to_string(busy).map_err(backend)?;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT sink, attempts, body, json_extract(body, '$.reached') FROM (
                     SELECT sink, attempts, body, due_at, created_at,
                            ROW_NUMBER() OVER (
                                PARTITION BY sink ORDER BY due_at, created_at, notice_id
                            ) AS turn
                     FROM outbox
                     WHERE due_at IS NOT NULL AND due_at <= ?1
                       AND sink NOT IN (SELECT value FROM json_each(?3))
                 )
                 ORDER BY turn, due_at, created_at, sink LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now, limit(n), busy], |r| {
                Ok(Delivery {
                    sink: r.get(0)?,
                    attempts: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                    notice: json(r.get(2)?)?,
                    reached: r
                        .get::<_, Option<String>>(3)?
                        .map(json)
                        .transpose()?
                        .unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn next_notice(&self) -> Result<Option<OffsetDateTime>> {
        self.read(|c| {
            c.query_row(
                "SELECT MIN(due_at) FROM outbox WHERE due_at IS NOT NULL",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
        })
        .await
        .map(|v| v.map(from_ms))
    }

    pub(super) async fn notices_due_by(
        &self,
        sinks: &[String],
        now: OffsetDateTime,
    ) -> Result<usize> {
        let (sinks, now) = (sinks.to_vec(), ms(now));
        self.writer
            .write(move |c| {
                let mut due = 0;
                for sink in &sinks {
                    due += c
                        .prepare_cached(
                            "UPDATE outbox SET due_at = ?2 WHERE sink = ?1 AND due_at > ?2",
                        )
                        .and_then(|mut s| s.execute(params![sink, now]))
                        .map_err(backend)?;
                }
                Ok(due)
            })
            .await
    }

    pub(super) async fn mark_delivered(
        &self,
        id: uuid::Uuid,
        sink: &str,
        now: OffsetDateTime,
        skipped: bool,
        events: Vec<Event>,
    ) -> Result<()> {
        let (id, sink, now) = (id.to_string(), sink.to_owned(), ms(now));
        let events = prepare(&events)?;
        self.writer
            .write(move |c| {
                let done = c
                    .prepare_cached(
                        "UPDATE outbox SET due_at = NULL, delivered_at = ?3, last_error = NULL,
                                skipped = ?4
                         WHERE notice_id = ?1 AND sink = ?2 AND due_at IS NOT NULL",
                    )
                    .and_then(|mut s| s.execute(params![id, sink, now, skipped]))
                    .map_err(backend)?;
                // The last sink done with the notice settles it: counted, and its rows
                // removed (migration 0020). A late report for a row done already changes
                // nothing.
                if done == 1 {
                    settle_if_done(c, &id).map_err(backend)?;
                }
                append_events(c, &events)
            })
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn mark_failed(
        &self,
        id: uuid::Uuid,
        sink: &str,
        attempts: u32,
        retry_at: OffsetDateTime,
        error: &str,
        reached: &Reached,
        events: Vec<Event>,
    ) -> Result<()> {
        let events = prepare(&events)?;
        let (id, sink, due, error) = (
            id.to_string(),
            sink.to_owned(),
            ceil_ms(retry_at),
            error.to_owned(),
        );
        let reached = if reached.is_empty() {
            None
        } else {
            Some(serde_json::to_string(reached).map_err(backend)?)
        };
        self.writer
            .write(move |c| {
                // Whom the attempts so far reached is kept with the failure, in the row's body
                // beside the notice's fields (which reading it as a notice passes over): the
                // retry, after a restart too, is sent to the rest alone.
                c.prepare_cached(
                    "UPDATE outbox SET attempts = ?3, due_at = ?4, last_error = ?5,
                            body = CASE WHEN ?6 IS NULL THEN json_remove(body, '$.reached')
                                        ELSE json_set(body, '$.reached', json(?6)) END
                     WHERE notice_id = ?1 AND sink = ?2 AND due_at IS NOT NULL",
                )
                .and_then(|mut s| s.execute(params![id, sink, attempts, due, error, reached]))
                .map_err(backend)?;
                super::append_events(c, &events)
            })
            .await
    }

    pub(super) async fn outbox_figures(&self) -> Result<OutboxStatus> {
        // The outbox holds only notices still on their way (settled ones are counted in
        // `outbox_settled` and removed), so neither count below reads history.
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT sink, COUNT(*), COUNT(*) FILTER (WHERE attempts > 0),
                        (SELECT last_error FROM outbox f
                          WHERE f.sink = o.sink AND f.due_at IS NOT NULL AND f.last_error IS NOT NULL
                          ORDER BY f.created_at DESC LIMIT 1)
                 FROM outbox o WHERE due_at IS NOT NULL GROUP BY sink ORDER BY sink",
            )?;
            let by_sink = stmt
                .query_map([], |r| {
                    Ok(SinkBacklog {
                        sink: r.get(0)?,
                        pending: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        retrying: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        last_error: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            c.query_row(
                "SELECT COUNT(*) FILTER (WHERE waiting > 0),
                        COUNT(*) FILTER (WHERE failed > 0),
                        (SELECT delivered FROM outbox_settled),
                        (SELECT skipped FROM outbox_settled),
                        MIN(queued_at) FILTER (WHERE waiting > 0)
                 FROM (SELECT COUNT(*) FILTER (WHERE due_at IS NOT NULL) AS waiting,
                              COUNT(*) FILTER (WHERE due_at IS NOT NULL AND attempts > 0) AS failed,
                              MIN(created_at) AS queued_at
                       FROM outbox GROUP BY notice_id)",
                [],
                |r| {
                    Ok(OutboxStatus {
                        pending: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        retrying: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        delivered: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        skipped: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        oldest_pending: r.get::<_, Option<i64>>(4)?.map(from_ms),
                        by_sink,
                    })
                },
            )
        })
        .await
    }

    pub(super) async fn read_postmortem(&self, request: RequestId) -> Result<Option<Postmortem>> {
        let id = request.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT body FROM postmortems WHERE request_id = ?1")?
                .query_row([id], |r| json(r.get(0)?))
                .optional()
        })
        .await
    }

    pub(super) async fn read_postmortems(
        &self,
        open_only: bool,
        requester: Option<String>,
        before: Option<String>,
        n: usize,
    ) -> Result<Vec<Postmortem>> {
        self.read(move |c| {
            // Postmortems are few (one per break-glass use): the requester is read from the
            // body rather than kept in a column of its own. Newest first by id, which carries
            // the millisecond its grant was asked for (and opened, at once), so that a page
            // ends at an id the next one starts before.
            let mut stmt = c.prepare_cached(
                "SELECT body FROM postmortems WHERE (?1 = 0 OR closed_at IS NULL)
                   AND (?3 IS NULL OR json_extract(body, '$.requester') = ?3)
                   AND (?4 IS NULL OR request_id < ?4)
                 ORDER BY request_id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![open_only, limit(n), requester, before], |r| {
                json(r.get(0)?)
            })?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn save_closed(&self, pm: &Postmortem, events: Vec<Event>) -> Result<()> {
        let events = prepare(&events)?;
        let (id, _, _, _, _, closed, body) = postmortem_row(pm)?;
        self.writer
            .write(move |c| {
                let n = c
                    .prepare_cached(
                        "UPDATE postmortems SET closed_at = ?2, body = ?3
                         WHERE request_id = ?1 AND closed_at IS NULL",
                    )
                    .and_then(|mut s| s.execute(params![id, closed, body]))
                    .map_err(backend)?;
                if n == 0 {
                    return Err(Error::Conflict);
                }
                super::append_events(c, &events)
            })
            .await
    }

    pub(super) async fn count_open(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM postmortems WHERE closed_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn drills(&self) -> Result<Vec<Drill>> {
        let rows: Vec<(String, String, i64, String)> = self
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT target, role, MAX(opened_at), request_id FROM postmortems WHERE drill = 1
                     GROUP BY target, role ORDER BY target, role",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(t, r, at, id)| {
                Ok(Drill {
                    target: t.parse().map_err(backend)?,
                    role: r.parse().map_err(backend)?,
                    at: from_ms(at),
                    request: id.parse().map_err(backend)?,
                })
            })
            .collect()
    }
}

/// Settles notice `id` if no sink is still to send it: counts it in `outbox_settled`, as
/// delivered if any sink sent it, else as skipped, and removes its rows.
fn settle_if_done(c: &rusqlite::Connection, id: &str) -> rusqlite::Result<()> {
    let (waiting, sent): (i64, i64) = c
        .prepare_cached(
            "SELECT COUNT(*) FILTER (WHERE due_at IS NOT NULL), COUNT(*) FILTER (WHERE NOT skipped)
             FROM outbox WHERE notice_id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if waiting > 0 {
        return Ok(());
    }
    c.prepare_cached(if sent > 0 {
        "UPDATE outbox_settled SET delivered = delivered + 1"
    } else {
        "UPDATE outbox_settled SET skipped = skipped + 1"
    })?
    .execute([])?;
    c.prepare_cached("DELETE FROM outbox WHERE notice_id = ?1")?
        .execute([id])?;
    Ok(())
}
