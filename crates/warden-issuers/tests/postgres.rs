//! The postgres issuer against a real PostgreSQL server: the conformance suite, plus the
//! `VALID UNTIL` backstop and the SCRAM verifiers that only PostgreSQL has.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;

use std::process::Output;
use std::time::Duration;

use conformance::{Grant, Target, grants, issue};
use time::OffsetDateTime;
use warden_issuers::postgres::PostgresIssuer;
use warden_issuers::{AdminCredential, Issuer, RevokeResponse, Secret, Settings};
use warden_testkit::{OpenSession, Postgres};

struct Pg {
    server: Postgres,
    issuer: PostgresIssuer,
}

impl Pg {
    fn start() -> Self {
        Pg {
            server: Postgres::start(),
            issuer: PostgresIssuer::new(),
        }
    }
}

fn connection(port: u16, database: &str) -> Settings {
    serde_json::json!({"host": "127.0.0.1", "port": port, "database": database})
        .as_object()
        .cloned()
        .unwrap()
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Target for Pg {
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
        vec!["GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}".into()]
    }

    fn missing_table_grant(&self) -> String {
        "GRANT SELECT ON no_such_table TO {{name}}".into()
    }

    fn leaky_grant(&self) -> String {
        // "invalid input syntax for type integer" quotes the value.
        "SELECT {{password}}::int".into()
    }

    fn run_sql(&self, user: &str, password: &str, sql: &str) -> Output {
        self.server.psql(user, password, sql)
    }

    fn hold_session(&self, user: &str, password: &str) -> OpenSession {
        self.server.hold_session(user, password)
    }

    fn account_exists(&self, name: &str) -> bool {
        self.server.admin_query(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = {}",
            literal(name)
        )) != "0"
    }

    fn create_human_accounts(&self) -> Vec<String> {
        // Warden's prefix and shape, and even a marker for another grant, but not made by Warden.
        let names = ["w_human_0123456789ab", "w_dba", "w_copy_000000000001"];
        self.server.admin_query(&format!(
            "CREATE ROLE {} LOGIN; CREATE ROLE {} LOGIN; CREATE ROLE {} LOGIN; \
             COMMENT ON ROLE {} IS 'warden grant 01910000-0000-7000-8000-000000000002'",
            names[0], names[1], names[2], names[2]
        ));
        names.map(str::to_owned).to_vec()
    }

    fn end_admin_connections(&self) {
        self.server.admin_query(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {}",
            literal(self.server.admin_user())
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let pg = Pg::start();
    revoking_leaves_unmarked_roles_alone(&pg).await;
    conformance::run(&pg).await;
}

/// A role with the name of a grant's account but without that grant's marker was not made
/// by Warden (issuing failed because the name was taken): revoking the grant keeps it.
async fn revoking_leaves_unmarked_roles_alone(pg: &Pg) {
    let mut g = Grant::new(&pg.issuer, "gina");
    g.account = "w_taken_0123456789ab".into();
    pg.server
        .admin_query(&format!("CREATE ROLE {} LOGIN", g.account));
    let err = issue(
        pg,
        &g,
        &grants(&pg.read_grants()),
        OffsetDateTime::now_utc(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        conformance::revoke(pg, &g).await.unwrap(),
        RevokeResponse::AlreadyGone
    );
    assert!(pg.account_exists(&g.account));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline() {
    conformance::run_offline(
        &PostgresIssuer::new(),
        connection(warden_testkit::free_port(), "app"),
    )
    .await;
}

/// `VALID UNTIL` refuses logins after the grant's end even when nobody revokes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_until_refuses_logins_after_the_end() {
    let pg = Pg::start();
    let g = Grant::new(&pg.issuer, "frank");
    let end = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    issue(&pg, &g, &grants(&pg.read_grants()), end)
        .await
        .unwrap();
    let before = pg.run_sql(&g.account, g.password.expose(), "SELECT 1");
    assert!(before.status.success(), "login failed before the end");

    let wait = end - OffsetDateTime::now_utc() + time::Duration::seconds(1);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let after = pg.run_sql(&g.account, g.password.expose(), "SELECT 1");
    assert!(
        !after.status.success(),
        "login still works after VALID UNTIL"
    );
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
}

/// The server holds only Warden's SCRAM verifier (16 rounds, see `postgres/scram.rs`), never
/// the password, and `psql` logs in with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_keeps_a_verifier_that_psql_logs_in_with() {
    let pg = Pg::start();
    let g = Grant::new(&pg.issuer, "vera");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    issue(&pg, &g, &grants(&pg.read_grants()), end)
        .await
        .unwrap();
    let stored = pg.server.admin_query(&format!(
        "SELECT rolpassword FROM pg_authid WHERE rolname = {}",
        literal(&g.account)
    ));
    assert!(stored.starts_with("SCRAM-SHA-256$16:"), "{stored}");
    assert!(!stored.contains(g.password.expose()));
    let login = pg.run_sql(&g.account, g.password.expose(), "SELECT current_user");
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&login.stdout).trim(), g.account);
}

