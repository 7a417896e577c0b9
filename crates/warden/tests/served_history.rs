//! A data dir that has served does not start a new audit log from 1 once its history is gone
//! (`warden.db` and `audit_checkpoint.note` lost, or its log emptied), nor over segments its
//! log does not reach: archive segments, requests and tokens show it served. A new data dir,
//! and one whose first start stopped after making its keys, before its log began, still start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use warden_testkit::Server;

/// A data dir in `dir` that served a `--dev` server: 4 requests made by alice, then an archive
/// of every event so far. Returns it and its segment's name.
fn archived(dir: &Path) -> (PathBuf, String) {
    let data = dir.join("data");
    write_policy(
        &data.join("policy"),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let cfg = dir.join("warden.toml");
    std::fs::write(&cfg, "checkpoint_interval = \"1s\"\n").unwrap();
    let args = ["serve", "--dev", "--config", cfg.to_str().unwrap()];
    let mut server = Server::start_in(Path::new(BIN), &data, &args, &[]);
    let alice = login(&server, "alice");
    for _ in 0..4 {
        create(&alice, "web", "view", &[]);
    }
    assert!(server.terminate().success());
    let cutoff = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    server.restart();
    let admin = login(&server, "admin");
    let archived = admin.json(&["audit", "archive", "--before", &cutoff]);
    let file = archived["file"].as_str().unwrap().to_owned();
    assert_eq!(archived["from"], 1, "{archived}");
    assert!(server.terminate().success());
    (data, file)
}

/// A copy of `data` at `to`, as `cp -a` makes it.
fn copy(data: &Path, to: &Path) {
    let copied = Command::new("cp").arg("-a").arg(data).arg(to).status();
    assert!(copied.unwrap().success());
}

/// `warden serve --dev --data-dir DATA` on free ports, expected to refuse with exit code 1:
/// its stderr. Cut off after 20 s, should it serve after all.
fn refused(data: &Path) -> String {
    let out = Command::new("timeout")
        .args(["20", BIN, "serve", "--dev", "--data-dir"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--ssh-listen", "127.0.0.1:0"])
        .env_remove("WARDEN_BOOTSTRAP_PASSWORD")
        .env_remove("WARDEN_MASTER_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// Starts a `--dev` server on `data` and stops it cleanly.
fn serves(data: &Path) {
    let mut server = Server::start_in(Path::new(BIN), data, &["serve", "--dev"], &[]);
    assert!(server.terminate().success(), "{}", server.stderr());
}

fn remove_db(data: &Path) {
    for name in ["warden.db", "warden.db-wal", "warden.db-shm"] {
        let _ = std::fs::remove_file(data.join(name));
    }
}

fn sql(data: &Path, sql: &str) {
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.execute_batch(sql).unwrap();
}

/// The names of the files in `dir`, sorted, and their bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

const EMPTIED: &str = "DELETE FROM audit; DELETE FROM checkpoints; DELETE FROM audit_blocks; DELETE FROM archived_leaves;";

#[test]
fn a_data_dir_that_served_does_not_begin_its_log_again_once_its_history_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (data, file) = archived(dir.path());

    // warden.db and the note lost, the archive left: a start would number events from 1 again
    // and sign them with the key that signed the archived ones.
    let lost = dir.path().join("lost");
    copy(&data, &lost);
    remove_db(&lost);
    std::fs::remove_file(lost.join("audit_checkpoint.note")).unwrap();
    // A segment an archive was writing aside when it stopped: the start's removal of what an
    // archive cut short would take it, were it to run first.
    let aside = format!("{file}.new");
    std::fs::write(lost.join("archive").join(&aside), b"{\"format\"").unwrap();
    let archive = files(&lost.join("archive"));
    let said = refused(&lost);
    assert!(
        said.contains("Not started: the audit log holds no events, but this data dir has served: archive/ holds 2 segments of events up to"),
        "{said}"
    );
    assert!(said.contains(&file) && said.contains(&aside), "{said}");
    assert!(
        said.contains("audit_signing.key is still there") && said.contains("a fork"),
        "{said}"
    );
    assert!(
        said.contains(
            "Restore warden.db (with its warden.db-wal) and audit_checkpoint.note from your backup"
        ),
        "{said}"
    );
    assert!(said.contains("move this data dir aside"), "{said}");
    // Refused before anything was written or removed: the segments are there as they were.
    assert_eq!(files(&lost.join("archive")), archive);
    assert!(!lost.join("warden.db").exists());
    assert!(!lost.join("audit_checkpoint.note").exists());
    // So is the next try.
    refused(&lost);
    assert_eq!(files(&lost.join("archive")), archive);

    // The whole data dir restored, it serves on from where it was.
    serves(&data);
}

#[test]
fn a_data_dir_that_served_does_not_begin_its_log_again_once_its_log_is_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = archived(dir.path());
    // warden.db kept with its log emptied, the note and the archive gone: its requests and
    // live tokens show it served.
    let emptied = dir.path().join("emptied");
    copy(&data, &emptied);
    sql(&emptied, EMPTIED);
    std::fs::remove_file(emptied.join("audit_checkpoint.note")).unwrap();
    std::fs::remove_dir_all(emptied.join("archive")).unwrap();
    let said = refused(&emptied);
    assert!(
        said.contains(
            "Not started: the audit log holds no events, but this data dir has served: warden.db holds 4 requests, "
        ),
        "{said}"
    );
    assert!(said.contains("sign-in tokens"), "{said}");
    assert!(said.contains("Restore warden.db"), "{said}");
    let conn = rusqlite::Connection::open(emptied.join("warden.db")).unwrap();
    let events: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(events, 0, "the refused start wrote no event");
    drop(conn);

    // The whole data dir restored, it serves on from where it was.
    serves(&data);
}

#[test]
fn a_log_begun_again_from_1_beside_segments_it_never_sealed_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let (data, file) = archived(dir.path());
    // A data dir whose log began again from 1 and is shorter than the archive it sits beside
    // (as a start before this check left one): its numbers are those of sealed events.
    let again = dir.path().join("again");
    serves(&again);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(again.join("archive"))
            .unwrap();
    }
    let segment = std::fs::read(data.join("archive").join(&file)).unwrap();
    std::fs::write(again.join("archive").join(&file), &segment).unwrap();
    let aside = format!("{file}.new");
    std::fs::write(again.join("archive").join(&aside), &segment[..10]).unwrap();
    let archive = files(&again.join("archive"));
    let said = refused(&again);
    assert!(
        said.contains("Not started: the audit log's events end at "),
        "{said}"
    );
    assert!(
        said.contains("but this data dir has served further: archive/ holds 2 segments"),
        "{said}"
    );
    assert!(
        said.contains("if those segments are not this data dir's, move them out of archive/"),
        "{said}"
    );
    // Nothing of the archive was removed by the start.
    assert_eq!(files(&again.join("archive")), archive);
    // Nor does `audit verify --data-dir` pass the data dir.
    let verified = Command::new(BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(&again)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(verified.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("PROBLEM: archive/{file}")),
        "{report}"
    );
    // Moved out, as the refusal says, the data dir serves.
    std::fs::remove_dir_all(again.join("archive")).unwrap();
    serves(&again);
}

#[test]
fn a_new_data_dir_and_one_whose_first_start_stopped_before_its_log_began_start() {
    let dir = tempfile::tempdir().unwrap();
    // A new one.
    let new = dir.path().join("new");
    serves(&new);

    // The keys a first start made, and nothing else: neither a key nor a CA alone is proof
    // that the data dir served.
    let keys = dir.path().join("keys");
    copy(&new, &keys);
    remove_db(&keys);
    std::fs::remove_file(keys.join("audit_checkpoint.note")).unwrap();
    serves(&keys);

    // The keys and the database a first start made up to its SSH user CA's record, before
    // the note of its empty log: no event, and no row only a serving server writes.
    let cut = dir.path().join("cut");
    copy(&new, &cut);
    sql(&cut, &format!("{EMPTIED} DELETE FROM user_secrets;"));
    std::fs::remove_file(cut.join("audit_checkpoint.note")).unwrap();
    // An empty archive directory is no segment either.
    std::fs::create_dir(cut.join("archive")).unwrap();
    serves(&cut);
}
