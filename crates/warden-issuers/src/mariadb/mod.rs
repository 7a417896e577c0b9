//! MariaDB and MySQL accounts, created per grant and dropped at its end.
//!
//! Issuing connects as the target's administrator, runs `CREATE USER 'name'@'host'
//! IDENTIFIED ...` and then the role's grant statements. These servers commit each
//! account statement on its own, so if a grant fails the account is dropped again before the
//! error is returned: no half-made account is left behind.
//!
//! MariaDB has no `VALID UNTIL`: the grant's end is enforced only by Warden revoking the
//! account. Nor can an account carry a comment (`CREATE USER ... COMMENT` is MySQL-only), so
//! the only mark of Warden's accounts is their name: `w_`, the user part and the 12 hex digits
//! of the grant id, e.g. `w_alice_3f2a9c81d0b4`. Accounts named like that are listed as
//! Warden's, and revoking a grant drops the account of its name even if someone else created
//! it (issuing then failed, as the name was taken): that is why the prefix is reserved for
//! Warden.
//!
//! Revoking, in order: lock every account of that name (no new sessions), kill its
//! connections, drop the events and triggers it defined, drop it and kill again whatever
//! connected (or whichever of its events started) in between; then wait until the server lists
//! no connection of the account. A revoke that finds neither an account nor a connection
//! reports [`RevokeResponse::AlreadyGone`].
//!
//! An object keeps its definer's name after the definer is dropped, and then fails with
//! "definer does not exist" (error 1449) whenever it runs: a trigger would fail every write to
//! its table, the application's own included, and an event would stay scheduled, failing at
//! every run. So the account's triggers and events are dropped while it is locked, before the
//! account; if that fails the account stays locked and the revoke is retried. Its views and
//! routines stay: they fail when used and keep no rights. Nothing is dropped and no privilege
//! used when the account made no trigger or event. The server shows whose a trigger is only
//! to those with `TRIGGER` on its table, and an event only to those with `EVENT` on its
//! database: the administrator holds them where its statements grant them (`WITH GRANT
//! OPTION`); granted by any other way (through a MariaDB role, say), they must be given to the
//! administrator too, or what the grant made with them stays unseen.
//!
//! MariaDB writes statements to its general and binary logs as sent, so it is given the
//! account's `mysql_native_password` hash (`IDENTIFIED WITH mysql_native_password AS '*...'`,
//! see `native_password.rs`), never the password; the same goes for the administrator's new
//! password in a rotation. MySQL rewrites passwords out of its logs itself and may not have
//! that plugin (8.4 and later), so it gets `IDENTIFIED BY '...'` and hashes with its default.
//! Which server it is comes from `VERSION()`.
//!
//! Statements run with `NO_BACKSLASH_ESCAPES` added to the session's `sql_mode`, so a string
//! literal is quoted the same on every server (a backslash in a grant statement is literal)
//! and with the session's time zone set to UTC, the zone of `{{expires}}`.
//!
//! The administrator needs `CREATE USER`, the privileges it grants `WITH GRANT OPTION`,
//! `PROCESS` and `CONNECTION ADMIN` (or `SUPER`) to see and kill connections, and `SELECT` on
//! `mysql.user`, and `TRIGGER` and `EVENT` wherever grants get them (see above). Issuing and
//! revoking check `PROCESS` (granted to the account itself, not through a role) first: without
//! it the account's connections cannot be seen, and a revoke would report success while they
//! went on. Issuing also looks the account up in `mysql.user` before making it, as a revoke
//! does, so an administrator that could not revoke an account makes none. Should the lookup
//! fail at a revoke all the same (`SELECT` taken away since), the account is locked where it
//! is likely to be (the host part recorded in the grant's credential as `account_host`, the
//! role's `host`, `%`) and its connections killed before the revoke reports the failure, so a
//! revoked account never stays usable. A privilege the server refuses the administrator is
//! [`Error::Privilege`], with the `GRANT` that gives it.
//!
//! Connection (`[targets.NAME.connection]`):
//! ```toml
//! host = "db.internal"        # required
//! port = 3306                 # optional, default 3306
//! database = "app"            # optional: the default database of Warden's connection
//! tls = "verify-full"         # optional: "verify-full" (default but on loopback), "require",
//!                             # "disable" (default on loopback); see `sql/tls.rs`
//! tls_ca_file = "/etc/warden/db-ca.pem"   # optional: the CAs to trust, else the system's
//! ```
//! Over TLS the driver's rustls is given the CAs to trust (never its own built-in list), or
//! told to take any certificate for `tls = "require"`.
//! Role settings:
//! ```toml
//! grants = ["GRANT SELECT ON app.* TO {{name}}"]   # required
//! host = "10.0.%"             # optional: the account's host part, default "%"
//! ```
//! In the statements, `{{name}}` becomes the account as `'name'@'host'`, `{{password}}` its
//! password and `{{expires}}` the grant's end (UTC), both as quoted string literals; any other
//! placeholder is a settings error. Statements are trusted; only these values are filled in.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use time::OffsetDateTime;
use time::macros::format_description;
use warden_domain::{RequestId, UserName};

use crate::settings::{Problems, SettingProblem};
use crate::sql::pool::{Key, Pool};
use crate::sql::template::{Template, Values, read_grants};
use crate::sql::{
    CONNECT_TIMEOUT, Connection, SESSION_END_TIMEOUT, Tls, account_name, check_unused_key,
    is_account_name, no_answer, public_credential, read_connection, redact, require_account,
    require_admin, require_password, tls, url,
};
use crate::{
    Account, Error, IssueRequest, IssueResponse, Issuer, ListRequest, RevokeRequest,
    RevokeResponse, RotateRootRequest, Secret, Settings,
};

