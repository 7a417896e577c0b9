//! PostgreSQL login roles, created per grant and dropped at its end.
//!
//! Issuing connects as the target's administrator and, in one transaction, creates the role
//! with `LOGIN`, its password and `VALID UNTIL` the grant's end, runs the role's grant
//! statements and comments it with `warden grant <id>` (last, so that no statement can replace
//! the marker): either all of it exists or none. A grant statement that grants (or revokes)
//! less than it names fails the issue as a refused one does: PostgreSQL grants only what the
//! administrator holds `WITH GRANT OPTION`, and says it granted nothing with a warning alone
//! (SQLSTATE 01007, 01006 for a `REVOKE`), which would leave an account without the role's
//! access.
//! The comment is the marker reconciliation relies on: only roles with the `w_` prefix *and* a
//! comment naming the grant their name was derived from are Warden's. `VALID UNTIL` is a
//! backstop that refuses new logins after the end even if Warden is down; it does not end open
//! sessions, which is what revoking is for.
//!
//! The password never reaches the server in clear: it is sent as a SCRAM-SHA-256 verifier
//! computed here, so it cannot end up in the server's log or `pg_stat_activity`. The verifier
//! has 16 rounds, not 4096: the password is random, and the rounds would cost every issue and
//! every login (see `scram.rs`).
//!
//! Revoking, in order: roll back the role's prepared transactions (acting as the role: they
//! outlive every session and keep their locks), end its sessions and `ALTER ROLE ... NOLOGIN` (ending them
//! again should one hold the lock on the role's row, as a session that changed its own
//! password and keeps its transaction open does), end whatever connected meanwhile and wait
//! until no session is left, then in one transaction turn the role's `SECURITY DEFINER`
//! functions and procedures into `SECURITY INVOKER` ones (the rights they ran with end with the
//! grant), `REASSIGN OWNED BY` the role to a `NOLOGIN` role of that grant's alone with no
//! rights of its own (objects it created are kept, not lost: handed to the administrator, a view
//! or function a grant made would run with the administrator's rights for whoever calls it
//! later; handed to one role for every grant, a view one grant left could read what another
//! grant left, as their common owner), `DROP OWNED BY` it (its remaining privileges), `DROP
//! ROLE`, and give up the administrator's membership in that keeper (as a member it would hold
//! the keeper's rights, and a later `GRANT ... ON ALL TABLES IN SCHEMA` would hand the
//! leftovers on). `REASSIGN` and `DROP OWNED` act on one database only, so they are first run in
//! every other database of the cluster where the role made or was granted something (any role
//! may connect to most of them and create a large object there); only databases that refuse
//! connections are left, and then `DROP ROLE` fails saying where, the role unable to log in.
//! The administrator acts as the role and as its keeper as their member (PostgreSQL 15 and
//! older demand it of a `CREATEROLE` administrator; as a member it also inherits their rights)
//! only within the transactions that need it: it grants itself the membership at their start
//! and gives it up (or drops the role) before they commit, so no other session ever sees it,
//! and a failing revocation leaves none behind. The one exception, rolling back a prepared
//! transaction (only outside a transaction, as the role), commits the membership, gives it up
//! whatever happens, and holds the server's issues off meanwhile. Issuing, as the crash-proof
//! guarantee, first gives up (committed on its own) any membership the administrator has in a
//! grant's role or keeper (`w_...`, `warden_owned_...`), then in its transaction fails if it
//! still has the rights of one (through another role, say) before any grant statement runs; and
//! after them it fails if they gave the new role a privilege on a table, view or sequence that
//! another grant's role or keeper owns (the administrator may hold one with the grant option
//! only if that grant lent it).
//! Each of those transactions runs in its database's turn, which issues there take too (their
//! changes to the same privilege rows would collide), and waits there at most 0.5 s for a lock:
//! the tables the role owns, which `REASSIGN` locks exclusively, are waited for before the turn
//! (at most 5 s, and let go again), so a drop that meets someone's long transaction gives up
//! and is retried with backoff without holding up the database's other issues and drops.
//!
//! Every statement Warden writes runs with `search_path` set to `pg_catalog, pg_temp`: a
//! grant that may create in a schema of the path could otherwise define a function or operator
//! that matches Warden's call better than the built-in one (`public.format(text, text)`), and
//! it would run as the administrator at the next revoke. Only the role's grant statements, the
//! operator's own, run with the administrator's usual `search_path`.
//!
//! The administrator needs `CREATEROLE` (or superuser), what the role's statements grant
//! `WITH GRANT OPTION` (or to own it), and `pg_signal_backend` to end sessions.
//!
//! Connection (`[targets.NAME.connection]`):
//! ```toml
//! host = "db.internal"        # required
//! port = 5432                 # optional, default 5432
//! database = "app"            # required: where grants run and owned objects are reassigned
//! tls = "verify-full"         # optional: "verify-full" (default but on loopback), "require",
//!                             # "disable" (default on loopback); see `sql/tls.rs`
//! tls_ca_file = "/etc/warden/db-ca.pem"   # optional: the CAs to trust, else the system's
//! ```
//! Over TLS the driver is given rustls (`tokio-postgres-rustls`), whose streams offer SCRAM
//! channel binding: the administrator's login is then bound to the TLS session it went over.
//! Role settings:
//! ```toml
//! grants = ["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}"]   # required
//! ```
//! In the statements, `{{name}}` becomes the role as a quoted identifier, `{{password}}` its
//! password and `{{expires}}` the grant's end (UTC), both as quoted string literals; any other
//! placeholder is a settings error. Statements are trusted; only these values are filled in.

mod scram;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use time::OffsetDateTime;
use time::macros::format_description;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::{DbError, Severity, SqlState};
use tokio_postgres::{AsyncMessage, Client, NoTls};
use warden_domain::{RequestId, UserName};

use crate::settings::{Problems, SettingProblem};
use crate::sql::pool::{Key, Pool};
use crate::sql::template::{Template, Values, read_grants};
use crate::sql::{
    CONNECT_TIMEOUT, Connection, SESSION_END_TIMEOUT, Tls, account_name, check_unused_key,
    grant_tail, is_account_name, no_answer, parse_connection, public_credential, read_connection,
    redact, require_account, require_admin, require_password, tls, url,
};
use crate::{
    Account, AdminCredential, Error, IssueRequest, IssueResponse, Issuer, ListRequest,
    RevokeRequest, RevokeResponse, RotateRootRequest, Secret, Settings,
};

const KIND: &str = "postgres";
const DEFAULT_PORT: u16 = 5432;
/// Starts the comment that marks a role as Warden's; the grant id follows.
const MARKER: &str = "warden grant ";

/// Longest an administrator's statement waits for a lock (`lock_timeout`).
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest an administrator's statement runs (`statement_timeout`): under the 30 s Warden gives
/// a call to a target, so the server never works on for a call Warden gave up.
const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(25);

/// Longest a statement run in a database's turn ([`PostgresIssuer::catalog_lock`]) while
/// revoking waits for a lock: the locks it may wait long for were waited for before the turn,
/// and the turn keeps that database's issues and other drops waiting.
const TURN_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Attempts at a role's transaction when PostgreSQL reports a catalog conflict.
const CATALOG_RETRIES: u64 = 5;

/// One statement of a role's transaction: what it does, said when it fails, and its SQL.
type Step = (String, String);

/// A role's transaction: Warden's statements before it (each its own transaction), those in
/// it before the role's grant statements, those, and Warden's after them.
struct Plan {
    prelude: Vec<Step>,
    before: Vec<Step>,
    grants: Vec<Step>,
    after: Vec<Step>,
}

