//! The tamper-evident audit log against the real store: signed checkpoints, offline
//! verification that names the sequence number of every modified, deleted, moved or truncated
//! event, a forged checkpoint, restart continuity, and proofs and bundles checked offline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use warden_testkit::{Cli, CliOutput, Server};

/// A server with 1-second checkpoints, some history, stopped cleanly (final checkpoint).
struct Stopped {
    _dir: tempfile::TempDir,
    data: PathBuf,
    checkpoint_note: String,
    size: u64,
}

fn config(dir: &Path) -> String {
    let p = dir.join("warden.toml");
    std::fs::write(&p, "checkpoint_interval = \"1s\"\n").unwrap();
    p.to_str().unwrap().to_owned()
}

fn history() -> (Stopped, Server) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_policy(
        &data.join("policy"),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let cfg = config(dir.path());
    let mut server = Server::start_in(
        Path::new(BIN),
        &data,
        &["serve", "--dev", "--config", &cfg],
        &[],
    );
    let alice = login(&server, "alice");
    for _ in 0..4 {
        create(&alice, "web", "view", &[]);
    }
    let status = server.terminate();
    assert!(status.success());
    let checkpoint_note = latest_note(&data);
    let size = note_size(&checkpoint_note);
    (
        Stopped {
            _dir: dir,
            data,
            checkpoint_note,
            size,
        },
        server,
    )
}

