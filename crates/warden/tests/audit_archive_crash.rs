//! An archive cut short between putting its segment in place and removing its events from the
//! live log: `warden audit verify --data-dir` names what it left in the archive directory, the
//! next start removes it, saying so in the audit log, and the next archive seals the same
//! events into the same segment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use warden_testkit::{Cli, Server};

/// `warden --json audit verify --data-dir DATA`: its exit code and report.
fn verify(data: &Path) -> (i32, serde_json::Value) {
    let cli = Cli::new(Path::new(BIN), "http://127.0.0.1:9");
    let out = cli.run(
        &[
            "--json",
            "audit",
            "verify",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    let v = serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("no JSON report: {out:?}"));
    (out.code, v)
}

fn problems(v: &serde_json::Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// The names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_segment_an_archive_cut_short_left_is_named_and_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_policy(
        &data.join("policy"),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let cfg = dir.path().join("warden.toml");
    std::fs::write(&cfg, "checkpoint_interval = \"1s\"\n").unwrap();
    let args = ["serve", "--dev", "--config", cfg.to_str().unwrap()];
    let mut server = Server::start_in(Path::new(BIN), &data, &args, &[]);
    let alice = login(&server, "alice");
    for _ in 0..4 {
        create(&alice, "web", "view", &[]);
    }
    assert!(server.terminate().success());
    // Every event so far is under the checkpoint the stop signed, and older than this.
    let cutoff = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let before_archive = dir.path().join("before-archive");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&before_archive)
        .status();
    assert!(copied.unwrap().success());

    server.restart();
    let admin = login(&server, "admin");
    let archived = admin.json(&["audit", "archive", "--before", &cutoff]);
    let file = archived["file"].as_str().unwrap().to_owned();
    let (from, to) = (archived["from"].as_u64(), archived["to"].as_u64().unwrap());
    assert_eq!(from, Some(1), "{archived}");
    let segment = std::fs::read(data.join("archive").join(&file)).unwrap();
    assert!(server.terminate().success());

    // The data dir as a crash after the segment was put in place, and before its events left
    // the live log, leaves it; and a segment cut off while it was written aside.
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&before_archive, &data).unwrap();
    let archive = data.join("archive");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&archive)
            .unwrap();
    }
    std::fs::write(archive.join(&file), &segment).unwrap();
    let aside = format!("{file}.new");
    std::fs::write(archive.join(&aside), &segment[..segment.len() / 2]).unwrap();

    // Verified as it is, the data dir is not what the log records: both are named.
    let (code, v) = verify(&data);
    assert_eq!(code, 1, "{v}");
    let found = problems(&v);
    assert!(
        found.iter().any(|p| p.starts_with(&format!(
            "archive/{file}: not a segment the log records as sealed, and its events 1..{to} are still in the live log"
        ))),
        "{v}"
    );
    assert!(
        found.iter().any(|p| p.starts_with(&format!(
            "archive/{aside}: a segment of events 1..{to} written aside and never put in place"
        ))),
        "{v}"
    );
    assert_eq!(found.len(), 2, "{v}");

    // The start removes both, in one audit event naming them.
    server.restart();
    assert_eq!(names(&archive), Vec::<String>::new());
    let admin = login(&server, "admin");
    let removed: Vec<serde_json::Value> = audit_events(&admin, "audit.segment_deleted");
    assert_eq!(removed.len(), 1, "{removed:?}");
    let named: Vec<&str> = removed[0]["details"]["unsealed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(named, [file.as_str(), aside.as_str()]);

    // The events are archived again, into the same segment, and then all is accounted for.
    let again = admin.json(&["audit", "archive", "--before", &cutoff]);
    assert_eq!(again["file"], file.as_str(), "{again}");
    assert_eq!(again["sha256"], archived["sha256"], "{again}");
    assert!(server.terminate().success());
    assert_eq!(names(&archive), std::slice::from_ref(&file));
    let (code, v) = verify(&data);
    assert_eq!(code, 0, "{v}");

    // Anything else in the archive directory is named too, and left alone by a start.
    std::fs::write(archive.join("notes.txt"), "mine").unwrap();
    let foreign = format!("segment-{:012}-{:012}.json", to + 1, to + 5);
    std::fs::write(archive.join(&foreign), &segment).unwrap();
    let (code, v) = verify(&data);
    assert_eq!(code, 1, "{v}");
    let found = problems(&v);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("archive/notes.txt: not an archive segment")),
        "{v}"
    );
    assert!(
        found.iter().any(|p| p.starts_with(&format!(
            "archive/{foreign}: not a segment the log records as sealed"
        ))),
        "{v}"
    );
    assert_eq!(found.len(), 2, "{v}");
    server.restart();
    assert!(server.terminate().success());
    assert_eq!(names(&archive), ["notes.txt".to_owned(), file, foreign]);
}
