//! Database credentials end to end through the real binary, a real PostgreSQL and a real
//! MariaDB: issue → log in with psql/mariadb → only the declared grants work → expiry or revoke
//! → open sessions killed, login refused, account gone; one-time pickup; offboarding;
//! reconciliation of planted orphans; rotate-root; and no secret in the database file or logs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use warden_testkit::{Cli, Mariadb, Postgres};

fn policy(pg: u16, maria: u16) -> (String, String) {
    let targets = format!(
        r#"
[targets.pg]
kind = "postgres"
environment = "test"
[targets.pg.connection]
host = "127.0.0.1"
port = {pg}
database = "app"
[targets.pg.roles.read]
grants = ["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{{{name}}}}"]
[targets.pg.roles.reviewed]
grants = ["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{{{name}}}}"]
[targets.pg.roles.broken]
grants = ["GRANT SELECT ON no_such_table TO {{{{name}}}}"]
[targets.pg.roles.slow]
grants = ["SELECT pg_sleep(2)", "GRANT SELECT ON items TO {{{{name}}}}"]

[targets.maria]
kind = "mariadb"
environment = "test"
[targets.maria.connection]
host = "127.0.0.1"
port = {maria}
database = "app"
[targets.maria.roles.read]
grants = ["GRANT SELECT ON app.* TO {{{{name}}}}"]
"#
    );
    let rules = r#"
@id("db-read")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource in Target::"pg")
when { resource.name == "read" || resource.name == "broken" || resource.name == "slow" };

@id("maria-read")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"maria/read");

@id("db-reviewed")
@approval("peer(sre)")
@max_ttl("1h")
permit (principal, action == Action::"request", resource == Role::"pg/reviewed");
"#;
    (targets, rules.to_owned())
}

/// Creates a grant of the `slow` role as `cli` and runs `act` on it while its account is being
/// made; the grant as created, and what `act` returned.
fn while_issuing<T: Send>(cli: &Cli, act: impl FnOnce(&str) -> T + Send) -> (serde_json::Value, T) {
    std::thread::scope(|s| {
        let issue = s.spawn(|| create(cli, "pg", "slow", &["--ttl", "30m"]));
        let mut in_flight = None;
        wait_until("the issue to be under way", Duration::from_secs(10), || {
            let listed = ok(cli, &["request", "list", "--state", "approved"]);
            in_flight = listed["requests"][0]["id"].as_str().map(str::to_owned);
            in_flight.is_some()
        });
        let acted = act(&in_flight.unwrap_or_default());
        (issue.join().unwrap(), acted)
    })
}

fn pg_role_count(pg: &Postgres, name: &str) -> String {
    pg.admin_query(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"
    ))
}

