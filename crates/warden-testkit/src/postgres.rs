//! A private PostgreSQL server for issuer tests, with the real `psql` client to prove what a
//! credential can and cannot do.
//!
//! The cluster is created with `initdb` in a temporary directory, as the `postgres` Unix user
//! (PostgreSQL refuses to run as root). TCP connections on 127.0.0.1 need a password
//! (SCRAM-SHA-256); the Unix socket, in the temporary directory, trusts the `postgres`
//! superuser, which the harness itself uses for setup and checks. Durability is switched off:
//! the data dies with the test. [`Postgres::start_tls`] starts one that takes TCP logins over
//! TLS only, with a [`TestCa`]'s certificate.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::database::{OpenSession, random_hex, sql_literal};
use crate::free_port;
use crate::process::{POLL, read_lossy, run_bounded, signal, wait_until};
use crate::tls::TestCa;

const ADMIN: &str = "warden_admin";
const DATABASE: &str = "app";
const READY_LIMIT: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 3;

/// A running PostgreSQL server on 127.0.0.1, stopped when dropped.
///
/// It has a superuser `warden_admin` with a random password (the administrator Warden is given)
/// and a database `app` holding `public.items(id int, name text)` with one row.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    child: Child,
    admin_password: String,
    /// Whether TCP logins must use TLS (`hostssl`).
    tls: bool,
}

impl Postgres {
    /// Creates a cluster, starts it on a free port and sets up `warden_admin` and `app`.
    /// Needs root, to run the server as `postgres`. Panics with the server's log if it is not
    /// ready within 20 s.
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// [`Postgres::start`] with TLS on (`ssl=on`, `ca`'s server certificate for 127.0.0.1) and
    /// `pg_hba.conf` taking TCP logins over TLS only (`hostssl`): a plaintext login is refused
    /// with "no pg_hba.conf entry ..., no encryption". [`Postgres::psql`] and the sessions the
    /// harness holds use TLS (`sslmode=require`).
    pub fn start_tls(ca: &TestCa) -> Postgres {
        Postgres::start_with(Some(ca))
    }

