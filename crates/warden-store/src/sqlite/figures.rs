//! Figures for the metrics endpoint and the zero-standing-privilege report: grouped counts
//! read at every scrape (so they are right after a restart) and the requests of a period.
//! Migration `0004_figures.sql` indexes what these queries read.

use rusqlite::params;
use time::OffsetDateTime;
use warden_domain::audit::Code;
use warden_domain::{Request, State};

use super::{SqliteStore, decode_request, ms};
use crate::Result;

impl SqliteStore {
    pub(super) async fn count_requests(&self) -> Result<Vec<(State, String, u64)>> {
        let rows: Vec<(String, String, i64)> = self
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT state, json_extract(body, '$.requirement'), COUNT(*) FROM requests
                     GROUP BY state, json_extract(body, '$.requirement')",
                )?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(state, requirement, n)| {
                let state = state.parse().map_err(crate::Error::Backend)?;
                Ok((state, requirement, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    pub(super) async fn count_failed_leases(&self) -> Result<u64> {
        self.read(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM leases WHERE state = 'failed'")?
                .query_row([], |r| r.get::<_, i64>(0))
        })
        .await
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    pub(super) async fn count_events(
        &self,
        code: Code,
        detail: Option<&'static str>,
    ) -> Result<Vec<(Option<String>, u64)>> {
        let path = detail.map(|d| format!("$.details.{d}"));
        let code = code.number();
        let rows: Vec<(Option<String>, i64)> = self
            .read(move |c| {
                // Details values are JSON scalars; CAST gives `true`/`false` for booleans as
                // 1/0, so booleans are read through json_type first.
                let mut stmt = c.prepare_cached(
                    "SELECT CASE json_type(body, ?2)
                              WHEN 'true' THEN 'true' WHEN 'false' THEN 'false'
                              ELSE CAST(json_extract(body, ?2) AS TEXT) END AS v,
                            COUNT(*)
                     FROM audit WHERE code = ?1 GROUP BY v",
                )?;
                let rows = stmt.query_map(params![code, path], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(v, n)| (v, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    pub(super) async fn created_between(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Request>> {
        let (from, to) = (ms(from), ms(to));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT body, version FROM requests WHERE created_at >= ?1 AND created_at < ?2
                 ORDER BY created_at, id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![from, to, limit], |row| {
                decode_request(row.get(0)?, row.get(1)?)
            })?;
            rows.collect()
        })
        .await
    }
}
