//! Credentials end to end: what an offboarding, a new password, a reset of the second factor
//! and a removal from the config end, sign-ins already under way included, and the step-up an
//! administrator gives to change another user's credentials.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use warden_testkit::{Cli, Sshd, ensure_local_user, ssh_keypair, ssh_run};

/// Sign-ins of others that hold every hashing slot (one per core, taken in turn) while the
/// sign-ins under test queue behind them.
const SLOT_HOLDERS: usize = 8;

/// Sign-ins under test sent at once.
const IN_FLIGHT: usize = 12;

/// What a refused sign-in that checked credentials of before a change is audited with.
const CHANGED_MEANWHILE: &str = "changed while the sign-in was checked";

fn sign_in_body(user: &str, password: &str) -> String {
    json!({ "user": user, "password": password }).to_string()
}

/// The token of a sign-in's answer, if it earned one.
fn earned(answer: &(u16, String)) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&answer.1).ok()?;
    (answer.0 == 200).then(|| v["token"].as_str().unwrap().to_owned())
}

/// How an administrator's change meets sign-ins waiting for a hashing slot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// It hashes nothing (an offboarding): sent once the sign-ins wait, it is done before
    /// their turn comes.
    Unhashed,
    /// It hashes a new password itself: sent before the sign-ins, it waits its turn before
    /// theirs, which read the credentials it replaces meanwhile.
    Hashed,
}