#[test]
fn postgres_grant_lives_exactly_as_long_as_the_lease() {
    let pg = Postgres::start();
    let (targets, rules) = policy(pg.port(), 1);
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    // A credential the target refuses is not stored.
    let wrong = admin.run(
        &[
            "target",
            "set-credential",
            "pg",
            "--username",
            pg.admin_user(),
            "--password-stdin",
        ],
        Some("not-the-password"),
    );
    assert_eq!(wrong.code, 2, "{wrong:?}");
    assert!(wrong.stderr.contains("nothing was stored"), "{wrong:?}");
    assert!(
        wrong.stderr.contains("password authentication failed")
            && wrong.stderr.contains("connection in targets.toml"),
        "{wrong:?}"
    );
    assert!(!wrong.stderr.contains("not-the-password"), "{wrong:?}");
    // Refused on the record, without the password; so is anyone but an administrator trying.
    let alice = env.login("alice");
    let out = alice.run(&["target", "rotate-root", "pg"], None);
    assert_eq!(out.code, 3, "{out:?}");
    let refused = audit_values(&admin, "request.action_refused", "/details/action");
    assert_eq!(
        refused,
        ["target.set_credential", "target.rotate_root"],
        "{refused:?}"
    );
    // Both are found by their target.
    let about_pg = ok(&admin, &["audit", "search", "--target", "pg"]).to_string();
    assert!(
        about_pg.contains("credential_not_working") && about_pg.contains("target.rotate_root"),
        "{about_pg}"
    );
    let log = ok(&admin, &["audit", "search", "--limit", "10000"]).to_string();
    assert!(!log.contains("not-the-password"), "{log}");
    // Nor a user name the target did not take, which may be a password typed in its place.
    let typed = admin.run(
        &[
            "target",
            "set-credential",
            "pg",
            "--username",
            "Pasted-Pw-9f8e7d!",
            "--password-stdin",
        ],
        Some(pg.admin_password()),
    );
    assert_eq!(typed.code, 2, "{typed:?}");
    assert!(typed.stderr.contains("Pasted-Pw-9f8e7d!"), "{typed:?}");
    let log = ok(&admin, &["audit", "search", "--limit", "10000"]).to_string();
    assert!(!log.contains("Pasted-Pw-9f8e7d!"), "{log}");
    assert!(log.contains("(a value of 17 characters)"), "{log}");
    // A target that cannot be reached (nothing listens at maria's port) is a failure, exit 1,
    // for set-credential and rotate-root alike, and a credential the target refuses is invalid
    // input, exit 2, for both. The failed set-credential is on the record, without the user
    // name given.
    let set = |target: &str, user: &str, password: &str, verify: bool| {
        let mut args = vec![
            "target",
            "set-credential",
            target,
            "--username",
            user,
            "--password-stdin",
        ];
        if !verify {
            args.push("--no-verify");
        }
        admin.run(&args, Some(password))
    };
    let out = set("maria", "Unreached-Name-7", "maria-pw", true);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("nothing was stored: the target could not be reached"),
        "{out:?}"
    );
    let set_events = audit_events(&admin, "target.credential_set");
    let failed = set_events.last().unwrap();
    assert_eq!(failed["target"], "maria", "{failed}");
    assert_eq!(failed["outcome"]["code"], "issuer_failed", "{failed}");
    assert!(!failed.to_string().contains("Unreached-Name-7"), "{failed}");
    assert!(set("maria", "Unreached-Name-7", "maria-pw", false).success());
    let out = admin.run(&["target", "rotate-root", "maria"], None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("could not be reached"), "{out:?}");
    assert!(set("pg", pg.admin_user(), "not-the-pg-password", false).success());
    let out = admin.run(&["target", "rotate-root", "pg"], None);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("password authentication failed"),
        "{out:?}"
    );
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());

    let v = create(&alice, "pg", "read", &["--ttl", "5s"]);
    assert_eq!(v["state"], "active", "{v}");
    // A database account certifies no key: the client keeps none for it.
    let ssh = alice.home().join("ssh");
    let keys: Vec<_> = std::fs::read_dir(&ssh)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(keys.is_empty(), "{keys:?}");
    let user = v["credential"]["username"].as_str().unwrap().to_owned();
    let password = v["secret"]["password"].as_str().unwrap().to_owned();
    assert!(
        v["secret"]["url"]
            .as_str()
            .unwrap()
            .starts_with("postgresql://")
    );

    // The declared grant works, and nothing more.
    let read = pg.psql(&user, &password, "SELECT count(*) FROM items");
    assert!(read.status.success(), "{read:?}");
    let write = pg.psql(&user, &password, "INSERT INTO items VALUES (9, 'x')");
    assert!(!write.status.success(), "writes must be refused");

    // `warden db connect` runs psql with the credential in its environment; the file keeping
    // it, found readable by others, is made private again first, and the user told.
    let kept = alice.home().join("grants").join(format!("{}.json", id(&v)));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = alice.run(
        &["db", "connect", "pg", "--", "-Atc", "SELECT current_user"],
        None,
    );
    assert_eq!(out.stdout.trim(), user, "{out:?}");
    assert!(out.stderr.contains("it is 600 now"), "{out:?}");
    // An address or a service in the caller's environment does not send the login elsewhere.
    let out = std::process::Command::new(BIN)
        .args(["db", "connect", "pg", "--", "-Atc", "SELECT current_user"])
        .env("WARDEN_SERVER", alice.server_url())
        .env("WARDEN_HOME", alice.home())
        .env("PGHOSTADDR", "127.0.0.2")
        .env("PGSERVICE", "elsewhere")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), user, "{out:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // At expiry: the open session is killed, login is refused, the role is gone.
    let mut session = pg.hold_session(&user, &password);
    let ended = session.wait(Duration::from_secs(12));
    assert!(ended.is_some(), "the open session survived expiry");
    wait_until("the role to be dropped", Duration::from_secs(5), || {
        pg_role_count(&pg, &user) == "0"
    });
    assert!(!pg.psql(&user, &password, "SELECT 1").status.success());
    // The account goes first, then the request is marked expired in the same worker pass.
    wait_until("the request to be expired", Duration::from_secs(5), || {
        state(&alice, &id(&v)) == "expired"
    });
    // The client keeps an ended grant's password no longer than it takes to see it ended
    // (`request show`, as above, or `list`), or its next keeping, reading or logout.
    let kept = alice.home().join("grants").join(format!("{}.json", id(&v)));
    assert!(!kept.exists(), "an expired grant's secret is still kept");
    let again = create(&alice, "pg", "read", &["--ttl", "5m"]);
    let grants = alice.home().join("grants");
    assert!(grants.join(format!("{}.json", id(&again))).exists());
    // An extension is a new account, and the client says so, on stderr even with --json:
    // sessions opened under the old one end at its expiry.
    let out = alice.run(
        &["request", "extend", &id(&again), "--ttl", "10m", "--json"],
        None,
    );
    assert!(out.success(), "{out:?}");
    let extension: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(extension["state"], "active", "{extension}");
    let old_end = &again["expires_at"].as_str().unwrap()[..19];
    assert!(
        out.stderr.contains("is a new database account")
            && out.stderr.contains(&format!(
                "connections made under grant {} end at its expiry, {old_end}",
                id(&again)
            ))
            && out.stderr.contains("`warden db connect pg --role read`"),
        "{out:?}"
    );
    // Revoking a grant revokes its extension, and the client forgets both passwords.
    let extension_kept = grants.join(format!("{}.json", id(&extension)));
    assert!(extension_kept.exists());
    ok(&alice, &["request", "revoke", &id(&again)]);
    assert!(!grants.join(format!("{}.json", id(&again))).exists());
    assert!(
        !extension_kept.exists(),
        "a revoked extension's secret is kept"
    );
    // Ended by someone else, it is forgotten once the client sees it so.
    let other = id(&create(&alice, "pg", "read", &["--ttl", "5m"]));
    ok(&admin, &["request", "revoke", &other]);
    assert!(grants.join(format!("{other}.json")).exists());
    ok(&alice, &["request", "list"]);
    assert!(!grants.join(format!("{other}.json")).exists());
    create(&alice, "pg", "read", &["--ttl", "5m"]);
    let out = fails(&alice, &["db", "connect", "pg", "--role", "nope"], 3);
    assert!(out.stderr.contains("as nope; you hold: read"), "{out:?}");
    let actions: Vec<String> = audit_actions(&admin, &id(&v))
        .into_iter()
        .map(|a| a.0)
        .collect();
    assert!(
        actions.contains(&"credential.revoked".to_owned()),
        "{actions:?}"
    );

    // A grant statement that fails after the role was begun: the issue fails, its transaction
    // rolled back, so nothing of it is at the target and nothing is said to be left there.
    let out = alice.run(
        &[
            "request", "create", "pg", "--role", "broken", "--reason", "r", "--ttl", "5m",
        ],
        None,
    );
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr.contains("no_such_table") && out.stderr.contains("which was undone"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("still at"), "{out:?}");
    let failed = audit_events(&admin, "credential.issue_failed");
    let broken = failed.last().unwrap();
    assert_eq!(broken["details"]["cleanup"], "none needed", "{broken}");
    let account = broken["details"]["account"].as_str().unwrap().to_owned();
    assert_eq!(pg_role_count(&pg, &account), "0");

    // Revoked while its account is being made: the revocation waits for the issue, then
    // removes the account it made.
    let (issued, revoked) = while_issuing(&alice, |id| ok(&alice, &["request", "revoke", id]));
    assert_eq!(issued["state"], "active", "{issued}");
    assert_eq!(revoked["state"], "revoked", "{revoked}");
    let account = issued["credential"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until("the account made to go", Duration::from_secs(5), || {
        pg_role_count(&pg, &account) == "0"
    });
    let gone = audit_events(&admin, "credential.revoked");
    let gone = gone
        .iter()
        .find(|e| e["details"]["account"] == account.as_str());
    assert_eq!(gone.unwrap()["details"]["outcome"], "revoked");

    // Cancelled while its account is being made: the cancel waits for the issue, which is on
    // the record, and then finds a grant, which only a revocation ends.
    let (issued, cancelled) =
        while_issuing(&alice, |id| fails(&alice, &["request", "cancel", id], 6));
    assert_eq!(issued["state"], "active", "{issued}");
    assert!(cancelled.stderr.contains("active"), "{cancelled:?}");
    let on_record = audit_events(&admin, "credential.issued")
        .iter()
        .any(|e| e["request_id"] == issued["id"]);
    assert!(on_record, "the account made has no credential.issued event");
    ok(&alice, &["request", "revoke", &id(&issued)]);

    // A reload while an account is being made does not wait for the target: a reload of the
    // same files is done before the grant is stored, which stands.
    let (issued, loaded) = while_issuing(&alice, |_| ok(&admin, &["policy", "reload"]));
    assert_eq!(issued["state"], "active", "{issued}");
    let seq_of = |code: &str, request: Option<&str>| {
        audit_records(&admin, code)
            .iter()
            .rev()
            .find(|r| request.is_none_or(|id| r["event"]["request_id"] == id))
            .map(|r| r["seq"].as_u64().unwrap())
            .unwrap()
    };
    assert!(
        seq_of("policy.loaded", None) < seq_of("grant.activated", Some(&id(&issued))),
        "{loaded}"
    );
    ok(&alice, &["request", "revoke", &id(&issued)]);
    // One that changes the policy withdraws the account made under the old one.
    let changed = rules.replace("@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"maria/read\");", "@max_ttl(\"2h\")\npermit (principal, action == Action::\"request\", resource == Role::\"maria/read\");");
    assert_ne!(changed, rules);
    let withdrawn = std::thread::scope(|s| {
        let issue = s.spawn(|| {
            alice.run(
                &[
                    "--json", "request", "create", "pg", "--role", "slow", "--reason", "r",
                    "--ttl", "30m",
                ],
                None,
            )
        });
        wait_until("the issue to be under way", Duration::from_secs(10), || {
            ok(&alice, &["request", "list", "--state", "approved"])["requests"][0]["id"].is_string()
        });
        write_policy(&env.policy_dir(), &[("access.cedar", &changed)]);
        ok(&admin, &["policy", "reload"]);
        issue.join().unwrap()
    });
    assert!(!withdrawn.success(), "{withdrawn:?}");
    assert!(
        withdrawn.stderr.contains("another policy was loaded"),
        "{withdrawn:?}"
    );
    let failed = audit_events(&admin, "credential.issue_failed");
    let account = failed.last().unwrap()["details"]["account"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until(
        "the withdrawn account to go",
        Duration::from_secs(5),
        || pg_role_count(&pg, &account) == "0",
    );

    // No secret anywhere in Warden's own files or logs.
    let db = std::fs::read(env.server.data_dir().join("warden.db")).unwrap();
    let wal = std::fs::read(env.server.data_dir().join("warden.db-wal")).unwrap_or_default();
    for secret in [password.as_str(), pg.admin_password()] {
        let needle = secret.as_bytes();
        for (name, hay) in [("warden.db", &db), ("warden.db-wal", &wal)] {
            assert!(
                !hay.windows(needle.len()).any(|w| w == needle),
                "a secret is in {name}"
            );
        }
        assert!(
            !env.server.stdout().contains(secret),
            "a secret is in stdout"
        );
        assert!(
            !env.server.stderr().contains(secret),
            "a secret is in stderr"
        );
        let log = ok(&admin, &["audit", "search", "--limit", "10000"]).to_string();
        assert!(!log.contains(secret), "a secret is in the audit log");
    }
}

/// A grant statement that sets the account's password, run by a server logging everything it
/// may: the password is in no line of its log (the database driver's own debug lines would show
/// the statement).
#[test]
fn a_password_set_by_a_statement_is_in_no_log_line() {
    let pg = Postgres::start();
    let (targets, rules) = policy(pg.port(), 1);
    let targets = format!(
        "{targets}\n[targets.pg.roles.pw]\ngrants = [\"ALTER ROLE {{{{name}}}} PASSWORD {{{{password}}}}\"]\n"
    );
    let rules = format!(
        "{rules}\n@id(\"db-pw\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\npermit (principal, action == Action::\"request\", resource == Role::\"pg/pw\");\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_policy(
        &data.join("policy"),
        &[("targets.toml", &targets), ("access.cedar", &rules)],
    );
    let server = warden_testkit::Server::start_in(
        std::path::Path::new(BIN),
        &data,
        &["serve", "--dev"],
        &[("WARDEN_LOG", "trace")],
    );
    let env = Env { server, dir };
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());
    let alice = env.login("alice");
    let v = create(&alice, "pg", "pw", &["--ttl", "5m"]);
    assert_eq!(v["state"], "active", "{v}");
    let user = v["credential"]["username"].as_str().unwrap().to_owned();
    let password = v["secret"]["password"].as_str().unwrap().to_owned();
    // The statement ran (the account logs in with the password it set), and the log is verbose.
    assert!(pg.psql(&user, &password, "SELECT 1").status.success());
    let log = env.server.stderr();
    assert!(
        log.contains("DEBUG") && log.contains("request served"),
        "{log}"
    );
    assert!(
        !log.contains(&password),
        "the grant's password is in the log"
    );
}

