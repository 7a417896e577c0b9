//! Figures for the metrics endpoint and the zero-standing-privilege report: grouped counts
//! read at every scrape (so they are right after a restart) and the records of a period.
//! Migrations `0004_figures.sql` and `0007_stored_requirement.sql` index what these queries
//! read.

use rusqlite::params;
use time::{Duration, OffsetDateTime};
use warden_domain::{RequestId, State};

use super::{SqliteStore, decode_request, json, ms};
use crate::{Period, Result};

/// A row of the grouped request count: state, requirement, how many.
type StateCount = (String, String, i64);

impl SqliteStore {
    pub(super) async fn count_requests(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<(State, String, u64)>> {
        let (rows, ran_out): (Vec<StateCount>, Vec<(String, i64)>) = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT state, requirement, COUNT(*) FROM requests GROUP BY state, requirement",
                )?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                // Active grants due by now, read by the due index apart from the grouped count
                // its covering index answers: an active grant is due at its expiry warning, so
                // each is judged by its own expiry.
                let mut stmt = c.prepare_cached(
                    "SELECT requirement, body, version FROM requests
                     WHERE due_at <= ?1 AND state = 'active'",
                )?;
                let mut ran_out: Vec<(String, i64)> = Vec::new();
                let due = stmt.query_map(params![ms(now)], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        decode_request(r.get(1)?, r.get(2)?)?,
                    ))
                })?;
                for row in due {
                    let (requirement, request) = row?;
                    if request.expires_at.is_none_or(|e| e > now) {
                        continue;
                    }
                    match ran_out.iter_mut().find(|(r, _)| *r == requirement) {
                        Some((_, n)) => *n += 1,
                        None => ran_out.push((requirement, 1)),
                    }
                }
                Ok((rows, ran_out))
            })
            .await?;
        let mut counts = rows
            .into_iter()
            .map(|(state, requirement, n)| {
                let state = state.parse().map_err(crate::Error::Backend)?;
                Ok((state, requirement, u64::try_from(n).unwrap_or(0)))
            })
            .collect::<Result<Vec<_>>>()?;
        // A grant past its expiry has expired, whether or not the worker has recorded it yet.
        for (requirement, n) in ran_out {
            let n = u64::try_from(n).unwrap_or(0);
            if let Some(active) = counts
                .iter_mut()
                .find(|(s, r, _)| *s == State::Active && *r == requirement)
            {
                active.2 = active.2.saturating_sub(n);
            }
            match counts
                .iter_mut()
                .find(|(s, r, _)| *s == State::Expired && *r == requirement)
            {
                Some(expired) => expired.2 += n,
                None => counts.push((State::Expired, requirement, n)),
            }
        }
        Ok(counts)
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

    pub(super) async fn read_period(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: usize,
    ) -> Result<Period> {
        // A request's id carries its `created_at` (see migration 0008). Before, the id was
        // drawn a little after `created_at` was read, never before: the range reaches past the
        // period's end by `LEGACY_ID_LAG` for those, and `created_at` keeps it exact. Ids are
        // stored as UUIDv7 text, the millisecond first in fixed-width hex, so a millisecond's
        // smallest id sorts above every earlier id and at or below every later one. A lease's
        // key is its grant's id, so the same range finds the period's leases.
        let (first, after) = (
            RequestId::v7(from, [0; 10]).to_string(),
            RequestId::v7(to.saturating_add(LEGACY_ID_LAG), [0; 10]).to_string(),
        );
        let (from, to) = (ms(from), ms(to));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            // One read transaction: the three lists are of the same moment.
            let tx = c.unchecked_transaction()?;
            let requests = tx
                .prepare_cached(
                    "SELECT body, version FROM requests WHERE id >= ?1 AND id < ?2
                       AND created_at >= ?3 AND created_at < ?4
                     ORDER BY id LIMIT ?5",
                )?
                .query_map(params![first, after, from, to, limit], |row| {
                    decode_request(row.get(0)?, row.get(1)?)
                })?
                .collect::<rusqlite::Result<_>>()?;
            let leases = tx
                .prepare_cached(
                    "SELECT body FROM leases WHERE grant_id >= ?1 AND grant_id < ?2
                     ORDER BY grant_id LIMIT ?3",
                )?
                .query_map(params![first, after, limit], |row| json(row.get(0)?))?
                .collect::<rusqlite::Result<_>>()?;
            let postmortems = tx
                .prepare_cached(
                    "SELECT body FROM postmortems WHERE opened_at < ?2
                       AND (opened_at >= ?1 OR closed_at IS NULL OR closed_at >= ?2)
                     ORDER BY opened_at LIMIT ?3",
                )?
                .query_map(params![from, to, limit], |row| json(row.get(0)?))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Period {
                requests,
                leases,
                postmortems,
            })
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
    use warden_domain::Request;

    const T0: OffsetDateTime = datetime!(2026-01-01 10:00 UTC);

    fn request(n: u128, tier: &str, minutes: i64) -> Request {
        let mut d = allowed();
        d.requirement = tier.parse().unwrap();
        request_decided(n, &d, T0 + Duration::minutes(minutes))
    }

    /// The store's request counts, ordered by requirement.
    async fn counts_by_requirement(s: &SqliteStore) -> Vec<(State, String, u64)> {
        let mut counts = s.count_requests(T0).await.unwrap();
        counts.sort_by(|a, b| a.1.cmp(&b.1));
        counts
    }

    fn pending(requirement: &str, n: u64) -> (State, String, u64) {
        (State::Pending, requirement.to_owned(), n)
    }

    /// A grant past its expiry counts as expired before the worker records it, so the metrics
    /// agree with request views and lists.
    #[tokio::test]
    async fn grants_past_their_expiry_count_as_expired_before_they_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("w.db")).unwrap();
        let mut ends = Vec::new();
        for n in 1..=3 {
            let mut r = request(n, "auto", 0);
            r.approve_automatically().unwrap();
            r.activate(None, T0 + Duration::minutes(n as i64)).unwrap();
            // Warned 5 minutes before its end: due then, but not expired.
            r.warn_before("5m".parse().unwrap());
            ends.push(r.expires_at.unwrap());
            s.insert_request(&r, Vec::new().into()).await.unwrap();
        }
        let counted = |now: OffsetDateTime| {
            let s = &s;
            async move {
                let mut c = s.count_requests(now).await.unwrap();
                c.retain(|(_, _, n)| *n > 0);
                c.sort_by_key(|(state, _, _)| state.as_str());
                c
            }
        };
        let by_state = |active: u64, expired: u64| {
            let mut c = Vec::new();
            if active > 0 {
                c.push((State::Active, "auto".to_owned(), active));
            }
            if expired > 0 {
                c.push((State::Expired, "auto".to_owned(), expired));
            }
            c.sort_by_key(|(state, _, _)| state.as_str());
            c
        };
        assert_eq!(counted(T0).await, by_state(3, 0));
        // Every grant's warning is due, none has ended.
        let warned = ends[2] - Duration::minutes(5);
        assert!(warned > ends[0] - Duration::minutes(5) && warned < ends[0]);
        assert_eq!(
            counted(ends[0] - Duration::seconds(1)).await,
            by_state(3, 0)
        );
        assert_eq!(counted(ends[0]).await, by_state(2, 1));
        assert_eq!(counted(ends[2]).await, by_state(0, 3));
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
            s.period(T0 + Duration::minutes(from), T0 + Duration::minutes(to), 10)
        };
        assert_eq!(period(5, 10).await.unwrap().requests.len(), 1);
        assert!(period(10, 15).await.unwrap().requests.is_empty());
    }

    #[tokio::test]
    async fn a_period_holds_its_leases_and_the_postmortems_open_at_its_end() {
        use warden_domain::{Comment, Lease, Link, Postmortem};

        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("w.db")).unwrap();
        let minute = |m: i64| T0 + Duration::minutes(m);
        // Break-glass grants at minutes 0, 20 and 40 with their postmortems; the first is
        // closed at minute 30, the second at minute 50.
        let mut postmortems = Vec::new();
        for (n, at) in [(1, 0), (2, 20), (3, 40)] {
            let r = request(n, "auto", at);
            let pm = Postmortem::open(&r, false, r.created_at);
            let lease = Lease::intent(
                r.id,
                r.requester.clone(),
                r.target.clone(),
                r.role.clone(),
                format!("w_{n}"),
                minute(at + 60),
                r.created_at,
            );
            let change = crate::Change {
                postmortem: Some(pm.clone()),
                lease: Some(lease),
                ..Default::default()
            };
            s.insert_request(&r, change).await.unwrap();
            postmortems.push(pm);
        }
        for (pm, at) in postmortems.iter_mut().zip([30, 50]) {
            let link = Link::parse("https://wiki.example.com/pm").unwrap();
            let grant = s.request(pm.request).await.unwrap().unwrap();
            pm.close(
                &"sam".parse().unwrap(),
                link,
                Comment::parse("done").unwrap(),
                &grant,
                None,
                minute(at),
            )
            .unwrap();
            s.close_postmortem(pm, Vec::new()).await.unwrap();
        }
        let grants = |p: &Period| p.leases.iter().map(|l| l.grant).collect::<Vec<_>>();
        let opened = |p: &Period| p.postmortems.iter().map(|p| p.request).collect::<Vec<_>>();
        let ids: Vec<RequestId> = postmortems.iter().map(|p| p.request).collect();
        // [10, 45): the second and third grants; the first postmortem was closed before the
        // period's end, the second after it.
        let p = s.period(minute(10), minute(45), 10).await.unwrap();
        assert_eq!(grants(&p), ids[1..]);
        assert_eq!(opened(&p), ids[1..]);
        // [35, 60): the third grant; the second postmortem, closed at 50, is open at 35
        // but not at 60.
        let p = s.period(minute(35), minute(60), 10).await.unwrap();
        assert_eq!(grants(&p), ids[2..]);
        assert_eq!(opened(&p), ids[2..]);
        let p = s.period(minute(45), minute(46), 10).await.unwrap();
        assert!(p.requests.is_empty() && p.leases.is_empty());
        assert_eq!(opened(&p), ids[1..]);
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
            .period(T0 + Duration::minutes(5), T0 + Duration::minutes(10), 10)
            .await
            .unwrap()
            .requests;
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

    #[tokio::test]
    async fn break_glass_is_counted_under_its_own_tier_migrated_or_new() {
        use warden_domain::request::{BREAKGLASS_TIER, BreakGlass};
        let breakglass = |n, minutes| {
            let mut r = request(n, "auto", minutes);
            r.breakglass = Some(BreakGlass { drill: false });
            r
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        {
            // As migration 0013 left it: a break-glass request stored under `auto`.
            let c = rusqlite::Connection::open(&path).unwrap();
            for sql in &super::super::MIGRATIONS[..13] {
                c.execute_batch(sql).unwrap();
            }
            c.pragma_update(None, "user_version", 13).unwrap();
            let r = breakglass(1, 0);
            c.execute(
                "INSERT INTO requests (id, requester, target, state, requirement, created_at, version, body)
                 VALUES (?1, 'alice', 'web', 'pending', 'auto', 0, 0, ?2)",
                params![r.id.to_string(), serde_json::to_string(&r).unwrap()],
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        s.insert_request(&breakglass(2, 1), Vec::new().into())
            .await
            .unwrap();
        s.insert_request(&request(3, "auto", 2), Vec::new().into())
            .await
            .unwrap();
        assert_eq!(
            counts_by_requirement(&s).await,
            [pending("auto", 1), pending(BREAKGLASS_TIER, 2)]
        );
    }

    #[tokio::test]
    async fn migration_0012_dates_revoked_leases_from_their_events() {
        use warden_domain::audit::{Actor, Code, Event};
        use warden_domain::{Lease, LeaseState};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let gone = T0 + Duration::milliseconds(90_250);
        let mut leases = Vec::new();
        {
            let s = SqliteStore::open(&path).unwrap();
            // Two revoked leases, one still active; the second's event is not in the log.
            for n in 1..=3 {
                let r = request(n, "auto", 0);
                let mut lease = Lease::intent(
                    r.id,
                    r.requester.clone(),
                    r.target.clone(),
                    r.role.clone(),
                    format!("w_{n}"),
                    T0 + Duration::hours(1),
                    T0,
                );
                lease.activate(T0 + Duration::hours(1));
                if n < 3 {
                    lease.revoked(gone);
                }
                let mut revoked = Event::new(Code::CredentialRevoked, Actor::system(), gone);
                revoked.request_id = Some(r.id);
                let events = if n == 1 { vec![revoked] } else { Vec::new() };
                let change = crate::Change {
                    lease: Some(lease.clone()),
                    events,
                    ..Default::default()
                };
                s.insert_request(&r, change).await.unwrap();
                leases.push(lease);
            }
        }
        {
            // As a server before migration 0012 left them: no revocation time (and what the
            // later migrations add undone).
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(
                "UPDATE leases SET body = json_remove(body, '$.revoked_at');
                 DROP TABLE archived_leaves;
                 DROP INDEX requests_revoked_until;
                 ALTER TABLE requests DROP COLUMN revoked_until;
                 DROP TABLE live_sessions;
                 DROP TABLE outbox_settled;
                 DROP TABLE write_probe;
                 DROP TABLE ssh_user_ca;
                 ALTER TABLE outbox DROP COLUMN skipped;
                 ALTER TABLE user_secrets DROP COLUMN config_hash;
                 ALTER TABLE user_secrets DROP COLUMN password_set_by;
                 PRAGMA user_version = 11;",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let p = s.period(T0, T0 + Duration::minutes(1), 10).await.unwrap();
        let got: Vec<_> = p.leases.iter().map(|l| (l.state, l.revoked_at)).collect();
        assert_eq!(
            got,
            [
                (LeaseState::Revoked, Some(gone)),
                (LeaseState::Revoked, None),
                (LeaseState::Active, None)
            ]
        );
        assert_eq!(p.leases[0].grant, leases[0].grant);
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