mod native_password;

const KIND: &str = "mariadb";
const DEFAULT_PORT: u16 = 3306;
const DEFAULT_HOST: &str = "%";
/// The longest host part MariaDB stores.
const HOST_MAX: usize = 255;
/// Run on every connection: see the module documentation.
const SESSION_SETUP: &str = "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), \
     'NO_BACKSLASH_ESCAPES'), SESSION time_zone = '+00:00'";
/// MariaDB's error for a statement it cannot parse; its message quotes up to 80 characters of
/// the statement, which can cut a password so that redaction no longer finds it.
const ER_PARSE_ERROR: u16 = 1064;
/// MariaDB's error for killing a connection that has already ended.
const ER_NO_SUCH_THREAD: u16 = 1094;
/// MySQL's answer to a plaintext login at a server with `require_secure_transport`.
const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// Access denied: also MariaDB's answer to a plaintext login at a server with
/// `require_secure_transport`, or to an account `REQUIRE SSL`.
const ER_ACCESS_DENIED: u16 = 1045;
/// The answers to a login, beside those of SQLSTATE class 28 (invalid authorization), that
/// refuse it for what Warden was given: a database the account may not use, one that does not
/// exist, a host the account does not log in from, TLS demanded, a locked account (MySQL's
/// code, then MariaDB's).
const LOGIN_REFUSALS: [u16; 6] = [1044, 1049, 1130, ER_SECURE_TRANSPORT_REQUIRED, 3118, 4151];
/// How long dropping a revoked account's trigger or event waits for a lock. `DROP TRIGGER`
/// waits for every transaction using the trigger's table and meanwhile holds up every new query
/// on it, for up to a day by the server's default: past this the revoke fails and is retried.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// The events and the triggers (with their tables) a definer made, given as the server writes
/// one (`user@host`, unquoted). Compared as bytes: user names are case-sensitive, and
/// `information_schema` compares without case.
const EVENTS_OF: &str = "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS \
     WHERE CAST(DEFINER AS BINARY) = CAST(? AS BINARY)";
const TRIGGERS_OF: &str = "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE \
     FROM information_schema.TRIGGERS WHERE CAST(DEFINER AS BINARY) = CAST(? AS BINARY)";
/// The host parts of the accounts of a user name, which a revoke locks and drops. Issuing runs
/// it too, so that an administrator that could not revoke an account never makes one.
const HOSTS_OF: &str = "SELECT Host FROM mysql.user WHERE User = ?";
/// The connections of a user name, compared as bytes like the definers above: the server
/// lists `USER` without case, and another account whose name differs only in case is not the
/// grant's.
const CONNECTIONS_OF: &str =
    "SELECT ID FROM information_schema.PROCESSLIST WHERE CAST(USER AS BINARY) = CAST(? AS BINARY)";
const CONNECTION_COUNT_OF: &str = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
     WHERE CAST(USER AS BINARY) = CAST(? AS BINARY)";
/// The server's refusals of a statement for a privilege its account lacks: on a database
/// (1044), access denied (1045), another's connection (1095, `KILL`), a table (1142), a column
/// (1143), and a privilege such as `CREATE USER` (1227).
const PRIVILEGE_REFUSALS: [u16; 6] = [1044, 1045, 1095, 1142, 1143, 1227];
/// The key of a MariaDB grant's credential holding its account's host part, so that a revoke
/// that cannot look the account up still knows where to lock it.
const ACCOUNT_HOST: &str = "account_host";

/// Creates MariaDB (or MySQL) accounts for grants.
#[derive(Debug, Default)]
pub struct MariadbIssuer {
    /// Administrator connections between calls.
    pool: Pool<Conn>,
}

impl MariadbIssuer {
    /// The issuer; it keeps administrator connections open between calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `work` on an administrator connection: an idle one from the pool that still
    /// answers a ping, else a new one, in its turn at the server. It goes back to the pool only
    /// if `work` succeeded.
    async fn with_admin<T>(
        &self,
        conn: &Connection,
        user: &str,
        password: &str,
        work: impl AsyncFnOnce(&mut Conn) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let key = Key::new(conn, user, password);
        let _turn = self.pool.admit(&key).await?;
        let mut pooled = None;
        while let Some(mut c) = self.pool.take(&key, |_| true) {
            // A ping that does not come back within the time a new connection gets is a server
            // that hangs, said as soon.
            match tokio::time::timeout(CONNECT_TIMEOUT, c.ping()).await {
                Ok(Ok(())) => {
                    pooled = Some(c);
                    break;
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    return Err(no_answer(&format!(
                        "mariadb at {}:{}",
                        conn.host, conn.port
                    )));
                }
            }
        }
        let mut c = match pooled {
            Some(c) => c,
            None => connect(conn, user, password).await?,
        };
        match work(&mut c).await {
            Ok(v) => {
                self.pool.put(key, c);
                Ok(v)
            }
            Err(e) => {
                // A failed goodbye changes nothing at the server.
                let _ = c.disconnect().await;
                Err(e)
            }
        }
    }
}

#[derive(Debug)]
struct RoleSettings {
    grants: Vec<Template>,
    host: String,
}