/// Runs a role's transaction; on failure, says which step failed.
///
/// Warden's own statements are pipelined: sent back to back and answered in order, one round
/// trip for those before the grant statements and one for those after. Each grant statement
/// has a round trip of its own, so that the warnings heard before its answer are its own. After
/// a failure the server rejects the rest of the transaction, so the first error is the one
/// that matters.
async fn create_role(admin: &Admin, plan: &Plan) -> Result<(), Failure> {
    let client = &admin.client;
    let begin = ("starting a transaction".to_owned(), "BEGIN".to_owned());
    let opening: Vec<&Step> = plan
        .prelude
        .iter()
        .chain(std::iter::once(&begin))
        .chain(&plan.before)
        .collect();
    let answers = pipeline(client, &opening).await;
    let begun = answers.get(plan.prelude.len()).is_some_and(Result::is_ok);
    let mut ran = first_refusal(&opening, answers);
    if ran.is_ok() {
        ran = run_grants(admin, &plan.grants).await;
    }
    if ran.is_ok() {
        let closing: Vec<&Step> = plan.after.iter().collect();
        ran = first_refusal(&closing, pipeline(client, &closing).await);
    }
    if let Err((what, cause)) = ran {
        // Once the transaction began, nothing was created: its COMMIT was never sent, so the
        // server rolls it back, here or when the connection ends. A failed rollback leaves the
        // connection unusable, and a failed call never returns its connection to the pool.
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(Failure {
            what: what.to_owned(),
            cause,
            undone: begun,
        });
    }
    client.batch_execute("COMMIT").await.map_err(|e| Failure {
        what: "committing the role".to_owned(),
        cause: Cause::Refused(e),
        undone: false,
    })
}

/// Sends `steps` back to back and waits for every answer, in order.
async fn pipeline(client: &Client, steps: &[&Step]) -> Vec<Result<(), tokio_postgres::Error>> {
    futures_util::future::join_all(steps.iter().map(|(_, sql)| client.batch_execute(sql))).await
}

/// The first of `steps` whose answer is an error, with it.
fn first_refusal<'a>(
    steps: &[&'a Step],
    answers: Vec<Result<(), tokio_postgres::Error>>,
) -> Result<(), (&'a str, Cause)> {
    match steps
        .iter()
        .zip(answers)
        .find_map(|(step, answer)| answer.err().map(|e| (step, e)))
    {
        Some(((what, _), e)) => Err((what.as_str(), Cause::Refused(e))),
        None => Ok(()),
    }
}

/// Runs a role's grant statements one at a time, stopping at the first the server refuses or
/// warns granted (or revoked) less than it names.
async fn run_grants<'a>(admin: &Admin, grants: &'a [Step]) -> Result<(), (&'a str, Cause)> {
    for (what, sql) in grants {
        // Whatever was heard before is not this statement's.
        admin.heard.take();
        admin
            .client
            .batch_execute(sql)
            .await
            .map_err(|e| (what.as_str(), Cause::Refused(e)))?;
        if let Some(warning) = admin.heard.take().into_iter().find(short_of_rights) {
            return Err((what.as_str(), Cause::ShortOfRights(Box::new(warning))));
        }
    }
    Ok(())
}

/// Whether `warning` says a statement granted or revoked less than it named: the
/// administrator lacks the grant option for some of it, which PostgreSQL does not count as an
/// error.
fn short_of_rights(warning: &DbError) -> bool {
    *warning.code() == SqlState::WARNING_PRIVILEGE_NOT_GRANTED
        || *warning.code() == SqlState::WARNING_PRIVILEGE_NOT_REVOKED
}

/// Why [`create_role`] failed: at which step, why, and whether what it ran was rolled back for
/// certain (else the role may exist: a failed `COMMIT` may have been carried out).
struct Failure {
    what: String,
    cause: Cause,
    undone: bool,
}

/// Why a step of a role's transaction failed.
enum Cause {
    /// The server answered it with an error.
    Refused(tokio_postgres::Error),
    /// It ran, but the server warned it granted or revoked less than it named.
    ShortOfRights(Box<DbError>),
}

impl Failure {
    /// What failed and why, and how to fix a lacking grant option; `secrets` redacted.
    fn describe(&self, admin: &str, secrets: &[&str]) -> String {
        match &self.cause {
            Cause::Refused(e) => describe(&self.what, e, secrets),
            Cause::ShortOfRights(warning) => redact(
                &format!(
                    "{}: {}; PostgreSQL lets Warden's administrator ({admin}) grant or revoke \
                     only what it holds WITH GRANT OPTION: have the object's owner run \
                     `GRANT <privilege> ON <object> TO {admin} WITH GRANT OPTION` for each \
                     privilege the statement names, or take the statement out of the role",
                    self.what,
                    db_said(warning)
                ),
                secrets,
            ),
        }
    }
}

/// Whether an error is a transient conflict between concurrent catalog changes.
fn catalog_conflict(cause: &Cause) -> bool {
    let Cause::Refused(e) = cause else {
        return false;
    };
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::T_R_SERIALIZATION_FAILURE
            || *db.code() == SqlState::T_R_DEADLOCK_DETECTED
            || (*db.code() == SqlState::INTERNAL_ERROR
                && db.message().contains("concurrently updated"))
    })
}

/// The warnings the server sent on one connection since they were last taken. Notices below
/// warnings are not kept: Warden has no use for them.
#[derive(Clone, Debug, Default)]
struct Heard(Arc<Mutex<Vec<DbError>>>);

impl Heard {
    fn hear(&self, notice: DbError) {
        if notice.parsed_severity() == Some(Severity::Warning) {
            self.lock().push(notice);
        }
    }

    fn take(&self) -> Vec<DbError> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DbError>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drives `connection` on a task of its own, which ends when the client is dropped; its
/// errors reach the client's calls. The warnings the server sends are kept in what is
/// returned (driven as a future, the connection would only log them): each is heard before
/// the answer of the statement that drew it reaches the client.
fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>) -> Heard
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let heard = Heard::default();
    let hearing = heard.clone();
    tokio::spawn(std::future::poll_fn(move |cx| {
        loop {
            match std::task::ready!(connection.poll_message(cx)) {
                Some(Ok(AsyncMessage::Notice(notice))) => hearing.hear(notice),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return std::task::Poll::Ready(()),
            }
        }
    }));
    heard
}

/// `e` with the warnings the server gave on its connection before it, which may say why it
/// came (a right the administrator could not lend, say).
fn with_warnings(e: Error, warnings: Vec<DbError>) -> Error {
    match e {
        Error::Target(said) if !warnings.is_empty() => {
            let warned: Vec<String> = warnings.iter().map(db_said).collect();
            Error::Target(format!(
                "{said}; before that, the server warned: {}",
                warned.join("; ")
            ))
        }
        e => e,
    }
}

/// The `search_path` every statement Warden writes runs with: nothing a grant can create in.
const SAFE_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// An administrator connection, its session's `search_path` set to [`SAFE_SEARCH_PATH`].
#[derive(Debug)]
pub(crate) struct Admin {
    client: Client,
    /// The `search_path` the administrator's sessions have by the server's settings, which
    /// the role's grant statements are written for.
    usual_search_path: String,
    /// The warnings the server sent on this connection.
    heard: Heard,
}

