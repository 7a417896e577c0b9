//! Warden's own work at a PostgreSQL database never waits behind work of its own that waits on
//! something else: a drop held up by someone's lock on a table holds up no other issue or drop
//! at that database, a revocation under way at a target that hangs delays no other grant's
//! end, and an issue that outlasts its grant hands out no password. One real PostgreSQL and one
//! server for all three, one after the other: each times what it proves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use warden_testkit::{Cli, Postgres, StallingRelay};

/// The cluster's second database, which target `hung` reaches through a relay.
const OTHER_DATABASE: &str = "other";

/// Target `pg`, straight to the database `app`, and target `hung`, to the same cluster's
/// database `other` through `relay`; roles anyone gets at once.
fn policy(pg: u16, relay: u16) -> (String, String) {
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
grants = ["GRANT SELECT ON public.items TO {{{{name}}}}"]
[targets.pg.roles.maker]
grants = ["GRANT CREATE ON SCHEMA public TO {{{{name}}}}"]
[targets.pg.roles.slow]
grants = ["SELECT pg_sleep(2)", "GRANT SELECT ON public.items TO {{{{name}}}}"]

[targets.hung]
kind = "postgres"
environment = "test"
[targets.hung.connection]
host = "127.0.0.1"
port = {relay}
database = "{OTHER_DATABASE}"
[targets.hung.roles.read]
grants = ["GRANT USAGE ON SCHEMA public TO {{{{name}}}}"]
"#
    );
    let rules = r#"
@id("pg")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource in Target::"pg");

@id("hung")
@approval("auto")
@max_ttl("1h")
permit (principal, action == Action::"request", resource in Target::"hung");
"#;
    (targets, rules.to_owned())
}

fn role_count(pg: &Postgres, name: &str) -> String {
    pg.admin_query(&format!(
        "SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"
    ))
}

fn username(grant: &serde_json::Value) -> String {
    grant["credential"]["username"].as_str().unwrap().to_owned()
}

fn expires_at(grant: &serde_json::Value) -> OffsetDateTime {
    OffsetDateTime::parse(grant["expires_at"].as_str().unwrap(), &Rfc3339).unwrap()
}

#[test]
fn no_work_at_a_database_queues_behind_a_wait_of_warden_s_own() {
    let pg = Postgres::start();
    pg.admin_query(&format!(
        "CREATE DATABASE {OTHER_DATABASE} OWNER {}",
        pg.admin_user()
    ));
    // Nothing is held until the relay is told to stall; then what the hung target's
    // revocation asks first (it looks the role up in pg_roles) is never answered.
    let relay = StallingRelay::start(pg.port(), b"pg_roles", Duration::from_secs(90));
    let (targets, rules) = policy(pg.port(), relay.port());
    let env = Env::start_with(&[("targets.toml", &targets), ("access.cedar", &rules)], &[]);
    let admin = env.login("admin");
    set_credential(&admin, "pg", pg.admin_user(), pg.admin_password());
    set_credential(&admin, "hung", pg.admin_user(), pg.admin_password());
    let alice = env.login("alice");

    a_drop_waiting_for_a_table_holds_up_no_other_issue_or_drop(&pg, &alice);
    an_issue_that_outlasts_its_grant_hands_out_no_password(&pg, &alice);
    a_revocation_under_way_delays_no_other_grants_end(&pg, &alice, &relay);
}

/// The drop of an account whose table someone's long transaction holds waits for it, at most
/// 5 s, and is retried; meanwhile a grant at the same database is issued, and another's account
/// dropped, as fast as ever. Once the table is let go, the account goes, its table kept.
fn a_drop_waiting_for_a_table_holds_up_no_other_issue_or_drop(pg: &Postgres, alice: &Cli) {
    let maker = create(alice, "pg", "maker", &[]);
    assert_eq!(maker["state"], "active", "{maker}");
    let made_by = username(&maker);
    let password = maker["secret"]["password"].as_str().unwrap();
    // Read by the administrator's long transaction below.
    let out = pg.psql(
        &made_by,
        password,
        &format!(
            "CREATE TABLE public.tt_x (x int); GRANT SELECT ON public.tt_x TO {}",
            pg.admin_user()
        ),
    );
    assert!(out.status.success(), "{out:?}");
    let other = create(alice, "pg", "read", &[]);
    let other_user = username(&other);

    let reader = pg.hold_lock("tt_x");
    ok(alice, &["request", "revoke", &id(&maker)]);
    wait_until(
        "the drop to wait for the table",
        Duration::from_secs(5),
        || {
            pg.admin_query(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 'tt_x' AND NOT l.granted",
            ) != "0"
        },
    );
    let (issued, dropped) = std::thread::scope(|s| {
        let issue = s.spawn(|| {
            let started = Instant::now();
            let v = create(alice, "pg", "read", &[]);
            assert_eq!(v["state"], "active", "{v}");
            started.elapsed()
        });
        let started = Instant::now();
        ok(alice, &["request", "revoke", &id(&other)]);
        wait_until("the other account to go", Duration::from_secs(10), || {
            role_count(pg, &other_user) == "0"
        });
        (issue.join().unwrap(), started.elapsed())
    });
    assert!(
        issued < Duration::from_secs(2),
        "an issue at the database took {issued:?} while a drop waited for a table"
    );
    assert!(
        dropped < Duration::from_secs(2),
        "another drop at the database took {dropped:?} while a drop waited for a table"
    );
    assert_eq!(
        role_count(pg, &made_by),
        "1",
        "the account went while its table was held: this test proves nothing then"
    );

    // The transaction ends (its client gone, and its backend too).
    drop(reader);
    pg.admin_query(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
    );
    wait_until(
        "the account to go once its table is let go",
        Duration::from_secs(15),
        || role_count(pg, &made_by) == "0",
    );
    let owner = pg.admin_query("SELECT tableowner FROM pg_tables WHERE tablename = 'tt_x'");
    assert!(owner.starts_with("warden_owned_"), "{owner}");
}