fn latest_note(data: &Path) -> String {
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.query_row(
        "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn note_size(note: &str) -> u64 {
    note.lines().nth(1).unwrap().parse().unwrap()
}

/// A copy of the data dir to tamper with.
fn copy(data: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["warden.db", "audit_verifier.pub"] {
        std::fs::copy(data.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

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

/// `warden audit verify --data-dir data` as a person reads it.
fn verify_human(data: &Path) -> CliOutput {
    Cli::new(Path::new(BIN), "http://127.0.0.1:9").run(
        &["audit", "verify", "--data-dir", data.to_str().unwrap()],
        None,
    )
}

fn problems(v: &serde_json::Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// The `--json` report of `audit verify-proof ARGS`, checked to be a failure that says `says`
/// on standard error and among its problems.
fn failed_proof(cli: &Cli, args: &[&str], says: &str) -> serde_json::Value {
    let args: Vec<&str> = ["audit", "verify-proof"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--json"])
        .collect();
    let out = cli.run(&args, None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(says), "{out:?}");
    let report: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("no JSON report: {out:?}"));
    assert_eq!(report["valid"], false, "{report}");
    assert!(
        problems(&report).iter().any(|p| p.contains(says)),
        "{report}"
    );
    report
}

fn tamper(data: &Path, sql: &str) {
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.execute_batch(sql).unwrap();
}

#[test]
fn tampering_is_detected_and_named() {
    let (h, _server) = history();
    assert!(h.size >= 20, "expected a longer history, got {}", h.size);

    let (code, v) = verify(&h.data, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["events_checked"], h.size);
    assert_eq!(v["events_after_newest_checkpoint"], 0, "{v}");

    // A flipped byte in one event.
    let c = copy(&h.data);
    tamper(
        c.path(),
        "UPDATE audit SET body = replace(body, '\"allowed\"', '\"denied\"') WHERE seq = 5",
    );
    let (code, v) = verify(c.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        problems(&v).iter().any(|p| p == "event 5 was modified"),
        "{v}"
    );

    // Searchable columns altered beside untouched text: the event would be hidden from a
    // search by its request, or shown to another user.
    let c = copy(&h.data);
    tamper(
        c.path(),
        "UPDATE audit SET user = 'mallory' WHERE seq = 6; UPDATE audit SET request_id = NULL, time = time + 1 WHERE seq = 9",
    );
    let (code, v) = verify(c.path(), &[]);
    assert_eq!(code, 1, "{v}");
    for seq in [6, 9] {
        assert!(
            problems(&v)
                .iter()
                .any(|p| p.starts_with(&format!("event {seq}: its searchable columns"))),
            "{v}"
        );
    }

    // An event rewritten with its stored hash forged to match: only the roots show it, and the
    // checkpoints that still match say where to look.
    let c = copy(&h.data);
    let db = rusqlite::Connection::open(c.path().join("warden.db")).unwrap();
    let seq = h.size as i64 - 1;
    let body: String = db
        .query_row("SELECT body FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
        .unwrap();
    let forged = body.replacen("\"time\"", "\"time\" ", 1);
    assert_ne!(forged, body);
    let hash = warden_audit::merkle::leaf_hash(forged.as_bytes());
    db.execute(
        "UPDATE audit SET body = ?1, leaf_hash = ?2 WHERE seq = ?3",
        rusqlite::params![forged, hash.to_vec(), seq],
    )
    .unwrap();
    drop(db);
    let (code, v) = verify(c.path(), &[]);
    assert_eq!(code, 1, "{v}");
    let narrowed = problems(&v)
        .into_iter()
        .find(|p| p.starts_with("what changed lies in events"))
        .unwrap_or_else(|| panic!("{v}"));
    let (from, to) = narrowed
        .trim_start_matches("what changed lies in events ")
        .split_once(':')
        .unwrap()
        .0
        .split_once("..=")
        .unwrap();
    let (from, to): (i64, i64) = (from.parse().unwrap(), to.parse().unwrap());
    assert!(from <= seq && seq <= to && from > 1, "{narrowed}");

    // A deleted event.
    let c = copy(&h.data);
    tamper(c.path(), "DELETE FROM audit WHERE seq = 7");
    let (_, v) = verify(c.path(), &[]);
    assert!(
        problems(&v)
            .iter()
            .any(|p| p.starts_with("event 7 is missing")),
        "{v}"
    );

    // Two events swapped (bodies and hashes moved together, so each row is self-consistent).
    let c = copy(&h.data);
    tamper(
        c.path(),
        "UPDATE audit SET seq = -3 WHERE seq = 3; UPDATE audit SET seq = 3 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = -3;",
    );
    let (_, v) = verify(c.path(), &[]);
    let ps = problems(&v);
    assert!(
        ps.iter()
            .any(|p| p == "event stored at 3 claims to be event 4: moved or forged"),
        "{v}"
    );
    assert!(
        ps.iter()
            .any(|p| p == "event stored at 4 claims to be event 3: moved or forged"),
        "{v}"
    );

    // An inserted event.
    let c = copy(&h.data);
    tamper(
        c.path(),
        "INSERT INTO audit (seq, time, code, body, leaf_hash) SELECT 1000000, time, code, body, leaf_hash FROM audit WHERE seq = 2",
    );
    let (_, v) = verify(c.path(), &[]);
    assert!(!problems(&v).is_empty(), "{v}");

    // A truncated tail, with the server's own checkpoints deleted too (and its copy of the
    // newest, which `copy` leaves out): a log that no stored checkpoint covers is not taken
    // for authentic, and a checkpoint kept elsewhere says what was cut.
    let kept = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(kept.path(), &h.checkpoint_note).unwrap();
    let c = copy(&h.data);
    tamper(
        c.path(),
        &format!(
            "DELETE FROM audit WHERE seq > {}; DELETE FROM checkpoints;",
            h.size - 3
        ),
    );
    let (code, v) = verify(c.path(), &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v)[0].contains("no stored checkpoint covers any of the"),
        "{v}"
    );
    assert_eq!(v["events_after_newest_checkpoint"], h.size - 3, "{v}");
    // Read by a person, the events no signature covers are said so apart.
    let human = verify_human(c.path());
    assert!(
        human.stderr.contains(&format!(
            "no signed checkpoint covers the last {} events yet",
            h.size - 3
        )),
        "{human:?}"
    );
    // Without the server's checkpoint file (`copy` leaves it out), verifying says what cannot
    // be told.
    assert!(
        human.stderr.contains("audit_checkpoint.note is missing"),
        "{human:?}"
    );
    let (code, v) = verify(c.path(), &["--checkpoint", kept.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        problems(&v).iter().any(|p| p.contains(&format!(
            "checkpoint covers {} events but the log holds {}: events were deleted",
            h.size,
            h.size - 3
        ))),
        "{v}"
    );

    // A checkpoint forged with another key.
    let forger = warden_audit::NoteSigner::from_seed("warden.local/audit", &[7; 32]).unwrap();
    let forged = warden_audit::Checkpoint {
        origin: "warden.local/audit".into(),
        size: h.size + 1,
        root: [1; 32],
        extensions: vec![],
    }
    .sign(&forger)
    .unwrap();
    let c = copy(&h.data);
    let db = rusqlite::Connection::open(c.path().join("warden.db")).unwrap();
    db.execute(
        "INSERT INTO checkpoints (size, root, time, frontier, note) VALUES (?1, ?2, 0, x'', ?3)",
        rusqlite::params![h.size as i64 + 1, vec![1u8; 32], forged],
    )
    .unwrap();
    let (code, v) = verify(c.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        problems(&v).iter().any(|p| p.contains(&format!(
            "checkpoint at size {}: not validly signed",
            h.size + 1
        ))),
        "{v}"
    );
}

#[test]
fn chain_continues_across_restart_and_proofs_verify_offline() {
    let (h, mut server) = history();
    server.restart();
    let admin = login(&server, "admin");
    create(&admin, "web", "view", &[])
        .as_object()
        .map(|_| ())
        .unwrap_or(());
    let key = verifier_key(&admin);
    assert!(key.starts_with("warden.local/audit+"), "{key}");

    // Wait for a checkpoint past the restart.
    let newest = checkpoint_reaching(&admin, h.size + 1);

    let dir = tempfile::tempdir().unwrap();
    // The log after the restart extends the log before it.
    proven(
        &admin,
        dir.path(),
        &key,
        &[
            "audit",
            "prove-consistency",
            "--from",
            &h.size.to_string(),
            "--to",
            &newest.to_string(),
        ],
    );

    // One event, proven offline; altering it breaks the proof.
    let proof = admin.run(&["audit", "prove", "3"], None);
    assert!(proof.success(), "{proof:?}");
    let pfile = dir.path().join("proof.json");
    std::fs::write(&pfile, &proof.stdout).unwrap();
    assert!(
        admin
            .run(
                &[
                    "audit",
                    "verify-proof",
                    pfile.to_str().unwrap(),
                    "--verifier-key",
                    &key
                ],
                None
            )
            .success()
    );
    // A checkpoint kept earlier is of another size than the proof's: the proof is asked for
    // against it instead, never checked against another and passed.
    let kept = dir.path().join("kept.note");
    std::fs::write(&kept, &h.checkpoint_note).unwrap();
    let kept = kept.to_str().unwrap();
    let check = |proof: &str| {
        admin.run(
            &[
                "audit",
                "verify-proof",
                proof,
                "--verifier-key",
                &key,
                "--checkpoint",
                kept,
            ],
            None,
        )
    };
    let other = check(pfile.to_str().unwrap());
    assert_eq!(other.code, 2, "{other:?}");
    assert!(
        other
            .stderr
            .contains(&format!("audit prove SEQ --size {}", h.size)),
        "{other:?}"
    );
    let against_kept = admin.run(
        &["audit", "prove", "3", "--size", &h.size.to_string()],
        None,
    );
    assert!(against_kept.success(), "{against_kept:?}");
    // An event past the checkpoint is not found there, as any unknown id; 0 is no event's number.
    let error = |args: &[&str], code: i32| {
        let out = admin.run(&[args, &["--json"]].concat(), None);
        assert_eq!(out.code, code, "{out:?}");
        let v: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
        (
            v["error"]["code"].to_string(),
            v["error"]["message"].to_string(),
        )
    };
    let size = h.size.to_string();
    assert_eq!(
        error(&["audit", "prove", "999999", "--size", &size], 4),
        (
            "\"no_such_event\"".to_owned(),
            format!(
                "\"event 999999 is not in the checkpoint, of size {size}: prove an event from 1 to {size}, or wait for the next checkpoint to take it in\""
            )
        )
    );
    let (code, message) = error(&["audit", "prove", "999999"], 4);
    assert_eq!(code, "\"no_such_event\"");
    assert!(
        message.starts_with("\"event 999999 is not in the newest checkpoint, of size ")
            && message.contains("wait for the next checkpoint"),
        "{message}"
    );
    assert_eq!(
        error(&["audit", "prove", "0"], 2).0,
        "\"bad_proof_request\""
    );
    let kfile = dir.path().join("proof-kept.json");
    std::fs::write(&kfile, &against_kept.stdout).unwrap();
    let checked = check(kfile.to_str().unwrap());
    assert!(checked.success(), "{checked:?}");
    // A proof of seq 0 is no proof, refused as such.
    let zero = proof.stdout.replacen("\"seq\": 3", "\"seq\": 0", 1);
    assert_ne!(zero, proof.stdout);
    std::fs::write(&kfile, zero).unwrap();
    let out = admin.run(
        &[
            "audit",
            "verify-proof",
            kfile.to_str().unwrap(),
            "--verifier-key",
            &key,
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("start at 1"), "{out:?}");

    // Event 3 is the demo directory's third password being set; make it claim another user.
    let altered = proof
        .stdout
        .replace("\\\"user\\\":\\\"bob\\\"", "\\\"user\\\":\\\"eve\\\"");
    assert_ne!(altered, proof.stdout);
    std::fs::write(&pfile, altered).unwrap();
    assert_eq!(
        admin
            .run(
                &[
                    "audit",
                    "verify-proof",
                    pfile.to_str().unwrap(),
                    "--verifier-key",
                    &key
                ],
                None
            )
            .code,
        1
    );
    // With --json the failure is a report too, as `audit verify`'s is, not an empty stdout.
    let report = failed_proof(
        &admin,
        &[pfile.to_str().unwrap(), "--verifier-key", &key],
        "inclusion proof does not verify",
    );
    assert_eq!(report["kind"], "inclusion", "{report}");
    assert_eq!(report["seq"], 3, "{report}");

    // A file that is not there is a usage error, naming it, whichever check was asked for.
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    for args in [
        &["audit", "verify-proof", missing, "--verifier-key", &key][..],
        &[
            "audit",
            "verify",
            "--segment",
            missing,
            "--verifier-key",
            &key,
        ],
        &[
            "audit",
            "verify",
            "--bundle",
            missing,
            "--verifier-key",
            &key,
        ],
    ] {
        let out = admin.run(args, None);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains(missing), "{args:?}: {out:?}");
    }

    // An export bundle verifies without the server; an edited bundle does not.
    let bundle = dir.path().join("bundle");
    let out = admin.run(&["audit", "export", bundle.to_str().unwrap()], None);
    assert!(out.success(), "{out:?}");
    let verified = verify_bundle(&admin, &bundle, &key);
    assert!(verified.success(), "{verified:?}");
    // An earlier bundle is never replaced, nor a file taken for a directory.
    let again = admin.run(&["audit", "export", bundle.to_str().unwrap()], None);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(
        again.stderr.contains("holds an export already"),
        "{again:?}"
    );
    let file = bundle.join("events.jsonl");
    let into_file = admin.run(&["audit", "export", file.to_str().unwrap()], None);
    assert_eq!(into_file.code, 2, "{into_file:?}");
    assert!(
        into_file.stderr.contains("is not a directory"),
        "{into_file:?}"
    );
    // Nor is a bundle written beside files of others, which would be taken for part of it.
    let crowded = dir.path().join("crowded");
    std::fs::create_dir(&crowded).unwrap();
    std::fs::write(crowded.join("notes.txt"), "hi").unwrap();
    let beside = admin.run(&["audit", "export", crowded.to_str().unwrap()], None);
    assert_eq!(beside.code, 2, "{beside:?}");
    assert!(beside.stderr.contains("is not empty"), "{beside:?}");
    // A kept checkpoint of the bundle's size must have its root; one of another size is no
    // check of it, and said so.
    let with_kept = |kept: &Path| {
        admin.run(
            &[
                "audit",
                "verify",
                "--bundle",
                bundle.to_str().unwrap(),
                "--verifier-key",
                &key,
                "--checkpoint",
                kept.to_str().unwrap(),
            ],
            None,
        )
    };
    let same = dir.path().join("same.note");
    std::fs::copy(bundle.join("checkpoint.note"), &same).unwrap();
    let out = with_kept(&same);
    assert!(out.success(), "{out:?}");
    let older = dir.path().join("older.note");
    std::fs::write(&older, &h.checkpoint_note).unwrap();
    let out = with_kept(&older);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("prove-consistency"), "{out:?}");
    // The key the bundle carries is its maker's word only: the verifier's own copy is needed.
    let unanchored = admin.run(
        &["audit", "verify", "--bundle", bundle.to_str().unwrap()],
        None,
    );
    assert_eq!(unanchored.code, 2, "{unanchored:?}");
    assert!(
        unanchored.stderr.contains("--verifier-key"),
        "{unanchored:?}"
    );
    // Every event up to the newest checkpoint at the time of the export, which may be past
    // `newest`: the server keeps signing while the test runs.
    let events = std::fs::read_to_string(bundle.join("events.jsonl")).unwrap();
    let signed = note_size(&std::fs::read_to_string(bundle.join("checkpoint.note")).unwrap());
    assert!(signed >= newest, "{signed} < {newest}");
    assert_eq!(events.lines().count() as u64, signed);
    std::fs::write(
        bundle.join("events.jsonl"),
        events.replacen("alice", "mallory", 1),
    )
    .unwrap();
    let broken = verify_bundle(&admin, &bundle, &key);
    assert_eq!(broken.code, 1, "{broken:?}");

    // Events taken out at the end, or the range's signature swapped for the plain checkpoint
    // of that size: both show.
    let cut: String = events
        .lines()
        .take(events.lines().count() - 2)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(bundle.join("events.jsonl"), &cut).unwrap();
    let cut_short = verify_bundle(&admin, &bundle, &key);
    assert_eq!(cut_short.code, 1, "{cut_short:?}");
    assert!(
        cut_short.stdout.contains("taken out") || cut_short.stderr.contains("taken out"),
        "{cut_short:?}"
    );
    std::fs::write(bundle.join("events.jsonl"), &events).unwrap();
    assert!(verify_bundle(&admin, &bundle, &key).success());
    let plain = rusqlite::Connection::open(h.data.join("warden.db"))
        .unwrap()
        .query_row(
            "SELECT note FROM checkpoints WHERE size = ?1",
            [signed as i64],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
    std::fs::write(bundle.join("checkpoint.note"), plain).unwrap();
    let unsigned = verify_bundle(&admin, &bundle, &key);
    assert_eq!(unsigned.code, 1, "{unsigned:?}");

    // And the live store still verifies end to end after the restart.
    server.terminate();
    let (code, v) = verify(&h.data, &[]);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn retention_seals_segments_that_verify_alone_and_the_live_log_resumes() {
    let (h, mut server) = history();
    server.restart();
    let admin = login(&server, "admin");
    let key = verifier_key(&admin);

    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // A cutoff in the future is a mistake; one before every checkpoint archives nothing.
    let future = admin.run(
        &["audit", "archive", "--before", "2999-01-01T00:00:00Z"],
        None,
    );
    assert_eq!(future.code, 2, "{future:?}");
    assert!(future.stderr.contains("in the future"), "{future:?}");
    let none = admin.json(&["audit", "archive", "--before", "2000-01-01T00:00:00Z"]);
    assert!(none["file"].is_null(), "{none}");
    // Three at once seal the events once.
    let runs: Vec<serde_json::Value> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..3)
            .map(|_| s.spawn(|| admin.json(&["audit", "archive", "--before", &now])))
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let sealed: Vec<&serde_json::Value> = runs.iter().filter(|r| !r["file"].is_null()).collect();
    assert_eq!(sealed.len(), 1, "{runs:?}");
    let archived = sealed[0].clone();
    assert_eq!(
        audit_events(&admin, "audit.segment_archived").len(),
        1,
        "one seal record"
    );
    assert_eq!(archived["from"], 1, "{archived}");
    let to = archived["to"].as_u64().unwrap();
    assert!(to >= h.size, "{archived}");
    let file = server
        .data_dir()
        .join("archive")
        .join(archived["file"].as_str().unwrap());
    // A range of the live log with no event exports as an empty bundle, whatever was archived.
    let later = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let empty = server.data_dir().join("empty-bundle");
    let out = admin.run(
        &["audit", "export", empty.to_str().unwrap(), "--from", &later],
        None,
    );
    assert!(out.success(), "{out:?}");
    // Sealed events are as private as the live log.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);

    // The segment proves itself; an edited segment does not.
    let ok_segment = admin.run(
        &[
            "audit",
            "verify",
            "--segment",
            file.to_str().unwrap(),
            "--verifier-key",
            &key,
        ],
        None,
    );
    assert!(ok_segment.success(), "{ok_segment:?}");
    // A checkpoint kept from before the archive is checked against the archived events, by the
    // segment alone and in the data dir; one outside the segment's events is a usage error.
    let kept = h.data.join("kept-before-archive.note");
    std::fs::write(&kept, &h.checkpoint_note).unwrap();
    let with_kept = |segment: &Path, kept: &Path| verify_segment(&admin, segment, &key, Some(kept));
    let out = with_kept(&file, &kept);
    assert!(out.success(), "{out:?}");
    let (code, v) = verify(server.data_dir(), &["--checkpoint", kept.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["external_checkpoints_unchecked"],
        serde_json::json!([]),
        "{v}"
    );
    checkpoint_reaching(&admin, to + 1);
    let beyond = h.data.join("kept-beyond.note");
    std::fs::write(&beyond, latest_note(server.data_dir())).unwrap();
    let out = with_kept(&file, &beyond);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("outside this segment"), "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(edited.path(), text.replacen("alice", "mallo", 1)).unwrap();
    let bad = admin.run(
        &[
            "audit",
            "verify",
            "--segment",
            edited.path().to_str().unwrap(),
            "--verifier-key",
            &key,
        ],
        None,
    );
    assert_eq!(bad.code, 1, "{bad:?}");
    // A first segment whose first event was taken out, and its range moved up to match, says
    // so, rather than blame a start checkpoint it never had.
    let mut cut: serde_json::Value = serde_json::from_str(&text).unwrap();
    cut["events"].as_array_mut().unwrap().remove(0);
    cut["from"] = 2.into();
    std::fs::write(edited.path(), cut.to_string()).unwrap();
    let out = verify_segment(&admin, edited.path(), &key, None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("holds no start checkpoint"), "{out:?}");

    // A segment is kept until it is past the retention, and with none set, for good.
    let segment = archived["file"].as_str().unwrap();
    let kept = admin.run(&["audit", "delete-segment", segment], None);
    assert_eq!(kept.code, 6, "{kept:?}");
    assert!(kept.stderr.contains("audit_retention_days"), "{kept:?}");
    for (name, code) in [
        ("../warden.db", 2),
        ("segment-000000000001-000000000002.json", 4),
    ] {
        let out = admin.run(&["audit", "delete-segment", name], None);
        assert_eq!(out.code, code, "{name}: {out:?}");
        assert!(!out.stderr.contains(h.data.to_str().unwrap()), "{out:?}");
    }
    assert!(file.exists());
    // Each attempt on archived evidence is on the record.
    let refused: Vec<String> = audit_events(&admin, "request.action_refused")
        .iter()
        .filter(|e| e["details"]["action"] == "audit.delete_segment")
        .map(|e| e["outcome"]["code"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        refused,
        ["segment_retained", "bad_segment_name", "not_found"],
        "{refused:?}"
    );

    // Past the retention (zero days: every event is), deleting it is audited, and the live
    // log still verifies from the archive's end (the start's retention pass archived the rest).
    server.terminate();
    std::fs::write(
        h.data.parent().unwrap().join("warden.toml"),
        "checkpoint_interval = \"1s\"\naudit_retention_days = 0\n",
    )
    .unwrap();
    server.restart();
    let admin = login(&server, "admin");
    let del = ok(&admin, &["audit", "delete-segment", segment]);
    assert_eq!(del["deleted"], segment, "{del}");
    assert!(!file.exists());
    create(&admin, "web", "view", &[]);
    server.terminate();
    let (code, v) = verify(&h.data, &[]);
    assert_eq!(code, 0, "{v}");
    assert!(v["archived_before"]["seq"].as_u64().unwrap() > to, "{v}");
    let text = verify_human(&h.data);
    assert!(
        text.stdout
            .contains("the events before it are in archive segments"),
        "{text:?}"
    );
    // Lists read as their items or `none`, not as JSON.
    assert!(!text.stdout.contains("[]"), "{text:?}");
    assert!(
        text.stdout.contains("external_checkpoints_unchecked: none"),
        "{text:?}"
    );
    // A sealed segment gone without its deletion on record is found missing, the oldest too,
    // whose seal record a later archive took out of the live log (one more restart's retention
    // pass makes sure of that).
    server.restart();
    let admin = login(&server, "admin");
    create(&admin, "web", "view", &[]);
    server.terminate();
    server.restart();
    server.terminate();
    let (code, v) = verify(&h.data, &[]);
    assert_eq!(code, 0, "{v}");
    assert!(v["segments_checked"].as_u64().unwrap() >= 2, "{v}");
    let archive = h.data.join("archive");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    segments.sort();
    let sealed = segments[0].clone();
    let name = sealed.file_name().unwrap().to_str().unwrap();
    let live: i64 = rusqlite::Connection::open(h.data.join("warden.db"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM audit WHERE code = 3100 AND body LIKE ?1",
            [format!("%{name}%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        live, 0,
        "the oldest segment's seal record is still in the live log"
    );
    let aside = h.data.join("aside.json");
    std::fs::rename(&sealed, &aside).unwrap();
    let (code, v) = verify(&h.data, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v).iter().any(|p| p.contains("missing from")),
        "{v}"
    );
    std::fs::rename(&aside, &sealed).unwrap();

    // Rows removed without an archive are not mistaken for retention.
    let c = copy(&h.data);
    let copy_db = c.path();
    let first: i64 = rusqlite::Connection::open(copy_db.join("warden.db"))
        .unwrap()
        .query_row("SELECT MIN(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    tamper(
        copy_db,
        &format!("DELETE FROM audit WHERE seq < {}", first + 3),
    );
    let (code, v) = verify(copy_db, &[]);
    assert_eq!(code, 1, "{v}");
}

/// The newest checkpoint's size once it is at least `size` (waiting for the first one, too).
fn checkpoint_reaching(admin: &Cli, size: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let newest = admin.run(&["audit", "checkpoint"], None);
        if newest.success() && note_size(&newest.stdout) >= size {
            return note_size(&newest.stdout);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of {size} events"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Checks a proof printed by `warden audit ARGS` offline.
fn proven(admin: &Cli, dir: &Path, key: &str, args: &[&str]) {
    let proof = admin.run(args, None);
    assert!(proof.success(), "{args:?}: {proof:?}");
    let file = dir.join("proof.json");
    std::fs::write(&file, &proof.stdout).unwrap();
    let checked = admin.run(
        &[
            "audit",
            "verify-proof",
            file.to_str().unwrap(),
            "--verifier-key",
            key,
        ],
        None,
    );
    assert!(checked.success(), "{args:?}: {checked:?}");
}

/// `warden audit verify --bundle DIR`, offline.
fn verify_bundle(admin: &Cli, bundle: &Path, key: &str) -> CliOutput {
    admin.run(
        &[
            "audit",
            "verify",
            "--bundle",
            bundle.to_str().unwrap(),
            "--verifier-key",
            key,
        ],
        None,
    )
}

/// `warden audit verify --segment FILE`, against a kept checkpoint if one is given.
fn verify_segment(admin: &Cli, segment: &Path, key: &str, kept: Option<&Path>) -> CliOutput {
    let mut args = vec![
        "audit",
        "verify",
        "--segment",
        segment.to_str().unwrap(),
        "--verifier-key",
        key,
    ];
    if let Some(k) = kept {
        args.extend(["--checkpoint", k.to_str().unwrap()]);
    }
    admin.run(&args, None)
}

/// The audit verifier key, as `warden audit verifier-key` prints it.
fn verifier_key(admin: &Cli) -> String {
    admin
        .run(&["audit", "verifier-key"], None)
        .stdout
        .trim()
        .to_owned()
}

/// A temporary directory with a config of 1-second checkpoints and a data dir yet to be made.
struct Fresh {
    dir: tempfile::TempDir,
    data: PathBuf,
    cfg: String,
}

fn fresh() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = config(dir.path());
    Fresh { dir, data, cfg }
}

/// Starts the server on `data` and logs in as the administrator.
fn serve_as_admin(data: &Path, cfg: &str) -> (Server, Cli) {
    let server = Server::start_in(
        Path::new(BIN),
        data,
        &["serve", "--dev", "--config", cfg],
        &[],
    );
    let admin = login(&server, "admin");
    (server, admin)
}

/// A log of several blocks of 1024 events, with a restart in the middle of one: proofs read
/// the blocks' stored roots and two blocks' events, and every one verifies offline, at block
/// edges too.
#[test]
fn proofs_over_many_blocks_verify_offline() {
    let Fresh { dir, data, cfg } = fresh();
    let (mut server, admin) = serve_as_admin(&data, &cfg);
    let key = verifier_key(&admin);
    let key = key.as_str();

    assert_eq!(refused_requests(server.port(), &token(&admin), 3000), 3000);
    let older = checkpoint_reaching(&admin, 3000);
    assert!(server.terminate().success());
    // The third block is completed after the restart, from the stored checkpoint's frontier.
    let (server, admin) = serve_as_admin(&data, &cfg);
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(refused_requests(server.port(), &token(&admin), 1100), 1100);
    let newest = checkpoint_reaching(&admin, older + 1100);

    let c = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    let blocks: i64 = c
        .query_row("SELECT COUNT(*) FROM audit_blocks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        blocks as u64,
        newest >> 10,
        "one stored root per complete block"
    );

    for seq in [
        1,
        2,
        1023,
        1024,
        1025,
        3072,
        older,
        older + 1,
        newest - 1,
        newest,
    ] {
        proven(
            &admin,
            dir.path(),
            key,
            &["audit", "prove", &seq.to_string()],
        );
    }
    let size = older.to_string();
    for seq in [1, 1024, older] {
        proven(
            &admin,
            dir.path(),
            key,
            &["audit", "prove", &seq.to_string(), "--size", &size],
        );
    }
    proven(
        &admin,
        dir.path(),
        key,
        &["audit", "prove-consistency", "--from", &size],
    );

    // An export of the events since the restart: their blocks and the last one are read.
    let bundle = dir.path().join("bundle");
    let out = admin.run(
        &[
            "audit",
            "export",
            bundle.to_str().unwrap(),
            "--from",
            &since,
        ],
        None,
    );
    assert!(out.success(), "{out:?}");
    let events = std::fs::read_to_string(bundle.join("events.jsonl")).unwrap();
    assert!(events.lines().count() >= 1100, "{}", events.lines().count());
    let verified = verify_bundle(&admin, &bundle, key);
    assert!(verified.success(), "{verified:?}");

    // Offline verification recomputes every stored block root; an altered one is named.
    let mut server = server;
    assert!(server.terminate().success());
    let (code, v) = verify(&data, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["blocks_checked"], blocks, "{v}");
    assert_eq!(v["block_filters_checked"], blocks, "{v}");
    tamper(
        &data,
        "UPDATE audit_blocks SET root = zeroblob(32) WHERE block = 1;
         UPDATE audit_blocks SET keys = zeroblob(4096) WHERE block = 2;",
    );
    let (code, v) = verify(&data, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(
        problems(&v),
        [
            "block of events 1025..=2048: its stored Merkle root differs from the events' (altered; proofs through it fail)",
            "block of events 2049..=3072: its stored search filter differs from the events' (altered; searches could miss them)"
        ]
    );
}

/// A log written before blocks' roots were stored has none for its earlier blocks: the
/// checkpointer fills them in, equal to the roots and filters stored as blocks complete, and
/// offline verification checks them.
#[test]
fn a_log_without_stored_blocks_gets_them_back() {
    let Fresh { dir, data, cfg } = fresh();
    let (mut server, admin) = serve_as_admin(&data, &cfg);
    assert_eq!(refused_requests(server.port(), &token(&admin), 2100), 2100);
    checkpoint_reaching(&admin, 2100);
    assert!(server.terminate().success());

    let rows = |data: &Path| -> Vec<(i64, Vec<u8>, Vec<u8>)> {
        let c = rusqlite::Connection::open(data.join("warden.db")).unwrap();
        let mut stmt = c
            .prepare("SELECT block, root, keys FROM audit_blocks ORDER BY block")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let stored = rows(&data);
    assert_eq!(stored.len(), 2, "two complete blocks");
    tamper(&data, "DELETE FROM audit_blocks");

    let (mut server, admin) = serve_as_admin(&data, &cfg);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rows(&data).len() < stored.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "no roots filled in after 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(rows(&data), stored);
    proven(
        &admin,
        dir.path(),
        &verifier_key(&admin),
        &["audit", "prove", "1500"],
    );
    assert!(server.terminate().success());
    let (code, v) = verify(&data, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["blocks_checked"], 2, "{v}");
}

/// After an archive (here of every event the live log had), numbering goes on, live events are
/// still proven (those of blocks wholly in the live log through the roots the archived blocks
/// keep, those sharing a block with archived events through the leaf hashes the archive keeps),
/// the whole live log exports and verifies, and a proof through archived events is refused,
/// saying so. A second archive, cutting into a later block, drops the hashes kept for the first.
#[test]
fn live_events_are_proven_after_an_archive() {
    let Fresh { dir, data, cfg } = fresh();
    let (mut server, admin) = serve_as_admin(&data, &cfg);
    let key = verifier_key(&admin);
    let archive = || {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        admin.json(&["audit", "archive", "--before", &now])["to"]
            .as_u64()
            .unwrap()
    };
    let kept = |data: &Path| -> (i64, Option<i64>, Option<i64>) {
        let c = rusqlite::Connection::open(data.join("warden.db")).unwrap();
        c.query_row(
            "SELECT COUNT(*), MIN(seq), MAX(seq) FROM archived_leaves",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    };

    assert_eq!(refused_requests(server.port(), &token(&admin), 1100), 1100);
    checkpoint_reaching(&admin, 1100);
    let to = archive();
    assert!((1100..2048).contains(&to), "archived up to {to}");
    let to = i64::try_from(to).unwrap();
    assert_eq!(kept(&data), (to - 1024, Some(1025), Some(to)));
    let to = u64::try_from(to).unwrap();

    assert_eq!(refused_requests(server.port(), &token(&admin), 1200), 1200);
    let size = checkpoint_reaching(&admin, to + 1200);
    // Event to+1 shares its block with archived events; 2049 is in a block of its own.
    for seq in [to + 1, 2049, size] {
        proven(
            &admin,
            dir.path(),
            &key,
            &["audit", "prove", &seq.to_string()],
        );
    }
    let since = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for seq in [5, to] {
        let refused = admin.run(&["audit", "prove", &seq.to_string()], None);
        assert!(!refused.success(), "{refused:?}");
        assert!(
            refused
                .stderr
                .contains(&format!("with every event before {}", to + 1)),
            "{refused:?}"
        );
    }
    // Each refusal is on the record.
    let refusals = ok(
        &admin,
        &[
            "audit",
            "search",
            "--code",
            "request.action_refused",
            "--from",
            &since,
        ],
    );
    let archived_refusals = refusals["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"]["outcome"]["code"] == "archived")
        .count();
    assert_eq!(archived_refusals, 2, "{refusals}");
    // The whole live log exports and verifies offline; the export, like a search reaching
    // back that far, says where the archived events end.
    let bundle = dir.path().join("bundle");
    let exported = admin.run(&["audit", "export", bundle.to_str().unwrap()], None);
    assert!(exported.success(), "{exported:?}");
    assert!(
        exported
            .stderr
            .contains(&format!("events before {} (older than", to + 1))
            && exported
                .stderr
                .contains("were archived and are not exported"),
        "{exported:?}"
    );
    let found = admin.json(&["audit", "search", "--limit", "1"]);
    assert_eq!(found["archived_before"]["seq"], to + 1, "{found}");
    let since = found["archived_before"]["time"]
        .as_str()
        .unwrap()
        .to_owned();
    let found = admin.json(&["audit", "search", "--limit", "1", "--from", &since]);
    assert!(found.get("archived_before").is_none(), "{found}");
    let verified = verify_bundle(&admin, &bundle, &key);
    assert!(verified.success(), "{verified:?}");

    // A second archive cuts into a later block: the hashes kept for block 2 go.
    let again = archive();
    assert!(again > 2048, "archived up to {again}");
    let whole = i64::try_from(again / 1024 * 1024).unwrap();
    let kept_again = i64::try_from(again).unwrap() - whole;
    let range = (kept_again > 0).then_some((whole + 1, whole + kept_again));
    assert_eq!(
        kept(&data),
        (kept_again, range.map(|r| r.0), range.map(|r| r.1))
    );
    assert_eq!(refused_requests(server.port(), &token(&admin), 10), 10);
    let size = checkpoint_reaching(&admin, again + 10);
    proven(
        &admin,
        dir.path(),
        &key,
        &["audit", "prove", &size.to_string()],
    );

    assert!(server.terminate().success());
    let (code, v) = verify(&data, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["archived_before"]["seq"], again + 1, "{v}");
    // The stored roots of blocks the archive took events from, and the leaf hashes kept of the
    // block it cut into, are checked against the segments' events too: altered, proofs of live
    // events would fail, so verify names them.
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    let root: Vec<u8> = db
        .query_row("SELECT root FROM audit_blocks WHERE block = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    db.execute(
        "UPDATE audit_blocks SET root = zeroblob(32) WHERE block = 0",
        [],
    )
    .unwrap();
    let names = |prefix: &str| {
        let (code, v) = verify(&data, &[]);
        assert_eq!(code, 1, "{v}");
        assert!(problems(&v).iter().any(|p| p.starts_with(prefix)), "{v}");
    };
    names("block of events 1..=1024");
    db.execute("UPDATE audit_blocks SET root = ?1 WHERE block = 0", [&root])
        .unwrap();
    if let Some((first, _)) = range {
        db.execute(
            "UPDATE archived_leaves SET leaf_hash = zeroblob(32) WHERE seq = ?1",
            [first],
        )
        .unwrap();
        names(&format!("archived event {first}:"));
    }
}

/// Archives everything the newest checkpoint before now covers; returns where it ended.
fn archive_now(admin: &Cli) -> u64 {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let archived = admin.json(&["audit", "archive", "--before", &now]);
    archived["to"]
        .as_u64()
        .unwrap_or_else(|| panic!("{archived}"))
}

/// The leaf hashes of the events archived in the segments of `data`, by sequence number.
fn archived_hashes(data: &Path) -> std::collections::BTreeMap<u64, warden_audit::Hash> {
    let mut hashes = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(data.join("archive")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let segment: serde_json::Value = serde_json::from_str(&text).unwrap();
        let from = segment["from"].as_u64().unwrap();
        for (seq, event) in (from..).zip(segment["events"].as_array().unwrap()) {
            let hash = warden_audit::merkle::leaf_hash(event.as_str().unwrap().as_bytes());
            hashes.insert(seq, hash);
        }
    }
    hashes
}

/// A server whose log was archived twice, the first time inside block 0 (after some 200
/// events), the second inside block 1 (after some 900 more), then given `more` events: the
/// ends of both archives.
fn archived_twice(more: usize) -> (Fresh, Server, Cli, [u64; 2]) {
    let f = fresh();
    let (server, admin) = serve_as_admin(&f.data, &f.cfg);
    assert_eq!(refused_requests(server.port(), &token(&admin), 200), 200);
    checkpoint_reaching(&admin, 200);
    let first = archive_now(&admin);
    assert!(first < 1024, "archived up to {first}");
    assert_eq!(refused_requests(server.port(), &token(&admin), 900), 900);
    checkpoint_reaching(&admin, first + 900);
    let second = archive_now(&admin);
    assert!((1025..2048).contains(&second), "archived up to {second}");
    assert_eq!(refused_requests(server.port(), &token(&admin), more), more);
    (f, server, admin, [first, second])
}

/// `warden --json audit verify --segment FILE`: its exit code and report.
fn segment_report(segment: &Path, key: &str) -> (i32, serde_json::Value) {
    let cli = Cli::new(Path::new(BIN), "http://127.0.0.1:9");
    let file = segment.to_str().unwrap();
    let args = [
        "--json",
        "audit",
        "verify",
        "--segment",
        file,
        "--verifier-key",
        key,
    ];
    let out = cli.run(&args, None);
    let v = serde_json::from_str(&out.stdout).unwrap_or_else(|_| panic!("no JSON report: {out:?}"));
    (out.code, v)
}

/// A segment cut short, or with an event deleted or changed, counts the events it holds and
/// names what is gone; `verify --data-dir` names a changed archived event whose hash the log
/// keeps.
#[test]
fn a_segment_names_its_missing_and_changed_events() {
    let (Fresh { dir, data, .. }, mut server, admin, [first, second]) = archived_twice(10);
    let key = verifier_key(&admin);
    assert!(server.terminate().success());
    let archive = data.join("archive");
    let oldest = archive.join(format!("segment-{:012}-{first:012}.json", 1));
    let newer = archive.join(format!("segment-{:012}-{second:012}.json", first + 1));
    let segment: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&oldest).unwrap()).unwrap();
    let edited = dir.path().join("edited.json");
    let edit = |change: &dyn Fn(&mut Vec<serde_json::Value>)| {
        let mut s = segment.clone();
        change(s["events"].as_array_mut().unwrap());
        std::fs::write(&edited, s.to_string()).unwrap();
        segment_report(&edited, &key)
    };

    let (code, v) = edit(&|events| events.truncate(100));
    assert_eq!((code, &v["events_checked"]), (1, &100.into()), "{v}");
    assert_eq!(
        problems(&v),
        [format!(
            "a checkpoint covers {first} events but the log holds 100: events were deleted (from its end, or where the lines above say)"
        )],
        "{v}"
    );
    let (code, v) = edit(&|events| {
        events.remove(50);
    });
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["events_checked"], first - 1, "{v}");
    assert_eq!(
        problems(&v),
        [
            "event 51 is missing (1 event(s) deleted from there)".to_owned(),
            format!(
                "a checkpoint covers {first} events but the log holds {}: events were deleted (from its end, or where the lines above say)",
                first - 1
            ),
        ],
        "{v}"
    );
    // Two events swapped: moved, none deleted.
    let (code, v) = edit(&|events| events.swap(10, 11));
    assert_eq!((code, &v["events_checked"]), (1, &first.into()), "{v}");
    let found = problems(&v);
    assert!(
        found.contains(&"event 11 (place 12) comes after event 12 (place 11): moved".to_owned())
            && !found
                .iter()
                .any(|p| p.contains("missing") || p.contains("inserted")),
        "{v}"
    );
    let (code, v) = edit(&|events| {
        let text = events[59]
            .as_str()
            .unwrap()
            .replacen("\"time\"", "\"time\" ", 1);
        events[59] = text.into();
    });
    assert_eq!((code, &v["events_checked"]), (1, &first.into()), "{v}");
    assert_eq!(
        problems(&v),
        [
            format!(
                "the log's first {first} events do not match the signed checkpoint at size {first}"
            ),
            format!(
                "what changed lies in events 1..={first}: the log still matches the checkpoint at 0"
            ),
        ],
        "{v}"
    );

    // In the data dir, the leaf hashes kept of the block the second archive cut into name a
    // changed event of its segment.
    let text = std::fs::read_to_string(&newer).unwrap();
    let mut changed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let at = usize::try_from(1030 - first - 1).unwrap();
    let event = changed["events"][at]
        .as_str()
        .unwrap()
        .replacen("\"time\"", "\"time\" ", 1);
    changed["events"][at] = event.into();
    std::fs::write(&newer, changed.to_string()).unwrap();
    let (code, v) = verify(&data, &[]);
    assert_eq!(code, 1, "{v}");
    // The older segment, whose seal record is in the altered one, is still checked.
    assert_eq!(v["segments_checked"], 1, "{v}");
    let name = newer.file_name().unwrap().to_str().unwrap();
    let found = problems(&v);
    assert!(
        found.contains(&format!("archive segment {name}: event 1030 was modified")),
        "{v}"
    );
}

/// Two archives whose segments share a block of events (the first ends inside block 0, the
/// second inside block 1), and a block shared by the second segment and the live log: verify
/// checks every stored root against the segments read in sequence order and names an altered
/// one; a block whose segment is missing is listed as unchecked; and a consistency proof from
/// the archived block's edge needs only its kept root.
#[test]
fn blocks_shared_by_segments_are_checked_and_proven_from() {
    let (Fresh { dir, data, .. }, mut server, admin, [first, second]) = archived_twice(1000);
    let key = verifier_key(&admin);
    let size = checkpoint_reaching(&admin, 2049);

    // From the archived block's edge the proof passes through its kept root and live events:
    // it leads from the root of the archived events 1..=1024 to the newest checkpoint.
    let proof = admin.json(&["audit", "prove-consistency", "--from", "1024"]);
    let hashes = archived_hashes(&data);
    let old_root =
        warden_audit::merkle::root(&hashes.values().take(1024).copied().collect::<Vec<_>>());
    let new = warden_audit::Checkpoint::open(
        proof["new_checkpoint"].as_str().unwrap(),
        &key.parse().unwrap(),
    )
    .unwrap();
    let path: Vec<warden_audit::Hash> = proof["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    assert!(new.size >= size, "{proof}");
    warden_audit::merkle::verify_consistency(1024, new.size, &old_root, &new.root, &path)
        .unwrap_or_else(|e| panic!("{e}: {proof}"));
    // From inside it, the archived events' own hashes would be needed: refused, saying so.
    let inside = admin.run(&["audit", "prove-consistency", "--from", "100"], None);
    assert!(!inside.success(), "{inside:?}");
    assert!(
        inside.stderr.contains(
            "needs the hashes of events from 1 on, and those before 1025 were archived without them"
        ),
        "{inside:?}"
    );
    proven(
        &admin,
        dir.path(),
        &key,
        &["audit", "prove", &size.to_string()],
    );

    assert!(server.terminate().success());
    let (code, v) = verify(&data, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        (v["blocks_checked"].as_u64(), v["segments_checked"].as_u64()),
        (Some(2), Some(2)),
        "{v}"
    );
    assert_eq!(v["blocks_unchecked"], serde_json::json!([]), "{v}");
    assert_eq!(v["archived_before"]["seq"], second + 1, "{v}");
    for (block, events) in [(0, "1..=1024"), (1, "1025..=2048")] {
        let c = copy(&data);
        std::fs::create_dir(c.path().join("archive")).unwrap();
        for entry in std::fs::read_dir(data.join("archive")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                c.path().join("archive").join(entry.file_name()),
            )
            .unwrap();
        }
        tamper(
            c.path(),
            &format!("UPDATE audit_blocks SET root = zeroblob(32) WHERE block = {block}"),
        );
        let (code, v) = verify(c.path(), &[]);
        assert_eq!(code, 1, "{v}");
        assert_eq!(
            problems(&v),
            [format!(
                "block of events {events}: its stored Merkle root differs from the events' (altered; proofs through it fail)"
            )],
            "{v}"
        );
    }
    // Without the first segment, block 0's events are not all at hand: its root is not checked,
    // and said so.
    let oldest = data
        .join("archive")
        .join(format!("segment-{:012}-{first:012}.json", 1));
    std::fs::rename(&oldest, dir.path().join("aside.json")).unwrap();
    let (code, v) = verify(&data, &[]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["blocks_unchecked"], serde_json::json!([0]), "{v}");
    assert_eq!(v["blocks_checked"], 1, "{v}");
}

/// Security and auditors read the whole log without administering Warden: members of
/// `audit_readers` (default group `security`) search everyone's events, see every request,
/// read proofs, export a bundle that verifies offline and see the export's status; archiving
/// and policy stay with administrators, and everyone else sees only their own events.
#[test]
fn audit_readers_search_prove_and_export_without_administering() {
    let Fresh { dir, data, cfg } = fresh();
    write_policy(
        &data.join("policy"),
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let (server, _admin) = serve_as_admin(&data, &cfg);
    let server = &server;
    let alice = login(server, "alice");
    let request = id(&create(&alice, "web", "view", &[]));
    let sam = login(server, "sam");
    let key = verifier_key(&sam);

    let found = ok(&sam, &["audit", "search", "--user", "alice"]);
    let created: Vec<u64> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"]["action"] == "request.created")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(created.len(), 1, "{found}");
    assert_eq!(ok(&sam, &["request", "show", &request])["id"], request);
    let listed = ok(&sam, &["request", "list"]);
    assert!(listed.to_string().contains(&request), "{listed}");

    checkpoint_reaching(&sam, created[0]);
    let proof = sam.run(&["audit", "prove", &created[0].to_string()], None);
    assert!(proof.success(), "{proof:?}");
    let bundle = dir.path().join("bundle");
    let out = sam.run(&["audit", "export", bundle.to_str().unwrap()], None);
    assert!(out.success(), "{out:?}");
    let verified = verify_bundle(&sam, &bundle, &key);
    assert!(verified.success(), "{verified:?}");
    assert!(sam.run(&["audit", "status"], None).success());

    // Read-only: no archive, no policy reload.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    fails(&sam, &["audit", "archive", "--before", &now], 3);
    fails(
        &sam,
        &[
            "audit",
            "delete-segment",
            "segment-000000000001-000000000002.json",
        ],
        3,
    );
    fails(&sam, &["policy", "reload"], 3);
    let refused = audit_values(&sam, "request.action_refused", "/details/action");
    for action in ["audit.archive", "audit.delete_segment"] {
        assert!(refused.iter().any(|a| a == action), "{action}: {refused:?}");
    }

    // Anyone else: their own events only, and no proofs or exports.
    let bob = login(server, "bob");
    let refused = fails(&bob, &["audit", "search", "--user", "alice"], 3);
    assert!(refused.stderr.contains("audit_readers"), "{refused:?}");
    fails(&bob, &["audit", "prove", &created[0].to_string()], 3);
    fails(&bob, &["audit", "prove-consistency", "--from", "1"], 3);
    fails(&bob, &["audit", "status"], 3);
}

/// A server on `f` where alice has taken `grants` grants, its administrator signed in, and a
/// checkpoint signed of at least `size` events, whose size it returns.
fn signed_history(f: &Fresh, grants: usize, size: u64) -> (Server, Cli, u64) {
    let (server, admin) = serve_as_admin(&f.data, &f.cfg);
    let alice = login(&server, "alice");
    for _ in 0..grants {
        create(&alice, "demo-ssh", "viewer", &[]);
    }
    let signed = checkpoint_reaching(&admin, size);
    (server, admin, signed)
}

/// A log cut back and signed again (an older backup restored, the server's file moved aside) is
/// caught by a kept checkpoint of a larger size that the new ones postdate, and the narrowing
/// trusts none of them.
#[test]
fn a_log_cut_back_and_signed_again_shows_as_a_fork() {
    let f = fresh();
    let (mut server, admin, size) = signed_history(&f, 4, 24);
    let kept = f.dir.path().join("kept.note");
    std::fs::write(&kept, admin.run(&["audit", "checkpoint"], None).stdout).unwrap();
    assert_eq!(note_size(&std::fs::read_to_string(&kept).unwrap()), size);
    assert!(server.terminate().success());
    // A second passes, so that what is signed next is signed later by the clock.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let cut: i64 = rusqlite::Connection::open(f.data.join("warden.db"))
        .unwrap()
        .query_row(
            "SELECT MAX(size) FROM checkpoints WHERE size <= ?1",
            [i64::try_from(size / 2).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    tamper(
        &f.data,
        &format!(
            "DELETE FROM audit WHERE seq > {cut}; DELETE FROM checkpoints WHERE size > {cut};"
        ),
    );
    std::fs::remove_file(f.data.join("audit_checkpoint.note")).unwrap();
    server.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let resigned = loop {
        if let Some(signed) = latest_note_or_none(&f.data).map(|n| note_size(&n))
            && signed > u64::try_from(cut).unwrap()
        {
            break signed;
        }
        assert!(std::time::Instant::now() < deadline, "nothing signed again");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let _ = server.terminate();
    assert!(resigned < size, "{resigned} >= {size}");
    let (code, v) = verify(&f.data, &["--checkpoint", kept.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let problems = problems(&v);
    assert!(
        problems.iter().any(|p| p.contains(&format!(
            "checkpoint at size {resigned} was signed after a kept checkpoint of a larger size"
        ))),
        "{v}"
    );
    assert!(
        !problems
            .iter()
            .any(|p| p.contains(&format!("still matches the checkpoint at {resigned}"))),
        "{v}"
    );
}

/// Rewrites event `seq` as someone holding the audit signing key would: its stored hash, then
/// every stored checkpoint's root, frontier and note made again over the changed log with
/// that key, and the server's file of the newest. Returns the new note of each size.
fn rewrite_and_sign_again(
    data: &Path,
    key: &Path,
    seq: u64,
) -> std::collections::BTreeMap<u64, String> {
    let key = warden_server::keys::audit_signing_key(key).unwrap();
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    let body: String = db
        .query_row("SELECT body FROM audit WHERE seq = ?1", [seq as i64], |r| {
            r.get(0)
        })
        .unwrap();
    let altered = body.replacen("\"time\"", "\"time\" ", 1);
    assert_ne!(altered, body);
    let hash = warden_audit::merkle::leaf_hash(altered.as_bytes());
    db.execute(
        "UPDATE audit SET body = ?1, leaf_hash = ?2 WHERE seq = ?3",
        rusqlite::params![altered, hash.to_vec(), seq as i64],
    )
    .unwrap();
    let leaves: Vec<Vec<u8>> = db
        .prepare("SELECT leaf_hash FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let stored: Vec<(u64, String)> = db
        .prepare("SELECT size, note FROM checkpoints ORDER BY size")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let origin = stored[0].1.lines().next().unwrap().to_owned();
    let signer = warden_server::checkpoints::signer(&origin, &key).unwrap();
    let mut tree = warden_audit::Tree::new();
    let mut leaves = leaves.into_iter();
    let mut notes = std::collections::BTreeMap::new();
    for (size, note) in stored {
        while tree.size() < size {
            tree.push(leaves.next().unwrap().try_into().unwrap());
        }
        let mut cp = warden_audit::Checkpoint::open(&note, &signer.verifier()).unwrap();
        cp.root = tree.root();
        let note = cp.sign(&signer).unwrap();
        db.execute(
            "UPDATE checkpoints SET root = ?1, frontier = ?2, note = ?3 WHERE size = ?4",
            rusqlite::params![
                cp.root.to_vec(),
                tree.frontier().concat(),
                note,
                size as i64
            ],
        )
        .unwrap();
        notes.insert(size, note);
    }
    let newest = notes.values().next_back().unwrap();
    std::fs::write(data.join("audit_checkpoint.note"), newest).unwrap();
    notes
}

/// An event rewritten by someone holding the signing key, with every stored checkpoint and
/// the server's file signed again to match: the log matches all of them, and a checkpoint kept
/// outside the data dir catches it. The data dir's checkpoints narrow nothing down after that,
/// only kept ones do, and one of a kept one's size with another root is named a fork; as is a
/// checkpoint of such a rewrite, validly signed, against the intact log.
#[test]
fn a_log_rewritten_and_signed_again_is_narrowed_down_by_kept_checkpoints_alone() {
    let f = fresh();
    let (mut server, admin, _) = signed_history(&f, 1, 8);
    let alice = login(&server, "alice");
    let keep = |admin: &Cli, size: u64| {
        let signed = checkpoint_reaching(admin, size);
        let note = admin.run(&["audit", "checkpoint"], None).stdout;
        assert_eq!(note_size(&note), signed);
        note
    };
    let early_note = keep(&admin, 8);
    let early = note_size(&early_note);
    create(&alice, "demo-ssh", "viewer", &[]);
    let between = checkpoint_reaching(&admin, early + 1);
    create(&alice, "demo-ssh", "viewer", &[]);
    let kept_note = keep(&admin, between + 1);
    let size = note_size(&kept_note);
    assert!(server.terminate().success());
    let early_kept = f.dir.path().join("early.note");
    let kept = f.dir.path().join("kept.note");
    std::fs::write(&early_kept, &early_note).unwrap();
    std::fs::write(&kept, &kept_note).unwrap();

    // The event right after the early kept checkpoint, before the stored one between.
    let c = copy(&f.data);
    let notes = rewrite_and_sign_again(c.path(), &f.data.join("audit_signing.key"), early + 1);
    assert!(
        notes.contains_key(&between) && notes.contains_key(&size),
        "{notes:?}"
    );
    let (code, v) = verify(c.path(), &[]);
    assert_eq!(code, 0, "the rewrite is signed as a whole: {v}");

    let fork = format!(
        "the data dir's checkpoint at size {size} has another root than the kept {}: the log was rewritten since (a fork)",
        kept.display()
    );
    let resigned = format!(
        "the checkpoints in the data dir were signed again, or the log forked, since the kept checkpoint at size {size}"
    );
    let (code, v) = verify(c.path(), &["--checkpoint", kept.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let found = problems(&v);
    assert!(
        found.contains(&format!(
            "the log's first {size} events do not match the signed checkpoint at size {size}"
        )),
        "{v}"
    );
    assert!(found.contains(&fork), "{v}");
    assert!(found.iter().any(|p| p.starts_with(&resigned)), "{v}");
    assert!(
        found.contains(&format!(
            "what changed lies in events 1..={size}: no kept checkpoint of fewer events narrows it down"
        )),
        "{v}"
    );
    assert!(
        !found
            .iter()
            .any(|p| p.contains("still matches the checkpoint at")),
        "a checkpoint signed again narrowed it down: {v}"
    );

    // A checkpoint kept earlier narrows it down, from where the log still matches it.
    let both = [
        "--checkpoint",
        early_kept.to_str().unwrap(),
        "--checkpoint",
        kept.to_str().unwrap(),
    ];
    let (code, v) = verify(c.path(), &both);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v).contains(&format!(
            "what changed lies in events {}..={size}: the log still matches the kept checkpoint at {early}",
            early + 1
        )),
        "{v}"
    );

    // The intact log against a validly signed checkpoint of the rewrite: a fork, not a change
    // found between two of the data dir's checkpoints.
    let forged = f.dir.path().join("forged.note");
    std::fs::write(&forged, &notes[&size]).unwrap();
    let (code, v) = verify(&f.data, &["--checkpoint", forged.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let found = problems(&v);
    assert!(
        found.contains(&format!(
            "the data dir's checkpoint at size {size} has another root than the kept {}: the log was rewritten since (a fork)",
            forged.display()
        )),
        "{v}"
    );
    assert!(found.iter().any(|p| p.starts_with(&resigned)), "{v}");
    assert!(
        !found
            .iter()
            .any(|p| p.contains("still matches the checkpoint at")),
        "{v}"
    );
}

/// A verifier key argument not shaped like a key is a file's path: one that is not there is
/// said to be neither a key nor a file that can be read, with why, not a malformed key.
#[test]
fn a_missing_verifier_key_file_is_named_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("warden.db"), "not read").unwrap();
    let data = dir.path().to_str().unwrap();
    let absent = dir.path().join("keys").join("audit.key");
    let absent = absent.to_str().unwrap();
    let cli = Cli::new(Path::new(BIN), "http://127.0.0.1:9");
    for key in ["nonexist.pub", "nonexist", "garbage", absent] {
        for place in [["--data-dir", data], ["--bundle", data]] {
            let mut args = vec!["audit", "verify", "--verifier-key", key];
            args.extend(place);
            let out = cli.run(&args, None);
            assert_eq!(out.code, 2, "{args:?}: {out:?}");
            assert!(
                out.stderr.contains(&format!(
                    "--verifier-key {key}: neither a verifier key (NAME+KEYID+BASE64) nor a file that can be read (No such file or directory"
                )),
                "{args:?}: {out:?}"
            );
        }
    }
    // Shaped like a key, it is read as one, and said to be malformed.
    let out = cli.run(
        &[
            "audit",
            "verify",
            "--bundle",
            data,
            "--verifier-key",
            "warden.local/audit+0123abcd+AAAA",
        ],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("not a verifier key"), "{out:?}");
}

/// A log whose newest events were deleted, its checkpoints left, does not start: new events
/// would take the numbers of signed ones, and proofs of them would not verify.
#[test]
fn a_log_cut_short_under_its_checkpoints_does_not_start() {
    let f = fresh();
    let (mut server, _, size) = signed_history(&f, 1, 8);
    assert!(server.terminate().success());
    tamper(
        &f.data,
        &format!("DELETE FROM audit WHERE seq > {}", size - 3),
    );
    let refused = serve_refusing(Path::new(&f.cfg), &f.data);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("was cut short") && refused.stderr.contains("Not started"),
        "{refused:?}"
    );
    // Nor with events numbered on past the checkpoint since: what it covered is still gone.
    tamper(
        &f.data,
        "INSERT INTO audit (seq, time, code, user, target, request_id, body, leaf_hash) \
         SELECT (SELECT MAX(size) FROM checkpoints) + 1, time, code, user, target, request_id, \
         body, leaf_hash FROM audit WHERE seq = 1",
    );
    let refused = serve_refusing(Path::new(&f.cfg), &f.data);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("was cut short"), "{refused:?}");
}

/// A first start cut short before its first checkpoint leaves the events of that start and
/// the empty log's note: the next start goes on and signs them. With any other event beside
/// them the log cannot be told from one cut back to nothing and that note put back, and it does
/// not start.
#[test]
fn a_first_start_cut_short_before_its_first_checkpoint_starts_again() {
    let f = fresh();
    let mut server = Server::start_in(
        Path::new(BIN),
        &f.data,
        &["serve", "--dev", "--config", &f.cfg],
        &[],
    );
    assert!(server.terminate().success());
    // What a kill after the start's events and before its first checkpoint leaves.
    let loaded: i64 = rusqlite::Connection::open(f.data.join("warden.db"))
        .unwrap()
        .query_row("SELECT MIN(seq) FROM audit WHERE code = 3000", [], |r| {
            r.get(0)
        })
        .unwrap();
    tamper(
        &f.data,
        &format!(
            "DELETE FROM checkpoints; DELETE FROM audit_blocks; DELETE FROM audit WHERE seq > {}",
            loaded + 1
        ),
    );
    let key = warden_server::keys::audit_signing_key(&f.data.join("audit_signing.key")).unwrap();
    let signer = warden_server::checkpoints::signer("warden.local/audit", &key).unwrap();
    let anchor = f.data.join("audit_checkpoint.note");
    warden_server::checkpoints::anchor_empty_log(&anchor, &signer, "warden.local/audit").unwrap();

    // The stop's event too: not one a start writes.
    let refused = serve_refusing(Path::new(&f.cfg), &f.data);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("the empty log's"), "{refused:?}");

    tamper(&f.data, &format!("DELETE FROM audit WHERE seq > {loaded}"));
    server.restart();
    assert!(
        server
            .stderr()
            .contains("first start stopped before its first checkpoint"),
        "{}",
        server.stderr()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while latest_note_or_none(&f.data)
        .is_none_or(|n| note_size(&n) <= u64::try_from(loaded).unwrap())
    {
        assert!(std::time::Instant::now() < deadline, "nothing signed");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(server.terminate().success());
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 0, "{v}");
}

/// An event written into the stopped log, past the checkpoint of the last stop, is signed
/// with the next checkpoint (it cannot be told from one a crash left unsigned), and the start
/// says how many there are and from where.
#[test]
fn events_written_into_a_stopped_log_are_named_at_the_next_start() {
    let f = fresh();
    let (mut server, _, _) = signed_history(&f, 1, 8);
    assert!(server.terminate().success());
    tamper(
        &f.data,
        "INSERT INTO audit (seq, time, code, user, target, request_id, body, leaf_hash) \
         SELECT seq + 1, time, code, user, target, request_id, body, leaf_hash FROM audit \
         WHERE seq = (SELECT MAX(seq) FROM audit)",
    );
    server.restart();
    assert!(
        server.stderr().contains("no checkpoint covers yet")
            && server.stderr().contains("unsigned=1"),
        "{}",
        server.stderr()
    );
}

/// An event whose text no longer reads, among those a start reads back (sign-in locks), stops
/// the start saying which event, and where to look.
#[test]
fn an_unreadable_event_is_named_by_its_number() {
    let f = fresh();
    let (mut server, _, _) = signed_history(&f, 1, 8);
    assert!(server.terminate().success());
    let seq: i64 = rusqlite::Connection::open(f.data.join("warden.db"))
        .unwrap()
        .query_row(
            "SELECT MIN(seq) FROM audit WHERE body LIKE '%auth.password_set%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    tamper(
        &f.data,
        &format!("UPDATE audit SET body = substr(body, 1, 50) WHERE seq = {seq}"),
    );
    let refused = serve_refusing(Path::new(&f.cfg), &f.data);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(&format!("audit event {seq} cannot be read"))
            && refused.stderr.contains("warden audit verify")
            && !refused.stderr.contains("storage failure: storage failure"),
        "{refused:?}"
    );
}

/// An event changed in the stopped database, its stored hash with it, no longer makes the root
/// the server signed: the next start hashes the covered events again, says so, signs nothing
/// more and is not ready.
#[test]
fn an_event_rewritten_with_its_hash_gets_no_signature_over_it() {
    let f = fresh();
    let (mut server, _, size) = signed_history(&f, 1, 8);
    assert!(server.terminate().success());
    let signed = note_size(&latest_note(&f.data));
    assert!(signed >= size);
    let db = rusqlite::Connection::open(f.data.join("warden.db")).unwrap();
    let body: String = db
        .query_row("SELECT body FROM audit WHERE seq = 3", [], |r| r.get(0))
        .unwrap();
    let altered = body.replacen("\"time\"", "\"time\" ", 1);
    assert_ne!(altered, body);
    let hash = warden_audit::merkle::leaf_hash(altered.as_bytes());
    db.execute(
        "UPDATE audit SET body = ?1, leaf_hash = ?2 WHERE seq = 3",
        rusqlite::params![altered, hash.to_vec()],
    )
    .unwrap();
    drop(db);
    server.restart_unready();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.stderr().contains("no longer make the root") {
        assert!(std::time::Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ready = warden_testkit::http_get(server.port(), "/readyz").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    let _ = server.terminate();
    assert_eq!(
        note_size(&latest_note(&f.data)),
        signed,
        "a checkpoint was signed over the rewritten event"
    );
}

/// A checkpoint row written into the database, its note no signature of the server's, is
/// never extended: its root and frontier could be of any history. Verification names it, and
/// a frontier altered alone too.
#[test]
fn a_forged_checkpoint_row_gets_no_signature_over_it() {
    let f = fresh();
    let (mut server, _, size) = signed_history(&f, 1, 8);
    assert!(server.terminate().success());
    let newest = latest_note(&f.data);
    let signed = note_size(&newest);
    assert!(signed >= size);
    tamper(
        &f.data,
        &format!("UPDATE checkpoints SET note = 'not a signed note\n' WHERE size = {signed};"),
    );
    // It serves, but says it is not ready: it can sign nothing more.
    server.restart_unready();
    let alice = login(&server, "alice");
    create(&alice, "demo-ssh", "viewer", &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.stderr().contains("not one this server signed") {
        assert!(std::time::Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ready = warden_testkit::http_get(server.port(), "/readyz").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body.contains("audit checkpoints fail"),
        "{}",
        ready.body
    );
    let _ = server.terminate();
    assert_eq!(
        note_size(&latest_note(&f.data).replace("not a signed note\n", &newest)),
        signed,
        "a checkpoint was signed over a forged one"
    );
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v)
            .iter()
            .any(|p| p.contains(&format!("checkpoint at size {signed}: not validly signed"))),
        "{v}"
    );

    // The note put back, the frontier altered alone: named too.
    let db = rusqlite::Connection::open(f.data.join("warden.db")).unwrap();
    db.execute(
        "UPDATE checkpoints SET note = ?1, frontier = zeroblob(length(frontier)) WHERE size = ?2",
        rusqlite::params![newest, signed as i64],
    )
    .unwrap();
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v).iter().any(|p| p.contains(&format!(
            "checkpoint at size {signed}: its stored frontier does not make its root (altered; the server signs nothing past it)"
        ))),
        "{v}"
    );
    // An older one's frontier is no longer extended: said as what it breaks.
    let older: i64 = db
        .query_row("SELECT MIN(size) FROM checkpoints", [], |r| r.get(0))
        .unwrap();
    assert!(older < signed as i64);
    db.execute(
        "UPDATE checkpoints SET frontier = zeroblob(length(frontier)) WHERE size = ?1",
        [older],
    )
    .unwrap();
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v).iter().any(|p| p.contains(&format!(
            "checkpoint at size {older}: its stored frontier does not make its root (altered; an archive cut there would not verify"
        ))),
        "{v}"
    );

    // The newest row deleted: the file beside the database still names it.
    let row: (Vec<u8>, Vec<u8>, i64, String) = db
        .query_row(
            "SELECT root, frontier, time, note FROM checkpoints WHERE size = ?1",
            [signed as i64],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    db.execute("DELETE FROM checkpoints WHERE size = ?1", [signed as i64])
        .unwrap();
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v).iter().any(|p| p.contains(&format!(
            "audit_checkpoint.note holds the checkpoint at size {signed}, which the database no longer has"
        ))),
        "{v}"
    );
    db.execute(
        "INSERT INTO checkpoints (size, root, frontier, time, note) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![signed as i64, row.0, row.1, row.2, row.3],
    )
    .unwrap();

    // Its time, which archives cut by, altered alone: named too.
    db.execute(
        "UPDATE checkpoints SET time = 0 WHERE size < ?1 AND size = (SELECT MIN(size) FROM checkpoints)",
        rusqlite::params![signed as i64],
    )
    .unwrap();
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v)
            .iter()
            .any(|p| p.contains("the stored time differs from its signed note's")),
        "{v}"
    );
}

/// An insider who rewrites an event and deletes the stored checkpoints gets no new signature:
/// the server does not start on a log behind the checkpoint it keeps beside the database, and
/// verification against that file says the log was rolled back; nor, with that file deleted
/// too, on a log of events no checkpoint covers. An older backup restored on purpose (the file
/// moved aside) is signed on from its own checkpoints, and a checkpoint an auditor kept from
/// before the restore exposes the fork in any proof from it.
#[test]
fn a_rewritten_log_gets_no_signature_and_a_kept_checkpoint_exposes_the_fork() {
    let f = fresh();
    let (mut server, admin) = serve_as_admin(&f.data, &f.cfg);
    let alice = login(&server, "alice");
    create(&alice, "demo-ssh", "viewer", &[]);
    // A full page of a search says how to read on.
    let page = admin.run(&["audit", "search", "--limit", "2"], None);
    assert!(page.success(), "{page:?}");
    assert!(
        page.stderr.contains("more may follow: add --after 2"),
        "{page:?}"
    );
    let next = admin.json(&["audit", "search", "--limit", "2", "--after", "2"]);
    assert_eq!(next["events"][0]["seq"], 3, "{next}");
    let key = verifier_key(&admin);
    let size = checkpoint_reaching(&admin, 8);
    let kept = f.dir.path().join("kept.note");
    let note = admin.run(&["audit", "checkpoint"], None).stdout;
    assert_eq!(note_size(&note), size);
    std::fs::write(&kept, &note).unwrap();

    // The server's checkpoint of that size lost, the log intact: a proof from the kept
    // checkpoint's size, where the server now keeps none, is checked against the kept one.
    create(&alice, "demo-ssh", "viewer", &[]);
    checkpoint_reaching(&admin, size + 1);
    tamper(
        &f.data,
        &format!("DELETE FROM checkpoints WHERE size = {size};"),
    );
    let from_kept = |admin: &Cli| {
        let proof = admin.json(&["audit", "prove-consistency", "--from", &size.to_string()]);
        assert_eq!(proof["old_size"], size, "{proof}");
        assert!(proof["old_checkpoint"].is_null(), "{proof}");
        let file = f.dir.path().join("from-kept.json");
        std::fs::write(&file, proof.to_string()).unwrap();
        file
    };
    let file = from_kept(&admin);
    let check = |admin: &Cli, file: &Path, kept_file: Option<&Path>| {
        let mut args = vec![
            "audit",
            "verify-proof",
            file.to_str().unwrap(),
            "--verifier-key",
            key.as_str(),
        ];
        if let Some(k) = kept_file {
            args.extend(["--checkpoint", k.to_str().unwrap()]);
        }
        admin.run(&args, None)
    };
    let out = check(&admin, &file, Some(&kept));
    assert!(out.success(), "{out:?}");
    let out = check(&admin, &file, None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--checkpoint FILE"), "{out:?}");
    // Nothing proves from the empty log, and a file that is no proof is said to be none.
    let out = admin.run(&["audit", "prove-consistency", "--from", "0"], None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("1 or more"), "{out:?}");
    let not_a_proof = f.dir.path().join("empty.json");
    std::fs::write(&not_a_proof, "{}").unwrap();
    let out = check(&admin, &not_a_proof, Some(&kept));
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("is not a proof"), "{out:?}");
    assert!(server.terminate().success());
    let backup = f.dir.path().join("backup.db");
    std::fs::copy(f.data.join("warden.db"), &backup).unwrap();

    let rewrite = "UPDATE audit SET body = replace(body, '\"reason\":\"', '\"reason\":\"approved by the CISO; ') \
                   WHERE code = 2000; DELETE FROM checkpoints;";
    tamper(&f.data, rewrite);
    // The server does not start on a log behind the checkpoint it keeps, so signs nothing.
    let refused = serve_refusing(Path::new(&f.cfg), &f.data);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("nothing more is signed") && refused.stderr.contains("Not started"),
        "{refused:?}"
    );
    assert_eq!(
        latest_note_or_none(&f.data),
        None,
        "a rewritten log was signed"
    );
    let (code, v) = verify(&f.data, &[]);
    assert_ne!(code, 0, "{v}");
    assert!(
        problems(&v)
            .iter()
            .any(|p| p.contains("truncated") || p.contains("do not match")),
        "{v}"
    );

    // The file gone too: nothing is left to say what the log was, and nothing is signed.
    std::fs::remove_file(f.data.join("audit_checkpoint.note")).unwrap();
    let refused = serve_refusing(Path::new(&f.cfg), &f.data);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("no checkpoint covers any of them"),
        "{refused:?}"
    );
    assert_eq!(
        latest_note_or_none(&f.data),
        None,
        "a rewritten log was signed"
    );

    // A backup from before the kept checkpoint restored on purpose, the file moved aside: the
    // server signs on from the backup's checkpoints, and the kept one exposes the fork.
    std::fs::copy(&backup, f.data.join("warden.db")).unwrap();
    let earlier: i64 = rusqlite::Connection::open(f.data.join("warden.db"))
        .unwrap()
        .query_row(
            "SELECT MAX(size) FROM checkpoints WHERE size < ?1",
            [i64::try_from(size).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    tamper(
        &f.data,
        &format!(
            "DELETE FROM audit WHERE seq > {earlier}; DELETE FROM checkpoints WHERE size > {earlier};"
        ),
    );
    server.restart();
    let admin = login(&server, "admin");
    let alice = login(&server, "alice");
    for _ in 0..size / 4 + 2 {
        create(&alice, "demo-ssh", "viewer", &[]);
    }
    let signed = checkpoint_reaching(&admin, size + 1);
    let (code, v) = verify(&f.data, &["--checkpoint", kept.to_str().unwrap()]);
    assert_ne!(code, 0, "{v}");
    assert!(
        problems(&v)
            .iter()
            .any(|p| p.contains(&format!("first {size} events do not match"))),
        "{v}"
    );
    // A proof must start from the kept checkpoint to be checked against it.
    let proof = admin.run(
        &["audit", "prove-consistency", "--from", &signed.to_string()],
        None,
    );
    let file = f.dir.path().join("proof.json");
    std::fs::write(&file, &proof.stdout).unwrap();
    let args = [
        "audit",
        "verify-proof",
        file.to_str().unwrap(),
        "--verifier-key",
        key.as_str(),
        "--checkpoint",
        kept.to_str().unwrap(),
    ];
    let out = admin.run(&args, None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&format!("--from {size}")), "{out:?}");
    // From it, the proof fails against the kept checkpoint: the fork shows online.
    let forked = from_kept(&admin);
    let out = check(&admin, &forked, Some(&kept));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("consistency proof does not verify"),
        "{out:?}"
    );
    // With --json it is a report with the problem, as `audit verify`'s is.
    let report = failed_proof(
        &admin,
        &[
            forked.to_str().unwrap(),
            "--verifier-key",
            key.as_str(),
            "--checkpoint",
            kept.to_str().unwrap(),
        ],
        "consistency proof does not verify",
    );
    assert_eq!(report["from"], size, "{report}");

    // Archived, the forked events still fail against the kept checkpoint, in the data dir and
    // in the segment alone.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let archived = admin.json(&["audit", "archive", "--before", &now]);
    let segment = f
        .data
        .join("archive")
        .join(archived["file"].as_str().unwrap());
    assert!(archived["to"].as_u64().unwrap() >= size, "{archived}");
    let _ = server.terminate();
    let (code, v) = verify(&f.data, &["--checkpoint", kept.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v).iter().any(|p| p.contains(&format!(
            "kept checkpoint at size {size}: the events archived"
        ))),
        "{v}"
    );
    let out = verify_segment(&admin, &segment, &key, Some(&kept));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("(a fork)"), "{out:?}");
}

fn latest_note_or_none(data: &Path) -> Option<String> {
    let db = rusqlite::Connection::open(data.join("warden.db")).unwrap();
    db.query_row(
        "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .ok()
}

/// A data dir whose database file is empty (copied without its write-ahead log) is said to be
/// so, as the server says it, not reported as a storage failure.
#[test]
fn verifying_an_empty_database_file_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("warden.db"), b"").unwrap();
    let out = verify_human(dir.path());
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("is empty, with no Warden database in it")
            && out.stderr.contains("warden.db-wal"),
        "{out:?}"
    );
}

/// A data dir whose audit key pair was replaced by another (consistent) one does not start, and
/// says the key was replaced, not that the note it keeps is damaged: moving the note aside would
/// only leave a server that signs nothing.
#[test]
fn a_replaced_audit_key_is_named_as_replaced() {
    let f = fresh();
    let (mut server, _, _) = signed_history(&f, 1, 4);
    assert!(server.terminate().success());
    let other = fresh();
    let (mut elsewhere, _, _) = signed_history(&other, 1, 1);
    assert!(elsewhere.terminate().success());
    for file in ["audit_signing.key", "audit_verifier.pub"] {
        std::fs::copy(other.data.join(file), f.data.join(file)).unwrap();
    }
    let refused = serve_refusing(Path::new(&f.cfg), &f.data);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("is signed by another key named")
            && refused
                .stderr
                .contains("both are to be restored from a backup")
            && !refused.stderr.contains("move it aside"),
        "{refused:?}"
    );
}

/// An event changed in a stopped data dir, checked with a kept copy of the data dir's own newest
/// checkpoint: the data dir's checkpoints flag the change themselves, so they are not said to be
/// signed again, and what changed is narrowed down as far as without the copy.
#[test]
fn a_kept_copy_of_the_data_dirs_checkpoint_does_not_widen_the_diagnosis() {
    let f = fresh();
    let (mut server, _, size) = signed_history(&f, 2, 12);
    assert!(server.terminate().success());
    let kept = f.dir.path().join("kept.note");
    std::fs::write(&kept, latest_note(&f.data)).unwrap();
    tamper(
        &f.data,
        &format!(
            "UPDATE audit SET body = replace(body, '\"seq\":', '\"seq\": ') WHERE seq = {}",
            size - 2
        ),
    );
    let narrowed = |v: &serde_json::Value| -> Vec<String> {
        problems(v)
            .into_iter()
            .filter(|p| p.starts_with("what changed lies in events"))
            .collect()
    };
    let (code, alone) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{alone}");
    let (code, with_kept) = verify(&f.data, &["--checkpoint", kept.to_str().unwrap()]);
    assert_eq!(code, 1, "{with_kept}");
    assert!(
        !problems(&with_kept)
            .iter()
            .any(|p| p.contains("signed again")),
        "{with_kept}"
    );
    assert_eq!(
        narrowed(&with_kept),
        narrowed(&alone),
        "{alone} {with_kept}"
    );
    assert!(
        problems(&with_kept)
            .iter()
            .any(|p| p.contains(&format!("event {} was modified", size - 2))),
        "{with_kept}"
    );
}

/// A secret pasted into the wrong field (a password as a user name, a token as a request id)
/// is refused with the value quoted to the caller, but neither the signed log nor the access
/// log keeps it.
#[test]
fn values_a_refusal_quotes_stay_out_of_the_logs() {
    let f = fresh();
    let (mut server, admin) = serve_as_admin(&f.data, &f.cfg);
    let secret = "Hunter2-Secret-Pass";
    let out = admin.run(&["audit", "search", "--user", secret], None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(secret), "{out:?}");
    let pasted = token(&admin);
    let said = warden_testkit::http_get_with(
        server.port(),
        &format!("/v1/requests/{pasted}"),
        &[("authorization", &format!("Bearer {pasted}"))],
    )
    .unwrap();
    assert_eq!(said.status, 400, "{}", said.body);
    let refused = admin.run(
        &[
            "--json",
            "audit",
            "search",
            "--code",
            "request.action_refused",
        ],
        None,
    );
    assert!(refused.success(), "{refused:?}");
    assert!(
        !refused.stdout.contains(secret) && !refused.stdout.contains(&pasted[4..]),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("characters, not kept"),
        "{}",
        refused.stdout
    );
    assert!(server.terminate().success());
    assert!(
        !server.stderr().contains(&pasted[4..]),
        "{}",
        server.stderr()
    );
}

/// An event changed in the stopped database is never sealed into a segment, where it would
/// leave the live log under the server's signature: an archive, asked for or by retention,
/// refuses, says why and how to find the change, and is audited as failed; the log stays
/// unsigned and unready.
#[test]
fn an_altered_log_is_not_archived() {
    let f = fresh();
    let (mut server, _, _) = signed_history(&f, 1, 8);
    assert!(server.terminate().success());
    tamper(
        &f.data,
        "UPDATE audit SET body = replace(body, 'viewer', 'vIewer') \
         WHERE seq = (SELECT MIN(seq) FROM audit WHERE body LIKE '%viewer%')",
    );
    let signed = note_size(&latest_note(&f.data));
    server.restart_unready();
    let admin = login(&server, "admin");
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let refused = admin.run(&["audit", "archive", "--before", &now], None);
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "nothing is archived: the stored events 1..{signed} no longer make the root this server signed at {signed}"
        )) && refused.stderr.contains("`warden audit verify --data-dir DIR`"),
        "{refused:?}"
    );
    let archived = audit_events(&admin, "audit.segment_archived");
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_eq!(archived[0]["outcome"]["result"], "failed", "{archived:?}");
    assert_eq!(
        archived[0]["outcome"]["code"], "log_altered",
        "{archived:?}"
    );
    assert_eq!(archived[0]["details"]["to"], signed, "{archived:?}");
    // The checkpointer, ticking every second, still finds the log altered.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let ready = warden_testkit::http_get(server.port(), "/readyz").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    let _ = server.terminate();

    // Retention at start refuses alike.
    std::fs::write(
        &f.cfg,
        "checkpoint_interval = \"1s\"\naudit_retention_days = 0\n",
    )
    .unwrap();
    server.restart_unready();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.stderr().contains("audit retention failed") {
        assert!(std::time::Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        server.stderr().contains("nothing is archived"),
        "{}",
        server.stderr()
    );
    let admin = login(&server, "admin");
    let failed: Vec<serde_json::Value> = audit_events(&admin, "audit.segment_archived")
        .into_iter()
        .filter(|e| e["outcome"]["result"] == "failed" && e["actor"]["user"].is_null())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let ready = warden_testkit::http_get(server.port(), "/readyz").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    let _ = server.terminate();
    assert!(
        std::fs::read_dir(f.data.join("archive")).map_or(true, |mut d| d.next().is_none()),
        "a segment was written"
    );
    assert_eq!(note_size(&latest_note(&f.data)), signed, "signed over it");
}

/// A data dir whose log has events and checkpoints, but not the copy of its newest checkpoint
/// kept beside the database, starts, says what that means and how to check the log, and puts
/// it on the record of the start; a new data dir has none to miss.
#[test]
fn a_missing_checkpoint_file_is_said_and_recorded_at_start() {
    let f = fresh();
    let (mut server, admin, _) = signed_history(&f, 1, 8);
    let started = audit_events(&admin, "server.started");
    assert_eq!(
        started[0]["details"]["checkpoint_file_missing"], false,
        "{started:?}"
    );
    assert!(server.terminate().success());
    std::fs::remove_file(f.data.join("audit_checkpoint.note")).unwrap();
    server.restart();
    assert!(
        server
            .stderr()
            .contains("audit_checkpoint.note is missing from a data dir whose log has events")
            && server
                .stderr()
                .contains("warden audit verify --data-dir DIR"),
        "{}",
        server.stderr()
    );
    let admin = login(&server, "admin");
    let started = audit_events(&admin, "server.started");
    assert_eq!(started.len(), 2, "{started:?}");
    assert_eq!(
        started[1]["details"]["checkpoint_file_missing"], true,
        "{started:?}"
    );
}

/// A log whose newest events were deleted with their checkpoints, the server's kept note put
/// back at the checkpoint left, is caught by the root stored for the block of events it once
/// completed: verification names it as removed from the end and fails, and the server signs
/// nothing more. A live event deleted is named as missing, not as a segment.
#[test]
fn a_log_cut_back_under_a_stored_block_root_is_named_as_truncated() {
    let f = fresh();
    let (mut server, admin) = serve_as_admin(&f.data, &f.cfg);
    assert_eq!(refused_requests(server.port(), &token(&admin), 500), 500);
    let cut = checkpoint_reaching(&admin, 500);
    assert!(cut < 1024, "{cut}");
    assert_eq!(refused_requests(server.port(), &token(&admin), 600), 600);
    checkpoint_reaching(&admin, 1024);
    assert!(server.terminate().success());

    let deleted = copy(&f.data);
    tamper(deleted.path(), "DELETE FROM audit WHERE seq = 500");
    let out = verify_human(deleted.path());
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("event 500 is missing") && !out.stderr.contains("segment"),
        "{out:?}"
    );

    let note: String = rusqlite::Connection::open(f.data.join("warden.db"))
        .unwrap()
        .query_row(
            "SELECT note FROM checkpoints WHERE size = ?1",
            [i64::try_from(cut).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    tamper(
        &f.data,
        &format!(
            "DELETE FROM audit WHERE seq > {cut}; DELETE FROM checkpoints WHERE size > {cut};"
        ),
    );
    std::fs::write(f.data.join("audit_checkpoint.note"), note).unwrap();
    let truncated = format!(
        "a block root is stored for events up to 1024, but the log ends at {cut}: events were removed from its end"
    );
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(problems(&v).contains(&truncated), "{v}");
    let out = verify_human(&f.data);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.contains("segment"), "{out:?}");

    server.restart_unready();
    let said = format!(
        "a block root is stored for events up to 1024, but the newest checkpoint covers {cut}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.stderr().contains(&said) {
        assert!(std::time::Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ready = warden_testkit::http_get(server.port(), "/readyz").unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    let _ = server.terminate();
    assert_eq!(note_size(&latest_note(&f.data)), cut, "signed over it");
}

/// One event deleted from the middle of a stopped log, checked with a checkpoint kept while the
/// server ran: the data dir's newest checkpoint, signed at the stop and now past the shortened
/// log's end, cannot be compared with the log, so it is not taken for one signed again over it,
/// and what changed is narrowed down as far as without the kept one.
#[test]
fn a_deleted_event_checked_with_a_kept_checkpoint_is_not_taken_for_a_signing_again() {
    let f = fresh();
    let (mut server, admin, early) = signed_history(&f, 1, 8);
    let alice = login(&server, "alice");
    create(&alice, "demo-ssh", "viewer", &[]);
    checkpoint_reaching(&admin, early + 1);
    let kept_note = admin.run(&["audit", "checkpoint"], None).stdout;
    let kept_size = note_size(&kept_note);
    assert!(kept_size > early, "{kept_size} <= {early}");
    // Signed later than the kept one, so that the data dir holds checkpoints past it.
    create(&alice, "demo-ssh", "viewer", &[]);
    checkpoint_reaching(&admin, kept_size + 1);
    assert!(server.terminate().success());
    let kept = f.dir.path().join("kept.note");
    std::fs::write(&kept, &kept_note).unwrap();
    let db = rusqlite::Connection::open(f.data.join("warden.db")).unwrap();
    let last: i64 = db
        .query_row("SELECT MAX(seq) FROM audit", [], |r| r.get(0))
        .unwrap();
    drop(db);
    assert_eq!(
        note_size(&latest_note(&f.data)),
        u64::try_from(last).unwrap(),
        "the stop signs the whole log"
    );

    let deleted = early + 1;
    tamper(&f.data, &format!("DELETE FROM audit WHERE seq = {deleted}"));
    let narrowed = |v: &serde_json::Value| -> Vec<String> {
        problems(v)
            .into_iter()
            .filter(|p| p.starts_with("what changed lies in events"))
            .collect()
    };
    let (code, alone) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{alone}");
    assert!(
        narrowed(&alone)
            .first()
            .is_some_and(|p| p.starts_with(&format!("what changed lies in events {deleted}..="))),
        "{alone}"
    );
    let (code, with_kept) = verify(&f.data, &["--checkpoint", kept.to_str().unwrap()]);
    assert_eq!(code, 1, "{with_kept}");
    let found = problems(&with_kept);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("event {deleted} is missing"))),
        "{with_kept}"
    );
    assert!(
        !found
            .iter()
            .any(|p| p.contains("signed again") || p.contains("fork")),
        "{with_kept}"
    );
    assert_eq!(
        narrowed(&with_kept),
        narrowed(&alone),
        "{alone} {with_kept}"
    );
}