/// Runs `change` (an administrator's call) while [`IN_FLIGHT`] sign-ins of mallory's with
/// `password` wait for a hashing slot: the slots are first taken by sign-ins of alice's, and
/// each waits its turn, so every sign-in of mallory's reads her credentials before the change
/// is stored and has them checked after it. Returns their answers.
fn sign_ins_around(
    env: &Env,
    password: &str,
    kind: Change,
    change: impl FnOnce() -> (u16, String) + Send,
) -> Vec<(u16, String)> {
    let port = env.server.port();
    let sign_in = move |user: &str, password: &str| {
        call(
            port,
            "POST",
            "/v1/auth/login",
            None,
            &sign_in_body(user, password),
        )
    };
    let pause = || std::thread::sleep(Duration::from_millis(30));
    std::thread::scope(|s| {
        let holders: Vec<_> = (0..SLOT_HOLDERS)
            .map(|_| s.spawn(move || sign_in("alice", PASSWORD)))
            .collect();
        pause();
        let mut change = Some(change);
        let mut changed = None;
        if kind == Change::Hashed {
            changed = change.take().map(|c| s.spawn(c));
            pause();
        }
        let mallory: Vec<_> = (0..IN_FLIGHT)
            .map(|_| s.spawn(move || sign_in("mallory", password)))
            .collect();
        pause();
        if let Some(c) = change.take() {
            changed = Some(s.spawn(c));
        }
        let (status, body) = changed.unwrap().join().unwrap();
        assert!((200..300).contains(&status), "{status} {body}");
        for h in holders {
            assert_eq!(h.join().unwrap().0, 200);
        }
        mallory.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// Asserts that no token `answers` earned works now, and that some of them were refused for
/// credentials changed while they were checked: the window was met.
fn none_works(env: &Env, answers: &[(u16, String)]) {
    let port = env.server.port();
    for token in answers.iter().filter_map(earned) {
        let (status, body) = call(port, "GET", "/v1/auth/whoami", Some(&token), "");
        assert_eq!(
            status, 401,
            "a token earned around the change works: {body}"
        );
    }
    let admin = env.login("admin");
    let refused = audit_values(&admin, "auth.login_failed", "/outcome/reason");
    assert!(
        refused.iter().any(|r| r.contains(CHANGED_MEANWHILE)),
        "no sign-in was checked across the change: {refused:?}"
    );
}

/// An offboarding ends mallory's sign-ins already under way too: however many wait for a
/// hashing slot, none earns a token that works once the offboarding is done.
#[test]
fn sign_ins_under_way_earn_no_token_that_outlives_an_offboarding() {
    let env = Env::start();
    let admin = token(&env.login("admin"));
    let port = env.server.port();
    let answers = sign_ins_around(&env, PASSWORD, Change::Unhashed, || {
        call(
            port,
            "POST",
            "/v1/users/mallory/revoke-all",
            Some(&admin),
            "{}",
        )
    });
    none_works(&env, &answers);
    // Nor may any of them have made a request since.
    let admin = env.login("admin");
    let mine = ok(&admin, &["request", "list", "--limit", "100"]);
    assert!(
        !mine.to_string().contains("\"mallory\""),
        "mallory holds a request: {mine}"
    );
}

/// A new password ends the sign-ins with the old one already under way: a reset after a
/// suspected compromise leaves the thief no token, however their sign-ins are timed.
#[test]
fn sign_ins_with_the_old_password_under_way_earn_no_token_after_a_new_one() {
    let env = Env::start();
    let admin = token(&env.login("admin"));
    let port = env.server.port();
    let fresh = "mallory's fresh password 1";
    let answers = sign_ins_around(&env, PASSWORD, Change::Hashed, || {
        call(
            port,
            "PUT",
            "/v1/users/mallory/password",
            Some(&admin),
            &json!({ "password": fresh }).to_string(),
        )
    });
    none_works(&env, &answers);
    assert!(sign_in(&env.server.cli(), "mallory", fresh, None).success());
}

/// An administrator's code proves the call is theirs: with another administrator's token
/// alone, neither a second factor nor a password of another user can be reset (which would
/// let the holder sign in as that user, and through them reset the first one's own). A wrong
/// code is refused as at any step-up, and counts towards the lockout.
#[test]
fn changing_another_users_credentials_takes_the_administrators_fresh_code() {
    let env = Env::start_configured(
        "[users.admin2]\ngroups = [\"admins\"]\n\n[users.admin3]\ngroups = [\"admins\"]\n",
    );
    let admin = env.login("admin");
    let admin2 = env.login("admin2");
    let admin3 = env.login("admin3");
    let uri = enroll_mfa(&admin);
    let uri3 = enroll_mfa(&admin3);
    enroll_mfa(&admin2);
    let new_password = "admin2's fresh password 1";
    let missing = fails(&admin, &["user", "reset-mfa", "admin2"], 3);
    assert!(missing.stderr.contains("--totp CODE"), "{missing:?}");
    let set = ["user", "set-password", "admin2", "--password-stdin"];
    let missing = admin3.run(&set, Some(new_password));
    assert_eq!(missing.code, 3, "{missing:?}");
    let wrong = ["000000", "000001"]
        .into_iter()
        .find(|c| *c != totp(&uri, 0) && *c != totp(&uri, 1))
        .unwrap();
    let refused = fails(&admin, &["user", "reset-mfa", "admin2", "--totp", wrong], 3);
    assert!(refused.stderr.contains("wrong"), "{refused:?}");
    // Nothing was changed: admin2 still needs a code, with the password of before.
    let unchanged = sign_in(&env.server.cli(), "admin2", PASSWORD, None);
    assert_eq!(unchanged.code, 5, "{unchanged:?}");
    assert!(unchanged.stderr.contains("--totp"), "{unchanged:?}");
    let codes = audit_values(&admin3, "request.action_refused", "/outcome/code");
    let step_ups: Vec<_> = codes
        .iter()
        .filter(|c| *c == "mfa_required" || *c == "mfa_failed")
        .collect();
    assert_eq!(step_ups, ["mfa_required", "mfa_required", "mfa_failed"]);
    // With a fresh code, it is done.
    let v = ok(
        &admin,
        &["user", "reset-mfa", "admin2", "--totp", &totp(&uri, 1)],
    );
    assert_eq!(v["had_factor"], true, "{v}");
    let mut args = set.to_vec();
    let code = totp(&uri3, 1);
    args.extend(["--totp", code.as_str()]);
    let done = admin3.run(&args, Some(new_password));
    assert!(done.success(), "{done:?}");
    let admin2 = env.server.cli();
    let back = sign_in(&admin2, "admin2", new_password, None);
    assert!(back.success(), "{back:?}");
    // An administrator with no second factor has no code to give, and is asked for none. One's
    // own password takes the current one and, with a second factor, a fresh code of it too
    // (see own_password.rs).
    assert_eq!(ok(&admin2, &["whoami"])["mfa_enrolled"], false);
    ok(&admin2, &["user", "reset-mfa", "alice"]);
    let own = admin.run(
        &["user", "set-password", "admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\nadmin's fresh password 1")),
    );
    assert_eq!(own.code, 3, "{own:?}");
    assert!(own.stderr.contains("--totp CODE"), "{own:?}");
}

/// A policy whose `web` target is the sshd at `port` with `host_key`, its role `view` granted
/// at once.
fn reach(env: &Env, admin: &warden_testkit::Cli, port: u16, host_key: &str) {
    let targets = format!(
        "[targets.web]\nkind = \"ssh\"\nenvironment = \"test\"\n[targets.web.connection]\nhost = \"127.0.0.1\"\nport = {port}\nhost_key = \"{host_key}\"\n[targets.web.roles.view]\nprincipals = [\"{LOCAL_USER}\"]\n"
    );
    let rules = "@id(\"view-auto\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"web/view\");\n";
    write_policy(
        &env.policy_dir(),
        &[("targets.toml", &targets), ("access.cedar", rules)],
    );
    ok(admin, &["policy", "reload"]);
}

/// Waits (bounded) until `user` has `n` live SSH sessions.
fn wait_sessions(admin: &warden_testkit::Cli, user: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = ok(admin, &["sessions", "list"]);
        let theirs = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["user"] == user)
            .count();
        if theirs == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} has {theirs} sessions, not {n}: {list}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reset after a suspected compromise leaves the thief nothing: a reset of the second factor
/// ends the user's live SSH sessions and removes the SSH keys registered to them (one may be
/// the thief's), says how many, and a new password does the same.
#[test]
fn a_reset_ends_live_ssh_sessions_and_removes_registered_keys() {
    let env = Env::start();
    let admin = env.login("admin");
    let alice = env.login("alice");
    ensure_local_user(LOCAL_USER);
    let ca = alice.run(&["ssh-ca"], None);
    assert!(ca.success(), "{ca:?}");
    let sshd = Sshd::start(ca.stdout.trim(), "web");
    reach(&env, &admin, sshd.port(), sshd.host_public_key());
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = ssh_keypair(keys.path(), "alice_key");
    let (planted, _) = ssh_keypair(keys.path(), "planted");
    for k in [&key, &planted] {
        ok(&alice, &["keys", "add", &format!("{}.pub", k.display())]);
    }
    let grant = create(&alice, "web", "view", &[]);
    assert_eq!(grant["state"], "active", "{grant}");
    let port = env.server.ssh_port();
    let session = {
        let key = planted.clone();
        std::thread::spawn(move || ssh_run(port, "alice:web", &key, "sleep 20; echo finished"))
    };
    wait_sessions(&admin, "alice", 1);
    let started = Instant::now();
    let v = ok(&admin, &["user", "reset-mfa", "alice"]);
    assert_eq!(
        (v["ssh_keys_removed"].as_u64(), v["sessions_ended"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    let out = session.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the session ran on"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("finished"),
        "{out:?}"
    );
    wait_sessions(&admin, "alice", 0);
    // Neither key signs anyone in any more; the grant itself stands.
    let refused = ssh_run(port, "alice:web", &key, "echo in");
    assert!(!refused.status.success(), "{refused:?}");
    let removed = audit_events(&admin, "ssh.key_removed");
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert_eq!(removed[0]["actor"]["user"], "admin");
    assert_eq!(removed[0]["details"]["user"], "alice");
    // The output says what ended, and that she registers her keys again.
    let alice = env.login("alice");
    assert_eq!(ok(&alice, &["keys", "list"])["keys"], json!([]), "keys");
    ok(&alice, &["keys", "add", &format!("{}.pub", key.display())]);
    let said = admin.run(
        &["user", "set-password", "alice", "--password-stdin"],
        Some("alice's fresh password 1"),
    );
    assert!(said.success(), "{said:?}");
    assert!(
        said.stdout.contains("Their sessions were ended"),
        "{said:?}"
    );
    assert!(
        said.stdout
            .contains("1 SSH key registered to them removed with it"),
        "{said:?}"
    );
    assert!(said.stdout.contains("warden keys add"), "{said:?}");
    let alice = env.server.cli();
    assert!(sign_in(&alice, "alice", "alice's fresh password 1", None).success());
    assert_eq!(ok(&alice, &["keys", "list"])["keys"], json!([]));
}

/// An offboarded user's SSH key (one kept from before offboarding removed keys) signs no one
/// in to the SSH proxy, and the refusal is on the record as other refused sign-ins are.
#[test]
fn an_offboarded_users_ssh_key_signs_no_one_in() {
    let mut env = Env::start();
    let admin = env.login("admin");
    let mallory = env.login("mallory");
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = ssh_keypair(keys.path(), "mallory_key");
    ok(
        &mallory,
        &["keys", "add", &format!("{}.pub", key.display())],
    );
    ok(&admin, &["revoke", "--user", "mallory", "--all"]);
    let removed = audit_values(&admin, "ssh.key_removed", "/details/user");
    assert_eq!(removed, ["mallory"]);
    // As a database written before offboarding removed keys holds it.
    assert!(env.server.terminate().success());
    let db = rusqlite::Connection::open(env.server.data_dir().join("warden.db")).unwrap();
    let public = std::fs::read_to_string(format!("{}.pub", key.display())).unwrap();
    let fingerprint = std::process::Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(format!("{}.pub", key.display()))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let line: Vec<&str> = public.split_whitespace().take(2).collect();
    db.execute(
        "INSERT INTO ssh_keys (fingerprint, user, public_key, added_at) VALUES (?1, 'mallory', ?2, 0)",
        rusqlite::params![fingerprint, line.join(" ")],
    )
    .unwrap();
    drop(db);
    env.server.restart();
    let out = ssh_run(env.server.ssh_port(), "mallory:web", &key, "echo in");
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("request create"), "{said}");
    let admin = env.login("admin");
    let refused = audit_events(&admin, "auth.login_failed");
    let refused: Vec<_> = refused
        .iter()
        .filter(|e| e["outcome"]["code"] == "offboarded")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["actor"]["claimed"], "mallory");
    assert_eq!(refused[0]["details"]["fingerprint"], fingerprint.as_str());
}

/// A user removed from the config loses at the next start what offboarding takes, and more:
/// their password, second factor, SSH keys and approvals of requests still pending are
/// forgotten, so that put back later they sign in afresh, with the password the config gives
/// them then.
#[test]
fn a_user_removed_from_the_config_and_put_back_signs_in_afresh() {
    let carol = |hash: Option<&str>| {
        hash.map(|h| format!("[users.carol]\ngroups = [\"security\"]\npassword_hash = {h:?}\n"))
            .unwrap_or_default()
    };
    let first = password_hash("carol-password-1");
    let mut env = Env::start_configured(&carol(Some(&first)));
    let config = env.dir.path().join("warden.toml");
    let cli = env.server.cli();
    assert!(sign_in(&cli, "carol", "carol-password-1", None).success());
    enroll_mfa(&cli);
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = ssh_keypair(keys.path(), "carol_key");
    ok(&cli, &["keys", "add", &format!("{}.pub", key.display())]);
    // Two people, one of them from security: carol's approval is the first.
    let alice = env.login("alice");
    let pending = id(&create(&alice, "web", "root", &[]));
    assert_eq!(
        ok(&cli, &["request", "approve", &pending])["state"],
        "pending"
    );

    std::fs::write(&config, carol(None)).unwrap();
    assert!(env.server.terminate().success());
    env.server.restart();
    let admin = env.login("admin");
    let removed = audit_values(&admin, "ssh.key_removed", "/details/user");
    assert_eq!(removed, ["carol"]);
    fails(&cli, &["whoami"], 5);
    let voided = audit_events(&admin, "request.approvals_voided");
    assert_eq!(voided.len(), 1, "{voided:?}");
    assert_eq!(voided[0]["request_id"], pending.as_str());
    assert_eq!(voided[0]["details"]["approvers"], json!(["carol"]));

    let second = password_hash("carol-password-2");
    std::fs::write(&config, carol(Some(&second))).unwrap();
    assert!(env.server.terminate().success());
    env.server.restart();
    // The old password no longer signs her in; the config's new one does, with no second
    // factor asked, and she has no SSH key.
    let old = sign_in(&env.server.cli(), "carol", "carol-password-1", None);
    assert_eq!(old.code, 5, "{old:?}");
    let back = sign_in(&cli, "carol", "carol-password-2", None);
    assert!(back.success(), "{back:?}");
    assert_eq!(ok(&cli, &["whoami"])["mfa_enrolled"], false);
    assert_eq!(ok(&cli, &["keys", "list"])["keys"], json!([]));
    // Her approval of before counts for nothing: sam's is the first again.
    let sam = env.login("sam");
    assert_eq!(
        ok(&sam, &["request", "approve", &pending])["state"],
        "pending"
    );
    // Her password is the config's, as for a new user: no change of it is said to be ignored.
    assert!(
        !env.server.stderr().contains("changes no password"),
        "{}",
        env.server.stderr()
    );
}

/// A login goes to an http:// or https:// server only: another kind of URL is refused as such,
/// apart from what is no URL at all.
#[test]
fn a_login_goes_to_an_http_or_https_server_only() {
    let cli = warden_testkit::Cli::new(std::path::Path::new(BIN), "http://127.0.0.1:9");
    let login = |server: &str| {
        let args = [
            "login",
            "--user",
            "alice",
            "--password-stdin",
            "--server",
            server,
        ];
        let out = cli.run(&args, Some(PASSWORD));
        assert_eq!(out.code, 2, "{server}: {out:?}");
        out.stderr
    };
    for server in ["ftp://127.0.0.1:21600", "file:///etc/passwd"] {
        let said = login(server);
        assert!(
            said.contains("is not an http:// or https:// URL, the only kinds accepted"),
            "{said}"
        );
    }
    let said = login("127.0.0.1:21600");
    assert!(said.contains("is not a URL"), "{said}");
}

/// `serve --dev --config FILE` gives the config's users without a `password_hash` the published
/// demo password, administrators included: its banner names each of them, and none with one.
#[test]
fn a_development_server_names_the_configs_users_it_gives_the_demo_password() {
    let hash = password_hash("dave-password-1");
    let env = Env::start_configured(&format!(
        "[users.carol]\ngroups = [\"admins\"]\n\n[users.dave]\ngroups = [\"dev\"]\npassword_hash = {hash:?}\n\n[users.erin]\n"
    ));
    let banner = env.server.stdout();
    let named = banner
        .lines()
        .find(|l| l.contains("the config's users without a password_hash"))
        .unwrap_or_else(|| panic!("{banner}"));
    assert!(named.ends_with(": carol (admins), erin"), "{banner}");
    assert!(
        banner.contains("all have the password \"warden-dev\""),
        "{banner}"
    );
    // As it says: carol, an administrator, signs in with it; dave does not.
    assert!(sign_in(&env.server.cli(), "carol", PASSWORD, None).success());
    assert_eq!(sign_in(&env.server.cli(), "dave", PASSWORD, None).code, 5);
}

/// A `--dev` server started again on its data dir names as having the demo password only the
/// users who still have it: not one whose password an administrator changed, nor one
/// offboarded since.
#[test]
fn a_development_server_on_a_kept_data_dir_names_who_still_has_the_demo_password() {
    let mut env = Env::start();
    let admin = env.login("admin");
    let set = admin.run(
        &["user", "set-password", "bob", "--password-stdin"],
        Some("bob's own password 7"),
    );
    assert!(set.success(), "{set:?}");
    ok(&admin, &["revoke", "--user", "sam", "--all"]);
    assert!(env.server.terminate().success());
    env.server.restart();
    let banner = env.server.stdout();
    // The second start's banner, after the first's.
    let said = banner
        .lines()
        .rev()
        .find(|l| l.contains("the password \"warden-dev\""))
        .unwrap_or_else(|| panic!("{banner}"));
    assert_eq!(
        said.trim(),
        "of them, admin, alice, mallory have the password \"warden-dev\"; bob, sam no longer do (changed, or disabled by offboarding, since a --dev server on this data dir gave it).",
        "{banner}"
    );
    // As it says.
    let cli = env.server.cli();
    assert!(sign_in(&cli, "alice", PASSWORD, None).success());
    assert_eq!(sign_in(&cli, "bob", PASSWORD, None).code, 5);
    assert_eq!(sign_in(&cli, "sam", PASSWORD, None).code, 5);
}

/// `--json` error of a command expected to find nothing (exit code 4): its code and message.
fn not_found(cli: &Cli, args: &[&str], stdin: Option<&str>) -> (String, String) {
    let out = cli.run(&[args, &["--json"]].concat(), stdin);
    assert_eq!(out.code, 4, "`warden {}`: {out:?}", args.join(" "));
    let v: serde_json::Value = serde_json::from_str(out.stderr.trim()).unwrap();
    let error = &v["error"];
    (
        error["code"].as_str().unwrap().to_owned(),
        error["message"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_missing_target_or_user_has_one_code_and_says_how_to_fix_it() {
    let env = Env::start();
    let admin = env.login("admin");
    let alice = env.login("alice");
    let by_admin = "unknown target nosuch: targets.toml in the policy directory defines them";
    let fingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for (args, stdin) in [
        (&["target", "rotate-root", "nosuch"][..], None),
        (
            &[
                "target",
                "set-credential",
                "nosuch",
                "--username",
                "root",
                "--password-stdin",
            ],
            Some("a password"),
        ),
        (
            &[
                "target",
                "pin-host-key",
                "nosuch",
                "--fingerprint",
                fingerprint,
            ],
            None,
        ),
    ] {
        let (code, message) = not_found(&admin, args, stdin);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("unknown_target", by_admin)
        );
    }
    let (code, message) = not_found(
        &alice,
        &["policy", "explain", "nosuch", "--role", "view"],
        None,
    );
    assert_eq!(code, "unknown_target");
    assert_eq!(
        message,
        "unknown target nosuch: `warden targets` lists the ones you may request"
    );
    for args in [&["db", "connect", "nosuch"][..], &["ssh", "nosuch"]] {
        let (code, message) = not_found(&alice, args, None);
        assert_eq!(code, "unknown_target");
        assert_eq!(
            message,
            "no target nosuch that you may request: `warden targets` lists them"
        );
    }

    let in_config = "user \"nosuch\" is not in the directory; add them to the config file first";
    for (args, stdin) in [
        (&["user", "unlock", "nosuch"][..], None),
        (&["user", "reset-mfa", "nosuch"], None),
        (
            &["user", "set-password", "nosuch", "--password-stdin"],
            Some("a long new password"),
        ),
        (
            &[
                "policy", "explain", "web", "--role", "view", "--user", "nosuch",
            ],
            None,
        ),
    ] {
        let (code, message) = not_found(&admin, args, stdin);
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("unknown_user", in_config)
        );
    }
    let (code, message) = not_found(&admin, &["revoke", "--user", "nosuch", "--all"], None);
    assert_eq!(code, "unknown_user");
    assert_eq!(
        message,
        "user \"nosuch\" is not in the directory and has no open request: nothing to offboard; check the name"
    );
}

/// Failed authentications an address may make before it waits (`BURST` in the domain).
const BURST: usize = 20;

/// A user with a second factor is asked for the code only once the password is right: a wrong
/// password without it is answered, recorded and counted as any wrong password, so a sign-in
/// tells no one without the password which names are real and have a factor; the right one
/// without it is asked for the code, counted as neither a failure nor a success.
#[test]
fn the_code_is_asked_for_only_once_the_password_is_right() {
    let env = Env::start_configured("trusted_proxies = [\"127.0.0.1\"]\n");
    let port = env.server.port();
    let uri = enroll_mfa(&env.login("alice"));
    // Each address behind the proxy has a budget of its own.
    let from = |client: &str, user: &str, password: &str, code: Option<&str>| {
        let body = json!({ "user": user, "password": password, "totp": code }).to_string();
        let said = warden_testkit::http_post_with(
            port,
            "/v1/auth/login",
            &[("X-Forwarded-For", client)],
            &body,
        )
        .unwrap();
        (said.status, error_code(&said.body), said.body)
    };
    // A wrong password is answered alike for alice, who has a factor, bob, who has none, and
    // a name no one has.
    let wrong: Vec<_> = ["alice", "bob", "nobody"]
        .into_iter()
        .map(|user| from("198.51.100.1", user, "definitely-wrong", None))
        .collect();
    assert_eq!(wrong[0].0, 401, "{wrong:?}");
    assert_eq!(wrong[0].1, "bad_credentials", "{wrong:?}");
    assert!(wrong.iter().all(|w| *w == wrong[0]), "{wrong:?}");

    // The right password without the code is asked for it, however often: no failure of
    // alice's (five would lock her) nor of the address's (twenty would throttle it).
    for _ in 0..=BURST {
        let (status, code, body) = from("198.51.100.2", "alice", PASSWORD, None);
        assert_eq!((status, code.as_str()), (401, "totp_required"), "{body}");
        assert!(body.contains("--totp"), "{body}");
    }
    let (status, _, body) = from("198.51.100.2", "alice", PASSWORD, Some(&totp(&uri, 1)));
    assert_eq!(status, 200, "{body}");

    // Wrong passwords without the code lock her as any wrong ones do, and spend the address's
    // budget: locked, the right password gets the answer of a wrong one, code or none.
    for _ in 0..5 {
        let (status, code, body) = from("198.51.100.3", "alice", "definitely-wrong", None);
        assert_eq!((status, code.as_str()), (401, "bad_credentials"), "{body}");
    }
    for code in [None, Some(totp(&uri, 2))] {
        let (status, said, body) = from("198.51.100.3", "alice", PASSWORD, code.as_deref());
        assert_eq!((status, said.as_str()), (401, "bad_credentials"), "{body}");
    }
    for _ in 0..BURST - 7 {
        let (status, _, body) = from("198.51.100.3", "alice", "definitely-wrong", None);
        assert_eq!(status, 401, "{body}");
    }
    let (status, code, body) = from("198.51.100.3", "alice", "definitely-wrong", None);
    assert_eq!(
        (status, code.as_str()),
        (429, "too_many_failures"),
        "{body}"
    );

    // On the record: each wrong password as a failed sign-in, each missing code apart.
    let admin = env.login("admin");
    let failed = audit_events(&admin, "auth.login_failed");
    let of = |client: &str, code: &str| {
        failed
            .iter()
            .filter(|e| e["actor"]["source"] == client && e["outcome"]["code"] == code)
            .count()
    };
    assert_eq!(of("198.51.100.1", "bad_credentials"), 3);
    assert_eq!(of("198.51.100.2", "totp_required"), BURST + 1);
    assert_eq!(of("198.51.100.2", "bad_credentials"), 0);
    assert_eq!(of("198.51.100.3", "bad_credentials"), BURST);
    assert_eq!(
        audit_values(&admin, "auth.user_locked", "/details/user"),
        ["alice"]
    );
    let asked = failed
        .iter()
        .find(|e| e["outcome"]["code"] == "totp_required")
        .unwrap();
    assert!(
        asked["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("password was right"),
        "{asked}"
    );

    // The CLI asks for the code only when it is what is missing: a wrong password is told so.
    let cli = env.server.cli();
    let guessed = sign_in(&cli, "alice", "definitely-wrong", None);
    assert_eq!(guessed.code, 5, "{guessed:?}");
    assert!(!guessed.stderr.contains("--totp"), "{guessed:?}");
}

/// A deployment-style server (`--config FILE`, not `--dev`: no demo users, no bootstrap admin
/// once the config names administrators who can sign in) with the test policy and `users` as
/// its config's users. Returns it and the config file.
fn serve_users(dir: &std::path::Path, users: &str) -> (warden_testkit::Server, std::path::PathBuf) {
    let policy = dir.join("policy");
    write_policy(
        &policy,
        &[("targets.toml", TARGETS), ("access.cedar", RULES)],
    );
    let config = dir.join("warden.toml");
    let text = format!("policy_dir = {:?}\n\n{users}", policy.display().to_string());
    std::fs::write(&config, text).unwrap();
    let server = warden_testkit::Server::start_in(
        std::path::Path::new(BIN),
        &dir.join("data"),
        &["serve", "--config", config.to_str().unwrap()],
        &[],
    );
    (server, config)
}

/// Two administrators, the only ones, offboarding each other at the same instant: the
/// offboardings take turns, the second finds its caller offboarded by the first and is refused
/// (on the record), and the first does not wait out the drain for the refused call. One
/// administrator remains, who can still sign in and administer.
///
/// root2's call is made to pass authentication first (its body held back), so that root1's
/// offboarding of root2 finds it under way, as calls sent at the same instant would.
#[test]
fn administrators_offboarding_each_other_at_once_leave_one_standing() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let names = ["root1", "root2"];
    let passwords = ["root1-password-1", "root2-password-1"];
    let users: String = names
        .iter()
        .zip(passwords)
        .map(|(name, pw)| {
            format!(
                "[users.{name}]\ngroups = [\"admins\"]\npassword_hash = {:?}\n\n",
                password_hash(pw)
            )
        })
        .collect();
    let (server, _) = serve_users(dir.path(), &users);
    let clis: Vec<_> = names
        .iter()
        .zip(passwords)
        .map(|(name, pw)| {
            let cli = server.cli();
            let out = sign_in(&cli, name, pw, None);
            assert!(out.success(), "{out:?}");
            cli
        })
        .collect();
    let tokens: Vec<String> = clis.iter().map(token).collect();
    let port = server.port();

    // root2 offboards root1: authenticated, counted under way, its body not sent yet.
    let mut held = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /v1/users/root1/revoke-all HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
        tokens[1]
    );
    held.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (first, second, took) = std::thread::scope(|s| {
        // root1 offboards root2, and waits for root2's call under way.
        let first = s.spawn(|| {
            call(
                port,
                "POST",
                "/v1/users/root2/revoke-all",
                Some(&tokens[0]),
                "{}",
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !first.is_finished(),
            "root1's offboarding did not wait for root2's call"
        );
        let sent = Instant::now();
        held.write_all(b"{}").unwrap();
        let mut answer = String::new();
        let _ = held.read_to_string(&mut answer);
        let first = first.join().unwrap();
        (first, answer, sent.elapsed())
    });
    assert_eq!(first.0, 200, "{first:?}");
    assert!(second.starts_with("HTTP/1.1 403"), "{second}");
    let body = second.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(error_code(body), "not_permitted", "{second}");
    assert!(
        body.contains("offboarded by another administrator"),
        "{second}"
    );
    assert!(
        took < Duration::from_secs(15),
        "the offboarding waited out its drain for the refused call: {took:?}"
    );

    // root1 still administers, and signs in again; root2 no longer does.
    let root1 = &clis[0];
    ok(root1, &["user", "locked"]);
    let again = sign_in(&server.cli(), "root1", passwords[0], None);
    assert!(again.success(), "{again:?}");
    let gone = sign_in(&server.cli(), "root2", passwords[1], None);
    assert_eq!(gone.code, 5, "{gone:?}");
    assert_eq!(
        audit_values(root1, "auth.user_offboarded", "/details/user"),
        ["root2"]
    );
    let refused: Vec<_> = audit_events(root1, "request.action_refused")
        .into_iter()
        .filter(|e| e["details"]["action"] == "user.revoke_all")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["actor"]["user"], "root2");
    assert_eq!(refused[0]["outcome"]["code"], "not_permitted");
}

/// A user locked after wrong passwords and then removed from the config is not listed as
/// locked after the restart (an administrator could not unlock them: they are not in the
/// directory), nor counted at start; put back, they sign in afresh, unlocked.
#[test]
fn a_locked_user_removed_from_the_config_is_not_listed_as_locked() {
    let mut env = Env::start_configured("[users.eve]\ngroups = [\"dev\"]\n");
    let config = env.dir.path().join("warden.toml");
    let cli = env.server.cli();
    for _ in 0..5 {
        assert_eq!(sign_in(&cli, "eve", "definitely-wrong", None).code, 5);
    }
    let admin = env.login("admin");
    assert_eq!(ok(&admin, &["user", "locked"])["locked"][0]["user"], "eve");

    let restart = |env: &mut Env, config_text: &str| -> String {
        std::fs::write(&config, config_text).unwrap();
        let before = env.server.stderr().len();
        assert!(env.server.terminate().success());
        env.server.restart();
        env.server.stderr()[before..].to_owned()
    };
    let said = restart(&mut env, "");
    assert!(!said.contains("users still locked"), "{said}");
    let admin = env.login("admin");
    assert_eq!(ok(&admin, &["user", "locked"])["locked"], json!([]));
    fails(&admin, &["user", "unlock", "eve"], 4);

    restart(&mut env, "[users.eve]\ngroups = [\"dev\"]\n");
    let admin = env.login("admin");
    assert_eq!(ok(&admin, &["user", "locked"])["locked"], json!([]));
    let back = sign_in(&env.server.cli(), "eve", PASSWORD, None);
    assert!(back.success(), "{back:?}");
}

/// An offboarding since start, which changes whom the bootstrap admin stands in for, is no
/// change of the config file: a reload says nothing of its users then, and still does once
/// the file's users change.
#[test]
fn a_reload_says_the_configs_users_changed_only_when_the_file_did() {
    let dir = tempfile::tempdir().unwrap();
    // root1 is the only administrator the file gives a password; root2 gets one from root1.
    let users = format!(
        "[users.root1]\ngroups = [\"admins\"]\npassword_hash = {:?}\n\n[users.root2]\ngroups = [\"admins\"]\n\n",
        password_hash("root1-password-1")
    );
    let (server, config) = serve_users(dir.path(), &users);
    let root1 = server.cli();
    assert!(sign_in(&root1, "root1", "root1-password-1", None).success());
    let set = root1.run(
        &["user", "set-password", "root2", "--password-stdin"],
        Some("root2-password-1"),
    );
    assert!(set.success(), "{set:?}");
    let root2 = server.cli();
    assert!(sign_in(&root2, "root2", "root2-password-1", None).success());
    ok(&root2, &["revoke", "--user", "root1", "--all"]);

    let reload = || {
        let out = root2.run(&["policy", "reload"], None);
        assert!(out.success(), "{out:?}");
        out.stderr
    };
    let said = reload();
    assert!(!said.contains("changed since the server started"), "{said}");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}[users.dave]\ngroups = [\"dev\"]\n")).unwrap();
    let said = reload();
    assert!(said.contains("changed since the server started"), "{said}");
}