    fn start_with(tls: Option<&TestCa>) -> Postgres {
        let bin = bin_dir();
        let (uid, gid) = (id("-u"), id("-g"));
        let dir = tempfile::Builder::new()
            .prefix("warden-postgres-")
            .tempdir()
            .expect("creating a temp dir for postgres");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
            .expect("handing the temp dir to the postgres user");
        let data = dir.path().join("data");
        let out = run_bounded(
            Command::new(bin.join("initdb"))
                .uid(uid)
                .gid(gid)
                .current_dir(dir.path())
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
                .args(["--auth-host=scram-sha-256", "--auth-local=trust"]),
            None,
            Duration::from_secs(60),
            "initdb",
        );
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let tls_args = tls
            .map(|ca| tls_only(dir.path(), &data, ca, (uid, gid)))
            .unwrap_or_default();

        let log = dir.path().join("postgres.log");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let log_file = File::create(&log).expect("creating the postgres log");
            let mut child = Command::new(bin.join("postgres"))
                .uid(uid)
                .gid(gid)
                .current_dir(dir.path())
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                // Prepared transactions outlive sessions: revocation must see to them too.
                .args(["-c", "max_prepared_transactions=4"])
                .args(&tls_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("starting postgres: {e}"));

            let deadline = Instant::now() + READY_LIMIT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let text = read_lossy(&log);
                    if text.contains("could not bind") && attempt < PORT_ATTEMPTS {
                        break; // someone took the port in between: try another
                    }
                    panic!("postgres exited before it was ready ({status})\n--- log ---\n{text}");
                }
                if is_ready(&bin, port) {
                    let server = Postgres {
                        dir,
                        bin,
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
                        "postgres was not ready on 127.0.0.1:{port} within {} s\n--- log ---\n{}",
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
        // Exactly what the issuer documents it needs, no superuser: tests then prove that
        // much is enough. It owns the database (so its public schema) and the test table.
        self.superuser(
            "postgres",
            &format!(
                "CREATE ROLE {ADMIN} WITH CREATEROLE LOGIN PASSWORD {}; \
                 GRANT pg_signal_backend TO {ADMIN}",
                sql_literal(&self.admin_password)
            ),
        );
        // Not in the same call: CREATE DATABASE cannot run inside a transaction.
        self.superuser(
            "postgres",
            &format!("CREATE DATABASE {DATABASE} OWNER {ADMIN}"),
        );
        self.admin_query(&format!(
            "CREATE TABLE public.items (id int, name text); \
                 INSERT INTO public.items VALUES (1, 'widget'); \
                 ALTER TABLE public.items OWNER TO {ADMIN}"
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

    /// Runs `sql` in `app` with the real `psql` client, logging in over TCP as `user` with
    /// `password` (passed in `PGPASSWORD`, never on the command line). Bounded to 20 s by
    /// `timeout`; never prompts.
    pub fn psql(&self, user: &str, password: &str, sql: &str) -> Output {
        self.psql_in(DATABASE, user, password, sql)
    }

    /// [`Postgres::psql`] in another of the cluster's databases.
    pub fn psql_in(&self, database: &str, user: &str, password: &str, sql: &str) -> Output {
        let mut cmd = self.psql_command(database, user, password, sql, 20);
        run_bounded(&mut cmd, None, Duration::from_secs(30), "psql")
    }

    /// Runs `sql` in `app` as the server's own superuser over its Unix socket and returns the
    /// output, trimmed; panics if it fails. Independent of `warden_admin`, so it keeps working
    /// when a test changes that password.
    pub fn admin_query(&self, sql: &str) -> String {
        self.superuser(DATABASE, sql)
    }

    fn superuser(&self, database: &str, sql: &str) -> String {
        let mut cmd = Command::new("timeout");
        cmd.arg("20")
            .arg(self.bin.join("psql"))
            .args(["-X", "-w", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql]);
        remove_libpq_env(&mut cmd);
        let out = run_bounded(&mut cmd, None, Duration::from_secs(30), "psql");
        assert!(
            out.status.success(),
            "psql as superuser failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Logs in as `user` and runs `SELECT pg_sleep(60)`, returning once the server lists the
    /// session as active. Panics if the login fails.
    pub fn hold_session(&self, user: &str, password: &str) -> OpenSession {
        let probe = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = {} AND state = 'active'",
            sql_literal(user)
        );
        OpenSession::start(
            &mut self.psql_command(DATABASE, user, password, "SELECT pg_sleep(60)", 90),
            &format!("psql as {user}"),
            || self.admin_query(&probe) != "0",
        )
    }

    /// A session of `user` that runs `sql` in a transaction and keeps it open (and the locks
    /// `sql` took), returning once the server lists the session as active.
    pub fn hold_transaction(&self, user: &str, password: &str, sql: &str) -> OpenSession {
        let probe = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = {} AND state = 'active'",
            sql_literal(user)
        );
        let sql = format!("BEGIN; {sql}; SELECT pg_sleep(60)");
        OpenSession::start(
            &mut self.psql_command(DATABASE, user, password, &sql, 90),
            &format!("a transaction of {user}"),
            || self.admin_query(&probe) != "0",
        )
    }

    /// A session of the administrator holding a lock that keeps `table` from being changed
    /// (a long transaction that read it) until it is dropped.
    pub fn hold_lock(&self, table: &str) -> OpenSession {
        let probe = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = {} AND l.granted",
            sql_literal(table)
        );
        let sql = format!("BEGIN; SELECT count(*) FROM {table}; SELECT pg_sleep(60)");
        OpenSession::start(
            &mut self.psql_command(DATABASE, ADMIN, &self.admin_password, &sql, 90),
            &format!("a transaction holding {table}"),
            || self.admin_query(&probe) != "0",
        )
    }

    fn psql_command(
        &self,
        database: &str,
        user: &str,
        password: &str,
        sql: &str,
        limit_secs: u32,
    ) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg(limit_secs.to_string())
            .arg(self.bin.join("psql"))
            .args(["-X", "-w", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ]);
        remove_libpq_env(&mut cmd);
        cmd.env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10");
        if self.tls {
            cmd.env("PGSSLMODE", "require");
        }
        cmd
    }
}

impl Postgres {
    /// Stops the server's processes, the postmaster and the backends serving open sessions
    /// (SIGSTOP), until [`Postgres::resume`]: connections, new or open, are never answered, as
    /// with a database that hangs.
    pub fn pause(&self) {
        signal(self.child.id(), "STOP");
        self.signal_backends("STOP");
    }

    /// Lets a paused server run again.
    pub fn resume(&self) {
        self.signal_backends("CONT");
        signal(self.child.id(), "CONT");
    }

    /// Sends `name` to the postmaster's children; none is no error.
    fn signal_backends(&self, name: &str) {
        let status = Command::new("pkill")
            .args([&format!("-{name}"), "-P", &self.child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("running pkill: {e}"));
        assert!(
            status.code().is_some_and(|c| c <= 1),
            "pkill failed: {status}"
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.resume();
        // SIGQUIT is PostgreSQL's immediate shutdown: the postmaster ends its backends too,
        // which a SIGKILL would leave running.
        signal(self.child.id(), "QUIT");
        if wait_until(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The newest installed PostgreSQL's binaries, e.g. `/usr/lib/postgresql/15/bin`.
fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let version: u32 = name.parse().ok()?;
            let bin = root.join(&name).join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server under {}: install postgresql (scripts/test does)",
                root.display()
            )
        })
}

/// The `postgres` Unix user's uid (`-u`) or gid (`-g`).
fn id(which: &str) -> u32 {
    let out = Command::new("id")
        .args([which, "postgres"])
        .output()
        .expect("running id");
    assert!(
        out.status.success(),
        "there is no postgres Unix user: install postgresql (scripts/test does)"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id printed a number")
}

fn is_ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args(["-q", "-t", "1", "-h", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Sets up the cluster in `data` (under `dir`) for TLS with `ca`'s server certificate and for
/// TCP logins over TLS only; returns the server's arguments that turn TLS on. The key is the
/// `postgres` user's (`ids`), mode 0600, as the server demands.
fn tls_only(dir: &Path, data: &Path, ca: &TestCa, ids: (u32, u32)) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    fs::copy(ca.cert_file(), &cert).expect("copying the server certificate");
    fs::copy(ca.key_file(), &key).expect("copying the server key");
    for file in [&cert, &key] {
        std::os::unix::fs::chown(file, Some(ids.0), Some(ids.1))
            .expect("handing the certificate to the postgres user");
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .expect("making the server key private");
    // No `host` line: a plaintext TCP login matches none.
    fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
    )
    .expect("writing pg_hba.conf");
    let (cert, key) = (cert.display(), key.display());
    [
        "ssl=on".to_owned(),
        format!("ssl_cert_file={cert}"),
        format!("ssl_key_file={key}"),
    ]
    .into_iter()
    .flat_map(|setting| ["-c".to_owned(), setting])
    .collect()
}

/// Removes the libpq variables of the test's own environment, so only the arguments count.
fn remove_libpq_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}