/// An archived log checked with a key other than the server's: none of its checkpoints
/// verifies, and the note on events no checkpoint vouches for counts the live events checked,
/// not the archived ones too, and points a search at the live ones.
#[test]
fn an_archived_log_checked_with_another_key_counts_only_its_live_events() {
    let f = fresh();
    let (mut server, admin) = serve_as_admin(&f.data, &f.cfg);
    let key = verifier_key(&admin);
    let alice = login(&server, "alice");
    create(&alice, "demo-ssh", "viewer", &[]);
    checkpoint_reaching(&admin, 8);
    let archived = archive_now(&admin);
    assert!(archived > 0, "nothing archived");
    create(&alice, "demo-ssh", "viewer", &[]);
    checkpoint_reaching(&admin, archived + 1);
    assert!(server.terminate().success());

    let name = key.split('+').next().unwrap();
    let other = warden_audit::NoteSigner::from_seed(name, &[7; 32])
        .unwrap()
        .verifier()
        .to_string();
    let (code, v) = verify(&f.data, &["--verifier-key", &other]);
    assert_eq!(code, 1, "{v}");
    let live = v["events_checked"].as_u64().unwrap();
    assert_eq!(v["archived_before"]["seq"], archived + 1, "{v}");
    assert_eq!(v["events_after_newest_checkpoint"], live, "{v}");
    let out = Cli::new(Path::new(BIN), "http://127.0.0.1:9").run(
        &[
            "audit",
            "verify",
            "--data-dir",
            f.data.to_str().unwrap(),
            "--verifier-key",
            &other,
        ],
        None,
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!("the last {live} events"))
            && out
                .stderr
                .contains(&format!("warden audit search --after {archived}`")),
        "{out:?}"
    );
    assert!(
        !out.stderr
            .contains(&format!("the last {} events", archived + live)),
        "{out:?}"
    );
}

