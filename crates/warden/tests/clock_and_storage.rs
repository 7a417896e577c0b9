//! What a step of the wall clock and a storage that stops taking writes do to the server and
//! to `warden audit verify`: checkpoints signed by a clock that went back verify with a
//! warning, not as a fork; readiness says within seconds that writes are stalled; and a grant
//! past its expiry shows as expired while the worker cannot record it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use warden_testkit::{Cli, Server};

/// `warden --json audit verify --data-dir DATA EXTRA...`: its exit code and report.
fn verify(data: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let cli = Cli::new(Path::new(BIN), "http://127.0.0.1:9");
    let mut args = vec![
        "--json",
        "audit",
        "verify",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = cli.run(&args, None);
    let v = serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("no JSON report: {out:?}"));
    (out.code, v)
}

/// The stored checkpoints' sizes and notes, smallest first.
fn stored_checkpoints(data: &Path) -> Vec<(u64, String)> {
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.prepare("SELECT size, note FROM checkpoints ORDER BY size")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The `time` a checkpoint note says it was signed at, in Unix seconds.
fn note_time(note: &str) -> u64 {
    note.lines()
        .find_map(|l| l.strip_prefix("time "))
        .unwrap()
        .parse()
        .unwrap()
}

/// Signs the stored checkpoint of `size` again as at `time` (Unix seconds), with the data
/// dir's own key, as a server whose clock read `time` would have: same size, same root.
fn sign_again_at(data: &Path, size: u64, time: u64) {
    let key = warden_server::keys::audit_signing_key(&data.join("audit_signing.key")).unwrap();
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    let note: String = db
        .query_row(
            "SELECT note FROM checkpoints WHERE size = ?1",
            [size as i64],
            |r| r.get(0),
        )
        .unwrap();
    let origin = note.lines().next().unwrap().to_owned();
    let signer = warden_server::checkpoints::signer(&origin, &key).unwrap();
    let mut cp = warden_audit::Checkpoint::open(&note, &signer.verifier()).unwrap();
    let at = cp
        .extensions
        .iter()
        .position(|e| e.starts_with("time "))
        .unwrap();
    cp.extensions[at] = format!("time {time}");
    let note = cp.sign(&signer).unwrap();
    db.execute(
        "UPDATE checkpoints SET time = ?1, note = ?2 WHERE size = ?3",
        rusqlite::params![time as i64 * 1000, note, size as i64],
    )
    .unwrap();
}

/// A server whose clock was ten minutes ahead signed the early checkpoints; stepped back, it
/// signed the later ones ten minutes "earlier". Every root matches the events: verify passes,
/// and warns of the clock, naming both checkpoints, with the server's file and with a copy of
/// it kept elsewhere. A log truly cut back and signed again is still a fork (see
/// `a_log_cut_back_and_signed_again_shows_as_a_fork` in audit_log.rs).
#[test]
fn checkpoints_signed_before_a_clock_step_back_verify_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("warden.toml");
    std::fs::write(&cfg, "checkpoint_interval = \"1s\"\n").unwrap();
    let mut server = Server::start_in(
        Path::new(BIN),
        &data,
        &["serve", "--dev", "--config", cfg.to_str().unwrap()],
        &[],
    );
    let alice = login(&server, "alice");
    create(&alice, "demo-ssh", "viewer", &[]);
    wait_until("a first checkpoint", Duration::from_secs(30), || {
        !stored_checkpoints(&data).is_empty()
    });
    let first = stored_checkpoints(&data)[0].0;
    create(&alice, "demo-ssh", "viewer", &[]);
    wait_until("a later checkpoint", Duration::from_secs(30), || {
        stored_checkpoints(&data).last().unwrap().0 > first
    });
    assert!(server.terminate().success());
    let anchor = std::fs::read_to_string(data.join("audit_checkpoint.note")).unwrap();
    let newest = stored_checkpoints(&data).last().unwrap().clone();
    assert_eq!(newest.1, anchor);
    let (code, v) = verify(&data, &[]);
    assert_eq!(code, 0, "{v}");
    assert!(v.get("warnings").is_none(), "{v}");

    let ahead = note_time(&anchor) + 600;
    sign_again_at(&data, first, ahead);
    let kept = dir.path().join("kept.note");
    std::fs::write(&kept, &anchor).unwrap();
    for (extra, file) in [
        (vec![], data.join("audit_checkpoint.note")),
        (vec!["--checkpoint", kept.to_str().unwrap()], kept.clone()),
    ] {
        let (code, v) = verify(&data, &extra);
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["problems"], serde_json::json!([]), "{v}");
        let warnings: Vec<&str> = v["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("no warnings: {v}"))
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        let named = format!(
            "signed after the checkpoint at size {} in {}",
            newest.0,
            file.display()
        );
        let warning = warnings
            .iter()
            .find(|w| w.contains(&named))
            .unwrap_or_else(|| panic!("no warning naming {}: {v}", file.display()));
        assert!(
            warning.starts_with(&format!(
                "the data dir's checkpoint at size {first} (signed "
            )),
            "{warning}"
        );
        assert!(
            warning.contains("the signer's clock went back"),
            "{warning}"
        );
    }
    // As a person reads it: on standard error, and the log verifies.
    let out = Cli::new(Path::new(BIN), "http://127.0.0.1:9").run(
        &["audit", "verify", "--data-dir", data.to_str().unwrap()],
        None,
    );
    assert!(out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("Warning: the data dir's checkpoint at size"),
        "{out:?}"
    );
    assert!(out.stdout.contains("OK: the audit log verifies"), "{out:?}");
    assert!(!out.stdout.contains("PROBLEM"), "{out:?}");
}

