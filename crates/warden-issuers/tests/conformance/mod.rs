//! The conformance suite every account-creating issuer runs against a real server: what a
//! credential can do while granted, that revoking really ends it, that Warden only ever lists
//! and drops its own accounts, that failures leave nothing behind and leak no password.
//!
//! A test file implements [`Target`] for its server harness and calls [`run`] and
//! [`run_offline`].

use std::process::Output;
use std::time::{Duration, Instant};

use rand::RngExt;
use time::OffsetDateTime;
use warden_domain::{Recording, RequestId, RoleName, TargetName, UserName};
use warden_issuers::{
    AdminCredential, Error, Holder, IssueRequest, IssueResponse, Issuer, ListRequest,
    RevokeRequest, RevokeResponse, RotateRootRequest, Secret, Settings,
};
use warden_testkit::OpenSession;

/// A running server of the issuer's kind, and how to look at it from outside Warden.
pub trait Target: Sync {
    fn issuer(&self) -> &dyn Issuer;
    /// The target's `connection` table.
    fn connection(&self) -> Settings;
    /// The administrator with the password the server was set up with.
    fn admin(&self) -> AdminCredential;
    /// Grant statements that allow reading `items` in the `app` database and nothing more.
    fn read_grants(&self) -> Vec<String>;
    /// A grant statement naming a table that does not exist.
    fn missing_table_grant(&self) -> String;
    /// A statement whose error message from the server quotes the password.
    fn leaky_grant(&self) -> String;
    /// Runs `sql` in `app` with the real command-line client.
    fn run_sql(&self, user: &str, password: &str, sql: &str) -> Output;
    /// A client logged in and busy with a long query.
    fn hold_session(&self, user: &str, password: &str) -> OpenSession;
    fn account_exists(&self, name: &str) -> bool;
    /// Creates accounts by hand, as a human administrator would, and returns their names.
    fn create_human_accounts(&self) -> Vec<String>;
    /// Ends every connection of the administrator from the server's side, as a restart or an
    /// idle timeout would.
    fn end_admin_connections(&self);
}

/// One grant as the server would prepare it: an id, the account name the issuer chose and a
/// password generated like the server's.
pub struct Grant {
    pub id: RequestId,
    pub user: UserName,
    pub account: String,
    pub password: Secret<String>,
}

impl Grant {
    pub fn new(issuer: &dyn Issuer, user: &str) -> Self {
        let id = RequestId::from_uuid(uuid::Uuid::now_v7());
        let user: UserName = user.parse().unwrap();
        let account = issuer.account_name(id, &user).unwrap();
        Grant {
            id,
            user,
            account,
            password: Secret::new(server_style_password()),
        }
    }
}

/// 24 URL-safe characters, as the server generates them.
pub fn server_style_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

fn names() -> (TargetName, RoleName) {
    ("db".parse().unwrap(), "reader".parse().unwrap())
}

pub fn grants(statements: &[String]) -> Settings {
    serde_json::json!({ "grants": statements })
        .as_object()
        .cloned()
        .unwrap()
}

pub async fn issue(
    t: &impl Target,
    g: &Grant,
    settings: &Settings,
    valid_before: OffsetDateTime,
) -> Result<IssueResponse, Error> {
    issue_as(t, &t.admin(), g, settings, valid_before).await
}

async fn issue_as(
    t: &impl Target,
    admin: &AdminCredential,
    g: &Grant,
    settings: &Settings,
    valid_before: OffsetDateTime,
) -> Result<IssueResponse, Error> {
    let (target, role) = names();
    t.issuer()
        .issue(IssueRequest {
            grant: g.id,
            user: &g.user,
            target: &target,
            role: &role,
            connection: &t.connection(),
            settings,
            valid_after: OffsetDateTime::now_utc(),
            valid_before,
            public_key: None,
            account: Some(&g.account),
            password: Some(&g.password),
            admin: Some(admin),
            holder: Holder::Requester(Recording::Metadata),
        })
        .await
}