/// The leaf hashes kept of the archived events of the block an archive cut into, one deleted
/// or all: verification names each event whose hash is gone, and the server gives no proof or
/// export that would not verify, failing as the server's fault rather than the caller's.
#[test]
fn a_deleted_kept_hash_of_an_archived_event_is_named_and_proves_nothing() {
    let f = fresh();
    let (mut server, admin) = serve_as_admin(&f.data, &f.cfg);
    assert_eq!(refused_requests(server.port(), &token(&admin), 400), 400);
    checkpoint_reaching(&admin, 400);
    let to = archive_now(&admin);
    assert!((300..1024).contains(&to), "archived up to {to}");
    assert_eq!(refused_requests(server.port(), &token(&admin), 20), 20);
    let size = checkpoint_reaching(&admin, to + 20);
    assert!(server.terminate().success());
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 0, "{v}");

    tamper(&f.data, "DELETE FROM archived_leaves WHERE seq = 300");
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{v}");
    let missing: Vec<String> = problems(&v)
        .into_iter()
        .filter(|p| p.contains("keeps no leaf hash"))
        .collect();
    assert_eq!(missing.len(), 1, "{v}");
    assert!(
        missing[0].starts_with("archived event 300: the log keeps no leaf hash of it")
            && missing[0].contains("block of events 1..=1024"),
        "{v}"
    );

    server.restart();
    let admin = login(&server, "admin");
    let live = (to + 1).to_string();
    let proof = admin.run(
        &["audit", "prove", &live, "--size", &size.to_string()],
        None,
    );
    assert_eq!(proof.code, 1, "{proof:?}");
    let bundle = f.dir.path().join("bundle");
    let exported = admin.run(
        &["audit", "export", bundle.to_str().unwrap(), "--json"],
        None,
    );
    assert_eq!(exported.code, 1, "{exported:?}");
    assert!(!bundle.join("events.jsonl").exists(), "{exported:?}");
    assert!(server.terminate().success());

    tamper(&f.data, "DELETE FROM archived_leaves");
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v).iter().any(|p| p.starts_with(&format!(
            "archived events 1..={to}: the log keeps no leaf hash of them"
        ))),
        "{v}"
    );
}

