//! TLS on Warden's connections to its database targets, through the real binary and real
//! PostgreSQL and MariaDB servers that take logins over TLS only (a throwaway CA's certificate
//! for 127.0.0.1): with `tls = "verify-full"` and that CA a grant is issued, the account logs
//! in over TLS and is dropped at the revoke; `tls = "disable"`, another CA, a host name the
//! certificate does not hold, or a CA file that is not there each fail with an error that says
//! what to change, and grant nothing. A server without TLS is refused when TLS is asked for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use warden_testkit::{Cli, Mariadb, Postgres, TestCa};

/// One target of `kind` per `(name, host, tls settings)` on the server at `port`, each with a
/// role `read` anyone gets at once.
fn policy(kind: &str, port: u16, targets: &[(&str, &str, String)]) -> [(String, String); 2] {
    let grant = match kind {
        "postgres" => "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}",
        _ => "GRANT SELECT ON app.* TO {{name}}",
    };
    let mut toml = String::new();
    let mut rules = String::new();
    for (name, host, tls) in targets {
        toml.push_str(&format!(
            "[targets.{name}]\nkind = \"{kind}\"\nenvironment = \"test\"\n\
             [targets.{name}.connection]\nhost = \"{host}\"\nport = {port}\ndatabase = \"app\"\n\
             {tls}\n[targets.{name}.roles.read]\ngrants = [\"{grant}\"]\n\n"
        ));
        rules.push_str(&format!(
            "@id(\"{name}-read\")\n@approval(\"auto\")\n@max_ttl(\"1h\")\n\
             permit (principal, action == Action::\"request\", resource == Role::\"{name}/read\");\n\n"
        ));
    }
    [
        ("targets.toml".to_owned(), toml),
        ("access.cedar".to_owned(), rules),
    ]
}

/// `tls` and `tls_ca_file` lines.
fn tls(mode: &str, ca: Option<&TestCa>) -> String {
    let mut lines = format!("tls = \"{mode}\"\n");
    if let Some(ca) = ca {
        lines.push_str(&format!("tls_ca_file = \"{}\"\n", ca.ca_file().display()));
    }
    lines
}

fn start(files: &[(String, String); 2]) -> (Env, Cli) {
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let env = Env::start_with(&files, &[]);
    let admin = env.login("admin");
    (env, admin)
}

/// `set-credential` for `target`, expected to fail with exit code `code` (1 for a target that
/// cannot be reached, TLS handshakes included; 2 for a login it refuses or a setting that is
/// wrong) and `says` in its error; then stored anyway (`--no-verify`), so that a request gets as
/// far as the target; then `rotate-root`, which fails alike.
fn refused_then_stored(
    admin: &Cli,
    target: &str,
    user: &str,
    password: &str,
    says: &[&str],
    code: i32,
) {
    let args = [
        "target",
        "set-credential",
        target,
        "--username",
        user,
        "--password-stdin",
    ];
    let out = admin.run(&args, Some(password));
    assert_eq!(out.code, code, "{target}: {out:?}");
    assert!(out.stderr.contains("nothing was stored"), "{out:?}");
    for text in says {
        assert!(out.stderr.contains(text), "{target}: {text:?} in {out:?}");
    }
    assert!(!out.stderr.contains(password), "{out:?}");
    let mut args = args.to_vec();
    args.push("--no-verify");
    let out = admin.run(&args, Some(password));
    assert!(out.success(), "{out:?}");
    let out = admin.run(&["target", "rotate-root", target], None);
    assert_eq!(out.code, code, "{target}: {out:?}");
    for text in says {
        assert!(out.stderr.contains(text), "{target}: {text:?} in {out:?}");
    }
}

/// A request for `target` that fails, saying `says`, with nothing made at the target.
fn grant_refused(alice: &Cli, admin: &Cli, target: &str, says: &[&str]) {
    let out = alice.run(
        &[
            "request", "create", target, "--role", "read", "--reason", "r", "--ttl", "5m",
        ],
        None,
    );
    assert!(!out.success(), "{target}: {out:?}");
    for text in says {
        assert!(out.stderr.contains(text), "{target}: {text:?} in {out:?}");
    }
    let failed = audit_events(admin, "credential.issue_failed");
    let last = failed.last().unwrap();
    assert_eq!(last["target"], target, "{last}");
    assert_eq!(last["details"]["cleanup"], "none needed", "{last}");
}