/// A private PostgreSQL, a server with the policy above, and its administrator signed in, with
/// the database's admin credential stored.
fn postgres_env() -> (Postgres, Env, Cli) {
    let pg = Postgres::start();
    let (targets, rules) = policy(pg.port(), 1);
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());
    (pg, env, admin)
}

/// A password is handed over to one client: `db connect` connects under a grant whose
/// password this client keeps, though another made elsewhere ends later, picks up a fresh
/// grant's, passes over one handed over elsewhere, and names them all when none is of use here.
#[test]
fn db_connect_uses_a_grant_whose_password_this_client_has() {
    let (_pg, env, _admin) = postgres_env();
    let here = env.login("alice");
    let there = env.login("alice");
    let bob = env.login("bob");
    let connect = |cli: &Cli, picks: &[&str]| {
        let mut args = vec!["db", "connect", "pg"];
        args.extend_from_slice(picks);
        args.extend_from_slice(&["--", "-Atc", "SELECT current_user"]);
        cli.run(&args, None)
    };
    let user = |v: &serde_json::Value| v["credential"]["username"].as_str().unwrap().to_owned();

    let mine = create(&here, "pg", "read", &["--ttl", "20m"]);
    let theirs = create(&there, "pg", "read", &["--ttl", "50m"]);
    let out = connect(&here, &["--role", "read"]);
    assert_eq!(out.stdout.trim(), user(&mine), "{out:?}");
    let out = connect(&there, &[]);
    assert_eq!(out.stdout.trim(), user(&theirs), "{out:?}");
    // Picked by its id, one handed over elsewhere is refused, saying where to connect.
    let out = fails(
        &here,
        &["db", "connect", "pg", "--request", &id(&theirs)],
        6,
    );
    assert!(
        out.stderr
            .contains(&format!("read, {} (ends ", id(&theirs)))
            && out.stderr.contains("`warden db connect pg --request ID`"),
        "{out:?}"
    );
    let out = connect(&here, &["--request", &id(&mine)]);
    assert_eq!(out.stdout.trim(), user(&mine), "{out:?}");

    // A fresh grant's password is picked up at the first connect, passing over one that ends
    // later but was handed over elsewhere, and kept for the next.
    let elsewhere = id(&create(&there, "pg", "reviewed", &["--ttl", "50m"]));
    ok(&bob, &["request", "approve", &elsewhere]);
    ok(&there, &["request", "credential", &elsewhere]);
    let fresh = create(&here, "pg", "reviewed", &["--ttl", "20m"]);
    let fresh = ok(&bob, &["request", "approve", &id(&fresh)]);
    for _ in 0..2 {
        let out = connect(&here, &["--role", "reviewed"]);
        assert_eq!(out.stdout.trim(), user(&fresh), "{out:?}");
    }

    // None kept here and none left to hand over: each is named with its end.
    ok(&here, &["request", "revoke", &id(&mine)]);
    let out = fails(&here, &["db", "connect", "pg", "--role", "read"], 6);
    let end = &theirs["expires_at"].as_str().unwrap()[..19];
    assert!(
        out.stderr.contains(&format!(
            "your grant for pg as read, {} (ends {end}",
            id(&theirs)
        )) && out.stderr.contains("is not kept in this WARDEN_HOME"),
        "{out:?}"
    );
}

/// Runs the real `psql` with connection URL `url` (and nothing of the test's own libpq
/// environment), bounded to 20 s, never prompting.
fn psql_url(url: &str, sql: &str) -> std::process::Output {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["20", "psql", "-X", "-w", url, "-Atc", sql]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.output().unwrap()
}

/// A PostgreSQL target reached at the server's socket directory, beside the TCP one.
fn socket_policy(pg: &Postgres, socket_dir: &str) -> String {
    let (targets, _) = policy(pg.port(), 1);
    format!(
        r#"{targets}
[targets.pgsock]
kind = "postgres"
environment = "test"
[targets.pgsock.connection]
host = "{socket_dir}"
port = {port}
database = "app"
[targets.pgsock.roles.read]
grants = ["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{{{name}}}}"]
"#,
        port = pg.port()
    )
}

