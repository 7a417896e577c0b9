//! An active grant through Warden's SSH proxy keeps to the terms it was issued with: a policy
//! reload may narrow what it logs in as, runs and where it is used from, and never widens it;
//! and a login no role of the target names is kept out of the audit log and the refusal but
//! for its length. With the real OpenSSH client and a real sshd on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use serde_json::Value;
use warden_testkit::{Cli, Sshd, ensure_local_user, ssh_keypair, ssh_person_args};

/// A second Unix account at the target, beside [`LOCAL_USER`].
const OTHER_USER: &str = "warden-it2";

/// A Warden server whose `web` target is a private sshd, and alice with a registered key.
struct Setup {
    env: Env,
    sshd: Sshd,
    alice: Cli,
    admin: Cli,
    key: PathBuf,
    port: u16,
    recording: String,
    _keys: tempfile::TempDir,
}

fn rules(recording: &str) -> String {
    format!(
        "@id(\"view-auto\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n@recording(\"{recording}\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n"
    )
}

/// The policy's targets: web, reached at `connection`, with role `view` set as `view` and any
/// `more` roles' tables after it.
fn targets(connection: &str, view: &str, more: &str) -> String {
    format!(
        "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.connection]\n{connection}\n[targets.web.roles.view]\n{view}\n{more}"
    )
}

impl Setup {
    /// A server whose `view` role of web has the settings `view`, its sessions recorded as
    /// `recording`.
    fn start(recording: &str, view: &str) -> Setup {
        let keys = tempfile::tempdir().unwrap();
        let env = Env::start_with(
            &[
                (
                    "targets.toml",
                    &targets("host = \"127.0.0.1\"\nport = 1", view, ""),
                ),
                ("access.cedar", &rules(recording)),
            ],
            &[],
        );
        let alice = env.login("alice");
        let admin = env.login("admin");
        ensure_local_user(LOCAL_USER);
        ensure_local_user(OTHER_USER);
        let ca = alice.run(&["ssh-ca"], None);
        assert!(ca.success(), "{ca:?}");
        let sshd = Sshd::start(ca.stdout.trim(), "web");
        let (key, _) = ssh_keypair(keys.path(), "alice_key");
        ok(&alice, &["keys", "add", &format!("{}.pub", key.display())]);
        let port = env.server.ssh_port();
        let s = Setup {
            env,
            sshd,
            alice,
            admin,
            key,
            port,
            recording: recording.to_owned(),
            _keys: keys,
        };
        s.reload(view, "");
        s
    }

    /// Reloads the policy with the view role set as `view`, and the `more` roles' tables.
    fn reload(&self, view: &str, more: &str) {
        let connection = format!(
            "host = \"127.0.0.1\"\nport = {}\nhost_key = \"{}\"",
            self.sshd.port(),
            self.sshd.host_public_key()
        );
        write_policy(
            &self.env.policy_dir(),
            &[
                ("targets.toml", &targets(&connection, view, more)),
                ("access.cedar", &rules(&self.recording)),
            ],
        );
        ok(&self.admin, &["policy", "reload"]);
    }

    fn grant(&self) -> Value {
        let v = create(&self.alice, "web", "view", &["--ttl", "30m"]);
        assert_eq!(v["state"], "active", "{v}");
        v
    }