/// A grant whose account takes longer to make than its time to live has ended when the issue
/// returns: the requester is refused its password, as a pickup would be, and the account goes
/// as at an expiry.
fn an_issue_that_outlasts_its_grant_hands_out_no_password(pg: &Postgres, alice: &Cli) {
    let out = alice.run(
        &[
            "request", "create", "pg", "--role", "slow", "--reason", "x", "--ttl", "1s",
        ],
        None,
    );
    assert_eq!(out.code, 6, "{out:?}");
    assert!(
        out.stderr.contains("is expired at")
            && out.stderr.contains("is not handed over")
            && out.stderr.contains("longer --ttl"),
        "{out:?}"
    );
    let printed = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !printed.contains("postgresql://") && !printed.contains("PGPASSWORD"),
        "{out:?}"
    );
    let listed = ok(alice, &["request", "list"]);
    let slow = listed["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "slow")
        .unwrap()
        .clone();
    let grant = id(&slow);
    let account = username(&ok(alice, &["request", "show", &grant]));
    wait_until("the account to go", Duration::from_secs(5), || {
        role_count(pg, &account) == "0"
    });
    assert_eq!(state(alice, &grant), "expired");
    let out = fails(alice, &["request", "credential", &grant], 6);
    assert!(out.stderr.contains("is not handed over"), "{out:?}");
}

/// While the revocation of a grant at a target that hangs is under way, other grants'
/// accounts at a target that answers go as soon as their grants expire, not at the next of
/// the worker's retries a second apart. Three grants expire a third of a second apart, so that
/// a worker looking only once a second would be late for at least one by over half a second.
fn a_revocation_under_way_delays_no_other_grants_end(
    pg: &Postgres,
    alice: &Cli,
    relay: &StallingRelay,
) {
    let hung = create(alice, "hung", "read", &["--ttl", "1s"]);
    assert_eq!(hung["state"], "active", "{hung}");
    let hung_end = expires_at(&hung);
    relay.stall(true);
    wait_until(
        "the hung target's revocation to be under way",
        Duration::from_secs(5),
        || relay.held() > 0,
    );
    assert_eq!(state(alice, &id(&hung)), "expired");

    let mut grants = Vec::new();
    for third in 1..=3 {
        let at = hung_end + time::Duration::milliseconds(300 + 330 * (third - 1));
        let wait = at - OffsetDateTime::now_utc();
        if wait.is_positive() {
            std::thread::sleep(wait.unsigned_abs());
        }
        let v = create(alice, "pg", "read", &["--ttl", "1s"]);
        assert_eq!(v["state"], "active", "{v}");
        grants.push((username(&v), expires_at(&v), None::<OffsetDateTime>));
    }
    let names: Vec<String> = grants.iter().map(|(n, _, _)| format!("'{n}'")).collect();
    let still = format!(
        "SELECT coalesce(string_agg(rolname, ','), '') FROM pg_roles WHERE rolname IN ({})",
        names.join(", ")
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while grants.iter().any(|(_, _, gone)| gone.is_none()) {
        assert!(
            Instant::now() < deadline,
            "the accounts did not go: {grants:?}"
        );
        let there = pg.admin_query(&still);
        let seen_at = OffsetDateTime::now_utc();
        for (name, _, gone) in &mut grants {
            if gone.is_none() && !there.split(',').any(|n| n == name) {
                *gone = Some(seen_at);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (name, end, gone) in &grants {
        let late = gone.unwrap() - *end;
        assert!(
            late < time::Duration::milliseconds(350),
            "account {name} went {late} after its grant expired, while a revocation was under way elsewhere: {grants:?}"
        );
    }
    assert_eq!(
        role_count(pg, &username(&hung)),
        "1",
        "the hung target's revocation ended: this test proves nothing then"
    );
}
