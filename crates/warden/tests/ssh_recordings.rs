//! Recordings of SSH proxy sessions and the audit of who watched and replayed them, end to
//! end with the real OpenSSH client and a real sshd on loopback: a recording whose file is gone
//! though the signed log shows it was made, and watch and replay events found by the session's
//! target and grant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use warden_testkit::{Cli, Sshd, Tmux, ensure_local_user, ssh_base_args, ssh_keypair, ssh_run};

/// A Warden server whose recorded `web` target is a private sshd, and alice with a registered
/// key.
struct Setup {
    env: Env,
    _sshd: Sshd,
    alice: Cli,
    admin: Cli,
    key: PathBuf,
    port: u16,
    _keys: tempfile::TempDir,
}

const RULES_RECORDED: &str = "@id(\"view-auto\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n@recording(\"full\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n";

fn targets(connection: &str) -> String {
    format!(
        "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.connection]\n{connection}\n[targets.web.roles.view]\nprincipals = [\"{LOCAL_USER}\"]\n"
    )
}

impl Setup {
    fn start() -> Setup {
        let keys = tempfile::tempdir().unwrap();
        let env = Env::start_with(
            &[
                ("targets.toml", &targets("host = \"127.0.0.1\"\nport = 1")),
                ("access.cedar", RULES_RECORDED),
            ],
            &[],
        );
        let alice = env.login("alice");
        let admin = env.login("admin");
        ensure_local_user(LOCAL_USER);
        let ca = alice.run(&["ssh-ca"], None);
        assert!(ca.success(), "{ca:?}");
        let sshd = Sshd::start(ca.stdout.trim(), "web");
        let connection = format!(
            "host = \"127.0.0.1\"\nport = {}\nhost_key = \"{}\"",
            sshd.port(),
            sshd.host_public_key()
        );
        write_policy(
            &env.policy_dir(),
            &[("targets.toml", &targets(&connection))],
        );
        ok(&admin, &["policy", "reload"]);
        let (key, _) = ssh_keypair(keys.path(), "alice_key");
        ok(&alice, &["keys", "add", &format!("{}.pub", key.display())]);
        let port = env.server.ssh_port();
        Setup {
            env,
            _sshd: sshd,
            alice,
            admin,
            key,
            port,
            _keys: keys,
        }
    }

    fn ssh(&self, command: &str) -> Output {
        ssh_run(self.port, "alice:web", &self.key, command)
    }

    /// An active grant of web/view for alice; its id.
    fn grant(&self) -> String {
        let v = create(&self.alice, "web", "view", &["--ttl", "30m"]);
        assert_eq!(v["state"], "active", "{v}");
        id(&v)
    }

    /// Audit events with `code`, newest last.
    fn events(&self, code: &str) -> Vec<Value> {
        audit_events(&self.admin, code)
    }

    /// Waits (bounded) for `count` audit events with `code`, and returns them, newest last.
    fn wait_events(&self, code: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events(code);
            if events.len() >= count {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} {code} events",
                events.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Events with `code` a search also filtered by `filter` (`--target web`) finds.
    fn search(&self, code: &str, filter: &[&str]) -> Vec<Value> {
        let mut args = vec!["audit", "search", "--code", code];
        args.extend_from_slice(filter);
        ok(&self.admin, &args)["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event"].clone())
            .collect()
    }

    fn recording(&self, session: &str) -> PathBuf {
        self.env
            .server
            .data_dir()
            .join("recordings")
            .join(format!("{session}.cast"))
    }

    /// `ssh -tt` to web running a shell on a terminal.
    fn interactive(&self) -> Tmux {
        let args: Vec<String> = ssh_base_args(self.port, &self.key)
            .into_iter()
            .map(|a| format!("'{a}'"))
            .collect();
        Tmux::start(&format!("ssh -tt {} alice:web@127.0.0.1", args.join(" ")))
    }