/// A stopped copy of a data dir is verified without writing to it: no `-shm` or `-wal` file is
/// made beside its database (a user who may only read the copy could make none), whatever
/// its path holds; a database with a `-wal` beside it is still read with it.
#[test]
fn a_stopped_copy_is_verified_without_writing_beside_it() {
    let (stopped, _server) = history();
    assert!(!stopped.data.join("warden.db-wal").exists());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup ?#%20 copy");
    std::fs::create_dir(&copy).unwrap();
    // The server stopped cleanly: all of it is in the database file.
    std::fs::copy(stopped.data.join("warden.db"), copy.join("warden.db")).unwrap();
    std::fs::copy(
        stopped.data.join("audit_verifier.pub"),
        copy.join("audit_verifier.pub"),
    )
    .unwrap();
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files(&copy);
    assert_eq!(before, ["audit_verifier.pub", "warden.db"]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o555)).unwrap();
    let (code, v) = verify(&copy, &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["events_checked"], stopped.size, "{v}");
    assert_eq!(files(&copy), before);

    // A -wal beside it (a server running, or killed) is read with it, as before.
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = rusqlite::Connection::open(copy.join("warden.db")).unwrap();
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    db.execute_batch(
        "PRAGMA wal_autocheckpoint = 0; CREATE TABLE scratch (x); DROP TABLE scratch;",
    )
    .unwrap();
    assert!(copy.join("warden.db-wal").exists());
    let (code, v) = verify(&copy, &[]);
    assert_eq!(code, 0, "{v}");
    drop(db);
}