pub async fn revoke(t: &impl Target, g: &Grant) -> Result<RevokeResponse, Error> {
    let (target, role) = names();
    let admin = t.admin();
    t.issuer()
        .revoke(RevokeRequest {
            grant: g.id,
            target: &target,
            role: &role,
            connection: &t.connection(),
            settings: &grants(&t.read_grants()),
            public: &serde_json::Value::Null,
            account: Some(&g.account),
            admin: Some(&admin),
        })
        .await
}

pub async fn list(t: &impl Target) -> Vec<String> {
    let (target, _) = names();
    let admin = t.admin();
    t.issuer()
        .list_accounts(ListRequest {
            target: &target,
            connection: &t.connection(),
            admin: Some(&admin),
        })
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect()
}

fn in_an_hour() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::hours(1)
}

fn text(out: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The whole suite against one server. Rotating the administrator's password comes last,
/// since every step before uses the password the server was set up with.
pub async fn run(t: &impl Target) {
    lifecycle(t).await;
    closed_admin_connections_are_not_reused(t).await;
    only_own_accounts(t).await;
    failed_grants_leave_nothing(t).await;
    a_refused_login_touches_nothing(t).await;
    rotate_root(t).await;
}

/// Issue, use, hold a session, revoke: the session ends, logins stop, the account is gone.
async fn lifecycle(t: &impl Target) {
    let kind = t.issuer().kind();
    let g = Grant::new(t.issuer(), "alice");
    let out = issue(t, &g, &grants(&t.read_grants()), in_an_hour())
        .await
        .unwrap();

    assert_eq!(out.public["kind"], kind);
    assert_eq!(out.public["username"], g.account.as_str());
    assert_eq!(out.public["host"], "127.0.0.1");
    assert_eq!(out.public["port"], t.connection()["port"]);
    assert_eq!(out.public["database"], "app");
    let secret = out.secret.expect("the password is handed over as a secret");
    let secret = secret.expose();
    assert_eq!(secret["password"], g.password.expose().as_str());
    // A loopback target's TLS mode is `disable`, which libpq is told rather than left to try
    // TLS and fall back.
    let (scheme, query) = if kind == "postgres" {
        ("postgresql", "?sslmode=disable")
    } else {
        ("mysql", "")
    };
    assert_eq!(
        secret["url"],
        format!(
            "{scheme}://{}:{}@127.0.0.1:{}/app{query}",
            g.account,
            g.password.expose(),
            t.connection()["port"]
        )
    );

    // Log in with nothing but what the requester was handed.
    let (user, password) = (
        out.public["username"].as_str().unwrap(),
        secret["password"].as_str().unwrap(),
    );
    let read = t.run_sql(user, password, "SELECT name FROM items");
    assert!(
        read.status.success(),
        "the granted SELECT failed: {}",
        text(&read)
    );
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "widget");
    let write = t.run_sql(user, password, "INSERT INTO items VALUES (2, 'gadget')");
    assert!(!write.status.success(), "INSERT was not granted but worked");
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("denied"),
        "INSERT failed for another reason than a missing privilege: {}",
        text(&write)
    );
    assert!(list(t).await.contains(&g.account));

    let mut session = t.hold_session(user, password);
    assert_eq!(revoke(t, &g).await.unwrap(), RevokeResponse::Revoked);
    let ended = session
        .wait(Duration::from_secs(5))
        .expect("the open session was still running 5 s after revoking");
    assert!(
        !ended.status.success(),
        "the open session finished normally instead of being ended: {}",
        text(&ended)
    );

    let login = t.run_sql(user, password, "SELECT 1");
    assert!(!login.status.success(), "login still works after revoking");
    assert!(
        !t.account_exists(&g.account),
        "the account survived revoking"
    );
    assert!(!list(t).await.contains(&g.account));
    assert_eq!(revoke(t, &g).await.unwrap(), RevokeResponse::AlreadyGone);
}

