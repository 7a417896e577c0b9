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
    request_decided(n, &allowed(), datetime!(2026-01-01 10:00 UTC))
}

/// A decision allowing a request for up to an hour (the figures' tests set its tier).
pub(super) fn allowed() -> Decision {
    let mut d = Decision::deny(vec![]);
    d.allowed = true;
    d.max_ttl = "1h".parse().unwrap();
    d.pending_timeout = "1h".parse().unwrap();
    d
}

/// Request `n` of alice for web/admin, decided by `d` and created at `created`; its id carries
/// that instant, as Warden's do.
pub(super) fn request_decided(n: u128, d: &Decision, created: time::OffsetDateTime) -> Request {
    let low: [u8; 10] = n.to_be_bytes()[6..].try_into().unwrap();
    Request::new(
        RequestId::v7(created, low),
        "alice".parse().unwrap(),
        Ask {
            target: "web".parse().unwrap(),
            role: "admin".parse().unwrap(),
            reason: Reason::parse("x").unwrap(),
            ticket: None,
            ttl: "10m".parse().unwrap(),
        },
        d,
        None,
        None,
        created,
    )
}

/// A checkpoint of `size` events at `time`, its root and frontier left empty.
fn checkpoint_at(size: u64, time: time::OffsetDateTime) -> crate::Checkpoint {
    crate::Checkpoint {
        size,
        root: [0; 32],
        time,
        frontier: Vec::new(),
        note: format!("checkpoint {size}"),
    }
}

/// A checkpoint of `size` events at a fixed time.
fn checkpoint(size: u64) -> crate::Checkpoint {
    checkpoint_at(size, datetime!(2026-01-01 10:00 UTC))
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

/// An idle store proves it takes writes with a row of its own; one that just committed does
/// not write again.
#[tokio::test]
async fn an_idle_store_checks_its_writes_by_writing() {
    let (_d, s) = store();
    let probe = || {
        s.read(|c| {
            c.query_row("SELECT COUNT(*), MAX(at) FROM write_probe", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
            })
        })
    };
    assert_eq!(probe().await.unwrap(), (0, None));
    s.check_writes().await.unwrap();
    let (rows, first) = probe().await.unwrap();
    assert_eq!(rows, 1);
    std::thread::sleep(std::time::Duration::from_millis(5));
    s.check_writes().await.unwrap();
    assert_eq!(
        probe().await.unwrap().1,
        first,
        "a recent commit shows it already"
    );
}

/// A whole read gathers every event past one read's page, or none when they are too many.
#[tokio::test]
async fn a_whole_read_gathers_every_page_or_nothing() {
    let (_d, s) = store();
    let n = crate::READ_MAX + 7;
    s.append((0..n).map(|_| event(Code::TokenRejected)).collect())
        .await
        .unwrap();
    let all = s
        .audit_whole(AuditFilter::default(), n)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.len(), n);
    assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert!(
        s.audit_whole(AuditFilter::default(), n - 1)
            .await
            .unwrap()
            .is_none()
    );
}