    /// The id of the one live session, once it shows.
    fn live_session(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = ok(&self.admin, &["sessions", "list"]);
            if let Some(id) = list["sessions"][0]["id"].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no live session showed up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The error `--json` printed to standard error.
fn error(stderr: &str) -> Value {
    let v: Value = serde_json::from_str(stderr.trim()).unwrap();
    v["error"].clone()
}

/// A recording whose `session.ended` event holds its digest but whose file is gone was made
/// and then lost or removed: it is refused as a missing recording (exit 1, as an altered one
/// is), telling the administrator to restore it, and the read is audited as an altered one's
/// is, not as a replay of a session never recorded.
#[test]
fn a_deleted_recording_is_told_as_missing_not_as_never_recorded() {
    let s = Setup::start();
    let grant = s.grant();
    let out = s.ssh("echo recorded-once");
    assert!(out.status.success(), "{out:?}");
    let ended = s.wait_events("session.ended", 1).pop().unwrap();
    let session = ended["session_id"].as_str().unwrap().to_owned();
    let sha256 = ended["details"]["recording"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = s.recording(&session);
    let original = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    let out = fails(&s.admin, &["replay", &session, "--speed", "100"], 1);
    assert!(
        out.stderr.contains("missing")
            && out.stderr.contains("shows it was recorded")
            && out.stderr.contains(&sha256)
            && out.stderr.contains("from a backup"),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains("no such session was recorded"),
        "{out:?}"
    );
    let out = fails(&s.admin, &["--json", "replay", &session], 1);
    assert_eq!(error(&out.stderr)["code"], "recording_missing", "{out:?}");

    // Audited as a read of the recording, its check `missing`, with the digest to restore
    // against, and found by the session's target and grant; not as a refused action.
    let reads = s.events("session.recording_read");
    assert_eq!(reads.len(), 2, "{reads:?}");
    let read = reads.last().unwrap();
    assert_eq!(read["session_id"], session.as_str(), "{read}");
    assert_eq!(read["details"]["recording"]["check"], "missing", "{read}");
    assert_eq!(
        read["details"]["recording"]["recorded"]["sha256"],
        sha256.as_str(),
        "{read}"
    );
    assert_eq!(read["outcome"]["code"], "recording_missing", "{read}");
    assert_eq!(read["target"], "web", "{read}");
    assert_eq!(read["request_id"], grant.as_str(), "{read}");
    let refused: Vec<Value> = s
        .events("request.action_refused")
        .into_iter()
        .filter(|e| e["details"]["action"] == "session.replay")
        .collect();
    assert!(refused.is_empty(), "{refused:?}");

    // Restored from a backup, it plays and checks as intact.
    std::fs::write(&path, &original).unwrap();
    let out = s.admin.run(&["replay", &session, "--speed", "100"], None);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("recorded-once"), "{out:?}");
    let read = s.events("session.recording_read").pop().unwrap();
    assert_eq!(read["details"]["recording"]["check"], "intact", "{read}");

    // A session no one recorded is still told so (exit 4).
    let out = fails(
        &s.admin,
        &["replay", "00000000-0000-0000-0000-000000000000"],
        4,
    );
    assert!(
        out.stderr.contains("no such session was recorded"),
        "{out:?}"
    );
}

/// A running session has no end, and so no digest, yet: its recording file missing is not
/// called tampering; once it ends with the digest of what it recorded, it is.
#[test]
fn a_running_session_without_its_file_is_not_called_altered() {
    let s = Setup::start();
    let grant = s.grant();
    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    let session = s.live_session();
    std::fs::remove_file(s.recording(&session)).unwrap();

    let out = fails(&s.admin, &["--json", "replay", &session], 4);
    let said = error(&out.stderr);
    assert_eq!(said["code"], "no_recording", "{out:?}");
    assert!(
        said["message"]
            .as_str()
            .unwrap()
            .contains("the session has not ended"),
        "{out:?}"
    );
    assert!(s.events("session.recording_read").is_empty());
    // The refusal names the session's target and grant.
    let refused = s.events("request.action_refused").pop().unwrap();
    assert_eq!(refused["details"]["action"], "session.replay", "{refused}");
    assert_eq!(refused["session_id"], session.as_str(), "{refused}");
    assert_eq!(refused["target"], "web", "{refused}");
    assert_eq!(refused["request_id"], grant.as_str(), "{refused}");

    term.send_line("exit");
    let ended = s.wait_events("session.ended", 1).pop().unwrap();
    assert!(
        ended["details"]["recording"]["sha256"].is_string(),
        "{ended}"
    );
    let out = fails(&s.admin, &["--json", "replay", &session], 1);
    assert_eq!(error(&out.stderr)["code"], "recording_missing", "{out:?}");
}

/// Who watched or replayed a session is found by the session's target and grant, as who
/// killed one is.
#[test]
fn watches_and_replays_are_found_by_target_and_grant() {
    let s = Setup::start();
    let grant = s.grant();
    let term = s.interactive();
    term.wait_for("$ ", 1, Duration::from_secs(15));
    let session = s.live_session();

    let watch_out = s.env.dir.path().join("watch.out");
    let mut watcher = std::process::Command::new(BIN)
        .args(["sessions", "watch", &session])
        .env("WARDEN_SERVER", s.admin.server_url())
        .env("WARDEN_HOME", s.admin.home())
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .spawn()
        .unwrap();
    let watched = s.wait_events("session.watched", 1).pop().unwrap();
    assert_eq!(watched["session_id"], session.as_str(), "{watched}");
    // A replay while it runs, and one once it ended.
    let out = s.admin.run(&["replay", &session, "--speed", "100"], None);
    assert!(out.success(), "{out:?}");
    term.send_line("exit");
    s.wait_events("session.ended", 1);
    assert!(watcher.wait().unwrap().success());
    let out = s.admin.run(&["replay", &session, "--speed", "100"], None);
    assert!(out.success(), "{out:?}");

    for (code, count) in [("session.watched", 1), ("session.recording_read", 2)] {
        for filter in [["--target", "web"], ["--request", grant.as_str()]] {
            let found = s.search(code, &filter);
            assert_eq!(found.len(), count, "{code} {filter:?}: {found:?}");
            for e in &found {
                assert_eq!(
                    (e["target"].as_str(), e["request_id"].as_str()),
                    (Some("web"), Some(grant.as_str())),
                    "{e}"
                );
            }
        }
        assert!(s.search(code, &["--target", "elsewhere"]).is_empty());
    }
    let checks: Vec<Value> = s
        .events("session.recording_read")
        .iter()
        .map(|e| e["details"]["recording"]["check"].clone())
        .collect();
    assert_eq!(checks, ["live", "intact"]);
}
