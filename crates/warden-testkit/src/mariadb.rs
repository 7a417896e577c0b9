//! A private MariaDB server for issuer tests, with the real `mariadb` client to prove what a
//! credential can and cannot do.
//!
//! The data directory is made with `mariadb-install-db` in a temporary directory and the
//! server runs as root with every option on its command line (`--no-defaults`), so nothing of
//! a system-wide installation is read or touched. Privileges are checked as in production
//! (no `--skip-grant-tables`). The harness itself uses `root` over the server's Unix socket,
//! in the temporary directory; accounts under test log in over TCP on 127.0.0.1.
//! [`Mariadb::start_tls`] starts one that takes TCP logins over TLS only, with a [`TestCa`]'s
//! certificate.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::database::{OpenSession, random_hex, sql_literal};
use crate::free_port;
use crate::process::{POLL, read_lossy, run_bounded};
use crate::tls::TestCa;

const MARIADBD: &str = "/usr/sbin/mariadbd";
const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const CLIENT: &str = "/usr/bin/mariadb";
const ADMIN: &str = "warden_admin";
const DATABASE: &str = "app";
const READY_LIMIT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 3;

/// A running MariaDB server on 127.0.0.1, killed when dropped.
///
/// It has an account `warden_admin`@`%` with a random password and no more privileges than the
/// README asks of Warden's administrator (`CREATE USER`, `PROCESS`, `CONNECTION ADMIN`, `SELECT`
/// on `mysql.user`, and `SELECT` on `app` `WITH GRANT OPTION`, what the tests' roles grant), and
/// a database `app` holding `items(id INT, name TEXT)` with one row.
#[derive(Debug)]
pub struct Mariadb {
    dir: TempDir,
    port: u16,
    child: Child,
    admin_password: String,
    /// Whether TCP logins must use TLS (`require_secure_transport`).
    tls: bool,
}

impl Mariadb {
    /// Creates a data directory, starts the server on a free port and sets up `warden_admin`
    /// and `app`. Needs root. Panics with the server's log if it is not ready within 20 s.
    pub fn start() -> Mariadb {
        Mariadb::start_with(None)
    }

    /// [`Mariadb::start`] with TLS on (`ca`'s server certificate for 127.0.0.1) and
    /// `require_secure_transport=ON`: a plaintext TCP login is refused. [`Mariadb::client`] and
    /// the sessions the harness holds use TLS (`--ssl`, the certificate not checked).
    pub fn start_tls(ca: &TestCa) -> Mariadb {
        Mariadb::start_with(Some(ca))
    }

