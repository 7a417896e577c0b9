//! The mariadb issuer against a real MariaDB server: the conformance suite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::process::Output;

use conformance::{Grant, Target, grants, issue, server_style_password};
use time::OffsetDateTime;
use warden_issuers::mariadb::MariadbIssuer;
use warden_issuers::{AdminCredential, Error, Issuer, RotateRootRequest, Secret, Settings};
use warden_testkit::{Mariadb, OpenSession};

struct Db {
    server: Mariadb,
    issuer: MariadbIssuer,
}

fn connection(port: u16, database: &str) -> Settings {
    serde_json::json!({"host": "127.0.0.1", "port": port, "database": database})
        .as_object()
        .cloned()
        .unwrap()
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

impl Target for Db {
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
        vec!["GRANT SELECT ON app.* TO {{name}}".into()]
    }

    fn missing_table_grant(&self) -> String {
        "GRANT SELECT ON app.no_such_table TO {{name}}".into()
    }

    fn leaky_grant(&self) -> String {
        // A syntax error, whose message quotes the statement from where parsing stopped.
        "GRANT SELECT ON app.* TO {{name}} {{password}}".into()
    }

    fn run_sql(&self, user: &str, password: &str, sql: &str) -> Output {
        self.server.client(user, password, sql)
    }

    fn hold_session(&self, user: &str, password: &str) -> OpenSession {
        self.server.hold_session(user, password)
    }

    fn account_exists(&self, name: &str) -> bool {
        self.server.admin_query(&format!(
            "SELECT COUNT(*) FROM mysql.user WHERE User = {}",
            literal(name)
        )) != "0"
    }

    fn create_human_accounts(&self) -> Vec<String> {
        // MariaDB accounts carry no marker, so a hand-made account is told apart by its name
        // alone: one without the prefix, one with the prefix but not Warden's shape.
        self.server
            .admin_query("CREATE USER 'alice'@'%' IDENTIFIED BY 'x'; CREATE USER 'w_dba'@'%'");
        vec!["alice".into(), "w_dba".into()]
    }

    fn end_admin_connections(&self) {
        let ids = self.server.admin_query(&format!(
            "SELECT GROUP_CONCAT(ID) FROM information_schema.PROCESSLIST WHERE USER = {}",
            literal(self.server.admin_user())
        ));
        for id in ids.split(',').filter(|id| id.parse::<u64>().is_ok()) {
            self.server.admin_query(&format!("KILL {id}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    conformance::run(&Db {
        server: Mariadb::start(),
        issuer: MariadbIssuer::new(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline() {
    conformance::run_offline(
        &MariadbIssuer::new(),
        connection(warden_testkit::free_port(), "app"),
    )
    .await;
}

/// MariaDB's general log records statements as sent: it shows the accounts' hashes and never a
/// password, of a new account or of the administrator's rotation, and both passwords work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_general_log_never_holds_a_password() {
    let db = Db {
        server: Mariadb::start(),
        issuer: MariadbIssuer::new(),
    };
    db.server
        .admin_query("SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = ON");
    let g = Grant::new(&db.issuer, "gina");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    issue(&db, &g, &grants(&db.read_grants()), end)
        .await
        .unwrap();
    let admin = db.admin();
    let new = Secret::new(server_style_password());
    db.issuer
        .rotate_root(RotateRootRequest {
            target: &"db".parse().unwrap(),
            connection: &db.connection(),
            admin: &admin,
            new_password: &new,
        })
        .await
        .unwrap();

    let login = db.run_sql(&g.account, g.password.expose(), "SELECT CURRENT_USER()");
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let admin_login = db.run_sql(&admin.username, new.expose(), "SELECT 1");
    assert!(
        admin_login.status.success(),
        "{}",
        String::from_utf8_lossy(&admin_login.stderr)
    );

    db.server.admin_query("SET GLOBAL general_log = OFF");
    let logged = db
        .server
        .admin_query("SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log");
    let hashed = logged
        .lines()
        .filter(|l| l.contains("IDENTIFIED WITH mysql_native_password AS '*"))
        .count();
    assert_eq!(hashed, 2, "the account and the rotation, hashed:\n{logged}");
    for password in [g.password.expose(), new.expose()] {
        assert!(
            !logged.contains(password.as_str()),
            "a password in the general log:\n{logged}"
        );
    }
}

/// An administrator without `PROCESS` sees only its own connections: it may neither make an
/// account nor claim one revoked, since the account's sessions would go on unseen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_that_cannot_see_connections_is_refused() {
    let db = Db {
        server: Mariadb::start(),
        issuer: MariadbIssuer::new(),
    };
    let g = Grant::new(&db.issuer, "hal");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    issue(&db, &g, &grants(&db.read_grants()), end)
        .await
        .unwrap();
    db.server.admin_query(&format!(
        "REVOKE PROCESS ON *.* FROM {}@'%'",
        literal(db.server.admin_user())
    ));
    let mut session = db.hold_session(&g.account, g.password.expose());

    let err = conformance::revoke(&db, &g).await.unwrap_err();
    assert!(matches!(err, Error::Privilege(_)), "{err}");
    assert!(err.to_string().contains("GRANT PROCESS"), "{err}");
    assert!(
        session
            .wait(std::time::Duration::from_millis(200))
            .is_none()
    );
    assert!(db.account_exists(&g.account));

    let other = Grant::new(&db.issuer, "ida");
    let err = issue(&db, &other, &grants(&db.read_grants()), end)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Privilege(_)), "{err}");
    assert!(err.left_target_untouched());
    assert!(!db.account_exists(&other.account));

    // With PROCESS back but without CONNECTION ADMIN it sees the sessions and may not end them.
    db.server.admin_query(&format!(
        "GRANT PROCESS ON *.* TO {admin}@'%'; REVOKE CONNECTION ADMIN ON *.* FROM {admin}@'%'",
        admin = literal(db.server.admin_user())
    ));
    let err = conformance::revoke(&db, &g).await.unwrap_err();
    assert!(matches!(err, Error::Privilege(_)), "{err}");
    assert!(err.to_string().contains("CONNECTION ADMIN"), "{err}");
    assert!(db.account_exists(&g.account));
}