/// The URL a database grant hands over logs in, with the real psql, as the grant's account at
/// the target's own server: over TCP, and at a socket directory, whose `/`s, left bare, would
/// make libpq read an empty host and send the login to its default socket (another server,
/// where there is one, given the grant's password).
#[test]
fn a_grants_url_reaches_its_targets_server_over_tcp_and_a_socket_directory() {
    let pg = Postgres::start();
    let socket_dir = pg.admin_query("SHOW unix_socket_directories");
    assert!(socket_dir.starts_with('/'), "{socket_dir}");
    let targets = socket_policy(&pg, &socket_dir);
    let rules = format!(
        "{}\n@id(\"sock-read\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n\
         permit (principal, action == Action::\"request\", resource == Role::\"pgsock/read\");\n",
        policy(1, 1).1
    );
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    for target in ["pg", "pgsock"] {
        set_credential(&admin, target, pg.admin_user(), pg.admin_password());
    }
    let alice = env.login("alice");
    for target in ["pg", "pgsock"] {
        let v = create(&alice, target, "read", &["--ttl", "10m"]);
        assert_eq!(v["state"], "active", "{v}");
        let user = v["credential"]["username"].as_str().unwrap();
        let url = v["secret"]["url"].as_str().unwrap();
        let out = psql_url(
            url,
            "SELECT current_user || ' ' || current_setting('port') || ' ' || \
             (inet_server_addr() IS NULL)::text || ' ' || count(*) FROM items",
        );
        assert!(out.status.success(), "{target}: {url}: {out:?}");
        let over_socket = target == "pgsock";
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{user} {} {over_socket} 1", pg.port()),
            "{target}: {url}"
        );
    }
    // The human output shows the same URL.
    let out = alice.run(
        &[
            "request", "create", "pgsock", "--role", "read", "--reason", "r", "--ttl", "5m",
        ],
        None,
    );
    assert!(out.success(), "{out:?}");
    let url = out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("postgresql://"))
        .unwrap_or_else(|| panic!("no URL in {}", out.stdout));
    let encoded = socket_dir.replace('/', "%2F");
    assert!(
        url.contains(&format!("@{encoded}:{}/app", pg.port())),
        "{url}"
    );
    let out = psql_url(url, "SELECT current_user");
    assert!(out.status.success(), "{url}: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("w_alice_"),
        "{out:?}"
    );
}

/// What `request create` prints to log in with a grant, pasted into bash, hands psql exactly
/// the target's database, though its name holds a space and a quote; so does its URL.
#[test]
fn the_printed_login_lines_survive_a_database_name_with_a_quote_and_a_space() {
    let pg = Postgres::start();
    let odd = "odd db'x";
    pg.admin_query(&format!(
        "CREATE DATABASE \"{odd}\" OWNER {}",
        pg.admin_user()
    ));
    let (targets, rules) = policy(pg.port(), 1);
    let targets = targets.replacen(r#"database = "app""#, r#"database = "odd db'x""#, 1);
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());
    let alice = env.login("alice");
    let out = alice.run(
        &[
            "request", "create", "pg", "--role", "read", "--reason", "r", "--ttl", "5m",
        ],
        None,
    );
    assert!(out.success(), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    let setup: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("export ") || l.starts_with("unset "))
        .collect();
    assert!(lines.contains(&"psql"), "{}", out.stdout);
    let script = format!(
        "set -e; {}; printf '%s\\n' \"$PGDATABASE\"; psql -X -w -Atc 'SELECT current_database()'",
        setup.join("; ")
    );
    let mut bash = std::process::Command::new("timeout");
    bash.args(["20", "bash", "--norc", "-c", &script]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            bash.env_remove(key);
        }
    }
    let login = bash.output().unwrap();
    assert!(login.status.success(), "{script}: {login:?}");
    assert_eq!(
        String::from_utf8_lossy(&login.stdout),
        format!("{odd}\n{odd}\n"),
        "{script}"
    );
    let url = lines
        .iter()
        .find(|l| l.starts_with("postgresql://"))
        .unwrap_or_else(|| panic!("no URL in {}", out.stdout));
    let out = psql_url(url, "SELECT current_database()");
    assert!(out.status.success(), "{url}: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), odd);
}

/// A grant's account is removed at the database it was made at, whatever the policy says of
/// the target since: here its connection moved elsewhere before the grant was revoked.
#[test]
fn an_account_is_removed_where_it_was_made() {
    let (pg, env, admin) = postgres_env();
    let alice = env.login("alice");
    let v = create(&alice, "pg", "read", &["--ttl", "30m"]);
    assert_eq!(v["state"], "active", "{v}");
    let user = v["credential"]["username"].as_str().unwrap().to_owned();
    assert_eq!(pg_role_count(&pg, &user), "1");

    let (moved, _) = policy(warden_testkit::free_port(), 1);
    write_policy(&env.policy_dir(), &[("targets.toml", &moved)]);
    ok(&admin, &["policy", "reload"]);
    ok(&alice, &["request", "revoke", &id(&v)]);
    wait_until(
        "the role made before the move to go",
        Duration::from_secs(10),
        || pg_role_count(&pg, &user) == "0",
    );
}

