//! What the SQL database issuers share: account names, connection settings, the inputs every
//! call needs, connection URLs and keeping secrets out of error messages.
//!
//! Account names are `w_` + the user name (mapped to `[a-z0-9_]`, at most 16 characters) +
//! `_` + the last 12 hex digits of the grant id, e.g. `w_alice_3f2a9c81d0b4`. The grant id is a
//! UUIDv7 whose low bits are random, so the name is unique per grant while still telling an
//! administrator whose account it is. At most 31 characters, it fits MySQL's 32-character
//! limit and PostgreSQL's 63. The `w_` prefix is reserved for Warden: accounts named like this
//! are treated as Warden's by reconciliation, so people must not create such accounts by hand.

pub(crate) mod pool;
pub(crate) mod template;
pub(crate) mod tls;

use std::time::Duration;

use warden_domain::{RequestId, TargetName, UserName};

use crate::settings::Problems;
use crate::{AdminCredential, Error, Secret, Settings};

pub(crate) use tls::Tls;

/// How long connecting (including authentication) to a target may take, so a target that is
/// down fails a request quickly instead of holding it up.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A target that did not answer `what` within [`CONNECT_TIMEOUT`]: a server that hangs, said
/// as soon as a new connection would be given up.
pub(crate) fn no_answer(what: &str) -> Error {
    Error::Unreached(format!(
        "{what}: no answer within {} s",
        CONNECT_TIMEOUT.as_secs()
    ))
}

/// How long a revoke waits for the sessions it ended to disappear from the server.
pub(crate) const SESSION_END_TIMEOUT: Duration = Duration::from_secs(5);

/// Every account Warden creates starts with this.
const PREFIX: &str = "w_";
/// The most characters of the user name kept in an account name.
const USER_PART_MAX: usize = 16;
/// Hex digits of the grant id at the end of an account name.
const TAIL_LEN: usize = 12;

/// The 12 lowercase hex digits of `grant` that end its account's name: its low 48 bits, which
/// are random in a UUIDv7.
pub(crate) fn grant_tail(grant: RequestId) -> String {
    format!("{:012x}", grant.as_u128() & 0xffff_ffff_ffff)
}

/// The account Warden creates at a database target for `grant`, requested by `user`.
pub(crate) fn account_name(grant: RequestId, user: &UserName) -> String {
    let user_part: String = user
        .as_str()
        .chars()
        .take(USER_PART_MAX)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    format!("{PREFIX}{user_part}_{}", grant_tail(grant))
}

/// Whether `name` has exactly the shape [`account_name`] produces. Only such names are ever
/// created, revoked or listed, so a typo in a lease can never drop somebody else's account.
pub(crate) fn is_account_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let Some((user_part, tail)) = rest.split_at_checked(rest.len().saturating_sub(TAIL_LEN)) else {
        return false;
    };
    let Some(user_part) = user_part.strip_suffix('_') else {
        return false;
    };
    (1..=USER_PART_MAX).contains(&user_part.len())
        && user_part
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && tail.len() == TAIL_LEN
        && tail
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where a database target is and how Warden's connections to it are protected, from its
/// `[targets.NAME.connection]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Connection {
    pub host: String,
    pub port: u16,
    pub database: Option<String>,
    pub tls: Tls,
}

/// The settings a connection table may hold.
const CONNECTION_SETTINGS: &[&str] = &["host", "port", "database", "tls", "tls_ca_file"];

/// Parses a connection table for a target of `kind`, refusing it with its first problem.
/// `database` is required when `needs_database` is set (PostgreSQL connects to one database;
/// MariaDB need not).
pub(crate) fn parse_connection(
    kind: &str,
    settings: &Settings,
    default_port: u16,
    needs_database: bool,
) -> Result<Connection, Error> {
    let mut problems = Problems::default();
    let read = read_connection(kind, settings, default_port, needs_database, &mut problems);
    problems.or_first(read)
}