#[test]
fn postgres_over_tls_is_verified_and_refused_when_it_cannot_be() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let pg = Postgres::start_tls(&ca);
    let files = policy(
        "postgres",
        pg.port(),
        &[
            ("pg", "127.0.0.1", tls("verify-full", Some(&ca))),
            ("unverified", "127.0.0.1", tls("require", None)),
            ("plain", "127.0.0.1", tls("disable", None)),
            ("other_ca", "127.0.0.1", tls("verify-full", Some(&other))),
            // The certificate names 127.0.0.1 alone.
            ("by_name", "localhost", tls("verify-full", Some(&ca))),
            (
                "no_ca_file",
                "127.0.0.1",
                "tls_ca_file = \"/nonexistent/db-ca.pem\"\n".to_owned(),
            ),
        ],
    );
    let (env, admin) = start(&files);
    let (user, password) = (pg.admin_user(), pg.admin_password());
    set_credential(&admin, "pg", user, password);
    set_credential(&admin, "unverified", user, password);

    let alice = env.login("alice");
    let v = create(&alice, "pg", "read", &[]);
    assert_eq!(v["state"], "active", "{v}");
    let account = v["credential"]["username"].as_str().unwrap().to_owned();
    let secret = v["secret"]["password"].as_str().unwrap().to_owned();
    // The account logs in (over TLS: the server takes no other TCP login), and so did Warden.
    let read = pg.psql(
        &account,
        &secret,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert!(read.status.success(), "{read:?}");
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "t");
    let warden_sessions = pg.admin_query(&format!(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = '{user}'"
    ));
    assert!(
        warden_sessions.ends_with("|0") && !warden_sessions.starts_with("0|"),
        "{warden_sessions}"
    );
    // `db connect` connects as strictly as Warden, whatever the caller's environment says:
    // verified against the target's CA, which the credential carries for a client that has no
    // copy of the file.
    assert_eq!(v["credential"]["tls"], "verify-full", "{v}");
    assert!(
        v["credential"]["tls_ca"]
            .as_str()
            .is_some_and(|pem| pem.starts_with("-----BEGIN CERTIFICATE-----")),
        "{v}"
    );
    let out = std::process::Command::new(BIN)
        .args(["db", "connect", "pg", "--", "-Atc"])
        .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .env("WARDEN_SERVER", alice.server_url())
        .env("WARDEN_HOME", alice.home())
        .env("PGSSLMODE", "disable")
        .env("PGSSLROOTCERT", "/nonexistent/root.crt")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{out:?}");

    ok(&alice, &["request", "revoke", &id(&v)]);
    let roles = |name: &str| {
        pg.admin_query(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"
        ))
    };
    wait_until("the role to go", Duration::from_secs(5), || {
        roles(&account) == "0"
    });

    let tls_only = [
        "no encryption",
        "the server may take logins only over TLS, and tls = \"disable\": set tls = \"verify-full\"",
    ];
    let other_ca = format!(
        "the server's certificate is not signed by a CA in {}: set tls_ca_file to the CA that \
         signed it, or tls = \"require\"",
        other.ca_file().display()
    );
    let by_name = "the server's certificate is not valid for localhost (it names 127.0.0.1)";
    let no_ca_file = "cannot read tls_ca_file /nonexistent/db-ca.pem: No such file";
    for (target, says, code) in [
        ("plain", &tls_only[..], 2),
        ("other_ca", &[other_ca.as_str()][..], 1),
        ("by_name", &[by_name][..], 1),
        ("no_ca_file", &[no_ca_file][..], 2),
    ] {
        refused_then_stored(&admin, target, user, password, says, code);
        grant_refused(&alice, &admin, target, says);
    }
    let accounts = pg.admin_query("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'w\\_%'");
    assert_eq!(accounts, "0", "nothing is left at the server");
    // The administrator's password is changed over TLS too.
    ok(&admin, &["target", "rotate-root", "pg"]);
    let old = pg.psql(user, password, "SELECT 1");
    assert!(!old.status.success(), "the old admin password still works");
}