/// Every problem with a mariadb target's connection table.
pub fn check_connection(connection: &Settings) -> Vec<SettingProblem> {
    let mut problems = Problems::default();
    read_connection_of(connection, &mut problems);
    problems.into_vec()
}

/// Every problem with a mariadb role's settings.
pub fn check_role(settings: &Settings) -> Vec<SettingProblem> {
    let mut problems = Problems::default();
    read_settings(settings, &mut problems);
    problems.into_vec()
}

fn parse_settings(settings: &Settings) -> Result<RoleSettings, Error> {
    let mut problems = Problems::default();
    let read = read_settings(settings, &mut problems);
    problems.or_first(read)
}

/// Reads a role's settings, noting every problem in `problems`.
fn read_settings(settings: &Settings, problems: &mut Problems) -> RoleSettings {
    for k in settings
        .keys()
        .filter(|k| !matches!(k.as_str(), "grants" | "host"))
    {
        problems.add(
            Some(k),
            format!("unknown setting `{k}` for a mariadb role; known: grants, host"),
        );
    }
    let host = match settings.get("host") {
        None => DEFAULT_HOST.to_owned(),
        Some(serde_json::Value::String(h)) if is_host_pattern(h) => h.clone(),
        Some(_) => {
            problems.add(
                Some("host"),
                format!(
                    "`host` of a mariadb role must be an account host such as \"%\", \"10.0.%\" or \
                     \"app.internal\": up to {HOST_MAX} letters, digits and . - _ % : /"
                ),
            );
            DEFAULT_HOST.to_owned()
        }
    };
    RoleSettings {
        grants: read_grants(KIND, settings, problems),
        host,
    }
}

/// Whether `h` can be the host part of an account: names, addresses, `%`/`_` wildcards and
/// netmasks. Quotes are not among them, though the value is quoted anyway.
fn is_host_pattern(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= HOST_MAX
        && h.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'%' | b':' | b'/')
        })
}

/// A string literal, given the session's `NO_BACKSLASH_ESCAPES`.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// An identifier in backticks. The names of a grant's triggers and events are the grant's
/// choice, so they are quoted like any value, never pasted.
fn identifier(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `` `schema`.`name` ``.
fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", identifier(schema), identifier(name))
}

/// An account: `'user'@'host'`, for the statements Warden runs (see [`literal`]).
fn account(user: &str, host: &str) -> String {
    format!("{}@{}", literal(user), literal(host))
}

/// An account as `information_schema` writes it in `GRANTEE`: `'user'@'host'` with nothing
/// inside doubled or escaped. A value to compare with, never a statement's text.
fn grantee(user: &str, host: &str) -> String {
    format!("'{user}'@'{host}'")
}

/// An account for a statement an administrator types into a client of their own: quoted as
/// identifiers, where a backslash is literal whatever that session's `sql_mode`, not as strings,
/// where it escapes the next character unless `NO_BACKSLASH_ESCAPES` is set.
fn account_to_type(user: &str, host: &str) -> String {
    format!("{}@{}", identifier(user), identifier(host))
}

/// `valid_before` as a quoted `DATETIME` literal in UTC, cut to the second (never later).
fn expires_literal(valid_before: OffsetDateTime) -> Result<String, Error> {
    valid_before
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .map(|t| literal(&t))
        .map_err(|e| Error::Internal(format!("formatting the grant's end: {e}")))
}

/// Whether `e` is the server refusing a statement for a privilege the administrator lacks.
fn is_privilege_refusal(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if PRIVILEGE_REFUSALS.contains(&s.code))
}

/// What went wrong with `what`, run by the administrator `admin`: [`Error::Privilege`] saying
/// what it needs (`needs`, the `GRANT` that gives it) when the server refused it a privilege,
/// else [`Error::Target`].
fn admin_error(what: &str, e: &mysql_async::Error, admin: &Admin, needs: &str) -> Error {
    let said = describe(what, e, &[]);
    if is_privilege_refusal(e) {
        Error::Privilege(format!("{said}; {} needs {needs}", admin.name()))
    } else {
        Error::Target(said)
    }
}

/// The administrator's account as the server matched it at login.
struct Admin {
    user: String,
    host: String,
}

impl Admin {
    /// `user@host`, as said in messages.
    fn name(&self) -> String {
        format!("{}@{}", self.user, self.host)
    }

    /// `GRANT privileges TO` the administrator, for the administrator to type.
    fn grant(&self, privileges: &str) -> String {
        format!(
            "GRANT {privileges} TO {}",
            account_to_type(&self.user, &self.host)
        )
    }
}

/// What went wrong with a statement holding `secrets`, with every one redacted. A parse error
/// of such a statement is reduced to its code, since its quoted excerpt of the statement may
/// hold part of a secret, which redaction would not find.
fn target_error(what: &str, e: &mysql_async::Error, secrets: &[&str]) -> Error {
    Error::Target(describe(what, e, secrets))
}

fn describe(what: &str, e: &mysql_async::Error, secrets: &[&str]) -> String {
    let text = match e {
        mysql_async::Error::Server(s) if s.code == ER_PARSE_ERROR && !secrets.is_empty() => {
            format!(
                "SQL syntax error (error {}); the statement is not shown because it holds a password",
                s.code
            )
        }
        mysql_async::Error::Server(s) => {
            format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state)
        }
        // The driver says "Input/output error: " once for its error and once for the I/O
        // error inside it: the system's own words say it.
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io.to_string(),
        other => other.to_string(),
    };
    redact(&format!("{what}: {text}"), secrets)
}