/// The test policy, with break-glass for SREs to web/root and web/admin.
fn with_breakglass() -> String {
    format!(
        r#"{RULES}
@id("bg-root")
@max_ttl("1h")
permit (principal in Group::"sre", action == Action::"breakglass", resource == Role::"web/root");

@id("bg-admin")
@max_ttl("1h")
permit (principal in Group::"sre", action == Action::"breakglass", resource == Role::"web/admin");
"#
    )
}

/// Wrong passwords sent for a name, by anyone who knows it, lock its sign-in only: the user,
/// signed in already, still steps up and breaks the glass with the token they hold, before
/// and after a restart (an archive of the events that locked them included), while their
/// sign-in stays locked. Wrong codes at a step-up, sent with a token, lock step-ups and
/// sign-ins both, across a restart too.
#[test]
fn wrong_passwords_for_a_name_lock_its_sign_in_but_not_a_sessions_step_up() {
    let rules = with_breakglass();
    let mut env = Env::start_with(&[("targets.toml", TARGETS), ("access.cedar", &rules)], &[]);
    let bob = env.login("bob");
    let alice = env.login("alice");
    let bob_uri = enroll_mfa(&bob);
    let alice_uri = enroll_mfa(&alice);

    // Someone without a login sends five wrong passwords for each name, from another client.
    let stranger = env.server.cli();
    for user in ["bob", "alice"] {
        for _ in 0..5 {
            assert_eq!(sign_in(&stranger, user, "a wrong guess", None).code, 5);
        }
    }
    let signs_in = |env: &Env, user: &str, uri: &str| {
        // Refused before the code is looked at: the code is not used up.
        let out = sign_in(&env.server.cli(), user, PASSWORD, Some(&totp(uri, 1)));
        assert_eq!(out.code, 5, "{user} signed in while locked: {out:?}");
    };
    signs_in(&env, "bob", &bob_uri);
    // bob, signed in, breaks the glass with the right code.
    let bg = |role: &'static str, code: &str| -> Vec<String> {
        [
            "breakglass",
            "web",
            "--role",
            role,
            "--reason",
            "site down",
            "--ttl",
            "30m",
            "--totp",
            code,
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let bob_code = totp(&bob_uri, 1);
    let args = bg("root", &bob_code);
    let v = ok(&bob, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v["state"], "active", "{v}");
    signs_in(&env, "bob", &bob_uri);
    let admin = env.login("admin");
    assert_eq!(
        audit_values(&admin, "auth.user_locked", "/details/kind"),
        ["sign_in", "sign_in"]
    );

    // After a restart, alice's sign-in is locked still, and her step-up is not.
    assert!(env.server.terminate().success());
    env.server.restart();
    signs_in(&env, "alice", &alice_uri);
    signs_in(&env, "bob", &bob_uri);
    let step_up = |code: &str| {
        alice.run(
            &[
                "request", "create", "web", "--role", "admin", "--reason", "fix", "--ttl", "1h",
                "--totp", code,
            ],
            None,
        )
    };
    let stepped_up = step_up(&totp(&alice_uri, 1));
    assert!(stepped_up.success(), "{stepped_up:?}");

    // Wrong codes from her session lock her step-ups, and sign-ins, saying which lock it is.
    let valid: Vec<String> = (0..3).map(|k| totp(&alice_uri, k)).collect();
    let wrong = (0..10u32)
        .map(|k| format!("{:06}", (k * 99_991) % 1_000_000))
        .filter(|c| !valid.contains(c))
        .take(5);
    for code in wrong {
        let out = step_up(&code);
        assert_eq!(out.code, 3, "{out:?}");
        assert!(out.stderr.contains("TOTP code is wrong"), "{out:?}");
    }
    let locked = |env: &Env| {
        let out = step_up(&totp(&alice_uri, 2));
        assert_eq!(out.code, 3, "{out:?}");
        for said in [
            "at step-up",
            "step-ups and sign-ins are refused until",
            "warden user unlock",
        ] {
            assert!(out.stderr.contains(said), "{said}: {out:?}");
        }
        signs_in(env, "alice", &alice_uri);
    };
    locked(&env);
    let admin = env.login("admin");
    assert_eq!(
        audit_values(&admin, "auth.user_locked", "/details/kind"),
        ["sign_in", "sign_in", "step_up"]
    );
    // The sign-in is refused for the lock that ends last: the step-up's.
    let reasons = audit_values(&admin, "auth.login_failed", "/outcome/reason");
    assert!(
        reasons
            .last()
            .unwrap()
            .contains("wrong TOTP codes at step-up"),
        "{reasons:?}"
    );

    // Still so after a restart; and once the events that locked them are archived, read
    // from the archive's record, each lock with its kind.
    assert!(env.server.terminate().success());
    env.server.restart();
    locked(&env);
    signs_in(&env, "bob", &bob_uri);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    ok(&admin, &["audit", "archive", "--before", &now]);
    assert!(audit_events(&admin, "auth.user_locked").is_empty());
    assert!(env.server.terminate().success());
    env.server.restart();
    locked(&env);
    signs_in(&env, "bob", &bob_uri);
    // bob's next code comes with the next 30-second step.
    wait_until("the next TOTP step", Duration::from_secs(35), || {
        totp(&bob_uri, 1) != bob_code
    });
    let args = bg("admin", &totp(&bob_uri, 1));
    let v = ok(&bob, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v["state"], "active", "{v}");
    signs_in(&env, "bob", &bob_uri);
}

/// A password is the same whether its accented letters come composed (NFC, as most keyboards
/// send them) or decomposed (NFD, a letter and a combining mark): set in one form, it signs in
/// typed in the other.
#[test]
fn a_password_signs_in_in_either_unicode_form() {
    let env = Env::start();
    let admin = env.login("admin");
    let composed = "caf\u{E9} cr\u{E8}me br\u{FB}l\u{E9}e";
    let decomposed = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
    for (user, set, typed) in [
        ("bob", composed, decomposed),
        ("alice", decomposed, composed),
    ] {
        let out = admin.run(
            &["user", "set-password", user, "--password-stdin"],
            Some(set),
        );
        assert!(out.success(), "{out:?}");
        let cli = env.server.cli();
        let signed_in = sign_in(&cli, user, typed, None);
        assert!(signed_in.success(), "{user}: {signed_in:?}");
        assert!(sign_in(&cli, user, set, None).success());
    }
    assert!(audit_events(&admin, "auth.login_failed").is_empty());
}

/// Addresses a flood of wrong sign-ins comes from, and the sign-ins each sends at once: its
/// whole budget of failures, so that no throttle cuts the flood short.
const FLOOD_ADDRESSES: u8 = 20;
const FLOOD_EACH: u8 = 20;

/// The answer to a sign-in: its status, body and `Retry-After`, and when it came.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
    retry_after: Option<u64>,
    at: Instant,
}

