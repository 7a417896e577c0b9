//! Tests of the SQLite store against a real database file.

use time::macros::datetime;
use warden_domain::audit::{Actor, Code, Event};
use warden_domain::decision::Decision;
use warden_domain::request::Ask;
use warden_domain::{Reason, Request, RequestId, State};

use super::SqliteStore;
use crate::{AuditFilter, Error, RequestFilter, Store};

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("w.db")).unwrap();
    (dir, s)
}

fn request(n: u128) -> Request {
    let mut d = Decision::deny(vec![]);
    d.allowed = true;
    d.max_ttl = "1h".parse().unwrap();
    d.pending_timeout = "1h".parse().unwrap();
    Request::new(
        RequestId::from_uuid(uuid::Uuid::from_u128(n)),
        "alice".parse().unwrap(),
        Ask {
            target: "web".parse().unwrap(),
            role: "admin".parse().unwrap(),
            reason: Reason::parse("x").unwrap(),
            ticket: None,
            ttl: "10m".parse().unwrap(),
        },
        &d,
        None,
        None,
        datetime!(2026-01-01 10:00 UTC),
    )
}

fn event(code: Code) -> Event {
    Event::new(code, Actor::system(), datetime!(2026-01-01 10:00 UTC))
}

#[tokio::test]
async fn optimistic_concurrency_writes_nothing_on_conflict() {
    let (_d, s) = store();
    let r = request(1);
    s.insert_request(&r, vec![event(Code::RequestCreated)].into())
        .await
        .unwrap();
    let mut a = s.request(r.id).await.unwrap().unwrap();
    a.approve_automatically().unwrap();
    assert_eq!(
        s.update_request(&a, vec![event(Code::RequestApproved)].into())
            .await
            .unwrap(),
        1
    );
    // A second writer holding the old version loses, and its event is not written.
    let mut stale = r.clone();
    stale
        .cancel(&"alice".parse().unwrap(), datetime!(2026-01-01 10:01 UTC))
        .unwrap();
    assert!(matches!(
        s.update_request(&stale, vec![event(Code::RequestCancelled)].into())
            .await,
        Err(Error::Conflict)
    ));
    let got = s.request(r.id).await.unwrap().unwrap();
    assert_eq!((got.state, got.version), (State::Approved, 1));
    let log = s
        .audit(AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let codes: Vec<_> = log.iter().map(|e| (e.seq, e.event.code)).collect();
    assert_eq!(
        codes,
        vec![(1, Code::RequestCreated), (2, Code::RequestApproved)]
    );
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_fail_alone() {
    let (_d, s) = store();
    let mut tasks = Vec::new();
    for i in 0..200u128 {
        let s = s.clone();
        // Every tenth insert reuses an id and must fail without harming the others.
        let id = if i % 10 == 9 { i - 1 } else { i };
        tasks.push(tokio::spawn(async move {
            s.insert_request(&request(id), vec![event(Code::RequestCreated)].into())
                .await
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if t.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 20);
    let all = s
        .requests(RequestFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 180);
    let log = s
        .audit(AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 180);
    assert!(
        log.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "sequence has gaps"
    );
}

#[tokio::test]
async fn due_and_next_due_follow_state() {
    let (_d, s) = store();
    let r = request(7);
    s.insert_request(&r, vec![].into()).await.unwrap();
    assert_eq!(
        s.next_due().await.unwrap(),
        Some(datetime!(2026-01-01 11:00 UTC))
    );
    assert!(
        s.due(datetime!(2026-01-01 10:59 UTC), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.due(datetime!(2026-01-01 11:00 UTC), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let mut r = s.request(r.id).await.unwrap().unwrap();
    r.approve_automatically().unwrap();
    r.activate(None, datetime!(2026-01-01 10:05 UTC)).unwrap();
    s.update_request(&r, vec![].into()).await.unwrap();
    assert_eq!(
        s.next_due().await.unwrap(),
        Some(datetime!(2026-01-01 10:15 UTC))
    );
}

#[tokio::test]
async fn totp_steps_cannot_be_replayed() {
    let (_d, s) = store();
    let u = "alice".parse().unwrap();
    s.set_totp_pending(&u, "sealed".into(), vec![])
        .await
        .unwrap();
    s.confirm_totp(&u, vec![]).await.unwrap();
    assert!(s.use_totp_step(&u, 100).await.unwrap());
    assert!(!s.use_totp_step(&u, 100).await.unwrap());
    assert!(!s.use_totp_step(&u, 99).await.unwrap());
    assert!(s.use_totp_step(&u, 101).await.unwrap());
    assert_eq!(s.secrets(&u).await.unwrap().totp.as_deref(), Some("sealed"));
}

#[tokio::test]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let r = request(3);
    {
        let s = SqliteStore::open(&path).unwrap();
        s.insert_request(&r, vec![event(Code::RequestCreated)].into())
            .await
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.request(r.id).await.unwrap().unwrap().id, r.id);
    s.append(vec![event(Code::ServerStarted)]).await.unwrap();
    let log = s
        .audit(AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(log.last().unwrap().seq, 2);
}