/// The `IDENTIFIED` clause giving an account `password`, whose `mysql_native_password` hash is
/// `hash`: see the module documentation.
async fn identified(c: &mut Conn, password: &str, hash: &str) -> Result<String, Error> {
    let version: Option<String> = c
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| target_error("asking the server's version", &e, &[]))?;
    Ok(if version.is_some_and(|v| v.contains("MariaDB")) {
        format!("IDENTIFIED WITH mysql_native_password AS {}", literal(hash))
    } else {
        format!("IDENTIFIED BY {}", literal(password))
    })
}

/// A MariaDB target's connection settings, refused with their first problem.
fn connection_of(settings: &Settings) -> Result<Connection, Error> {
    let mut problems = Problems::default();
    let read = read_connection_of(settings, &mut problems);
    problems.or_first(read)
}

/// Reads a MariaDB target's connection settings, noting every problem in `problems`. Its
/// driver reaches the server over TCP only: a host written as a socket directory, as
/// PostgreSQL's may be, would be looked up as a name (and be taken for local, so without TLS).
fn read_connection_of(settings: &Settings, problems: &mut Problems) -> Connection {
    let conn = read_connection(KIND, settings, DEFAULT_PORT, false, problems);
    if conn.host.starts_with('/') {
        problems.add(
            Some("host"),
            format!(
                "the host of a {KIND} target, {}, is a path: Warden reaches MariaDB over TCP, so give the server's name or address (127.0.0.1 for this machine)",
                conn.host
            ),
        );
    }
    conn
}

/// Connects to the target as `user`, failing within [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(conn: &Connection, user: &str, password: &str) -> Result<Conn, Error> {
    let where_ = format!(
        "connecting to mariadb at {}:{} as {user}",
        conn.host, conn.port
    );
    let ssl = ssl_opts(&conn.tls).map_err(|e| Error::Login(format!("{where_}: {e}")))?;
    let opts = OptsBuilder::default()
        .ip_or_hostname(conn.host.clone())
        .tcp_port(conn.port)
        .user(Some(user))
        .pass(Some(password))
        .db_name(conn.database.clone())
        // Otherwise a loopback connection is silently moved to the server's Unix socket, where
        // the same user name may be a different account.
        .prefer_socket(false)
        .ssl_opts(ssl)
        .init(vec![SESSION_SETUP]);
    tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts))
        .await
        .map_err(|_| no_answer(&where_))?
        // Nothing to redact: see the PostgreSQL issuer's `connect`.
        .map_err(|e| {
            let said = connect_failure(&where_, &e, conn);
            match e {
                mysql_async::Error::Server(s)
                    if s.state.starts_with("28") || LOGIN_REFUSALS.contains(&s.code) =>
                {
                    Error::Login(said)
                }
                _ => Error::Unreached(said),
            }
        })
}

/// The driver's TLS options for `tls`: `None` for plaintext. The CAs are given as PEM, the
/// driver's built-in list of them turned off; for `require` any certificate, for any name, is
/// taken.
fn ssl_opts(tls: &Tls) -> Result<Option<SslOpts>, String> {
    if *tls == Tls::Disable {
        return Ok(None);
    }
    // The driver builds its rustls configuration with the process's default provider.
    tls::install_default_provider();
    Ok(Some(match tls {
        Tls::VerifyFull { ca_file } => {
            let pem = tls::to_pem(&tls::trusted(ca_file.as_deref())?);
            SslOpts::default()
                .with_disable_built_in_roots(true)
                .with_root_certs(vec![pem.into()])
        }
        // The driver's verifier, skipped here, still wants CAs to be built with: its own.
        _ => SslOpts::default()
            .with_danger_accept_invalid_certs(true)
            .with_danger_skip_domain_validation(true),
    }))
}

/// Said of a refused login beside a wrong password: MariaDB matches an anonymous account of
/// the client's host before a named account of any host, and refuses the login as that one.
const ANONYMOUS: &str = "or an anonymous account (''@'localhost', which a server fresh from \
    mariadb-install-db has) is matched before the named one for logins from its host: drop it \
    with DROP USER ''@'localhost' (mariadb-secure-installation does)";

/// Why connecting to `conn` failed (`where_`): what is wrong with TLS and how to fix it, else
/// what the server said, with a word on TLS when its refusal is a demand for it.
fn connect_failure(where_: &str, e: &mysql_async::Error, conn: &Connection) -> String {
    if let Some(why) = tls::explain(e, &conn.host, &conn.tls) {
        return format!("{where_}: {why}");
    }
    match e {
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            format!("{where_}: {}", tls::not_offered(&conn.tls))
        }
        mysql_async::Error::Server(s)
            if conn.tls == Tls::Disable && s.code == ER_SECURE_TRANSPORT_REQUIRED =>
        {
            let demanded = tls::demanded("the server takes logins only over TLS");
            format!("{}; {demanded}", describe(where_, e, &[]))
        }
        mysql_async::Error::Server(s) if conn.tls == Tls::Disable && s.code == ER_ACCESS_DENIED => {
            let demanded = tls::demanded(
                "MariaDB refuses a plaintext login with this same error where the server or the \
                 account demands TLS (require_secure_transport, REQUIRE SSL)",
            );
            format!("{}; {ANONYMOUS}; {demanded}", describe(where_, e, &[]))
        }
        mysql_async::Error::Server(s) if s.code == ER_ACCESS_DENIED => {
            format!("{}; {ANONYMOUS}", describe(where_, e, &[]))
        }
        _ => describe(where_, e, &[]),
    }
}