/// Creates PostgreSQL roles for grants.
#[derive(Debug, Default)]
pub struct PostgresIssuer {
    /// One lock per database: PostgreSQL serialises catalog changes such as GRANTs on the same
    /// tables anyway, and queueing them here avoids the conflicts concurrent ones run into.
    catalogs:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// One lock per server (cluster): roles and their memberships are the whole cluster's.
    /// An issue holds it shared while its transaction runs; a revocation holds it exclusively
    /// while the administrator is, for a moment and committed, a member of a grant's role (to
    /// roll back the role's prepared transactions, which only the role may), so that no
    /// issue's grant statements ever run with that role's rights.
    memberships: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Arc<tokio::sync::RwLock<()>>>,
    >,
    /// Administrator connections between calls.
    pool: Pool<Admin>,
}

impl PostgresIssuer {
    /// The issuer; it keeps administrator connections open between calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// An administrator connection: an idle one from the pool that still answers, else a new
    /// one, with the turn at its server to hold while it (or another connection to the server)
    /// works. Give it back with [`Pool::put`] once its work succeeded.
    async fn admin_client(
        &self,
        conn: &Connection,
        admin: &AdminCredential,
    ) -> Result<(Key, Admin, OwnedSemaphorePermit), Error> {
        let key = Key::new(conn, &admin.username, admin.password.expose());
        let turn = self.pool.admit(&key).await?;
        while let Some(kept) = self.pool.take(&key, |a| !a.client.is_closed()) {
            // One round trip tells a connection the server has since closed (a restart, an
            // idle timeout) before real work fails on it; one that does not come back within
            // the time a new connection gets is a server that hangs, said as soon.
            match tokio::time::timeout(CONNECT_TIMEOUT, kept.client.batch_execute("")).await {
                Ok(Ok(())) => {
                    // What was heard during an earlier call is none of this one's.
                    kept.heard.take();
                    return Ok((key, kept, turn));
                }
                Ok(Err(_)) => {}
                Err(_) => {
                    return Err(no_answer(&format!(
                        "postgres at {}:{}",
                        conn.host, conn.port
                    )));
                }
            }
        }
        let client = connect(conn, &admin.username, admin.password.expose()).await?;
        Ok((key, client, turn))
    }

    /// The turn of the statements that rewrite privilege rows at the database `conn` names:
    /// role creation and the drop of what a role owns collide in PostgreSQL's catalog when
    /// they run at once ("tuple concurrently updated"). A revoke waits for the locks of other
    /// sessions before its turn, not in it ([`PostgresIssuer::in_turn`]), so that a drop
    /// held up by someone's long transaction holds up none of the database's other issues
    /// and drops.
    fn catalog_lock(&self, conn: &Connection) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let key = format!(
            "{}:{}/{}",
            conn.host,
            conn.port,
            conn.database.as_deref().unwrap_or_default()
        );
        let mut map = self
            .catalogs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key).or_default().clone()
    }

    /// The lock of the server `conn` names that keeps issues from running while the
    /// administrator holds a committed membership in a grant's role ([`PostgresIssuer`]).
    fn membership_lock(&self, conn: &Connection) -> std::sync::Arc<tokio::sync::RwLock<()>> {
        let key = format!("{}:{}", conn.host, conn.port);
        let mut map = self
            .memberships
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key).or_default().clone()
    }

    /// Runs `statements`, which hand over or drop what role `oid` owns and was granted, in one
    /// transaction on `client`, connected to the database `at` names, in that database's turn
    /// ([`PostgresIssuer::catalog_lock`]). `REASSIGN OWNED` locks the role's tables
    /// exclusively, and a long transaction of someone else's that read one holds it up: so
    /// those locks are first waited for outside the turn (as long as [`LOCK_TIMEOUT`], then
    /// let go at once), and in its turn the transaction waits at most [`TURN_LOCK_TIMEOUT`]
    /// for any lock. A drop held up by a table gives up without having kept the database's
    /// issues and other drops waiting, and is retried with backoff.
    ///
    /// The administrator becomes a member of the role (`role`, quoted) only within each of
    /// these transactions, which `statements` must end by giving the membership up (or
    /// dropping the role): it is never committed, so no other session, an issue's above all,
    /// ever runs with the role's rights, and a failure anywhere leaves none behind.
    async fn in_turn(
        &self,
        client: &Client,
        at: &Connection,
        oid: u32,
        role: &str,
        statements: &str,
    ) -> Result<(), TurnFailure> {
        wait_for_tables(client, oid, role)
            .await
            .map_err(TurnFailure::Waiting)?;
        let lock = self.catalog_lock(at);
        let _turn = lock.lock().await;
        let ran = client
            .batch_execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = {}; {statements}",
                TURN_LOCK_TIMEOUT.as_millis()
            ))
            .await;
        match ran {
            Ok(()) => client.batch_execute("COMMIT").await,
            Err(e) => {
                // A failed rollback leaves the connection unusable, and a failed call never
                // returns its connection to the pool.
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
        .map_err(TurnFailure::Running)
    }

    /// Removes role `account` of `grant`, working on `kept`, connected as `admin` to `conn`.
    async fn revoke_role(
        &self,
        kept: &Admin,
        conn: &Connection,
        admin: &AdminCredential,
        account: &str,
        grant: RequestId,
    ) -> Result<RevokeResponse, Error> {
        let client = &kept.client;
        let failed = |what: &str, e: tokio_postgres::Error| {
            target_error(&format!("{what} role {account}"), &e, &[])
        };

        let row = client
            .query_opt(
                "SELECT oid, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
                &[&account],
            )
            .await
            .map_err(|e| failed("looking up", e))?;
        let Some(row) = row else {
            return Ok(RevokeResponse::AlreadyGone);
        };
        let (oid, comment): (u32, Option<String>) = (row.get(0), row.get(1));
        // A role of this name without this grant's marker was not made by Warden for it (its
        // creation failed because the name was taken): it is not Warden's to drop.
        if comment.as_deref() != Some(marker(grant).as_str()) {
            return Ok(RevokeResponse::AlreadyGone);
        }

        let role = ident(account);
        // A prepared transaction outlives every session, and one that changed the role's own
        // password holds the lock `NOLOGIN` needs.
        let prepared = prepared_transactions(client, account)
            .await
            .map_err(|e| failed("finding the prepared transactions of", e))?;
        if !prepared.is_empty() {
            // Only the role may roll them back, and `ROLLBACK PREPARED` runs outside any
            // transaction: the administrator's membership is committed for that long, while
            // no issue at the server runs, and given up whatever happens.
            let lock = self.membership_lock(conn);
            let _alone = lock.write().await;
            for (gid, database) in prepared {
                let there = Connection {
                    database: Some(database.clone()),
                    ..conn.clone()
                };
                let other = connect(&there, &admin.username, admin.password.expose()).await?;
                roll_back_prepared(&other.client, &role, &gid)
                    .await
                    .map_err(|e| {
                        let what = format!(
                            "in database {database}, rolling back a prepared transaction of"
                        );
                        with_warnings(failed(&what, e), other.heard.take())
                    })?;
            }
        }
        disable_login(client, account, &role, oid).await?;
        end_sessions(client, account, oid).await?;
        // Whatever the role made or was granted in the cluster's other databases (any role
        // may connect to most of them, and a large object needs no privilege to create) would
        // keep DROP ROLE from working: it is handed over or removed there first.
        let elsewhere: Vec<String> = client
            .query(
                "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid \
                 WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = $1 \
                 AND d.datname <> current_database() AND d.datallowconn",
                &[&oid],
            )
            .await
            .map_err(|e| failed("finding the other databases of", e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        // A keeper only for a role that made something, in any database.
        let made_something: bool = client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass \
                 AND refobjid = $1 AND deptype = 'o')",
                &[&oid],
            )
            .await
            .map_err(|e| failed("finding what was made by", e))?
            .get(0);
        let keeper_role = made_something.then(|| owner(account));
        if let Some(owner) = &keeper_role {
            // A role of its own: no object's rows change, so this needs no turn.
            client
                .batch_execute(&keeper(owner, grant))
                .await
                .map_err(|e| failed("preparing the owner of what was made by", e))?;
        }
        let hand_over = hand_over(&role, oid, keeper_role.as_deref());
        // A member of the role and of its keeper may act as both: hand over what the role
        // made. Taken and given up within each transaction (the role's membership by dropping
        // it, in the last), so never held once a transaction ends, however it ends.
        let (take_over, give_up) = match &keeper_role {
            Some(owner) => (
                format!(
                    "GRANT {role} TO CURRENT_USER; GRANT {} TO CURRENT_USER",
                    ident(owner)
                ),
                format!("{}; REVOKE {role} FROM CURRENT_USER", let_go(owner)),
            ),
            None => (
                format!("GRANT {role} TO CURRENT_USER"),
                format!("REVOKE {role} FROM CURRENT_USER"),
            ),
        };
        for database in &elsewhere {
            let there = Connection {
                database: Some(database.clone()),
                ..conn.clone()
            };
            let other = connect(&there, &admin.username, admin.password.expose()).await?;
            let clear = format!("{take_over}; {hand_over}; {give_up}");
            self.in_turn(&other.client, &there, oid, &role, &clear)
                .await
                .map_err(|f| {
                    let what = format!("in database {database}, {}", f.what("clearing"));
                    with_warnings(failed(&what, f.cause()), other.heard.take())
                })?;
        }
        // The administrator lets go of the keeper it was made a member of for the hand-over
        // (an earlier attempt's too, should one have been committed): a member inherits its
        // owner's rights, and a later `GRANT ... ON ALL TABLES IN SCHEMA` of the
        // administrator's would hand one grant's leftovers to another grant.
        let keep = keeper_role
            .as_deref()
            .map(|owner| format!("GRANT {} TO CURRENT_USER; ", ident(owner)))
            .unwrap_or_default();
        let drop = format!(
            "GRANT {role} TO CURRENT_USER; {keep}{hand_over}; DROP ROLE {role}; {}",
            let_go(&owner(account))
        );
        self.in_turn(client, conn, oid, &role, &drop)
            .await
            .map_err(|f| failed(&f.what("dropping"), f.cause()))?;
        Ok(RevokeResponse::Revoked)
    }
}