/// A batch whose every change failed commits nothing, so it shows nothing of the disk: the
/// next check writes its own row.
#[tokio::test]
async fn a_batch_of_failed_changes_does_not_count_as_a_write() {
    let (_d, s) = store();
    let stale = request(1);
    assert!(matches!(
        s.update_request(&stale, Vec::new().into()).await,
        Err(Error::Conflict)
    ));
    s.check_writes().await.unwrap();
    let rows = s
        .read(|c| {
            c.query_row("SELECT COUNT(*) FROM write_probe", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn requests_are_listed_newest_first_whatever_order_they_were_stored_in() {
    let (_d, s) = store();
    let t0 = datetime!(2026-01-01 10:00 UTC);
    for minutes in [3, 1, 4, 0, 2] {
        let r = request_decided(
            minutes,
            &allowed(),
            t0 + time::Duration::minutes(minutes.try_into().unwrap()),
        );
        s.insert_request(&r, Vec::new().into()).await.unwrap();
    }
    let listed = s
        .requests(RequestFilter {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let minutes: Vec<i64> = listed
        .iter()
        .map(|r| (r.created_at - t0).whole_minutes())
        .collect();
    assert_eq!(minutes, [4, 3, 2]);
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

/// A token for `user`, made at a fixed time.
fn token_of(user: &str) -> crate::Token {
    crate::Token {
        user: user.parse().unwrap(),
        created_at: datetime!(2026-01-01 10:00 UTC),
        expires_at: datetime!(2026-01-01 18:00 UTC),
        revoked: false,
    }
}

fn checked(password_hash: &str, totp: Option<&str>) -> crate::Checked {
    crate::Checked {
        password_hash: password_hash.into(),
        totp: totp.map(Into::into),
    }
}

/// A sign-in clears the tokens that expired over a week before it; those that expired since
/// are still found, and told as expired.
#[tokio::test]
async fn tokens_long_expired_are_cleared_by_a_sign_in() {
    let (_d, s) = store();
    let u = "alice".parse().unwrap();
    s.init_password(&u, "h1".into(), vec![]).await.unwrap();
    let at = |days: i64| crate::Token {
        created_at: datetime!(2026-01-01 10:00 UTC) + time::Duration::days(days),
        expires_at: datetime!(2026-01-01 18:00 UTC) + time::Duration::days(days),
        ..token_of("alice")
    };
    s.insert_token([1; 32], at(0), checked("h1", None), vec![])
        .await
        .unwrap();
    s.insert_token([2; 32], at(5), checked("h1", None), vec![])
        .await
        .unwrap();
    assert!(s.token([1; 32]).await.unwrap().is_some());
    s.insert_token([3; 32], at(9), checked("h1", None), vec![])
        .await
        .unwrap();
    assert_eq!(s.token([1; 32]).await.unwrap(), None);
    assert!(s.token([2; 32]).await.unwrap().is_some());
    assert!(s.token([3; 32]).await.unwrap().is_some());
}

#[tokio::test]
async fn a_token_is_stored_only_while_the_credentials_its_sign_in_checked_hold() {
    use crate::Reset;
    let (_d, s) = store();
    let u = "alice".parse().unwrap();
    s.init_password(&u, "h1".into(), vec![]).await.unwrap();
    let issue = |hash: u8, c: crate::Checked| {
        s.insert_token(
            [hash; 32],
            token_of("alice"),
            c,
            vec![event(Code::LoginSucceeded)],
        )
    };
    issue(1, checked("h1", None)).await.unwrap();
    let reset = Reset::Password {
        hash: "h2".into(),
        set_by: None,
    };
    assert_eq!(s.reset_user(&u, reset, &[], vec![]).await.unwrap(), 1);
    assert!(s.token([1; 32]).await.unwrap().unwrap().revoked);
    let logins = || async {
        let filter = AuditFilter {
            codes: vec![Code::LoginSucceeded],
            limit: 10,
            ..AuditFilter::default()
        };
        s.audit(filter).await.unwrap().len()
    };
    // Checked against the password of before, it finishes after the new one: no token, and
    // no sign-in on record.
    let late = issue(2, checked("h1", None)).await;
    assert!(matches!(late, Err(Error::Conflict)), "{late:?}");
    assert_eq!(s.token([2; 32]).await.unwrap(), None);
    assert_eq!(logins().await, 1);
    issue(3, checked("h2", None)).await.unwrap();
    // A second factor bound meanwhile, or removed meanwhile, is a change too.
    s.set_totp_pending(&u, "sealed".into(), vec![])
        .await
        .unwrap();
    s.confirm_totp(&u, vec![]).await.unwrap();
    let without_code = issue(4, checked("h2", None)).await;
    assert!(matches!(without_code, Err(Error::Conflict)));
    issue(5, checked("h2", Some("sealed"))).await.unwrap();
    s.reset_user(&u, Reset::SecondFactor, &[], vec![])
        .await
        .unwrap();
    assert_eq!(s.secrets(&u).await.unwrap().totp, None);
    let old_factor = issue(6, checked("h2", Some("sealed"))).await;
    assert!(matches!(old_factor, Err(Error::Conflict)));
    // Offboarded: no password matches, and no sign-in that began before gets a token.
    s.reset_user(&u, Reset::Offboarded, &[], vec![])
        .await
        .unwrap();
    assert_eq!(s.offboarded_users().await.unwrap(), [u]);
    let offboarded = issue(7, checked("h2", None)).await;
    assert!(matches!(offboarded, Err(Error::Conflict)));
    // A user the store knows nothing of earns nothing.
    let unknown = s
        .insert_token([8; 32], token_of("bob"), checked("h1", None), vec![])
        .await;
    assert!(matches!(unknown, Err(Error::Conflict)));
    assert_eq!(logins().await, 3);
}

/// Who last set a password is kept with it: the administrator who set another's, no one for
/// one's own, the config's or the bootstrap's, and no one once an offboarding disabled it.
#[tokio::test]
async fn the_administrator_who_set_a_password_is_kept_with_it() {
    use crate::Reset;
    let (_d, s) = store();
    let (sam, admin): (warden_domain::UserName, warden_domain::UserName) =
        ("sam".parse().unwrap(), "admin".parse().unwrap());
    assert!(s.init_password(&sam, "h1".into(), vec![]).await.unwrap());
    assert_eq!(s.secrets(&sam).await.unwrap().password_set_by, None);
    let by = |hash: &str, set_by: Option<&warden_domain::UserName>| Reset::Password {
        hash: hash.into(),
        set_by: set_by.cloned(),
    };
    s.reset_user(&sam, by("h2", Some(&admin)), &[], vec![])
        .await
        .unwrap();
    assert_eq!(
        s.secrets(&sam).await.unwrap().password_set_by,
        Some(admin.clone())
    );
    // A second factor reset leaves the password, and who set it, as they were.
    s.reset_user(&sam, Reset::SecondFactor, &[], vec![])
        .await
        .unwrap();
    assert_eq!(
        s.secrets(&sam).await.unwrap().password_set_by,
        Some(admin.clone())
    );
    s.reset_user(&sam, by("h3", None), &[], vec![])
        .await
        .unwrap();
    assert_eq!(s.secrets(&sam).await.unwrap().password_set_by, None);
    s.reset_user(&sam, by("h4", Some(&admin)), &[], vec![])
        .await
        .unwrap();
    s.reset_user(&sam, Reset::Offboarded, &[], vec![])
        .await
        .unwrap();
    assert_eq!(s.secrets(&sam).await.unwrap().password_set_by, None);
    // A user with no secrets at all has no one's password.
    assert_eq!(s.secrets(&admin).await.unwrap().password_set_by, None);
}

#[tokio::test]
async fn a_reset_removes_the_users_ssh_keys_as_found_or_nothing() {
    use crate::{Reset, SshKey};
    let (_d, s) = store();
    let (alice, bob): (warden_domain::UserName, warden_domain::UserName) =
        ("alice".parse().unwrap(), "bob".parse().unwrap());
    let key = |user: &warden_domain::UserName, fp: &str| SshKey {
        fingerprint: fp.into(),
        user: user.clone(),
        public_key: format!("ssh-ed25519 {fp}"),
        added_at: datetime!(2026-01-01 10:00 UTC),
    };
    for k in [
        key(&alice, "SHA256:a1"),
        key(&alice, "SHA256:a2"),
        key(&bob, "SHA256:b1"),
    ] {
        s.add_ssh_key(&k, vec![]).await.unwrap();
    }
    s.init_password(&alice, "h1".into(), vec![]).await.unwrap();
    s.insert_token([1; 32], token_of("alice"), checked("h1", None), vec![])
        .await
        .unwrap();
    // One registered since the caller looked: nothing is changed, and the caller looks again.
    let stale = s
        .reset_user(
            &alice,
            Reset::Password {
                hash: "h2".into(),
                set_by: None,
            },
            &["SHA256:a1".into()],
            vec![event(Code::PasswordSet)],
        )
        .await;
    assert!(matches!(stale, Err(Error::Conflict)), "{stale:?}");
    assert_eq!(s.ssh_keys(&alice).await.unwrap().len(), 2);
    assert_eq!(
        s.secrets(&alice).await.unwrap().password_hash.as_deref(),
        Some("h1")
    );
    assert!(!s.token([1; 32]).await.unwrap().unwrap().revoked);
    let found = ["SHA256:a2".to_owned(), "SHA256:a1".to_owned()];
    s.reset_user(
        &alice,
        Reset::Password {
            hash: "h2".into(),
            set_by: None,
        },
        &found,
        vec![],
    )
    .await
    .unwrap();
    assert!(s.ssh_keys(&alice).await.unwrap().is_empty());
    assert!(s.token([1; 32]).await.unwrap().unwrap().revoked);
    assert_eq!(s.ssh_keys(&bob).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_departed_user_is_forgotten_so_that_one_put_back_starts_afresh() {
    use crate::{Reset, SshKey};
    let (_d, s) = store();
    let (alice, bob): (warden_domain::UserName, warden_domain::UserName) =
        ("alice".parse().unwrap(), "bob".parse().unwrap());
    s.init_password(&alice, "h1".into(), vec![]).await.unwrap();
    s.set_config_hash(&alice, "h1".into()).await.unwrap();
    s.set_totp_pending(&alice, "sealed".into(), vec![])
        .await
        .unwrap();
    s.confirm_totp(&alice, vec![]).await.unwrap();
    let k = SshKey {
        fingerprint: "SHA256:k".into(),
        user: bob.clone(),
        public_key: "ssh-ed25519 k".into(),
        added_at: datetime!(2026-01-01 10:00 UTC),
    };
    s.add_ssh_key(&k, vec![]).await.unwrap();
    let mut known = s.users_with_credentials().await.unwrap();
    known.sort();
    assert_eq!(known, [alice.clone(), bob.clone()]);
    s.reset_user(&alice, Reset::Departed, &[], vec![])
        .await
        .unwrap();
    s.reset_user(&bob, Reset::Departed, &["SHA256:k".into()], vec![])
        .await
        .unwrap();
    assert!(s.users_with_credentials().await.unwrap().is_empty());
    assert_eq!(
        s.secrets(&alice).await.unwrap(),
        crate::UserSecrets::default()
    );
    // Put back, the config's password is theirs, as for a new user.
    assert!(s.init_password(&alice, "h3".into(), vec![]).await.unwrap());
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

#[tokio::test]
async fn notices_are_queued_with_their_change_retried_and_delivered_once() {
    use warden_domain::notice::Kind;
    use warden_domain::{Audience, Notice};

    let (_d, s) = store();
    let r = request(7);
    let at = datetime!(2026-01-01 10:00 UTC);
    let notice = Notice::about(
        uuid::Uuid::from_u128(99),
        &r,
        Kind::ApprovalNeeded,
        Audience::Approvers,
        vec!["bob".parse().unwrap()],
        at,
    );
    let out = |sink: &str| crate::Outgoing {
        sink: sink.into(),
        notice: notice.clone(),
    };
    // A change that fails writes no notice.
    s.insert_request(&r, vec![event(Code::RequestCreated)].into())
        .await
        .unwrap();
    let dup = crate::Change {
        notices: vec![out("hook")],
        ..Default::default()
    };
    assert!(s.insert_request(&r, dup).await.is_err());
    assert_eq!(s.outbox_status().await.unwrap().pending, 0);

    let mut r2 = s.request(r.id).await.unwrap().unwrap();
    r2.approve_automatically().unwrap();
    let change = crate::Change {
        events: vec![event(Code::RequestApproved)],
        notices: vec![out("hook"), out("mail")],
        ..Default::default()
    };
    s.update_request(&r2, change).await.unwrap();
    let due = s.due_notices(at, 10, &[]).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].notice, notice);
    assert_eq!(s.next_notice_due().await.unwrap(), Some(at));
    // One notification for two sinks is one pending notification, and each sink waits for it.
    let status = s.outbox_status().await.unwrap();
    assert_eq!((status.pending, status.retrying), (1, 0));
    assert_eq!(
        status.by_sink.iter().map(|b| b.pending).collect::<Vec<_>>(),
        [1, 1]
    );

    // A failure reschedules one sink's row; the other is delivered.
    let later = datetime!(2026-01-01 10:05 UTC);
    s.notice_failed(
        notice.id,
        "hook",
        1,
        later,
        "down",
        &crate::Reached::default(),
        vec![event(Code::NotificationFailed)],
    )
    .await
    .unwrap();
    s.notice_delivered(notice.id, "mail", at, false, Vec::new())
        .await
        .unwrap();
    assert!(s.due_notices(at, 10, &[]).await.unwrap().is_empty());
    let status = s.outbox_status().await.unwrap();
    // Delivered to one sink and waiting at the other: pending, not yet delivered.
    assert_eq!(
        (status.pending, status.retrying, status.delivered),
        (1, 1, 0)
    );
    assert_eq!(status.oldest_pending, Some(at));
    let retry = s.due_notices(later, 10, &[]).await.unwrap();
    assert_eq!(
        (retry.len(), retry[0].attempts, retry[0].sink.as_str()),
        (1, 1, "hook")
    );
    // Dropped unsent at its retry (it no longer applied): done with, but not delivered.
    s.notice_delivered(notice.id, "hook", later, true, Vec::new())
        .await
        .unwrap();
    // A late failure report for a done row changes nothing.
    s.notice_failed(
        notice.id,
        "hook",
        2,
        later,
        "late",
        &crate::Reached::default(),
        Vec::new(),
    )
    .await
    .unwrap();
    let status = s.outbox_status().await.unwrap();
    // Delivered where it still applied: delivered; skipped counts what no sink sent.
    assert_eq!(
        (status.pending, status.delivered, status.skipped),
        (0, 1, 0)
    );
    assert_eq!(s.next_notice_due().await.unwrap(), None);
    // Settled, it is counted and its rows are gone: the outbox holds only what is on its way,
    // so what a scrape reads does not grow with the server's age. A late report of it, even
    // one saying it was delivered, counts nothing again.
    s.notice_delivered(notice.id, "hook", later, false, Vec::new())
        .await
        .unwrap();
    let status = s.outbox_status().await.unwrap();
    assert_eq!((status.delivered, status.skipped), (1, 0));
    let left: i64 = s
        .read(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// Whom a failed attempt reached is kept with the queued notice, across a restart, until the
/// next attempt's outcome replaces it; the notice itself reads back as it was queued.
#[tokio::test]
async fn whom_a_failed_attempt_reached_is_kept_for_the_retry_across_a_restart() {
    use warden_domain::notice::Kind;
    use warden_domain::{Audience, Notice};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let s = SqliteStore::open(&path).unwrap();
    let r = request(8);
    let at = datetime!(2026-01-01 10:00 UTC);
    let notice = Notice::about(
        uuid::Uuid::from_u128(98),
        &r,
        Kind::BreakGlass,
        Audience::Security,
        vec!["sam".parse().unwrap(), "dana".parse().unwrap()],
        at,
    );
    let change = crate::Change {
        events: vec![event(Code::RequestCreated)],
        notices: vec![crate::Outgoing {
            sink: "mail".into(),
            notice: notice.clone(),
        }],
        ..Default::default()
    };
    s.insert_request(&r, change).await.unwrap();
    assert_eq!(
        s.due_notices(at, 10, &[]).await.unwrap()[0].reached,
        crate::Reached::default()
    );

    let reached = crate::Reached {
        sent: ["dana@example.com".to_owned()].into(),
        refused: [(
            "erin@example.com".to_owned(),
            "550 5.1.1 no such user".to_owned(),
        )]
        .into(),
    };
    let later = datetime!(2026-01-01 10:01 UTC);
    s.notice_failed(notice.id, "mail", 1, later, "451", &reached, Vec::new())
        .await
        .unwrap();
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    let due = s.due_notices(later, 10, &[]).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((&due[0].notice, &due[0].reached), (&notice, &reached));
    assert!(due[0].reached.settled("dana@example.com"));
    assert!(due[0].reached.settled("erin@example.com"));
    assert!(!due[0].reached.settled("sam@example.com"));

    // The next failure's record replaces it, an empty one too.
    s.notice_failed(
        notice.id,
        "mail",
        2,
        later,
        "down",
        &crate::Reached::default(),
        Vec::new(),
    )
    .await
    .unwrap();
    let due = s.due_notices(later, 10, &[]).await.unwrap();
    assert_eq!((&due[0].notice, due[0].attempts), (&notice, 2));
    assert_eq!(due[0].reached, crate::Reached::default());
}

/// Due notices are read in turns, each sink's oldest first, and none of a sink said to be busy:
/// many waiting for one sink fill no other's share of the read.
#[tokio::test]
async fn due_notices_are_read_sink_by_sink_but_for_the_busy_ones() {
    use warden_domain::notice::Kind;
    use warden_domain::{Audience, Notice};

    let (_d, s) = store();
    let r = request(8);
    let at = datetime!(2026-01-01 10:00 UTC);
    let queued = |n: u128, sink: &str| crate::Outgoing {
        sink: sink.into(),
        notice: Notice::about(
            uuid::Uuid::from_u128(n),
            &r,
            Kind::ApprovalNeeded,
            Audience::Approvers,
            Vec::new(),
            at + time::Duration::seconds(i64::try_from(n).unwrap()),
        ),
    };
    let change = crate::Change {
        events: vec![event(Code::RequestCreated)],
        notices: (1..=5)
            .map(|n| queued(n, "hole"))
            .chain([queued(6, "mail")])
            .collect(),
        ..Default::default()
    };
    s.insert_request(&r, change).await.unwrap();
    let later = at + time::Duration::minutes(1);
    let read = |due: Vec<crate::Delivery>| {
        due.iter()
            .map(|d| (d.sink.clone(), d.notice.id.as_u128()))
            .collect::<Vec<_>>()
    };
    let hole = |n| ("hole".to_owned(), n);
    let mail = |n| ("mail".to_owned(), n);
    assert_eq!(
        read(s.due_notices(later, 3, &[]).await.unwrap()),
        [hole(1), mail(6), hole(2)]
    );
    assert_eq!(
        read(s.due_notices(later, 10, &[]).await.unwrap()),
        [hole(1), mail(6), hole(2), hole(3), hole(4), hole(5)]
    );
    assert_eq!(
        read(s.due_notices(later, 3, &["hole".to_owned()]).await.unwrap()),
        [mail(6)]
    );
    assert_eq!(
        read(s.due_notices(later, 3, &["mail".to_owned()]).await.unwrap()),
        [hole(1), hole(2), hole(3)]
    );
}

/// A store from before migration 0020 keeps its counts of settled notices, and loses their
/// rows; notices still on their way stay.
#[tokio::test]
async fn settled_notices_are_counted_and_removed_by_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "DROP TABLE outbox_settled; DROP TABLE write_probe; DROP TABLE ssh_user_ca;
             ALTER TABLE user_secrets DROP COLUMN password_set_by;
             PRAGMA user_version = 19;
             INSERT INTO outbox (notice_id, sink, created_at, due_at, delivered_at, body, skipped)
             VALUES ('a', 'hook', 1, NULL, 2, '{}', 0), ('a', 'mail', 1, NULL, 2, '{}', 1),
                    ('b', 'hook', 1, NULL, 2, '{}', 1),
                    ('c', 'hook', 1, NULL, 2, '{}', 0), ('c', 'mail', 1, 5, NULL, '{}', 0);",
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let status = s.outbox_status().await.unwrap();
    assert_eq!(
        (status.pending, status.delivered, status.skipped),
        (1, 1, 1)
    );
    let left: Vec<String> = s
        .read(|c| {
            c.prepare("SELECT notice_id || '/' || sink FROM outbox ORDER BY 1")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(left, ["c/hook", "c/mail"]);
}

#[tokio::test]
async fn postmortems_open_with_their_grant_and_close_once() {
    use warden_domain::{Comment, Link, Postmortem};

    let (_d, s) = store();
    let at = datetime!(2026-01-01 10:00 UTC);
    let mut drill = None;
    for (n, is_drill) in [(1, false), (2, true), (3, true)] {
        let mut r = request(n);
        if n == 3 {
            r.requester = "bob".parse().unwrap();
        }
        let pm = Postmortem::open(&r, is_drill, at + time::Duration::minutes(n as i64));
        if is_drill {
            drill = Some(pm.clone());
        }
        let change = crate::Change {
            postmortem: Some(pm),
            events: vec![event(Code::PostmortemOpened)],
            ..Default::default()
        };
        s.insert_request(&r, change).await.unwrap();
    }
    assert_eq!(s.open_postmortems().await.unwrap(), 3);
    let drills = s.last_drills().await.unwrap();
    assert_eq!(drills.len(), 1);
    assert_eq!(drills[0].request, drill.unwrap().request);
    assert_eq!(drills[0].at, at + time::Duration::minutes(3));

    let mut pm = s.postmortem(request(1).id).await.unwrap().unwrap();
    let grant = s.request(pm.request).await.unwrap().unwrap();
    let stale = pm.clone();
    pm.close(
        &"sam".parse().unwrap(),
        Link::parse("https://wiki/pm/1").unwrap(),
        Comment::parse("learned").unwrap(),
        &grant,
        None,
        at,
    )
    .unwrap();
    s.close_postmortem(&pm, vec![event(Code::PostmortemClosed)])
        .await
        .unwrap();
    let mut again = stale;
    again
        .close(
            &"sam".parse().unwrap(),
            Link::parse("https://wiki/pm/2").unwrap(),
            Comment::parse("twice").unwrap(),
            &grant,
            None,
            at,
        )
        .unwrap();
    assert!(matches!(
        s.close_postmortem(&again, vec![event(Code::PostmortemClosed)])
            .await,
        Err(Error::Conflict)
    ));
    assert_eq!(s.open_postmortems().await.unwrap(), 2);
    assert_eq!(s.postmortems(true, None, None, 10).await.unwrap().len(), 2);
    let all = s.postmortems(false, None, None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    // Page by page, newest first: the next starts before the id the last ended with.
    let first = s.postmortems(false, None, None, 2).await.unwrap();
    let next = s
        .postmortems(false, None, Some(first[1].request), 2)
        .await
        .unwrap();
    let paged: Vec<_> = first.iter().chain(&next).map(|p| p.request).collect();
    assert_eq!(paged, all.iter().map(|p| p.request).collect::<Vec<_>>());
    // One's own, however many others' are newer.
    let bob = "bob".parse().unwrap();
    let alice = "alice".parse().unwrap();
    assert_eq!(
        s.postmortems(false, Some(&alice), None, 1).await.unwrap()[0].request,
        request(2).id
    );
    let bobs = s.postmortems(false, Some(&bob), None, 10).await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].request, request(3).id);
    assert_eq!(
        all[2].closed.as_ref().unwrap().link.as_str(),
        "https://wiki/pm/1"
    );
}

#[tokio::test]
async fn the_log_is_checkpointed_off_the_commit_path_and_stays_small() {
    let (dir, s) = store();
    // Far more than SQLite's own limit of 1000 pages, had nothing checkpointed.
    for n in 0..3000 {
        s.insert_request(&request(n), vec![event(Code::RequestCreated)].into())
            .await
            .unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("w.db-wal"))
        .unwrap()
        .len();
    assert!(wal < 32 << 20, "the write-ahead log grew to {wal} bytes");
    let all = RequestFilter {
        limit: 5000,
        ..RequestFilter::default()
    };
    assert_eq!(s.requests(all).await.unwrap().len(), 3000);
}

#[tokio::test]
async fn new_databases_use_small_pages_and_old_ones_keep_theirs() {
    let page_size = |path: &std::path::Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap()
    };
    let (dir, s) = store();
    s.insert_request(&request(1), vec![event(Code::RequestCreated)].into())
        .await
        .unwrap();
    assert_eq!(page_size(&dir.path().join("w.db")), super::PAGE_SIZE);

    // A database created with SQLite's default page size opens, and stays as it was.
    let old = dir.path().join("old.db");
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute_batch("PRAGMA page_size=4096; CREATE TABLE t (x);")
        .unwrap();
    let s = SqliteStore::open(&old).unwrap();
    s.insert_request(&request(2), vec![event(Code::RequestCreated)].into())
        .await
        .unwrap();
    assert_eq!(
        s.request(request(2).id).await.unwrap().unwrap().id,
        request(2).id
    );
    assert_eq!(page_size(&old), 4096);
}

#[tokio::test]
async fn the_archive_cutoff_is_the_newest_checkpoint_made_before_it() {
    let (dir, s) = store();
    let at = |minute: u8| datetime!(2026-01-01 10:00 UTC) + time::Duration::minutes(minute.into());
    for (size, minute) in [(3, 0), (7, 10), (12, 20)] {
        s.insert_checkpoint(checkpoint_at(size, at(minute)), Vec::new())
            .await
            .unwrap();
    }
    let size_before = async |minute| {
        s.checkpoint_before(at(minute))
            .await
            .unwrap()
            .map(|c| c.size)
    };
    assert_eq!(size_before(0).await, None);
    assert_eq!(size_before(10).await, Some(3));
    assert_eq!(size_before(11).await, Some(7));
    assert_eq!(size_before(30).await, Some(12));
    // Held back to what every export sink has delivered.
    for (most, size) in [(2, None), (3, Some(3)), (11, Some(7)), (u64::MAX, Some(12))] {
        let found = s.checkpoint_at_most(most).await.unwrap().map(|c| c.size);
        assert_eq!(found, size, "at most {most}");
    }

    // Found through the index on time, not by reading every checkpoint since.
    let c = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
    let plan: String = c
        .query_row(
            &format!("EXPLAIN QUERY PLAN {}", super::CHECKPOINT_BEFORE),
            [0],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("INDEX checkpoints_time"), "{plan}");
}

#[tokio::test]
async fn live_requests_are_found_by_state_and_listed_newest_first() {
    let (dir, s) = store();
    let t0 = datetime!(2026-01-01 10:00 UTC);
    // Minutes 0..12: every third one still pending, the one after it approved, the rest
    // cancelled.
    for minute in 0..12u8 {
        let created = t0 + time::Duration::minutes(minute.into());
        let mut r = request_decided(minute.into(), &allowed(), created);
        match minute % 3 {
            0 => {}
            1 => r.approve_automatically().unwrap(),
            _ => r.cancel(&"alice".parse().unwrap(), created).unwrap(),
        }
        s.insert_request(&r, Vec::new().into()).await.unwrap();
    }
    let minutes = |states: Vec<State>, limit: usize| {
        let s = s.clone();
        async move {
            s.requests(RequestFilter {
                states,
                limit,
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|r| (r.created_at - t0).whole_minutes())
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(minutes(vec![State::Pending], 10).await, [9, 6, 3, 0]);
    assert_eq!(minutes(vec![State::Pending], 2).await, [9, 6]);
    assert_eq!(
        minutes(vec![State::Pending, State::Approved], 3).await,
        [10, 9, 7]
    );
    assert_eq!(minutes(vec![State::Cancelled], 3).await, [11, 8, 5]);
    assert_eq!(
        minutes(vec![State::Pending, State::Cancelled], 3).await,
        [11, 9, 8]
    );
    assert_eq!(minutes(Vec::new(), 2).await, [11, 10]);

    // Live states are read through the state index, not by walking the whole history.
    let plan = |sql: &str| -> String {
        let db = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        let mut stmt = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // LIST_ANY takes one more: the time active grants must be due by.
        let params = rusqlite::params![
            None::<String>,
            None::<String>,
            "[\"pending\"]",
            10,
            None::<String>,
            None::<i64>
        ];
        let n = stmt.parameter_count();
        stmt.query_map(&params[..n], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .join("; ")
    };
    let live = plan(super::LIST_LIVE);
    assert!(
        live.contains("USING INDEX requests_state_requirement"),
        "{live}"
    );
    let any = plan(super::LIST_ANY);
    assert!(
        any.contains("SCAN requests USING INDEX sqlite_autoindex"),
        "{any}"
    );
}

/// Asked for expired requests, the store gives the active grants due by now too, for the
/// caller to keep those whose expiry passed before the worker recorded it; not those due
/// later, and none twice however the pages fall.
#[tokio::test]
async fn expired_requests_come_with_the_active_grants_whose_expiry_may_have_passed() {
    let (_dir, s) = store();
    let now = warden_domain::to_millisecond(time::OffsetDateTime::now_utc());
    let granted = |n: u128, created: time::OffsetDateTime| {
        let mut r = request_decided(n, &allowed(), created);
        r.approve_automatically().unwrap();
        r.activate(None, created).unwrap();
        r
    };
    // Oldest first: one expired on record, one past its expiry unrecorded, one still running,
    // one revoked.
    let mut recorded = granted(1, now - time::Duration::hours(3));
    recorded.expire(recorded.expires_at.unwrap()).unwrap();
    let unrecorded = granted(2, now - time::Duration::hours(2));
    let running = granted(3, now - time::Duration::minutes(1));
    let mut revoked = granted(4, now - time::Duration::seconds(30));
    revoked
        .revoke(None, warden_domain::Comment::parse("done").unwrap(), now)
        .unwrap();
    for r in [&recorded, &unrecorded, &running, &revoked] {
        s.insert_request(r, Vec::new().into()).await.unwrap();
    }
    let listed = |states: Vec<State>, limit: usize, before: Option<RequestId>| {
        let s = s.clone();
        async move {
            s.requests(RequestFilter {
                states,
                limit,
                before,
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(vec![State::Expired], 10, None).await,
        [unrecorded.id, recorded.id]
    );
    assert_eq!(listed(vec![State::Expired], 1, None).await, [unrecorded.id]);
    assert_eq!(
        listed(vec![State::Expired], 10, Some(unrecorded.id)).await,
        [recorded.id]
    );
    assert_eq!(
        listed(vec![State::Expired, State::Revoked], 10, None).await,
        [revoked.id, unrecorded.id, recorded.id]
    );
    // Active ones are listed as stored: the caller leaves out those that ran out.
    assert_eq!(
        listed(vec![State::Active], 10, None).await,
        [running.id, unrecorded.id]
    );
    assert_eq!(
        listed(vec![State::Expired, State::Active], 10, None).await,
        [running.id, unrecorded.id, recorded.id]
    );
}

#[tokio::test]
async fn the_audit_search_takes_several_codes_at_once() {
    let (_d, s) = store();
    let codes = [
        Code::RequestCreated,
        Code::RequestApproved,
        Code::CredentialRevoked,
        Code::RequestCreated,
        Code::CredentialRevoked,
    ];
    s.append(codes.iter().map(|c| event(*c)).collect())
        .await
        .unwrap();
    let found = |codes: Vec<Code>| {
        let s = s.clone();
        async move {
            s.audit(AuditFilter {
                codes,
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|e| (e.seq, e.event.code))
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        found(vec![Code::CredentialRevoked, Code::RequestApproved]).await,
        [
            (2, Code::RequestApproved),
            (3, Code::CredentialRevoked),
            (5, Code::CredentialRevoked)
        ]
    );
    assert_eq!(found(Vec::new()).await.len(), 5);
}

/// Event times are whole milliseconds; a bound with a fraction of one takes in exactly the
/// events at or after it (`from`) or before it (`to`), never one a millisecond off.
#[tokio::test]
async fn the_audit_search_bounds_keep_their_fraction_of_a_millisecond() {
    let (_d, s) = store();
    let times = [
        datetime!(2026-01-01 12:10:45.241 UTC),
        datetime!(2026-01-01 12:10:45.242 UTC),
        datetime!(2026-01-01 12:10:47.026 UTC),
        datetime!(2026-01-01 12:10:47.027 UTC),
        datetime!(2026-01-01 12:10:47.028 UTC),
    ];
    let events = times
        .iter()
        .map(|t| Event::new(Code::RequestCreated, Actor::system(), *t))
        .collect();
    s.append(events).await.unwrap();
    let found = |from, to| {
        let s = s.clone();
        async move {
            s.audit(AuditFilter {
                from,
                to,
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        found(Some(datetime!(2026-01-01 12:10:45.2415 UTC)), None).await,
        [2, 3, 4, 5],
        "45.241 is before the bound"
    );
    assert_eq!(
        found(None, Some(datetime!(2026-01-01 12:10:47.0271 UTC))).await,
        [1, 2, 3, 4],
        "47.027 is before the bound"
    );
    assert_eq!(
        found(
            Some(datetime!(2026-01-01 12:10:45.2411 UTC)),
            Some(datetime!(2026-01-01 12:10:45.2419 UTC))
        )
        .await,
        Vec::<u64>::new(),
        "no event lies between two bounds inside one millisecond"
    );
    assert_eq!(
        found(
            Some(datetime!(2026-01-01 12:10:45.241 UTC)),
            Some(datetime!(2026-01-01 12:10:45.2415 UTC))
        )
        .await,
        [1]
    );
    // Whole milliseconds bound as they always did.
    assert_eq!(
        found(
            Some(datetime!(2026-01-01 12:10:45.242 UTC)),
            Some(datetime!(2026-01-01 12:10:47.027 UTC))
        )
        .await,
        [2, 3]
    );
}

#[tokio::test]
async fn block_roots_are_read_in_order_up_to_the_first_missing_one() {
    let (_dir, s) = store();
    s.insert_checkpoint(checkpoint(2048), vec![(0, [1; 32]), (1, [2; 32])])
        .await
        .unwrap();
    // Block 2 never stored (as in a log older than stored blocks), block 3 stored.
    s.insert_checkpoint(checkpoint(4096), vec![(3, [4; 32]), (1, [9; 32])])
        .await
        .unwrap();
    assert_eq!(s.block_roots(0).await.unwrap(), Vec::<[u8; 32]>::new());
    assert_eq!(s.block_roots(1).await.unwrap(), vec![[1; 32]]);
    // A block already stored keeps its root.
    assert_eq!(s.block_roots(2).await.unwrap(), vec![[1; 32], [2; 32]]);
    assert_eq!(s.block_roots(4).await.unwrap(), vec![[1; 32], [2; 32]]);
    // A refused checkpoint stores no block either.
    assert!(
        s.insert_checkpoint(checkpoint(4096), vec![(2, [3; 32])])
            .await
            .is_err()
    );
    assert_eq!(s.block_roots(4).await.unwrap().len(), 2);
}

#[tokio::test]
async fn searches_by_name_read_only_the_blocks_that_may_hold_it() {
    let (dir, s) = store();
    // 3500 events: request k's twelve events in a row, seven users and five targets around.
    let ids: Vec<RequestId> = (0..300u128)
        .map(|k| request_decided(k, &allowed(), datetime!(2026-01-01 10:00 UTC)).id)
        .collect();
    let events: Vec<Event> = (0..3500usize)
        .map(|i| {
            let mut e = event(Code::RequestCreated);
            e.actor = Actor::user(format!("user{}", i % 7).parse().unwrap(), None);
            e.target = Some(format!("t{}", i % 5).parse().unwrap());
            e.request_id = Some(ids[i / 12]);
            e
        })
        .collect();
    for chunk in events.chunks(500) {
        s.append(chunk.to_vec()).await.unwrap();
    }
    // Blocks 0 and 2 have filters; block 1 has none, as in a log older than them.
    s.insert_checkpoint(checkpoint(3500), vec![(0, [0; 32]), (2, [0; 32])])
        .await
        .unwrap();

    let c = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
    let first = ids[0].to_string();
    let first = [super::block_keys::Key::Request(&first)];
    let candidates = |from, chunk| {
        let got = super::audit_search::candidate_ranges(&c, &first, 0, from, chunk).unwrap();
        (got.ranges, got.resume)
    };
    assert_eq!(
        candidates(0, 256),
        (vec![(0, 2048), (3072, i64::MAX)], None),
        "block 2 cannot hold request 0; block 1 has no filter"
    );
    // One filter at a time: each chunk ends after the block of its filter.
    assert_eq!(candidates(0, 1), (vec![(0, 1024)], Some(1)));
    assert_eq!(candidates(1, 1), (vec![(1024, 2048)], Some(3)));
    assert_eq!(candidates(3, 1), (vec![(3072, i64::MAX)], None));

    let expected = |f: &dyn Fn(&Event) -> bool, after: u64, limit: usize| -> Vec<u64> {
        (1..=3500u64)
            .zip(&events)
            .filter(|(seq, e)| *seq > after && f(e))
            .map(|(seq, _)| seq)
            .take(limit)
            .collect()
    };
    let found = |filter: AuditFilter| {
        let s = s.clone();
        let by_ones = super::audit_search::search_by_chunks(&c, &filter, 1).unwrap();
        async move {
            let events = s.audit(filter).await.unwrap();
            let seqs = events.iter().map(|e| e.seq).collect::<Vec<u64>>();
            let by_ones: Vec<u64> = by_ones.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, by_ones, "read one filter at a time");
            seqs
        }
    };
    for k in [0usize, 85, 170, 255, 291] {
        let filter = AuditFilter {
            request: Some(ids[k]),
            limit: 100,
            ..Default::default()
        };
        let want = expected(&|e| e.request_id == Some(ids[k]), 0, 100);
        assert_eq!(found(filter).await, want, "request {k}");
    }
    let user3 = |e: &Event| e.actor.user.as_ref().is_some_and(|u| u.as_str() == "user3");
    let filter = AuditFilter {
        user: Some("user3".parse().unwrap()),
        target: Some("t2".parse().unwrap()),
        after_seq: Some(1000),
        limit: 40,
        ..Default::default()
    };
    let want = expected(
        &|e| user3(e) && e.target.as_ref().is_some_and(|t| t.as_str() == "t2"),
        1000,
        40,
    );
    assert_eq!(found(filter).await, want);
    let filter = AuditFilter {
        user: Some("nobody".parse().unwrap()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(found(filter).await, Vec::<u64>::new());

    // A filter emptied by hand hides its block; once an archive cut into the block, verify
    // can no longer rebuild its filter, so it is not trusted at all.
    let second = ids[1].to_string();
    let second = [super::block_keys::Key::Request(&second)];
    let candidates = || {
        super::audit_search::candidate_ranges(&c, &second, 0, 0, 256)
            .unwrap()
            .ranges
    };
    c.execute_batch("UPDATE audit_blocks SET keys = zeroblob(4096) WHERE block = 0")
        .unwrap();
    assert_eq!(candidates(), vec![(1024, 2048), (3072, i64::MAX)]);
    c.execute_batch("DELETE FROM audit WHERE seq <= 5").unwrap();
    assert_eq!(candidates(), vec![(0, 2048), (3072, i64::MAX)]);
}

#[tokio::test]
async fn blocks_without_roots_are_the_live_logs_gaps_and_can_be_filled_in() {
    let (dir, s) = store();
    let events: Vec<Event> = (0..5000).map(|_| event(Code::RequestCreated)).collect();
    for chunk in events.chunks(1000) {
        s.append(chunk.to_vec()).await.unwrap();
    }
    // Blocks 0 and 2 completed before blocks were stored.
    s.insert_checkpoint(checkpoint(5000), vec![(1, [1; 32]), (3, [3; 32])])
        .await
        .unwrap();
    assert_eq!(s.blocks_without_roots(4, 10).await.unwrap(), [0, 2]);
    assert_eq!(s.blocks_without_roots(4, 1).await.unwrap(), [0]);
    assert_eq!(s.blocks_without_roots(2, 10).await.unwrap(), [0]);
    assert_eq!(
        s.blocks_without_roots(0, 10).await.unwrap(),
        Vec::<u64>::new()
    );

    s.insert_block_roots(vec![(0, [10; 32]), (2, [12; 32]), (1, [11; 32])])
        .await
        .unwrap();
    assert_eq!(
        s.blocks_without_roots(4, 10).await.unwrap(),
        Vec::<u64>::new()
    );
    // A block already stored keeps its root; the filled ones get search filters too.
    assert_eq!(
        s.block_roots(4).await.unwrap(),
        [[10; 32], [1; 32], [12; 32], [3; 32]]
    );
    let c = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
    let unfiltered: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM audit_blocks WHERE keys IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unfiltered, 0);

    // Blocks whose events were archived, even in part, cannot be filled in.
    c.execute("DELETE FROM audit_blocks", []).unwrap();
    s.archive_audit(1500, Vec::new()).await.unwrap();
    assert_eq!(s.blocks_without_roots(4, 10).await.unwrap(), [2, 3]);
}

#[tokio::test]
async fn numbering_goes_on_after_an_archive_of_the_whole_live_log() {
    let (_dir, s) = store();
    s.append((0..3).map(|_| event(Code::RequestCreated)).collect())
        .await
        .unwrap();
    s.insert_checkpoint(checkpoint(3), Vec::new())
        .await
        .unwrap();
    // Every live event archived; the archive's own event comes next, not first.
    assert_eq!(
        s.archive_audit(3, vec![event(Code::SegmentArchived)])
            .await
            .unwrap(),
        3
    );
    s.append(vec![event(Code::RequestCreated)]).await.unwrap();
    let seqs: Vec<u64> = s
        .audit(AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [4, 5]);
    assert_eq!(s.first_seq().await.unwrap(), 4);
    // The archived events share their block with the live ones: their hashes stay, so every
    // hash of the block can still be read.
    assert_eq!(s.first_leaf_hash().await.unwrap(), 1);
    let hashes = s.leaf_hashes(0, 5).await.unwrap();
    assert_eq!(hashes.len(), 5);
    let live = s.audit_leaves(3, 2).await.unwrap();
    assert_eq!(hashes[3..], [live[0].hash, live[1].hash]);
}

#[tokio::test]
async fn revoked_requests_are_found_until_their_expiry_however_old_migrated_or_new() {
    use warden_domain::Comment;
    let active = |n: u128, at| {
        let mut r = request(n);
        r.approve_automatically().unwrap();
        r.activate(None, at).unwrap();
        r
    };
    let revoked = |n: u128, at| {
        let mut r = active(n, at);
        r.revoke(None, Comment::parse("x").unwrap(), at).unwrap();
        r
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    {
        // As migration 0014 left it: a request revoked at 10:00, valid until 10:10.
        let c = rusqlite::Connection::open(&path).unwrap();
        for sql in &super::MIGRATIONS[..14] {
            c.execute_batch(sql).unwrap();
        }
        c.pragma_update(None, "user_version", 14).unwrap();
        let r = revoked(1, datetime!(2026-01-01 10:00 UTC));
        c.execute(
            "INSERT INTO requests (id, requester, target, state, requirement, created_at, version, body)
             VALUES (?1, 'alice', 'web', 'revoked', 'auto', 0, 0, ?2)",
            rusqlite::params![r.id.to_string(), serde_json::to_string(&r).unwrap()],
        )
        .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    // Newer ones: revoked and valid until 10:15, revoked and valid until 10:05, still active.
    s.insert_request(&revoked(2, datetime!(2026-01-01 10:05 UTC)), vec![].into())
        .await
        .unwrap();
    s.insert_request(&revoked(3, datetime!(2026-01-01 09:55 UTC)), vec![].into())
        .await
        .unwrap();
    let live = active(4, datetime!(2026-01-01 10:05 UTC));
    s.insert_request(&live, vec![].into()).await.unwrap();
    let ids = |rs: Vec<Request>| rs.iter().map(|r| r.id).collect::<Vec<_>>();
    let found = |at| {
        let s = &s;
        async move { ids(s.revoked_unexpired(at).await.unwrap()) }
    };
    let (one, two, three) = (request(1).id, request(2).id, request(3).id);
    assert_eq!(
        found(datetime!(2026-01-01 10:04 UTC)).await,
        [one, two, three]
    );
    assert_eq!(found(datetime!(2026-01-01 10:06 UTC)).await, [one, two]);
    assert_eq!(found(datetime!(2026-01-01 10:10 UTC)).await, [two]);
    assert!(found(datetime!(2026-01-01 10:15 UTC)).await.is_empty());
    // A revoke written as an update counts too.
    let mut live = s.request(live.id).await.unwrap().unwrap();
    live.revoke(
        None,
        Comment::parse("x").unwrap(),
        datetime!(2026-01-01 10:06 UTC),
    )
    .unwrap();
    s.update_request(&live, vec![].into()).await.unwrap();
    assert_eq!(found(datetime!(2026-01-01 10:10 UTC)).await, [two, live.id]);
}

/// A credential left for its requester's pickup goes when its grant ends, never picked up.
#[tokio::test]
async fn an_ended_grant_leaves_no_pickup_behind() {
    let (_d, s) = store();
    let at = datetime!(2026-01-01 10:00 UTC);
    let mut kept = Vec::new();
    for n in [1, 2] {
        let mut r = request(n);
        s.insert_request(&r, Vec::new().into()).await.unwrap();
        r.approve_automatically().unwrap();
        r.activate(None, at).unwrap();
        let change = crate::Change {
            pickup: Some(format!("sealed {n}")),
            ..crate::Change::default()
        };
        r.version = s.update_request(&r, change).await.unwrap();
        kept.push(r);
    }
    let mut ended = kept.remove(0);
    ended
        .revoke(None, warden_domain::Comment::parse("left").unwrap(), at)
        .unwrap();
    s.update_request(&ended, Vec::new().into()).await.unwrap();
    assert_eq!(s.take_pickup(ended.id, Vec::new()).await.unwrap(), None);
    assert_eq!(
        s.take_pickup(kept[0].id, Vec::new()).await.unwrap(),
        Some("sealed 2".to_owned())
    );
}

/// A batch whose transaction cannot begin (another process holds the database) tells its
/// callers why, rather than that the writer stopped.
#[tokio::test]
async fn a_transaction_that_cannot_begin_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let s = SqliteStore::open(&path).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let e = s
        .append(vec![event(Code::RequestCreated)])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot begin a transaction") && e.contains("locked"),
        "{e}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    s.append(vec![event(Code::RequestCreated)]).await.unwrap();
}

/// Lease `n` of alice's at `target`, taken up for revocation at `at`.
fn revoking_lease(n: u128, target: &str, at: time::OffsetDateTime) -> warden_domain::Lease {
    let low: [u8; 10] = n.to_be_bytes()[6..].try_into().unwrap();
    let mut l = warden_domain::Lease::intent(
        RequestId::v7(at, low),
        "alice".parse().unwrap(),
        target.parse().unwrap(),
        "read".parse().unwrap(),
        format!("w_alice_{n}"),
        at,
        at,
    );
    l.activate(at);
    l.start_revoking(at);
    l
}

#[tokio::test]
async fn a_target_with_many_due_leases_hides_none_of_another_targets() {
    let (_d, s) = store();
    let t = datetime!(2026-01-01 10:00 UTC);
    for n in 0..50 {
        let l = revoking_lease(n, "hung", t + time::Duration::milliseconds(n as i64));
        s.update_lease(&l, vec![], vec![]).await.unwrap();
    }
    let healthy = revoking_lease(99, "healthy", t + time::Duration::seconds(5));
    s.update_lease(&healthy, vec![], vec![]).await.unwrap();

    let due = s
        .due_leases(t + time::Duration::seconds(10), 4)
        .await
        .unwrap();
    let shown: Vec<(String, String)> = due
        .iter()
        .map(|l| (l.target.to_string(), l.account.clone()))
        .collect();
    let expected: Vec<(String, String)> = (0..4)
        .map(|n| ("hung".to_owned(), format!("w_alice_{n}")))
        .chain([("healthy".to_owned(), "w_alice_99".to_owned())])
        .collect();
    assert_eq!(shown, expected, "each target's oldest, oldest first");
    // Nothing due yet is read.
    let early = s
        .due_leases(t + time::Duration::milliseconds(1), 4)
        .await
        .unwrap();
    assert_eq!(early.len(), 2);
}

#[tokio::test]
async fn leases_waiting_for_their_target_are_due_once_it_answers_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let t = datetime!(2026-01-01 10:00 UTC);
    let answered = t + time::Duration::seconds(3);
    let failed = |n, target, unreached: bool| {
        let mut l = revoking_lease(n, target, t);
        for _ in 0..6 {
            if unreached {
                l.revoke_unreached("no answer within 5 s".into(), t);
            } else {
                l.revoke_failed("lock timeout".into(), t);
            }
        }
        l
    };
    let (down, refused, other_target) = (
        failed(1, "db", true),
        failed(2, "db", false),
        failed(3, "other", true),
    );
    let mut later = failed(4, "db", true);
    later.due_at = Some(t + time::Duration::seconds(90));
    // Made at the target's old host, before it moved.
    let mut old_host = failed(5, "db", true);
    old_host.made_at = Some(warden_domain::lease::MadeAt {
        kind: "postgres".into(),
        connection: serde_json::json!({"host": "10.0.0.6"})
            .as_object()
            .unwrap()
            .clone(),
        settings: serde_json::Map::new(),
    });
    let accounts = |leases: Vec<warden_domain::Lease>| {
        let mut names: Vec<String> = leases.into_iter().map(|l| l.account).collect();
        names.sort();
        names
    };
    {
        let s = SqliteStore::open(&path).unwrap();
        for l in [&down, &refused, &other_target, &later, &old_host] {
            s.update_lease(l, vec![], vec![]).await.unwrap();
        }
        assert_eq!(
            accounts(s.waiting_for_targets(answered).await.unwrap()),
            ["w_alice_1", "w_alice_3", "w_alice_5"],
            "one per target and connection, due first"
        );
        assert!(s.due_leases(answered, 10).await.unwrap().is_empty());
        assert_eq!(s.target_answers(&refused, answered).await.unwrap(), 2);
    }
    let s = SqliteStore::open(&path).unwrap();
    let due = s.due_leases(answered, 10).await.unwrap();
    assert!(due.iter().all(|l| l.due_at == Some(answered)), "{due:?}");
    assert_eq!(
        accounts(due),
        ["w_alice_1", "w_alice_4"],
        "the refused one keeps its backoff, and so do the other target's and the old host's"
    );
    assert_eq!(
        accounts(s.waiting_for_targets(answered).await.unwrap()),
        ["w_alice_3", "w_alice_5"]
    );
}

#[tokio::test]
async fn notices_of_the_sinks_configured_now_are_due_at_once() {
    use warden_domain::notice::Kind;
    use warden_domain::{Audience, Notice};

    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("w.db")).unwrap();
    let r = request(9);
    let at = datetime!(2026-01-01 10:00 UTC);
    let notice = Notice::about(
        uuid::Uuid::from_u128(99),
        &r,
        Kind::BreakGlass,
        Audience::Security,
        vec!["sam".parse().unwrap()],
        at,
    );
    let outgoing = |sink: &str| crate::Outgoing {
        sink: sink.into(),
        notice: notice.clone(),
    };
    let change = crate::Change {
        events: vec![event(Code::RequestCreated)],
        notices: vec![outgoing("mail"), outgoing("gone")],
        ..Default::default()
    };
    s.insert_request(&r, change).await.unwrap();
    let much_later = datetime!(2026-01-01 11:00 UTC);
    for sink in ["mail", "gone"] {
        s.notice_failed(
            notice.id,
            sink,
            9,
            much_later,
            "down",
            &crate::Reached::default(),
            Vec::new(),
        )
        .await
        .unwrap();
    }
    assert!(s.due_notices(at, 10, &[]).await.unwrap().is_empty());
    // Only the sink configured now is tried at once; one due sooner stays as it was.
    assert_eq!(s.notices_due_by(&["mail".to_owned()], at).await.unwrap(), 1);
    let due = s.due_notices(at, 10, &[]).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].sink, "mail");
    assert_eq!(s.notices_due_by(&["mail".to_owned()], at).await.unwrap(), 0);
}

/// The store records one SSH user CA and never replaces it; before it records one, a start
/// reads the CAs that signed the certificates it issued (requests' credentials and
/// `credential.issued` events), in a database from before the record too, without migrating it.
#[tokio::test]
async fn the_ssh_user_ca_is_recorded_once_and_read_before_any_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let history = || SqliteStore::history(&path).unwrap().unwrap();
    {
        let s = SqliteStore::open(&path).unwrap();
        let mut r = request(1);
        r.credential =
            Some(serde_json::json!({"kind": "ssh-certificate", "ca_fingerprint": "SHA256:a"}));
        s.insert_request(&r, vec![event(Code::RequestCreated)].into())
            .await
            .unwrap();
        s.insert_request(&request(2), vec![].into()).await.unwrap();
        s.append(vec![
            event(Code::CredentialIssued)
                .details(serde_json::json!({"ca_fingerprint": "SHA256:b"})),
            event(Code::CredentialIssued).details(serde_json::json!({"kind": "postgres"})),
            // Another code's field of that name names no CA that signed anything.
            event(Code::ServerStarted).details(serde_json::json!({"ca_fingerprint": "SHA256:c"})),
        ])
        .await
        .unwrap();
    }
    let read = history();
    let mut issued = read.issued_by.clone();
    issued.sort();
    assert_eq!(
        (read.ssh_user_ca, issued),
        (None, vec!["SHA256:a".to_owned(), "SHA256:b".to_owned()])
    );
    {
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(
            s.record_ssh_user_ca("ssh-ed25519 AAAA a", "SHA256:a")
                .await
                .unwrap(),
            "SHA256:a"
        );
        // A record is never replaced: the answer names the CA recorded first.
        assert_eq!(
            s.record_ssh_user_ca("ssh-ed25519 BBBB b", "SHA256:b")
                .await
                .unwrap(),
            "SHA256:a"
        );
    }
    let read = history();
    assert_eq!(
        (read.ssh_user_ca.as_deref(), read.issued_by.len()),
        (Some("SHA256:a"), 0)
    );
    // As the Warden before the record left it: read as it is, and left so.
    let version = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(sql).unwrap();
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    // The version before the migration that made the record.
    let older = super::MIGRATIONS
        .iter()
        .position(|m| m.contains("CREATE TABLE ssh_user_ca"))
        .map(|i| i64::try_from(i).unwrap())
        .unwrap();
    assert_eq!(
        version(&format!(
            "DROP TABLE ssh_user_ca; PRAGMA user_version = {older}"
        )),
        older
    );
    let read = history();
    assert_eq!((read.ssh_user_ca, read.issued_by.len()), (None, 2));
    assert_eq!(version(""), older);
}

/// The leaf hashes read for a proof are those of every event asked for, once each, or the read
/// fails naming the event whose hash is gone: a kept hash of an archived event deleted, or a
/// live event, would otherwise shift every later hash and yield a proof that does not verify.
#[tokio::test]
async fn leaf_hashes_are_read_whole_or_not_at_all() {
    let (dir, s) = store();
    s.append((0..1030).map(|_| event(Code::RequestCreated)).collect())
        .await
        .unwrap();
    // Archived into block 1: the hashes of 1025..=1027 are kept, block 0's are not; the
    // archive's own event is 1031.
    s.archive_audit(1027, vec![event(Code::SegmentArchived)])
        .await
        .unwrap();
    assert_eq!(s.first_leaf_hash().await.unwrap(), 1025);
    assert_eq!(s.leaf_hashes(1024, 1031).await.unwrap().len(), 7);
    assert_eq!(s.leaf_hashes(1028, 1029).await.unwrap().len(), 1);
    // A range archived with its whole block has no hashes, as before.
    assert_eq!(s.leaf_hashes(4, 5).await.unwrap(), Vec::<[u8; 32]>::new());
    // One reaching back into it cannot be read whole.
    let err = s.leaf_hashes(1000, 1030).await.unwrap_err().to_string();
    assert!(err.contains("no leaf hash of events 1001..1024"), "{err}");

    let fails_naming = |missing: u64| {
        let s = s.clone();
        async move {
            let err = s.leaf_hashes(1024, 1031).await.unwrap_err();
            assert!(matches!(err, Error::Backend(_)), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("no leaf hash of event {missing},"))
                    && text.contains("warden audit verify --data-dir"),
                "{text}"
            );
        }
    };
    let c = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
    c.execute("DELETE FROM archived_leaves WHERE seq = 1026", [])
        .unwrap();
    fails_naming(1026).await;
    // Just the block a proof of event 1026 needs fails too, where it would have given a hash
    // too few.
    assert!(s.leaf_hashes(1025, 1026).await.is_err());
    c.execute(
        "INSERT INTO archived_leaves (seq, leaf_hash) VALUES (1026, zeroblob(32))",
        [],
    )
    .unwrap();
    assert_eq!(s.leaf_hashes(1024, 1031).await.unwrap().len(), 7);
    // A live event deleted, in the middle or at the end.
    c.execute("DELETE FROM audit WHERE seq = 1029", []).unwrap();
    fails_naming(1029).await;
    c.execute("DELETE FROM audit WHERE seq >= 1029", [])
        .unwrap();
    fails_naming(1029).await;
    // A hash held twice.
    c.execute(
        "INSERT INTO archived_leaves (seq, leaf_hash) VALUES (1028, zeroblob(32))",
        [],
    )
    .unwrap();
    let err = s.leaf_hashes(1024, 1028).await.unwrap_err().to_string();
    assert!(err.contains("two leaf hashes of event 1028"), "{err}");
}