/// One HTTP/1.1 call from `local`, a loopback address of the test's choosing (every 127.x.y.z
/// is one on Linux), so that the server counts it against that address.
async fn call_from(port: u16, local: std::net::Ipv4Addr, head: &str, body: &str) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((local, 0).into()).unwrap();
    let mut s = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let request = format!(
        "{head} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let at = Instant::now();
    let answer = String::from_utf8_lossy(&raw);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Answer {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        body: body.to_owned(),
        retry_after: head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("retry-after")
                .then(|| value.trim().parse().ok())?
        }),
        at,
    }
}

/// The value of the sample `series` (name and labels, as rendered) at `/metrics`, if there.
fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, text) = call(port, "GET", "/metrics", None, "");
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A flood of wrong sign-ins with made-up names, from many addresses each within its budget of
/// failures, all sent at once, is not all hashed one after another: past what the queue of
/// sign-ins waiting for a hash holds, it is refused at once, unchecked (`503 sign_ins_busy`,
/// with `Retry-After`, counted in a metric and not audited one by one). A real sign-in from
/// another address sent once the queue is full gets a place and its token within one round
/// of the addresses waiting, ahead of most of the flood rather than behind all of it.
#[test]
fn a_real_sign_in_gets_through_a_flood_of_wrong_ones_from_many_addresses() {
    let env = Env::start();
    let port = env.server.port();
    let admin = env.login("admin");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let (flood, real) = runtime.block_on(async move {
        let sign_in = |local, user: String, password: &'static str| {
            let body = sign_in_body(&user, password);
            async move { call_from(port, local, "POST /v1/auth/login", &body).await }
        };
        let flood: Vec<_> = (1..=FLOOD_ADDRESSES)
            .flat_map(|a| (0..FLOOD_EACH).map(move |i| (a, i)))
            .map(|(a, i)| {
                let local = std::net::Ipv4Addr::new(127, 1, a, 1);
                tokio::spawn(sign_in(local, format!("nobody-{a}-{i}"), "Winter2026!"))
            })
            .collect();
        // Sent once the queue is full, which the first refusal shows.
        let full = Instant::now();
        while tokio::task::spawn_blocking(move || metric(port, "warden_sign_ins_shed_total"))
            .await
            .unwrap()
            .unwrap_or(0.0)
            == 0.0
        {
            assert!(
                full.elapsed() < Duration::from_secs(60),
                "no sign-in of the flood was refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let real = tokio::time::timeout(
            Duration::from_secs(60),
            sign_in(
                std::net::Ipv4Addr::new(127, 2, 0, 1),
                "alice".into(),
                PASSWORD,
            ),
        )
        .await
        .expect("the real sign-in was not answered within 60 s");
        let mut answers = Vec::new();
        for f in flood {
            let answer = tokio::time::timeout(Duration::from_secs(120), f)
                .await
                .expect("a sign-in of the flood was not answered within 120 s");
            answers.push(answer.unwrap());
        }
        (answers, real)
    });
    assert_eq!(real.status, 200, "{}", real.body);
    let token: serde_json::Value = serde_json::from_str(&real.body).unwrap();
    let (status, _) = call(port, "GET", "/v1/auth/whoami", token["token"].as_str(), "");
    assert_eq!(status, 200);

    let checked = flood.iter().filter(|a| a.status == 401).count();
    let busy: Vec<&Answer> = flood.iter().filter(|a| a.status == 503).collect();
    assert_eq!(checked + busy.len(), flood.len(), "{flood:?}");
    assert!(!busy.is_empty() && checked > 0, "{checked} checked");
    for a in &busy {
        assert_eq!(error_code(&a.body), "sign_ins_busy", "{a:?}");
        assert!(a.body.contains("sign in again"), "{a:?}");
        assert!(
            a.retry_after.is_some_and(|s| (1..=30).contains(&s)),
            "{a:?}"
        );
    }
    // Most of the flood that was let in was answered after the real sign-in: its turn came
    // within a round of the flood's addresses, not behind every sign-in queued before it.
    let after = flood
        .iter()
        .filter(|a| a.status == 401 && a.at > real.at)
        .count();
    assert!(
        after * 2 >= checked,
        "only {after} of the flood's {checked} checked sign-ins were answered after the real one"
    );
    // Counted, each; audited, only those checked.
    assert_eq!(
        metric(port, "warden_sign_ins_shed_total"),
        Some(busy.len() as f64)
    );
    let failed = audit_events(&admin, "auth.login_failed");
    assert_eq!(failed.len(), checked, "{failed:?}");
}
