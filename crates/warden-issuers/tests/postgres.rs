//! The postgres issuer against a real PostgreSQL server: the conformance suite, plus the
//! `VALID UNTIL` backstop and the SCRAM verifiers that only PostgreSQL has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::process::Output;
use std::time::Duration;

use conformance::{Grant, Target, grants, issue};
use time::OffsetDateTime;
use warden_issuers::postgres::PostgresIssuer;
use warden_issuers::{AdminCredential, Issuer, RevokeResponse, Secret, Settings};
use warden_testkit::{OpenSession, Postgres};

struct Pg {
    server: Postgres,
    issuer: PostgresIssuer,
}

impl Pg {
    fn start() -> Self {
        Pg {
            server: Postgres::start(),
            issuer: PostgresIssuer::new(),
        }
    }
}

fn connection(port: u16, database: &str) -> Settings {
    serde_json::json!({"host": "127.0.0.1", "port": port, "database": database})
        .as_object()
        .cloned()
        .unwrap()
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Target for Pg {
    fn issuer(&self) -> &dyn Issuer {
        &self.issuer
    }

    fn connection(&self) -> Settings {
        connection(self.server.port(), self.server.database())
    }

    fn admin(&self) -> AdminCredential {
        AdminCredential {
            username: self.server.admin_user().into(),
            password: Secret::new(self.server.admin_password().into()),
        }
    }

    fn read_grants(&self) -> Vec<String> {
        vec!["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}".into()]
    }

    fn missing_table_grant(&self) -> String {
        "GRANT SELECT ON no_such_table TO {{name}}".into()
    }

    fn leaky_grant(&self) -> String {
        // "invalid input syntax for type integer" quotes the value.
        "SELECT {{password}}::int".into()
    }

    fn run_sql(&self, user: &str, password: &str, sql: &str) -> Output {
        self.server.psql(user, password, sql)
    }

    fn hold_session(&self, user: &str, password: &str) -> OpenSession {
        self.server.hold_session(user, password)
    }

    fn account_exists(&self, name: &str) -> bool {
        self.server.admin_query(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = {}",
            literal(name)
        )) != "0"
    }

    fn create_human_accounts(&self) -> Vec<String> {
        // Warden's prefix and shape, and even a marker for another grant, but not made by Warden.
        let names = ["w_human_0123456789ab", "w_dba", "w_copy_000000000001"];
        self.server.admin_query(&format!(
            "CREATE ROLE {} LOGIN; CREATE ROLE {} LOGIN; CREATE ROLE {} LOGIN; \
             COMMENT ON ROLE {} IS 'warden grant 01910000-0000-7000-8000-000000000002'",
            names[0], names[1], names[2], names[2]
        ));
        names.map(str::to_owned).to_vec()
    }

    fn end_admin_connections(&self) {
        self.server.admin_query(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {}",
            literal(self.server.admin_user())
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let pg = Pg::start();
    revoking_leaves_unmarked_roles_alone(&pg).await;
    conformance::run(&pg).await;
}

/// A role with the name of a grant's account but without that grant's marker was not made
/// by Warden (issuing failed because the name was taken): revoking the grant keeps it.
async fn revoking_leaves_unmarked_roles_alone(pg: &Pg) {
    let mut g = Grant::new(&pg.issuer, "gina");
    g.account = "w_taken_0123456789ab".into();
    pg.server
        .admin_query(&format!("CREATE ROLE {} LOGIN", g.account));
    let err = issue(
        pg,
        &g,
        &grants(&pg.read_grants()),
        OffsetDateTime::now_utc(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        conformance::revoke(pg, &g).await.unwrap(),
        RevokeResponse::AlreadyGone
    );
    assert!(pg.account_exists(&g.account));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline() {
    conformance::run_offline(
        &PostgresIssuer::new(),
        connection(warden_testkit::free_port(), "app"),
    )
    .await;
}

/// `VALID UNTIL` refuses logins after the grant's end even when nobody revokes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_until_refuses_logins_after_the_end() {
    let pg = Pg::start();
    let g = Grant::new(&pg.issuer, "frank");
    let end = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    issue(&pg, &g, &grants(&pg.read_grants()), end)
        .await
        .unwrap();
    let before = pg.run_sql(&g.account, g.password.expose(), "SELECT 1");
    assert!(before.status.success(), "login failed before the end");

    let wait = end - OffsetDateTime::now_utc() + time::Duration::seconds(1);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let after = pg.run_sql(&g.account, g.password.expose(), "SELECT 1");
    assert!(
        !after.status.success(),
        "login still works after VALID UNTIL"
    );
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}

/// The server holds only Warden's SCRAM verifier (16 rounds, see `postgres/scram.rs`), never
/// the password, and `psql` logs in with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_a_verifier_that_psql_logs_in_with() {
    let pg = Pg::start();
    let g = Grant::new(&pg.issuer, "vera");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    issue(&pg, &g, &grants(&pg.read_grants()), end)
        .await
        .unwrap();
    let stored = pg.server.admin_query(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = {}",
        literal(&g.account)
    ));
    assert!(stored.starts_with("SCRAM-SHA-256$16:"), "{stored}");
    assert!(!stored.contains(g.password.expose()));
    let login = pg.run_sql(&g.account, g.password.expose(), "SELECT current_user");
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&login.stdout).trim(), g.account);
}

/// A grant statement cannot replace the marker revoking trusts: the role it comments on is
/// still revoked, not taken for someone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cannot_replace_the_marker() {
    let pg = Pg::start();
    let g = Grant::new(&pg.issuer, "cora");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut statements = pg.read_grants();
    statements.push("COMMENT ON ROLE {{name}} IS 'hijacked'".into());
    issue(&pg, &g, &grants(&statements), end).await.unwrap();
    assert_eq!(
        conformance::revoke(&pg, &g).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert!(!pg.account_exists(&g.account));
}

/// What the role made in the cluster's other databases (large objects need no privilege, and
/// every role may connect to `postgres` and `template1`) does not keep it from being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_left_in_other_databases_do_not_keep_the_role() {
    let pg = Pg::start();
    let g = Grant::new(&pg.issuer, "lola");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    issue(&pg, &g, &grants(&pg.read_grants()), end)
        .await
        .unwrap();
    for database in ["postgres", "template1"] {
        let made = pg.server.psql_in(
            database,
            &g.account,
            g.password.expose(),
            "SELECT lo_create(0)",
        );
        assert!(made.status.success(), "{made:?}");
    }
    assert_eq!(
        conformance::revoke(&pg, &g).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert!(!pg.account_exists(&g.account));
}