#[test]
fn pickup_early_revoke_offboarding_and_rotation() {
    let (pg, env, admin) = postgres_env();
    let alice = env.login("alice");
    let bob = env.login("bob");

    // Approved by someone else: the secret waits for the requester, and is handed over once.
    let pending = id(&create(&alice, "pg", "reviewed", &[]));
    let early = fails(&alice, &["request", "credential", &pending], 6);
    assert!(
        early
            .stderr
            .contains("has no credential until it is approved"),
        "{early:?}"
    );
    let approved = ok(&bob, &["request", "approve", &pending]);
    assert_eq!(approved["state"], "active");
    assert!(
        approved.get("secret").is_none(),
        "the approver must not see the secret"
    );
    fails(&bob, &["request", "credential", &pending], 3);
    // Its requester, not waiting when it was approved, is told how to get the password that
    // `request show` does not show; its approver is not, nor the requester once this client
    // keeps the password.
    let shown = |cli: &Cli| {
        let out = cli.run(&["request", "show", &pending], None);
        assert!(out.success(), "{out:?}");
        out.stdout
    };
    let hint = format!(
        "Password: if not yet picked up, get it (shown once) with `warden request credential \
         {pending}`, or connect with `warden db connect pg --request {pending}`"
    );
    let told = shown(&alice);
    assert!(told.contains(&hint), "{told}");
    assert!(!shown(&bob).contains("Password:"));
    let picked = ok(&alice, &["request", "credential", &pending]);
    assert!(!shown(&alice).contains("Password:"));
    let user = picked["credential"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let password = picked["secret"]["password"].as_str().unwrap().to_owned();
    assert!(pg.psql(&user, &password, "SELECT 1").status.success());
    let again = fails(&alice, &["request", "credential", &pending], 6);
    assert!(again.stderr.contains("it is shown once"), "{again:?}");
    // The key made for the request while its kind was unknown is gone once a database account
    // is seen to be its credential.
    assert!(alice.home().join("ssh").is_dir());
    assert!(!alice.home().join("ssh").join(&pending).exists());
    let kept = alice.home().join("grants").join(format!("{pending}.json"));
    assert!(
        kept.exists(),
        "the client keeps the secret for `db connect`"
    );

    // Early revoke takes effect within seconds, and the client forgets the secret.
    let mut session = pg.hold_session(&user, &password);
    ok(&alice, &["request", "revoke", &pending]);
    assert!(!kept.exists(), "a revoked grant's secret is still kept");
    assert!(
        session.wait(Duration::from_secs(5)).is_some(),
        "session survived revoke"
    );
    wait_until("the revoked role to go", Duration::from_secs(5), || {
        pg_role_count(&pg, &user) == "0"
    });
    // A grant that ended before its pickup hands nothing over.
    let unpicked = id(&create(&alice, "pg", "reviewed", &[]));
    ok(&bob, &["request", "approve", &unpicked]);
    ok(&alice, &["request", "revoke", &unpicked]);
    let out = fails(&alice, &["request", "credential", &unpicked], 6);
    assert!(out.stderr.contains("no longer works"), "{out:?}");

    // Offboarding ends everything alice holds and logs her out.
    let a = create(&alice, "pg", "read", &["--ttl", "30m"]);
    let b = create(&alice, "pg", "read", &["--ttl", "30m"]);
    let waiting = id(&create(&alice, "pg", "reviewed", &[]));
    let out = ok(&admin, &["revoke", "--user", "alice", "--all"]);
    assert_eq!(out["requests_ended"], 3);
    for v in [&a, &b] {
        let name = v["credential"]["username"].as_str().unwrap().to_owned();
        wait_until("offboarded roles to go", Duration::from_secs(5), || {
            pg_role_count(&pg, &name) == "0"
        });
    }
    assert_eq!(state(&admin, &waiting), "revoked");
    fails(&alice, &["whoami"], 5);

    // rotate-root: the old admin password stops working; Warden still issues.
    ok(&admin, &["target", "rotate-root", "pg"]);
    let old = pg.psql(pg.admin_user(), pg.admin_password(), "SELECT 1");
    assert!(!old.status.success(), "the old admin password still works");
    // Alice signs in again only with a new password from an administrator.
    let again = env.server.cli();
    let login = |password: &str| {
        again.run(
            &["login", "--user", "alice", "--password-stdin"],
            Some(password),
        )
    };
    assert_eq!(login(PASSWORD).code, 5);
    let reset = admin.run(
        &["user", "set-password", "alice", "--password-stdin"],
        Some("alice is back, 2026"),
    );
    assert!(reset.success(), "{reset:?}");
    assert!(login("alice is back, 2026").success());
    assert_eq!(create(&again, "pg", "read", &[])["state"], "active");
}

/// Grants end on time on record even while their database hangs: an end needs only the store,
/// and the worker's revocations, waiting on that database, hold up no other grant's end. The
/// accounts are removed once the database answers again, and a grant that ended before its
/// pickup hands no secret over.
#[test]
fn grants_end_on_time_while_their_database_hangs() {
    let (pg, env, _admin) = postgres_env();
    let alice = env.login("alice");
    let bob = env.login("bob");
    let v = create(&alice, "pg", "read", &["--ttl", "2s"]);
    assert_eq!(v["state"], "active", "{v}");
    let user = v["credential"]["username"].as_str().unwrap().to_owned();
    let unpicked = id(&create(&alice, "pg", "reviewed", &["--ttl", "5s"]));
    assert_eq!(
        ok(&bob, &["request", "approve", &unpicked])["state"],
        "active"
    );
    pg.pause();
    wait_until("the first grant to expire", Duration::from_secs(6), || {
        state(&alice, &id(&v)) == "expired"
    });
    // The worker's revocation of the first grant's account now waits on the hung database.
    wait_until("the second grant to expire", Duration::from_secs(7), || {
        state(&alice, &unpicked) == "expired"
    });
    let out = fails(&alice, &["request", "credential", &unpicked], 6);
    assert!(out.stderr.contains("not handed over"), "{out:?}");
    pg.resume();
    wait_until("the roles to go", Duration::from_secs(40), || {
        pg_role_count(&pg, &user) == "0"
    });
}

/// A TCP relay to a database that can be made to hang (it then passes nothing on, either way,
/// as a database that stopped answering) or go down (it cuts every connection and closes each
/// new one at once, as a database that is not running).
struct Relay {
    port: u16,
    hung: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    /// Both ends of every connection relayed, to cut when it goes down.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            hung: Arc::default(),
            down: Arc::default(),
            open: Arc::default(),
        };
        let (held, down, open) = (relay.hung.clone(), relay.down.clone(), relay.open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if down.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                open.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let ways = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ];
                for (from, into) in ways {
                    let held = held.clone();
                    std::thread::spawn(move || pass_on(from, into, &held));
                }
            }
        });
        relay
    }

    fn hang(&self, hung: bool) {
        self.hung.store(hung, Ordering::SeqCst);
    }

    fn go_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Passes what `from` sends on to `into` until either end closes, holding it while `held`.
fn pass_on(mut from: TcpStream, mut into: TcpStream, held: &AtomicBool) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        // Bounded: the test lets it go within a minute.
        let until = Instant::now() + Duration::from_secs(60);
        while held.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = into.shutdown(std::net::Shutdown::Both);
}

/// The database a relay leads to.
enum Behind<'a> {
    Postgres(&'a Postgres),
    Mariadb(&'a Mariadb),
}

impl Behind<'_> {
    /// Its target's kind, and the statement its role `read` grants.
    fn kind_and_grant(&self) -> (&'static str, &'static str) {
        match self {
            Behind::Postgres(_) => (
                "postgres",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}",
            ),
            Behind::Mariadb(_) => ("mariadb", "GRANT SELECT ON app.* TO {{name}}"),
        }
    }

    fn admin(&self) -> (&str, &str) {
        match self {
            Behind::Postgres(db) => (db.admin_user(), db.admin_password()),
            Behind::Mariadb(db) => (db.admin_user(), db.admin_password()),
        }
    }
}

/// A server with two targets: `pg`, a private PostgreSQL, and `relayed`, the database `behind`
/// `relay`; and its administrator signed in, with both credentials stored.
fn relayed_env(pg: &Postgres, relay: &Relay, behind: Behind<'_>) -> (Env, Cli) {
    let (targets, rules) = policy(pg.port(), 1);
    let (kind, grant) = behind.kind_and_grant();
    let targets = format!(
        "{targets}\n[targets.relayed]\nkind = \"{kind}\"\nenvironment = \"test\"\n\
         [targets.relayed.connection]\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"app\"\n\
         [targets.relayed.roles.read]\ngrants = [\"{grant}\"]\n",
        relay.port
    );
    let rules = format!(
        "{rules}\n@id(\"relayed-read\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n\
         permit (principal, action == Action::\"request\", resource == Role::\"relayed/read\");\n\
         @id(\"relayed-breakglass\")\n@max_ttl(\"1h\")\n\
         permit (principal in Group::\"sre\", action == Action::\"breakglass\", resource == Role::\"relayed/read\");\n"
    );
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());
    let (user, password) = behind.admin();
    set_credential(&admin, "relayed", user, password);
    (env, admin)
}

/// A database that hangs delays only its own revocations: another database's accounts are
/// dropped on time meanwhile.
#[test]
fn a_hung_database_delays_no_other_databases_revocations() {
    let pg = Postgres::start();
    let relay = Relay::start(pg.port());
    let (env, admin) = relayed_env(&pg, &relay, Behind::Postgres(&pg));
    let alice = env.login("alice");
    let hung = create(&alice, "relayed", "read", &["--ttl", "2s"]);
    assert_eq!(hung["state"], "active", "{hung}");
    let other = create(&alice, "pg", "read", &["--ttl", "4s"]);
    assert_eq!(other["state"], "active", "{other}");
    let user = other["credential"]["username"].as_str().unwrap().to_owned();
    relay.hang(true);
    wait_until(
        "the hung database's grant to end",
        Duration::from_secs(6),
        || state(&alice, &id(&hung)) == "expired",
    );
    // Its account's drop now waits on the hung database, and gives up as soon as a new
    // connection would: its kept connection's check is bounded like a connect.
    wait_until(
        "the other database's account to go",
        Duration::from_secs(8),
        || pg_role_count(&pg, &user) == "0",
    );
    wait_until(
        "the hung database's revocation to fail in time",
        Duration::from_secs(10),
        || {
            audit_events(&admin, "credential.revoke_failed")
                .iter()
                .any(|e| e["request_id"] == id(&hung).as_str())
        },
    );
    relay.hang(false);
}