/// Runs `work` on a connection of its own and closes it politely, whatever the outcome.
async fn with_conn<T>(
    conn: &Connection,
    user: &str,
    password: &str,
    work: impl AsyncFnOnce(&mut Conn) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut c = connect(conn, user, password).await?;
    let result = work(&mut c).await;
    // The work is done (or failed) either way; a failed goodbye changes nothing at the server.
    let _ = c.disconnect().await;
    result
}

/// Fails unless the administrator holds `PROCESS` and `CONNECTION ADMIN` (or `SUPER`), granted
/// to its account: without the first the server lists only the administrator's own
/// connections, and without the second it may not kill others', so a revoked account's
/// sessions would go on while the revoke reported success, or never succeeded. The account is
/// looked up as bytes, as the definers are: another account whose name differs only in case
/// holds nothing of this one's.
async fn check_sees_connections(c: &mut Conn) -> Result<Admin, Error> {
    let failed =
        |e: mysql_async::Error| target_error("checking the administrator's privileges", &e, &[]);
    let current: Option<String> = c
        .query_first("SELECT CURRENT_USER()")
        .await
        .map_err(failed)?;
    let Some((user, host)) = current.as_deref().and_then(|u| u.rsplit_once('@')) else {
        return Err(Error::Target(format!(
            "the server named the current account {current:?}"
        )));
    };
    // MySQL spells the second `CONNECTION_ADMIN`.
    for (privileges, lacking) in [
        (
            "'PROCESS', 'SUPER'",
            "PROCESS, so it cannot see the connections of the accounts it revokes",
        ),
        (
            "'CONNECTION ADMIN', 'CONNECTION_ADMIN', 'SUPER'",
            "CONNECTION ADMIN, so it cannot end the connections of the accounts it revokes",
        ),
    ] {
        let held: Option<u64> = c
            .exec_first(
                format!(
                    "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES \
                     WHERE CAST(GRANTEE AS BINARY) = CAST(? AS BINARY) \
                     AND PRIVILEGE_TYPE IN ({privileges})"
                ),
                (grantee(user, host),),
            )
            .await
            .map_err(failed)?;
        if held.unwrap_or(0) == 0 {
            return Err(Error::Privilege(format!(
                "{user}@{host} lacks {lacking}: GRANT PROCESS, CONNECTION ADMIN ON *.* TO {}",
                account_to_type(user, host)
            )));
        }
    }
    Ok(Admin {
        user: user.to_owned(),
        host: host.to_owned(),
    })
}

/// What the administrator needs to look accounts up, and the `GRANT` that gives it.
fn needs_to_read_accounts(admin: &Admin) -> String {
    format!(
        "SELECT on mysql.user to find the accounts it revokes: {}",
        admin.grant("SELECT ON mysql.user")
    )
}

/// The host parts of the accounts named `name`.
async fn hosts_of(c: &mut Conn, name: &str, admin: &Admin) -> Result<Vec<String>, Error> {
    c.exec(HOSTS_OF, (name,)).await.map_err(|e| {
        admin_error(
            &format!("looking up account {name}"),
            &e,
            admin,
            &needs_to_read_accounts(admin),
        )
    })
}

/// Kills every connection of `user`; returns how many there were.
async fn kill_connections(c: &mut Conn, user: &str, admin: &Admin) -> Result<usize, Error> {
    let failed = |e: mysql_async::Error| {
        admin_error(
            &format!("killing the connections of {user}"),
            &e,
            admin,
            &format!(
                "PROCESS and CONNECTION ADMIN: {}",
                admin.grant("PROCESS, CONNECTION ADMIN ON *.*")
            ),
        )
    };
    let ids: Vec<u64> = c.exec(CONNECTIONS_OF, (user,)).await.map_err(failed)?;
    for id in &ids {
        match c.query_drop(format!("KILL CONNECTION {id}")).await {
            Err(mysql_async::Error::Server(s)) if s.code == ER_NO_SUCH_THREAD => {}
            other => other.map_err(failed)?,
        }
    }
    Ok(ids.len())
}