/// The issuer keeps administrator connections between calls; when the server has closed them,
/// the next call still works.
async fn closed_admin_connections_are_not_reused(t: &impl Target) {
    let first = Grant::new(t.issuer(), "carol");
    issue(t, &first, &grants(&t.read_grants()), in_an_hour())
        .await
        .unwrap();
    t.end_admin_connections();
    let second = Grant::new(t.issuer(), "carol");
    issue(t, &second, &grants(&t.read_grants()), in_an_hour())
        .await
        .expect("issuing after the server closed the administrator's connections");
    t.end_admin_connections();
    for g in [&first, &second] {
        assert_eq!(revoke(t, g).await.unwrap(), RevokeResponse::Revoked);
    }
}

/// Listing shows Warden's accounts only, and revoking never touches anyone else's.
async fn only_own_accounts(t: &impl Target) {
    let humans = t.create_human_accounts();
    let ours: Vec<Grant> = ["bob", "carol.d"]
        .iter()
        .map(|u| Grant::new(t.issuer(), u))
        .collect();
    for g in &ours {
        issue(t, g, &grants(&t.read_grants()), in_an_hour())
            .await
            .unwrap();
    }
    let listed = list(t).await;
    for g in &ours {
        assert!(
            listed.contains(&g.account),
            "{} is not listed: {listed:?}",
            g.account
        );
    }
    for h in &humans {
        assert!(
            !listed.contains(h),
            "the hand-made account {h} is listed as Warden's"
        );
    }

    for g in &ours {
        assert_eq!(revoke(t, g).await.unwrap(), RevokeResponse::Revoked);
    }
    for h in &humans {
        assert!(
            t.account_exists(h),
            "revoking removed the hand-made account {h}"
        );
    }
    assert!(list(t).await.is_empty());
}

/// A grant statement that fails undoes the account, says so, and names the statement but never
/// the password.
async fn failed_grants_leave_nothing(t: &impl Target) {
    for (bad, expected) in [
        (t.missing_table_grant(), Some("exist")),
        (t.leaky_grant(), None),
    ] {
        let g = Grant::new(t.issuer(), "dave");
        let mut statements = t.read_grants();
        statements.push(bad.clone());
        let err = issue(t, &g, &grants(&statements), in_an_hour())
            .await
            .expect_err("a failing grant statement must fail the issue");
        let message = err.to_string();
        // The account was begun, and undone: nothing of it is left to revoke.
        assert!(matches!(err, Error::Undone(_)), "{message}");
        assert!(err.left_target_untouched());
        assert!(
            !message.contains(g.password.expose().as_str()),
            "the error shows the password: {message}"
        );
        assert!(
            message.contains(&format!("{bad:?}")),
            "the statement is not named: {message}"
        );
        if let Some(expected) = expected {
            assert!(
                message.contains(expected),
                "the server's reason is missing: {message}"
            );
        }
        assert!(
            !t.account_exists(&g.account),
            "a failed issue left {} behind",
            g.account
        );
        assert_eq!(revoke(t, &g).await.unwrap(), RevokeResponse::AlreadyGone);
    }
}

/// An administrator password the target refuses fails the issue before anything ran there, so
/// there is nothing to revoke; the error names the login but not the password.
async fn a_refused_login_touches_nothing(t: &impl Target) {
    let mut admin = t.admin();
    let wrong = format!("{}-not-it", admin.password.expose());
    admin.password = Secret::new(wrong.clone());
    let g = Grant::new(t.issuer(), "fay");
    let err = issue_as(t, &admin, &g, &grants(&t.read_grants()), in_an_hour())
        .await
        .expect_err("a wrong administrator password must fail the issue");
    let message = err.to_string();
    assert!(matches!(err, Error::Login(_)), "{message}");
    assert!(err.left_target_untouched());
    assert!(message.contains(&admin.username), "{message}");
    assert!(
        !message.contains(&wrong),
        "the error shows the password: {message}"
    );
    assert!(!t.account_exists(&g.account));
}

