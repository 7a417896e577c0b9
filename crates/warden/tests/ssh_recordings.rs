//! Recordings of SSH proxy sessions and the audit of who watched and replayed them, end to
//! end with the real OpenSSH client and a real sshd on loopback: watch and replay events found
//! by the session's target and grant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use warden_testkit::{Cli, Sshd, Tmux, ensure_local_user, ssh_base_args, ssh_keypair};

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