/// Reads a connection table like [`parse_connection`], noting every problem in `problems`
/// (what could not be read takes its default, or is left empty, meanwhile).
pub(crate) fn read_connection(
    kind: &str,
    settings: &Settings,
    default_port: u16,
    needs_database: bool,
    problems: &mut Problems,
) -> Connection {
    for k in settings
        .keys()
        .filter(|k| !CONNECTION_SETTINGS.contains(&k.as_str()))
    {
        problems.add(
            Some(k),
            format!(
                "unknown connection setting `{k}` for a {kind} target; known: {} \
                 (the administrator's password is not a setting: use `warden target set-credential`)",
                CONNECTION_SETTINGS.join(", ")
            ),
        );
    }
    let text = |key: &str| -> Result<Option<String>, Error> {
        match settings.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(Error::Settings(format!(
                "connection setting `{key}` of a {kind} target must be a non-empty string"
            ))),
        }
    };
    if !settings.contains_key("host") {
        problems.add(
            None,
            format!("a {kind} target needs `host = \"...\"` in its connection table"),
        );
    }
    let host = problems
        .check("host", text("host"))
        .flatten()
        .unwrap_or_default();
    let port = match settings.get("port") {
        None => Ok(default_port),
        Some(v) => v
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Error::Settings(format!(
                    "connection setting `port` of a {kind} target must be an integer from 1 to 65535"
                ))
            }),
    };
    let port = problems.check("port", port).unwrap_or(default_port);
    let database = problems.check("database", text("database")).flatten();
    if needs_database && !settings.contains_key("database") {
        problems.add(
            None,
            format!("a {kind} target needs `database = \"...\"` in its connection table"),
        );
    }
    let tls = tls::read(kind, settings, &host, problems);
    Connection {
        host,
        port,
        database,
        tls,
    }
}

/// Checks a public key sent with a request for an account. The account does not use it, but
/// it is stored with the request, so it must be what it claims: never a private key, or
/// another file, sent by mistake.
pub(crate) fn check_unused_key(public_key: Option<&str>) -> Result<(), Error> {
    match public_key {
        Some(text) => crate::ssh_cert::user_key(text)
            .map(|_| ())
            .map_err(|e| Error::Input(format!("public_key: {e}"))),
        None => Ok(()),
    }
}

/// The administrator credential, or an error telling the operator how to store one.
pub(crate) fn require_admin<'a>(
    admin: Option<&'a AdminCredential>,
    target: &TargetName,
) -> Result<&'a AdminCredential, Error> {
    admin.ok_or_else(|| {
        Error::Input(format!(
            "no administrator credential is stored for target {target}; run `warden target set-credential {target}`"
        ))
    })
}

/// The account recorded in the lease, checked to be one Warden names.
pub(crate) fn require_account(account: Option<&str>) -> Result<&str, Error> {
    let account = account
        .ok_or_else(|| Error::Input("no account name was recorded for this grant".into()))?;
    if is_account_name(account) {
        Ok(account)
    } else {
        Err(Error::Input(format!(
            "{account:?} is not an account name Warden creates (w_<user>_<12 hex digits>)"
        )))
    }
}

/// A password generated by the server. Databases cannot store a NUL character, so one is
/// refused here rather than truncated by the server.
pub(crate) fn require_password<'a>(
    password: Option<&'a Secret<String>>,
    what: &str,
) -> Result<&'a str, Error> {
    let password = password
        .ok_or_else(|| Error::Input(format!("no password was generated for the {what}")))?
        .expose();
    if password.is_empty() || password.contains('\0') {
        return Err(Error::Input(format!(
            "the generated password for the {what} is empty or contains a NUL character"
        )));
    }
    Ok(password)
}

/// The public part of a database grant's credential: where and as whom to log in, and how to
/// connect as strictly as Warden does (`tls`, and under `verify-full` with a `tls_ca_file` the
/// CAs it holds, as PEM: certificates are public, and a client on another machine has no copy
/// of that file). `warden db connect` hands them to `psql` or `mariadb`.
pub(crate) fn public_credential(
    kind: &str,
    username: &str,
    conn: &Connection,
) -> Result<serde_json::Value, Error> {
    let mut public = serde_json::json!({
        "kind": kind,
        "username": username,
        "host": conn.host,
        "port": conn.port,
        "database": conn.database,
        "tls": conn.tls.name(),
    });
    if let Tls::VerifyFull {
        ca_file: Some(path),
    } = &conn.tls
    {
        let pem = tls::to_pem(&tls::trusted(Some(path)).map_err(Error::Login)?);
        public["tls_ca"] = String::from_utf8_lossy(&pem).into_owned().into();
    }
    Ok(public)
}