/// A grant statement cannot replace the marker revoking trusts: the role it comments on is
/// still revoked, not taken for someone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_cannot_replace_the_marker() {
    let pg = Pg::start();
    let g = Grant::new(&pg.issuer, "cora");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut statements = pg.read_grants();
    statements.push("COMMENT ON ROLE {{name}} IS 'hijacked'".into());
    issue(&pg, &g, &grants(&statements), end).await.unwrap();
    assert_eq!(
        conformance::revoke(&pg, &g).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert!(!pg.account_exists(&g.account));
}

/// What the role made in the cluster's other databases (large objects need no privilege, and
/// every role may connect to `postgres` and `template1`) does not keep it from being dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_left_in_other_databases_do_not_keep_the_role() {
    let pg = Pg::start();
    let g = Grant::new(&pg.issuer, "lola");
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    issue(&pg, &g, &grants(&pg.read_grants()), end)
        .await
        .unwrap();
    for database in ["postgres", "template1"] {
        let made = pg.server.psql_in(
            database,
            &g.account,
            g.password.expose(),
            "SELECT lo_create(0)",
        );
        assert!(made.status.success(), "{made:?}");
    }
    assert_eq!(
        conformance::revoke(&pg, &g).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert!(!pg.account_exists(&g.account));
}

/// What a grant's role made outlives it, but not its rights: its objects go to a role of that
/// grant's with none, and its `SECURITY DEFINER` functions then run with their callers' rights.
/// Handed to the administrator, they would have run as the administrator for later callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_grant_made_keeps_none_of_its_rights_or_the_administrators() {
    let pg = Pg::start();
    // A table the administrator may read and grants may not.
    pg.server.admin_query(&format!(
        "CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('hidden'); \
         ALTER TABLE secrets OWNER TO {}",
        pg.server.admin_user()
    ));
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let maker = Grant::new(&pg.issuer, "mona");
    let statements = vec![
        "GRANT SELECT ON public.items TO {{name}}".to_owned(),
        "GRANT CREATE ON SCHEMA public TO {{name}}".to_owned(),
        format!(
            "GRANT CREATE ON DATABASE {} TO {{{{name}}}}",
            pg.server.database()
        ),
    ];
    issue(&pg, &maker, &grants(&statements), end).await.unwrap();
    let made = pg.run_sql(
        &maker.account,
        maker.password.expose(),
        "CREATE TABLE notes (v text); \
         CREATE FUNCTION public.whoami() RETURNS text SECURITY DEFINER LANGUAGE sql \
           AS 'SELECT current_user::text'; \
         CREATE VIEW public.peek AS SELECT v FROM secrets; \
         GRANT SELECT ON public.peek TO PUBLIC; \
         CREATE SCHEMA own; CREATE TABLE own.kept (v int)",
    );
    assert!(made.status.success(), "{made:?}");
    assert_eq!(
        conformance::revoke(&pg, &maker).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert!(!pg.account_exists(&maker.account));
    let owners = pg.server.admin_query(
        "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class \
         WHERE relname IN ('notes', 'peek', 'kept') \
         UNION ALL SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'own'",
    );
    let keeper = format!("warden_owned_{}", &maker.account[2..]);
    assert_eq!(owners, format!("{keeper}\n{keeper}"));
    // The right to create it was lent for the hand-over alone.
    let lent = pg.server.admin_query(&format!(
        "SELECT has_schema_privilege('{keeper}', 'public', 'CREATE') \
         OR has_database_privilege('{keeper}', current_database(), 'CREATE')"
    ));
    assert_eq!(lent, "f");
    let rights = pg.server.admin_query(&format!(
        "SELECT rolcanlogin OR rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = '{keeper}'"
    ));
    assert_eq!(rights, "f");

    // The administrator let go of the keeper it handed things to: its later grant statements
    // hand nothing of the keeper's on.
    let member = pg.server.admin_query(&format!(
        "SELECT pg_has_role('{}', '{keeper}', 'MEMBER')",
        pg.server.admin_user()
    ));
    assert_eq!(member, "f");
    // A later grant's caller runs the function as itself, and the view reads nothing.
    let caller = Grant::new(&pg.issuer, "nico");
    let reads = vec!["GRANT SELECT ON public.items TO {{name}}".to_owned()];
    issue(&pg, &caller, &grants(&reads), end).await.unwrap();
    let who = pg.run_sql(
        &caller.account,
        caller.password.expose(),
        "SELECT public.whoami()",
    );
    assert_eq!(String::from_utf8_lossy(&who.stdout).trim(), caller.account);
    let peek = pg.run_sql(
        &caller.account,
        caller.password.expose(),
        "SELECT * FROM peek",
    );
    assert!(!peek.status.success(), "{peek:?}");
    assert!(!String::from_utf8_lossy(&peek.stdout).contains("hidden"));
    conformance::revoke(&pg, &caller).await.unwrap();
}