/// A copy of the whole data dir (database, keys, kept checkpoint, archive segments) to tamper
/// with.
fn copy_whole(data: &Path) -> tempfile::TempDir {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(data, dir.path());
    dir
}

/// Every "what changed lies in events A..=B" among `problems` is a range, A no greater than B.
fn ranges_hold(problems: &[String]) -> bool {
    problems.iter().all(|p| {
        let Some(range) = p.strip_prefix("what changed lies in events ") else {
            return true;
        };
        let (a, b) = range.split_once("..=").unwrap();
        let b: String = b.chars().take_while(char::is_ascii_digit).collect();
        a.parse::<u64>().unwrap() <= b.parse::<u64>().unwrap()
    })
}

/// The checkpoint an archive cut the log at deleted, or the first live event after it: each is
/// named for what it is, the archived events are not said to be deleted, and no range of
/// events said to hold a change runs backwards or names a checkpoint that is not there.
#[test]
fn a_deleted_archive_boundary_is_named_for_what_it_is() {
    let f = fresh();
    let (mut server, admin) = serve_as_admin(&f.data, &f.cfg);
    assert_eq!(refused_requests(server.port(), &token(&admin), 100), 100);
    checkpoint_reaching(&admin, 100);
    // Archived up to a time before the next events: the first live event is one of them, not
    // the archive's own.
    let before = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    assert_eq!(refused_requests(server.port(), &token(&admin), 20), 20);
    let archived = admin.json(&["audit", "archive", "--before", &before]);
    let to = archived["to"].as_u64().unwrap();
    assert!((100..1024).contains(&to), "archived up to {to}");
    checkpoint_reaching(&admin, to + 21);
    assert!(server.terminate().success());
    let (code, v) = verify(&f.data, &[]);
    assert_eq!(code, 0, "{v}");

    // The checkpoint at the cut: the segment still ends there, so the live log resumes from it.
    let cut = copy_whole(&f.data);
    tamper(
        cut.path(),
        &format!("DELETE FROM checkpoints WHERE size = {to}"),
    );
    let (code, v) = verify(cut.path(), &[]);
    assert_eq!(code, 1, "{v}");
    let found = problems(&v);
    assert_eq!(found.len(), 1, "{v}");
    assert!(
        found[0].starts_with(&format!(
            "the checkpoint at size {to}, where the archive of the events before {} ended and the live log resumes, is missing from the database (deleted)",
            to + 1
        )),
        "{v}"
    );
    assert_eq!(v["archived_before"]["seq"], to + 1, "{v}");

    // Its segment gone too: nothing to resume from, which is said, and nothing else made up.
    let segment = std::fs::read_dir(cut.path().join("archive"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&segment).unwrap();
    let (code, v) = verify(cut.path(), &[]);
    assert_eq!(code, 1, "{v}");
    let found = problems(&v);
    assert!(
        found.iter().any(|p| p.starts_with(&format!(
            "the checkpoint at size {to}, where the archive of the events before {} ended and the live log resumes, cannot be resumed from: it is missing from the database (deleted)",
            to + 1
        ))),
        "{v}"
    );
    assert!(
        found.iter().any(|p| p.contains("missing from")
            && p.contains(segment.file_name().unwrap().to_str().unwrap())),
        "{v}"
    );
    assert!(
        !found.iter().any(|p| p.contains("deleted, not archived")
            || p.starts_with("event 1 is missing")
            || p.starts_with("what changed lies")
            || p.contains("do not match the signed checkpoint")),
        "{v}"
    );

    // The first live event.
    let first = copy_whole(&f.data);
    tamper(
        first.path(),
        &format!("DELETE FROM audit WHERE seq = {}", to + 1),
    );
    let (code, v) = verify(first.path(), &[]);
    assert_eq!(code, 1, "{v}");
    let found = problems(&v);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("event {} is missing (1 event(s)", to + 1))),
        "{v}"
    );
    assert!(ranges_hold(&found), "{v}");
    assert!(
        !found.iter().any(|p| p.contains("deleted, not archived")
            || p.contains(&format!("the checkpoint at {}", to + 1))
            || p.contains("without an audited archive")),
        "{v}"
    );
    assert!(
        found.iter().any(
            |p| p.starts_with(&format!("what changed lies in events {}..=", to + 1))
                && p.ends_with(&format!("the log still matches the checkpoint at {to}"))
        ),
        "{v}"
    );
}