/// Takes the database's write lock from outside the server, as a process holding it (or a
/// frozen filesystem) would: the server's writes wait, its reads go on.
fn lock_writes(data: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    db
}

/// While the store's writes hang, `/readyz` answers, and within seconds says they are
/// stalled, rather than waiting on them; once they go on, it is ready again.
#[test]
fn readiness_says_within_seconds_that_writes_are_stalled() {
    let env = Env::start();
    let port = env.server.port();
    let lock = lock_writes(env.server.data_dir());
    let deadline = Instant::now() + Duration::from_secs(20);
    let stalled = loop {
        let asked = Instant::now();
        let answer = warden_testkit::http_get(port, "/readyz").unwrap();
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(4500),
            "readiness took {took:?} to answer: {answer:?}"
        );
        if answer.status != 200 {
            break answer;
        }
        assert!(Instant::now() < deadline, "still ready: {answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stalled.status, 503, "{stalled:?}");
    assert_eq!(error_code(&stalled.body), "not_ready", "{stalled:?}");
    assert!(
        stalled.body.contains("storage writes are stalled"),
        "{stalled:?}"
    );
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    // A write that goes through shows the store takes writes again.
    env.login("alice");
    wait_until("readiness again", Duration::from_secs(40), || {
        warden_testkit::http_get(port, "/readyz").is_ok_and(|a| a.status == 200)
    });
}

/// A grant whose time is up has ended whether or not the worker has recorded it: while the
/// worker cannot (writes held), `request show` says expired, ended at its expiry, and a list
/// of active grants leaves it out.
#[test]
fn a_grant_past_its_expiry_shows_as_expired_before_the_worker_records_it() {
    use time::format_description::well_known::Rfc3339;
    let env = Env::start();
    let alice = env.login("alice");
    let bearer = format!("Bearer {}", token(&alice));
    let headers = [("Authorization", bearer.as_str())];
    let port = env.server.port();
    let get = |path: &str| {
        let answer = warden_testkit::http_get_with(port, path, &headers).unwrap();
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        serde_json::from_str::<serde_json::Value>(&answer.body).unwrap()
    };
    let v = create(&alice, "web", "view", &["--ttl", "2s"]);
    let id = id(&v);
    assert_eq!(v["state"], "active", "{v}");
    let lock = lock_writes(env.server.data_dir());
    let ends = time::OffsetDateTime::parse(v["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    let wait = ends - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300);
    std::thread::sleep(wait.try_into().unwrap_or_default());

    let shown = get(&format!("/v1/requests/{id}"));
    let active = get("/v1/requests?state=active");
    let all = get("/v1/requests");
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);

    assert_eq!(shown["state"], "expired", "{shown}");
    assert_eq!(shown["ended_at"], v["expires_at"], "{shown}");
    assert!(shown["ended_by"].is_null(), "{shown}");
    let ids = |list: &serde_json::Value| -> Vec<String> {
        list["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!ids(&active).contains(&id), "{active}");
    let listed = all["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("not listed: {all}"));
    assert_eq!(listed["state"], "expired", "{listed}");
    // Once the worker records it, it reads the same.
    wait_until("the expiry recorded", Duration::from_secs(20), || {
        state(&alice, &id) == "expired"
    });
    let recorded = ok(&alice, &["request", "show", &id]);
    assert_eq!(recorded["ended_at"], v["expires_at"], "{recorded}");
}