/// A grant cannot keep its sessions, or its role, by holding the lock `NOLOGIN` needs: a
/// transaction that changed the role's own password and stays open, in a session or prepared
/// (a prepared transaction outlives every session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_does_not_keep_a_grant() {
    let pg = Pg::start();
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let held = Grant::new(&pg.issuer, "uma");
    issue(&pg, &held, &grants(&pg.read_grants()), end)
        .await
        .unwrap();
    let mut session = pg.server.hold_transaction(
        &held.account,
        held.password.expose(),
        "ALTER ROLE CURRENT_USER PASSWORD 'changed-by-the-grant-1'",
    );
    assert_eq!(
        conformance::revoke(&pg, &held).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert!(!pg.account_exists(&held.account));
    let ended = session
        .wait(Duration::from_secs(10))
        .expect("the session ended");
    assert!(!ended.status.success(), "{ended:?}");

    let prepared = Grant::new(&pg.issuer, "vera");
    let makes = vec![
        "GRANT SELECT ON public.items TO {{name}}".to_owned(),
        "GRANT CREATE ON SCHEMA public TO {{name}}".to_owned(),
    ];
    issue(&pg, &prepared, &grants(&makes), end).await.unwrap();
    let kept = pg.run_sql(
        &prepared.account,
        prepared.password.expose(),
        "BEGIN; ALTER ROLE CURRENT_USER PASSWORD 'changed-by-the-grant-2'; \
         SELECT count(*) FROM public.items; CREATE TABLE public.ghost (x int); \
         PREPARE TRANSACTION 'keep'",
    );
    assert!(kept.status.success(), "{kept:?}");
    assert_eq!(
        conformance::revoke(&pg, &prepared).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert!(!pg.account_exists(&prepared.account));
    assert_eq!(
        pg.server
            .admin_query("SELECT count(*) FROM pg_prepared_xacts"),
        "0"
    );
    // Its locks went with it: the table it read can be changed.
    pg.server
        .admin_query("ALTER TABLE public.items ADD COLUMN later int");
}

/// What one grant left cannot reach what another left: each grant's leftovers have an owner
/// of their own, so a view a later grant left over an earlier grant's table reads nothing for
/// anyone, though it was granted to everyone. A role that made nothing leaves no owner behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_grants_leftovers_cannot_read_anothers() {
    let pg = Pg::start();
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let makes = vec!["GRANT CREATE ON SCHEMA public TO {{name}}".to_owned()];
    let first = Grant::new(&pg.issuer, "olga");
    issue(&pg, &first, &grants(&makes), end).await.unwrap();
    let made = pg.run_sql(
        &first.account,
        first.password.expose(),
        "CREATE TABLE public.olga_private AS SELECT 'olga-only'::text AS v",
    );
    assert!(made.status.success(), "{made:?}");
    conformance::revoke(&pg, &first).await.unwrap();

    let second = Grant::new(&pg.issuer, "pete");
    issue(&pg, &second, &grants(&makes), end).await.unwrap();
    let made = pg.run_sql(
        &second.account,
        second.password.expose(),
        "CREATE VIEW public.peek AS SELECT * FROM public.olga_private; \
         GRANT SELECT ON public.peek TO PUBLIC",
    );
    assert!(made.status.success(), "{made:?}");
    conformance::revoke(&pg, &second).await.unwrap();

    // Of what is in `public`, a later grant is given what its statements name: the leftovers
    // are no longer anyone's to hand on (an `ALL TABLES IN SCHEMA public` statement is refused
    // for them, as for any table the administrator has no right to).
    let reader = Grant::new(&pg.issuer, "quin");
    let all = issue(&pg, &reader, &grants(&pg.read_grants()), end).await;
    assert!(
        all.as_ref().is_err_and(|e| e
            .to_string()
            .contains("permission denied for table olga_private")),
        "{all:?}"
    );
    let reads = vec!["GRANT SELECT ON public.items TO {{name}}".to_owned()];
    issue(&pg, &reader, &grants(&reads), end).await.unwrap();
    let peek = pg.run_sql(
        &reader.account,
        reader.password.expose(),
        "SELECT * FROM public.peek",
    );
    assert!(!peek.status.success(), "{peek:?}");
    assert!(!String::from_utf8_lossy(&peek.stdout).contains("olga-only"));
    conformance::revoke(&pg, &reader).await.unwrap();
    let keepers = pg.server.admin_query(
        "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles \
         WHERE rolname LIKE 'warden_owned%'",
    );
    // A role of a keeper's name that Warden did not make is not handed anything.
    let taken = Grant::new(&pg.issuer, "tara");
    issue(&pg, &taken, &grants(&makes), end).await.unwrap();
    let made = pg.run_sql(
        &taken.account,
        taken.password.expose(),
        "CREATE TABLE public.tara_notes (v text)",
    );
    assert!(made.status.success(), "{made:?}");
    pg.server.admin_query(&format!(
        "CREATE ROLE warden_owned_{} LOGIN",
        &taken.account[2..]
    ));
    let err = conformance::revoke(&pg, &taken).await.unwrap_err();
    assert!(err.to_string().contains("was not made by Warden"), "{err}");
    let owner = pg
        .server
        .admin_query("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'tara_notes'");
    assert_eq!(owner, taken.account);
    assert_eq!(
        keepers,
        format!(
            "warden_owned_{},warden_owned_{}",
            &first.account[2..],
            &second.account[2..]
        )
    );
}