    /// `ssh USER@127.0.0.1 COMMAND` to the proxy as a person runs it (the client's default log
    /// level, no batch mode, so that what the server says at sign-in shows), from the loopback
    /// address `from`, signing in with the key and certificate `grant` saved, or with alice's
    /// registered key when `grant` is `None`; killed after 30 s.
    fn ssh(&self, grant: Option<&Value>, from: &str, user: &str, command: &str) -> Output {
        let key = grant.map_or(self.key.clone(), |g| {
            PathBuf::from(g["private_key_file"].as_str().unwrap())
        });
        let args = ssh_person_args(self.port, &key);
        let mut ssh = std::process::Command::new("timeout");
        ssh.args(["30", "ssh"]).args(args);
        if let Some(g) = grant {
            ssh.arg("-o").arg(format!(
                "CertificateFile={}",
                g["certificate_file"].as_str().unwrap()
            ));
        }
        ssh.args(["-o", &format!("BindAddress={from}")])
            .arg(format!("{user}@127.0.0.1"))
            .arg(command)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    /// Audit events with `code`, oldest first.
    fn events(&self, code: &str) -> Vec<Value> {
        audit_events(&self.admin, code)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What `out` printed, trimmed; that it was refused when `None` is expected.
fn printed(out: &Output) -> Option<String> {
    out.status
        .success()
        .then(|| text(&out.stdout).trim().to_owned())
}

/// Asserts that `out` was refused at sign-in, its error holding `said`.
fn refused(out: &Output, said: &str) {
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(text(&out.stdout).trim().is_empty(), "{out:?}");
    assert!(text(&out.stderr).contains(said), "{said:?} in {out:?}");
}

/// What Warden told the client (the lines `warden: ` begins): the client itself echoes the
/// user name it signed in with.
fn said(out: &Output) -> String {
    text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("warden: "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn principals(accounts: &[&str]) -> String {
    let quoted: Vec<String> = accounts.iter().map(|a| format!("{a:?}")).collect();
    format!("principals = [{}]", quoted.join(", "))
}

/// A reload that adds an account to a role lets no grant already active log in as it, by its
/// certificate or a registered key; a grant made since does. A reload that takes an account
/// out stops a grant issued for it from logging in as it, saying the policy no longer grants
/// it, and one left with no account opens nothing. What is audited says what ran.
#[test]
fn a_reload_narrows_an_active_grants_logins_and_never_widens_them() {
    let (a, b) = (LOCAL_USER, OTHER_USER);
    let s = Setup::start("full", &principals(&[a]));
    let first = s.grant();
    assert_eq!(first["credential"]["logins"], serde_json::json!([a]));

    s.reload(&principals(&[a, b]), "");
    // Neither its certificate nor a registered key logs in as the account added.
    let out = s.ssh(
        Some(&first),
        "127.0.0.1",
        &format!("alice:web:{b}"),
        "id -un",
    );
    refused(&out, &format!("logs in as {a}, not as \"{b}\""));
    let out = s.ssh(None, "127.0.0.1", &format!("alice:web:{b}"), "id -un");
    refused(
        &out,
        &format!("none of your active grants for web logs in as \"{b}\""),
    );
    // As the account it was issued for, it logs in as before, by default too.
    let out = s.ssh(Some(&first), "127.0.0.1", "alice:web", "id -un");
    assert_eq!(printed(&out).as_deref(), Some(a), "{out:?}");
    let out = s.ssh(None, "127.0.0.1", &format!("alice:web:{a}"), "id -un");
    assert_eq!(printed(&out).as_deref(), Some(a), "{out:?}");
    // A grant made under the new policy is issued for both, and logs in as the new one.
    let second = s.grant();
    assert_eq!(second["credential"]["logins"], serde_json::json!([a, b]));
    let out = s.ssh(
        Some(&second),
        "127.0.0.1",
        &format!("alice:web:{b}"),
        "id -un",
    );
    assert_eq!(printed(&out).as_deref(), Some(b), "{out:?}");
    // The first grant's certificate still does not, with another grant beside it that does.
    let out = s.ssh(
        Some(&first),
        "127.0.0.1",
        &format!("alice:web:{b}"),
        "id -un",
    );
    refused(&out, "not as");

    // The account the first grant was issued for taken out of the role: it opens nothing,
    // and the second logs in only as the account left, by default too.
    s.reload(&principals(&[b]), "");
    let out = s.ssh(Some(&first), "127.0.0.1", "alice:web", "id -un");
    refused(&out, "the policy no longer grants any of that");
    let out = s.ssh(
        Some(&second),
        "127.0.0.1",
        &format!("alice:web:{a}"),
        "id -un",
    );
    refused(&out, "but the policy no longer grants that");
    let out = s.ssh(None, "127.0.0.1", &format!("alice:web:{a}"), "id -un");
    refused(&out, "but the policy no longer grants that");
    let out = s.ssh(Some(&second), "127.0.0.1", "alice:web", "id -un");
    assert_eq!(printed(&out).as_deref(), Some(b), "{out:?}");

    // The log says what ran: the first grant's sessions logged in as the account it was
    // issued for, and only the second's as the one added.
    let started = s.events("session.started");
    let logins = |grant: &Value| -> Vec<String> {
        started
            .iter()
            .filter(|e| e["request_id"] == grant["id"])
            .map(|e| e["details"]["login"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(logins(&first), [a, a], "{started:?}");
    assert_eq!(logins(&second), [b, b], "{started:?}");
    let failed: Vec<Value> = s
        .events("auth.login_failed")
        .into_iter()
        .filter(|e| e["details"]["via"] == "ssh")
        .collect();
    assert_eq!(failed.len(), 6, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|e| e["outcome"]["code"] == "login_not_granted"),
        "{failed:?}"
    );
}

/// A reload that takes a role's `force_command` and `source_address` away, or moves its
/// addresses, leaves an active grant with the command it was issued with and the addresses
/// both allow.
#[test]
fn a_reload_keeps_an_active_grants_forced_command_and_addresses() {
    let issued_with = format!(
        "{}\nsource_address = [\"127.0.0.2/32\", \"127.0.4.0/24\"]\nforce_command = \"echo forced\"",
        principals(&[LOCAL_USER])
    );
    let s = Setup::start("metadata", &issued_with);
    let grant = s.grant();
    assert_eq!(
        grant["credential"]["critical_options"]["force-command"],
        "echo forced"
    );

    s.reload(&principals(&[LOCAL_USER]), "");
    // Still only from the addresses it was issued for, and only its command.
    let out = s.ssh(None, "127.0.0.1", "alice:web", "whoami");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        text(&out.stderr).contains("your connection comes from 127.0.0.1"),
        "{out:?}"
    );
    let out = s.ssh(None, "127.0.0.2", "alice:web", "whoami");
    assert_eq!(printed(&out).as_deref(), Some("forced"), "{out:?}");
    let started = s.events("session.started").pop().unwrap();
    assert_eq!(
        started["details"]["forced_command"], "echo forced",
        "{started}"
    );
    // Its certificate, which logs in to the host itself too, as ever.
    let out = s.ssh(Some(&grant), "127.0.0.2", "alice:web", "whoami");
    assert_eq!(printed(&out).as_deref(), Some("forced"), "{out:?}");

    // The role given other addresses and another command: only the addresses both allow,
    // and still its own command.
    s.reload(
        &format!(
            "{}\nsource_address = [\"127.0.4.7\", \"127.0.0.0/30\"]\nforce_command = \"echo other\"",
            principals(&[LOCAL_USER])
        ),
        "",
    );
    for from in ["127.0.4.8", "127.0.0.1"] {
        let out = s.ssh(None, from, "alice:web", "whoami");
        assert!(!out.status.success(), "{out:?}");
        assert!(
            text(&out.stderr).contains(&format!(
                "is used only from 127.0.0.2/32, 127.0.4.7/32; your connection comes from {from}"
            )),
            "{out:?}"
        );
    }
    for from in ["127.0.4.7", "127.0.0.2"] {
        let out = s.ssh(None, from, "alice:web", "whoami");
        assert_eq!(printed(&out).as_deref(), Some("forced"), "{out:?}");
    }

    // Moved elsewhere entirely: no address may use it.
    s.reload(
        &format!(
            "{}\nsource_address = [\"127.0.0.3/32\"]",
            principals(&[LOCAL_USER])
        ),
        "",
    );
    for from in ["127.0.0.2", "127.0.0.3"] {
        let out = s.ssh(None, from, "alice:web", "whoami");
        refused(&out, "no address is in both");
    }
}

/// A login the SSH user name asks for that no role of the target names is kept by its length
/// alone, in the refusal, the audit log and the server's logs, whether signed in with a
/// registered key or a certificate: it may be a password typed into the wrong field. One a
/// role names is named.
#[test]
fn a_login_no_role_names_is_kept_by_its_length_alone() {
    let s = Setup::start("full", &principals(&[LOCAL_USER]));
    let other = format!("[targets.web.roles.other]\n{}\n", principals(&[OTHER_USER]));
    s.reload(&principals(&[LOCAL_USER]), &other);
    let grant = s.grant();

    let out = s.ssh(None, "127.0.0.1", "alice:web:hunter3secretpw", "id -un");
    refused(&out, "logs in as (no such login, 15 characters)");
    assert!(!said(&out).contains("hunter3"), "{out:?}");
    let out = s.ssh(
        Some(&grant),
        "127.0.0.1",
        "alice:web:hunter2secretpw",
        "id -un",
    );
    refused(&out, "not as (no such login, 15 characters)");
    assert!(!said(&out).contains("hunter2"), "{out:?}");
    // A login another role names is named.
    let out = s.ssh(
        None,
        "127.0.0.1",
        &format!("alice:web:{OTHER_USER}"),
        "id -un",
    );
    refused(&out, &format!("logs in as \"{OTHER_USER}\""));

    let failed: Vec<Value> = s
        .events("auth.login_failed")
        .into_iter()
        .filter(|e| e["details"]["via"] == "ssh")
        .collect();
    let logins: Vec<&str> = failed
        .iter()
        .map(|e| e["details"]["login"].as_str().unwrap())
        .collect();
    assert_eq!(
        logins,
        [
            "(no such login, 15 characters)",
            "(no such login, 15 characters)",
            OTHER_USER
        ],
        "{failed:?}"
    );
    assert!(
        failed[1]["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("not as (no such login, 15 characters)"),
        "{failed:?}"
    );
    let everything = ok(&s.admin, &["audit", "search", "--limit", "1000"]).to_string();
    assert!(everything.contains("no such login"), "{everything}");
    for secret in ["hunter3", "hunter2"] {
        assert!(!everything.contains(secret), "{secret} in {everything}");
        assert!(!s.env.server.stderr().contains(secret));
        assert!(!s.env.server.stdout().contains(secret));
        let recordings = s.env.server.data_dir().join("recordings");
        for f in std::fs::read_dir(&recordings).into_iter().flatten() {
            let f = f.unwrap().path();
            assert!(!read(&f).contains(secret), "{}", f.display());
        }
    }
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}
