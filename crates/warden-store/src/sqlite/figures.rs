//! Figures for the metrics endpoint and the zero-standing-privilege report: grouped counts
//! read at every scrape (so they are right after a restart) and the requests of a period.
//! Migrations `0004_figures.sql` and `0007_stored_requirement.sql` index what these queries
//! read.

use rusqlite::params;
use time::{Duration, OffsetDateTime};
use warden_domain::{Request, RequestId, State};

use super::{SqliteStore, decode_request, ms};
use crate::Result;

impl SqliteStore {
    pub(super) async fn count_requests(&self) -> Result<Vec<(State, String, u64)>> {
        let rows: Vec<(String, String, i64)> = self
            .read(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT state, requirement, COUNT(*) FROM requests GROUP BY state, requirement",
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

    pub(super) async fn breakglass_uses(&self) -> Result<crate::BreakGlassUses> {
        let (real, drills): (i64, i64) = self
            .read(|c| {
                c.prepare_cached(
                    "SELECT COUNT(*) - COALESCE(SUM(drill), 0), COALESCE(SUM(drill), 0) FROM postmortems",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            })
            .await?;
        Ok(crate::BreakGlassUses {
            real: u64::try_from(real).unwrap_or(0),
            drills: u64::try_from(drills).unwrap_or(0),
        })
    }

    pub(super) async fn created_between(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Request>> {
        // A request's id carries its `created_at` (see migration 0008). Before, the id was
        // drawn a little after `created_at` was read, never before: the range reaches past the
        // period's end by `LEGACY_ID_LAG` for those, and `created_at` keeps it exact. Ids are
        // stored as UUIDv7 text, the millisecond first in fixed-width hex, so a millisecond's
        // smallest id sorts above every earlier id and at or below every later one.
        let (first, after) = (
            RequestId::v7(from, [0; 10]).to_string(),
            RequestId::v7(to.saturating_add(LEGACY_ID_LAG), [0; 10]).to_string(),
        );
        let (from, to) = (ms(from), ms(to));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT body, version FROM requests WHERE id >= ?1 AND id < ?2
                   AND created_at >= ?3 AND created_at < ?4
                 ORDER BY id LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![first, after, from, to, limit], |row| {
                decode_request(row.get(0)?, row.get(1)?)
            })?;
            rows.collect()
        })
        .await
    }
}

/// How much later than its `created_at` a request stored before migration 0008 may have drawn
/// its id: the policy's decision and the MFA check lie between the two, a few milliseconds.
const LEGACY_ID_LAG: Duration = Duration::minutes(1);

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::super::tests::{allowed, request_decided};
    use super::*;
    use crate::Store;

    const T0: OffsetDateTime = datetime!(2026-01-01 10:00 UTC);

    fn request(n: u128, tier: &str, minutes: i64) -> Request {
        let mut d = allowed();
        d.requirement = tier.parse().unwrap();
        request_decided(n, &d, T0 + Duration::minutes(minutes))
    }

    /// The store's request counts, ordered by requirement.
    async fn counts_by_requirement(s: &SqliteStore) -> Vec<(State, String, u64)> {
        let mut counts = s.count_requests().await.unwrap();
        counts.sort_by(|a, b| a.1.cmp(&b.1));
        counts
    }

    fn pending(requirement: &str, n: u64) -> (State, String, u64) {
        (State::Pending, requirement.to_owned(), n)
    }

    #[tokio::test]
    async fn a_period_holds_requests_whose_older_ids_were_drawn_after_created_at() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("w.db")).unwrap();
        // Stored before migration 0008: created a millisecond before the period ends, its id
        // drawn 5 ms later, inside the next period.
        let mut legacy = request(1, "auto", 10);
        legacy.created_at -= Duration::milliseconds(1);
        legacy.id = RequestId::v7(legacy.created_at + Duration::milliseconds(5), [1; 10]);
        s.insert_request(&legacy, Vec::new().into()).await.unwrap();
        let period = |from: i64, to: i64| {
            s.created_between(T0 + Duration::minutes(from), T0 + Duration::minutes(to), 10)
        };
        assert_eq!(period(5, 10).await.unwrap().len(), 1);
        assert!(period(10, 15).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn counts_group_by_state_tier_and_detail() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("w.db")).unwrap();
        for (n, tier, at) in [(1, "auto", 0), (2, "peer(sre)", 5), (3, "peer(sre)", 10)] {
            s.insert_request(&request(n, tier, at), Vec::new().into())
                .await
                .unwrap();
        }
        assert_eq!(
            counts_by_requirement(&s).await,
            [pending("auto", 1), pending("peer(sre)", 2)]
        );
        let between = s
            .created_between(T0 + Duration::minutes(5), T0 + Duration::minutes(10), 10)
            .await
            .unwrap();
        assert_eq!(between.len(), 1);
        assert_eq!(between[0].id, request(2, "peer(sre)", 5).id);

        assert_eq!(s.breakglass_uses().await.unwrap(), Default::default());
        for (n, drill) in [(4, true), (5, false), (6, false)] {
            let r = request(n, "auto", 20);
            let change = crate::Change {
                postmortem: Some(warden_domain::Postmortem::open(&r, drill, T0)),
                ..Default::default()
            };
            s.insert_request(&r, change).await.unwrap();
        }
        assert_eq!(
            s.breakglass_uses().await.unwrap(),
            crate::BreakGlassUses { real: 2, drills: 1 }
        );
        assert_eq!(s.count_failed_leases().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn migration_0007_keeps_the_requirements_of_stored_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        {
            // A database as migration 0006 left it, holding a peer-tier request.
            let c = rusqlite::Connection::open(&path).unwrap();
            for sql in &super::super::MIGRATIONS[..6] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", 6).unwrap();
            let r = request(1, "peer(sre)", 0);
            c.execute(
                "INSERT INTO requests (id, requester, target, state, created_at, version, body)
                 VALUES (?1, 'alice', 'web', 'pending', 0, 0, ?2)",
                params![r.id.to_string(), serde_json::to_string(&r).unwrap()],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let mut r = request(2, "auto", 1);
        s.insert_request(&r, Vec::new().into()).await.unwrap();
        // An update writes the requirement of the moment (an approval re-reads it).
        r.requirement = "manager".parse().unwrap();
        s.update_request(&r, Vec::new().into()).await.unwrap();
        assert_eq!(
            counts_by_requirement(&s).await,
            [pending("manager", 1), pending("peer(sre)", 1)]
        );
    }

    #[test]
    fn scrape_counts_read_only_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        drop(SqliteStore::open(&path).unwrap());
        let c = rusqlite::Connection::open(&path).unwrap();
        for (sql, index) in [
            (
                "SELECT state, requirement, COUNT(*) FROM requests GROUP BY state, requirement",
                "COVERING INDEX requests_state_requirement",
            ),
            (
                "SELECT COUNT(*) FROM leases WHERE state = 'failed'",
                "COVERING INDEX leases_state",
            ),
        ] {
            let mut explain = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = explain
                .query_map([], |r| r.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert!(plan.iter().any(|p| p.contains(index)), "{sql}: {plan:?}");
        }
    }
}
