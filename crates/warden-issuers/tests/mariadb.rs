//! The mariadb issuer against a real MariaDB server: the conformance suite, and the cases
//! only MariaDB has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::process::Output;

use conformance::{Grant, Target, grants, issue, server_style_password};
use mysql_async::prelude::Queryable;
use time::OffsetDateTime;
use warden_issuers::mariadb::MariadbIssuer;
use warden_issuers::{
    AdminCredential, Error, Issuer, ListRequest, RevokeRequest, RevokeResponse, RotateRootRequest,
    Secret, Settings,
};
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

/// A server whose administrator may grant (`WITH GRANT OPTION`) writing to `app.orders`,
/// triggers on it, and events and views in `app`; the application has a trigger of its own
/// on `orders`, made by `root`.
fn server_for_objects() -> Db {
    let db = Db {
        server: Mariadb::start(),
        issuer: MariadbIssuer::new(),
    };
    db.server.admin_query(&format!(
        "CREATE TABLE app.orders (id INT); \
         CREATE TRIGGER app.orders_audit AFTER INSERT ON app.orders FOR EACH ROW SET @audited = 1; \
         GRANT INSERT, TRIGGER, EVENT, CREATE VIEW ON app.* TO {}@'%' WITH GRANT OPTION",
        literal(db.server.admin_user())
    ));
    db
}

/// Issues a grant that may make triggers on `app.orders`, events and views, and makes, as the
/// grant, a trigger and an event whose names need quoting, and a `SQL SECURITY DEFINER` view.
async fn grant_that_made_objects(db: &Db, user: &str) -> Grant {
    let g = Grant::new(&db.issuer, user);
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let statements = [
        "GRANT SELECT, INSERT, TRIGGER ON app.orders TO {{name}}".to_owned(),
        "GRANT EVENT, CREATE VIEW ON app.* TO {{name}}".to_owned(),
    ];
    issue(db, &g, &grants(&statements), end).await.unwrap();
    // Making an event needs no event scheduler running: the test server runs none.
    let made = db.run_sql(
        &g.account,
        g.password.expose(),
        "CREATE TRIGGER `orders``spy` BEFORE INSERT ON orders FOR EACH ROW SET @seen = NEW.id; \
         CREATE EVENT `tick'tock` ON SCHEDULE EVERY 1 SECOND DO INSERT INTO orders VALUES (0); \
         CREATE SQL SECURITY DEFINER VIEW peek AS SELECT id FROM orders",
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    g
}

/// The triggers on `app.orders`, by name, comma-separated.
fn triggers_on_orders(db: &Db) -> String {
    db.server.admin_query(
        "SELECT GROUP_CONCAT(TRIGGER_NAME ORDER BY TRIGGER_NAME) FROM information_schema.TRIGGERS \
         WHERE EVENT_OBJECT_SCHEMA = 'app' AND EVENT_OBJECT_TABLE = 'orders'",
    )
}

/// A dropped account's trigger would fail every write to its table ("definer does not exist")
/// and its event would stay scheduled, failing at every run: revoking drops both, and leaves
/// the application's own trigger and the grant's view, which fails when used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_drops_the_accounts_triggers_and_events() {
    let db = server_for_objects();
    let g = grant_that_made_objects(&db, "tess").await;
    assert_eq!(triggers_on_orders(&db), "orders_audit,orders`spy");

    let revoked = conformance::revoke(&db, &g).await.unwrap();
    assert!(matches!(revoked, RevokeResponse::Revoked), "{revoked:?}");
    assert!(!db.account_exists(&g.account));
    let admin = db.admin();
    let insert = db.run_sql(
        &admin.username,
        admin.password.expose(),
        "INSERT INTO orders VALUES (2)",
    );
    assert!(
        insert.status.success(),
        "{}",
        String::from_utf8_lossy(&insert.stderr)
    );
    assert_eq!(triggers_on_orders(&db), "orders_audit");
    assert_eq!(
        db.server
            .admin_query("SELECT COUNT(*) FROM information_schema.EVENTS"),
        "0"
    );

    assert_eq!(
        db.server.admin_query(
            "SELECT COUNT(*) FROM information_schema.VIEWS \
             WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'peek'"
        ),
        "1"
    );
    // "Definer does not exist" (1449) is said only to those who may set definers; anyone else
    // is denied access (1045).
    let view = db.run_sql(
        &admin.username,
        admin.password.expose(),
        "SELECT * FROM peek",
    );
    let said = String::from_utf8_lossy(&view.stderr);
    assert!(
        !view.status.success() && (said.contains("ERROR 1045") || said.contains("ERROR 1449")),
        "the view is kept and runs with no rights: {said}"
    );
}