    fn start_with(tls: Option<&TestCa>) -> Mariadb {
        for path in [MARIADBD, INSTALL_DB, CLIENT] {
            assert!(
                Path::new(path).exists(),
                "{path} not found: install mariadb-server and mariadb-client (scripts/test does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("warden-mariadb-")
            .tempdir()
            .expect("creating a temp dir for mariadb");
        let data = dir.path().join("data");
        let out = run_bounded(
            Command::new(INSTALL_DB)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--user=root", "--auth-root-authentication-method=normal"])
                .args(["--skip-test-db", "--skip-name-resolve"])
                // Its own: a server starting elsewhere clears leftover temporary files from
                // its temporary directory, and in a shared /tmp they could be ours.
                .arg(format!("--tmpdir={}", dir.path().display())),
            None,
            Duration::from_secs(120),
            "mariadb-install-db",
        );
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // The server's own copies, which outlive the CA's directory.
        let tls_args: Vec<String> = tls
            .map(|ca| {
                let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
                std::fs::copy(ca.cert_file(), &cert).expect("copying the server certificate");
                std::fs::copy(ca.key_file(), &key).expect("copying the server key");
                vec![
                    format!("--ssl-cert={}", cert.display()),
                    format!("--ssl-key={}", key.display()),
                    "--require-secure-transport=ON".to_owned(),
                ]
            })
            .unwrap_or_default();
        let log = dir.path().join("mariadb.log");
        let socket = dir.path().join("mariadb.sock");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let _ = std::fs::remove_file(&log);
            let mut child = Command::new(MARIADBD)
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--socket={}", socket.display()))
                .arg(format!(
                    "--pid-file={}",
                    dir.path().join("mariadb.pid").display()
                ))
                .arg(format!("--log-error={}", log.display()))
                // Its own, as for the installation above.
                .arg(format!("--tmpdir={}", dir.path().display()))
                .args(["--user=root", "--skip-log-bin", "--skip-name-resolve"])
                .args([
                    "--innodb-buffer-pool-size=16M",
                    "--innodb-flush-log-at-trx-commit=0",
                ])
                .args(&tls_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {MARIADBD}: {e}"));

            let deadline = Instant::now() + READY_LIMIT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let text = read_lossy(&log);
                    if text.contains("Address already in use") && attempt < PORT_ATTEMPTS {
                        break; // someone took the port in between: try another
                    }
                    panic!("mariadbd exited before it was ready ({status})\n--- log ---\n{text}");
                }
                if as_root(&socket, "SELECT 1").status.success() {
                    let server = Mariadb {
                        dir,
                        port,
                        child,
                        admin_password: random_hex(),
                        tls: tls.is_some(),
                    };
                    server.set_up();
                    return server;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mariadbd was not ready on 127.0.0.1:{port} within {} s\n--- log ---\n{}",
                        READY_LIMIT.as_secs(),
                        read_lossy(&log)
                    );
                }
                thread::sleep(POLL);
            }
        }
        unreachable!("every attempt either returns, retries or panics")
    }

    fn set_up(&self) {
        let account = format!("{}@'%'", sql_literal(ADMIN));
        self.admin_query(&format!(
            "CREATE USER {account} IDENTIFIED BY {password}; \
             GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO {account}; \
             GRANT SELECT ON mysql.user TO {account}; \
             GRANT SELECT ON {DATABASE}.* TO {account} WITH GRANT OPTION; \
             CREATE DATABASE {DATABASE}; \
             CREATE TABLE {DATABASE}.items (id INT, name TEXT); \
             INSERT INTO {DATABASE}.items VALUES (1, 'widget')",
            password = sql_literal(&self.admin_password)
        ));
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The administrator's name: `warden_admin`.
    pub fn admin_user(&self) -> &'static str {
        ADMIN
    }

    /// The password `warden_admin` was created with.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The database the tests use: `app`.
    pub fn database(&self) -> &'static str {
        DATABASE
    }

    /// Runs `sql` in `app` with the real `mariadb` client, logging in over TCP as `user` with
    /// `password` (passed in `MYSQL_PWD`, never on the command line). Output is tab-separated
    /// without column names. Bounded to 20 s by `timeout`.
    pub fn client(&self, user: &str, password: &str, sql: &str) -> Output {
        let mut cmd = self.client_command(user, password, sql, 20);
        run_bounded(&mut cmd, None, Duration::from_secs(30), "mariadb")
    }

    /// Runs `sql` as `root` over the server's Unix socket and returns the output, trimmed;
    /// panics if it fails. Independent of `warden_admin`, so it keeps working when a test
    /// changes that password.
    pub fn admin_query(&self, sql: &str) -> String {
        let out = as_root(&self.dir.path().join("mariadb.sock"), sql);
        assert!(
            out.status.success(),
            "mariadb as root failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Logs in as `user` and runs `SELECT SLEEP(60)`, returning once the server lists the
    /// query. Panics if the login fails.
    pub fn hold_session(&self, user: &str, password: &str) -> OpenSession {
        let probe = format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = {} AND COMMAND = 'Query'",
            sql_literal(user)
        );
        OpenSession::start(
            &mut self.client_command(user, password, "SELECT SLEEP(60)", 90),
            &format!("mariadb as {user}"),
            || self.admin_query(&probe) != "0",
        )
    }

    fn client_command(&self, user: &str, password: &str, sql: &str, limit_secs: u32) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg(limit_secs.to_string())
            .args([
                CLIENT,
                "--no-defaults",
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
            ])
            .args([
                "--protocol=TCP",
                "--connect-timeout=10",
                "-u",
                user,
                "-D",
                DATABASE,
            ])
            .args(["-N", "-B", "-e", sql])
            .env("MYSQL_PWD", password);
        if self.tls {
            cmd.arg("--ssl");
        }
        cmd
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        // The data is thrown away, so there is nothing to shut down cleanly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sql` as `root` over the Unix socket at `socket`, bounded to 20 s.
fn as_root(socket: &Path, sql: &str) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", CLIENT, "--no-defaults", "-u", "root"])
        .arg(format!("--socket={}", socket.display()))
        .args(["-N", "-B", "-e", sql])
        .env_remove("MYSQL_PWD");
    run_bounded(&mut cmd, None, Duration::from_secs(30), "mariadb")
}