/// A grant that may create in a schema of the administrator's `search_path` cannot make
/// Warden's own statements call its functions: a `format(text, text)` of its own matches the
/// call in the revocation's hand-over better than the built-in, and would run as the
/// administrator. The role's grant statements still find the administrator's usual schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_never_calls_a_function_a_grant_planted() {
    let pg = Pg::start();
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    // Unqualified: found through the administrator's usual `search_path`.
    let makes = vec![
        "GRANT CREATE ON SCHEMA public TO {{name}}".to_owned(),
        "GRANT SELECT ON items TO {{name}}".to_owned(),
    ];
    let planter = Grant::new(&pg.issuer, "rita");
    issue(&pg, &planter, &grants(&makes), end).await.unwrap();
    let trap = |name: &str, args: &str, call: &str| {
        format!(
            "CREATE FUNCTION public.{name}({args}) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN \
               IF current_user <> session_user OR current_user NOT LIKE 'w\\_%' THEN \
                 EXECUTE 'CREATE ROLE planted_{name} LOGIN CREATEROLE'; \
               END IF; RETURN {call}; END $f$;"
        )
    };
    let planted = pg.run_sql(
        &planter.account,
        planter.password.expose(),
        &[
            trap(
                "format",
                "fmt text, arg text",
                "pg_catalog.format(fmt, arg)",
            ),
            trap("left", "s name, n integer", "pg_catalog.left(s::text, n)"),
            trap(
                "shobj_description",
                "o oid, c name",
                "pg_catalog.shobj_description(o, c::text)",
            ),
        ]
        .concat(),
    );
    assert!(planted.status.success(), "{planted:?}");
    conformance::revoke(&pg, &planter).await.unwrap();
    // Reconciliation lists accounts too.
    conformance::list(&pg).await;
    let later = Grant::new(&pg.issuer, "sven");
    issue(&pg, &later, &grants(&makes), end).await.unwrap();
    conformance::revoke(&pg, &later).await.unwrap();
    let planted = pg
        .server
        .admin_query("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'planted%'");
    assert_eq!(planted, "0");
}