/// Dropping a trigger waits for the transactions using its table, and holds up new queries on
/// it meanwhile: it gives up after 5 s, naming the trigger, and keeps the account, locked; the
/// retry finishes once the transaction ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_held_by_a_transaction_keeps_the_account_locked_until_the_retry() {
    let db = server_for_objects();
    let g = grant_that_made_objects(&db, "uma").await;
    let admin = db.admin();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(db.server.port())
        .user(Some(admin.username.clone()))
        .pass(Some(admin.password.expose().clone()))
        .prefer_socket(false);
    let mut holder = mysql_async::Conn::new(opts).await.unwrap();
    holder
        .query_drop("START TRANSACTION; SELECT COUNT(*) FROM app.orders")
        .await
        .unwrap();

    let err = conformance::revoke(&db, &g).await.unwrap_err().to_string();
    for expected in [
        "trigger `app`.`orders``spy`",
        "Lock wait timeout",
        "kept, locked",
    ] {
        assert!(err.contains(expected), "{expected:?} not in: {err}");
    }
    assert!(db.account_exists(&g.account));
    let login = db.run_sql(&g.account, g.password.expose(), "SELECT 1");
    assert!(
        String::from_utf8_lossy(&login.stderr).contains("locked"),
        "the account stays locked: {}",
        String::from_utf8_lossy(&login.stderr)
    );

    holder.query_drop("ROLLBACK").await.unwrap();
    holder.disconnect().await.unwrap();
    let revoked = conformance::revoke(&db, &g).await.unwrap();
    assert!(matches!(revoked, RevokeResponse::Revoked), "{revoked:?}");
    assert!(!db.account_exists(&g.account));
    assert_eq!(triggers_on_orders(&db), "orders_audit");
}

/// An administrator without `SELECT` on `mysql.user` could not find an account to revoke it:
/// it makes none, says so (as does listing, how a stored credential is tried), and a revoke
/// whose lookup fails all the same locks the account where it was made (recorded in the
/// credential, the role's `host` having changed since) and ends its session before failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_that_cannot_read_accounts_makes_none_and_still_locks_at_revoke() {
    let db = Db {
        server: Mariadb::start(),
        issuer: MariadbIssuer::new(),
    };
    let admin = db.admin();
    let admin_account = format!("{}@'%'", literal(&admin.username));
    let g = Grant::new(&db.issuer, "ned");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut made_at = grants(&db.read_grants());
    made_at.insert("host".into(), "127.0.0.1".into());
    let issued = issue(&db, &g, &made_at, end).await.unwrap();
    let mut session = db.hold_session(&g.account, g.password.expose());
    db.server
        .admin_query(&format!("REVOKE SELECT ON mysql.user FROM {admin_account}"));

    let other = Grant::new(&db.issuer, "olga");
    let err = issue(&db, &other, &grants(&db.read_grants()), end)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Privilege(_)), "{err}");
    assert!(
        err.to_string().contains("GRANT SELECT ON mysql.user TO"),
        "{err}"
    );
    assert!(err.left_target_untouched());
    assert!(!db.account_exists(&other.account));

    let (target, role) = ("db".parse().unwrap(), "reader".parse().unwrap());
    // The role's `host` is back to its default: the account is where the credential says.
    let (connection, settings) = (db.connection(), grants(&db.read_grants()));
    let revoke = || {
        db.issuer.revoke(RevokeRequest {
            grant: g.id,
            target: &target,
            role: &role,
            connection: &connection,
            settings: &settings,
            public: &issued.public,
            account: Some(&g.account),
            admin: Some(&admin),
        })
    };
    let err = revoke().await.unwrap_err();
    assert!(matches!(err, Error::Privilege(_)), "{err}");
    let said = err.to_string();
    for expected in [
        "SELECT command denied",
        "GRANT SELECT ON mysql.user",
        "locked account",
    ] {
        assert!(said.contains(expected), "{expected:?} not in: {said}");
    }
    assert!(
        session.wait(std::time::Duration::from_secs(10)).is_some(),
        "the session goes on"
    );
    let login = db.run_sql(&g.account, g.password.expose(), "SELECT 1");
    assert!(
        String::from_utf8_lossy(&login.stderr).contains("locked"),
        "the account is locked: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert!(db.account_exists(&g.account));

    let err = db
        .issuer
        .list_accounts(ListRequest {
            target: &target,
            connection: &connection,
            admin: Some(&admin),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Privilege(_)), "{err}");
    assert!(
        err.to_string().contains("GRANT SELECT ON mysql.user TO"),
        "{err}"
    );

    db.server
        .admin_query(&format!("GRANT SELECT ON mysql.user TO {admin_account}"));
    let revoked = revoke().await.unwrap();
    assert!(matches!(revoked, RevokeResponse::Revoked), "{revoked:?}");
    assert!(!db.account_exists(&g.account));
}

/// User names are case-sensitive: revoking a grant leaves the session of another account whose
/// name differs from the grant's only in case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_spares_an_account_named_the_same_but_for_case() {
    let db = Db {
        server: Mariadb::start(),
        issuer: MariadbIssuer::new(),
    };
    let g = Grant::new(&db.issuer, "bob");
    let upper = g.account.to_uppercase();
    db.server.admin_query(&format!(
        "CREATE USER {account} IDENTIFIED BY 'other'; GRANT SELECT ON app.* TO {account}",
        account = format!("{}@'%'", literal(&upper))
    ));
    // Held first: the testkit finds a session by its name without case.
    let mut other_session = db.hold_session(&upper, "other");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    issue(&db, &g, &grants(&db.read_grants()), end)
        .await
        .unwrap();

    let revoked = conformance::revoke(&db, &g).await.unwrap();
    assert!(matches!(revoked, RevokeResponse::Revoked), "{revoked:?}");
    assert!(!db.account_exists(&g.account));
    assert!(
        other_session
            .wait(std::time::Duration::from_secs(2))
            .is_none(),
        "the other account's session was ended"
    );
    assert!(db.account_exists(&upper));
}