#[test]
fn mariadb_over_tls_is_verified_and_refused_when_it_cannot_be() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let maria = Mariadb::start_tls(&ca);
    let files = policy(
        "mariadb",
        maria.port(),
        &[
            ("maria", "127.0.0.1", tls("verify-full", Some(&ca))),
            ("unverified", "127.0.0.1", tls("require", None)),
            ("plain", "127.0.0.1", String::new()),
            ("other_ca", "127.0.0.1", tls("verify-full", Some(&other))),
            ("by_name", "localhost", tls("verify-full", Some(&ca))),
            (
                "no_ca_file",
                "127.0.0.1",
                "tls_ca_file = \"/nonexistent/db-ca.pem\"\n".to_owned(),
            ),
        ],
    );
    let (env, admin) = start(&files);
    let (user, password) = (maria.admin_user(), maria.admin_password());
    set_credential(&admin, "maria", user, password);
    set_credential(&admin, "unverified", user, password);

    let alice = env.login("alice");
    let v = create(&alice, "maria", "read", &[]);
    assert_eq!(v["state"], "active", "{v}");
    let account = v["credential"]["username"].as_str().unwrap().to_owned();
    let secret = v["secret"]["password"].as_str().unwrap().to_owned();
    // Over TLS, as Warden's own connections: the server takes no other TCP login.
    let read = maria.client(&account, &secret, "SHOW SESSION STATUS LIKE 'Ssl_cipher'");
    assert!(read.status.success(), "{read:?}");
    let cipher = String::from_utf8_lossy(&read.stdout);
    assert!(cipher.trim().len() > "Ssl_cipher".len(), "{cipher}");
    // So does `db connect`, the server's certificate verified against the target's CA.
    let out = alice.run(
        &[
            "db",
            "connect",
            "maria",
            "--",
            "-N",
            "-e",
            "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
        ],
        None,
    );
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.trim().len() > "Ssl_cipher".len(), "{out:?}");

    ok(&alice, &["request", "revoke", &id(&v)]);
    let accounts = |name: &str| {
        maria.admin_query(&format!(
            "SELECT COUNT(*) FROM mysql.user WHERE User = '{name}'"
        ))
    };
    wait_until("the account to go", Duration::from_secs(5), || {
        accounts(&account) == "0"
    });

    // The default on loopback is plaintext, which this server refuses.
    let tls_only = [
        "Access denied",
        "MariaDB refuses a plaintext login with this same error where the server or the account \
         demands TLS (require_secure_transport, REQUIRE SSL), and tls = \"disable\": set tls = \
         \"verify-full\"",
    ];
    let other_ca = format!(
        "the server's certificate is not signed by a CA in {}",
        other.ca_file().display()
    );
    let by_name = "the server's certificate is not valid for localhost (it names 127.0.0.1)";
    let no_ca_file = "cannot read tls_ca_file /nonexistent/db-ca.pem: No such file";
    for (target, says, code) in [
        ("plain", &tls_only[..], 2),
        ("other_ca", &[other_ca.as_str()][..], 1),
        ("by_name", &[by_name][..], 1),
        ("no_ca_file", &[no_ca_file][..], 2),
    ] {
        refused_then_stored(&admin, target, user, password, says, code);
        grant_refused(&alice, &admin, target, says);
    }
    assert_eq!(
        maria.admin_query("SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'w\\_%'"),
        "0"
    );
    ok(&admin, &["target", "rotate-root", "maria"]);
    let old = maria.client(user, password, "SELECT 1");
    assert!(!old.status.success(), "the old admin password still works");
}

/// A server without TLS is refused whenever TLS is asked for, verified or not: Warden never
/// falls back to plaintext, which an attacker on the path could force.
#[test]
fn a_server_without_tls_is_refused_when_tls_is_asked_for() {
    let ca = TestCa::new();
    let (pg, maria) = (Postgres::start(), Mariadb::start());
    for (kind, port, user, password) in [
        ("postgres", pg.port(), pg.admin_user(), pg.admin_password()),
        (
            "mariadb",
            maria.port(),
            maria.admin_user(),
            maria.admin_password(),
        ),
    ] {
        let files = policy(
            kind,
            port,
            &[
                ("verified", "127.0.0.1", tls("verify-full", Some(&ca))),
                ("unverified", "127.0.0.1", tls("require", None)),
            ],
        );
        let (env, admin) = start(&files);
        let alice = env.login("alice");
        for (target, mode) in [("verified", "verify-full"), ("unverified", "require")] {
            let says = format!(
                "the server does not offer TLS, which tls = \"{mode}\" demands: turn TLS on at \
                 the server, or set tls = \"disable\""
            );
            refused_then_stored(&admin, target, user, password, &[&says], 1);
            grant_refused(&alice, &admin, target, &[&says]);
        }
    }
}

/// Bad TLS settings are reported by `policy check` where they are written.
#[test]
fn policy_check_reports_bad_tls_settings_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let files = policy(
        "postgres",
        5432,
        &[
            ("a", "db.internal", tls("prefer", None)),
            ("b", "db.internal", "tls_ca_file = \"ca.pem\"\n".to_owned()),
        ],
    );
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    write_policy(dir.path(), &files);
    let cli = Cli::new(std::path::Path::new(BIN), "http://127.0.0.1:9");
    let out = cli.run(&["policy", "check", dir.path().to_str().unwrap()], None);
    assert!(!out.success(), "{out:?}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("targets.toml:8:1")
            && text.contains("target a: invalid settings: connection setting `tls`"),
        "{text}"
    );
    assert!(text.contains("never falls back"), "{text}");
    assert!(
        text.contains("targets.toml:20:1")
            && text.contains("`tls_ca_file` of a postgres target must be the absolute path"),
        "{text}"
    );
}