/// A connection URL such as `postgresql://user:password@host:port/database`, with every part
/// percent-encoded (RFC 3986) so it reaches the target's server whatever its parts hold: in
/// the user name, password and database every byte but the unreserved ones, and the host is
///
/// - a socket directory (PostgreSQL's `host = "/run/postgresql"`) encoded whole, `/` too, as
///   libpq reads it (`@%2Frun%2Fpostgresql:5432`): left as it is, its first `/` would end an
///   empty host, and libpq would connect to its default socket, another server perhaps, with
///   the grant's password;
/// - an IPv6 address in brackets, its zone's `%` as `%25` (RFC 6874: `[fe80::1%25eth0]`);
/// - else a name or IPv4 address, whatever is not unreserved encoded.
///
/// MariaDB targets are reached over TCP only (a path is refused as their host), so their
/// `mysql://` URL never holds a socket.
///
/// A `postgresql://` URL ends with the target's TLS mode (`?sslmode=verify-full`): without it
/// libpq would try TLS and fall back to plaintext (`prefer`), weaker than what Warden itself
/// demands of the target. `verify-full` then checks the server against the client's own roots
/// (`~/.postgresql/root.crt`) unless `PGSSLROOTCERT` names others, as the CLI's printed
/// `export` lines do; with neither, libpq refuses to connect rather than trust the server
/// unchecked.
pub(crate) fn url(scheme: &str, user: &str, password: &str, conn: &Connection) -> String {
    let host = if !conn.host.starts_with('/') && conn.host.contains(':') {
        let literal = conn.host.split(':').map(percent_encode);
        format!("[{}]", literal.collect::<Vec<_>>().join(":"))
    } else {
        percent_encode(&conn.host)
    };
    let mut url = format!(
        "{scheme}://{}:{}@{host}:{}",
        percent_encode(user),
        percent_encode(password),
        conn.port
    );
    if let Some(db) = &conn.database {
        url.push('/');
        url.push_str(&percent_encode(db));
    }
    if scheme == "postgresql" {
        url.push_str("?sslmode=");
        url.push_str(conn.tls.name());
    }
    url
}