/// The administrator's password changes: the old one stops working, the new one works.
async fn rotate_root(t: &impl Target) {
    let (target, _) = names();
    let admin = t.admin();
    let connection = t.connection();
    let old_login = ListRequest {
        target: &target,
        connection: &connection,
        admin: Some(&admin),
    };
    t.issuer().log_in(old_login.clone()).await.unwrap();
    // A connection kept from this call outlives the password it logged in with.
    t.issuer().list_accounts(old_login.clone()).await.unwrap();
    // Quotes, a backslash and URL delimiters, to prove the new password is quoted right.
    let new = Secret::new(format!("{}'\\\"@:%;", server_style_password()));
    t.issuer()
        .rotate_root(RotateRootRequest {
            target: &target,
            connection: &t.connection(),
            admin: &admin,
            new_password: &new,
        })
        .await
        .unwrap();
    let old = t.run_sql(&admin.username, admin.password.expose(), "SELECT 1");
    assert!(
        !old.status.success(),
        "the old administrator password still works"
    );
    let now = t.run_sql(&admin.username, new.expose(), "SELECT 1");
    assert!(
        now.status.success(),
        "the new administrator password does not work: {}",
        text(&now)
    );
    // Which password the target takes is asked of a new login, never of a kept connection,
    // which goes on answering.
    t.issuer()
        .list_accounts(old_login.clone())
        .await
        .expect("the kept connection still answers");
    let refused = t.issuer().log_in(old_login).await.unwrap_err();
    assert!(matches!(refused, Error::Login(_)), "{refused}");
    assert!(
        !refused.to_string().contains(admin.password.expose()),
        "{refused}"
    );
    let new_admin = AdminCredential {
        username: admin.username.clone(),
        password: new,
    };
    t.issuer()
        .log_in(ListRequest {
            target: &target,
            connection: &connection,
            admin: Some(&new_admin),
        })
        .await
        .unwrap();
}

/// What needs no server: a missing administrator credential is the operator's to fix, and a
/// target that is down fails fast.
pub async fn run_offline(issuer: &dyn Issuer, connection: Settings) {
    let g = Grant::new(issuer, "erin");
    let (target, role) = names();
    let settings = grants(&["GRANT SELECT ON items TO {{name}}".to_owned()]);
    // A public key sent along is not used, but must be one: it is stored with the request.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOxmtvG8m83DA/c2UFrNFWDQ+JU3Al2G3THZ1gNCOWIR x";
    let holder = Holder::Requester(Recording::Metadata);
    assert!(issuer.check_request(&settings, None, holder).is_ok());
    assert!(issuer.check_request(&settings, Some(key), holder).is_ok());
    for wrong in [
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn==\n",
        "root:*:20228:0:99999:7:::",
    ] {
        let err = issuer
            .check_request(&settings, Some(wrong), holder)
            .unwrap_err();
        assert!(matches!(err, Error::Input(_)), "{err}");
        assert!(!err.to_string().contains("20228"), "{err}");
    }
    let request = |admin| IssueRequest {
        grant: g.id,
        user: &g.user,
        target: &target,
        role: &role,
        connection: &connection,
        settings: &settings,
        valid_after: OffsetDateTime::now_utc(),
        valid_before: in_an_hour(),
        public_key: None,
        account: Some(&g.account),
        password: Some(&g.password),
        admin,
        holder: Holder::Requester(Recording::Metadata),
    };

    let err = issuer.issue(request(None)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Input(m) if m.contains("warden target set-credential db")),
        "{err}"
    );

    let admin = AdminCredential {
        username: "warden_admin".into(),
        password: Secret::new("irrelevant".into()),
    };
    let started = Instant::now();
    let err = issuer.issue(request(Some(&admin))).await.unwrap_err();
    // Nothing ran at the target, so there is nothing to revoke.
    assert!(matches!(err, Error::Unreached(_)), "{err}");
    assert!(err.left_target_untouched());
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a down target took {:?} to fail",
        started.elapsed()
    );
}
