//! The mariadb issuer against a real MariaDB server: the conformance suite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::process::Output;

use conformance::Target;
use warden_issuers::mariadb::MariadbIssuer;
use warden_issuers::{AdminCredential, Issuer, Secret, Settings};
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
