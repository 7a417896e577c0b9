//! An interrupted `rotate-root` never locks Warden out of its target: a real PostgreSQL and a
//! real MariaDB behind a relay that holds the password change past Warden's 30 s, then
//! delivers it, as a network partition does once the kernel retransmits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use warden_testkit::{Cli, Mariadb, Postgres, StallingRelay};

/// Longer than the 30 s Warden gives a call to a target, as in a partition that outlasts it.
const HOLD: Duration = Duration::from_secs(35);

/// The database behind the relay.
enum Db {
    Postgres(Postgres),
    Mariadb(Mariadb),
}

impl Db {
    fn port(&self) -> u16 {
        match self {
            Db::Postgres(db) => db.port(),
            Db::Mariadb(db) => db.port(),
        }
    }

    fn admin(&self) -> (&str, &str) {
        match self {
            Db::Postgres(db) => (db.admin_user(), db.admin_password()),
            Db::Mariadb(db) => (db.admin_user(), db.admin_password()),
        }
    }

    /// The target's kind, its role's grant statement, and what its password change starts
    /// with on the wire.
    fn kind_grant_and_change(&self) -> (&'static str, &'static str, &'static [u8]) {
        match self {
            Db::Postgres(_) => (
                "postgres",
                "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}",
                b"ALTER ROLE",
            ),
            Db::Mariadb(_) => (
                "mariadb",
                "GRANT SELECT ON app.* TO {{name}}",
                b"ALTER USER",
            ),
        }
    }

    /// Whether a new login with `password` as the administrator works, with the database's own
    /// client, straight to it.
    fn takes(&self, password: &str) -> bool {
        let (user, _) = self.admin();
        match self {
            Db::Postgres(db) => db.psql(user, password, "SELECT 1").status.success(),
            Db::Mariadb(db) => db.client(user, password, "SELECT 1").status.success(),
        }
    }

    /// Ends every session of the administrator: Warden's kept connections with them, so its
    /// next call logs in anew with the password it stores.
    fn end_admin_sessions(&self) {
        let (user, _) = self.admin();
        match self {
            Db::Postgres(db) => {
                db.admin_query(&format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE usename = '{user}'"
                ));
            }
            Db::Mariadb(db) => {
                let ids = db.admin_query(&format!(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
                ));
                for id in ids.lines().filter(|l| !l.trim().is_empty()) {
                    db.admin_query(&format!("KILL {id}"));
                }
            }
        }
    }
}

/// A server whose target `relayed` is `db` behind `relay`, with a role `read` anyone gets at
/// once, and its administrator signed in with the target's credential stored.
fn env(db: &Db, relay: &StallingRelay) -> (Env, Cli) {
    let (kind, grant, _) = db.kind_grant_and_change();
    let targets = format!(
        "[targets.relayed]\nkind = \"{kind}\"\nenvironment = \"test\"\n\
         [targets.relayed.connection]\nhost = \"127.0.0.1\"\nport = {}\ndatabase = \"app\"\n\
         [targets.relayed.roles.read]\ngrants = [\"{grant}\"]\n",
        relay.port()
    );
    let rules = "@id(\"relayed-read\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n\
         permit (principal, action == Action::\"request\", resource == Role::\"relayed/read\");\n";
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", rules)], &[]);
    let admin = env.login("admin");
    let (user, password) = db.admin();
    set_credential(&admin, "relayed", user, password);
    (env, admin)
}

/// What `warden target rotate-root relayed` said, run as `cli`.
#[derive(Debug)]
struct Said {
    code: Option<i32>,
    stderr: String,
}

/// `warden target rotate-root relayed` as `cli`, given a minute: longer than the 30 s the
/// testkit gives a command, which is what Warden waits for the target before it gives up.
fn rotate_root_at_length(cli: &Cli) -> Said {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "60", BIN, "target", "rotate-root", "relayed"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WARDEN_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .env("WARDEN_SERVER", cli.server_url())
        .env("WARDEN_HOME", cli.home())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Said {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `warden target rotate-root` whose password change the network holds past Warden's 30 s,
/// then delivers: the next use, coming before it lands, finishes the rotation (logged in with
/// the old password, it sets the new one) instead of going back to the old password, so the
/// late change sets the same password again and Warden keeps working at the target.
fn an_interrupted_rotation_is_finished_not_undone(db: Db) {
    let (_, _, change) = db.kind_grant_and_change();
    let relay = StallingRelay::start(db.port(), change, HOLD);
    let (env, admin) = env(&db, &relay);
    let (_, old_password) = db.admin();
    let alice = env.login("alice");
    // Warden now keeps connections logged in with the old password.
    assert_eq!(create(&alice, "relayed", "read", &[])["state"], "active");

    relay.stall(true);
    let started = Instant::now();
    let out = rotate_root_at_length(&admin);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("no answer within 30 s")
            && out
                .stderr
                .contains("keeps both and finishes the rotation at the next use"),
        "{out:?}"
    );
    assert_eq!(relay.held(), 1, "the password change is held");
    relay.stall(false);

    // The next use, before the held change lands, finds the new password refused and the old
    // one taken.
    assert_eq!(create(&alice, "relayed", "read", &[])["state"], "active");
    assert_eq!(
        relay.delivered(),
        0,
        "the held change landed {:?} after the rotation began, before the rotation was settled: this test proves nothing then",
        started.elapsed()
    );
    assert!(!db.takes(old_password), "the rotation was finished");

    wait_until(
        "the held password change to land",
        HOLD + Duration::from_secs(5),
        || relay.delivered() == 1,
    );
    // Time for the server to carry it out.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!db.takes(old_password));
    // A new login with the password Warden stores works: it issues, and rotates again.
    db.end_admin_sessions();
    assert_eq!(create(&alice, "relayed", "read", &[])["state"], "active");
    ok(&admin, &["target", "rotate-root", "relayed"]);
    assert_eq!(create(&alice, "relayed", "read", &[])["state"], "active");

    let rotations = audit_events(&admin, "target.root_rotated");
    let settled: Vec<_> = rotations
        .iter()
        .filter(|e| e["details"]["settled"] == "an interrupted rotation")
        .collect();
    let [settled] = settled.as_slice() else {
        panic!("one settlement: {rotations:?}");
    };
    assert_eq!(settled["details"]["kept"], "new", "{settled}");
    assert_eq!(settled["details"]["finished"], true, "{settled}");
    assert!(
        settled["actor"]["user"].is_null(),
        "Warden's own: {settled}"
    );

    let everything = format!(
        "{rotations:?}{}{}",
        env.server.stdout(),
        env.server.stderr()
    );
    assert!(
        !everything.contains(old_password),
        "the old password is in the audit log or the server's log"
    );
}

#[test]
fn postgres_an_interrupted_rotation_is_finished_not_undone() {
    an_interrupted_rotation_is_finished_not_undone(Db::Postgres(Postgres::start()));
}

#[test]
fn mariadb_an_interrupted_rotation_is_finished_not_undone() {
    an_interrupted_rotation_is_finished_not_undone(Db::Mariadb(Mariadb::start()));
}