/// Revoking does not queue behind someone's long transaction on a table the grant made (and
/// every later query of that table behind it): it gives up within seconds, and succeeds once
/// the transaction is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_does_not_wait_long_for_a_locked_table() {
    let pg = Pg::start();
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let g = Grant::new(&pg.issuer, "lana");
    let statements = vec!["GRANT CREATE ON SCHEMA public TO {{name}}".to_owned()];
    issue(&pg, &g, &grants(&statements), end).await.unwrap();
    let made = pg.run_sql(
        &g.account,
        g.password.expose(),
        "CREATE TABLE busy (v int); GRANT SELECT ON busy TO PUBLIC",
    );
    assert!(made.status.success(), "{made:?}");
    let holder = pg.server.hold_lock("busy");
    let started = std::time::Instant::now();
    let err = conformance::revoke(&pg, &g).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("lock timeout"), "{err}");
    // The transaction ends (its client gone, and its backend too).
    drop(holder);
    pg.server.admin_query(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
    );
    assert_eq!(
        conformance::revoke(&pg, &g).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert!(!pg.account_exists(&g.account));
}

/// Whether `issued` was refused because the administrator may not grant the table `table`.
fn refused_for(
    issued: &Result<warden_issuers::IssueResponse, warden_issuers::Error>,
    table: &str,
) -> bool {
    issued.as_ref().is_err_and(|e| {
        e.to_string()
            .contains(&format!("permission denied for table {table}"))
    })
}

/// The grants' roles and keepers whose rights Warden's administrator has, as the server says.
fn rights_of_grants(pg: &Pg) -> String {
    pg.server.admin_query(&format!(
        "SELECT count(*) FROM pg_roles WHERE (rolname LIKE 'w\\_%' OR rolname LIKE 'warden\\_owned\\_%') \
         AND pg_has_role({}, oid, 'USAGE')",
        literal(pg.server.admin_user())
    ))
}