/// Every problem with a postgres target's connection table.
pub fn check_connection(connection: &Settings) -> Vec<SettingProblem> {
    let mut problems = Problems::default();
    read_connection(KIND, connection, DEFAULT_PORT, true, &mut problems);
    problems.into_vec()
}

/// Every problem with a postgres role's settings.
pub fn check_role(settings: &Settings) -> Vec<SettingProblem> {
    let mut problems = Problems::default();
    read_settings(settings, &mut problems);
    problems.into_vec()
}

fn parse_settings(settings: &Settings) -> Result<Vec<Template>, Error> {
    let mut problems = Problems::default();
    let read = read_settings(settings, &mut problems);
    problems.or_first(read)
}

/// Reads a role's settings, noting every problem in `problems`.
fn read_settings(settings: &Settings, problems: &mut Problems) -> Vec<Template> {
    for k in settings.keys().filter(|k| k.as_str() != "grants") {
        problems.add(
            Some(k),
            format!("unknown setting `{k}` for a postgres role; known: grants"),
        );
    }
    read_grants(KIND, settings, problems)
}

/// A quoted identifier: safe for any name.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal that means the same whatever `standard_conforming_strings` is: text with
/// a backslash is written as an escape string (`E'...'`) with the backslash doubled.
fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `valid_before` as a quoted `timestamptz` literal, cut to the second (never later).
fn expires_literal(valid_before: OffsetDateTime) -> Result<String, Error> {
    valid_before
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]+00"
        ))
        .map(|t| literal(&t))
        .map_err(|e| Error::Internal(format!("formatting the grant's end: {e}")))
}

fn marker(grant: RequestId) -> String {
    format!("{MARKER}{grant}")
}

/// Starts the name of the role that keeps what a grant's role made: `warden_owned_` and the
/// account's name after its `w_`, so a DBA sees whose grant left what.
const OWNER_PREFIX: &str = "warden_owned_";
/// Starts the comment that marks a keeper role; the grant id follows.
const OWNER_MARKER: &str = "warden leftovers of grant ";

/// The role that is handed what `account`'s role made: `NOLOGIN`, with no rights of its own,
/// and one per grant. Handed to the administrator instead, a `SECURITY DEFINER` function or a
/// view a grant made would run with the administrator's rights for whoever calls it later;
/// handed to one role for all grants, a view one grant left would read, as the owner of both,
/// a table another left.
fn owner(account: &str) -> String {
    format!(
        "{OWNER_PREFIX}{}",
        account.strip_prefix("w_").unwrap_or(account)
    )
}

/// Makes `owner`, marked as `grant`'s (the administrator becomes a member only within the
/// transactions that hand things to it, [`PostgresIssuer::in_turn`]). One of
/// that name already there is used only if it bears the mark (an earlier attempt at the same
/// revocation made it): a role someone else made may have rights, and is refused.
fn keeper(owner: &str, grant: RequestId) -> String {
    let name = literal(owner);
    let owner = ident(owner);
    let mark = literal(&format!("{OWNER_MARKER}{grant}"));
    format!(
        "DO $$BEGIN CREATE ROLE {owner} NOLOGIN; \
         COMMENT ON ROLE {owner} IS {mark}; \
         EXCEPTION WHEN duplicate_object THEN \
           IF shobj_description((SELECT oid FROM pg_roles WHERE rolname = {name}), 'pg_authid') \
             IS DISTINCT FROM {mark} THEN \
             RAISE EXCEPTION 'role % exists but was not made by Warden for this grant: rename it', {name}; \
           END IF; \
         END$$"
    )
}

/// Whether the role named by the `rolname` column in scope is a grant's account or the keeper
/// of what one left: the names Warden gives them, which README asks to keep for Warden alone.
const GRANTS_ROLE: &str = "(left(rolname, 2) = 'w_' OR left(rolname, 13) = 'warden_owned_')";

/// Gives up every membership of the administrator's own in a grant's role or keeper through
/// which it has that role's rights (as a revocation cut short may have left one), then fails
/// as [`no_grants_rights`] does if it still has some.
fn sweep_memberships() -> String {
    format!(
        "DO $$DECLARE r text; BEGIN \
         FOR r IN SELECT rolname FROM pg_roles WHERE {GRANTS_ROLE} \
           AND oid IN (SELECT roleid FROM pg_auth_members WHERE member = \
             (SELECT oid FROM pg_roles WHERE rolname = CURRENT_USER)) \
           AND pg_has_role(CURRENT_USER, oid, 'USAGE') LOOP \
           EXECUTE format('REVOKE %I FROM CURRENT_USER', r); \
         END LOOP; END$$; {}",
        no_grants_rights()
    )
}