/// How many accounts of `user`'s grants are at `pg`.
fn accounts_of(pg: &Postgres, user: &str) -> usize {
    pg.admin_query(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'w\\_{user}\\_%'"
    ))
    .parse()
    .unwrap()
}

/// Many accounts to remove at a database that hangs hold up no other database's removals:
/// each target gets its own share of the revocations under way, and due leases are read
/// target by target, so an early revoke or an expiry elsewhere is not queued behind them.
#[test]
fn many_accounts_at_a_hung_database_delay_no_other_databases_removals() {
    let pg = Postgres::start();
    let maria = Mariadb::start();
    let relay = Relay::start(maria.port());
    let (env, admin) = relayed_env(&pg, &relay, Behind::Mariadb(&maria));
    let bob = env.login("bob");
    for _ in 0..40 {
        assert_eq!(create(&bob, "relayed", "read", &[])["state"], "active");
    }
    let bobs = || -> usize {
        maria
            .admin_query("SELECT count(*) FROM mysql.user WHERE User LIKE 'w\\_bob\\_%'")
            .parse()
            .unwrap()
    };
    let alice = env.login("alice");
    let early = create(&alice, "pg", "read", &[]);
    let expiring = create(&alice, "pg", "read", &["--ttl", "6s"]);
    let expiry = Instant::now() + Duration::from_secs(6);
    relay.hang(true);
    assert_eq!(
        ok(&admin, &["revoke", "--user", "bob", "--all"])["requests_ended"],
        40
    );
    // Bob's 40 accounts are all due, and each attempt at the hung database takes its 5 s.
    ok(&alice, &["request", "revoke", &id(&early)]);
    let user = early["credential"]["username"].as_str().unwrap().to_owned();
    wait_until(
        "the early revoke's account to go",
        Duration::from_secs(3),
        || pg_role_count(&pg, &user) == "0",
    );
    let user = expiring["credential"]["username"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(expiry.saturating_duration_since(Instant::now()));
    wait_until(
        "the expired grant's account to go",
        Duration::from_secs(3),
        || pg_role_count(&pg, &user) == "0",
    );
    assert_eq!(bobs(), 40, "the hung database dropped some");
    relay.hang(false);
    wait_until(
        "the hung database's accounts to go once it answers",
        Duration::from_secs(15),
        || bobs() == 0,
    );
}

/// The removal of each of `cli`'s grants `ids`, as `request show` has it.
fn removals(cli: &Cli, ids: &[String]) -> Vec<serde_json::Value> {
    ids.iter()
        .map(|g| ok(cli, &["request", "show", g])["revocation"].clone())
        .collect()
}

/// Waits until every grant of `ids` has failed to remove its account four times (backing
/// off 2, 4, 8, then 16 s).
fn wait_failed_four_times(cli: &Cli, ids: &[String]) {
    wait_until(
        "every removal to have failed four times",
        Duration::from_secs(30),
        || {
            removals(cli, ids)
                .iter()
                .all(|r| r["attempts"].as_u64() >= Some(4))
        },
    );
}

/// Once a database that was down answers again, the accounts it could not drop go at once, not
/// when each one's backoff ends; until then `request show` and `request revoke` say that each
/// account is still there, and why.
#[test]
fn accounts_go_as_soon_as_their_database_is_back_and_are_shown_until_then() {
    let pg = Postgres::start();
    let relay = Relay::start(pg.port());
    let (env, admin) = relayed_env(&pg, &relay, Behind::Postgres(&pg));
    let bob = env.login("bob");
    let grants: Vec<serde_json::Value> = (0..6)
        .map(|_| create(&bob, "relayed", "read", &[]))
        .collect();
    let ids: Vec<String> = grants.iter().map(id).collect();
    let alice = env.login("alice");
    let revoked = create(&alice, "relayed", "read", &[]);
    let active = create(&alice, "pg", "read", &[]);
    relay.go_down(true);
    ok(&admin, &["revoke", "--user", "bob", "--all"]);

    // Revoked, the grant has ended; its account has not, and the answer says so.
    let out = alice.run(&["request", "revoke", &id(&revoked)], None);
    assert!(out.success(), "{out:?}");
    let account = revoked["credential"]["username"].as_str().unwrap();
    assert!(out.stdout.contains("revoked"), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("{account} is still at relayed")),
        "{out:?}"
    );
    assert!(
        ok(&alice, &["request", "show", &id(&active)])
            .get("revocation")
            .is_none(),
        "an active grant's account is meant to be there"
    );

    // Each of bob's removals fails fast, and backs off: 2, 4, 8, then 16 s.
    wait_failed_four_times(&admin, &ids);
    for (r, grant) in removals(&admin, &ids).iter().zip(&grants) {
        assert_eq!(r["state"], "failing", "{r}");
        assert_eq!(r["account"], grant["credential"]["username"], "{r}");
        assert!(
            r["last_error"]
                .as_str()
                .unwrap()
                .contains("could not be reached"),
            "{r}"
        );
        assert!(r["next_attempt_at"].is_string(), "{r}");
        assert!(r["removed_at"].is_null(), "{r}");
    }
    let shown = admin.run(&["request", "show", &ids[0]], None);
    let account = grants[0]["credential"]["username"].as_str().unwrap();
    assert!(
        shown.stdout.contains(&format!(
            "{account} is still at relayed; Warden keeps trying to remove it"
        )),
        "{shown:?}"
    );
    let password = grants[0]["secret"]["password"].as_str().unwrap();
    let as_json = ok(&admin, &["request", "show", &ids[0]]).to_string();
    assert!(!shown.stdout.contains(password) && !as_json.contains(password));

    relay.go_down(false);
    wait_until(
        "the accounts to go once the database is back",
        Duration::from_secs(4),
        || accounts_of(&pg, "bob") == 0 && pg_role_count(&pg, account) == "0",
    );
    wait_until("the removals to be done", Duration::from_secs(2), || {
        removals(&admin, &ids).iter().all(|r| r["state"] == "done")
    });
    let done = &removals(&admin, &ids)[0];
    assert!(
        done["removed_at"].is_string() && done["last_error"].is_null(),
        "{done}"
    );
    let shown = admin.run(&["request", "show", &ids[0]], None);
    assert!(
        shown
            .stdout
            .contains(&format!("{account} removed from relayed at")),
        "{shown:?}"
    );
}