/// While a grant's revocation is failing (someone's long transaction holds a table the grant
/// made), and after it, Warden's administrator is no member of the grant's role or keeper: a
/// later grant's `GRANT SELECT ON ALL TABLES IN SCHEMA` of that schema is refused and is never
/// handed the table. A membership a revocation cut short left behind (a crash) is given up by
/// the next issue before its grant statements, and one that cannot be given up refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_revocation_lends_the_administrator_nothing() {
    let pg = Pg::start();
    let admin = pg.server.admin_user();
    pg.server.admin_query(&format!(
        "CREATE SCHEMA s2 AUTHORIZATION {admin}; CREATE ROLE lockholder LOGIN PASSWORD 'lock-pw'"
    ));
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let creator = vec!["GRANT CREATE, USAGE ON SCHEMA s2 TO {{name}}".to_owned()];
    let all = grants(&[
        "GRANT USAGE ON SCHEMA s2 TO {{name}}".to_owned(),
        "GRANT SELECT ON ALL TABLES IN SCHEMA s2 TO {{name}}".to_owned(),
    ]);
    let alice = Grant::new(&pg.issuer, "alice");
    issue(&pg, &alice, &grants(&creator), end).await.unwrap();
    let made = pg.run_sql(
        &alice.account,
        alice.password.expose(),
        "CREATE TABLE s2.alice_private AS SELECT 'ALICE-PRIVATE-DATA'::text AS v",
    );
    assert!(made.status.success(), "{made:?}");
    let bob = Grant::new(&pg.issuer, "bob");
    let issued = issue(&pg, &bob, &all, end).await;
    assert!(refused_for(&issued, "alice_private"), "{issued:?}");

    // Someone's long transaction on the table makes the revocation fail.
    pg.server.admin_query(
        "GRANT USAGE ON SCHEMA s2 TO lockholder; GRANT SELECT ON s2.alice_private TO lockholder",
    );
    let holder = pg.server.hold_transaction(
        "lockholder",
        "lock-pw",
        "SELECT count(*) FROM s2.alice_private",
    );
    let err = conformance::revoke(&pg, &alice).await.unwrap_err();
    assert!(err.to_string().contains("lock timeout"), "{err}");
    assert_eq!(rights_of_grants(&pg), "0");
    let members = format!(
        "SELECT count(*) FROM pg_auth_members WHERE member = {}::regrole",
        literal(admin)
    );
    let before = pg.server.admin_query(&members);
    let bob = Grant::new(&pg.issuer, "bob");
    let issued = issue(&pg, &bob, &all, end).await;
    assert!(refused_for(&issued, "alice_private"), "{issued:?}");
    assert!(!pg.account_exists(&bob.account));

    // Once the transaction is over, the role goes, and its table is still no one's to hand on.
    drop(holder);
    pg.server.admin_query(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE usename = 'lockholder'",
    );
    assert_eq!(
        conformance::revoke(&pg, &alice).await.unwrap(),
        RevokeResponse::Revoked
    );
    assert_eq!(rights_of_grants(&pg), "0");
    assert_eq!(pg.server.admin_query(&members), before);
    let bob = Grant::new(&pg.issuer, "bob");
    let issued = issue(&pg, &bob, &all, end).await;
    assert!(refused_for(&issued, "alice_private"), "{issued:?}");
    let acl = pg
        .server
        .admin_query("SELECT relacl::text FROM pg_class WHERE relname = 'alice_private'");
    assert!(!acl.contains("w_bob"), "{acl}");

    // A membership left committed (a revocation cut short by a crash) is given up by the next
    // issue, before its grant statements, even though that issue is refused.
    let keeper = format!("warden_owned_{}", &alice.account[2..]);
    pg.server.admin_query(&format!("GRANT {keeper} TO {admin}"));
    assert_eq!(rights_of_grants(&pg), "1");
    let bob = Grant::new(&pg.issuer, "bob");
    let issued = issue(&pg, &bob, &all, end).await;
    assert!(refused_for(&issued, "alice_private"), "{issued:?}");
    assert_eq!(rights_of_grants(&pg), "0");

    // One Warden cannot give up (through another role) refuses every issue, saying how to fix it.
    pg.server.admin_query(&format!(
        "CREATE ROLE middle NOLOGIN; GRANT {keeper} TO middle; GRANT middle TO {admin}"
    ));
    let reads = grants(&["GRANT SELECT ON public.items TO {{name}}".to_owned()]);
    let carl = Grant::new(&pg.issuer, "carl");
    let err = issue(&pg, &carl, &reads, end).await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("has the rights of role {keeper}"))
            && err.to_string().contains("REVOKE"),
        "{err}"
    );
    assert!(!pg.account_exists(&carl.account));
    pg.server.admin_query("DROP ROLE middle");
    issue(&pg, &carl, &reads, end).await.unwrap();
    conformance::revoke(&pg, &carl).await.unwrap();
}

/// Warden itself, not only PostgreSQL's permission check, refuses an issue whose grant
/// statements would give its role a table another grant made: here the maker lent it to the
/// administrator with the grant option, and `GRANT ... ON ALL TABLES IN SCHEMA` would pass it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grant_is_given_a_table_another_grant_made() {
    let pg = Pg::start();
    let admin = pg.server.admin_user();
    pg.server
        .admin_query(&format!("CREATE SCHEMA s3 AUTHORIZATION {admin}"));
    let end = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let maker = Grant::new(&pg.issuer, "alice");
    let creator = vec!["GRANT CREATE, USAGE ON SCHEMA s3 TO {{name}}".to_owned()];
    issue(&pg, &maker, &grants(&creator), end).await.unwrap();
    let made = pg.run_sql(
        &maker.account,
        maker.password.expose(),
        &format!(
            "CREATE TABLE s3.alice_shared AS SELECT 'ALICE-DATA'::text AS v; \
             GRANT SELECT ON s3.alice_shared TO {admin} WITH GRANT OPTION"
        ),
    );
    assert!(made.status.success(), "{made:?}");
    let all = grants(&[
        "GRANT USAGE ON SCHEMA s3 TO {{name}}".to_owned(),
        "GRANT SELECT ON ALL TABLES IN SCHEMA s3 TO {{name}}".to_owned(),
    ]);
    let bob = Grant::new(&pg.issuer, "bob");
    let err = issue(&pg, &bob, &all, end).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "privileges on s3.alice_shared, which role {} owns",
            maker.account
        )),
        "{err}"
    );
    assert!(!pg.account_exists(&bob.account));
    conformance::revoke(&pg, &maker).await.unwrap();
    let bob = Grant::new(&pg.issuer, "bob");
    let err = issue(&pg, &bob, &all, end).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("privileges on s3.alice_shared, which role warden_owned_"),
        "{err}"
    );
}
