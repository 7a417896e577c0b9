//! Warden's SSH proxy end to end, with the real OpenSSH client and a real sshd on loopback:
//! key login to Warden, authorization by an active grant, the upstream certificate and pinned
//! host key, recordings checked with `asciinema cat`, command rules, file transfers, live
//! control, and failing closed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use warden_testkit::{Cli, Sshd, Tmux, ensure_local_user, ssh_base_args, ssh_keypair, ssh_run};

/// A Warden server whose `web` target is a private sshd, and alice with a registered key.
struct Setup {
    env: Env,
    sshd: Sshd,
    alice: Cli,
    admin: Cli,
    key: PathBuf,
    port: u16,
    _keys: tempfile::TempDir,
}

fn role_settings(extra: &str) -> String {
    format!("principals = [\"{LOCAL_USER}\"]\n{extra}")
}

fn rules(recording: &str) -> String {
    format!(
        "@id(\"view-auto\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n@recording(\"{recording}\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n"
    )
}

fn targets(connection: &str, role: &str) -> String {
    format!(
        "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.connection]\n{connection}\n[targets.web.roles.view]\n{role}\n"
    )
}

impl Setup {
    /// `role` is the view role's extra settings; `pin` puts the sshd's host key in the policy.
    fn start(recording: &str, role: &str, pin: bool) -> Setup {
        let env = Env::start_with(
            &[
                (
                    "targets.toml",
                    &targets("host = \"127.0.0.1\"\nport = 1", &role_settings(role)),
                ),
                ("access.cedar", &rules(recording)),
            ],
            &[],
        );
        let alice = env.login("alice");
        let admin = env.login("admin");
        ensure_local_user(LOCAL_USER);
        let ca = alice.run(&["ssh-ca"], None);
        assert!(ca.success(), "{ca:?}");
        let sshd = Sshd::start(ca.stdout.trim());
        sshd.allow_principal(LOCAL_USER, LOCAL_USER);
        let mut connection = format!("host = \"127.0.0.1\"\nport = {}", sshd.port());
        if pin {
            connection.push_str(&format!("\nhost_key = \"{}\"", sshd.host_public_key()));
        }
        write_policy(
            &env.policy_dir(),
            &[("targets.toml", &targets(&connection, &role_settings(role)))],
        );
        ok(&admin, &["policy", "reload"]);
        let keys = tempfile::tempdir().unwrap();
        let (key, _) = ssh_keypair(keys.path(), "alice_key");
        let added = ok(&alice, &["keys", "add", &format!("{}.pub", key.display())]);
        assert!(
            added["fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("SHA256:")
        );
        let port = env.server.ssh_port();
        Setup {
            env,
            sshd,
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

    fn grant(&self, ttl: &str) -> Value {
        let v = create(&self.alice, "web", "view", &["--ttl", ttl]);
        assert_eq!(v["state"], "active", "{v}");
        v
    }

    /// Audit events with `action`, newest last.
    fn events(&self, action: &str) -> Vec<Value> {
        let v = ok(
            &self.admin,
            &["audit", "search", "--code", action, "--limit", "1000"],
        );
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].clone())
            .collect()
    }

    /// Waits (bounded) for an audit event with `action`, and returns the newest.
    fn wait_event(&self, action: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.events(action).pop() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {action} event within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn recording(&self, session: &str) -> PathBuf {
        self.env
            .server
            .data_dir()
            .join("recordings")
            .join(format!("{session}.cast"))
    }

    fn interactive(&self) -> Tmux {
        let args: Vec<String> = ssh_base_args(self.port, &self.key)
            .into_iter()
            .map(|a| format!("'{a}'"))
            .collect();
        Tmux::start(&format!("ssh -tt {} alice:web@127.0.0.1", args.join(" ")))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `asciinema cat FILE` (it needs a terminal, so under `script`).
fn asciinema_cat(path: &Path) -> String {
    let out = std::process::Command::new("timeout")
        .args(["20", "script", "-qec"])
        .arg(format!("asciinema cat {}", path.display()))
        .arg("/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "asciinema cat failed: {out:?}");
    text(&out.stdout)
}

fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn exec_needs_a_grant_and_is_relayed_recorded_and_audited() {
    let s = Setup::start("full", "", true);

    // No grant: refused, and told what to request.
    let out = s.ssh("echo hi");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("no active grant for web"), "{err}");
    assert!(
        err.contains("warden request create web --role view"),
        "{err}"
    );
    let refused = s.wait_event("session.refused", Duration::from_secs(5));
    assert_eq!(refused["outcome"]["code"], "no_active_grant");

    // An unregistered key does not get in at all.
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = ssh_keypair(other.path(), "stranger");
    let out = ssh_run(s.port, "alice:web", &stranger, "echo hi");
    assert_eq!(out.status.code(), Some(255), "{out:?}");

    let grant = s.grant("30m");
    let out = s.ssh("echo relayed-$(whoami); echo to-stderr >&2; exit 3");
    assert_eq!(out.status.code(), Some(3), "{out:?}\n{}", s.sshd.log());
    assert_eq!(text(&out.stdout).trim(), format!("relayed-{LOCAL_USER}"));
    assert_eq!(text(&out.stderr).trim(), "to-stderr");
    // The target saw Warden's certificate for this grant, not anything of alice's.
    assert!(
        s.sshd.log().contains(&format!("ID {}", id(&grant))),
        "{}",
        s.sshd.log()
    );

    let ended = s.wait_event("session.ended", Duration::from_secs(5));
    let session = ended["session_id"].as_str().unwrap().to_owned();
    assert_eq!(ended["request_id"], grant["id"]);
    assert_eq!(ended["details"]["exit_status"], 3);
    let exec = s.events("session.exec").pop().unwrap();
    assert_eq!(exec["session_id"], session.as_str());
    assert!(
        exec["details"]["command"]
            .as_str()
            .unwrap()
            .starts_with("echo relayed")
    );
    // The recording is on disk, its digest is in the end event, and asciinema reads it.
    let path = s.recording(&session);
    assert_eq!(ended["details"]["recording"]["sha256"], sha256_hex(&path));
    let shown = asciinema_cat(&path);
    assert!(shown.contains(&format!("relayed-{LOCAL_USER}")), "{shown}");
    assert!(shown.contains("to-stderr"), "{shown}");
}