/// A break-glass grant's postmortem is closed only once the account made for it is gone from
/// its database: while Warden cannot reach the database to drop it, the access could still be
/// used, and a review closed then would not cover it.
#[test]
fn a_postmortem_waits_for_the_break_glass_account_to_be_gone() {
    let pg = Postgres::start();
    let relay = Relay::start(pg.port());
    let (env, admin) = relayed_env(&pg, &relay, Behind::Postgres(&pg));
    let (bob, sam) = (env.login("bob"), env.login("sam"));
    let code = totp(&enroll_mfa(&bob), 1);
    let broke = ok(
        &bob,
        &[
            "breakglass",
            "relayed",
            "--role",
            "read",
            "--reason",
            "db fire",
            "--ttl",
            "30m",
            "--totp",
            &code,
        ],
    );
    let rid = id(&broke);
    let account = broke["credential"]["username"].as_str().unwrap().to_owned();
    relay.go_down(true);
    ok(&sam, &["request", "revoke", &rid]);

    let close = [
        "postmortem",
        "close",
        &rid,
        "--link",
        "https://wiki/pm/9",
        "--note",
        "reviewed",
    ];
    let out = fails(&sam, &close, 6);
    assert!(
        out.stderr.contains(&format!(
            "{account} of break-glass grant {rid} is still at relayed"
        )),
        "{out:?}"
    );
    let refused = audit_records(&admin, "postmortem.close_refused");
    assert_eq!(
        refused[0]["event"]["outcome"]["code"], "account_at_target",
        "{refused:?}"
    );

    relay.go_down(false);
    wait_until("the account to go", Duration::from_secs(10), || {
        ok(&sam, &["request", "show", &rid])["revocation"]["state"] == "done"
    });
    assert_eq!(pg_role_count(&pg, &account), "0");
    assert_eq!(ok(&sam, &close)["closed_by"], "sam");
}

/// A database that comes back while Warden is down has its accounts removed as soon as Warden
/// is up again: what each removal waits for is stored, not only its backoff.
#[test]
fn accounts_go_as_soon_as_warden_restarts_after_their_database_came_back() {
    let pg = Postgres::start();
    let relay = Relay::start(pg.port());
    let (mut env, admin) = relayed_env(&pg, &relay, Behind::Postgres(&pg));
    let bob = env.login("bob");
    let ids: Vec<String> = (0..2)
        .map(|_| id(&create(&bob, "relayed", "read", &[])))
        .collect();
    relay.go_down(true);
    ok(&admin, &["revoke", "--user", "bob", "--all"]);
    wait_failed_four_times(&admin, &ids);
    env.server.kill_hard();
    relay.go_down(false);
    env.server.restart();
    wait_until(
        "the accounts to go once Warden is back",
        Duration::from_secs(4),
        || accounts_of(&pg, "bob") == 0,
    );
}

/// A crash while the target takes the new admin password leaves both stored; the next use logs
/// in with the one the target took and keeps it, so Warden never locks itself out.
#[test]
fn an_interrupted_rotation_is_settled_at_the_next_use() {
    let pg = Postgres::start();
    let (targets, rules) = policy(pg.port(), 1);
    let mut env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());

    std::thread::scope(|s| {
        // Holds the administrator's catalog row, so the rotation's ALTER ROLE waits for it.
        let holder = s.spawn(|| {
            pg.admin_query(&format!(
                "BEGIN; ALTER ROLE {} CONNECTION LIMIT -1; SELECT pg_sleep(3); ROLLBACK",
                pg.admin_user()
            ))
        });
        std::thread::sleep(Duration::from_millis(500));
        let rotating = s.spawn(|| admin.run(&["target", "rotate-root", "pg"], None));
        wait_until(
            "the rotation to wait at the target",
            Duration::from_secs(10),
            || {
                pg.admin_query(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = 'warden' AND wait_event_type = 'Lock'",
                ) != "0"
            },
        );
        env.server.kill_hard();
        let _ = rotating.join().unwrap();
        holder.join().unwrap();
    });
    // The orphaned ALTER ROLE went through once the row was free.
    wait_until(
        "the target to take the new password",
        Duration::from_secs(10),
        || {
            !pg.psql(pg.admin_user(), pg.admin_password(), "SELECT 1")
                .status
                .success()
        },
    );

    env.server.restart();
    let alice = env.login("alice");
    assert_eq!(create(&alice, "pg", "read", &[])["state"], "active");
    let admin = env.login("admin");
    let settled = audit_events(&admin, "target.root_rotated");
    let settled = settled.last().unwrap();
    assert_eq!(settled["details"]["kept"], "new", "{settled}");
}

#[test]
fn reconciliation_removes_planted_orphans_and_nothing_else() {
    let pg = Postgres::start();
    let (targets, rules) = policy(pg.port(), 1);
    // A second target on the same server: each reconciles the accounts of both.
    let targets = format!(
        "{targets}\n[targets.pg2]\nkind = \"postgres\"\nenvironment = \"test\"\n\
         [targets.pg2.connection]\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"app\"\n\
         [targets.pg2.roles.read]\ngrants = [\"GRANT SELECT ON items TO {{{{name}}}}\"]\n",
        pg.port()
    );
    let rules = format!(
        "{rules}\n@id(\"pg2-read\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n\
         permit (principal, action == Action::\"request\", resource == Role::\"pg2/read\");\n"
    );
    let mut env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());
    set_credential(&admin, "pg2", pg.admin_user(), pg.admin_password());
    let alice = env.login("alice");
    let live = create(&alice, "pg", "read", &["--ttl", "30m"]);
    let live_user = live["credential"]["username"].as_str().unwrap().to_owned();
    let other = create(&alice, "pg2", "read", &["--ttl", "30m"]);
    let other_user = other["credential"]["username"].as_str().unwrap().to_owned();
    let other_password = other["secret"]["password"].as_str().unwrap().to_owned();

    // An account that looks like Warden's (prefix and marker) but has no lease, one with the
    // prefix but no marker, and a plain human account.
    pg.admin_query(
        "CREATE ROLE w_ghost_0123456789ab LOGIN; \
         COMMENT ON ROLE w_ghost_0123456789ab IS 'warden grant 00000000-0000-7000-8000-0123456789ab'; \
         CREATE ROLE w_human LOGIN; CREATE ROLE dba_human LOGIN",
    );
    // Reconciliation runs at start-up (and every minute).
    env.server.terminate();
    env.server.restart();
    wait_until("the orphan to be removed", Duration::from_secs(10), || {
        pg_role_count(&pg, "w_ghost_0123456789ab") == "0"
    });
    assert_eq!(pg_role_count(&pg, "w_human"), "1");
    assert_eq!(pg_role_count(&pg, "dba_human"), "1");
    assert_eq!(
        pg_role_count(&pg, &live_user),
        "1",
        "a live grant's account was touched"
    );
    let login = pg.psql(&other_user, &other_password, "SELECT count(*) FROM items");
    assert!(
        login.status.success(),
        "the other target's live grant was touched: {login:?}"
    );
    let admin = env.login("admin");
    let log = ok(
        &admin,
        &["audit", "search", "--code", "credential.orphan_removed"],
    );
    assert_eq!(log["events"].as_array().unwrap().len(), 1, "{log}");
}