/// Fails if the administrator has the rights of a grant's role or keeper (by a membership
/// of its own or of a role it is a member of): its grant statements would hand on what that
/// grant made. A superuser has every role's rights and is not held to this (nothing keeps
/// its grant statements from granting anything); [`nothing_of_other_grants`] still is.
fn no_grants_rights() -> String {
    format!(
        "DO $$DECLARE r text; BEGIN \
         IF (SELECT rolsuper FROM pg_roles WHERE rolname = CURRENT_USER) THEN RETURN; END IF; \
         SELECT rolname INTO r FROM pg_roles WHERE {GRANTS_ROLE} \
           AND pg_has_role(CURRENT_USER, oid, 'USAGE') ORDER BY rolname LIMIT 1; \
         IF r IS NOT NULL THEN \
           RAISE EXCEPTION 'Warden''s administrator % has the rights of role %, a grant''s \
account or what one left behind, so its grant statements could hand on what that grant made', \
             CURRENT_USER, r \
             USING HINT = format('find the membership that gives them (SELECT roleid::regrole, \
member::regrole FROM pg_auth_members) and revoke it, e.g. REVOKE %I FROM %I; on PostgreSQL 16 \
and later keep inherit out of createrole_self_grant', r, CURRENT_USER); \
         END IF; END$$"
    )
}

/// Fails if the grant statements just run gave role `account` a privilege on a table, view
/// or sequence that another grant's role made, or that one left behind: a
/// `GRANT ... ON ALL TABLES IN SCHEMA` is refused while such a table is in that schema, even
/// where the administrator was itself granted it with the grant option.
fn nothing_of_other_grants(account: &str) -> String {
    let name = literal(account);
    format!(
        "DO $$DECLARE t text; o text; BEGIN \
         SELECT c.oid::regclass::text, w.rolname INTO t, o FROM pg_class c \
           JOIN (SELECT oid, rolname FROM pg_roles WHERE {GRANTS_ROLE} AND rolname <> {name}) w \
             ON w.oid = c.relowner \
           WHERE EXISTS (SELECT FROM aclexplode(c.relacl) a \
             WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = {name})) \
           ORDER BY 1 LIMIT 1; \
         IF t IS NOT NULL THEN \
           RAISE EXCEPTION 'the grant statements gave role % privileges on %, which role % \
owns: another grant made it, and what one grant makes is not handed to another', {name}, t, o \
             USING HINT = 'name the tables in the statements instead of granting ON ALL \
TABLES IN SCHEMA, or keep the schemas grants create in apart from the ones granted whole'; \
         END IF; END$$"
    )
}

/// Gives up the administrator's membership in `owner`, if there is such a role.
fn let_go(owner: &str) -> String {
    format!(
        "DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN \
         REVOKE {} FROM CURRENT_USER; END IF; END$$",
        literal(owner),
        ident(owner)
    )
}

/// In one database: what role `role` (oid `oid`) made goes to `owner` (none: it made nothing
/// anywhere), its functions and procedures that ran with its rights run with their callers'
/// from now on (the rights they ran with end with the grant), and its privileges go. A new
/// owner must be able to create in an object's schema (and, of a schema, in the database): it
/// is lent that right for the hand-over alone, within its transaction, so no one ever sees it
/// hold it.
fn hand_over(role: &str, oid: u32, owner: Option<&str>) -> String {
    let Some(owner) = owner else {
        return format!("DROP OWNED BY {role}");
    };
    let owner_ident = ident(owner);
    let owner_name = literal(owner);
    format!(
        "DO $$DECLARE r regprocedure; s text; lent text[] := '{{}}'; db_lent boolean := false; BEGIN \
         FOR r IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.proowner = {oid} AND p.prosecdef LOOP \
           EXECUTE format('ALTER ROUTINE %s SECURITY INVOKER', r); \
         END LOOP; \
         FOR s IN SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' \
           AND NOT has_schema_privilege({owner_name}, oid, 'CREATE') LOOP \
           EXECUTE format('GRANT CREATE ON SCHEMA %I TO %I', s, {owner_name}); \
           lent := lent || s; \
         END LOOP; \
         IF EXISTS (SELECT FROM pg_namespace WHERE nspowner = {oid}) \
           AND NOT has_database_privilege({owner_name}, current_database(), 'CREATE') THEN \
           EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), {owner_name}); \
           db_lent := true; \
         END IF; \
         EXECUTE {reassign}; \
         FOREACH s IN ARRAY lent LOOP \
           EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM %I', s, {owner_name}); \
         END LOOP; \
         IF db_lent THEN \
           EXECUTE format('REVOKE CREATE ON DATABASE %I FROM %I', current_database(), {owner_name}); \
         END IF; \
         END$$; \
         DROP OWNED BY {role}",
        reassign = literal(&format!("REASSIGN OWNED BY {role} TO {owner_ident}")),
    )
}

/// `what` went wrong and what the server said, with the SQLSTATE, detail and hint when there
/// are any, and every one of `secrets` redacted.
fn describe(what: &str, e: &tokio_postgres::Error, secrets: &[&str]) -> String {
    redact(&format!("{what}: {}", server_said(e)), secrets)
}

fn server_said(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db_said(db);
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// An error or warning of the server's, with its SQLSTATE, detail and hint when there are any.
fn db_said(db: &DbError) -> String {
    let mut text = format!(
        "{}: {} (SQLSTATE {})",
        db.severity(),
        db.message(),
        db.code().code()
    );
    if let Some(detail) = db.detail() {
        text.push_str(&format!("; DETAIL: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; HINT: {hint}"));
    }
    text
}

/// Whether the server answered a statement run on its own (its own transaction) with an
/// error, so that it changed nothing: the transaction was rolled back. A FATAL answer ends the
/// session and may come after the commit, and no answer (a lost connection) tells nothing.
fn refused(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.parsed_severity() == Some(Severity::Error))
}

fn target_error(what: &str, e: &tokio_postgres::Error, secrets: &[&str]) -> Error {
    Error::Target(describe(what, e, secrets))
}

/// Why connecting to `conn` failed: what is wrong with TLS and how to fix it, else what the
/// server said, with a word on TLS when its refusal may be a demand for it.
fn connect_failure(e: &tokio_postgres::Error, conn: &Connection) -> String {
    if let Some(why) = tls::explain(e, &conn.host, &conn.tls) {
        return why;
    }
    // What tokio-postgres says of a server that answered the request for TLS with a no.
    if conn.tls != Tls::Disable
        && std::error::Error::source(e)
            .is_some_and(|cause| cause.to_string() == "server does not support TLS")
    {
        return tls::not_offered(&conn.tls);
    }
    let said = server_said(e);
    // `pg_hba.conf` with `hostssl` lines alone: "no pg_hba.conf entry for host ..., no
    // encryption".
    if conn.tls == Tls::Disable
        && e.code() == Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
        && said.contains("no encryption")
    {
        return format!(
            "{said}; {}",
            tls::demanded("the server may take logins only over TLS")
        );
    }
    said
}

/// Whether the server's answer `code` to a login refused it for what Warden was given (the
/// role, its password, `pg_hba.conf`'s demand for TLS, the database or the right to connect to
/// it), not for being busy or starting up.
fn refuses_login(code: &SqlState) -> bool {
    code.code().starts_with("28")
        || *code == SqlState::INVALID_CATALOG_NAME
        || *code == SqlState::INSUFFICIENT_PRIVILEGE
}