/// Waits until the server lists no connection of `user`: a killed connection lingers until
/// its thread notices.
async fn wait_connections_gone(c: &mut Conn, user: &str) -> Result<(), Error> {
    let deadline = Instant::now() + SESSION_END_TIMEOUT;
    loop {
        let left: Option<u64> = c
            .exec_first(CONNECTION_COUNT_OF, (user,))
            .await
            .map_err(|e| target_error(&format!("counting the connections of {user}"), &e, &[]))?;
        match left {
            None | Some(0) => return Ok(()),
            Some(n) if Instant::now() >= deadline => {
                return Err(Error::Target(format!(
                    "{n} connection(s) of {user} were still open {} s after being killed",
                    SESSION_END_TIMEOUT.as_secs()
                )));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A revoke that could not look up the accounts named `name` (`failed`): so that none stays
/// usable meanwhile, locks the account at each of `hosts` where there is one and kills every
/// connection of the name, then returns `failed` saying what was done. The revoke is retried
/// and drops the account once the lookup works.
async fn lock_unlisted(
    c: &mut Conn,
    name: &str,
    hosts: &[String],
    admin: &Admin,
    failed: Error,
) -> Error {
    let mut said = Vec::new();
    for host in hosts {
        let grantee = account(name, host);
        match c
            .query_drop(format!("ALTER USER IF EXISTS {grantee} ACCOUNT LOCK"))
            .await
        {
            // A note, not an error, where there is no such account.
            Ok(()) if c.get_warnings() == 0 => said.push(format!("locked account {grantee}")),
            Ok(()) => said.push(format!("found no account {grantee}")),
            Err(e) => said.push(describe(&format!("locking account {grantee}"), &e, &[])),
        }
    }
    match kill_connections(c, name, admin).await {
        Ok(n) => said.push(format!("killed {n} connection(s) of {name}")),
        Err(e) => said.push(message(e)),
    }
    let said = format!(
        "meanwhile, so that it cannot be used: {}; the account is dropped once a retry can look it up",
        said.join(", ")
    );
    match failed {
        Error::Privilege(m) => Error::Privilege(format!("{m}; {said}")),
        other => Error::Target(format!("{}; {said}", message(other))),
    }
}

/// What `e` says, without the words its kind begins with.
fn message(e: Error) -> String {
    match e {
        Error::Privilege(m) | Error::Target(m) => m,
        other => other.to_string(),
    }
}

/// Drops the events and triggers `user`@`host` defined (see the module documentation), events
/// first so nothing runs as the account while its triggers go. Runs no statement but the two
/// lookups when there is none.
async fn drop_definer_objects(c: &mut Conn, user: &str, host: &str) -> Result<(), Error> {
    let grantee = account(user, host);
    let definer = format!("{user}@{host}");
    let listed = |e: mysql_async::Error| {
        target_error(
            &format!("listing the events and triggers of account {grantee}"),
            &e,
            &[],
        )
    };
    let events: Vec<(String, String)> = c.exec(EVENTS_OF, (&definer,)).await.map_err(listed)?;
    let triggers: Vec<(String, String, String)> =
        c.exec(TRIGGERS_OF, (&definer,)).await.map_err(listed)?;
    if events.is_empty() && triggers.is_empty() {
        return Ok(());
    }
    // For these drops alone: a failure discards the connection, and success sets it back.
    set_lock_wait(c, &LOCK_WAIT.as_secs().to_string()).await?;
    for (schema, name) in &events {
        drop_event(c, &grantee, schema, name).await?;
    }
    for (schema, name, table) in &triggers {
        drop_trigger(c, &grantee, schema, name, table).await?;
    }
    set_lock_wait(c, "DEFAULT").await
}

/// Sets the session's `lock_wait_timeout` to `seconds` (a number or `DEFAULT`).
async fn set_lock_wait(c: &mut Conn, seconds: &str) -> Result<(), Error> {
    c.query_drop(format!("SET SESSION lock_wait_timeout = {seconds}"))
        .await
        .map_err(|e| target_error(&format!("setting lock_wait_timeout to {seconds}"), &e, &[]))
}

/// Drops an event `grantee` defined. Dropped rather than disabled: `ALTER EVENT ... DISABLE`
/// makes whoever runs it the event's definer, so the event kept would name Warden's
/// administrator as its author, misleading whoever reviews what the grant did.
async fn drop_event(c: &mut Conn, grantee: &str, schema: &str, name: &str) -> Result<(), Error> {
    let event = qualified(schema, name);
    c.query_drop(format!("DROP EVENT IF EXISTS {event}"))
        .await
        .map_err(|e| {
            left_behind(
                &format!("dropping event {event} of account {grantee}"),
                &e,
                "it would stay scheduled and fail at every run once the account is gone",
                &format!("the administrator needs EVENT on {}.*", identifier(schema)),
            )
        })
}

/// Drops a trigger `grantee` defined on `schema`.`table`.
async fn drop_trigger(
    c: &mut Conn,
    grantee: &str,
    schema: &str,
    name: &str,
    table: &str,
) -> Result<(), Error> {
    let (trigger, table) = (qualified(schema, name), qualified(schema, table));
    c.query_drop(format!("DROP TRIGGER IF EXISTS {trigger}"))
        .await
        .map_err(|e| {
            left_behind(
                &format!("dropping trigger {trigger} of account {grantee}"),
                &e,
                &format!("it would fail every write to {table} once the account is gone"),
                &format!(
                    "the administrator needs TRIGGER on {table}, and no transaction may use that \
                     table for more than {} s",
                    LOCK_WAIT.as_secs()
                ),
            )
        })
}

/// A revoked account's trigger or event that could not be dropped: what failed, the harm it
/// would do left, and what dropping it `needs`. The account is kept, locked.
fn left_behind(what: &str, e: &mysql_async::Error, harm: &str, needs: &str) -> Error {
    let said = format!(
        "{}; left, {harm}, so the account is kept, locked, and the revoke is retried: {needs} \
         (or drop it by hand)",
        describe(what, e, &[])
    );
    if is_privilege_refusal(e) {
        Error::Privilege(said)
    } else {
        Error::Target(said)
    }
}

/// Warden records none of this kind's sessions: a grant's login connects to the database
/// directly, past Warden ([`crate::Issuer::records_sessions`]).
pub const RECORDS_SESSIONS: bool = false;

#[async_trait]
impl Issuer for MariadbIssuer {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn records_sessions(&self) -> bool {
        RECORDS_SESSIONS
    }

    fn check_request(
        &self,
        settings: &Settings,
        public_key: Option<&str>,
        _holder: crate::Holder,
    ) -> Result<(), Error> {
        parse_settings(settings)?;
        check_unused_key(public_key)
    }

    fn account_name(&self, grant: RequestId, user: &UserName) -> Option<String> {
        Some(account_name(grant, user))
    }

    async fn issue(&self, req: IssueRequest<'_>) -> Result<IssueResponse, Error> {
        let conn = connection_of(req.connection)?;
        let settings = parse_settings(req.settings)?;
        let admin = require_admin(req.admin, req.target)?;
        let name = require_account(req.account)?;
        let mut public = public_credential(KIND, name, &conn)?;
        // For a revoke that cannot look the account up: see `revoke`.
        public[ACCOUNT_HOST] = settings.host.clone().into();
        let password = require_password(req.password, "new account")?;
        let hash = native_password::hash(password);
        let secrets = [password, hash.as_str()];
        let grantee = account(name, &settings.host);
        let (password_literal, expires) = (literal(password), expires_literal(req.valid_before)?);
        let values = Values {
            name: &grantee,
            password: &password_literal,
            expires: &expires,
        };

        self.with_admin(&conn, &admin.username, admin.password.expose(), async |c| {
            // An account whose sessions could not be ended, or that could not be found to be
            // revoked, is not made at all.
            let admin = check_sees_connections(c).await?;
            hosts_of(c, name, &admin).await?;
            let identified = identified(c, password, &hash).await?;
            c.query_drop(format!("CREATE USER {grantee} {identified}"))
                .await
                .map_err(|e| target_error(&format!("creating account {grantee}"), &e, &secrets))?;
            for (i, grant) in settings.grants.iter().enumerate() {
                let Err(e) = c.query_drop(grant.render(values)).await else {
                    continue;
                };
                let what = format!(
                    "grant statement {} ({:?}) for account {grantee}",
                    i + 1,
                    grant.source()
                );
                // Only a statement holding the password can make the server quote it.
                let in_statement: &[&str] = if grant.uses_password() { &secrets } else { &[] };
                let failed = describe(&what, &e, in_statement);
                return Err(
                    match c.query_drop(format!("DROP USER IF EXISTS {grantee}")).await {
                        Ok(()) => Error::Undone(format!("{failed}; the account was dropped again")),
                        Err(e) => Error::Target(format!(
                            "{failed}; {}",
                            describe(
                                "dropping the account again failed too, revoking will retry",
                                &e,
                                &[],
                            )
                        )),
                    },
                );
            }
            Ok(())
        })
        .await?;

        Ok(IssueResponse {
            public,
            secret: Some(Secret::new(serde_json::json!({
                "password": password,
                "url": url("mysql", name, password, &conn),
            }))),
        })
    }

    async fn revoke(&self, req: RevokeRequest<'_>) -> Result<RevokeResponse, Error> {
        let conn = connection_of(req.connection)?;
        let admin = require_admin(req.admin, req.target)?;
        let name = require_account(req.account)?;
        // Where the account is, should the server not say: where it was made, where the role
        // makes accounts now, the default.
        let mut likely_hosts: Vec<String> = Vec::new();
        let recorded = req.public.get(ACCOUNT_HOST).and_then(|h| h.as_str());
        let role = parse_settings(req.settings).ok().map(|s| s.host);
        for host in [recorded, role.as_deref(), Some(DEFAULT_HOST)]
            .into_iter()
            .flatten()
        {
            if is_host_pattern(host) && !likely_hosts.iter().any(|h| h == host) {
                likely_hosts.push(host.to_owned());
            }
        }
        self.with_admin(&conn, &admin.username, admin.password.expose(), async |c| {
            let admin = check_sees_connections(c).await?;
            // Every host part: the role's `host` setting may have changed since issuing.
            let hosts = match hosts_of(c, name, &admin).await {
                Ok(hosts) => hosts,
                Err(e) => return Err(lock_unlisted(c, name, &likely_hosts, &admin, e).await),
            };
            for host in &hosts {
                let grantee = account(name, host);
                c.query_drop(format!("ALTER USER {grantee} ACCOUNT LOCK"))
                    .await
                    .map_err(|e| {
                        admin_error(
                            &format!("locking account {grantee}"),
                            &e,
                            &admin,
                            &format!("CREATE USER: {}", admin.grant("CREATE USER ON *.*")),
                        )
                    })?;
            }
            let mut killed = kill_connections(c, name, &admin).await?;
            // Before the drop, so that a failure leaves the account locked for the retry.
            for host in &hosts {
                drop_definer_objects(c, name, host).await?;
            }
            for host in &hosts {
                let grantee = account(name, host);
                c.query_drop(format!("DROP USER IF EXISTS {grantee}"))
                    .await
                    .map_err(|e| {
                        admin_error(
                            &format!("dropping account {grantee}"),
                            &e,
                            &admin,
                            &format!("CREATE USER: {}", admin.grant("CREATE USER ON *.*")),
                        )
                    })?;
            }
            killed += kill_connections(c, name, &admin).await?;
            wait_connections_gone(c, name).await?;
            Ok(if hosts.is_empty() && killed == 0 {
                RevokeResponse::AlreadyGone
            } else {
                RevokeResponse::Revoked
            })
        })
        .await
    }

    async fn list_accounts(&self, req: ListRequest<'_>) -> Result<Vec<Account>, Error> {
        let conn = connection_of(req.connection)?;
        let admin = require_admin(req.admin, req.target)?;
        let users: Vec<String> = self
            .with_admin(&conn, &admin.username, admin.password.expose(), async |c| {
                // Listing is how a stored credential is tried: it must do for revoking too.
                let admin = check_sees_connections(c).await?;
                c.query(
                    "SELECT DISTINCT User FROM mysql.user WHERE LEFT(User, 2) = 'w_' ORDER BY User",
                )
                .await
                .map_err(|e| {
                    admin_error(
                        "listing accounts",
                        &e,
                        &admin,
                        &needs_to_read_accounts(&admin),
                    )
                })
            })
            .await?;
        // MariaDB keeps no account comment, so the grant is not known from the target.
        Ok(users
            .into_iter()
            .filter(|u| is_account_name(u))
            .map(|name| Account { name, grant: None })
            .collect())
    }

    async fn log_in(&self, req: ListRequest<'_>) -> Result<(), Error> {
        let conn = connection_of(req.connection)?;
        let admin = require_admin(req.admin, req.target)?;
        with_conn(
            &conn,
            &admin.username,
            admin.password.expose(),
            async |_| Ok(()),
        )
        .await
    }

    async fn rotate_root(&self, req: RotateRootRequest<'_>) -> Result<(), Error> {
        let conn = connection_of(req.connection)?;
        let new_password = require_password(Some(req.new_password), "administrator")?;
        let hash = native_password::hash(new_password);
        let failed = |e: mysql_async::Error| {
            target_error(
                "changing the administrator's password",
                &e,
                &[new_password, &hash],
            )
        };
        // A connection of its own: it authenticated with the password this call replaces.
        with_conn(
            &conn,
            &req.admin.username,
            req.admin.password.expose(),
            async |c| {
                // The account as the server matched it. `ALTER USER CURRENT_USER()` would do, but
                // MariaDB 10.11 accepts it and changes nothing.
                let current: Option<String> = c
                    .query_first("SELECT CURRENT_USER()")
                    .await
                    .map_err(failed)?;
                let (user, host) = current
                    .as_deref()
                    .and_then(|u| u.rsplit_once('@'))
                    .ok_or_else(|| {
                        Error::Target(format!("the server named the current account {current:?}"))
                    })?;
                let identified = identified(c, new_password, &hash).await?;
                c.query_drop(format!("ALTER USER {} {identified}", account(user, host)))
                    .await
                    .map_err(failed)
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn settings(v: serde_json::Value) -> Settings {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn quoting_keeps_values_inside_their_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(account("w_a_000000000001", "%"), "'w_a_000000000001'@'%'");
        assert_eq!(grantee("o'ad\\min", "%"), "'o'ad\\min'@'%'");
        assert_eq!(account_to_type("o'a`d\\min", "%"), "`o'a``d\\min`@`%`");
        assert_eq!(qualified("app", "a`b"), "`app`.`a``b`");
        assert_eq!(
            expires_literal(datetime!(2026-01-01 12:00:30.9 +01:00)).unwrap(),
            "'2026-01-01 11:00:30'"
        );
    }

    #[test]
    fn an_unreachable_server_is_described_once() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = mysql_async::Error::Io(mysql_async::IoError::Io(refused));
        let said = describe("connecting to mariadb at 127.0.0.1:1 as a", &e, &[]);
        assert_eq!(
            said,
            "connecting to mariadb at 127.0.0.1:1 as a: connection refused"
        );
    }

    #[test]
    fn settings_are_checked() {
        let conn = settings(serde_json::json!({"host": "db"}));
        let ok = settings(serde_json::json!({"grants": ["GRANT SELECT ON app.* TO {{name}}"]}));
        assert!(check_connection(&conn).is_empty() && check_role(&ok).is_empty());
        // Reached over TCP only: a socket directory is no host (nor a local one, without TLS).
        let socket = settings(serde_json::json!({"host": "/run/mysqld"}));
        let [problem] = check_connection(&socket).try_into().unwrap();
        assert_eq!(problem.key.as_deref(), Some("host"));
        assert!(
            problem.message.contains("Warden reaches MariaDB over TCP"),
            "{problem:?}"
        );
        let with_host = settings(
            serde_json::json!({"grants": ["GRANT SELECT ON app.* TO {{name}}"], "host": "10.0.%"}),
        );
        assert_eq!(parse_settings(&with_host).unwrap().host, "10.0.%");
        let err = |s: serde_json::Value| parse_settings(&settings(s)).unwrap_err().to_string();
        assert!(
            err(serde_json::json!({"grants": ["G {{name}}"], "host": "a'b"})).contains("`host`")
        );
        assert!(err(serde_json::json!({"grants": ["G {{name}}"], "host": ""})).contains("`host`"));
        assert!(
            err(serde_json::json!({"grants": ["G {{name}}"], "x": 1}))
                .contains("unknown setting `x`")
        );
        assert!(err(serde_json::json!({"grants": ["G {{nmae}}"]})).contains("{{nmae}}"));
        // Every problem of a connection table, each with its setting.
        let problems = check_connection(&settings(
            serde_json::json!({"host": "db", "tls": true, "ssl": "on"}),
        ));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].key.as_deref(), Some("ssl"));
        assert!(
            problems[0]
                .message
                .contains("unknown connection setting `ssl`")
        );
        assert_eq!(problems[1].key.as_deref(), Some("tls"));
        assert!(
            problems[1]
                .message
                .contains("connection setting `tls` of a mariadb target must be")
        );
    }
}