/// `verify --segment` without a verifier key is a usage error, as `--bundle` is.
#[test]
fn a_segment_checked_without_a_verifier_key_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("segment-000000000001-000000000005.json");
    std::fs::write(&file, "{}").unwrap();
    let out = Cli::new(Path::new(BIN), "http://127.0.0.1:9").run(
        &["audit", "verify", "--segment", file.to_str().unwrap()],
        None,
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("pass --verifier-key")
            && out.stderr.contains("warden audit verifier-key"),
        "{out:?}"
    );
}

/// A kept checkpoint file is read as the note it holds: a blank line after it, or no newline
/// at its end, as files are often saved, is no tampering; a file holding no checkpoint note is
/// a usage error saying what one looks like; a note whose signed text was changed is still a
/// problem of the log's.
#[test]
fn a_kept_checkpoint_file_is_read_whatever_its_last_line_ends_with() {
    let (stopped, _server) = history();
    let dir = tempfile::tempdir().unwrap();
    let kept = dir.path().join("kept.note");
    let note = stopped.checkpoint_note.clone();
    assert!(note.ends_with('\n'));
    for text in [
        format!("{note}\n"),
        format!("{note}\n\n  \n"),
        note.trim_end().to_owned(),
    ] {
        std::fs::write(&kept, &text).unwrap();
        let (code, v) = verify(&stopped.data, &["--checkpoint", kept.to_str().unwrap()]);
        assert_eq!(code, 0, "{text:?}: {v}");
        assert_eq!(v["external_checkpoints"], 2, "{v}");
    }

    let usage = |text: &str| {
        std::fs::write(&kept, text).unwrap();
        let out = Cli::new(Path::new(BIN), "http://127.0.0.1:9").run(
            &[
                "audit",
                "verify",
                "--data-dir",
                stopped.data.to_str().unwrap(),
                "--checkpoint",
                kept.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(out.code, 2, "{text:?}: {out:?}");
        assert!(
            out.stderr
                .contains("is not a checkpoint note, it is malformed")
                && out.stderr.contains("a blank line, and signature lines")
                && !out.stdout.contains("PROBLEM"),
            "{out:?}"
        );
    };
    usage("warden.local/audit\n12\n");
    // Its signature lines cut off.
    usage(note.split("\n\n").next().unwrap());

    // The size changed under the signature: the log's problem, not the user's.
    let lines: Vec<&str> = note.split('\n').collect();
    let forged = [&[lines[0], "1"][..], &lines[2..]].concat().join("\n");
    std::fs::write(&kept, forged).unwrap();
    let (code, v) = verify(&stopped.data, &["--checkpoint", kept.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    assert!(
        problems(&v).iter().any(|p| p.starts_with(&format!(
            "external checkpoint {}: not validly signed",
            kept.display()
        ))),
        "{v}"
    );
}