/// Encodes every byte except RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` with every occurrence of each secret replaced, for error messages built from what a
/// server said about a statement that contained them.
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(n: u128) -> RequestId {
        RequestId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn account_names_are_short_unique_and_recognised() {
        let user: UserName = "alice.smith-jones".parse().unwrap();
        let name = account_name(grant(0x0191_0000_0000_7000_8000_3f2a_9c81_d0b4), &user);
        assert_eq!(name, "w_alice_smith_jone_3f2a9c81d0b4");
        assert!(name.len() <= 31);
        assert!(is_account_name(&name));

        let long: UserName = "a234567890123456789012345678901234567890".parse().unwrap();
        let name = account_name(grant(u128::MAX), &long);
        assert_eq!(name.len(), 31);
        assert!(is_account_name(&name));
        assert_ne!(account_name(grant(1), &user), account_name(grant(2), &user));

        for bad in [
            "alice",
            "w_",
            "w__3f2a9c81d0b4",
            "w_alice_3f2a9c81d0b",
            "w_alice_3F2A9C81D0B4",
            "w_alice3f2a9c81d0b4",
            "w_Alice_3f2a9c81d0b4",
            "w_a'b_3f2a9c81d0b4",
            "w_12345678901234567_3f2a9c81d0b4",
            "x_alice_3f2a9c81d0b4",
        ] {
            assert!(
                !is_account_name(bad),
                "{bad} must not be taken for Warden's"
            );
        }
    }

    #[test]
    fn connections_are_checked() {
        let s = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let conn = parse_connection(
            "postgres",
            &s(serde_json::json!({"host": "db", "database": "app"})),
            5432,
            true,
        )
        .unwrap();
        assert_eq!(
            conn,
            Connection {
                host: "db".into(),
                port: 5432,
                database: Some("app".into()),
                tls: Tls::VerifyFull { ca_file: None },
            }
        );
        let err = |v: serde_json::Value, needs_db: bool| {
            parse_connection("postgres", &s(v), 5432, needs_db)
                .unwrap_err()
                .to_string()
        };
        assert!(err(serde_json::json!({"database": "app"}), true).contains("needs `host"));
        assert!(err(serde_json::json!({"host": "db"}), true).contains("needs `database"));
        assert!(
            err(serde_json::json!({"host": "db", "port": 0}), false).contains("from 1 to 65535")
        );
        assert!(
            err(serde_json::json!({"host": "db", "port": "5432"}), false)
                .contains("from 1 to 65535")
        );
        assert!(
            err(serde_json::json!({"host": "db", "password": "x"}), false)
                .contains("unknown connection setting `password`")
        );
        assert!(
            parse_connection(
                "mariadb",
                &s(serde_json::json!({"host": "db", "port": 3307})),
                3306,
                false
            )
            .is_ok_and(|c| c.port == 3307 && c.database.is_none())
        );
        // TLS settings are read with the rest, and their problems reported like theirs.
        let tls = parse_connection(
            "mariadb",
            &s(serde_json::json!({
                "host": "db", "tls": "verify-full", "tls_ca_file": "/etc/warden/db-ca.pem"
            })),
            3306,
            false,
        )
        .unwrap();
        assert_eq!(
            tls.tls,
            Tls::VerifyFull {
                ca_file: Some("/etc/warden/db-ca.pem".into())
            }
        );
        assert!(
            err(
                serde_json::json!({"host": "db", "database": "app", "tls": "yes"}),
                true
            )
            .contains("connection setting `tls` of a postgres target must be")
        );
        assert!(
            err(
                serde_json::json!({"host": "db", "tls_ca": "/ca.pem"}),
                false
            )
            .contains("known: host, port, database, tls, tls_ca_file")
        );
    }

    /// A connection table's every problem is found, each with the setting it is in (none for
    /// one the table lacks), in the order an issue would refuse with them.
    #[test]
    fn every_problem_of_a_connection_is_found_with_its_setting() {
        let s = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let found = |kind: &str, v: serde_json::Value| -> Vec<(Option<String>, String)> {
            crate::check_connection(kind, &s(v))
                .into_iter()
                .map(|p| (p.key, p.message))
                .collect()
        };
        let problems = found(
            "postgres",
            serde_json::json!({
                "host": "db", "database": "app", "password": "x", "port": 0, "tls": "prefer"
            }),
        );
        let keys: Vec<_> = problems.iter().map(|(k, _)| k.as_deref()).collect();
        assert_eq!(
            keys,
            [Some("password"), Some("port"), Some("tls")],
            "{problems:?}"
        );
        assert!(
            problems[0]
                .1
                .contains("unknown connection setting `password`")
        );
        assert!(problems[1].1.contains("from 1 to 65535"));
        assert!(problems[2].1.contains("never falls back"));
        // The runtime reader refuses with the first of them.
        assert_eq!(
            parse_connection(
                "postgres",
                &s(serde_json::json!({
                    "host": "db", "database": "app", "password": "x", "port": 0, "tls": "prefer"
                })),
                5432,
                true
            )
            .unwrap_err()
            .to_string(),
            format!("invalid settings: {}", problems[0].1)
        );

        let problems = found(
            "mariadb",
            serde_json::json!({
                "port": "3306", "tls": "require", "tls_ca_file": "ca.pem", "database": 1
            }),
        );
        let keys: Vec<_> = problems.iter().map(|(k, _)| k.as_deref()).collect();
        assert_eq!(
            keys,
            [None, Some("port"), Some("database"), Some("tls_ca_file")],
            "{problems:?}"
        );
        assert!(problems[0].1.contains("needs `host"), "{problems:?}");
        assert!(problems[3].1.contains("absolute path"), "{problems:?}");
    }

    #[test]
    fn urls_encode_every_part() {
        let conn = Connection {
            host: "::1".into(),
            port: 5432,
            database: Some("my db".into()),
            tls: Tls::Disable,
        };
        assert_eq!(
            url("postgresql", "w_a_000000000001", "p@ss:w/rd%?#é", &conn),
            "postgresql://w_a_000000000001:p%40ss%3Aw%2Frd%25%3F%23%C3%A9@[::1]:5432/my%20db?sslmode=disable"
        );
        // libpq is held to the target's TLS mode, not its default that falls back to
        // plaintext; a mysql:// URL has no such parameter all its readers share.
        let conn = Connection {
            tls: Tls::VerifyFull { ca_file: None },
            ..conn
        };
        assert!(url("postgresql", "u", "p", &conn).ends_with("/my%20db?sslmode=verify-full"));
        assert!(url("mysql", "u", "p", &conn).ends_with("/my%20db"));
    }

    /// A socket directory is the URL's host, encoded whole: libpq would read a bare `/` as the
    /// end of an empty host and connect to its default socket instead.
    #[test]
    fn a_socket_directory_is_the_urls_host() {
        let at = |host: &str, database: Option<&str>| {
            let conn = Connection {
                host: host.into(),
                port: 23501,
                database: database.map(Into::into),
                tls: Tls::Disable,
            };
            url("postgresql", "w_alice_3f2a9c81d0b4", "pw", &conn)
        };
        assert_eq!(
            at("/tmp/x/pg", Some("app")),
            "postgresql://w_alice_3f2a9c81d0b4:pw@%2Ftmp%2Fx%2Fpg:23501/app?sslmode=disable"
        );
        // A colon, a space or an `@` in the directory stays inside the host.
        assert_eq!(
            at("/run/my pg:1@x", Some("odd db'x/y")),
            "postgresql://w_alice_3f2a9c81d0b4:pw@%2Frun%2Fmy%20pg%3A1%40x:23501/odd%20db%27x%2Fy?sslmode=disable"
        );
        // An IPv6 address keeps its colons in brackets; its zone's `%` is encoded.
        assert_eq!(
            at("fe80::1%eth0", None),
            "postgresql://w_alice_3f2a9c81d0b4:pw@[fe80::1%25eth0]:23501?sslmode=disable"
        );
        assert_eq!(
            at("db.example.com", Some("app")),
            "postgresql://w_alice_3f2a9c81d0b4:pw@db.example.com:23501/app?sslmode=disable"
        );
        assert_eq!(
            at("127.0.0.1", Some("app")),
            "postgresql://w_alice_3f2a9c81d0b4:pw@127.0.0.1:23501/app?sslmode=disable"
        );
    }

    /// An administrator's password that is also a word of a failed connection's message
    /// (`postgres`, `mariadb`, `admin`) is not pointed at by a redaction of it, at either kind.
    #[tokio::test]
    async fn a_failed_connection_points_at_no_part_of_the_password() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let conn = Connection {
            host: "127.0.0.1".into(),
            port,
            database: Some("app".into()),
            tls: Tls::Disable,
        };
        for password in ["postgres", "mariadb", "admin", "x"] {
            let said = [
                crate::postgres::connect(&conn, "warden_admin", password)
                    .await
                    .err(),
                crate::mariadb::connect(&conn, "warden_admin", password)
                    .await
                    .err(),
            ];
            for said in said {
                let Some(Error::Unreached(said)) = said else {
                    panic!("connected to a closed port, or failed otherwise: {said:?}");
                };
                assert!(!said.contains("redacted"), "{said}");
                assert!(said.contains("as warden_admin"), "{said}");
            }
        }
    }

    #[test]
    fn redaction_removes_every_occurrence() {
        assert_eq!(
            redact("near 'hunter2' and 'hunter2'", &["hunter2", ""]),
            "near '<redacted>' and '<redacted>'"
        );
    }
}