/// Connects to the target's database as `user`, failing within [`CONNECT_TIMEOUT`], the
/// session's `search_path` set to [`SAFE_SEARCH_PATH`].
pub(crate) async fn connect(conn: &Connection, user: &str, password: &str) -> Result<Admin, Error> {
    let where_ = format!(
        "connecting to postgres at {}:{} as {user}",
        conn.host, conn.port
    );
    let mut config = tokio_postgres::Config::new();
    config
        .host(&conn.host)
        .port(conn.port)
        .user(user)
        .password(password)
        .connect_timeout(CONNECT_TIMEOUT)
        .application_name("warden")
        // A statement that waits for a lock held by someone's long transaction (dropping what
        // a grant made, say) gives up soon and is retried later: waiting, it would queue every
        // later query of that table behind it. And none runs on after Warden stopped waiting.
        // Warnings are sent whatever the administrator's own settings say: a grant statement
        // that grants nothing says so with a warning alone.
        .options(format!(
            "-c lock_timeout={}ms -c statement_timeout={}ms -c client_min_messages=warning",
            LOCK_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis()
        ));
    if let Some(db) = &conn.database {
        config.dbname(db);
    }
    // Nothing to redact: the driver never puts the password in what it says of a failed
    // connection, and replacing a password an administrator chose (`postgres`, say) wherever
    // the words of the message hold it would point at it instead.
    let failed = |e: tokio_postgres::Error| {
        let said = format!("{where_}: {}", connect_failure(&e, conn));
        if e.code().is_some_and(refuses_login) {
            Error::Login(said)
        } else {
            Error::Unreached(said)
        }
    };
    let rustls =
        tls::client_config(&conn.tls).map_err(|e| Error::Login(format!("{where_}: {e}")))?;
    let (client, heard) = match rustls {
        None => {
            config.ssl_mode(SslMode::Disable);
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
                .await
                .map_err(|_| no_answer(&where_))?
                .map_err(failed)?;
            (client, drive(connection))
        }
        Some(rustls) => {
            // Never plaintext: a server that offers no TLS is refused.
            config.ssl_mode(SslMode::Require);
            let make = tokio_postgres_rustls::MakeRustlsConnect::new(rustls);
            let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(make))
                .await
                .map_err(|_| no_answer(&where_))?
                .map_err(failed)?;
            (client, drive(connection))
        }
    };
    // Set here rather than with the options above, which would hide the usual one.
    let answers = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.simple_query(&format!(
            "SHOW search_path; SET search_path = {SAFE_SEARCH_PATH}"
        )),
    )
    .await
    .map_err(|_| no_answer(&where_))?
    .map_err(|e| target_error(&format!("{where_}: setting the search path"), &e, &[]))?;
    let usual_search_path = answers
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .unwrap_or_default();
    Ok(Admin {
        client,
        usual_search_path,
        heard,
    })
}