#[test]
fn mariadb_grant_has_no_valid_until_so_the_lease_enforces_it() {
    let maria = Mariadb::start();
    let (targets, rules) = policy(1, maria.port());
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    // An administrator that logs in but lacks a privilege is told what to grant, not to check
    // the connection that worked.
    maria.admin_query(
        "CREATE USER 'np'@'%' IDENTIFIED BY 'np-password-1'; GRANT ALL ON app.* TO 'np'@'%'",
    );
    let out = admin.run(
        &[
            "target",
            "set-credential",
            "maria",
            "--username",
            "np",
            "--password-stdin",
        ],
        Some("np-password-1"),
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("lacks PROCESS"), "{out:?}");
    assert!(
        !out.stderr.contains("Check that the target's connection"),
        "{out:?}"
    );
    // An administrator whose name holds a quote and a backslash: told a GRANT that names it
    // right in a client's default sql_mode (where a backslash escapes), and once granted it,
    // taken; everything below, rotation included, runs as it.
    let (odd, odd_password) = ("o'ad\\min", "odd-admin-pw");
    let odd_sql = "'o''ad\\\\min'@'%'";
    maria.admin_query(&format!(
        "CREATE USER {odd_sql} IDENTIFIED BY '{odd_password}'; \
         GRANT CREATE USER ON *.* TO {odd_sql}; GRANT SELECT ON mysql.user TO {odd_sql}; \
         GRANT SELECT ON app.* TO {odd_sql} WITH GRANT OPTION"
    ));
    let set_odd = [
        "target",
        "set-credential",
        "maria",
        "--username",
        odd,
        "--password-stdin",
    ];
    let out = admin.run(&set_odd, Some(odd_password));
    assert_eq!(out.code, 2, "{out:?}");
    let suggested = out.stderr.find("GRANT PROCESS").map(|at| &out.stderr[at..]);
    let suggested = suggested.and_then(|s| s.split_once("`@`%`")).map(|s| s.0);
    assert_eq!(
        suggested,
        Some("GRANT PROCESS, CONNECTION ADMIN ON *.* TO `o'ad\\min"),
        "{out:?}"
    );
    maria.admin_query(&format!("{}`@`%`", suggested.unwrap_or_default()));
    set_credential(&admin, "maria", odd, odd_password);
    let alice = env.login("alice");

    let v = create(&alice, "maria", "read", &["--ttl", "4s"]);
    assert_eq!(v["state"], "active", "{v}");
    let user = v["credential"]["username"].as_str().unwrap().to_owned();
    let password = v["secret"]["password"].as_str().unwrap().to_owned();
    let read = maria.client(&user, &password, "SELECT count(*) FROM app.items");
    assert!(read.status.success(), "{read:?}");
    // `warden db connect` logs in where the grant says, whatever the caller's option file
    // (`~/.my.cnf`) says of the port or the password.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".my.cnf"),
        "[client]\nport=1\npassword=not-the-grant's\nhost=127.0.0.2\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "db",
            "connect",
            "maria",
            "--",
            "-N",
            "-e",
            "SELECT current_user()",
        ])
        .env("WARDEN_SERVER", alice.server_url())
        .env("WARDEN_HOME", alice.home())
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&user),
        "{out:?}"
    );
    assert!(
        !maria
            .client(&user, &password, "INSERT INTO app.items VALUES (9, 'x')")
            .status
            .success()
    );

    let mut session = maria.hold_session(&user, &password);
    assert!(
        session.wait(Duration::from_secs(12)).is_some(),
        "the open session survived expiry"
    );
    let count = || {
        maria.admin_query(&format!(
            "SELECT count(*) FROM mysql.user WHERE User = '{user}'"
        ))
    };
    wait_until("the user to be dropped", Duration::from_secs(5), || {
        count() == "0"
    });
    assert!(!maria.client(&user, &password, "SELECT 1").status.success());
    // The account goes first, then the request is marked expired in the same worker pass.
    wait_until("the request to be expired", Duration::from_secs(5), || {
        state(&alice, &id(&v)) == "expired"
    });

    // What the human output says to run logs in as the grant's account.
    let out = alice.run(
        &[
            "request", "create", "maria", "--role", "read", "--reason", "r", "--ttl", "5m",
        ],
        None,
    );
    assert!(out.success(), "{out:?}");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("export ") || l.starts_with("mariadb "))
        .collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    let script = format!(
        "{}; {} -N -e 'SELECT CURRENT_USER()'",
        lines[..3].join("; "),
        lines[3]
    );
    let login = std::process::Command::new("timeout")
        .args(["20", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(login.status.success(), "{login:?}");
    let account = String::from_utf8_lossy(&login.stdout);
    assert!(account.trim().starts_with("w_alice_"), "{account}");
    assert!(maria.client(odd, odd_password, "SELECT 1").status.success());
    ok(&admin, &["target", "rotate-root", "maria"]);
    assert!(!maria.client(odd, odd_password, "SELECT 1").status.success());
    let v = create(&alice, "maria", "read", &["--ttl", "5m"]);
    assert_eq!(v["state"], "active", "{v}");
    ok(&alice, &["request", "revoke", &id(&v)]);
}

/// Warden records no database session: a request whose rule demands a recording at a
/// PostgreSQL target is refused, on the record, rather than granted unrecorded, and
/// `policy check` warns of the rule; break-glass there is still granted, and says everywhere
/// that its sessions are not recorded.
#[test]
fn database_access_is_never_said_to_be_recorded() {
    let pg = Postgres::start();
    let (targets, rules) = policy(pg.port(), 1);
    let targets = format!(
        "{targets}\n[targets.pg.roles.recorded]\n\
         grants = [\"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{{{name}}}}\"]\n"
    );
    let rules = format!(
        "{rules}\n@id(\"pg-recorded\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n@recording(\"full\")\n\
         permit (principal, action == Action::\"request\", resource == Role::\"pg/recorded\");\n\
         @id(\"pg-breakglass\")\n@max_ttl(\"1h\")\n\
         permit (principal in Group::\"sre\", action == Action::\"breakglass\", resource == Role::\"pg/read\");\n"
    );
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());

    let alice = env.login("alice");
    let out = fails(
        &alice,
        &[
            "request", "create", "pg", "--role", "recorded", "--reason", "r", "--ttl", "30m",
        ],
        3,
    );
    for part in [
        "pg-recorded: it demands @recording(\"full\") for role recorded of target pg",
        "database sessions are not recorded by Warden",
        "scope the rule to SSH targets",
    ] {
        assert!(out.stderr.contains(part), "{part:?}: {out:?}");
    }
    assert_eq!(accounts_of(&pg, "alice"), 0);
    let refused = audit_events(&admin, "request.refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        refused[0]["outcome"]["code"], "not_permitted",
        "{refused:?}"
    );
    assert_eq!(
        refused[0]["details"]["rules"][0], "pg-recorded",
        "{refused:?}"
    );
    let checked = admin.run(
        &["policy", "check", env.policy_dir().to_str().unwrap()],
        None,
    );
    assert!(checked.success(), "{checked:?}");
    assert!(
        checked.stderr.contains("warning: permit pg-recorded: it demands @recording(\"full\") for role recorded of target pg"),
        "{checked:?}"
    );

    let bob = env.login("bob");
    let code = totp(&enroll_mfa(&bob), 1);
    let out = bob.run(
        &[
            "breakglass",
            "pg",
            "--role",
            "read",
            "--reason",
            "db fire",
            "--ttl",
            "30m",
            "--totp",
            &code,
        ],
        None,
    );
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains("BREAK-GLASS: granted at once; sessions at this target are not recorded (Warden records SSH sessions only); "),
        "{out:?}"
    );
    assert!(!out.stdout.contains("recorded in full"), "{out:?}");
    let rid = out
        .stdout
        .split("postmortem ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .to_owned();
    let shown = ok(&bob, &["request", "show", &rid]);
    assert_eq!(shown["state"], "active", "{shown}");
    assert_eq!(shown["recording"], "metadata", "{shown}");
    let human = bob.run(&["request", "show", &rid], None);
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.starts_with("recording") && l.trim_end().ends_with("metadata")),
        "{human:?}"
    );
    let activated = audit_events(&admin, "breakglass.activated");
    assert_eq!(
        activated[0]["details"]["recording"], "metadata",
        "{activated:?}"
    );
    let explained = ok(
        &bob,
        &["policy", "explain", "pg", "--role", "read", "--breakglass"],
    );
    assert_eq!(
        explained["decision"]["recording"], "metadata",
        "{explained}"
    );
    ok(&bob, &["request", "revoke", &rid]);
}