/// The prepared transactions of role `account`, each with its database: they outlive every
/// session, hold their locks, and keep the role from being dropped.
async fn prepared_transactions(
    client: &Client,
    account: &str,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT gid, database FROM pg_prepared_xacts WHERE owner = $1",
            &[&account],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// Rolls back prepared transaction `gid` of `role` (a quoted identifier), acting as the role,
/// as only its owner may; `client` is connected to the transaction's database. The
/// administrator is made a member of the role for this and gives the membership up again,
/// whether the rollback worked or not (should that fail too, the next issue at the server
/// gives it up before its grant statements: [`sweep_memberships`]).
async fn roll_back_prepared(
    client: &Client,
    role: &str,
    gid: &str,
) -> Result<(), tokio_postgres::Error> {
    // One statement each: ROLLBACK PREPARED runs outside any transaction block.
    let acted = async {
        client
            .batch_execute(&format!("GRANT {role} TO CURRENT_USER"))
            .await?;
        client.batch_execute(&format!("SET ROLE {role}")).await?;
        client
            .batch_execute(&format!("ROLLBACK PREPARED {}", literal(gid)))
            .await
    }
    .await;
    let reset = client.batch_execute("RESET ROLE").await;
    let given_up = client
        .batch_execute(&format!("REVOKE {role} FROM CURRENT_USER"))
        .await;
    acted.and(reset).and(given_up)
}

/// Attempts at `NOLOGIN` while the role's sessions hold the lock on its row.
const NOLOGIN_ATTEMPTS: usize = 5;
/// How long each attempt waits for that lock.
const NOLOGIN_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Makes role `account` (`role` quoted, oid `oid`) unable to log in. A session of the role
/// that changed its own password and keeps its transaction open holds the lock on the role's
/// row that `ALTER ROLE` needs, for as long as it likes: its sessions are ended first, and
/// again each time the lock is not had within [`NOLOGIN_LOCK_WAIT`].
async fn disable_login(client: &Client, account: &str, role: &str, oid: u32) -> Result<(), Error> {
    let alter = format!(
        "SET LOCAL lock_timeout = {}; ALTER ROLE {role} NOLOGIN",
        NOLOGIN_LOCK_WAIT.as_millis()
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        end_sessions(client, account, oid).await?;
        match client.batch_execute(&alter).await {
            Ok(()) => return Ok(()),
            Err(e) if is_lock_timeout(&e) && attempt < NOLOGIN_ATTEMPTS => {}
            Err(e) => {
                return Err(target_error(
                    &format!("disabling login of role {account} (attempt {attempt})"),
                    &e,
                    &[],
                ));
            }
        }
    }
}

/// Waits, as long as [`LOCK_TIMEOUT`] for each, until no one else holds a table that role
/// `oid` (`role`, quoted) owns in the database `client` is connected to, taking each as
/// `REASSIGN OWNED` would (`ACCESS EXCLUSIVE`), then lets them go: it changes nothing. The
/// administrator may lock them as a member of the role, which it is within that transaction
/// alone. Views, materialized views and
/// sequences cannot be locked on their own (a view's lock would take the tables it reads too);
/// one of those held by someone is met in the turn, and waited for only as long as
/// [`TURN_LOCK_TIMEOUT`].
async fn wait_for_tables(
    client: &Client,
    oid: u32,
    role: &str,
) -> Result<(), tokio_postgres::Error> {
    let tables: Vec<String> = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c \
             WHERE c.relowner = $1 AND c.relkind IN ('r', 'p') ORDER BY c.oid",
            &[&oid],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if tables.is_empty() {
        return Ok(());
    }
    // Each name is `regclass`'s output: quoted where it must be, and schema-qualified.
    let locked = client
        .batch_execute(&format!(
            "BEGIN; GRANT {role} TO CURRENT_USER; LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE",
            tables.join(", ")
        ))
        .await;
    let let_go = client.batch_execute("ROLLBACK").await;
    locked.and(let_go)
}

/// Why [`PostgresIssuer::in_turn`] failed.
enum TurnFailure {
    /// Waiting for the role's tables, before its turn.
    Waiting(tokio_postgres::Error),
    /// Running its statements, in its turn.
    Running(tokio_postgres::Error),
}

impl TurnFailure {
    /// What failed, `running` being what the statements do, said before the role's name.
    fn what(&self, running: &str) -> String {
        match self {
            Self::Waiting(_) => format!("waiting, before {running}, for the tables owned by"),
            Self::Running(_) => running.to_owned(),
        }
    }

    fn cause(self) -> tokio_postgres::Error {
        match self {
            Self::Waiting(e) | Self::Running(e) => e,
        }
    }
}

fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| *db.code() == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// Ends every session of the role with oid `oid` and waits until the server shows none.
async fn end_sessions(client: &Client, role: &str, oid: u32) -> Result<(), Error> {
    let failed = |e: tokio_postgres::Error| {
        target_error(&format!("ending the sessions of role {role}"), &e, &[])
    };
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usesysid = $1",
            &[&oid],
        )
        .await
        .map_err(failed)?;
    let deadline = Instant::now() + SESSION_END_TIMEOUT;
    loop {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usesysid = $1",
                &[&oid],
            )
            .await
            .map_err(failed)?
            .get(0);
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Target(format!(
                "{left} session(s) of role {role} were still open {} s after being terminated",
                SESSION_END_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Warden records none of this kind's sessions: a grant's login connects to the database
/// directly, past Warden ([`crate::Issuer::records_sessions`]).
pub const RECORDS_SESSIONS: bool = false;

#[async_trait]
impl Issuer for PostgresIssuer {
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
        let conn = parse_connection(KIND, req.connection, DEFAULT_PORT, true)?;
        let grants = parse_settings(req.settings)?;
        let admin = require_admin(req.admin, req.target)?;
        let admin_name = admin.username.as_str();
        let account = require_account(req.account)?;
        let public = public_credential(KIND, account, &conn)?;
        let password = require_password(req.password, "new role")?;
        let verifier = scram::verifier(password);
        let secrets = [password, verifier.as_str()];
        let role = ident(account);
        let (password_literal, expires) = (literal(password), expires_literal(req.valid_before)?);
        let values = Values {
            name: &role,
            password: &password_literal,
            expires: &expires,
        };

        let (key, admin, _turn) = self.admin_client(&conn, admin).await?;
        let create = format!(
            "CREATE ROLE {role} WITH LOGIN PASSWORD {} VALID UNTIL {expires}",
            literal(&verifier)
        );
        // The marker last, so that no grant statement can replace it: revoking and
        // reconciling trust it.
        let comment = format!("COMMENT ON ROLE {role} IS {}", literal(&marker(req.grant)));
        // The grant statements are the operator's, written for the administrator's usual
        // `search_path`; Warden's own before and after them run with the safe one (set for
        // the session again: a statement may have set another).
        let usual_path = (
            format!("setting the usual search_path for the grant statements of role {account}"),
            format!(
                "SELECT pg_catalog.set_config('search_path', {}, true)",
                literal(&admin.usual_search_path)
            ),
        );
        let safe_path = (
            format!("setting the search_path back after the grant statements of role {account}"),
            format!("SET search_path = {SAFE_SEARCH_PATH}"),
        );
        // The administrator gives up any membership in a grant's role or keeper that a
        // revocation cut short left committed (committed on its own, so it is given up even
        // if this issue fails), and the transaction makes sure it holds none of their rights
        // before the grant statements: as a member, its `GRANT ... ON ALL TABLES IN SCHEMA`
        // would hand on the tables another grant made.
        let plan = Plan {
            prelude: vec![(
                format!(
                    "giving up the administrator's memberships in grants' roles before creating                      role {account}; nothing was created"
                ),
                sweep_memberships(),
            )],
            before: vec![
                (
                    format!(
                        "checking that the administrator holds no grant's rights before creating                          role {account}; nothing was created"
                    ),
                    no_grants_rights(),
                ),
                (format!("creating role {account}"), create),
                usual_path,
            ],
            grants: grants
                .iter()
                .enumerate()
                .map(|(i, grant)| {
                    (
                        format!(
                            "grant statement {} ({:?}) for role {account}; nothing was created",
                            i + 1,
                            grant.source()
                        ),
                        grant.render(values),
                    )
                })
                .collect(),
            after: vec![
                safe_path,
                (
                    format!(
                        "checking what the grant statements gave role {account}; nothing was \
                         created"
                    ),
                    nothing_of_other_grants(account),
                ),
                (format!("marking role {account} as Warden's"), comment),
            ],
        };
        // Concurrent GRANTs on the same objects can collide in PostgreSQL's catalog ("tuple
        // concurrently updated"); the whole transaction rolled back, so it is simply retried.
        let lock = self.catalog_lock(&conn);
        let _queued = lock.lock().await;
        // No revocation holds a committed membership in a grant's role meanwhile.
        let members = self.membership_lock(&conn);
        let _no_member = members.read().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match create_role(&admin, &plan).await {
                Ok(()) => break,
                Err(f) if attempt < CATALOG_RETRIES && catalog_conflict(&f.cause) => {
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                Err(f) if f.undone => {
                    return Err(Error::Undone(f.describe(admin_name, &secrets)));
                }
                Err(f) => return Err(Error::Target(f.describe(admin_name, &secrets))),
            }
        }
        self.pool.put(key, admin);

        Ok(IssueResponse {
            public,
            secret: Some(Secret::new(serde_json::json!({
                "password": password,
                "url": url("postgresql", account, password, &conn),
            }))),
        })
    }

    async fn revoke(&self, req: RevokeRequest<'_>) -> Result<RevokeResponse, Error> {
        let conn = parse_connection(KIND, req.connection, DEFAULT_PORT, true)?;
        let admin = require_admin(req.admin, req.target)?;
        let account = require_account(req.account)?;
        let (key, kept, _turn) = self.admin_client(&conn, admin).await?;
        // A failure may come from what a warning said went wrong before it.
        let revoked = self
            .revoke_role(&kept, &conn, admin, account, req.grant)
            .await
            .map_err(|e| with_warnings(e, kept.heard.take()))?;
        self.pool.put(key, kept);
        Ok(revoked)
    }

    async fn list_accounts(&self, req: ListRequest<'_>) -> Result<Vec<Account>, Error> {
        let conn = parse_connection(KIND, req.connection, DEFAULT_PORT, true)?;
        let admin = require_admin(req.admin, req.target)?;
        let (key, kept, _turn) = self.admin_client(&conn, admin).await?;
        let rows = kept
            .client
            .query(
                "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles \
                 WHERE left(rolname, 2) = 'w_' ORDER BY rolname",
                &[],
            )
            .await
            .map_err(|e| target_error("listing roles", &e, &[]))?;
        self.pool.put(key, kept);
        Ok(rows
            .iter()
            .filter_map(|row| {
                let (name, comment): (String, Option<String>) = (row.get(0), row.get(1));
                let grant: RequestId = comment?.strip_prefix(MARKER)?.parse().ok()?;
                (is_account_name(&name) && name.ends_with(&grant_tail(grant))).then_some(Account {
                    name,
                    grant: Some(grant),
                })
            })
            .collect())
    }

    async fn log_in(&self, req: ListRequest<'_>) -> Result<(), Error> {
        let conn = parse_connection(KIND, req.connection, DEFAULT_PORT, true)?;
        let admin = require_admin(req.admin, req.target)?;
        // Dropped, the client ends its session.
        connect(&conn, &admin.username, admin.password.expose())
            .await
            .map(drop)
    }

    async fn rotate_root(&self, req: RotateRootRequest<'_>) -> Result<(), Error> {
        let conn = parse_connection(KIND, req.connection, DEFAULT_PORT, true)?;
        let new_password = require_password(Some(req.new_password), "administrator")?;
        // A connection of its own: it authenticated with the password this call replaces.
        let admin = connect(&conn, &req.admin.username, req.admin.password.expose()).await?;
        let verifier = scram::verifier(new_password);
        admin
            .client
            .batch_execute(&format!(
                "ALTER ROLE CURRENT_USER PASSWORD {}",
                literal(&verifier)
            ))
            .await
            .map_err(|e| {
                let said = describe(
                    "changing the administrator's password",
                    &e,
                    &[new_password, verifier.as_str()],
                );
                if refused(&e) {
                    Error::Undone(said)
                } else {
                    Error::Target(said)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn settings(v: serde_json::Value) -> Settings {
        v.as_object().cloned().unwrap()
    }

    /// Issues role `grants` for a new grant at `pg`: its account's name and password, and what
    /// the issue returned.
    async fn issue_at(
        pg: &warden_testkit::Postgres,
        grants: &[&str],
    ) -> (String, String, Result<IssueResponse, Error>) {
        let grant = RequestId::from_uuid(uuid::Uuid::now_v7());
        let user: UserName = "gina".parse().unwrap();
        let account = account_name(grant, &user);
        let password = Secret::new(format!("pw-{:016x}", rand::random::<u64>()));
        let connection = settings(serde_json::json!({
            "host": "127.0.0.1", "port": pg.port(), "database": pg.database()
        }));
        let admin = AdminCredential {
            username: pg.admin_user().into(),
            password: Secret::new(pg.admin_password().into()),
        };
        let issued = PostgresIssuer::new()
            .issue(IssueRequest {
                grant,
                user: &user,
                target: &"db".parse().unwrap(),
                role: &"writer".parse().unwrap(),
                connection: &connection,
                settings: &settings(serde_json::json!({ "grants": grants })),
                valid_after: OffsetDateTime::now_utc(),
                valid_before: OffsetDateTime::now_utc() + time::Duration::hours(1),
                public_key: None,
                account: Some(&account),
                password: Some(&password),
                admin: Some(&admin),
                holder: crate::Holder::Requester(warden_domain::Recording::Metadata),
            })
            .await;
        (account, password.expose().clone(), issued)
    }

    /// A grant statement that grants or revokes less than it names (the administrator holds
    /// the privilege without the grant option) fails the issue as a refused one does: nothing
    /// is left, and the message says which statement and how to fix it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grant_of_nothing_fails_the_issue() {
        let pg = warden_testkit::Postgres::start();
        let admin = pg.admin_user();
        pg.admin_query(&format!(
            "CREATE TABLE public.borrowed (i int); \
             GRANT SELECT ON public.borrowed TO {admin} WITH GRANT OPTION; \
             GRANT INSERT ON public.borrowed TO {admin}"
        ));
        let items = "GRANT SELECT ON public.items TO {{name}}";
        for (statement, warned) in [
            (
                "GRANT SELECT, INSERT ON public.borrowed TO {{name}}",
                "not all privileges were granted for \"borrowed\" (SQLSTATE 01007)",
            ),
            (
                "REVOKE INSERT ON public.borrowed FROM PUBLIC",
                "no privileges could be revoked for \"borrowed\" (SQLSTATE 01006)",
            ),
        ] {
            let (account, password, issued) = issue_at(&pg, &[items, statement]).await;
            let Err(Error::Undone(said)) = issued else {
                panic!("{statement}: {issued:?}");
            };
            assert!(
                said.contains(&format!("grant statement 2 ({statement:?})"))
                    && said.contains(warned)
                    && said.contains(&format!("TO {admin} WITH GRANT OPTION")),
                "{said}"
            );
            assert!(!said.contains(&password), "{said}");
            let roles = format!("SELECT count(*) FROM pg_roles WHERE rolname = '{account}'");
            assert_eq!(pg.admin_query(&roles), "0", "{statement}");
        }
        // With the grant option, the same statement grants all it names.
        pg.admin_query(&format!(
            "GRANT INSERT ON public.borrowed TO {admin} WITH GRANT OPTION"
        ));
        let granting = "GRANT SELECT, INSERT ON public.borrowed TO {{name}}";
        let (account, password, issued) = issue_at(&pg, &[items, granting]).await;
        issued.unwrap();
        let out = pg.psql(
            &account,
            &password,
            "INSERT INTO public.borrowed VALUES (1)",
        );
        assert!(out.status.success(), "{out:?}");
    }

    /// A backend message: its tag, length and body.
    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len() + 4).unwrap();
        [&[tag][..], &len.to_be_bytes(), body].concat()
    }

    /// An `ErrorResponse` of `severity`, with SQLSTATE `code`.
    fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
        let fields = format!("S{severity}\0V{severity}\0C{code}\0M{text}\0\0");
        message(b'E', fields.as_bytes())
    }

    /// A stand-in for PostgreSQL on a free port: it takes any login, answers every query with
    /// success, and the password change with `answer` before it closes the connection.
    async fn stand_in(answer: Vec<u8>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let ready = message(b'Z', b"I");
            let startup = socket.read_u32().await.unwrap();
            socket
                .read_exact(&mut vec![0; startup as usize - 4])
                .await
                .unwrap();
            let login = [message(b'R', &0u32.to_be_bytes()), ready.clone()].concat();
            socket.write_all(&login).await.unwrap();
            while socket.read_u8().await.unwrap() == b'Q' {
                let mut query = vec![0; socket.read_u32().await.unwrap() as usize - 4];
                socket.read_exact(&mut query).await.unwrap();
                if String::from_utf8_lossy(&query).starts_with("ALTER ROLE") {
                    socket.write_all(&answer).await.unwrap();
                    return;
                }
                let done = [message(b'C', b"SET\0"), ready.clone()].concat();
                socket.write_all(&done).await.unwrap();
            }
        });
        port
    }

    /// A password change the server answers with an error changed nothing, so the old password
    /// is known to stand; one whose answer ends the session, or that is never answered, may
    /// have been carried out.
    #[tokio::test]
    async fn a_refused_password_change_left_the_target_untouched() {
        let lock_timeout =
            error_response("ERROR", "55P03", "canceling statement due to lock timeout");
        let ready = message(b'Z', b"I");
        let terminated = error_response(
            "FATAL",
            "57P01",
            "terminating connection due to administrator command",
        );
        for (answer, untouched) in [
            ([lock_timeout, ready].concat(), true),
            (terminated, false),
            (Vec::new(), false),
        ] {
            let port = stand_in(answer).await;
            let connection = settings(serde_json::json!({
                "host": "127.0.0.1", "port": port, "database": "app"
            }));
            let new_password = Secret::new("the-new-password".to_owned());
            let err = PostgresIssuer::new()
                .rotate_root(RotateRootRequest {
                    target: &"db".parse().unwrap(),
                    connection: &connection,
                    admin: &AdminCredential {
                        username: "warden_admin".into(),
                        password: Secret::new("the-old-password".into()),
                    },
                    new_password: &new_password,
                })
                .await
                .unwrap_err();
            assert_eq!(err.left_target_untouched(), untouched, "{err}");
            assert!(
                err.to_string()
                    .contains("changing the administrator's password"),
                "{err}"
            );
            assert!(!err.to_string().contains("the-new-password"), "{err}");
        }
    }

    #[test]
    fn quoting_keeps_values_inside_their_quotes() {
        assert_eq!(ident("w_a_000000000001"), "\"w_a_000000000001\"");
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(
            expires_literal(datetime!(2026-01-01 12:00:30.9 +01:00)).unwrap(),
            "'2026-01-01 11:00:30+00'"
        );
    }

    #[test]
    fn settings_are_checked() {
        let conn = settings(serde_json::json!({"host": "db", "database": "app"}));
        let ok = settings(serde_json::json!({"grants": ["GRANT SELECT ON t TO {{name}}"]}));
        assert!(check_connection(&conn).is_empty() && check_role(&ok).is_empty());
        let err = |s: serde_json::Value| parse_settings(&settings(s)).unwrap_err().to_string();
        assert!(
            err(serde_json::json!({"grants": ["G {{name}}"], "on_revoke": "x"}))
                .contains("unknown setting `on_revoke`")
        );
        assert!(err(serde_json::json!({"grants": ["G {{role}}"]})).contains("{{role}}"));
        assert!(err(serde_json::json!({})).contains("needs `grants"));
        let no_db = settings(serde_json::json!({"host": "db"}));
        let [problem] = check_connection(&no_db).try_into().unwrap();
        assert_eq!(problem.key, None);
        assert!(problem.message.contains("needs `database"), "{problem:?}");
    }
}
